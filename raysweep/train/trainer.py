"""What a worker slot calls to train a chain of runs: the one thing the scheduler (raysweep.sweep)
knows of training. The study makes a `Trainer` (the real loop, with the fault drills the
environment asks for); the cluster simulation hands in its timed stand-in instead
(bench/standin.py), which has the same methods. Either crosses the Ray boundary pickled in
the slots' context, so each keeps what it needs in its fields."""

from __future__ import annotations

from dataclasses import dataclass, replace

from raysweep.train.callbacks.faults import Faults


@dataclass(frozen=True)
class Trainer:
    callbacks: tuple = ()  # added to the loop's (raysweep.train.callbacks)
    banner: str | None = None  # said first by a tree run that trains with something other than the loop
    backend: str | None = None  # worker groups' torch.distributed backend (None: Ray Train's choice)

    @classmethod
    def from_env(cls) -> Trainer:
        """The real loop, with the fault drills RAYSWEEP_INJECT_* ask for (raysweep.train.callbacks.faults),
        read once here in the driver: workers get them with the trainer, whatever their environment."""
        faults = Faults.from_env()
        return cls(callbacks=(faults,) if faults.any() else ())

    def train(self, specs: list, sources: dict, cfg, eval_sets: dict, worker) -> list[dict]:
        """raysweep.train.chain.train_chain with this trainer's callbacks."""
        from raysweep.train.chain import train_chain

        return train_chain(specs, sources, replace(cfg, callbacks=(*cfg.callbacks, *self.callbacks)), eval_sets, worker)

    def record(self, event: str, **fields) -> None:
        """A scheduling event (a tree, a phase, a fit): the stand-in keeps a timeline of them."""
