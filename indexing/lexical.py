"""Building the BM25 index with bounded memory.

``bm25s.tokenize`` returns one Python list per document: about 2 kB per product with descriptions, ~5 GB at
2.2M products. We tokenise in chunks with one shared ``bm25s.tokenization.Tokenizer`` (same splitter, stopwords,
stemmer and ids as ``bm25s.tokenize``), keep the ids in one flat int32 array, and hand bm25s a lazy sequence
over it: bm25s's own scoring code then builds the identical index from ~4 bytes per token.

The token ids are kept in the artifact (``bm25_tokens/``): BM25 scores depend on every document (IDF, average length),
so an update (``amzqa index --add/--remove``) re-scores the whole catalog, but it tokenises only the changed
documents and reuses the stored ids of the rest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from amzqa.io.layout import LEXICAL_TOKENS_DIR
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


def lexical_text(title: str, content: str, fields: str, content_chars: int) -> str:
    """What BM25 indexes of one product: its title, or its title and the start of its description."""
    return f"{title} {content[:content_chars]}" if fields != "title" and content else title


def make_tokenizer(stopwords: str | None, stemmer_language: str | None):
    """The bm25s tokenizer every build and update uses (same splitter, stopwords and stemmer as ``bm25s.tokenize``)."""
    bm25s = require("bm25s", "index")
    stemmer = require("Stemmer", "index").Stemmer(stemmer_language) if stemmer_language else None
    return bm25s.tokenization.Tokenizer(stopwords=stopwords or [], stemmer=stemmer)


def tokenize_compact(chunks: Iterable[list[str]], n_docs: int, stopwords: str | None, stemmer_language: str | None,
                     progress: bool | None = None) -> tuple[CompactTokens, dict[str, int]]:
    """Tokenise documents given as consecutive chunks (so the caller never holds all texts at once)."""
    tokenizer = make_tokenizer(stopwords, stemmer_language)
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
               progress: bool | None = None, keep_tokens: Path | None = None):
    """A ``bm25s.BM25`` index of the documents in ``chunks``, built from compact token ids (saved in the folder
    ``keep_tokens`` when given)."""
    tokens, vocab = tokenize_compact(chunks, n_docs, stopwords, stemmer_language, progress=progress)
    if keep_tokens is not None:
        save_tokens(keep_tokens, tokens, vocab)
    return index_tokens(tokens, vocab, progress)


def token_ranges(counts: np.ndarray, part_tokens: int) -> list[tuple[int, int]]:
    """Consecutive token-id ranges ``[lo, hi)`` covering ``counts`` (occurrences per id), each holding about
    ``part_tokens`` occurrences (one id with more is a range of its own)."""
    ranges, lo, held = [], 0, 0
    for tid, c in enumerate(np.asarray(counts).tolist()):
        if held and held + c > part_tokens:
            ranges.append((lo, tid))
            lo, held = tid, 0
        held += c
    if lo < len(counts) or not ranges:
        ranges.append((lo, len(counts)))
    return ranges


def index_tokens(tokens: CompactTokens, vocab: dict[str, int], progress: bool | None = None, part_tokens: int = 10_000_000):
    """A ``bm25s.BM25`` over compact token ids (``vocab``: token -> id, ids 0..len-1): bm25s's own Lucene BM25 scores,
    computed with whole-array numpy operations instead of its loop over documents (a Counter per document: 85 s at
    2.1M products, where this takes ~15 s; docs/benchmarks.md). The matrix is bm25s's byte for byte
    (tests/test_retrieval.py checks it against ``BM25.index``); another scoring method falls back to bm25s's loop."""
    bm25s = require("bm25s", "index")
    model = bm25s.BM25()
    if (model.method, model.idf_method, model.csc_backend) != ("lucene", "lucene", "numpy"):
        # The "object" form (ids + vocab attributes) is the one bm25s accepts without insisting on a real list.
        model.index(bm25s.tokenization.Tokenized(ids=tokens, vocab=vocab), show_progress=bool(progress))
        return model
    ids, offsets = np.asarray(tokens.ids), np.asarray(tokens.offsets)
    n_docs, n_vocab = len(offsets) - 1, len(vocab)
    lengths = np.diff(offsets)
    avg = lengths.mean() if n_docs else np.float64("nan")
    k1, b = model.k1, model.b
    norm = k1 * ((1 - b) + b * lengths / avg)  # per document, in float64 as bm25s's scalar arithmetic
    del lengths
    df = np.zeros(n_vocab, dtype=np.int64)
    datas, docs = [], []
    # Token ids in ranges of about part_tokens occurrences each (a token never spans two ranges), so the sort of
    # (token, document) pairs holds one range at a time: ~0.5 GiB at 2.1M products where all at once took 2.6 GiB.
    for lo, hi in token_ranges(np.bincount(ids, minlength=n_vocab), part_tokens):
        pos = np.flatnonzero((ids >= lo) & (ids < hi))
        # (token, document) pairs, sorted as the CSC matrix stores them (by token, then document), with their counts
        pairs = np.searchsorted(offsets, pos, side="right") - 1
        pairs |= (ids[pos].astype(np.int64) - lo) << 32
        del pos
        pairs.sort()
        starts = np.flatnonzero(np.concatenate([[True], pairs[1:] != pairs[:-1]])) if len(pairs) else np.zeros(0, np.int64)
        tf = np.diff(np.append(starts, len(pairs)))
        pairs = pairs[starts]
        del starts
        token, doc = (pairs >> 32) + lo, (pairs & 0xFFFFFFFF).astype(np.int32)
        del pairs
        part_df = np.bincount(token - lo, minlength=hi - lo)
        df[lo:hi] = part_df
        idf = np.zeros(hi - lo, dtype=np.float32)
        for value in np.unique(part_df[part_df > 0]):  # bm25s computes each idf with math.log (np.log may differ by an ulp)
            idf[part_df == value] = math.log(1 + (n_docs - int(value) + 0.5) / (int(value) + 0.5))
        tf32 = tf.astype(np.float32)
        del tf
        datas.append((idf[token - lo] * (tf32 / (norm[doc] + tf32))).astype(np.float32))
        docs.append(doc)
        del token, tf32
    data = np.concatenate(datas) if datas else np.zeros(0, np.float32)
    del datas
    doc = np.concatenate(docs) if docs else np.zeros(0, np.int32)
    del docs
    indptr = np.zeros(n_vocab + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    model.nonoccurrence_array = None  # Lucene BM25 has none (BM25L/BM25+ do)
    model.scores = {"data": data, "indices": doc, "indptr": indptr, "num_docs": n_docs}
    vocab = dict(vocab)
    if "" not in vocab:  # as bm25s's index(create_empty_token=True)
        vocab[""] = max(vocab.values(), default=-1) + 1
    model.vocab_dict = vocab
    model.unique_token_ids_set = set(vocab.values())
    return model


def save_tokens(folder: Path, tokens: CompactTokens, vocab: dict[str, int]) -> None:
    folder = Path(folder) / LEXICAL_TOKENS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "ids.npy", np.asarray(tokens.ids, dtype=np.int32), allow_pickle=False)
    np.save(folder / "offsets.npy", np.asarray(tokens.offsets, dtype=np.int64), allow_pickle=False)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")


def load_tokens(folder: Path) -> tuple[CompactTokens, dict[str, int]] | None:
    """The token ids an index was built from (memory-mapped), or None for an index built before they were kept."""
    folder = Path(folder) / LEXICAL_TOKENS_DIR
    if not (folder / "vocab.json").is_file():
        return None
    ids = np.load(folder / "ids.npy", mmap_mode="r", allow_pickle=False)
    offsets = np.load(folder / "offsets.npy", allow_pickle=False)
    return CompactTokens(ids, offsets), json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
