"""One optimizer step's forward and backward, held-out evaluation, and a rank's batches."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F


def autocast(device):
    """bf16 autocast on GPU; full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def forward_backward(step_model, model, opt, x: torch.Tensor, device, poison: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step up to the optimizer update: next-token cross-entropy on the block `x`
    (bf16 autocast on GPU), gradients, clipping to norm 1.0. Returns (loss, gradient norm); the
    caller decides whether to step (bench/gpu_mfu.py times this same function). `poison`: make
    the loss NaN (fault injection, RAYSWEEP_INJECT_NAN)."""
    with autocast(device):
        logits = step_model(input_ids=x[:, :-1]).logits  # (batch, seq, vocab)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
    if poison:
        loss = loss * float("nan")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    return loss, torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)


def evaluate(model, sets: dict[str, torch.Tensor], device, rank: int, world: int, batch: int = 32) -> dict[str, float]:
    """Mean next-token cross-entropy per held-out set; blocks are sharded over ranks and summed."""
    was_training = model.training
    model.eval()
    out = {}
    with torch.no_grad():
        for name, blocks in sets.items():
            mine = blocks[rank::world]
            total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, count of tokens)
            for i in range(0, len(mine), batch):
                x = mine[i : i + batch].to(device)
                with autocast(device):
                    logits = model(input_ids=x[:, :-1]).logits
                loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="sum")
                total += torch.stack([loss.double(), torch.tensor(x[:, 1:].numel(), dtype=torch.float64, device=device)])
            if world > 1:
                torch.distributed.all_reduce(total)
            out[name] = (total[0] / total[1]).item()
    model.train(was_training)
    return out


def batches(blocks: np.ndarray, per_rank: int, device, label: str = "") -> Iterator[torch.Tensor]:
    """This rank's batches, in order, repeating the rows as often as the step budget needs."""
    n = len(blocks) // per_rank
    if n == 0:
        raise ValueError(f"{label}: the training stream holds less than one batch per worker")
    while True:
        for i in range(n):  # a copy: the rows may be a read-only view (of the object store, of a file)
            yield torch.tensor(blocks[i * per_rank : (i + 1) * per_rank], dtype=torch.long, device=device)
