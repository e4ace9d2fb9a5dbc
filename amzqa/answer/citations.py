"""Checking a generated answer against the sources the model was given: what is shown is what the sources say.

* every ``[n]`` (also ``[1, 2]`` and ``[1][2]``) is mapped to source n; markers to sources that were not given
  are removed from the text and counted;
* every sentence is judged against the source it cites (:func:`amzqa.grounding.support.judge`: content words, numbers with
  their units, materials, negations): a sentence its cited source does not support is re-attributed to the source
  that does (``Citation.reattributed``), else removed from the text and listed in ``unsupported``;
* a sentence the model wrote without a marker gets the marker of the source that supports it
  (``Citation.attributed``), else is removed and listed in ``unsupported``;
* a sentence that states nothing ("Yes.", a bare marker) is not shown;
* a question asking for one kind of fact (:mod:`amzqa.grounding.facts`: an age range, a battery life, care...) whose cited
  source states that kind of fact is answered only by a sentence stating it; supported sentences about something
  else are then not shown as its answer (the abstention offers the sentence that does);
* an answer is an abstention when it is one (empty, or every sentence says the catalog does not answer), and also
  when no sentence survives the check: then ``evidence`` offers the sources' sentence closest to the question.
  A hedging clause inside an answer that also states facts ("Hand wash only [2]; the catalog does not say whether
  it can go in the oven.") is dropped from the text and listed in ``hedges``; the facts and their citations stand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from amzqa.generation.prompt import ABSTAIN_MESSAGE
from amzqa.grounding.facts import answers, asked_facts
from amzqa.grounding.support import best_evidence, claim_text, judge, states_something
from amzqa.grounding.text import content_words, split_sentences
from amzqa.records import Citation, Evidence, Product

_GROUP = re.compile(r"\[(\s*\d+\s*(?:[,;]\s*\d+\s*)*)\]")
# What a hedge says ("the catalog does not say ..."), once: it finds hedges and the clause boundaries before them.
_HEDGE = (r"catalog(?:ue)? does not (?:answer|contain|have|say|state|mention|list|specify)"
          r"|(?:sources|catalog(?:ue)?|description) (?:do|does) not (?:answer|contain|mention|say|state|list|specify)"
          r"|not (?:mentioned|found|available|stated|specified) in the (?:sources|catalog(?:ue)?)"
          r"|no (?:information|source|details?) (?:about|on|for|regarding)"
          r"|(?:it is|it's) not (?:mentioned|stated|specified|said) (?:whether|if)"
          r"|cat[aá]logo n[aã]o (?:responde|cont[eé]m|tem|menciona|diz)")  # a model answering in Portuguese
_ABSTAIN = re.compile(_HEDGE, re.I)
# Clause boundaries a hedge can be joined to a fact by: ";", ", but", ", and", ", although", a dash with spaces, an
# em or en dash without (not between digits: "4–99" is a range), and a bare "and"/"but" when a hedge follows it (a
# bare "and" alone is no boundary: "waterproof and dustproof" is one claim).
_CLAUSE = re.compile(r"\s*;\s*|,\s+(?=(?:but|and|although|though|however|while)\b)|\s+[-–—]\s+|(?<!\d)\s*[–—]\s*(?!\d)"
                     rf"|\s+(?=(?:and|but|although|though|while)\s+(?:the\s+|there\s+is\s+)?(?:{_HEDGE}))", re.I)
SUPPORT_THRESHOLD = 0.5


@dataclass
class CheckedAnswer:
    text: str
    citations: list[Citation] = field(default_factory=list)
    removed: int = 0
    unsupported: list[str] = field(default_factory=list)
    abstained: bool = False
    hedges: list[str] = field(default_factory=list)
    evidence: Evidence | None = None  # an abstention's offer: what the catalog does say closest to the question
    reasons: list[str] = field(default_factory=list)  # why each unsupported sentence was removed, in order


def support(sentence: str, product: Product) -> float:
    """Share of the sentence's content words found in the product's title and description (a coarse overlap,
    kept for the evaluation's word-level view; what is shown is decided by :func:`amzqa.grounding.support.judge`)."""
    words = content_words(_GROUP.sub(" ", sentence))
    if not words:
        return 1.0  # nothing to support ("Yes.", a bare marker)
    return len(words & content_words(f"{product.title} {product.content}")) / len(words)


def is_hedge(sentence: str) -> bool:
    """A sentence (or clause) that says the sources or the catalog do not answer (markers and case ignored)."""
    return bool(_ABSTAIN.search(_GROUP.sub(" ", sentence)))


def is_abstention(text: str) -> bool:
    """The whole answer refuses: empty, or nothing but sentences that say the catalog does not answer."""
    sentences = split_sentences(_GROUP.sub(" ", text))
    return not sentences or all(is_hedge(s) and not drop_hedges(s)[0] for s in sentences)


def drop_hedges(sentence: str) -> tuple[str, list[str]]:
    """The sentence without its hedging clauses, and those clauses ("Hand wash only [2]; the catalog does not say
    ..." keeps "Hand wash only [2]."). A sentence that is all hedge comes back empty."""
    if not is_hedge(sentence):
        return sentence, []
    clauses = [c for c in _CLAUSE.split(sentence) if c and c.strip()]
    kept = [c for c in clauses if not is_hedge(c)]
    hedges = [c.strip() for c in clauses if is_hedge(c)]
    if not kept or not any(states_something(c) for c in kept):
        return "", [sentence.strip()]
    text = "; ".join(c.strip().rstrip(",;") for c in kept)
    if text[-1] not in ".!?":  # the sentence's own end went with the hedge
        markers = re.match(r"(.*?)((?:\s*\[\d+\])*)$", text)
        text = f"{markers.group(1).rstrip()}{markers.group(2)}." if markers.group(2) else f"{text}."
    return text, hedges


def _supporting(sentence: str, sources, numbers: list[int]) -> tuple[list[int], str, str]:
    """(markers among ``numbers`` whose source supports the sentence, the evidence sentence, why not if none)."""
    kept, evidence, reason = [], "", ""
    for n in numbers:
        verdict = judge(sentence, sources[n - 1])
        if verdict.supported:
            kept.append(n)
            evidence = evidence or verdict.evidence
        elif not reason:
            reason = f"[{n}]: {verdict.reason}"
    return kept, evidence, reason


def check(text: str, sources: list[Product] | tuple[Product, ...], question: str = "") -> CheckedAnswer:
    """The answer as it may be shown: every sentence supported by the source its marker names (see module doc)."""
    text = text.strip()
    if is_abstention(text):
        return CheckedAnswer(ABSTAIN_MESSAGE, abstained=True, evidence=_evidence(question, sources))
    removed = 0

    def keep_valid(m: re.Match) -> str:
        nonlocal removed
        nums = [int(x) for x in re.split(r"[,;]", m.group(1))]
        valid = [n for n in nums if 1 <= n <= len(sources)]
        removed += len(nums) - len(valid)
        return "".join(f"[{n}]" for n in dict.fromkeys(valid))

    shown: list[str] = []
    hedges: list[str] = []
    unsupported: list[str] = []
    reasons: list[str] = []
    citations: dict[int, Citation] = {}
    for raw_sentence in split_sentences(text):
        sentence, dropped = drop_hedges(raw_sentence)
        hedges += dropped
        sentence = re.sub(r"\s+([.,;:!?])", r"\1", " ".join(_GROUP.sub(keep_valid, sentence).split()))
        if not sentence:
            continue
        if not states_something(sentence):  # "Yes." / "[1]": nothing a source could support
            if claim_text(sentence):
                unsupported.append(sentence)
                reasons.append("states nothing to check")
            continue
        written = list(dict.fromkeys(int(n) for n in re.findall(r"\[(\d+)\]", sentence)))
        kept, evidence, reason = _supporting(sentence, sources, written)
        attributed = reattributed = False
        if not kept:  # cited to a source that does not say it, or not cited: the source that does, if any
            others = [n for n in range(1, len(sources) + 1) if n not in written]
            kept, evidence, other_reason = _supporting(sentence, sources, others[:])
            kept = kept[:1]
            reason = reason or other_reason
            attributed, reattributed = not written, bool(written)
        if not kept:
            unsupported.append(claim_text(sentence) if not written else sentence)
            reasons.append(reason or "no source supports it")
            continue
        body = claim_text(sentence)
        end = body[-1] if body[-1] in ".!?" else "."
        body = body.rstrip(".!? ")
        shown.append(f"{body} {''.join(f'[{n}]' for n in kept)}{end}")
        for n in kept:
            citations.setdefault(n, Citation(n, sources[n - 1].uid, sources[n - 1].title, attributed=attributed,
                                             reattributed=reattributed, sentence=evidence))
    kinds = asked_facts(question) if question else ()
    if shown and kinds and not any(answers(claim_text(s), kinds) for s in shown) and any(
            answers(sentence, kinds) for n in citations for sentence in split_sentences(sources[n - 1].content or "")):
        # Supported, but not what was asked while the cited source states it elsewhere ("Pre-seasoned with oil [1]"
        # for "is it dishwasher safe?" when [1] says "Hand wash only."): not an answer; the evidence offers it.
        wanted = " or ".join(k.name for k in kinds)
        unsupported += shown
        reasons += [f"does not state the {wanted} asked for"] * len(shown)
        shown, citations = [], {}
    if not shown:
        return CheckedAnswer(ABSTAIN_MESSAGE, [], removed, unsupported, True, hedges, _evidence(question, sources),
                             reasons)
    out = " ".join(shown)
    ordered = sorted(citations.values(), key=lambda c: out.find(f"[{c.marker}]"))
    return CheckedAnswer(out, ordered, removed, unsupported, False, hedges, None, reasons)


def _evidence(question: str, sources) -> Evidence | None:
    found = best_evidence(question, sources) if question and sources else None
    if found is None:
        return None
    n, sentence = found
    return Evidence(n, sources[n - 1].uid, sources[n - 1].title, sentence)
