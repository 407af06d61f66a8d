"""Runs trained back to back by one worker group: a stage-2 run, then each of its stage-3 children
starting from its weights in memory (no reload), each stored as its own node.

Every node is stored (uploads included) before `train_chain` returns, so a child trained next by
another worker group can load it. A run whose loss turns non-finite is recorded as diverged (an
outcome, not retried) and its children are skipped as blocked; any other error is recorded in the
node's failures file and raised, so the caller can give the item back for a retry.
"""

from __future__ import annotations

import torch

from raysweep.signals import hold_if_stopping
from raysweep.spec import Diverged, RunSpec
from raysweep.store.nodes import finish_progress, load_weights, record_failure, save_diverged, save_node
from raysweep.train.context import LoopConfig, Worker
from raysweep.train.loop import finish, start_run, train_steps


def train_chain(specs: list[RunSpec], sources: dict, cfg: LoopConfig, eval_sets: dict[str, torch.Tensor], worker: Worker) -> list[dict]:
    """Train `specs` in order on every rank of the worker group. sources[spec.dataset] is the stream
    the run trains on (raysweep.data.streams.StreamSource: each rank reads its own rows). Returns one
    result per spec (its node key, and its result, or `diverged`/`blocked`)."""
    results, states, diverged = [], {}, set()
    for i, spec in enumerate(specs):
        hold_if_stopping()  # no run starts once a stop signal has come (raysweep.signals)
        if spec.init_from in diverged:  # its parent diverged in this chain: nothing to start from
            results.append({"node_key": spec.node_key, "blocked": True})
            continue
        m = p = it = None  # a diverged run's model and optimizer are not held while the next one builds its own
        try:
            # the parent's weights are named nowhere here, so a parent loaded for this run alone is
            # freed once the model holds them (start_run), not kept while it trains
            m, p, it, monitor = start_run(spec, _parent(spec, states, cfg), sources[spec.dataset], cfg, eval_sets, worker)
            train_steps(spec, m, p, it, cfg, monitor, worker)
            result, state = finish(spec, m, p, cfg, eval_sets, worker)
            points = p.points
            del m, p, it  # the optimizer's state is freed before the node is written
        except Diverged as e:  # deterministic: recorded as the run's outcome, not retried
            if worker.rank == 0:
                save_diverged(spec.node_dir, spec.lr, e.step, str(e), e.points)
            diverged.add(spec.node_dir)
            results.append({"node_key": spec.node_key, "diverged": e.step})
            continue
        except Exception as e:
            if worker.rank == 0:
                record_failure(spec, e)
            if worker.uploader is not None:
                worker.uploader.wait()  # what finished before the failure is stored before the attempt ends
            raise
        result["rank"] = worker.rank
        if worker.rank == 0:
            save_node(spec, state, result, cfg.tokenizer_id, worker.uploader, points, trained_by=cfg.trained_by)
            if spec.rung_of is not None and not spec.stops_at_rung(result["steps"], result["stopped_early"]):
                # it finished before its rung (early stopping): the run itself is done, as the grid's
                itself = spec.run_itself()
                save_node(itself, state, result, cfg.tokenizer_id, worker.uploader, points, trained_by=cfg.trained_by)
                finish_progress(itself, worker.uploader)
            finish_progress(spec, worker.uploader)
        # only a parent's weights are kept, and only while a later run of the chain starts from them:
        # every run's were kept before, a copy of the model per stage-3 child (found by
        # bench/rehearsal_135m.py: the slot's memory grew with the chain, 2026-12-07)
        later = {s.init_from for s in specs[i + 1 :]}
        states = {k: v for k, v in states.items() if k in later}
        if spec.node_dir in later:
            states[spec.node_dir] = state
        del state
        results.append({"node_key": spec.node_key, **result})
    if worker.uploader is not None:
        worker.uploader.wait()  # every node is stored before it counts as done (a child in another slot may load it next)
    if worker.world > 1:
        torch.distributed.barrier()  # every checkpoint is on disk before the group goes on
    return results


def _parent(spec: RunSpec, states: dict, cfg: LoopConfig) -> dict | None:
    """The weights `spec` starts from: none, its parent trained just before in this chain, or its
    parent's node loaded."""
    if spec.init_from is None:
        return None
    if spec.init_from in states:
        return states[spec.init_from]
    return load_weights(spec.init_from, cfg.tokenizer_id)
