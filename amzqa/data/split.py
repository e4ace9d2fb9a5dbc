"""The held-out split: products reserved for evaluation, never used to train or to fit anything.

Membership is a pure function of the uid (a salted hash), so retrieval evaluation, SFT data building and
generation evaluation agree on it without sharing state, and it stays stable when the catalog grows.
"""

from __future__ import annotations

import hashlib
import random

HELDOUT_SALT = "amzqa-heldout-v1"
HELDOUT_RATE = 0.15


def heldout_score(uid: str, salt: str = HELDOUT_SALT) -> float:
    digest = hashlib.blake2b(f"{salt}:{uid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def is_heldout(uid: str, rate: float = HELDOUT_RATE, salt: str = HELDOUT_SALT) -> bool:
    return heldout_score(uid, salt) < rate


def iter_uids(store, chunk: int = 100_000):
    """Every uid in row order, a chunk at a time (not 2M Python strings at once)."""
    column = store.table.column("uid")
    for lo in range(0, len(column), chunk):
        yield from column.slice(lo, chunk).to_pylist()


def calibration_products(store, n: int, seed: int, heldout_rate: float = HELDOUT_RATE) -> list:
    """Up to ``n`` products outside the held-out split, for fitting thresholds and fusion: no report scores them."""
    rows = [i for i, u in enumerate(iter_uids(store)) if not is_heldout(u, heldout_rate)]
    random.Random(f"calibrate-{seed}").shuffle(rows)
    return [store.get(i) for i in sorted(rows[:n])]


def heldout_products(store, rate: float, n: int, seed: int) -> list:
    """Up to ``n`` held-out products (the ones evaluation reports score), in row order."""
    rows = [i for i, u in enumerate(iter_uids(store)) if is_heldout(u, rate)]
    random.Random(seed).shuffle(rows)
    return [store.get(i) for i in sorted(rows[:n])]
