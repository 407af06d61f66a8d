"""Blocks held in memory as a run's source of rows, for benchmarks and tests that train the loop on
made-up data without the data layer (bench/gpu_check.py runs on a GPU machine that has no corpora)."""

from __future__ import annotations

import numpy as np

from raysweep.data.blocks import rank_rows


class ArraySource:
    """Blocks held in memory (benchmarks, tests) as a run's source of rows: each rank's rows by the
    rank_rows rule, repeated in the same order (a StreamSource reshuffles each later pass)."""

    def __init__(self, blocks: np.ndarray):
        self.blocks = blocks

    def rows_for(self, batch_size: int, world: int, rank: int) -> ArrayRows:
        return ArrayRows(self.blocks[rank_rows(len(self.blocks), batch_size, world, rank)], batch_size // world)


class ArrayRows:
    def __init__(self, rows: np.ndarray, per_rank: int):
        self.rows, self.per = rows, per_rank
        self.steps_per_pass = len(rows) // per_rank
        if self.steps_per_pass == 0:
            raise ValueError("the training stream holds less than one batch per worker")

    def batch(self, step: int) -> np.ndarray:
        i = step % self.steps_per_pass
        return self.rows[i * self.per : (i + 1) * self.per]
