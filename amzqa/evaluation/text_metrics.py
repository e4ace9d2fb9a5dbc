"""Answer-quality metrics, computed here so each is checked on hand-made cases (no metric library quirks).

* ROUGE-L: F-measure of the longest common subsequence of lower-cased word tokens (beta = 1).
* chrF: character n-gram F-score (n = 1..6, beta = 2, whitespace removed), as in Popović (2015) / sacreBLEU.
"""

from __future__ import annotations

import re
from collections import Counter

_TOKEN = re.compile(r"\w+")
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


def chrf(candidate: str, reference: str, n: int = 6, beta: float = 2.0) -> float:
    c = "".join(strip_markers(candidate).split())
    r = "".join(reference.split())
    precisions, recalls = [], []
    for k in range(1, n + 1):
        cc = Counter(c[i:i + k] for i in range(len(c) - k + 1))
        rc = Counter(r[i:i + k] for i in range(len(r) - k + 1))
        if not cc or not rc:
            continue
        overlap = sum((cc & rc).values())
        precisions.append(overlap / sum(cc.values()))
        recalls.append(overlap / sum(rc.values()))
    if not precisions:
        return 0.0
    p, rec = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if p + rec == 0:
        return 0.0
    return (1 + beta**2) * p * rec / (beta**2 * p + rec)


def precision_recall(predicted: list[bool], actual: list[bool]) -> tuple[float, float]:
    """Precision and recall of the positive class (here: "abstained")."""
    tp = sum(p and a for p, a in zip(predicted, actual))
    fp = sum(p and not a for p, a in zip(predicted, actual))
    fn = sum(a and not p for p, a in zip(predicted, actual))
    return (tp / (tp + fp) if tp + fp else 0.0), (tp / (tp + fn) if tp + fn else 0.0)
