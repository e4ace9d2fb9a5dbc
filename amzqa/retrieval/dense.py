"""Dense retrieval: embed the query, search the FAISS index of title embeddings.

An index whose titles were embedded by a static model (``embedding.backend == "static"``, the default above
``static_above_rows`` products) and that was built with ``rescore_candidates`` (the manifest's ``rescore``; off by
default) re-scores its top candidates with the transformer the static model was distilled from: the query and those candidates' titles are embedded by MiniLM at query time and the
candidates re-ordered by MiniLM cosine. The re-ordered candidates keep the static scores in descending order, so the
scores stay on the scale the hybrid fusion was calibrated on and below the candidates nothing moves.

Hybrid retrieval completes the dense ranking (:meth:`DenseRetriever.completed`): a lexical candidate the dense search
did not return (outside its top ``n``, or missed by an approximate IVF search) gets its cosine from the stored title
vectors, so the fusion weighs it on both scores instead of scoring it 0 on the dense side. IVF misses products whose
titles lie far from the centroids it was trained on (real titles among two million synthetic ones lost 0.09 of dense
recall@1 at ``nprobe`` 96 against exact search; docs/quality.md). The added scores are exact cosines of the stored
float16 vectors, the returned ones the index's (8-bit quantised above 200k products: within ~0.01). On an index that
re-scores with the transformer, the added rows are placed by their static cosine below or among the re-ordered
head and are not re-scored themselves.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from amzqa.errors import ArtifactError
from amzqa.io.layout import DENSE_FILE
from amzqa.optional import require
from amzqa.records import Hit
from amzqa.retrieval.artifacts import Artifacts
from amzqa.retrieval.base import candidates, check_query, to_hits
from amzqa.retrieval.store import ProductStore

log = logging.getLogger(__name__)


def read_faiss(path: str, mmap: bool = True):
    """Read a FAISS index memory-mapped where the index type allows it, else into memory."""
    faiss = require("faiss", "index")
    if mmap:
        try:
            return faiss.read_index(path, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError:  # not every index type can be mapped
            log.debug("faiss index %s cannot be memory-mapped; reading it", path)
    return faiss.read_index(path)


def load_rescorer(artifacts: Artifacts, rescorer=None):
    """The transformer that re-scores a static index's candidates (None where the index has no ``rescore``),
    checked to be the model the manifest names."""
    from amzqa.retrieval.embedding import load_embedder, model_fingerprint

    spec = artifacts.manifest.get("rescore")
    if not spec or not spec.get("candidates"):
        return None
    rescorer = rescorer or load_embedder(spec["model_id"], backend=spec["backend"], max_length=spec["max_length"])
    got = model_fingerprint(rescorer.path)
    if got != spec["fingerprint"] or rescorer.backend != spec["backend"]:
        raise ArtifactError(f"{artifacts.path}: the index re-scores with {spec['model_id']!r} ({spec['backend']}, "
                            f"fingerprint {spec['fingerprint']}), not {rescorer.model_id!r} ({rescorer.backend}, "
                            f"fingerprint {got})")
    return rescorer


class VectorRows:
    """Rows of a stored ``.npy`` matrix (the index's title vectors) read with ``pread`` from a file opened once.

    Not memory-mapped on purpose: the rows completion reads are scattered over the whole file, and each mapped page
    fault brings its neighbours into the process's resident memory (calibrating a 2.1M-product index mapped 965 of the
    file's 1,020 MiB); read with ``pread`` they stay in the page cache only. The open file keeps reading the file it
    opened after an index swap, as a map does."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path, self.fd = path, -1
        try:  # only its header is read: shape, dtype, data offset
            header = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:  # numpy refuses to map a file shorter than its header says
            raise ArtifactError(f"{path}: {e}: shorter than its header's matrix; the index is damaged (amzqa verify) "
                                f"or was replaced while loading: load it again") from e
        if header.ndim != 2 or not header.flags.c_contiguous:
            raise ArtifactError(f"{path}: expected a C-ordered 2-d matrix, got shape {header.shape}")
        self.shape, self.dtype, self.offset = tuple(header.shape), header.dtype, int(header.offset)
        del header
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        self.fd = os.open(path, os.O_RDONLY)
        if os.fstat(self.fd).st_size < self.offset + self.shape[0] * self.row_bytes:
            self.close()
            raise ArtifactError(f"{path}: shorter than its header's {self.shape} matrix; the index is damaged "
                                f"(amzqa verify) or was replaced while loading: load it again")

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        """The given rows (a list of row numbers), in that order."""
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        for i, row in enumerate(rows):
            if not 0 <= row < self.shape[0]:
                raise IndexError(f"row {row} out of range 0..{self.shape[0] - 1}")
            data = os.pread(self.fd, self.row_bytes, self.offset + int(row) * self.row_bytes)
            if len(data) != self.row_bytes:
                raise ArtifactError(f"{self.path}: row {row} could not be read (file truncated?)")
            out[i] = np.frombuffer(data, self.dtype)
        return out

    def __reduce__(self):
        # A copy in another process opens the file again (a raw descriptor number means nothing there).
        return (VectorRows, (self.path,))

    def close(self) -> None:
        fd, self.fd = getattr(self, "fd", -1), -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass


class DenseRetriever:
    name = "dense"

    def __init__(self, artifacts: Artifacts, store: ProductStore, embedder=None, nprobe: int | None = None,
                 rescorer=None, vectors=None) -> None:
        """``vectors``: the index's title vectors (row ``i`` = store row ``i``), for :meth:`completed`."""
        from amzqa.retrieval.embedding import index_embedder

        self.embedder = embedder or index_embedder(artifacts)
        artifacts.check_embedder(self.embedder)
        self.rescorer = load_rescorer(artifacts, rescorer)
        self.rescore_candidates = int(artifacts.manifest.get("rescore", {}).get("candidates", 0)) if self.rescorer else 0
        self.index = read_faiss(str(artifacts.path / DENSE_FILE))
        params = artifacts.manifest["dense"]
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = nprobe or params.get("nprobe", 32)
        self.store = store
        self.vectors = vectors

    def search(self, query: str, n: int) -> list[tuple[int, float]]:
        return self.search_many([check_query(query)], n)[0]

    def search_many(self, queries: list[str], n: int, vecs: np.ndarray | None = None) -> list[list[tuple[int, float]]]:
        """The top ``n`` (row, score) of each query, re-scored where the index re-scores (``vecs``: the queries
        already embedded by this retriever's embedder)."""
        vecs = self.embedder.encode(list(queries)) if vecs is None else vecs
        ranked = self.search_vectors(vecs, max(n, self.rescore_candidates))
        if self.rescorer is not None:
            ranked = [self.rescored(q, r) for q, r in zip(queries, ranked)]
        return [r[:n] for r in ranked]

    def completed(self, vec: np.ndarray, ranked: list[tuple[int, float]], rows: list[int]) -> list[tuple[int, float]]:
        """``ranked`` with every row of ``rows`` it lacks added at its exact cosine to the query vector ``vec``, in
        descending score order (unchanged where the retriever has no title vectors)."""
        have = {row for row, _ in ranked}
        missing = sorted({int(r) for r in rows} - have)
        if not missing or self.vectors is None:
            return ranked
        exact = np.asarray(self.vectors[missing], dtype=np.float32) @ np.asarray(vec, dtype=np.float32)
        merged = ranked + [(row, float(s)) for row, s in zip(missing, exact)]
        return sorted(merged, key=lambda rs: (-rs[1], rs[0]))

    def rescored(self, query: str, ranked: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """``ranked`` with its first ``rescore_candidates`` re-ordered by the transformer's query-title cosine."""
        head, tail = ranked[:self.rescore_candidates], ranked[self.rescore_candidates:]
        if len(head) < 2:
            return ranked
        vecs = self.rescorer.encode([query] + [self.store.get(row).title for row, _ in head])
        cos = vecs[1:] @ vecs[0]
        order = np.argsort(-cos, kind="stable")
        scores = sorted((s for _, s in head), reverse=True)
        return [(head[i][0], s) for i, s in zip(order, scores)] + tail

    def search_vectors(self, vecs: np.ndarray, n: int) -> list[list[tuple[int, float]]]:
        """The index's own ranking of query vectors (no re-scoring: that needs the query text)."""
        scores, ids = self.index.search(np.ascontiguousarray(vecs, dtype=np.float32), min(n, self.index.ntotal))
        return [[(int(i), float(s)) for i, s in zip(row_ids, row_scores) if i >= 0] for row_ids, row_scores in zip(ids, scores)]

    def retrieve(self, query: str, k: int = 10) -> list[Hit]:
        ranked = [(row, score, {self.name: score}) for row, score in self.search(query, candidates(k))]
        return to_hits(self.store, ranked, k)
