"""Seeded randomness: every random choice of data preparation is keyed by the seed and a stable
name, so the same input and seed give byte-identical files (no Python hash randomisation)."""

from __future__ import annotations

import hashlib
import zlib
from typing import Sequence

import numpy as np

__all__ = ["observed_mask", "rng_for", "sample_sorted"]


def rng_for(seed: int, *keys: object) -> np.random.Generator:
    """A generator determined by the seed and stable keys (no Python hash randomisation)."""
    words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def observed_mask(seed: int, user: object, items: Sequence[object], frac: float) -> np.ndarray:
    """Sparse-feedback mask: True where the (user, item) interaction stays observed.

    A hash of (seed, user, item), so a pair is observed or not in every row it appears in (and
    in interactions.parquet): blake2b-64 of ``"{seed}:{user}:{item}"``, as a fraction of 2**64,
    below ``frac``. The common prefix is hashed once per call (the KuaiRec interactions table
    asks for ~12 M pairs).
    """
    prefix = hashlib.blake2b(f"{seed}:{user}:".encode(), digest_size=8)
    digests = bytearray()
    for item in items:
        h = prefix.copy()
        h.update(f"{item}".encode())
        digests += h.digest()
    # uint64 -> float64 rounds to nearest like Python's int -> float; / 2**64 is exact
    return np.frombuffer(bytes(digests), dtype=">u8").astype(np.float64) / 2.0**64 < frac


def sample_sorted(rng: np.random.Generator, n: int, k: int | None) -> np.ndarray:
    """Indices of ``k`` of ``n`` things (all when k is None or >= n), in increasing order."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=k, replace=False))
