"""Learning-rate schedule: a pure function of the step."""

from __future__ import annotations

import math


def lr_at(step: int, peak: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup to `peak`, then cosine decay to `min_lr` at `total_steps` (step counts from 0)."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if total_steps <= warmup_steps:
        return peak
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (peak - min_lr) * (1.0 + math.cos(math.pi * progress))
