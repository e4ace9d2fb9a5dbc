"""BM25 top-k over bm25s's stored score matrix, compiled by numba (imported only where numba is installed).

bm25s's numpy path sums each query token's posting list into a dense score array and partitions all of it; at 2.1M
products that is 48 ms p50 and ~500 ms p90 a query (common words post to half a million documents), the bulk of a
hybrid retrieval and of the build's fusion calibration. bm25s's own numba backend (3 ms) compiles on every process
start (~7 s) and breaks ties in no stated order. This kernel reads the same CSC matrix in the same 2.9 ms, is cached
on disk by numba after its first compilation, and orders ties by row (tests/test_retrieval.py checks it against
bm25s's scores; docs/benchmarks.md has the timings).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _below(s1, r1, s2, r2):  # pragma: no cover - compiled
    """Whether (s1, r1) ranks below (s2, r2): a lower score, or an equal score at a later row."""
    return s1 < s2 or (s1 == s2 and r1 > r2)


@numba.njit(cache=True, nogil=True)
def _sift(hs, hr, i, size):  # pragma: no cover - compiled
    """Restore the heap below ``i`` (its root is the entry ranking lowest)."""
    while True:
        low, left, right = i, 2 * i + 1, 2 * i + 2
        if left < size and _below(hs[left], hr[left], hs[low], hr[low]):
            low = left
        if right < size and _below(hs[right], hr[right], hs[low], hr[low]):
            low = right
        if low == i:
            return
        hs[i], hs[low] = hs[low], hs[i]
        hr[i], hr[low] = hr[low], hr[i]
        i = low


@numba.njit(cache=True, nogil=True)
def top_k(query_ids, data, indptr, indices, num_docs, k):  # pragma: no cover - compiled
    """Rows and scores of the ``k`` best documents for the token ids ``query_ids`` (score descending, then row)."""
    scores = np.zeros(num_docs, dtype=np.float32)
    for t in query_ids:
        for j in range(indptr[t], indptr[t + 1]):
            scores[indices[j]] += data[j]
    hs = np.zeros(k, dtype=np.float32)  # a heap of the k best so far, the lowest-ranking at its root
    hr = np.zeros(k, dtype=np.int64)
    size, row = 0, 0
    while row < num_docs and size < k:  # rows in order, so an equal score never displaces an earlier row
        v = scores[row]
        if v > 0.0:  # every Lucene BM25 term score is > 0: 0 means the query does not touch this row
            hs[size], hr[size] = v, row
            i = size
            size += 1
            while i > 0:
                parent = (i - 1) // 2
                if not _below(hs[i], hr[i], hs[parent], hr[parent]):
                    break
                hs[i], hs[parent] = hs[parent], hs[i]
                hr[i], hr[parent] = hr[parent], hr[i]
                i = parent
        row += 1
    for r in range(row, num_docs):  # the heap is full: one well-predicted comparison per row
        if scores[r] > hs[0]:
            hs[0], hr[0] = scores[r], r
            _sift(hs, hr, 0, size)
    rows, values = hr[:size].copy(), hs[:size].copy()
    order = np.argsort(rows)  # then by score, stably: equal scores stay in row order
    rows, values = rows[order], values[order]
    order = np.argsort(-values, kind="mergesort")
    return rows[order], values[order]
