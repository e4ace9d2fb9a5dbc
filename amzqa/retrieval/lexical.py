"""Lexical retrieval: BM25 over titles with bm25s (sparse matrices, memory-mapped on load)."""

from __future__ import annotations

import threading

from amzqa.io.layout import LEXICAL_DIR
from amzqa.optional import require
from amzqa.records import Hit
from amzqa.retrieval.artifacts import Artifacts
from amzqa.retrieval.base import candidates, check_query, to_hits
from amzqa.retrieval.store import ProductStore


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

    def __init__(self, artifacts: Artifacts, store: ProductStore) -> None:
        bm25s = require("bm25s", "index")
        params = artifacts.manifest["lexical"]
        self.model = bm25s.BM25.load(str(artifacts.path / LEXICAL_DIR), mmap=True)
        self.stopwords = params["stopwords"]
        self.stemmer = make_stemmer(params["stemmer"])
        self.vocab = self.model.vocab_dict
        self.n_docs = len(store)
        self.store = store
        self._lock = threading.Lock()  # the Snowball stemmer object is not thread-safe

    def search(self, query: str, n: int) -> list[tuple[int, float]]:
        with self._lock:
            tokens = [t for t in tokenize([check_query(query)], self.stopwords, self.stemmer)[0] if t in self.vocab]
        if not tokens:
            return []
        docs, scores = self.model.retrieve([tokens], k=min(n, self.n_docs), return_as="tuple", show_progress=False, n_threads=1)
        return [(int(d), float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]

    def retrieve(self, query: str, k: int = 10) -> list[Hit]:
        ranked = [(row, score, {self.name: score}) for row, score in self.search(query, candidates(k))]
        return to_hits(self.store, ranked, k)
