"""Issue #3: a full build of the synthetic 2.2M-line catalog end to end (prepare -> index) on this machine.

    python benchmarks/bench_build.py [--n 2248619] [--workdir runs/bench]

Each stage runs in its own process so its peak RSS is its own. Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from amzqa.io.layout import MANIFEST

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, print_machine, run_measured, table  # noqa: E402

PREPARE = """
import sys
from amzqa.indexing.corpus import PrepareConfig, prepare
s = prepare(PrepareConfig(input=sys.argv[1], out=sys.argv[2], overwrite=True), progress=False)
print(s["kept"])
"""
INDEX = """
import sys, logging
logging.basicConfig(level=logging.INFO)
from amzqa.indexing.build import IndexConfig, build_index
m = build_index(IndexConfig(corpus=sys.argv[1], out=sys.argv[2], overwrite=True), progress=True)
import json; print(json.dumps(m["timings"]))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_248_619)
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench")
    args = ap.parse_args()
    print_machine()
    args.workdir.mkdir(parents=True, exist_ok=True)
    src = args.workdir / f"synth-{args.n}.json.gz"
    if not src.exists():
        from amzqa.indexing.synth import SynthConfig, synth

        synth(SynthConfig(n=args.n, out=src), progress=False)
    corpus, arts = args.workdir / "corpus-full", args.workdir / "artifacts-full"
    s1, r1, out1 = run_measured(PREPARE, str(src), str(corpus))
    s2, r2, out2 = run_measured(INDEX, str(corpus), str(arts))
    kept = int(out1.split()[0])
    timings = json.loads(out2.strip().splitlines()[-1])
    man = json.loads((arts / MANIFEST).read_text())
    size = sum(p.stat().st_size for p in arts.rglob("*") if p.is_file()) / 2**30
    rows = [
        ["prepare (stream, clean, dedup, Parquet)", f"{args.n:,} lines -> {kept:,} products", f"{s1 / 60:.1f}", f"{r1:,.0f}"],
        ["index (store, embed, FAISS, BM25)", f"{kept:,} products", f"{s2 / 60:.1f}", f"{r2:,.0f}"],
        ["total", "", f"{(s1 + s2) / 60:.1f}", f"{max(r1, r2):,.0f}"],
    ]
    print(table(["stage", "size", "wall minutes", "peak RSS MiB"], rows))
    print(f"\nindex stages (s): {timings}; dense={man['dense']}; artifact size {size:.2f} GiB")


if __name__ == "__main__":
    main()
