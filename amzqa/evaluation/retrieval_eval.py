"""``amzqa eval retrieval``: recall@1/5/10, MRR and nDCG@10 of dense, lexical and hybrid retrieval."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from amzqa.atomic import write_json_atomic, write_text_atomic
from amzqa.config import Config, doc
from amzqa.errors import ConfigError
from amzqa.evaluation.metrics import first_relevant_rank, ranking_report
from amzqa.evaluation.questions import Question, make_questions
from amzqa.evaluation.split import HELDOUT_RATE, is_heldout
from amzqa.progress import bar
from amzqa.records import Product
from amzqa.retrieval.base import candidates, title_key, to_hits

log = logging.getLogger(__name__)
MODES = ("dense", "lexical", "hybrid")


@dataclasses.dataclass
class RetrievalEvalConfig(Config):
    """Settings of ``amzqa eval retrieval``."""

    artifacts: Path | None = doc("Index artifact folder.", None)
    n: int = doc("Held-out products to write questions for (each gives a title and a content question).", 500)
    k: int = doc("Ranking cutoff for the metrics.", 10)
    seed: int = doc("Seed for product sampling and question noise.", 0)
    heldout_rate: float = doc("Share of products in the held-out split.", HELDOUT_RATE)
    out: Path | None = doc("Report folder (report.json, report.md); default reports/retrieval-<time>.", None)

    def __post_init__(self) -> None:
        if self.n < 1 or self.k < 1:
            raise ConfigError("n and k must be >= 1")
        if not 0 < self.heldout_rate <= 1:
            raise ConfigError("heldout_rate must be in (0, 1]")


def heldout_products(store, rate: float, n: int, seed: int) -> list[Product]:
    uids = store.table.column("uid").to_pylist()
    rows = [i for i, u in enumerate(uids) if is_heldout(u, rate)]
    random.Random(seed).shuffle(rows)
    return [store.get(i) for i in sorted(rows[:n])]


def relevant_sets(store, golds: list[Product]) -> dict[str, set[str]]:
    """Each gold product plus its near-duplicate editions (same normalised title): any of them is a hit."""
    want = {title_key(p.title): p.uid for p in golds}
    groups: dict[str, set[str]] = {p.uid: {p.uid} for p in golds}
    for uid, title in zip(store.table.column("uid").to_pylist(), store.table.column("title").to_pylist()):
        gold = want.get(title_key(title))
        if gold is not None:
            groups[gold].add(uid)
    return groups


def question_rankings(rset, questions: list[Question], k: int = 10,
                      progress: bool | None = None) -> list[dict[str, list[tuple[int, float]]]]:
    """Dense and lexical candidate rankings per question (each retriever searches each question once)."""
    n = candidates(k)
    vectors = rset.dense.embedder.encode([q.text for q in questions])
    dense_all = rset.dense.search_vectors(vectors, n)
    return [{"dense": dense, "lexical": rset.lexical.search(q.text, n)}
            for q, dense in zip(questions, bar(progress, iterable=dense_all, desc="search", unit="q"))]


def evaluate_questions(rset, questions: list[Question], relevant: dict[str, set[str]], k: int = 10,
                       progress: bool | None = None) -> dict[str, list[int | None]]:
    """Rank of the first relevant hit per question for each mode."""
    ranks: dict[str, list[int | None]] = {m: [] for m in MODES}
    for q, ranking in zip(questions, question_rankings(rset, questions, k, progress)):
        ranked = {
            "dense": [(r, s, {"dense": s}) for r, s in ranking["dense"]],
            "lexical": [(r, s, {"lexical": s}) for r, s in ranking["lexical"]],
            "hybrid": rset.hybrid.fuse(ranking),
        }
        for mode in MODES:
            hits = to_hits(rset.store, ranked[mode], k)
            ranks[mode].append(first_relevant_rank([h.uid for h in hits], relevant[q.uid]))
    return ranks


def evaluate_retrieval(cfg: RetrievalEvalConfig, rset=None, progress: bool | None = None) -> dict[str, Any]:
    from amzqa.retrieval import RetrieverSet

    if cfg.artifacts is None:
        raise ConfigError("eval retrieval needs artifacts")
    started = time.perf_counter()
    rset = rset or RetrieverSet(cfg.artifacts)
    products = heldout_products(rset.store, cfg.heldout_rate, cfg.n, cfg.seed)
    questions = make_questions(products, seed=cfg.seed)
    relevant = relevant_sets(rset.store, products)
    ranks = evaluate_questions(rset, questions, relevant, cfg.k, progress)
    results: dict[str, dict[str, Any]] = {}
    for mode, mode_ranks in ranks.items():
        results[mode] = {"all": ranking_report(mode_ranks)}
        for kind in ("title", "content"):
            sub = [r for r, q in zip(mode_ranks, questions) if q.kind == kind]
            if sub:
                results[mode][kind] = ranking_report(sub)
    best_single = max(("dense", "lexical"), key=lambda m: results[m]["all"]["recall@10"])
    report = {
        "config": cfg.to_dict(),
        "artifacts_manifest": {k: rset.artifacts.manifest[k] for k in ("corpus", "embedding", "dense", "lexical")},
        "questions": {"total": len(questions), "title": sum(q.kind == "title" for q in questions),
                      "content": sum(q.kind == "content" for q in questions), "products": len(products)},
        "results": results,
        "hybrid_fusion": rset.hybrid.describe(),
        "hybrid_vs_best_single": {
            "best_single": best_single,
            **{m: results["hybrid"]["all"][m] - results[best_single]["all"][m] for m in ("recall@1", "recall@10", "mrr@10", "ndcg@10")},
        },
        "examples": [{"question": q.text, "kind": q.kind, "uid": q.uid, "rank_hybrid": ranks["hybrid"][i]}
                     for i, q in enumerate(questions[:10])],
        "seconds": round(time.perf_counter() - started, 2),
    }
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Retrieval evaluation",
        "",
        f"{report['questions']['total']} questions ({report['questions']['title']} title-mention, "
        f"{report['questions']['content']} content-only) from {report['questions']['products']} held-out products.",
        "",
        "| retriever | questions | recall@1 | recall@5 | recall@10 | MRR@10 | nDCG@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, by_kind in report["results"].items():
        for kind, m in by_kind.items():
            lines.append(f"| {mode} | {kind} ({m['n']}) | {m['recall@1']:.3f} | {m['recall@5']:.3f} | {m['recall@10']:.3f} "
                         f"| {m['mrr@10']:.3f} | {m['ndcg@10']:.3f} |")
    g = report["hybrid_vs_best_single"]
    lines += ["", f"Hybrid vs the better single retriever ({g['best_single']}): recall@10 {g['recall@10']:+.3f}, "
              f"MRR@10 {g['mrr@10']:+.3f}, nDCG@10 {g['ndcg@10']:+.3f}."]
    if report.get("hybrid_fusion"):
        lines += ["", f"Hybrid fusion: {report['hybrid_fusion']}."]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "retrieval.json", report)
    write_text_atomic(out / "retrieval.md", markdown(report))
    return out


def default_out(kind: str) -> Path:
    return Path("reports") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_report(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
