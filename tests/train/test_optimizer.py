"""raysweep.train.optimizer: AdamW's two parameter groups (weight decay on matrices only, or on
every parameter with conventions.decay_1d)."""

from __future__ import annotations

import torch

from raysweep.train.model import build_model
from raysweep.train.optimizer import build_optimizer


def test_decay_1d_puts_norm_weights_in_the_decayed_group():
    model = build_model("debug", 64, 16)
    cpu = torch.device("cpu")
    today, every = build_optimizer(model, 1e-3, 0.1, cpu), build_optimizer(model, 1e-3, 0.1, cpu, decay_1d=True)
    one_d = sum(p.numel() for p in model.parameters() if p.dim() < 2)
    assert one_d > 0
    assert sum(p.numel() for p in today.param_groups[1]["params"]) == one_d and today.param_groups[1]["weight_decay"] == 0.0
    assert sum(p.numel() for p in every.param_groups[0]["params"]) == sum(p.numel() for p in model.parameters())
    assert not every.param_groups[1]["params"]
