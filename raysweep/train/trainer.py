"""What a worker slot trains a chain of runs with: the one thing the scheduler (raysweep.sweep)
knows of training. The real trainer's `train` is raysweep.train.chain.train_chain itself, called
by the slot with the loop's config, whose callbacks carry the fault drills the driver read from its
environment (raysweep.sweep.tree.loop_config). The cluster simulation hands in its timed stand-in
instead (bench/standin.py), which has the same members. Either crosses the Ray boundary pickled in
the slots' context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from raysweep.train.chain import train_chain


@dataclass(frozen=True)
class Trainer:
    banner: ClassVar[str | None] = None  # said first by a tree run that trains with something other than the loop
    backend: ClassVar[str | None] = None  # worker groups' torch.distributed backend (None: Ray Train's choice)
    # (specs, sources, cfg, eval_sets, worker) -> one result per spec: no layer between the slot and the chain
    train = staticmethod(train_chain)

    def record(self, event: str, **fields) -> None:
        """A scheduling event (a tree, a phase, a fit): the stand-in keeps a timeline of them."""
