"""Issue #2 benchmark: our corpus pipeline vs the naive pandas approach, in one run.

    python benchmarks/bench_corpus.py [--n 2248619] [--baseline-n 220000]

Ours runs on the full synthetic catalog (2.2M lines by default). The naive approach holds the whole file as
Python objects in a DataFrame: it needs ~2.7 GB at 200k records, so at 2.2M (~30 GB) it cannot run on this
24 GB machine; it runs on the first ``--baseline-n`` lines, and ours runs on that same subset too so the
throughput ratio compares like with like.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, print_machine, run_measured, table  # noqa: E402

OURS = """
import sys, shutil
from amzqa.indexing.corpus import PrepareConfig, prepare
s = prepare(PrepareConfig(input=sys.argv[1], out=sys.argv[2], overwrite=True), progress=False)
print(s["lines_read"], s["kept"])
"""
NAIVE = "import runpy, sys; sys.argv = ['naive', sys.argv[1]]; runpy.run_path('benchmarks/naive_corpus.py', run_name='__main__')"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_248_619, help="synthetic records for our full-scale run")
    ap.add_argument("--baseline-n", type=int, default=220_000, help="records for the side-by-side with pandas")
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench")
    args = ap.parse_args()
    print_machine()
    args.workdir.mkdir(parents=True, exist_ok=True)

    from amzqa.indexing.synth import SynthConfig, synth

    full = args.workdir / f"synth-{args.n}.json.gz"
    if not full.exists():
        print(f"generating {full} ...", flush=True)
        synth(SynthConfig(n=args.n, out=full), progress=False)
    subset = args.workdir / f"synth-head-{args.baseline_n}.json"
    if not subset.exists():
        with gzip.open(full, "rb") as src, open(subset, "wb") as dst:
            dst.writelines(itertools.islice(src, args.baseline_n))

    rows = []
    s_ours_sub, rss_ours_sub, _ = run_measured(OURS, str(subset), str(args.workdir / "corpus-sub"))
    s_naive, rss_naive, _ = run_measured(NAIVE, str(subset))
    s_full, rss_full, out = run_measured(OURS, str(full), str(args.workdir / "corpus-full"))
    n_full = int(out.split()[0])
    b = args.baseline_n
    rows.append(["naive: pandas read_json + row-wise apply", f"{b:,}", f"{s_naive:.1f}", f"{b / s_naive:,.0f}", f"{rss_naive:,.0f}", "1.0×"])
    rows.append(["amzqa prepare (same subset)", f"{b:,}", f"{s_ours_sub:.1f}", f"{b / s_ours_sub:,.0f}", f"{rss_ours_sub:,.0f}", f"{s_naive / s_ours_sub:.1f}×"])
    rows.append(["amzqa prepare (full synthetic trn.json.gz)", f"{n_full:,}", f"{s_full:.1f}", f"{n_full / s_full:,.0f}", f"{rss_full:,.0f}", f"{(n_full / s_full) / (b / s_naive):.1f}×"])
    print()
    print(table(["approach", "records", "seconds", "records/s", "peak RSS MiB", "throughput vs naive"], rows))


if __name__ == "__main__":
    main()
