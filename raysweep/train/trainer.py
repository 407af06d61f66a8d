"""The trainer a worker slot builds and trains chains of runs with: the one thing the scheduler
(raysweep.sweep) knows of training.

    TrainerConfig (picklable: it crosses the Ray boundary in the slots' context)
      .build(loop, worker, eval_sets) -> Trainer (in the worker: its place, its held-out sets)
        .fit(chain)  runs back to back: a stage-2 run, then each of its stage-3 children starting
                     from its weights in memory (no reload), each stored as its own node
        .run(spec)   one run: model, optimizer and schedule, data, checkpointer and early stopping
                     made by raysweep.train.loop.start_run; steps (step.forward_backward: the loss);
                     evaluation and the callbacks after each step; the result and final weights

Every node is stored (uploads included) before `fit` returns, so a child trained next by another
worker group can load it. A run whose loss turns non-finite is recorded as diverged (an outcome, not
retried) and its children are skipped as blocked; any other error is recorded in the node's failures
file and raised, so the caller can give the item back for a retry. The cluster simulation hands in
its timed stand-in's config instead (bench/standin.py), which builds a trainer with the same `fit`.
"""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

import torch

from raysweep.signals import hold_if_stopping
from raysweep.spec import Diverged, RunSpec
from raysweep.store.nodes import finish_progress, load_weights, record_failure, save_diverged, save_node
from raysweep.train.callbacks import each
from raysweep.train.context import LoopConfig, Worker
from raysweep.train.loop import after_step, finish, start_run
from raysweep.train.schedule import lr_at
from raysweep.train.step import forward_backward


@dataclass(frozen=True)
class TrainerConfig:
    """What builds each worker's Trainer; the loop's own settings come with `build` (LoopConfig)."""

    banner: ClassVar[str | None] = None  # said first by a tree run that trains with something other than the loop
    backend: ClassVar[str | None] = None  # worker groups' torch.distributed backend (None: Ray Train's choice)

    def build(self, loop: LoopConfig, worker: Worker, eval_sets: dict[str, torch.Tensor]) -> Trainer:
        return Trainer(loop, worker, eval_sets)

    def record(self, event: str, **fields) -> None:
        """A scheduling event (a tree, a phase, a fit): the stand-in keeps a timeline of them."""


@dataclass
class Trainer:
    """One worker's trainer: the loop's settings (and callbacks), this process's place in its worker
    group, and the held-out sets every run evaluates on (role -> blocks)."""

    cfg: LoopConfig
    worker: Worker
    eval_sets: dict
    last_run: weakref.ref | None = field(default=None, init=False)  # the last run's optimizer, weakly

    def fit(self, specs: list[RunSpec], sources: dict) -> list[dict]:
        """Train `specs` in order on every rank of the worker group. sources[spec.dataset] is the
        stream a run trains on (raysweep.data.streams.StreamSource: each rank reads its own rows).
        Returns one result per spec (its node key, and its result, or `diverged`/`blocked`)."""
        worker, uploader = self.worker, self.worker.uploader
        results, states, diverged = [], {}, set()
        for i, spec in enumerate(specs):
            hold_if_stopping()  # no run starts once a stop signal has come (raysweep.signals)
            if self.last_run is not None and self.last_run() is not None:
                # the last run's optimizer outlived its run: a library's reference cycle holds it (the
                # first run in a process imports transformers and peft lazily inside build_model, and
                # those import frames keep the run's frames, its model and AdamW state among their
                # locals). Collected before this run builds its own; a collection costs ~0.2 s here,
                # so only then
                gc.collect()
            if spec.init_from in diverged:  # its parent diverged in this chain: nothing to start from
                results.append({"node_key": spec.node_key, "blocked": True})
                continue
            try:
                # the parent's weights are loaded where the model is built (start_run) and named
                # nowhere else, so a parent loaded for this run alone is freed once the model holds them
                result, state, points = self.run(spec, sources[spec.dataset], partial(self.parent, spec, states))
            except Diverged as e:  # deterministic: recorded as the run's outcome, not retried
                if worker.rank == 0:
                    save_diverged(spec.node_dir, spec.lr, e.step, str(e), e.points)
                diverged.add(spec.node_dir)
                results.append({"node_key": spec.node_key, "diverged": e.step})
                continue
            except Exception as e:
                if worker.rank == 0:
                    record_failure(spec, e)
                if uploader is not None:
                    uploader.wait()  # what finished before the failure is stored before the attempt ends
                raise
            result["rank"] = worker.rank
            if worker.rank == 0:
                self.store(spec, state, result, points)
            # only a parent's weights are kept, and only while a later run of the chain starts from
            # them: every run's were kept before, a copy of the model per stage-3 child (found by
            # bench/rehearsal_135m.py: the slot's memory grew with the chain, 2026-12-07)
            later = {s.init_from for s in specs[i + 1 :]}
            states = {k: v for k, v in states.items() if k in later}
            if spec.node_dir in later:
                states[spec.node_dir] = state
            del state
            results.append({"node_key": spec.node_key, **result})
        if uploader is not None:
            uploader.wait()  # every node is stored before it counts as done (a child in another slot may load it next)
        if worker.world > 1:
            torch.distributed.barrier()  # every checkpoint is on disk before the group goes on
        return results

    def run(self, spec: RunSpec, source, parent: Callable[[], dict | None] | None = None) -> tuple[dict, dict, list]:
        """Train one run on its stream from the weights `parent()` returns (None, or no `parent`: a
        fresh model); returns (result dict, final weights on CPU, metric points)."""
        cfg, worker = self.cfg, self.worker
        m, p, it, monitor = start_run(spec, parent, source, cfg, self.eval_sets, worker)
        self.last_run = weakref.ref(m.opt)
        p.t_train = time.perf_counter()
        m.model.train()
        end = min(spec.stop_at or spec.max_steps, spec.max_steps)  # a rung ends a run early, to be continued
        while p.step < end:
            t_wait = time.perf_counter()
            x = next(it)
            p.data_wait += time.perf_counter() - t_wait
            each(p.callbacks, "on_batch", spec, p.step, x)
            for g in m.opt.param_groups:
                g["lr"] = lr_at(p.step, spec.lr, spec.min_lr, spec.warmup_steps, spec.max_steps, spec.schedule)
            loss, norm = forward_backward(m.step_model, m.model, m.opt, x, worker.device, micro_batch=m.micro, precision=cfg.precision)
            for cb in p.callbacks:
                loss, norm = cb.on_gradients(spec, p.step, loss, norm)
            # The norm of the all-reduced gradient is the same on every rank, so all ranks stop
            # together (a per-rank loss test could stop one rank inside a collective the others wait in).
            if not torch.isfinite(norm):
                each(p.callbacks, "on_close", spec)
                raise Diverged(
                    f"{spec.label}: non-finite loss/gradient at step {p.step} (loss {loss.item():.4g}); "
                    f"this config diverges: lower its lr ({spec.lr:g})",
                    p.step,
                    p.points,
                )
            m.opt.step()
            p.step += 1
            p.train_loss = loss.item()
            if p.t_first is None:
                p.t_first, p.first_step = time.perf_counter(), p.step
            if p.step % 10 == 0:
                p.metrics(spec, {"train_loss": p.train_loss, "lr": m.opt.param_groups[0]["lr"]})
            after_step(spec, m, p, cfg, monitor, worker)  # evaluation, early stopping, the step's callbacks
            if p.stopped_early:
                break
            each(p.callbacks, "on_step_end", spec, p.step, worker)  # progress checkpoints among them
        result, state = finish(spec, m, p, cfg, self.eval_sets, worker)
        return result, state, p.points

    def parent(self, spec: RunSpec, states: dict) -> dict | None:
        """The weights `spec` starts from: none, its parent trained just before in this chain, or
        its parent's node loaded."""
        if spec.init_from is None:
            return None
        if spec.init_from in states:
            return states[spec.init_from]
        return load_weights(spec.init_from, self.cfg.tokenizer_id)

    def store(self, spec: RunSpec, state: dict, result: dict, points: list) -> None:
        """Rank 0 writes the run's node (and, for a rung that ended the run itself, the run's own
        node too), then drops its progress checkpoints."""
        cfg, uploader = self.cfg, self.worker.uploader
        save_node(spec, state, result, cfg.tokenizer_id, uploader, points, trained_by=cfg.trained_by)
        if spec.rung_of is not None and not spec.stops_at_rung(result["steps"], result["stopped_early"]):
            # it finished before its rung (early stopping): the run itself is done, as the grid's
            itself = spec.run_itself()
            save_node(itself, state, result, cfg.tokenizer_id, uploader, points, trained_by=cfg.trained_by)
            finish_progress(itself, uploader)
        finish_progress(spec, uploader)
