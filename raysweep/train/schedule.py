"""Learning-rate schedule: a pure function of the step."""

from __future__ import annotations

import math

WSD_DECAY_SHARE = 0.2  # warmup-stable-decay: the last 20% of steps decay (SmolLM2's recipe)


def lr_at(step: int, peak: float, min_lr: float, warmup_steps: int, total_steps: int, shape: str = "warmup_cosine") -> float:
    """The learning rate at `step` (counted from 0) of a run of `total_steps` (conventions.schedule):
    warmup_cosine: linear warmup to `peak`, then cosine decay to `min_lr` at `total_steps`.
    cosine_times_warmup: a cosine from `peak` over all steps times the warmup ramp, never below `min_lr`.
    wsd: linear warmup, `peak` held, then linear decay to `min_lr` over the last WSD_DECAY_SHARE of steps."""
    ramp = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    if shape == "cosine_times_warmup":
        progress = min(1.0, step / max(1, total_steps))
        return max(min_lr, peak * ramp * 0.5 * (1.0 + math.cos(math.pi * progress)))
    if shape == "wsd":
        decay_from = max(warmup_steps, round(total_steps * (1 - WSD_DECAY_SHARE)))
        if step < warmup_steps or step < decay_from:
            return peak * ramp
        return peak + (min_lr - peak) * min(1.0, (step - decay_from + 1) / max(1, total_steps - decay_from))
    if shape != "warmup_cosine":
        raise ValueError(f"unknown schedule {shape!r}")
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if total_steps <= warmup_steps:
        return peak
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (peak - min_lr) * (1.0 + math.cos(math.pi * progress))
