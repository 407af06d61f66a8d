"""Fault injection for tests and drills (README, "Guarantees"): a loop callback, read once from the
environment by the driver (Faults.drills, in raysweep.sweep.tree.loop_config), so workers get the
drills with the loop's config whatever their own environment.

RAYSWEEP_INJECT_FAILURE=<text> raises in every run whose label holds <text>;
RAYSWEEP_INJECT_KILL=<text>@<step> SIGKILLs that run's worker once at that step (like a preempted
machine: no cleanup runs); RAYSWEEP_INJECT_NAN=<text>@<step> makes its loss NaN there;
RAYSWEEP_INJECT_DELAY=<text>@<seconds> sleeps that long before the run starts (a slow machine:
the results are unchanged, only later).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from raysweep.store.nodes import progress_dir
from raysweep.train.callbacks.base import Callback


@dataclass(frozen=True)
class Faults(Callback):
    failure: str | None = None  # label text: raise at the start of the run
    kill: str | None = None  # "<label text>@<step>": SIGKILL the worker once there
    nan: str | None = None  # "<label text>@<step>": a NaN loss there
    delay: str | None = None  # "<label text>@<seconds>": sleep before the run starts
    # this run's kill and NaN steps, read from the texts once per run (on_start), not at every step
    run_steps: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_env(cls) -> Faults:
        return cls(*(os.environ.get(f"RAYSWEEP_INJECT_{k}") for k in ("FAILURE", "KILL", "NAN", "DELAY")))

    def any(self) -> bool:
        return any((self.failure, self.kill, self.nan, self.delay))

    @classmethod
    def drills(cls) -> tuple:
        """The loop's callbacks for the drills the environment asks for: none, or these faults."""
        faults = cls.from_env()
        return (faults,) if faults.any() else ()

    def on_start(self, spec, worker) -> None:
        self.run_steps.update(kill=_injected_step(self.kill, spec.label), nan=_injected_step(self.nan, spec.label))
        self.at_start(spec.label)

    def on_gradients(self, spec, step, loss, norm):
        if self.run_steps.get("nan") == step:  # a NaN loss: its gradient is NaN too
            return loss * float("nan"), norm * float("nan")
        return loss, norm

    def on_step_end(self, spec, step, worker) -> None:
        if self.run_steps.get("kill") == step and worker.rank == 0:
            kill_once(progress_dir(spec.node_dir), spec.label, step)

    def at_start(self, label: str) -> None:
        if self.failure and self.failure in label:
            raise RuntimeError(f"{label}: failure injected by RAYSWEEP_INJECT_FAILURE={self.failure!r}")
        seconds = _injected_step(self.delay, label)
        if seconds:
            print(f"[{label}] starting in {seconds} s (RAYSWEEP_INJECT_DELAY)", file=sys.__stdout__, flush=True)
            time.sleep(seconds)


def _injected_step(value: str | None, label: str) -> int | None:
    """ "<text>@<step>" hits the runs whose label holds <text>."""
    if not value or "@" not in value:
        return None
    text, _, step = value.rpartition("@")
    return int(step) if text in label else None


def kill_once(marker_dir: Path, label: str, step: int) -> None:
    """SIGKILL this worker once (a marker file beside the run's progress remembers it was done)."""
    marker = Path(marker_dir) / f"killed-at-{step}"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    print(f"[{label}] worker SIGKILLed at step {step} (RAYSWEEP_INJECT_KILL)", file=sys.__stdout__, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
