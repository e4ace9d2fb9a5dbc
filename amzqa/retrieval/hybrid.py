"""Hybrid retrieval: fuse dense and lexical rankings (reciprocal-rank, weighted-score or convex min-max fusion)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from amzqa.errors import ArtifactError, ConfigError
from amzqa.io.layout import FUSION_FILE
from amzqa.records import Hit
from amzqa.retrieval.base import candidates, check_query, to_hits

log = logging.getLogger(__name__)

FUSIONS = ("rrf", "weighted", "convex")


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


def _minmax(ranked: list[tuple[int, float]]) -> dict[int, float]:
    if not ranked:
        return {}
    lo, hi = min(s for _, s in ranked), max(s for _, s in ranked)
    return {row: (s - lo) / (hi - lo) if hi > lo else 1.0 for row, s in ranked}


def convex(rankings: dict[str, list[tuple[int, float]]], alpha: float) -> list[tuple[int, float, dict[str, float]]]:
    """Convex combination of per-query min-max normalised scores: alpha * dense + (1 - alpha) * lexical.

    With alpha tuned per catalog this is the fusion Bruch et al. (2023, "An Analysis of Fusion Functions for
    Hybrid Retrieval") found to beat RRF; a candidate missing from one list scores 0 there.
    """
    norm = {name: _minmax(ranked) for name, ranked in rankings.items()}
    weights = {"dense": alpha, "lexical": 1.0 - alpha}
    fused: dict[int, float] = {}
    found: dict[int, dict[str, float]] = {}
    for name, ranked in rankings.items():
        for row, s in ranked:
            fused[row] = fused.get(row, 0.0) + weights.get(name, 0.0) * norm[name][row]
            found.setdefault(row, {})[name] = s
    order = sorted(fused, key=lambda r: (-fused[r], r))
    return [(r, fused[r], found[r]) for r in order]


class HybridRetriever:
    name = "hybrid"

    def __init__(self, dense, lexical, fusion: str = "weighted", rrf_k: int = 60, weights: dict[str, float] | None = None,
                 alpha: float = 0.5, calibrated: bool = False) -> None:
        if fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha (convex fusion's dense weight) must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.dense, self.lexical, self.fusion, self.rrf_k = dense, lexical, fusion, rrf_k
        self.weights = weights or {"dense": 1.0, "lexical": 2.0}
        self.store = dense.store
        self.calibrated = calibrated

    @classmethod
    def from_calibration(cls, dense, lexical, calibration: dict) -> HybridRetriever:
        """The fusion chosen by :func:`amzqa.indexing.fusion.calibrate_fusion` for this catalog."""
        return cls(dense, lexical, fusion=calibration["fusion"], rrf_k=int(calibration.get("rrf_k", 60)),
                   weights={k: float(v) for k, v in calibration["weights"].items()},
                   alpha=float(calibration.get("alpha", 0.5)), calibrated=True)

    def describe(self) -> str:
        how = {"weighted": f"weighted, dense {self.weights['dense']:g} + lexical {self.weights['lexical']:g}",
               "rrf": f"reciprocal rank, k={self.rrf_k}",
               "convex": f"convex min-max, dense {self.alpha:g} + lexical {1 - self.alpha:g}"}[self.fusion]
        return how + (" (calibrated on this catalog)" if self.calibrated else " (default)")

    def fuse(self, rankings: dict[str, list[tuple[int, float]]]) -> list[tuple[int, float, dict[str, float]]]:
        if self.fusion == "rrf":
            return rrf(rankings, self.rrf_k)
        return convex(rankings, self.alpha) if self.fusion == "convex" else weighted(rankings, self.weights)

    def rankings(self, query: str, n: int) -> dict[str, list[tuple[int, float]]]:
        """The dense and lexical top ``n`` of ``query``, the dense ranking completed with the lexical candidates'
        exact dense scores (:meth:`amzqa.retrieval.dense.DenseRetriever.completed`)."""
        lexical = self.lexical.search(query, n)
        vec = self.dense.embedder.encode([query])
        dense = self.dense.search_many([query], n, vecs=vec)[0]
        return {"dense": self.dense.completed(vec[0], dense, [row for row, _ in lexical]), "lexical": lexical}

    def retrieve(self, query: str, k: int = 10) -> list[Hit]:
        return to_hits(self.store, self.fuse(self.rankings(check_query(query), candidates(k))), k)


def load_calibration(artifacts) -> dict[str, Any] | None:
    """The stored calibration, or None; one computed for another corpus is refused."""
    path = Path(artifacts.path) / FUSION_FILE
    if not path.is_file():
        return None
    result = json.loads(path.read_text(encoding="utf-8"))
    if result.get("corpus_fingerprint") != artifacts.manifest["corpus"]["fingerprint"]:
        raise ArtifactError(f"{path} was calibrated on another corpus; run amzqa calibrate --artifacts {artifacts.path}")
    if not result.get("dense_completion"):
        log.warning("%s was calibrated before hybrid rankings completed their dense scores: its fusion still works but "
                    "may no longer be the best; run amzqa calibrate --artifacts %s", path, artifacts.path)
    return result
