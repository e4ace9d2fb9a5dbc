"""Issue #27 item 1: the static embedding (distilled from MiniLM, top candidates re-scored by MiniLM) against the
MiniLM-only index: build time and memory, recall@1 with paired bootstrap intervals, retrieval latency.

    python benchmarks/bench_static.py --n 200000 [--real ../shared/data/amazontitles_real_dev_sample.jsonl]
    python benchmarks/bench_static.py --n 2248619 --variants static     # the full catalog, the static build only

The catalog is the first ``--n`` lines of the synthetic trn.json (``amzqa synth --n 2248619``) with the ``--real``
records (real AmazonTitles lines) planted at seeded random positions, so real titles compete with the synthetic
distractors; it is written under ``--workdir`` (never into the repository). Each index is built by ``amzqa index``'s
library call in its own process (its wall time and peak RSS are its own). Questions: ``amzqa eval retrieval``'s
generated title and content questions about 400 held-out products, and the same kinds about every planted real
record. Each index answers the same questions; "static-rescore" is the static index with its top 10 dense
candidates re-ordered by MiniLM at query time (``rescore_candidates=10``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, print_machine, run_measured, table  # noqa: E402

PREPARE = """
import sys
from amzqa.indexing.corpus import PrepareConfig, prepare
s = prepare(PrepareConfig(input=sys.argv[1], out=sys.argv[2], overwrite=True), progress=False)
print(s["kept"])
"""
INDEX = """
import sys, json, logging
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
logging.getLogger("amzqa.indexing.build").setLevel(logging.INFO)
from amzqa.indexing.build import IndexConfig, build_index
m = build_index(IndexConfig(corpus=sys.argv[1], out=sys.argv[2], embedding_backend=sys.argv[3],
                            rescore_candidates=int(sys.argv[4]), overwrite=True), progress=False)
print(json.dumps(m["timings"]))
"""
BACKEND = {"minilm": ("onnx", 0), "static": ("static", 0), "static-rescore": ("static", 10)}


def planted_catalog(src: Path, real: Path | None, n: int, out: Path, seed: int = 0) -> int:
    """The first ``n`` lines of ``src`` with every line of ``real`` inserted at a seeded random position."""
    real_lines = real.read_text(encoding="utf-8").splitlines() if real else []
    positions = sorted(random.Random(seed).sample(range(n), len(real_lines))) if real_lines else []
    at = dict(zip(positions, real_lines))
    tmp = out.with_suffix(".tmp")
    with gzip.open(src, "rt", encoding="utf-8") as f, gzip.open(tmp, "wt", encoding="utf-8") as g:
        for i, line in enumerate(f):
            if i == n:
                break
            if i in at:
                g.write(at[i].rstrip("\n") + "\n")
            g.write(line)
    tmp.replace(out)
    return len(real_lines)


def question_sets(store, real: Path | None, n_heldout: int = 400):
    from amzqa.data.questions import make_questions
    from amzqa.data.split import HELDOUT_RATE, heldout_products

    synthetic = heldout_products(store, HELDOUT_RATE, n_heldout, 0)
    sets = {"synthetic": (make_questions(synthetic, seed=0), synthetic)}
    if real:
        uids = [json.loads(line)["uid"] for line in real.read_text(encoding="utf-8").splitlines()]
        found = [p for p in (store.by_uid(u) for u in uids) if p is not None]
        sets["real (planted)"] = (make_questions(found, seed=0), found)
    return sets


def evaluate(rset, sets) -> tuple[dict, float]:
    """Rank of the first relevant hit per question set and mode; p50 latency (ms) of a hybrid retrieve."""
    from amzqa.data.questions import relevant_sets
    from amzqa.evaluation.retrieval_eval import evaluate_questions

    ranks = {name: evaluate_questions(rset, qs, relevant_sets(rset.store, golds)) for name, (qs, golds) in sets.items()}
    times = []
    for q in sets["synthetic"][0][:200]:
        t = time.perf_counter()
        rset.hybrid.retrieve(q.text, 10)
        times.append(1000 * (time.perf_counter() - t))
    return ranks, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="synthetic lines (the catalog's size)")
    ap.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "data" / "amazontitles_real_dev_sample.jsonl")
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench")
    ap.add_argument("--variants", nargs="+", default=["minilm", "static"], choices=list(BACKEND))
    ap.add_argument("--reuse", action="store_true", help="keep indexes already built in workdir (no build timings)")
    args = ap.parse_args()
    print_machine()
    real = args.real if args.real and args.real.is_file() else None
    args.workdir.mkdir(parents=True, exist_ok=True)
    src = args.workdir / "synth-2248619.json.gz"
    if not src.exists():
        from amzqa.indexing.synth import SynthConfig, synth

        synth(SynthConfig(n=2_248_619, out=src), progress=False)
    tag = f"{args.n}-planted" if real else str(args.n)
    catalog, corpus = args.workdir / f"catalog-{tag}.json.gz", args.workdir / f"corpus-{tag}"
    build_rows = []
    if not (args.reuse and (corpus / "manifest.json").is_file()):
        planted = planted_catalog(src, real, args.n, catalog)
        s, rss, out = run_measured(PREPARE, str(catalog), str(corpus))
        build_rows.append(["prepare", f"{args.n + planted:,} lines -> {int(out.split()[0]):,} products", f"{s / 60:.1f}", f"{rss:,.0f}", ""])
    for v in args.variants:
        arts = args.workdir / f"index-{tag}-{v}"
        if args.reuse and (arts / "manifest.json").is_file():
            continue
        s, rss, out = run_measured(INDEX, str(corpus), str(arts), *map(str, BACKEND[v]))
        stages = ", ".join(f"{k[:-2]} {t:.0f}" for k, t in json.loads(out.strip().splitlines()[-1]).items())
        build_rows.append([f"index, {v}", "", f"{s / 60:.1f}", f"{rss:,.0f}", stages])
    if build_rows:
        print(table(["stage", "size", "wall minutes", "peak RSS MiB", "index stages (s)"], build_rows), flush=True)

    from amzqa.evaluation.metrics import bootstrap_rankings, recall_at
    from amzqa.retrieval import RetrieverSet

    results, latency = {}, {}
    for v in args.variants:
        rset = RetrieverSet(args.workdir / f"index-{tag}-{v}")
        sets = question_sets(rset.store, real)
        results[v], latency[v] = evaluate(rset, sets)
        del rset
    names = list(results)
    rows = []
    for qset in results[names[0]]:
        for mode in ("dense", "hybrid"):
            ranks = {name: results[name][qset][mode] for name in names}
            boot = bootstrap_rankings(ranks, b=2000, seed=0)
            for name in names:
                lo, hi = boot["intervals"][name]["recall@1"]
                row = [qset, mode, name, len(ranks[name]), f"{recall_at(ranks[name], 1):.3f} [{lo:.3f}, {hi:.3f}]",
                       f"{recall_at(ranks[name], 10):.3f}"]
                diff = boot["differences"].get(f"{names[0]} - {name}") if name != names[0] else None
                row.append(f"{-diff['recall@1']['value']:+.3f} [{-diff['recall@1']['ci95'][1]:+.3f}, "
                           f"{-diff['recall@1']['ci95'][0]:+.3f}]" if diff else "")
                rows.append(row)
    print()
    print(table(["questions", "mode", "index", "n", "recall@1 [95%]", "recall@10", f"recall@1 - {names[0]} (paired 95%)"], rows))
    print("\nhybrid retrieve p50 ms (200 questions, one at a time): "
          + ", ".join(f"{name} {ms:.1f}" for name, ms in latency.items()))


if __name__ == "__main__":
    main()
