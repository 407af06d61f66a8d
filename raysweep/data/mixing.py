"""The mixing arithmetic, as pure functions: which tokens of which documents go into which stream.

A corpus is read in a seeded document order; each document counts as its tokens plus one
separator. A budget is a range of that token sequence, [start, stop), so every share is exact
to the token: the last document of a share may be cut, and in compute-matched mode the other
part of that document opens the complementary share. Shares are prefixes of one order, so a
smaller λ always selects a subset of a larger one, and λ = 1 is exactly one pass.

Seeds come from raysweep.store.keys.derive_seed (root seed and a path of names, by SHA-256).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raysweep.spec import share_tokens
from raysweep.store.keys import array_digest


def seeded_order(n: int, seed: int) -> np.ndarray:
    """A permutation of range(n) fixed by seed."""
    return np.random.default_rng(seed).permutation(n)


@dataclass(frozen=True)
class Selection:
    """Pieces of documents: row `rows[i]` contributes tokens [start[i], stop[i]) of its
    (tokens + separator) sequence. Rows are distinct and listed in the corpus order."""

    rows: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    @property
    def tokens(self) -> int:
        return int((self.stop - self.start).sum())

    def __len__(self) -> int:
        return len(self.rows)

    def digest(self) -> str:
        return array_digest(*(np.asarray(a, dtype=np.int64) for a in (self.rows, self.start, self.stop)))

    @staticmethod
    def whole(rows: np.ndarray, lengths: np.ndarray) -> Selection:
        rows = np.asarray(rows, dtype=np.int64)
        return Selection(rows, np.zeros(len(rows), dtype=np.int64), lengths[rows].astype(np.int64) + 1)


class BudgetError(ValueError):
    """A budget asks for more tokens than the corpus holds."""

    def __init__(self, wanted: int, available: int):
        self.wanted, self.available = wanted, available
        super().__init__(f"{wanted:,} tokens asked, {available:,} available")


def available_tokens(lengths: np.ndarray) -> int:
    """Tokens a corpus offers to budgets: every document plus its separator."""
    return int(lengths.sum() + len(lengths))


def take_tokens(lengths: np.ndarray, order: np.ndarray, start: int, stop: int) -> Selection:
    """Tokens [start, stop) of the documents in `order` laid end to end (each with its separator)."""
    if not 0 <= start <= stop:
        raise ValueError(f"need 0 <= start <= stop, got [{start}, {stop})")
    sizes = lengths[order].astype(np.int64) + 1
    ends = np.cumsum(sizes)
    if stop > (ends[-1] if len(ends) else 0):
        raise BudgetError(stop, int(ends[-1]) if len(ends) else 0)
    begins = ends - sizes
    first = int(np.searchsorted(ends, start, side="right"))  # first document ending after `start`
    last = int(np.searchsorted(begins, stop, side="left"))  # documents beginning before `stop`
    rows = order[first:last].astype(np.int64)
    b = begins[first:last]
    lo = np.maximum(start - b, 0)
    hi = np.minimum(stop - b, sizes[first:last])
    keep = lo < hi  # an empty range touches at most one document and takes nothing from it
    return Selection(rows[keep], lo[keep], hi[keep])


def take_budget(lengths: np.ndarray, order: np.ndarray, budget: int) -> Selection:
    """The first `budget` tokens in `order` (the last document cut to fit)."""
    return take_tokens(lengths, order, 0, budget)


def mix_share(lengths: np.ndarray, order: np.ndarray, post_tokens: int, mix_fraction: float) -> Selection:
    """λ-sweep and compute-matched stage 1: the first λ·|D_post| tokens of D_post's order."""
    return take_tokens(lengths, order, 0, share_tokens(post_tokens, mix_fraction))


def complement_share(lengths: np.ndarray, order: np.ndarray, post_tokens: int, mix_fraction: float) -> Selection:
    """Compute-matched stage 2: the (1−λ)·|D_post| tokens stage 1 did not see; together one pass."""
    return take_tokens(lengths, order, share_tokens(post_tokens, mix_fraction), post_tokens)


def mixture_weight(tokens: int, post_tokens: int, mix_fraction: float) -> float:
    """α: D_post's share of a stage-1 stream of `tokens` D_pre tokens plus λ·|D_post| (the linear
    theory backend's stage-1 objective mixes its tasks in this proportion, as tokens would)."""
    extra = mix_fraction * post_tokens
    return extra / (tokens + extra)


def replay_tokens(stage2_tokens: int, replay: float) -> int:
    """D_pre tokens to add to a stage-2 set of `stage2_tokens` so that they are a share `replay`
    of the mixed stream: R / (S + R) = replay."""
    if not 0.0 <= replay < 1.0:
        raise ValueError(f"replay must be in [0, 1), got {replay}")
    return int(round(replay * stage2_tokens / (1.0 - replay)))


ROLES = ("pre", "post", "ft")  # D_pre, D_post, D_ft


def needed_tokens(study) -> dict[str, int]:
    """Training tokens each corpus must hold for a study's budgets (D_pre read once for every arm)."""
    p1, p2 = study.pretrain, study.posttrain
    replay = replay_tokens(p1.post_tokens, max(p2.replay))  # the largest stage-2 set is |D_post|
    return {"pre": max(p1.tokens, replay), "post": p1.post_tokens, "ft": study.finetune.tokens}
