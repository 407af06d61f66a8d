"""raysweep.train.callbacks.audit: a run's result carries, per rank, a digest of its final weights
and of every row it trained on (what the DDP tests compare across ranks: tests/scenarios/test_ddp.py)."""

from __future__ import annotations

import hashlib

import torch

from raysweep.train.callbacks.audit import Audit
from raysweep.train.context import Worker
from tests.helpers import run_spec


def test_an_audited_run_carries_its_rows_and_weights_digest_and_starts_afresh_each_run(tmp_path):
    audit, cpu, spec = Audit(), Worker(torch.device("cpu")), run_spec(tmp_path)
    audit.on_start(spec, cpu)
    batches = [torch.arange(6).reshape(2, 3), torch.arange(6, 12).reshape(2, 3)]
    for step, x in enumerate(batches):
        audit.on_batch(spec, step, x)
    result, state = {}, {"b": torch.ones(2), "a": torch.zeros(3)}
    audit.on_finish(spec, result, state, cpu)
    rows = [hashlib.sha1(r.numpy().tobytes()).hexdigest() for x in batches for r in x]
    assert result["audit"]["rows"] == [rows]  # one rank: its rows in the order it trained on them
    same = {}
    audit.on_start(spec, cpu)  # a new run: nothing of the last one's rows
    audit.on_finish(spec, same, dict(reversed(list(state.items()))), cpu)
    assert same["audit"]["rows"] == [[]] and same["audit"]["weights"] == result["audit"]["weights"]  # by key, not by order
