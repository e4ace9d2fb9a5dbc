"""Query-time retrieval over an index artifact: dense (FAISS), lexical (BM25) and hybrid (fused).

    from amzqa.retrieval import load_retriever
    retriever = load_retriever("runs/demo/artifacts", mode="hybrid")
    hits = retriever.retrieve("cordless electric kettle 1.7 l", k=5)
"""

from __future__ import annotations

from pathlib import Path

from amzqa.errors import ArtifactError, ConfigError
from amzqa.io.layout import EMBEDDINGS_FILE
from amzqa.retrieval.artifacts import Artifacts
from amzqa.retrieval.base import Retriever, title_key
from amzqa.retrieval.store import ProductStore

MODES = ("dense", "lexical", "hybrid")

__all__ = ["MODES", "Artifacts", "ProductStore", "Retriever", "RetrieverSet", "load_retriever", "title_key"]


class RetrieverSet:
    """The three retrievers over one artifact, sharing one product store and one embedder (loaded once), and the
    products' title embeddings (``title_vectors``, memory-mapped, row ``i`` = store row ``i``): every file is opened
    here, once, so a reader never pairs this load's store with another build's vectors after an index is swapped."""

    def __init__(self, artifacts: str | Path | Artifacts, embedder=None, fusion: str | None = None, nprobe: int | None = None,
                 rescorer=None) -> None:
        """``fusion``: None = the artifact's calibrated fusion (``fusion.json``) or weighted by default; or 'rrf'/'weighted'.
        ``embedder``/``rescorer``: already loaded models to reuse (checked against the manifest)."""
        from amzqa.retrieval.dense import DenseRetriever, VectorRows
        from amzqa.retrieval.hybrid import HybridRetriever, load_calibration
        from amzqa.retrieval.lexical import LexicalRetriever

        # Files are opened by path one after another; an index swapped in meanwhile changes the sealed manifest, so
        # the load is repeated until it began and ended on the same build (a mixed load is never returned).
        for attempt in range(3):
            if attempt == 0 and isinstance(artifacts, Artifacts):
                self.artifacts = artifacts
            else:
                self.artifacts = Artifacts.open(artifacts.path if isinstance(artifacts, Artifacts) else artifacts)
            try:
                self.store = ProductStore(self.artifacts.path)
                self.title_vectors = load_title_vectors(self.artifacts, len(self.store))
                self.dense = DenseRetriever(self.artifacts, self.store, embedder=embedder, nprobe=nprobe, rescorer=rescorer,
                                            vectors=VectorRows(self.artifacts.path / EMBEDDINGS_FILE))
                self.lexical = LexicalRetriever(self.artifacts, self.store)
                calibration = load_calibration(self.artifacts) if fusion is None else None
            except ArtifactError:
                if self.artifacts.seal_now() == self.artifacts.manifest.get("sealed"):
                    raise
                continue
            if self.artifacts.seal_now() == self.artifacts.manifest.get("sealed"):
                break
        else:
            raise ArtifactError(f"{self.artifacts.path}: the index was replaced three times while it was loading; load it again")
        self.hybrid = (HybridRetriever.from_calibration(self.dense, self.lexical, calibration) if calibration
                       else HybridRetriever(self.dense, self.lexical, fusion=fusion or "weighted"))

    def get(self, mode: str) -> Retriever:
        if mode not in MODES:
            raise ConfigError(f"retriever mode must be one of {MODES}, got {mode!r}")
        return getattr(self, mode)


def load_title_vectors(artifacts: Artifacts, rows: int):
    """The title embeddings of ``artifacts`` (float16, memory-mapped: an open map keeps reading the file it opened
    even after the folder is replaced), checked to have one row per product of the store loaded beside them."""
    import numpy as np

    vectors = np.load(artifacts.path / EMBEDDINGS_FILE, mmap_mode="r", allow_pickle=False)
    if vectors.ndim != 2 or vectors.shape[0] != rows or vectors.shape[1] != artifacts.embedding["dim"]:
        raise ArtifactError(f"{artifacts.path / EMBEDDINGS_FILE}: shape {vectors.shape}, the store has {rows} products of "
                            f"dimension {artifacts.embedding['dim']}: the index changed while it was loading; load it again")
    return vectors


def load_retriever(artifacts: str | Path, mode: str = "hybrid", **kwargs) -> Retriever:
    return RetrieverSet(artifacts, **kwargs).get(mode)
