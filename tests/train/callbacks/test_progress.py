"""raysweep.train.callbacks.progress: the loop's own progress lines (one per evaluation, at most
one every `every_s` between them)."""

from __future__ import annotations

import torch

from raysweep.train.callbacks.progress import ProgressLines
from raysweep.train.context import Worker
from tests.helpers import run_spec


def test_progress_lines_come_at_each_evaluation_and_at_most_every_interval_between(tmp_path, capfd):
    spec = run_spec(tmp_path, label="run", batch_size=2, max_steps=40)
    lines = ProgressLines(seq_len=8, every_s=3600.0)
    lines.on_start(spec, Worker(torch.device("cpu")))
    for step in range(1, 6):
        lines.on_step(spec, step, 2.5, None)  # within the interval: nothing
    lines.on_step(spec, 6, 2.25, {"post": 3.125})
    out = capfd.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("[run] step 6/40 | 0k/1k tok") and out[0].endswith("| train 2.250 | post 3.125")
    every = ProgressLines(seq_len=8, every_s=0.0)
    every.on_start(spec, Worker(torch.device("cpu")))
    every.on_step(spec, 1, 2.5, None)
    every.on_step(spec, 2, 2.5, None)
    assert len(capfd.readouterr().out.splitlines()) == 2
