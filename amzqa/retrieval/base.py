"""The retriever interface and what every implementation shares: turning ranked row ids into typed hits."""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

from amzqa.errors import AmzqaError
from amzqa.records import Hit
from amzqa.retrieval.store import ProductStore

MAX_QUERY_CHARS = 2000

# Format/edition suffixes that make "the same product" look like different titles.
_EDITION = re.compile(
    r"\s*[\(\[][^\)\]]*(paperback|hardcover|edition|dvd|vhs|blu-ray|audio cd|kindle|vinyl|large print|renewed|book \d+)[^\)\]]*[\)\]]",
    re.I,
)
_NON_WORD = re.compile(r"[^\w]+")


def title_key(title: str) -> str:
    """Normalised title used to collapse near-duplicates (editions and formats of one work)."""
    return _NON_WORD.sub(" ", _EDITION.sub("", title).casefold()).strip()


@runtime_checkable
class Retriever(Protocol):
    """Anything with ``retrieve(query, k) -> list[Hit]``."""

    name: str

    def retrieve(self, query: str, k: int = 10) -> list[Hit]: ...


def check_query(query: str) -> str:
    if not isinstance(query, str) or not query.strip():
        raise AmzqaError("the question is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise AmzqaError(f"the question is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}")
    return query.strip()


def to_hits(store: ProductStore, ranked: list[tuple[int, float, dict[str, float]]], k: int, collapse: bool = True) -> list[Hit]:
    """Typed hits for ranked ``(row_id, score, per_retriever_scores)``, near-duplicates collapsed, ranks 1..k."""
    hits: list[Hit] = []
    seen: set[str] = set()
    for row, score, scores in ranked:
        product = store.get(row)
        if collapse:
            key = title_key(product.title)
            if key in seen:
                continue
            seen.add(key)
        hits.append(Hit(product, float(score), len(hits) + 1, tuple(sorted(scores)), dict(scores)))
        if len(hits) == k:
            break
    return hits


def candidates(k: int) -> int:
    """How many raw results to fetch so that k remain after collapsing duplicates and fusing."""
    return max(4 * k, 40)
