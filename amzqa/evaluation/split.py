"""The held-out split: products reserved for evaluation, never used to train.

Membership is a pure function of the uid (a salted hash), so retrieval evaluation, SFT data building and
generation evaluation agree on it without sharing state, and it stays stable when the catalog grows.
"""

from __future__ import annotations

import hashlib

HELDOUT_SALT = "amzqa-heldout-v1"
HELDOUT_RATE = 0.15


def heldout_score(uid: str, salt: str = HELDOUT_SALT) -> float:
    digest = hashlib.blake2b(f"{salt}:{uid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def is_heldout(uid: str, rate: float = HELDOUT_RATE, salt: str = HELDOUT_SALT) -> bool:
    return heldout_score(uid, salt) < rate
