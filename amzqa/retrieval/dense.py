"""Dense retrieval: embed the query, search the FAISS index of title embeddings.

An index whose titles were embedded by a static model (``embedding.backend == "static"``, the default above
``static_above_rows`` products) and that was built with ``rescore_candidates`` (the manifest's ``rescore``; off by
default) re-scores its top candidates with the transformer the static model was distilled from: the query and those candidates' titles are embedded by MiniLM at query time and the
candidates re-ordered by MiniLM cosine. The re-ordered candidates keep the static scores in descending order, so the
scores stay on the scale the hybrid fusion was calibrated on and below the candidates nothing moves.
"""

from __future__ import annotations

import logging

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


class DenseRetriever:
    name = "dense"

    def __init__(self, artifacts: Artifacts, store: ProductStore, embedder=None, nprobe: int | None = None,
                 rescorer=None) -> None:
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

    def search(self, query: str, n: int) -> list[tuple[int, float]]:
        return self.search_many([check_query(query)], n)[0]

    def search_many(self, queries: list[str], n: int) -> list[list[tuple[int, float]]]:
        """The top ``n`` (row, score) of each query, re-scored where the index re-scores."""
        ranked = self.search_vectors(self.embedder.encode(list(queries)), max(n, self.rescore_candidates))
        if self.rescorer is not None:
            ranked = [self.rescored(q, r) for q, r in zip(queries, ranked)]
        return [r[:n] for r in ranked]

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
