"""Ranking metrics with one relevant item per question (a product and its near-duplicate editions).

``rank`` is the 1-based position of the first relevant hit, or None when it was not retrieved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def recall_at(ranks: Sequence[int | None], k: int) -> float:
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def mrr(ranks: Sequence[int | None], cutoff: int = 10) -> float:
    return sum(1.0 / r for r in ranks if r is not None and r <= cutoff) / len(ranks) if ranks else 0.0


def ndcg_at(ranks: Sequence[int | None], k: int = 10) -> float:
    """With a single relevant item the ideal DCG is 1 (rank 1), so nDCG = 1 / log2(rank + 1)."""
    return sum(1.0 / math.log2(r + 1) for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def first_relevant_rank(retrieved_uids: Sequence[str], relevant: set[str]) -> int | None:
    for i, uid in enumerate(retrieved_uids, 1):
        if uid in relevant:
            return i
    return None


def ranking_report(ranks: Sequence[int | None]) -> dict[str, float]:
    return {
        "n": len(ranks),
        "recall@1": recall_at(ranks, 1),
        "recall@5": recall_at(ranks, 5),
        "recall@10": recall_at(ranks, 10),
        "mrr@10": mrr(ranks, 10),
        "ndcg@10": ndcg_at(ranks, 10),
    }


RANKING_METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")


def per_question(ranks: Sequence[int | None]):
    """One row per question, one column per RANKING_METRICS entry: the question's own contribution to each mean."""
    import numpy as np

    def row(r: int | None) -> list[float]:
        hit = r is not None and r <= 10
        return [float(r is not None and r <= 1), float(r is not None and r <= 5), float(hit),
                1.0 / r if hit else 0.0, 1.0 / math.log2(r + 1) if hit else 0.0]

    return np.array([row(r) for r in ranks], dtype=float).reshape(len(ranks), len(RANKING_METRICS))


def bootstrap_rankings(ranks: dict[str, Sequence[int | None]], b: int = 1000, seed: int = 0) -> dict[str, dict]:
    """95% bootstrap intervals of every ranking metric per retriever, and paired intervals of the difference for
    every pair of retrievers (the same resampled questions for both: the retrievers answered the same questions)."""
    import numpy as np

    names = list(ranks)
    values = {name: per_question(ranks[name]) for name in names}
    n = len(next(iter(ranks.values())))
    if n == 0:
        return {"intervals": {}, "differences": {}}
    idx = np.random.default_rng(seed).integers(0, n, (b, n))
    means = {name: values[name][idx].mean(axis=1) for name in names}  # b x metrics

    def interval(draws) -> list[list[float]]:
        lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
        return [[float(a), float(c)] for a, c in zip(lo, hi)]

    intervals = {name: dict(zip(RANKING_METRICS, interval(means[name]))) for name in names}
    differences = {}
    for i, a in enumerate(names):
        for c in names[i + 1:]:
            point = values[a].mean(axis=0) - values[c].mean(axis=0)
            spans = interval(means[a] - means[c])
            differences[f"{a} - {c}"] = {m: {"value": float(v), "ci95": span}
                                         for m, v, span in zip(RANKING_METRICS, point, spans)}
    return {"intervals": intervals, "differences": differences}
