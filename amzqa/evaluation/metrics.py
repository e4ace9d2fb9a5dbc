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
