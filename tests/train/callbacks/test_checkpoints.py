"""raysweep.train.callbacks.checkpoints: progress checkpoints written every `checkpoint_every`
steps and where a rung stops its run (never at the run's last step), and read back into a fresh
model, optimizer and progress."""

from __future__ import annotations

from dataclasses import replace

import torch

from raysweep.presets import PRESETS
from raysweep.train.callbacks.checkpoints import ProgressCheckpoints
from raysweep.train.context import LoopConfig, Worker
from raysweep.train.loop import RunProgress, build
from tests.helpers import run_spec

CPU = Worker(torch.device("cpu"))
LOOP = LoopConfig(PRESETS["debug"], 64, 16, 0, {}, "tok")


def _run(spec):
    m = build(spec, None, LOOP, CPU)
    p = RunProgress(t_train=0.0)
    return m, p, ProgressCheckpoints(m, p)


def test_checkpoints_come_every_n_steps_and_at_a_rung_but_not_at_the_end(tmp_path):
    spec = run_spec(tmp_path / "node", max_steps=12, checkpoint_every=4, stop_at=6)
    m, p, checkpoints = _run(spec)
    written = []
    checkpoints.save = lambda spec, worker: written.append(p.step)
    for step in range(1, 13):
        p.step = step
        checkpoints.on_step_end(spec, step, CPU)
    assert written == [4, 6, 8]  # every 4 steps, the rung's stop at 6; none at the last step (12): the node follows


def test_a_checkpoint_is_read_back_into_a_fresh_run(tmp_path):
    spec = run_spec(tmp_path / "node", max_steps=12, checkpoint_every=4)
    m, p, checkpoints = _run(spec)
    with torch.no_grad():
        for w in m.raw.parameters():
            w.add_(0.5)
    p.step, p.best, p.best_step, p.bad = 4, 2.5, 3, 1
    p.points = [("train_loss", 3.0, 0, 2), ("heldout_post", 2.5, 0, 3)]
    checkpoints.on_step_end(spec, 4, CPU)
    again, q, restored = _run(spec)
    restored.restore(spec, CPU)
    assert (q.step, q.best, q.best_step, q.bad, q.resumed_from) == (4, 2.5, 3, 1, 4)
    assert q.points == p.points
    assert all(torch.equal(a, b) for a, b in zip(m.raw.state_dict().values(), again.raw.state_dict().values()))
    fresh, r, none = _run(replace(spec, checkpoint_every=0))  # a run without checkpoints never resumes
    none.restore(replace(spec, checkpoint_every=0), CPU)
    assert r.step == 0
