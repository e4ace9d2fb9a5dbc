"""Issue #3: embedding throughput of our ONNX int8 backend vs sentence-transformers' default torch encode.

    python benchmarks/bench_embed.py [--titles 20000] [--corpus runs/bench/corpus-full] [--eval-rows 50000]

1. Throughput on the same titles, one after the other in this process: sentence-transformers ``encode`` with
   its defaults (the baseline), then our backends. Cosine of each to the baseline's vectors.
2. Recall cost: the retrieval evaluation (dense retriever) on indexes built with the torch backend and with
   ours, over the sample catalog and over the first ``--eval-rows`` products of the synthetic corpus.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from amzqa.io.layout import MANIFEST

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, print_machine, table  # noqa: E402


def titles_from(corpus: Path, n: int) -> list[str]:
    from amzqa.indexing.corpus import iter_corpus

    out: list[str] = []
    for batch in iter_corpus(corpus, columns=["title"]):
        out.extend(batch.column(0).to_pylist())
        if len(out) >= n:
            break
    return out[:n]


def slice_corpus(corpus: Path, rows: int, out: Path) -> Path:
    """A prepared corpus holding the first ``rows`` products of ``corpus`` (same format, new manifest)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from amzqa.indexing.corpus import CORPUS_FORMAT, iter_corpus
    from amzqa.io.atomic import sha256_file

    (out / "shards").mkdir(parents=True)
    batches, n = [], 0
    for b in iter_corpus(corpus):
        batches.append(b.slice(0, rows - n))
        n += batches[-1].num_rows
        if n >= rows:
            break
    pq.write_table(pa.Table.from_batches(batches), out / "shards" / "part-00000.parquet")
    h = sha256_file(out / "shards" / "part-00000.parquet")
    (out / MANIFEST).write_text(json.dumps({"format": CORPUS_FORMAT, "rows": n, "fingerprint": h,
                                                    "shards": [{"path": "shards/part-00000.parquet", "rows": n, "sha256": h}]}))
    kept_with_content = sum(int(pa.compute.sum(b.column("has_content")).as_py() or 0) for b in batches)
    (out / "stats.json").write_text(json.dumps({"kept_with_content": kept_with_content}))
    return out


def dense_recall(corpus: Path, backend: str, work: Path, n_questions: int) -> float:
    from amzqa.evaluation.retrieval_eval import RetrievalEvalConfig, evaluate_retrieval
    from amzqa.indexing.build import IndexConfig, build_index

    arts = work / f"arts-{backend}"
    build_index(IndexConfig(corpus=corpus, out=arts, embedding_backend=backend, overwrite=True), progress=False)
    report = evaluate_retrieval(RetrievalEvalConfig(artifacts=arts, n=n_questions), progress=False)
    return report["results"]["dense"]["all"]["recall@10"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--titles", type=int, default=20_000)
    ap.add_argument("--corpus", type=Path, default=ROOT / "runs" / "bench" / "corpus-full")
    ap.add_argument("--eval-rows", type=int, default=50_000)
    ap.add_argument("--questions", type=int, default=1000)
    ap.add_argument("--skip-recall", action="store_true", help="measure throughput only")
    args = ap.parse_args()
    print_machine()

    import numpy as np
    from sentence_transformers import SentenceTransformer

    from amzqa.models import default_embedder_path
    from amzqa.retrieval.embedding import load_embedder

    titles = titles_from(args.corpus, args.titles)
    st = SentenceTransformer(str(default_embedder_path()), device="cpu")
    t = time.perf_counter()
    base = st.encode(titles, normalize_embeddings=True)
    base_s = time.perf_counter() - t
    rows = [["sentence-transformers encode (defaults: torch fp32, batch 32, max_seq_length 256)", f"{len(titles) / base_s:,.0f}", "1.00×", "1.000"]]
    for backend, label in [("torch", "amzqa torch backend (max_length 64)"), ("onnx-fp32", "amzqa ONNX fp32, fused, length-sorted"),
                           ("onnx", "amzqa ONNX int8 (default), fused, length-sorted")]:
        emb = load_embedder(backend=backend)
        emb.encode(titles[:256])  # warm-up (and one-off ONNX export)
        t = time.perf_counter()
        vecs = emb.encode(titles)
        s = time.perf_counter() - t
        rows.append([label, f"{len(titles) / s:,.0f}", f"{base_s / s:.2f}×", f"{float(np.mean(np.sum(vecs * base, 1))):.3f}"])
    print(f"{len(titles):,} titles from {args.corpus}\n")
    print(table(["encoder", "titles/s", "vs baseline", "mean cosine to baseline"], rows))

    if args.skip_recall:
        return
    from amzqa.cli.demo import SAMPLE  # the bundled catalog
    from amzqa.indexing.corpus import PrepareConfig, prepare

    rec_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sample = work / "sample-corpus"
        prepare(PrepareConfig(input=SAMPLE, out=sample), progress=False)
        synth = slice_corpus(args.corpus, args.eval_rows, work / "synth-corpus")
        for name, corpus in [("sample catalog", sample), (f"synthetic, first {args.eval_rows:,}", synth)]:
            r_torch = dense_recall(corpus, "torch", work / name.split()[0], args.questions)
            r_onnx = dense_recall(corpus, "onnx", work / name.split()[0], args.questions)
            rec_rows.append([name, f"{r_torch:.3f}", f"{r_onnx:.3f}", f"{100 * (r_onnx - r_torch):+.1f}"])
    print()
    print(table(["catalog", "dense recall@10, torch", "dense recall@10, ONNX int8", "difference (points)"], rec_rows))


if __name__ == "__main__":
    main()
