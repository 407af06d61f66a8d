"""What the training loop tells the outside: progress lines and metric points, from rank 0 only.

The loop is handed a `StepLog` (OLMo-core's callbacks, in one small interface): it keeps every
metric point (saved with progress checkpoints and in the node's metrics.json) and prints a
progress line at most every 10 s. Delivering the points somewhere (raysweep.tracking's MLflow
logger) is a subclass's business, so the loop imports neither Ray nor MLflow.
"""

from __future__ import annotations

import sys
import time

from raysweep.spec import RunSpec

Point = tuple  # (key, value, timestamp ms, step)


class StepLog:
    def __init__(self, spec: RunSpec, total_steps: int, tokens_per_step: int, active: bool):
        self.spec, self.total, self.tps, self.active = spec, total_steps, tokens_per_step, active
        self.points: list[Point] = []
        self.t0 = self.last_print = time.perf_counter()

    def restore(self, points: list, step: int) -> None:
        """After a resume: the points logged up to the checkpoint's step (later ones are made again)."""
        self.points = [tuple(p) for p in points if p[3] <= step]

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if not self.active:
            return
        ts = int(time.time() * 1000)
        new = [(k, float(v), ts, step) for k, v in values.items()]
        self.points += new
        self.deliver(new)

    def deliver(self, new: list[Point]) -> None:
        """Hand new points on (nothing here: they are kept in `points`)."""

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is left (nothing here)."""

    def progress(self, step: int, train_loss: float, evals: dict[str, float] | None = None, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.active or (not force and now - self.last_print < 10.0):
            return
        self.last_print = now
        elapsed = now - self.t0
        rate = step * self.tps / max(elapsed, 1e-9)
        eta = (self.total - step) * self.tps / max(rate, 1e-9)
        ev = "".join(f" | {k} {v:.3f}" for k, v in (evals or {}).items())
        # sys.__stdout__: Ray Train patches print() in workers to tee into its logger, which
        # would show every line twice; a print to the raw stream is shown once.
        print(
            f"[{self.spec.label}] step {step}/{self.total} | {step * self.tps / 1e3:.0f}k/{self.total * self.tps / 1e3:.0f}k tok"
            f" | {rate / 1e3:.1f}k tok/s | left ~{eta:.0f}s | train {train_loss:.3f}{ev}",
            file=sys.__stdout__,
            flush=True,
        )
