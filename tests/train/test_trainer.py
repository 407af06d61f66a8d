"""raysweep.train.trainer: what a slot calls to train a chain; the fault drills it carries are read
once, in the driver, from the environment (each drill itself: tests/scenarios/test_faults.py)."""

from __future__ import annotations

import pickle

from raysweep.presets import PRESETS
from raysweep.train import chain
from raysweep.train.callbacks.faults import Faults
from raysweep.train.context import LoopConfig
from raysweep.train.trainer import Trainer

DRILLS = ("FAILURE", "KILL", "NAN", "DELAY")


def test_the_drills_come_from_the_drivers_environment_and_travel_with_the_trainer(monkeypatch):
    for drill in DRILLS:
        monkeypatch.delenv(f"RAYSWEEP_INJECT_{drill}", raising=False)
    assert Trainer.from_env().callbacks == ()  # the real loop, nothing injected
    monkeypatch.setenv("RAYSWEEP_INJECT_KILL", "posttrain λ=0.5@4")
    [faults] = Trainer.from_env().callbacks
    assert faults == Faults(kill="posttrain λ=0.5@4")
    # a worker gets them with the pickled trainer, whatever its own environment
    monkeypatch.delenv("RAYSWEEP_INJECT_KILL")
    assert pickle.loads(pickle.dumps(Trainer.from_env())).callbacks == () and pickle.loads(pickle.dumps(Trainer((faults,)))).callbacks == (
        faults,
    )


def test_a_chain_trains_with_the_loops_callbacks_and_the_trainers(monkeypatch):
    seen = {}
    monkeypatch.setattr(chain, "train_chain", lambda specs, sources, cfg, eval_sets, worker: seen.setdefault("callbacks", cfg.callbacks))
    own, drill = object(), Faults(failure="finetune")
    cfg = LoopConfig(PRESETS["debug"], 64, 16, 128, {}, "tok", callbacks=(own,))
    Trainer((drill,)).train([], {}, cfg, {}, worker=None)
    assert seen["callbacks"] == (own, drill)  # the loop's first, then the drills
