"""The optimizer of every stage: AdamW with β = (0.9, 0.95), weight decay on matrices only (or on
every parameter: conventions.decay_1d)."""

from __future__ import annotations

import torch


def build_optimizer(model, lr: float, weight_decay: float, device, decay_1d: bool = False) -> torch.optim.Optimizer:
    # No weight decay on norms (1-D tensors), as in nanoGPT, unless decay_1d; embeddings (2-D) are decayed.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2 or decay_1d]
    no_decay = [p for p in params if p.dim() < 2 and not decay_1d]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=device.type == "cuda")
