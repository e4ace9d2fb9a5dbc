"""Dense retrieval: embed the query, search the FAISS index of title embeddings."""

from __future__ import annotations

import logging

import numpy as np

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


class DenseRetriever:
    name = "dense"

    def __init__(self, artifacts: Artifacts, store: ProductStore, embedder=None, nprobe: int | None = None) -> None:
        from amzqa.retrieval.embedding import load_embedder

        emb = artifacts.embedding
        self.embedder = embedder or load_embedder(emb["model_id"], backend=emb["backend"], max_length=emb["max_length"])
        artifacts.check_embedder(self.embedder)
        self.index = read_faiss(str(artifacts.path / DENSE_FILE))
        params = artifacts.manifest["dense"]
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = nprobe or params.get("nprobe", 32)
        self.store = store

    def search(self, query: str, n: int) -> list[tuple[int, float]]:
        vec = self.embedder.encode([check_query(query)])
        return self.search_vectors(vec, n)[0]

    def search_vectors(self, vecs: np.ndarray, n: int) -> list[list[tuple[int, float]]]:
        scores, ids = self.index.search(np.ascontiguousarray(vecs, dtype=np.float32), min(n, self.index.ntotal))
        return [[(int(i), float(s)) for i, s in zip(row_ids, row_scores) if i >= 0] for row_ids, row_scores in zip(ids, scores)]

    def retrieve(self, query: str, k: int = 10) -> list[Hit]:
        ranked = [(row, score, {self.name: score}) for row, score in self.search(query, candidates(k))]
        return to_hits(self.store, ranked, k)
