"""Building the BM25 index with bounded memory.

``bm25s.tokenize`` returns one Python list per document: about 2 kB per product with descriptions, ~5 GB at
2.2M products. We tokenise in chunks with one shared ``bm25s.tokenization.Tokenizer`` (same splitter, stopwords,
stemmer and ids as ``bm25s.tokenize``), keep the ids in one flat int32 array, and hand bm25s a lazy sequence
over it: bm25s's own scoring code then builds the identical index from ~4 bytes per token.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from amzqa.optional import require
from amzqa.progress import bar


class CompactTokens:
    """A read-only ``Sequence[list[int]]`` over flat token ids and document offsets."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray) -> None:
        self.ids, self.offsets = ids, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __iter__(self) -> Iterator[list[int]]:
        ids, off = self.ids, self.offsets
        for i in range(len(off) - 1):
            yield ids[off[i]:off[i + 1]].tolist()


def tokenize_compact(chunks: Iterable[list[str]], n_docs: int, stopwords: str | None, stemmer_language: str | None,
                     progress: bool | None = None) -> tuple[CompactTokens, dict[str, int]]:
    """Tokenise documents given as consecutive chunks (so the caller never holds all texts at once)."""
    bm25s = require("bm25s", "index")
    stemmer = require("Stemmer", "index").Stemmer(stemmer_language) if stemmer_language else None
    tokenizer = bm25s.tokenization.Tokenizer(stopwords=stopwords or [], stemmer=stemmer)
    parts: list[np.ndarray] = []
    lengths = np.empty(n_docs, dtype=np.int64)
    lo = 0
    with bar(progress, total=n_docs, unit="doc", unit_scale=True, desc="bm25 tokenize") as pbar:
        for texts in chunks:
            docs = tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False)
            lengths[lo:lo + len(docs)] = [len(d) for d in docs]
            parts.append(np.fromiter((t for d in docs for t in d), dtype=np.int32))
            lo += len(docs)
            pbar.update(len(docs))
    if lo != n_docs:
        raise ValueError(f"tokenised {lo} documents, expected {n_docs}")
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)
    return CompactTokens(ids, offsets), dict(tokenizer.get_vocab_dict())


def build_bm25(chunks: Iterable[list[str]], n_docs: int, stopwords: str | None, stemmer_language: str | None,
               progress: bool | None = None):
    """A ``bm25s.BM25`` index of the documents in ``chunks``, built from compact token ids."""
    bm25s = require("bm25s", "index")
    tokens, vocab = tokenize_compact(chunks, n_docs, stopwords, stemmer_language, progress=progress)
    model = bm25s.BM25()
    # The "object" form (ids + vocab attributes) is the one bm25s accepts without insisting on a real list.
    model.index(bm25s.tokenization.Tokenized(ids=tokens, vocab=vocab), show_progress=bool(progress))
    return model
