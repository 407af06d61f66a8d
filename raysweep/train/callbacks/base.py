"""The training loop's one callback system: what it calls at named points of a run, for everything
that is not training itself. A run calls its own callbacks first (progress lines, early stopping,
progress checkpoints: progress.py, early_stopping.py, checkpoints.py), then the config's (fault
drills, the DDP audit), then the worker's (the MLflow sink that raysweep.tracking hands in); a
method a callback leaves alone does nothing, so the loop reads as training only (OLMo-core's
callbacks, reduced to the points raysweep needs).

Callbacks cross the Ray boundary inside the LoopConfig (pickled into each worker), so a callback's
state is per worker process; `on_start` begins each run. Metric points are the loop's record (kept
in progress checkpoints and in the node's metrics.json); callbacks are handed the new ones, on rank
0 only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from raysweep.spec import RunSpec
    from raysweep.train.context import Worker

Point = tuple  # (key, value, timestamp ms, step)


class Callback:
    def on_start(self, spec: RunSpec, worker: Worker) -> None:
        """Before the run's model is built."""

    def on_resume(self, spec: RunSpec, points: list[Point]) -> None:
        """The run continues from a progress checkpoint: the metric points logged up to it (rank 0)."""

    def on_batch(self, spec: RunSpec, step: int, x: torch.Tensor) -> None:
        """This rank's batch of `step`, before its forward."""

    def on_gradients(self, spec: RunSpec, step: int, loss: torch.Tensor, norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's (loss, gradient norm) after backward, before the loop checks they are finite;
        what it returns is what the loop checks."""
        return loss, norm

    def on_metrics(self, spec: RunSpec, points: list[Point]) -> None:
        """New metric points, as the loop records them (rank 0)."""

    def on_step(self, spec: RunSpec, step: int, train_loss: float, evals: dict[str, float] | None) -> None:
        """Step `step` is trained (rank 0), with the held-out losses when it evaluated."""

    def on_evaluated(self, spec: RunSpec, step: int, evals: dict[str, float]) -> bool:
        """The held-out losses of an evaluation at `step` (every rank: all-reduced, the same on
        each); True stops the run there (early stopping)."""
        return False

    def on_step_end(self, spec: RunSpec, step: int, worker: Worker) -> None:
        """After step `step` (its evaluation and progress checkpoint included), on every rank."""

    def on_finish(self, spec: RunSpec, result: dict, state: dict, worker: Worker) -> None:
        """The run's result (which the callback may add to) and its final weights on CPU."""

    def on_close(self, spec: RunSpec) -> None:
        """The run ends, finished or diverged: deliver what is left."""


def each(callbacks, point: str, *args) -> None:
    for cb in callbacks:
        getattr(cb, point)(*args)
