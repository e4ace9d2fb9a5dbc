"""Answer-quality metrics.

* chrF: sacreBLEU's sentence chrF (n = 1..6, beta = 2), scaled to [0, 1]; its signature goes into every report.
* ROUGE-L: F-measure of the longest common subsequence of lower-cased word tokens (beta = 1). Kept here because
  ``rouge-score`` tokenises on ``[a-z0-9]`` and so deletes every accented letter (Portuguese answers); on ASCII text
  it equals ``rouge-score``'s rougeL F-measure (tests/test_eval_metrics.py checks the parity).
"""

from __future__ import annotations

import functools
import re

from amzqa.grounding.text import STOPWORDS, stem, words

_TOKEN = re.compile(r"[^\W_]+")  # letters and digits of any script; "_" splits, as in rouge-score
_MARKER = re.compile(r"\[\d+\]")


def strip_markers(text: str) -> str:
    """The answer without its [n] markers (and without the space a marker left before punctuation)."""
    return re.sub(r"\s+([.,;:!?])", r"\1", " ".join(_MARKER.sub(" ", text).split()))


def _lcs(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str) -> float:
    c = _TOKEN.findall(strip_markers(candidate).lower())
    r = _TOKEN.findall(reference.lower())
    lcs = _lcs(c, r)
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(c), lcs / len(r)
    return 2 * p * rec / (p + rec)


@functools.lru_cache(maxsize=1)
def _chrf_metric():
    from amzqa.optional import require

    require("sacrebleu", "eval")
    from sacrebleu.metrics import CHRF

    return CHRF()  # chrF2: character 6-grams, beta 2, no word n-grams


def chrf(candidate: str, reference: str) -> float:
    return _chrf_metric().sentence_score(strip_markers(candidate), [reference]).score / 100


def chrf_signature() -> str:
    metric = _chrf_metric()
    if getattr(metric, "_ref_cache", None) is None and getattr(metric, "num_refs", None) in (None, -1):
        metric.sentence_score("a", ["a"])  # sacrebleu states the reference count only once it has scored a pair
    return str(metric.get_signature())


_KEEP = frozenset({"no", "not"})  # negations are part of a fact ("not dishwasher safe", "pump not included")


def fact_tokens(text: str) -> set[str]:
    """The words that carry a fact: content words (stop words dropped, plurals folded) plus negations."""
    tokens = (w.removesuffix("'s") for w in words(strip_markers(text).replace("’", "'")))  # "Asimov's" states "Asimov"
    return {stem(w) for w in tokens if w in _KEEP or (w not in STOPWORDS and len(w) > 1) or w.isdigit()}


def states_fact(answer: str, fact: str) -> bool:
    """Whether the answer states the fact: every word of the fact (numbers and negations included) occurs in it."""
    wanted = fact_tokens(fact)
    return bool(wanted) and wanted <= fact_tokens(answer)


def precision_recall(predicted: list[bool], actual: list[bool]) -> tuple[float, float]:
    """Precision and recall of the positive class (here: "abstained")."""
    tp = sum(p and a for p, a in zip(predicted, actual))
    fp = sum(p and not a for p, a in zip(predicted, actual))
    fn = sum(a and not p for p, a in zip(predicted, actual))
    return (tp / (tp + fp) if tp + fp else 0.0), (tp / (tp + fn) if tp + fn else 0.0)
