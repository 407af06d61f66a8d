"""raysweep.train.callbacks.early_stopping: the best weights kept (a copy on the host), patience
counted in the run's progress, nothing done where a run does not stop early."""

from __future__ import annotations

import torch

from raysweep.train.callbacks.early_stopping import EarlyStopping
from raysweep.train.loop import RunProgress
from raysweep.train.model import build_model
from tests.helpers import run_spec


def test_early_stopping_keeps_a_copy_of_the_best_weights_and_stops_after_patience(tmp_path):
    model = build_model("debug", 64, 16)
    spec = run_spec(tmp_path / "n", early_stop_on="post", patience=2)
    p = RunProgress()
    stopper = EarlyStopping(p, model)
    assert stopper.on_evaluated(spec, 10, {"post": 3.0}) is False
    assert (p.best, p.best_step, p.bad) == (3.0, 10, 0)
    best, name = p.best_state, next(iter(model.state_dict()))
    assert torch.equal(best[name], model.state_dict()[name])
    with torch.no_grad():
        for w in model.parameters():
            w.add_(1.0)
    assert not torch.equal(best[name], model.state_dict()[name])  # a copy, not the weights the run trains on
    assert stopper.on_evaluated(spec, 20, {"post": 3.5}) is False and p.bad == 1 and p.best_state is best
    assert stopper.on_evaluated(spec, 30, {"post": 3.2}) is True  # two evaluations in a row without improvement
    assert (p.best, p.best_step) == (3.0, 10)


def test_a_run_without_early_stopping_is_never_stopped_and_keeps_nothing(tmp_path):
    p = RunProgress()
    stopper = EarlyStopping(p, build_model("debug", 64, 16))
    for step in range(1, 6):
        assert stopper.on_evaluated(run_spec(tmp_path / "n", patience=1), step, {"post": 5.0 + step}) is False
    assert p.best_state is None and p.bad == 0
