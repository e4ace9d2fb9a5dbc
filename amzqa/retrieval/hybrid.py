"""Hybrid retrieval: fuse dense and lexical rankings (reciprocal-rank or weighted-score fusion)."""

from __future__ import annotations

from amzqa.errors import ConfigError
from amzqa.records import Hit
from amzqa.retrieval.base import candidates, check_query, to_hits

FUSIONS = ("rrf", "weighted")


def rrf(rankings: dict[str, list[tuple[int, float]]], rrf_k: int = 60) -> list[tuple[int, float, dict[str, float]]]:
    """Reciprocal-rank fusion: score(d) = sum over retrievers of 1 / (rrf_k + rank_r(d))."""
    fused: dict[int, float] = {}
    found: dict[int, dict[str, float]] = {}
    for name, ranked in rankings.items():
        for rank, (row, score) in enumerate(ranked, 1):
            fused[row] = fused.get(row, 0.0) + 1.0 / (rrf_k + rank)
            found.setdefault(row, {})[name] = score
    order = sorted(fused, key=lambda r: (-fused[r], r))
    return [(r, fused[r], found[r]) for r in order]


def weighted(rankings: dict[str, list[tuple[int, float]]], weights: dict[str, float]) -> list[tuple[int, float, dict[str, float]]]:
    """Score-aware fusion: dense cosine as is, BM25 divided by the query's top BM25 score, summed with weights.

    Unlike min-max or rank fusion this keeps how *peaked* each retriever is: a description that matches the
    question's words far better than anything else keeps its lead over a flat band of similar titles.
    """
    fused: dict[int, float] = {}
    found: dict[int, dict[str, float]] = {}
    for name, ranked in rankings.items():
        if not ranked:
            continue
        top = max(s for _, s in ranked) if name == "lexical" else 1.0
        for row, s in ranked:
            fused[row] = fused.get(row, 0.0) + weights.get(name, 1.0) * (s / top if top > 0 else 0.0)
            found.setdefault(row, {})[name] = s
    order = sorted(fused, key=lambda r: (-fused[r], r))
    return [(r, fused[r], found[r]) for r in order]


class HybridRetriever:
    name = "hybrid"

    def __init__(self, dense, lexical, fusion: str = "weighted", rrf_k: int = 60, weights: dict[str, float] | None = None) -> None:
        if fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.dense, self.lexical, self.fusion, self.rrf_k = dense, lexical, fusion, rrf_k
        self.weights = weights or {"dense": 1.0, "lexical": 2.0}
        self.store = dense.store

    def fuse(self, rankings: dict[str, list[tuple[int, float]]]) -> list[tuple[int, float, dict[str, float]]]:
        return rrf(rankings, self.rrf_k) if self.fusion == "rrf" else weighted(rankings, self.weights)

    def retrieve(self, query: str, k: int = 10) -> list[Hit]:
        query = check_query(query)
        n = candidates(k)
        rankings = {"dense": self.dense.search(query, n), "lexical": self.lexical.search(query, n)}
        return to_hits(self.store, self.fuse(rankings), k)
