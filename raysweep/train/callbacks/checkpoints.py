"""The run's checkpointer: resumable progress checkpoints (raysweep.store.nodes' progress files),
written every `checkpoint_every` steps and where a rung stops its run, and read back when an
interrupted attempt is continued, bit for bit."""

from __future__ import annotations

import sys
import time
import weakref

import torch

from raysweep.store.nodes import load_progress, progress_dir, save_progress
from raysweep.train.callbacks.base import Callback, each


class ProgressCheckpoints(Callback):
    """Weights, optimizer, counters, RNG and metric points of the run (`model`: its Model,
    `progress`: its RunProgress, raysweep.train.loop), saved on every rank (rank 0 writes the
    weights and optimizer)."""

    def __init__(self, model, progress):
        # held weakly: the progress holds this callback (see early_stopping.py)
        self.m, self.p = weakref.proxy(model), weakref.proxy(progress)

    def restore(self, spec, worker) -> None:
        """Continue where an interrupted attempt left off (nothing to do without a checkpoint)."""
        m, p = self.m, self.p
        saved = load_progress(spec, worker.rank) if spec.checkpoint_every else None
        if saved is None:
            return
        m.raw.load_state_dict(saved["model"])
        m.opt.load_state_dict(saved["opt"])
        p.step, p.best, p.best_step, p.bad = saved["step"], saved["best"], saved["best_step"], saved["bad"]
        p.best_state = saved["best_state"] or None
        p.seconds_before = saved["train_seconds"]
        if saved["rng"] is not None:
            torch.set_rng_state(saved["rng"])
        if p.rank0:  # the points logged up to the checkpoint's step (later ones are made again)
            p.points = [tuple(x) for x in saved.get("metrics", []) if x[3] <= p.step]
            each(p.callbacks, "on_resume", spec, list(p.points))
        p.resumed_from = p.step  # the data position is the step: the same batches follow as in an uninterrupted run
        if worker.rank == 0:
            print(
                f"[{spec.label}] resumed at step {p.step}/{spec.max_steps} from {progress_dir(spec.progress_node[1])}",
                file=sys.__stdout__,
                flush=True,
            )

    def on_step_end(self, spec, step, worker) -> None:
        periodic = spec.checkpoint_every and step % spec.checkpoint_every == 0
        if step < spec.max_steps and (periodic or step == spec.stop_at):  # at a rung: the next one continues from here
            t_aside = time.perf_counter()
            self.save(spec, worker)
            self.p.aside += time.perf_counter() - t_aside

    def save(self, spec, worker) -> None:
        m, p = self.m, self.p
        counters = {
            "step": p.step,
            "best": p.best,
            "best_step": p.best_step,
            "bad": p.bad,
            "train_seconds": p.seconds_before + time.perf_counter() - p.t_train,
            "metrics": list(p.points),
        }
        rank0 = worker.rank == 0
        save_progress(
            spec,
            worker.rank,
            m.raw.state_dict() if rank0 else None,
            m.opt.state_dict() if rank0 else None,
            counters,
            p.best_state,
            worker.uploader,
        )
