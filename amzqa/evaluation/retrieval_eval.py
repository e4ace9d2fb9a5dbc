"""``amzqa eval retrieval``: recall@1/5/10, MRR and nDCG@10 of dense, lexical and hybrid retrieval."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from amzqa.config import Config, doc
from amzqa.data.questions import Question, make_questions, relevant_sets
from amzqa.data.split import HELDOUT_RATE, heldout_products
from amzqa.errors import ConfigError
from amzqa.evaluation.metrics import bootstrap_rankings, first_relevant_rank, ranking_report
from amzqa.io.atomic import write_json_atomic, write_text_atomic
from amzqa.progress import bar
from amzqa.records import Product
from amzqa.retrieval.base import candidates, to_hits

log = logging.getLogger(__name__)
MODES = ("dense", "lexical", "hybrid")


@dataclasses.dataclass
class RetrievalEvalConfig(Config):
    """Settings of ``amzqa eval retrieval``."""

    artifacts: Path | None = doc("Index artifact folder.", None)
    questions: Path | None = doc("A JSONL file of your own questions (question, uid of the product asked about; lines "
                                 "with uid null or none are skipped here): replaces the generated ones.", None)
    n: int = doc("Held-out products to write questions for (each gives a title and a content question).", 500)
    k: int = doc("Ranking cutoff for the metrics.", 10)
    seed: int = doc("Seed for product sampling, question noise and the bootstrap.", 0)
    bootstrap: int = doc("Bootstrap resamples for the 95% intervals.", 1000)
    heldout_rate: float = doc("Share of products in the held-out split.", HELDOUT_RATE)
    out: Path | None = doc("Report folder (report.json, report.md); default reports/retrieval-<time>.", None)
    portuguese: bool = doc("Also ask about the same held-out products in Portuguese (amzqa.data.questions.portuguese_question) "
                           "and report hybrid retrieval of those questions as asked and as the QA pipeline sends them "
                           "(detected and translated to English), beside English title questions, with paired intervals. "
                           "Needs the pt extra; generated questions only.", True)

    def __post_init__(self) -> None:
        if self.n < 1 or self.k < 1 or self.bootstrap < 10:
            raise ConfigError("n and k must be >= 1, bootstrap >= 10")
        if not 0 < self.heldout_rate <= 1:
            raise ConfigError("heldout_rate must be in (0, 1]")


def pick_questions(store, cfg: RetrievalEvalConfig) -> tuple[list[Question], list[Product], int]:
    """The questions to rank, the products they ask about, and how many of the user's lines name no product."""
    if cfg.questions is None:
        products = heldout_products(store, cfg.heldout_rate, cfg.n, cfg.seed)
        return make_questions(products, seed=cfg.seed), products, 0
    from amzqa.evaluation.user_questions import load_user_questions

    asked = load_user_questions(cfg.questions, store)
    named = [q for q in asked if q.product_uid]
    if not named:
        raise ConfigError(f"{cfg.questions}: no line names the product asked about (uid): nothing to rank")
    products = list({q.product_uid: store.by_uid(q.product_uid) for q in named}.values())
    questions = [Question(q.question, q.product_uid, store.row_of(q.product_uid), "user") for q in named]
    return questions, products, len(asked) - len(named)


def question_rankings(rset, questions: list[Question], k: int = 10,
                      progress: bool | None = None) -> list[dict[str, list[tuple[int, float]]]]:
    """Dense and lexical candidate rankings per question (each retriever searches each question once), and
    ``hybrid``: what the hybrid retriever fuses (the dense ranking completed with the lexical candidates' exact dense
    scores, as ``HybridRetriever.rankings`` does)."""
    n = candidates(k)
    texts = [q.text for q in questions]
    vecs = rset.dense.embedder.encode(texts)
    dense_all = rset.dense.search_many(texts, n, vecs=vecs)
    out = []
    for q, vec, dense in zip(questions, vecs, bar(progress, iterable=dense_all, desc="search", unit="q")):
        lexical = rset.lexical.search(q.text, n)
        completed = rset.dense.completed(vec, dense, [row for row, _ in lexical])
        out.append({"dense": dense, "lexical": lexical, "hybrid": {"dense": completed, "lexical": lexical}})
    return out


def evaluate_questions(rset, questions: list[Question], relevant: dict[str, set[str]], k: int = 10,
                       progress: bool | None = None) -> dict[str, list[int | None]]:
    """Rank of the first relevant hit per question for each mode."""
    ranks: dict[str, list[int | None]] = {m: [] for m in MODES}
    for q, ranking in zip(questions, question_rankings(rset, questions, k, progress)):
        ranked = {
            "dense": [(r, s, {"dense": s}) for r, s in ranking["dense"]],
            "lexical": [(r, s, {"lexical": s}) for r, s in ranking["lexical"]],
            "hybrid": rset.hybrid.fuse(ranking["hybrid"]),
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
    questions, products, skipped = pick_questions(rset.store, cfg)
    relevant = relevant_sets(rset.store, products)
    ranks = evaluate_questions(rset, questions, relevant, cfg.k, progress)
    stats = bootstrap_rankings(ranks, cfg.bootstrap, cfg.seed)
    results: dict[str, dict[str, Any]] = {}
    for mode, mode_ranks in ranks.items():
        results[mode] = {"all": {**ranking_report(mode_ranks), "ci95": stats["intervals"][mode]}}
        for kind in ("title", "content", "user"):
            sub = [r for r, q in zip(mode_ranks, questions) if q.kind == kind]
            if sub:
                results[mode][kind] = ranking_report(sub)
    best_single = max(("dense", "lexical"), key=lambda m: results[m]["all"]["recall@10"])
    report = {
        "config": cfg.to_dict(),
        "artifacts_manifest": {k: rset.artifacts.manifest[k] for k in ("corpus", "embedding", "dense", "lexical")},
        "questions": {"total": len(questions), "title": sum(q.kind == "title" for q in questions),
                      "content": sum(q.kind == "content" for q in questions), "products": len(products),
                      "file": str(cfg.questions) if cfg.questions else None, "skipped_without_uid": skipped},
        "results": results, "differences": stats["differences"],
        "hybrid_fusion": rset.hybrid.describe(),
        "hybrid_vs_best_single": {
            "best_single": best_single,
            **{m: results["hybrid"]["all"][m] - results[best_single]["all"][m] for m in ("recall@1", "recall@10", "mrr@10", "ndcg@10")},
        },
        "examples": [{"question": q.text, "kind": q.kind, "uid": q.uid, "rank_hybrid": ranks["hybrid"][i]}
                     for i, q in enumerate(questions[:10])],
    }
    if cfg.portuguese and cfg.questions is None:
        report["portuguese"] = portuguese_section(rset, products, relevant, cfg, progress)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


PT_VARIANTS = {"en": "English title question", "pt_translated": "Portuguese, as the QA pipeline sends it",
               "pt_asked": "Portuguese, as asked (no translation)"}


def portuguese_section(rset, products: list[Product], relevant: dict[str, set[str]], cfg: RetrievalEvalConfig,
                       progress: bool | None = None) -> dict[str, Any]:
    """The same products asked about in English and in Portuguese: hybrid ranks of each variant, paired."""
    import random

    from amzqa.answer import language
    from amzqa.data.questions import portuguese_question, title_question

    if not language.available():
        return {"skipped": "the pt extra is not installed (pip install 'amzqa[pt]')"}
    langs = language.Languages()
    r_en, r_pt = random.Random(cfg.seed), random.Random(cfg.seed + 1)
    english = [title_question(p, r_en) for p in products]
    asked = [portuguese_question(p, r_pt) for p in products]
    started = time.perf_counter()
    detected = [langs.detect(q.text).language for q in asked]
    translated = [dataclasses.replace(q, text=langs.to_english(q.text) if lang == "pt" else q.text)
                  for q, lang in zip(asked, detected)]
    seconds = time.perf_counter() - started
    variants = {"en": english, "pt_translated": translated, "pt_asked": asked}
    ranks = {name: evaluate_questions(rset, qs, relevant, cfg.k, progress)["hybrid"] for name, qs in variants.items()}
    stats = bootstrap_rankings(ranks, cfg.bootstrap, cfg.seed)
    return {
        "questions": len(products), "detected_pt": sum(d == "pt" for d in detected) / len(detected),
        "detect_and_translate_ms_per_question": round(1000 * seconds / len(asked), 2),
        "results": {name: {**ranking_report(rk), "ci95": stats["intervals"][name]} for name, rk in ranks.items()},
        "differences": {k: v for k, v in stats["differences"].items() if k in ("en - pt_translated", "pt_translated - pt_asked")},
        "examples": [{"asked": a.text, "translated": t.text, "english": e.text, "uid": a.uid}
                     for a, t, e in list(zip(asked, translated, english))[:8]],
    }


def markdown(report: dict[str, Any]) -> str:
    q = report["questions"]
    about = (f"{q['total']} questions from {q['file']} ({q.get('skipped_without_uid', 0)} lines without a product uid "
             "skipped)" if q.get("file") else
             f"{q['total']} questions ({q['title']} title-mention, {q['content']} content-only) from {q['products']} "
             "held-out products")
    lines = [
        "# Retrieval evaluation",
        "",
        f"{about}. 95% bootstrap intervals in brackets (all questions).",
        "",
        "| retriever | questions | recall@1 | recall@5 | recall@10 | MRR@10 | nDCG@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    metrics = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
    for mode, by_kind in report["results"].items():
        for kind, m in by_kind.items():
            ci = m.get("ci95", {})
            cells = [f"{m[x]:.3f}" + (f" [{ci[x][0]:.3f}, {ci[x][1]:.3f}]" if x in ci else "") for x in metrics]
            lines.append(f"| {mode} | {kind} ({m['n']}) | " + " | ".join(cells) + " |")
    for pair, diff in report.get("differences", {}).items():
        lines.append("")
        lines.append(f"**{pair}** (paired difference, 95% interval): " + "; ".join(
            f"{x} {d['value']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
            + ("*" if d["ci95"][0] > 0 or d["ci95"][1] < 0 else "") for x, d in diff.items()) + " (* = interval excludes 0)")
    g = report["hybrid_vs_best_single"]
    lines += ["", f"Hybrid vs the better single retriever ({g['best_single']}): recall@10 {g['recall@10']:+.3f}, "
              f"MRR@10 {g['mrr@10']:+.3f}, nDCG@10 {g['ndcg@10']:+.3f}."]
    if report.get("hybrid_fusion"):
        lines += ["", f"Hybrid fusion: {report['hybrid_fusion']}."]
    lines += portuguese_markdown(report.get("portuguese"))
    return "\n".join(lines) + "\n"


def portuguese_markdown(pt: dict[str, Any] | None) -> list[str]:
    if not pt:
        return []
    if "skipped" in pt:
        return ["", f"Portuguese questions: skipped ({pt['skipped']})."]
    metrics = ("recall@1", "recall@5", "recall@10", "mrr@10")
    lines = ["", "## Portuguese questions", "",
             f"The same {pt['questions']} held-out products asked about in English and in Portuguese (hybrid retriever; "
             f"{pt['detected_pt']:.0%} of the Portuguese questions detected as Portuguese and translated; detection and "
             f"translation {pt['detect_and_translate_ms_per_question']} ms a question).", "",
             "| question | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name, m in pt["results"].items():
        ci = m["ci95"]
        lines.append(f"| {PT_VARIANTS[name]} | " + " | ".join(f"{m[x]:.3f} [{ci[x][0]:.3f}, {ci[x][1]:.3f}]" for x in metrics) + " |")
    for pair, diff in pt["differences"].items():
        lines.append("")
        lines.append(f"**{pair}** (paired, 95% interval): " + "; ".join(
            f"{x} {diff[x]['value']:+.3f} [{diff[x]['ci95'][0]:+.3f}, {diff[x]['ci95'][1]:+.3f}]" for x in metrics))
    return lines


def write_report(report: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "retrieval.json", report)
    write_text_atomic(out / "retrieval.md", markdown(report))
    return out


def default_out(kind: str) -> Path:
    return Path("reports") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_report(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
