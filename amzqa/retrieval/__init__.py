"""Query-time retrieval over an index artifact: dense (FAISS), lexical (BM25) and hybrid (fused).

    from amzqa.retrieval import load_retriever
    retriever = load_retriever("runs/demo/artifacts", mode="hybrid")
    hits = retriever.retrieve("cordless electric kettle 1.7 l", k=5)
"""

from __future__ import annotations

from pathlib import Path

from amzqa.errors import ConfigError
from amzqa.retrieval.artifacts import Artifacts
from amzqa.retrieval.base import Retriever, title_key
from amzqa.retrieval.store import ProductStore

MODES = ("dense", "lexical", "hybrid")

__all__ = ["MODES", "Artifacts", "ProductStore", "Retriever", "RetrieverSet", "load_retriever", "title_key"]


class RetrieverSet:
    """The three retrievers over one artifact, sharing one product store and one embedder (loaded once)."""

    def __init__(self, artifacts: str | Path | Artifacts, embedder=None, fusion: str | None = None, nprobe: int | None = None) -> None:
        """``fusion``: None = the artifact's calibrated fusion (``fusion.json``) or weighted by default; or 'rrf'/'weighted'."""
        from amzqa.retrieval.dense import DenseRetriever
        from amzqa.retrieval.hybrid import HybridRetriever, load_calibration
        from amzqa.retrieval.lexical import LexicalRetriever

        self.artifacts = artifacts if isinstance(artifacts, Artifacts) else Artifacts.open(artifacts)
        self.store = ProductStore(self.artifacts.path)
        self.dense = DenseRetriever(self.artifacts, self.store, embedder=embedder, nprobe=nprobe)
        self.lexical = LexicalRetriever(self.artifacts, self.store)
        calibration = load_calibration(self.artifacts) if fusion is None else None
        self.hybrid = (HybridRetriever.from_calibration(self.dense, self.lexical, calibration) if calibration
                       else HybridRetriever(self.dense, self.lexical, fusion=fusion or "weighted"))

    def get(self, mode: str) -> Retriever:
        if mode not in MODES:
            raise ConfigError(f"retriever mode must be one of {MODES}, got {mode!r}")
        return getattr(self, mode)


def load_retriever(artifacts: str | Path, mode: str = "hybrid", **kwargs) -> Retriever:
    return RetrieverSet(artifacts, **kwargs).get(mode)
