"""Lexical retrieval: BM25 over titles with bm25s (sparse matrices, memory-mapped on load)."""

from __future__ import annotations

import threading

import numpy as np

from amzqa.io.layout import LEXICAL_DIR
from amzqa.optional import require
from amzqa.records import Hit
from amzqa.retrieval.artifacts import Artifacts
from amzqa.retrieval.base import candidates, check_query, to_hits
from amzqa.retrieval.store import ProductStore

# From this many products a query is scored by the numba kernel where numba is installed (the index extra has it):
# bm25s's numpy path costs 48 ms p50 at 2.1M products, the kernel 3 ms; below, numpy is fast enough and starts instantly.
NUMBA_MIN_DOCS = 100_000


def numba_kernel():
    """:func:`amzqa.retrieval.bm25_numba.top_k`, or None where numba is not installed."""
    try:
        from amzqa.retrieval.bm25_numba import top_k
    except ImportError:
        return None
    return top_k


def make_stemmer(language: str | None):
    if not language:
        return None
    stemmer_mod = require("Stemmer", "index")
    return stemmer_mod.Stemmer(language).stemWords


def tokenize(texts: list[str], stopwords: str | None, stemmer, progress: bool = False):
    bm25s = require("bm25s", "index")
    return bm25s.tokenize(texts, stopwords=stopwords, stemmer=stemmer, show_progress=progress, return_ids=False)


class LexicalRetriever:
    name = "lexical"

    def __init__(self, artifacts: Artifacts, store: ProductStore, accelerate: bool | None = None) -> None:
        """``accelerate``: score with the numba kernel (None: where installed and the catalog has at least
        ``NUMBA_MIN_DOCS`` products)."""
        bm25s = require("bm25s", "index")
        params = artifacts.manifest["lexical"]
        self.model = bm25s.BM25.load(str(artifacts.path / LEXICAL_DIR), mmap=True)
        self.stopwords = params["stopwords"]
        self.stemmer = make_stemmer(params["stemmer"])
        self.vocab = self.model.vocab_dict
        self.n_docs = len(store)
        self.store = store
        self._lock = threading.Lock()  # the Snowball stemmer object is not thread-safe
        self.kernel = numba_kernel() if accelerate or (accelerate is None and self.n_docs >= NUMBA_MIN_DOCS) else None
        if accelerate and self.kernel is None:
            require("numba", "index")  # raises, naming the extra
        self.scores = self.model.scores

    def search(self, query: str, n: int) -> list[tuple[int, float]]:
        with self._lock:
            tokens = [t for t in tokenize([check_query(query)], self.stopwords, self.stemmer)[0] if t in self.vocab]
        if not tokens:
            return []
        if self.kernel is not None:
            s = self.scores
            ids = np.fromiter((self.vocab[t] for t in tokens), dtype=np.int64, count=len(tokens))
            ids = ids[ids < len(s["indptr"]) - 1]  # bm25s's empty-string token has no column
            docs, scores = self.kernel(ids, s["data"], s["indptr"], s["indices"], s["num_docs"], min(n, self.n_docs))
            return [(int(d), float(v)) for d, v in zip(docs, scores)]
        docs, scores = self.model.retrieve([tokens], k=min(n, self.n_docs), return_as="tuple", show_progress=False, n_threads=1)
        return [(int(d), float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]

    def retrieve(self, query: str, k: int = 10) -> list[Hit]:
        ranked = [(row, score, {self.name: score}) for row, score in self.search(query, candidates(k))]
        return to_hits(self.store, ranked, k)
