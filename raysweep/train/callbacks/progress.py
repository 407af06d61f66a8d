"""Progress lines: one per evaluation, and at most one every 10 s between them (rank 0)."""

from __future__ import annotations

import sys
import time

from raysweep.train.callbacks.base import Callback


class ProgressLines(Callback):
    """`[label] step s/N | tokens | tok/s | left ~T s | train loss | held-out losses`."""

    def __init__(self, seq_len: int, every_s: float = 10.0):
        self.seq_len, self.every_s = seq_len, every_s
        self.t0 = self.last = time.perf_counter()

    def on_start(self, spec, worker) -> None:
        self.t0 = self.last = time.perf_counter()

    def on_step(self, spec, step, train_loss, evals) -> None:
        now = time.perf_counter()
        if evals is None and now - self.last < self.every_s:
            return
        self.last = now
        tps, total = spec.batch_size * self.seq_len, spec.max_steps
        rate = step * tps / max(now - self.t0, 1e-9)
        eta = (total - step) * tps / max(rate, 1e-9)
        ev = "".join(f" | {k} {v:.3f}" for k, v in (evals or {}).items())
        # sys.__stdout__: Ray Train patches print() in workers to tee into its logger, which
        # would show every line twice; a print to the raw stream is shown once.
        print(
            f"[{spec.label}] step {step}/{total} | {step * tps / 1e3:.0f}k/{total * tps / 1e3:.0f}k tok"
            f" | {rate / 1e3:.1f}k tok/s | left ~{eta:.0f}s | train {train_loss:.3f}{ev}",
            file=sys.__stdout__,
            flush=True,
        )
