"""Scoring stored weights on held-out sets, without training: what held-out slices need
(raysweep.sweep.slices). It imports no Ray, like the training loop, so it runs anywhere a node's
weights can be read."""

from __future__ import annotations

import torch

from raysweep.memory import fit_stage
from raysweep.train.context import LoopConfig
from raysweep.train.model import build_model
from raysweep.train.step import evaluate


def eval_batch(cfg: LoopConfig, device: torch.device) -> int:
    """Blocks per evaluation forward: the memory model's evaluation batch for this shape (raysweep.memory)."""
    cuda = device.type == "cuda"
    device_bytes = torch.cuda.get_device_properties(device).total_memory if cuda else None
    fit = fit_stage(
        cfg.shape,
        cfg.vocab_size,
        cfg.seq_len,
        1,
        1,
        gpus_per_worker=1.0 if cuda else 0.0,
        device_bytes=device_bytes,
        precision=cfg.precision,
    )
    return fit.eval_batch


def score_weights(state: dict, cfg: LoopConfig, sets: list[dict[str, torch.Tensor]], device: torch.device) -> list[dict[str, float]]:
    """The mean next-token loss of a model with weights `state` on each of `sets` (each: name ->
    (blocks, block_len) tensor), as the training loop's final evaluation computes it."""
    model = build_model(cfg.shape, cfg.vocab_size, cfg.seq_len)
    model.load_state_dict(state)
    model.to(device)
    batch = eval_batch(cfg, device)
    return [evaluate(model, s, device, 0, 1, batch, cfg.precision) for s in sets]
