"""raysweep.train.callbacks: the loop's own progress lines (one per evaluation, at most one every
`every_s` between them), and a whole run's callback points in order, on a tiny model."""

from __future__ import annotations

import torch

from raysweep.train.callbacks import Callback
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


class Recorder(Callback):
    def __init__(self):
        self.calls: list[tuple] = []

    def on_start(self, spec, worker):
        self.calls.append(("start",))

    def on_metrics(self, spec, points):
        self.calls.append(("metrics", tuple(sorted({p[0] for p in points})), points[0][3]))

    def on_step_end(self, spec, step, worker):
        self.calls.append(("step_end", step))

    def on_finish(self, spec, result, state, worker):
        self.calls.append(("finish", result["steps"]))

    def on_close(self, spec):
        self.calls.append(("close",))


def test_a_runs_callbacks_see_its_points_in_order_and_the_loop_keeps_them(tmp_path):
    from bench.arrays import ArraySource
    from raysweep.presets import PRESETS
    from raysweep.train.context import LoopConfig
    from raysweep.train.loop import train_run

    rec = Recorder()
    cfg = LoopConfig(PRESETS["debug"], 64, 16, 64, {}, "tok", callbacks=(rec,))
    spec = run_spec(tmp_path, max_steps=10, eval_every=5, monitor=[])
    blocks = torch.randint(0, 64, (64, 17)).numpy()
    result, _, points = train_run(spec, None, ArraySource(blocks), cfg, {}, Worker(torch.device("cpu")))
    assert rec.calls[0] == ("start",) and rec.calls[-2:] == [("close",), ("finish", 10)]
    assert [c[1] for c in rec.calls if c[0] == "step_end"] == list(range(1, 11))
    assert ("metrics", ("lr", "train_loss"), 10) in rec.calls
    assert {p[0] for p in points} == {"lr", "train_loss"} and result["steps"] == 10
