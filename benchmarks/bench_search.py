"""Issue #3: approximate vs exact dense search on >= 1M products, one run.

    python benchmarks/bench_search.py [--artifacts runs/bench/artifacts-full] [--n 1000000] [--queries 1000]

Vectors are the stored title embeddings of a built artifact; queries are evaluation questions (title-mention
and content-only) embedded with the artifact's embedder. Latency is single-query (batch of 1, as a server
answers); QPS is 1 / mean latency. Recall@10 is overlap with the exact top 10. RAM is the serialised index.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from amzqa.io.layout import EMBEDDINGS_FILE

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, print_machine, table  # noqa: E402


def index_bytes(index) -> int:
    import faiss

    with tempfile.NamedTemporaryFile(delete=False) as f:
        path = f.name
    faiss.write_index(index, path)
    size = os.path.getsize(path)
    os.unlink(path)
    return size


def timed_search(index, queries, k=10):
    import numpy as np

    lat, ids = [], []
    for q in queries:
        t = time.perf_counter()
        _, i = index.search(q[None, :], k)
        lat.append(time.perf_counter() - t)
        ids.append(i[0])
    return np.array(lat) * 1000, np.array(ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", type=Path, default=ROOT / "runs" / "bench" / "artifacts-full")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--nlist", type=int, default=4096)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64])
    args = ap.parse_args()
    print_machine()

    import faiss
    import numpy as np

    from amzqa.data.questions import make_questions
    from amzqa.retrieval import Artifacts, ProductStore
    from amzqa.retrieval.dense import DenseRetriever

    arts = Artifacts.open(args.artifacts)
    vecs = np.load(args.artifacts / EMBEDDINGS_FILE, mmap_mode="r")
    n = min(args.n, len(vecs))
    xb = np.ascontiguousarray(vecs[:n], dtype=np.float32)
    store = ProductStore(args.artifacts)
    rng = np.random.default_rng(0)
    products = [store.get(int(i)) for i in rng.choice(n, args.queries, replace=False)]
    questions = make_questions(products, seed=0)[: args.queries]
    embedder = DenseRetriever(arts, store).embedder
    xq = embedder.encode([q.text for q in questions])
    print(f"{n:,} vectors (dim {xb.shape[1]}), {len(xq)} queries, faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads\n")

    exact = faiss.IndexFlatIP(xb.shape[1])
    exact.add(xb)
    lat_e, ids_e = timed_search(exact, xq)
    exact_bytes = index_bytes(exact)
    rows = [["exact (IndexFlatIP)", "-", f"{np.percentile(lat_e, 50):.2f}", f"{np.percentile(lat_e, 99):.2f}",
             f"{1000 / lat_e.mean():,.0f}", "1.000", f"{exact_bytes / 2**20:,.0f}", "100%", "-"]]

    train = xb[np.sort(rng.choice(n, min(n, 200_000), replace=False))]
    quantizer = faiss.IndexFlatIP(xb.shape[1])
    t = time.perf_counter()
    ivf_flat = faiss.IndexIVFFlat(quantizer, xb.shape[1], args.nlist, faiss.METRIC_INNER_PRODUCT)
    ivf_flat.train(train)
    train_s = time.perf_counter() - t
    variants = [("IVF-Flat", ivf_flat)]
    # Reuse the trained coarse quantiser: the variants differ only in how they store vectors.
    sq8 = faiss.IndexIVFScalarQuantizer(quantizer, xb.shape[1], args.nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    sq8.train(train)
    variants.append(("IVF-SQ8 (amzqa default)", sq8))
    pq = faiss.IndexIVFPQ(quantizer, xb.shape[1], args.nlist, 48, 8, faiss.METRIC_INNER_PRODUCT)
    pq.train(train)
    variants.append(("IVF-PQ48", pq))
    for name, index in variants:
        t = time.perf_counter()
        index.add(xb)
        add_s = time.perf_counter() - t
        size = index_bytes(index)
        for nprobe in args.nprobe:
            index.nprobe = nprobe
            lat, ids = timed_search(index, xq)
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ids_e)])
            rows.append([name, str(nprobe), f"{np.percentile(lat, 50):.2f}", f"{np.percentile(lat, 99):.2f}",
                         f"{1000 / lat.mean():,.0f}", f"{recall:.3f}", f"{size / 2**20:,.0f}", f"{100 * size / exact_bytes:.0f}%",
                         f"train {train_s:.0f}s + add {add_s:.0f}s"])
    print(table(["index", "nprobe", "p50 ms", "p99 ms", "QPS (1 thread of queries)", "recall@10 vs exact", "index MiB",
                 "RAM vs exact", "build"], rows))


if __name__ == "__main__":
    main()
