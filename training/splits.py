"""Deterministic train/validation/test splits: the same piece lands in the same split on every machine."""
from __future__ import annotations

import hashlib

SPLITS = ("train", "validation", "test")


def split_of(n: int) -> str:
    """90/5/5 from a stable non-negative integer: n % 20 == 0 is test, == 1 validation, else train."""
    r = n % 20
    return "test" if r == 0 else "validation" if r == 1 else "train"


def split_by_name(name: str) -> str:
    """90/5/5 from a name (e.g. composer and title), through a hash that does not change across runs."""
    return split_of(int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest()[:8], "big"))
