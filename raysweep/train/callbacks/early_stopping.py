"""Early stopping on a held-out loss, keeping the best weights (every rank: the losses are all-reduced,
so all ranks decide alike and stop together)."""

from __future__ import annotations

import weakref

from raysweep.train.callbacks.base import Callback
from raysweep.train.model import host_state


class EarlyStopping(Callback):
    """Keeps the best weights so far (on the host) in the run's progress, and stops the run once
    `patience` evaluations in a row brought no improvement of `early_stop_on` beyond
    `early_stop_min_delta`. Its counters live in the progress (RunProgress: best, best_step, bad,
    best_state), so a progress checkpoint saves them and a resumed run goes on counting."""

    def __init__(self, progress, raw):
        # the run's RunProgress and its plain module (raysweep.train.loop), held weakly: the progress
        # holds this callback, and a cycle would keep the model alive after its run until Python's
        # cycle collector happened to run
        self.p, self.raw = weakref.proxy(progress), weakref.proxy(raw)

    def on_evaluated(self, spec, step, evals) -> bool:
        if not spec.early_stop_on:
            return False
        p, current = self.p, evals[spec.early_stop_on]
        if current < p.best - spec.early_stop_min_delta:
            p.best, p.best_step, p.bad = current, step, 0
            p.best_state = host_state(self.raw.state_dict(), copy=True)
            return False
        p.bad += 1
        return p.bad >= spec.patience
