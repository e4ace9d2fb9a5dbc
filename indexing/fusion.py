"""Per-catalog calibration of hybrid fusion, stored beside the index as ``fusion.json``.

How much the lexical ranking should count depends on the catalog: where titles and descriptions carry rare,
product-specific words (authors, brands, model names) BM25 finds what embeddings blur; where they are stock
phrases shared by thousands of products, BM25 is noise and must count little. No fixed weighting is right for
both, so ``amzqa index`` (or ``amzqa calibrate`` on an existing artifact) tries a small grid of fusions on
questions written from *non-held-out* products — never the evaluation's — and keeps the best by
MRR@10 + recall@10. :class:`~amzqa.retrieval.RetrieverSet` then uses it for ``mode="hybrid"``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from amzqa.errors import ArtifactError, ConfigError
from amzqa.io.atomic import revise_dir, write_json_atomic
from amzqa.io.layout import FUSION_FILE, MANIFEST

log = logging.getLogger(__name__)
LEXICAL_WEIGHTS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
RRF_KS = (10, 60)
CONVEX_ALPHAS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


@dataclasses.dataclass(frozen=True)
class FusionChoice:
    """One fusion setting: ``weighted`` with a lexical weight (dense weight 1), ``rrf`` with its k, or ``convex``
    with its dense share alpha."""

    fusion: str
    lexical_weight: float = 0.0
    rrf_k: int = 60
    alpha: float = 0.5

    @property
    def label(self) -> str:
        return {"weighted": f"weighted lexical={self.lexical_weight:g}", "rrf": f"rrf k={self.rrf_k}",
                "convex": f"convex alpha={self.alpha:g}"}[self.fusion]

    def fuse(self, ranking: dict[str, list[tuple[int, float]]]):
        from amzqa.retrieval.hybrid import convex, rrf, weighted

        if self.fusion == "rrf":
            return rrf(ranking, self.rrf_k)
        if self.fusion == "convex":
            return convex(ranking, self.alpha)
        return weighted(ranking, {"dense": 1.0, "lexical": self.lexical_weight})


def grid() -> list[FusionChoice]:
    return ([FusionChoice("weighted", w) for w in LEXICAL_WEIGHTS] + [FusionChoice("rrf", rrf_k=k) for k in RRF_KS]
            + [FusionChoice("convex", alpha=a) for a in CONVEX_ALPHAS])


def calibrate_fusion(rset, n: int = 300, seed: int = 0, k: int = 10, progress: bool | None = None) -> dict[str, Any]:
    """Score every fusion in :func:`grid` on questions about ``n`` non-held-out products; return the report."""
    from amzqa.data.questions import make_questions
    from amzqa.data.split import HELDOUT_RATE, calibration_products
    from amzqa.evaluation.metrics import first_relevant_rank, ranking_report
    from amzqa.evaluation.retrieval_eval import question_rankings, relevant_sets
    from amzqa.retrieval.base import to_hits

    if n < 10:
        raise ConfigError("fusion calibration needs at least 10 products")
    started = time.perf_counter()
    products = calibration_products(rset.store, n, seed, HELDOUT_RATE)
    if not products:
        raise ArtifactError(f"{rset.artifacts.path}: no products outside the held-out split to calibrate on")
    questions = make_questions(products, seed=seed)
    relevant = relevant_sets(rset.store, products)
    rankings = question_rankings(rset, questions, k, progress)
    scored = []
    for choice in grid():
        ranks = []
        for q, ranking in zip(questions, rankings):
            hits = to_hits(rset.store, choice.fuse(ranking["hybrid"]), k)
            ranks.append(first_relevant_rank([h.uid for h in hits], relevant[q.uid]))
        report = ranking_report(ranks)
        scored.append((report["mrr@10"] + report["recall@10"], choice, report))
    best_score, best, best_report = max(scored, key=lambda s: s[0])
    result = {
        "fusion": best.fusion, "weights": {"dense": 1.0, "lexical": best.lexical_weight}, "rrf_k": best.rrf_k, "alpha": best.alpha,
        "objective": "mrr@10 + recall@10", "score": round(best_score, 4), "metrics": best_report,
        "grid": [{"fusion": c.label, "score": round(s, 4), "mrr@10": r["mrr@10"], "recall@10": r["recall@10"]}
                 for s, c, r in scored],
        "questions": len(questions), "products": len(products), "seed": seed,
        "dense_completion": True,  # fitted on hybrid rankings whose dense side is completed (amzqa.retrieval.dense)
        "corpus_fingerprint": rset.artifacts.manifest["corpus"]["fingerprint"],
    }  # no timing inside: the file is reproducible byte for byte (the manifest's timings hold calibrate_s)
    log.info("fusion calibrated on %d questions in %.1f s: %s (MRR@10 %.3f, recall@10 %.3f)", len(questions),
             time.perf_counter() - started, best.label, best_report["mrr@10"], best_report["recall@10"])
    return result


def write_calibration(folder: str | Path, result: dict[str, Any], seconds: float | None = None) -> dict[str, Any]:
    """Write fusion.json into a private index folder (a build's, or a revised copy) and re-seal its manifest."""
    from amzqa.retrieval.artifacts import seal

    folder = Path(folder)
    write_json_atomic(folder / FUSION_FILE, result)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    if seconds is not None:
        manifest["timings"]["calibrate_s"] = round(seconds, 2)
    return seal(folder, manifest)


def save_calibration(artifacts: str | Path, result: dict[str, Any], seconds: float | None = None) -> Path:
    """Recalibrate a published index: a revised copy gets the new fusion.json and seal, then replaces it atomically."""
    with revise_dir(artifacts) as tmp:
        write_calibration(tmp, result, seconds)
    return Path(artifacts) / FUSION_FILE
