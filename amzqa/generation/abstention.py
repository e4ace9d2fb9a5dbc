"""Calibrated abstention shared by every generator backend.

A fine-tuned model ranks "product absent" cases well by log P(abstention message | prompt), but its greedy choice
abstains too often; ``amzqa train`` fits a threshold on that log-probability (``amzqa_abstention.json`` beside the
adapter, copied into merged and exported models). A backend that can score the message abstains exactly when the
threshold is reached and otherwise answers with the message's opening suppressed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from amzqa.generation.prompt import ABSTAIN_MESSAGE, Prompt, shows_asked_fact
from amzqa.io.layout import ABSTENTION_CALIBRATION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Threshold:
    """The fitted cut on log P(abstention message): one for questions that ask for a single fact (amzqa.grounding.facts), fitted
    on those alone where the eval split has enough of them, and one for every other question."""

    default: float
    fact: float | None = None
    message: str = ABSTAIN_MESSAGE  # the answer whose log-probability it cuts: the message, or selection's "0"
    prior_weight: float = 0.0  # selection: weight of the candidates' lexical score added to the label log-probs

    def for_question(self, question: str) -> float:
        from amzqa.grounding.facts import asked_facts

        return self.fact if self.fact is not None and asked_facts(question) else self.default


def load_threshold(*folders: str | Path | None) -> Threshold | None:
    """The fitted threshold from the first of ``folders`` that carries one (adapter, merged or exported model)."""
    for folder in folders:
        if folder and Path(folder, ABSTENTION_CALIBRATION).is_file():
            saved = json.loads(Path(folder, ABSTENTION_CALIBRATION).read_text())
            fact = saved.get("fact_threshold")
            return Threshold(float(saved["threshold"]), None if fact is None else float(fact),
                             saved.get("message", ABSTAIN_MESSAGE), float(saved.get("prior_weight", 0.0)))
    return None


def decide(generator, prompt: Prompt) -> bool | None:
    """True = abstain, False = answer with the message suppressed, None = the model decides while generating."""
    threshold = getattr(generator, "abstain_threshold", None)
    if threshold is None or threshold.message != ABSTAIN_MESSAGE:  # a selection model's cut is not this message's
        return None
    if not prompt.catalog:  # e.g. llama-index's own prompt: the threshold was fitted on catalog prompts only
        return None
    if shows_asked_fact(prompt):  # the fact asked for is in front of the model: answer it
        return False
    return generator.answer_logprob(prompt, ABSTAIN_MESSAGE) >= threshold.for_question(prompt.question)


def abstention_opening(tokenizer) -> tuple[frozenset[int], frozenset[int]]:
    """The token ids that may open the abstention message (its first word, any case, with or without a space) and
    the ids that may follow them to continue it: any spelling of its second word's stem ("catalog", "catalogue",
    " Catalogs") or a piece of it at least five letters long ("catal"). Banning only the message's own second token
    let a fine-tuned model abstain anyway with "The catalogue does not answer ..."; banning "The" alone would forbid
    a fine start. Read from the vocabulary's token strings (byte-level "Ġ" and sentencepiece "▁" read as spaces), so
    it costs one pass over the vocabulary and no decoding."""
    first_word, second_word = (w.lower() for w in ABSTAIN_MESSAGE.split()[:2])
    stem = second_word[:7]
    firsts, seconds = set(), set()
    for token, i in tokenizer.get_vocab().items():
        text = token.replace("\u0120", " ").replace("\u2581", " ").strip().lower()
        if not text:
            continue
        if text == first_word:
            firsts.add(i)
        if text.startswith(stem) or (len(text) >= 5 and stem.startswith(text)):
            seconds.add(i)
    return frozenset(firsts), frozenset(seconds)


def stop_ids(tokenizer, model_dir: str | Path | None = None) -> frozenset[int]:
    """Every end-of-turn id: the tokenizer's EOS and each id the model's ``generation_config.json`` lists.

    Phi-3 (``[32000, 32001, 32007]``) and Llama-3 end a turn with ids other than the tokenizer's EOS; stopping at
    that one alone runs past the answer until the token budget is spent.
    """
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if model_dir is not None and Path(model_dir, "generation_config.json").is_file():
        listed = json.loads(Path(model_dir, "generation_config.json").read_text()).get("eos_token_id")
        ids.update(int(i) for i in (listed if isinstance(listed, list) else [listed]) if i is not None)
    return frozenset(ids)


class IncrementalText:
    """Turns a growing list of token ids into text pieces: ``tokenizers``' ``DecodeStream`` (it holds back an
    incomplete multi-byte character and respells merged spaces), with the stream's leading whitespace dropped.

    A tokenizer without a Rust backend is decoded whole at each step, emitting what extends what was emitted; where
    a later decode is not a prefix-stable extension, the rest comes out in :meth:`finish` rather than being lost.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.ids, self.emitted = tokenizer, [], ""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._stream = None
        if backend is not None:
            from tokenizers.decoders import DecodeStream

            self._backend, self._stream = backend, DecodeStream(skip_special_tokens=True)
        self._started = False

    def add(self, token: int) -> str:
        self.ids.append(token)
        if self._stream is not None:
            piece = self._stream.step(self._backend, token) or ""
            if not self._started:
                piece = piece.lstrip()
                self._started = bool(piece)
            self.emitted += piece
            return piece
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()
        if text.endswith("\ufffd") or not text.startswith(self.emitted) or len(text) <= len(self.emitted):
            return ""
        piece, self.emitted = text[len(self.emitted):], text
        return piece

    def finish(self) -> str:
        """What the pieces so far have not said of the whole decode (trailing whitespace dropped). Where the whole
        decode does not extend what was streamed (a tokenizer whose decoding is not prefix-stable), shown text cannot
        be taken back: nothing is added and a warning says so."""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).strip()
        if text.startswith(self.emitted):
            return text[len(self.emitted):]
        if text.startswith(self.emitted.rstrip()):
            return text[len(self.emitted.rstrip()):]
        log.warning("streamed text diverged from the full decode; %d characters may differ", len(text))
        return ""


def stream_text(tokenizer, tokens: Iterable[int], stop: Iterable[int] | None = None) -> Iterator[str]:
    """Text pieces of a token stream, up to its first stop id (shared by the in-process backends)."""
    stop = frozenset(stop) if stop is not None else stop_ids(tokenizer)
    text = IncrementalText(tokenizer)
    for token in tokens:
        if token in stop:
            break
        piece = text.add(token)
        if piece:
            yield piece
    tail = text.finish()
    if tail:
        yield tail
