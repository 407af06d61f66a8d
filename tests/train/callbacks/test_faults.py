"""raysweep.train.callbacks.faults: the drills are read once, in the driver, from the
environment, and travel in the loop's config (each drill itself: tests/scenarios/test_faults.py)."""

from __future__ import annotations

import pickle

from raysweep.train.callbacks.faults import Faults

DRILLS = ("FAILURE", "KILL", "NAN", "DELAY")


def test_the_drills_come_from_the_drivers_environment_and_travel_with_the_loops_config(monkeypatch):
    from raysweep.presets import PRESETS
    from raysweep.train.context import LoopConfig

    for drill in DRILLS:
        monkeypatch.delenv(f"RAYSWEEP_INJECT_{drill}", raising=False)
    assert Faults.drills() == ()  # the real loop, nothing injected
    monkeypatch.setenv("RAYSWEEP_INJECT_KILL", "posttrain λ=0.5@4")
    [faults] = Faults.drills()
    assert faults == Faults(kill="posttrain λ=0.5@4")
    # a worker gets them with the pickled config, whatever its own environment
    cfg = LoopConfig(PRESETS["debug"], 64, 16, 128, {}, "tok", callbacks=Faults.drills())
    monkeypatch.delenv("RAYSWEEP_INJECT_KILL")
    assert pickle.loads(pickle.dumps(cfg)).callbacks == (faults,) and Faults.drills() == ()
