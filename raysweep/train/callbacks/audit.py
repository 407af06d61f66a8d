"""What each rank trained on and ended with: a callback for tests of data-parallel training (the
rows every rank saw and the weights it ended with, in each run's result under "audit")."""

from __future__ import annotations

import hashlib

import torch

from raysweep.train.callbacks.base import Callback


class Audit(Callback):
    def __init__(self):
        self.seen_rows: list[str] = []

    def on_start(self, spec, worker) -> None:
        self.seen_rows = []

    def on_batch(self, spec, step, x) -> None:
        self.seen_rows += [hashlib.sha1(r.cpu().numpy().tobytes()).hexdigest() for r in x]

    def on_finish(self, spec, result, state, worker) -> None:
        result["audit"] = gather(state, self.seen_rows, worker.world)


def gather(state: dict[str, torch.Tensor], seen_rows: list[str], world: int) -> dict:
    """Each rank's weight digest and the digests of the rows it trained on, gathered on every rank."""
    digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()
    mine = {"weights": digest, "rows": seen_rows}
    everyone = [None] * world
    if world > 1:
        torch.distributed.all_gather_object(everyone, mine)
    else:
        everyone = [mine]
    return {"weights": [e["weights"] for e in everyone], "rows": [e["rows"] for e in everyone]}
