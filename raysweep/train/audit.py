"""What each rank trained on and ended with (LoopConfig.audit): for tests of data-parallel training."""

from __future__ import annotations

import hashlib

import torch


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
