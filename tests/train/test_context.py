"""raysweep.train.context: a worker outside Ray puts the model on its device itself, inside a worker
group the group's wrapper does; the held-out sets are all of a set's blocks or a seeded sample
within the evaluation's token budget, the same on every call."""

from __future__ import annotations

import pickle

import torch

from raysweep.data.streams import StreamSource
from raysweep.presets import PRESETS
from raysweep.train.callbacks.faults import Faults
from raysweep.train.context import LoopConfig, Worker, load_eval_sets


def test_a_plain_worker_moves_the_model_and_a_group_worker_lets_its_wrapper_do_it():
    model = torch.nn.Linear(2, 2)
    assert Worker(torch.device("cpu")).wrap(model) is model  # .to(cpu) of a CPU module is itself
    wrapped = []
    group = Worker(torch.device("cpu"), rank=1, world=2, wrap_model=lambda m: wrapped.append(m) or "ddp")
    assert group.wrap(model) == "ddp" and wrapped == [model]


def test_held_out_sets_are_sampled_within_the_token_budget_and_the_config_travels_pickled(smoke_data):
    _, data = smoke_data  # (the smoke study, its prepared data)
    sources = {role: StreamSource(str(s.path)) for role, s in data.heldout.items()}
    whole = load_eval_sets(LoopConfig(PRESETS["debug"], data.vocab_size, 64, 10**9, sources, "tok"))
    small = load_eval_sets(LoopConfig(PRESETS["debug"], data.vocab_size, 64, 640, sources, "tok"))
    again = load_eval_sets(LoopConfig(PRESETS["debug"], data.vocab_size, 64, 640, sources, "tok"))
    for role, blocks in small.items():
        assert blocks.dtype == torch.int64 and blocks.shape[1] == whole[role].shape[1]
        assert blocks.shape[0] * blocks.shape[1] <= 640 < whole[role].numel()  # a sample, within the budget
        assert torch.equal(blocks, again[role])  # seeded: every evaluation scores the same blocks
    cfg = LoopConfig(PRESETS["debug"], data.vocab_size, 64, 640, sources, "tok", callbacks=(Faults(kill="x@3"),))
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # it crosses the Ray boundary pickled
