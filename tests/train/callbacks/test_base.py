"""raysweep.train.callbacks.base: a whole run's callback points in order, on a tiny model, and the
metric points the run keeps."""

from __future__ import annotations

import torch

from raysweep.train.callbacks import Callback
from raysweep.train.context import Worker
from tests.helpers import run_spec


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
    from raysweep.train.trainer import Trainer

    rec = Recorder()
    cfg = LoopConfig(PRESETS["debug"], 64, 16, 64, {}, "tok", callbacks=(rec,))
    spec = run_spec(tmp_path, max_steps=10, eval_every=5, monitor=[])
    blocks = torch.randint(0, 64, (64, 17)).numpy()
    result, _, points = Trainer(cfg, Worker(torch.device("cpu")), {}).run(spec, ArraySource(blocks))
    assert rec.calls[0] == ("start",) and rec.calls[-2:] == [("close",), ("finish", 10)]
    assert [c[1] for c in rec.calls if c[0] == "step_end"] == list(range(1, 11))
    assert ("metrics", ("lr", "train_loss"), 10) in rec.calls
    assert {p[0] for p in points} == {"lr", "train_loss"} and result["steps"] == 10
