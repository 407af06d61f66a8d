"""One optimizer step's forward and backward, held-out evaluation, and a rank's batches."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from raysweep.train.loss import cross_entropy


def bf16(device, precision: str = "auto") -> bool:
    """Whether a run computes in bf16 autocast (model.precision): auto is bf16 on GPU only."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(device, precision: str = "auto"):
    """bf16 autocast where `precision` asks for it (auto: on GPU), else full precision."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16(device, precision))


def forward_backward(
    step_model, model, opt, x: torch.Tensor, device, micro_batch: int | None = None, precision: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step up to the optimizer update: next-token cross-entropy on this rank's block
    `x` (bf16 autocast on GPU), gradients, clipping to norm 1.0. Returns (loss, gradient norm); the
    caller decides whether to step (bench/gpu_mfu.py times this same function).

    `micro_batch`: rows per forward (None: all of `x` in one). The rows are split into k equal
    micro-batches whose gradients accumulate, each loss scaled by 1/k: every micro-batch holds the
    same number of tokens, so the sum is the mean over all of `x`'s tokens, the same loss and
    gradient as one forward over `x` up to float rounding. Under DDP the gradients are all-reduced
    once, after the last micro-batch (`no_sync` before it)."""
    rows = x.size(0)
    micro = rows if not micro_batch or micro_batch >= rows else micro_batch
    if rows % micro:
        raise ValueError(f"micro-batch {micro} does not divide this rank's {rows} rows")
    k = rows // micro
    opt.zero_grad(set_to_none=True)
    total = torch.zeros((), device=x.device)
    for i in range(k):
        part = x[i * micro : (i + 1) * micro]
        last = i == k - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(device, precision):
                logits = step_model(input_ids=part[:, :-1]).logits  # (micro, seq, vocab)
            loss = cross_entropy(logits, part[:, 1:])
            (loss / k if k > 1 else loss).backward()
        total += loss.detach() / k if k > 1 else loss.detach()
        del logits, loss
    return total, torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)


def evaluate(
    model, sets: dict[str, torch.Tensor], device, rank: int, world: int, batch: int = 32, precision: str = "auto"
) -> dict[str, float]:
    """Mean next-token cross-entropy per held-out set; blocks are sharded over ranks and summed.
    `batch`: blocks per forward (the memory model's evaluation batch, raysweep.memory)."""
    was_training = model.training
    model.eval()
    out = {}
    with torch.no_grad():
        for name, blocks in sets.items():
            mine = blocks[rank::world]
            total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, count of tokens)
            for i in range(0, len(mine), batch):
                x = mine[i : i + batch].to(device)
                with autocast(device, precision):
                    logits = model(input_ids=x[:, :-1]).logits
                loss = cross_entropy(logits, x[:, 1:], reduction="sum")
                total += torch.stack([loss.double(), torch.tensor(x[:, 1:].numel(), dtype=torch.float64, device=device)])
            if world > 1:
                torch.distributed.all_reduce(total)
            out[name] = (total[0] / total[1]).item()
    model.train(was_training)
    return out


def batches(rows, device, start: int = 0) -> Iterator[torch.Tensor]:
    """This rank's batches from step `start` on: `rows.batch(step)` (raysweep.data.streams.StreamRows)
    says which rows a step trains on, so a resumed run starts at its step directly."""
    step = start
    while True:
        yield torch.from_numpy(np.ascontiguousarray(rows.batch(step), dtype=np.int64)).to(device)
        step += 1
