"""The mixing arithmetic, as pure functions: which documents go into which stream, in what order.

Selection is exact to one document: a budget of B tokens takes documents from a seeded order
while the running total stays within B. Seeds derive from (root seed, node path) by SHA-256,
never from Python's salted hash().
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(root: int, *path: object) -> int:
    """A 32-bit seed that depends only on the root seed and the path of names/values."""
    digest = hashlib.sha256("/".join([str(root), *map(str, path)]).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seeded_order(n: int, seed: int) -> np.ndarray:
    """A permutation of range(n) fixed by seed."""
    return np.random.default_rng(seed).permutation(n)


def take_budget(lengths: np.ndarray, order: np.ndarray, budget: int) -> np.ndarray:
    """Indices (a prefix of `order`) whose lengths sum to at most `budget`, as many as fit in order.

    Stops at the first document that would overflow, so the realised total is within one
    document of the budget and a larger budget always selects a superset.
    """
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    cumulative = np.cumsum(lengths[order])
    k = int(np.searchsorted(cumulative, budget, side="right"))
    return order[:k]


def mix_share(post_lengths: np.ndarray, post_order: np.ndarray, mix_fraction: float) -> np.ndarray:
    """The λ share of D_post mixed into stage 1: a prefix of D_post's own order, so λ=1 is one full
    pass and shares for a smaller λ are nested in those for a larger one."""
    if not 0.0 <= mix_fraction <= 1.0:
        raise ValueError(f"mix_fraction must be in [0, 1], got {mix_fraction}")
    total = int(post_lengths[post_order].sum())
    return take_budget(post_lengths, post_order, int(round(mix_fraction * total)))

