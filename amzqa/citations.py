"""Checking the citations in a generated answer against the sources the model was given.

* every ``[n]`` (also ``[1, 2]`` and ``[1][2]``) is mapped to source n; markers to sources that were not given
  are removed from the text and counted;
* a sentence the model wrote without a marker is attributed post hoc to the source that best supports it
  (``Citation.attributed=True``) when enough of its content words occur in that source;
* a sentence no source supports is flagged;
* an answer is an abstention only when it is one: empty, or every sentence of it says the catalog does not answer
  (the abstention message alone, or a refusal as the whole answer). A hedging sentence inside an answer that also
  states facts ("There is no information about the warranty.") is dropped from the text and listed in ``hedges``;
  the answer and its citations stand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from amzqa.prompt import ABSTAIN_MESSAGE
from amzqa.records import Citation, Product
from amzqa.text import content_words, split_sentences

_GROUP = re.compile(r"\[(\s*\d+\s*(?:[,;]\s*\d+\s*)*)\]")
_ABSTAIN = re.compile(
    r"catalog(ue)? does not (answer|contain|have)|(sources|catalog(ue)?) (do|does) not (answer|contain|mention|say)"
    r"|not (mentioned|found|available) in the (sources|catalog(ue)?)|no (information|source) (about|on|for)"
    r"|cat[aá]logo n[aã]o (responde|cont[eé]m|tem|menciona)", re.I)  # a model answering in Portuguese
SUPPORT_THRESHOLD = 0.5


@dataclass
class CheckedAnswer:
    text: str
    citations: list[Citation] = field(default_factory=list)
    removed: int = 0
    unsupported: list[str] = field(default_factory=list)
    abstained: bool = False
    hedges: list[str] = field(default_factory=list)


def support(sentence: str, product: Product) -> float:
    """Share of the sentence's content words found in the product's title and description."""
    words = content_words(_GROUP.sub(" ", sentence))
    if not words:
        return 1.0  # nothing to support ("Yes.", a bare marker)
    return len(words & content_words(f"{product.title} {product.content}")) / len(words)


def is_hedge(sentence: str) -> bool:
    """A sentence that says the sources or the catalog do not answer (markers and case ignored)."""
    return bool(_ABSTAIN.search(_GROUP.sub(" ", sentence)))


def is_abstention(text: str) -> bool:
    """The whole answer refuses: empty, or nothing but sentences that say the catalog does not answer."""
    sentences = split_sentences(_GROUP.sub(" ", text))
    return not sentences or all(is_hedge(s) for s in sentences)


def check(text: str, sources: list[Product] | tuple[Product, ...]) -> CheckedAnswer:
    text = text.strip()
    if is_abstention(text):
        return CheckedAnswer(ABSTAIN_MESSAGE, abstained=True)
    hedges = [s for s in split_sentences(text) if is_hedge(s)]
    if hedges:  # the facts stand; the hedges are dropped from the text and reported
        text = " ".join(s for s in split_sentences(text) if not is_hedge(s))
    removed = 0

    def keep_valid(m: re.Match) -> str:
        nonlocal removed
        nums = [int(x) for x in re.split(r"[,;]", m.group(1))]
        valid = [n for n in nums if 1 <= n <= len(sources)]
        removed += len(nums) - len(valid)
        return "".join(f"[{n}]" for n in valid)

    text = " ".join(_GROUP.sub(keep_valid, text).split())
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    citations: dict[int, Citation] = {}
    unsupported: list[str] = []
    for sentence in split_sentences(text):
        written = [int(n) for n in re.findall(r"\[(\d+)\]", sentence)]
        for n in written:
            citations.setdefault(n, Citation(n, sources[n - 1].uid, sources[n - 1].title, attributed=False))
        if written:
            continue
        best = max(range(len(sources)), key=lambda i: support(sentence, sources[i]), default=None)
        if best is not None and support(sentence, sources[best]) >= SUPPORT_THRESHOLD:
            n = best + 1
            citations.setdefault(n, Citation(n, sources[best].uid, sources[best].title, attributed=True))
        else:
            unsupported.append(sentence)
    ordered = sorted(citations.values(), key=lambda c: text.find(f"[{c.marker}]") if f"[{c.marker}]" in text else len(text) + c.marker)
    return CheckedAnswer(text, ordered, removed, unsupported, hedges=hedges)
