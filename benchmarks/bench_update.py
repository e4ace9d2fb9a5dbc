"""Issue #27, item 2: ``amzqa index --add`` / ``--remove`` of 10,000 products on the full 2.2M-product index, against
rebuilding it.

    python benchmarks/bench_update.py [--workdir runs/bench] [--changes 10000] [--base INDEX]

Needs the prepared full synthetic corpus (``benchmarks/bench_build.py`` writes ``WORKDIR/corpus-full``). The base
index is built once and cached in ``WORKDIR/update-base``. Its 2.1M vectors come from a stand-in encoder that carries
MiniLM's identity (path, fingerprint, dimension, backend) but returns pseudo-random unit vectors: embedding them for
real takes 75-85 minutes on 2 cores (docs/benchmarks.md), and nothing an update does depends on their values except
which IVF list each falls in. Everything else is real: the product store, BM25 over title+content, the IVF-SQ8 index
and its centroids, and each update, which runs ``amzqa index`` in its own process with the packaged MiniLM (int8
ONNX) embedding the added titles. Each update runs on a hard-linked copy of the base (an update never writes into
the folder it reads, so the copy is safe).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, print_machine, run_measured, table  # noqa: E402

BUILD = """
import sys, logging
import numpy as np
logging.basicConfig(level=logging.INFO)
from amzqa.indexing.build import IndexConfig, build_index
from amzqa.retrieval.embedding import load_embedder

real = load_embedder("minilm", "onnx", 64)

class StandIn:  # MiniLM's identity, pseudo-random vectors (see the module docstring)
    path, dim, backend, model_id = real.path, real.dim, real.backend, real.model_id
    rng = np.random.default_rng(0)

    def encode(self, texts, batch_size=128, progress=None):
        v = self.rng.standard_normal((len(texts), self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

m = build_index(IndexConfig(corpus=sys.argv[1], out=sys.argv[2], overwrite=True, calibrate_products=0),
                progress=False, embedder=StandIn())
import json; print(json.dumps(m["timings"]))
"""
UPDATE = """
import sys, json
from amzqa.cli.main import main
code = main(["index", "--out", sys.argv[1], sys.argv[2], sys.argv[3], "--no-progress"])
m = json.load(open(sys.argv[1] + "/manifest.json"))
print(json.dumps(m["updates"][-1]))
sys.exit(code)
"""


def linked_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, copy_function=os.link)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench")
    ap.add_argument("--changes", type=int, default=10_000)
    ap.add_argument("--base", type=Path, help="update this sealed index (real vectors, e.g. the static 2.2M index "
                    "benchmarks/bench_static.py builds) instead of the stand-in-vector MiniLM index")
    args = ap.parse_args()
    print_machine()
    corpus, base = args.workdir / "corpus-full", args.base or args.workdir / "update-base"
    if args.base is None and not (corpus / "manifest.json").is_file():
        raise SystemExit(f"{corpus}: run benchmarks/bench_build.py first (it prepares the full synthetic catalog)")
    if args.base is not None and not (base / "manifest.json").is_file():
        raise SystemExit(f"{base}: not a sealed index (no manifest.json)")
    if not (base / "manifest.json").is_file():
        s, rss, out = run_measured(BUILD, str(corpus), str(base))
        print(f"base index (stand-in vectors) built in {s / 60:.1f} min, peak {rss:,.0f} MiB: {out.strip()}", flush=True)
    from amzqa.indexing.synth import SynthConfig, synth
    from amzqa.retrieval.store import ProductStore

    products = len(ProductStore(base))
    add = args.workdir / f"add-{args.changes}.json"
    if not add.exists():  # new products: the generator's lines under uids the catalog does not use
        raw = args.workdir / f"add-{args.changes}.raw.json"
        synth(SynthConfig(n=args.changes, seed=12345, out=raw, empty_title_rate=0.0, duplicate_uid_rate=0.0,
                          duplicate_content_rate=0.0), progress=False)
        with open(raw, encoding="utf-8") as f, open(add, "w", encoding="utf-8") as out:
            for i, line in enumerate(f):
                row = json.loads(line)
                out.write(json.dumps({**row, "uid": f"NEW{i:07d}", "title": f"{row['title']} ({i})"}) + "\n")
        raw.unlink()
    remove = args.workdir / f"remove-{args.changes}-{base.name}.txt"
    if not remove.exists():
        import numpy as np

        store = ProductStore(base)
        rows = np.random.default_rng(0).choice(products, size=args.changes, replace=False)
        remove.write_text("".join(store.get(int(r)).uid + "\n" for r in sorted(rows)), encoding="utf-8")

    results = []
    for label, flag, path in (("add", "--add", add), ("remove", "--remove", remove)):
        copy = args.workdir / f"update-{label}"
        linked_copy(base, copy)
        s, rss, out = run_measured(UPDATE, str(copy), flag, str(path))
        entry = json.loads(out.strip().splitlines()[-1])
        results.append((label, s, rss, entry))
        print(f"{label}: {s:.1f} s, peak {rss:,.0f} MiB: {entry['timings']}", flush=True)
        shutil.rmtree(copy)
    rows = [[f"{label} {args.changes:,}", f"{e['products_before']:,} -> {e['products_after']:,}", f"{s:.0f}",
             f"{rss:,.0f}", ", ".join(f"{k[:-2]} {v:.0f}" for k, v in e["timings"].items() if k != "total_s")]
            for label, s, rss, e in results]
    print(table(["update", "products", "wall s (whole command)", "peak RSS MiB", "stages, s"], rows))


if __name__ == "__main__":
    main()
