"""What the training loop calls at named points of a run, for what is not training: fault drills
(raysweep.train.faults), the audit of data-parallel runs (raysweep.train.audit). A LoopConfig holds
its callbacks; the loop calls each at every point, and a method a callback leaves alone does nothing,
so the loop reads as training only (OLMo-core's callbacks, reduced to the points raysweep needs).

Callbacks cross the Ray boundary inside the LoopConfig (pickled into each worker), so a callback's
state is per worker process; `on_start` begins each run."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from raysweep.spec import RunSpec
    from raysweep.train.context import Worker


class Callback:
    def on_start(self, spec: RunSpec, worker: Worker) -> None:
        """Before the run's model is built."""

    def on_batch(self, spec: RunSpec, step: int, x: torch.Tensor) -> None:
        """This rank's batch of `step`, before its forward."""

    def on_gradients(self, spec: RunSpec, step: int, loss: torch.Tensor, norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's (loss, gradient norm) after backward, before the loop checks they are finite;
        what it returns is what the loop checks."""
        return loss, norm

    def on_step_end(self, spec: RunSpec, step: int, worker: Worker) -> None:
        """After step `step` (its evaluation and progress checkpoint included)."""

    def on_finish(self, spec: RunSpec, result: dict, state: dict, worker: Worker) -> None:
        """The run's result (which the callback may add to) and its final weights on CPU."""


def each(callbacks, point: str, *args) -> None:
    for cb in callbacks:
        getattr(cb, point)(*args)
