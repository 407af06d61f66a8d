"""Held-out slices: each held-out set cut into disjoint slices by document, so that a verdict can
be checked on another choice of held-out documents (the paper is silent on which are held out).

Every final checkpoint is scored on each slice after training (raysweep.sweep.slices); the analysis
computes the verdict per slice and resamples seeds and slices together (analysis.slices). A slice
is a set of whole documents, never a run of blocks: blocks pack neighbouring documents, and a
document split over two slices would score its first half in one and its second in the other.

Which document goes to which slice depends only on the held-out set (a seeded shuffle with a fixed
seed, not the study's), so slice k of seed 0 and slice k of seed 1 hold the same documents wherever
the held-out set itself does not depend on the seed (hub and local corpora).
"""

from __future__ import annotations

import heapq

import numpy as np

from raysweep.store.keys import derive_seed


def assign_documents(lengths: np.ndarray, k: int, label: str) -> list[np.ndarray]:
    """The documents (row indices, in corpus order) of each of `k` slices. The documents are taken in
    a seeded shuffle and each goes to the slice holding the fewest tokens so far (ties: the lower
    slice), so the slices' token counts differ by at most one document's."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.random.default_rng(derive_seed(0, "heldout-slices", label)).permutation(len(lengths))
    heap = [(0, s) for s in range(k)]
    members: list[list[int]] = [[] for _ in range(k)]
    for row in order.tolist():
        tokens, s = heapq.heappop(heap)
        members[s].append(row)
        heapq.heappush(heap, (tokens + int(lengths[row]) + 1, s))  # + 1: the separator each document ends with
    return [np.sort(np.asarray(m, dtype=np.int64)) for m in members]


def slice_tokens(lengths: np.ndarray, slices: list[np.ndarray]) -> list[int]:
    """Tokens of each slice, separators included (what its stream packs into blocks)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return [int((lengths[rows] + 1).sum()) for rows in slices]


def choose_slices(lengths_by_set: dict[str, np.ndarray], wanted: int, block_len: int, eval_tokens: int) -> dict[str, list[np.ndarray]]:
    """Each set's documents in the most slices, at most `wanted`, such that every set's smallest
    slice fills as many blocks as an evaluation scores (eval_tokens // block_len, at least one)
    (assign_documents); {} when fewer than two fit. Each count tried is assigned once, the chosen
    one kept."""
    need_blocks = max(1, eval_tokens // block_len)
    for k in range(wanted, 1, -1):
        cut = {label: assign_documents(lengths, k, label) for label, lengths in lengths_by_set.items()}
        if all(min(slice_tokens(lengths_by_set[label], rows)) // block_len >= need_blocks for label, rows in cut.items()):
            return cut
    return {}


def needed_tokens(wanted: int, eval_tokens: int, block_len: int) -> int:
    """Held-out tokens a set needs for `wanted` slices (each filling an evaluation's blocks), before
    the unevenness of document lengths: what the dry run states."""
    return wanted * max(1, eval_tokens // block_len) * block_len if wanted >= 2 else 0
