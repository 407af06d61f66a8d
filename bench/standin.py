"""A timed stand-in for training, for the cluster simulation (bench/cluster_sim.py) and its test only.

The simulation measures the scheduler (the real plan, queue, slots, node store and MLflow) on a fake
autoscaling GPU cluster where nothing can train. In its place each run sleeps its predicted
duration, then writes a real, tiny node (node.json, metric points, a 16-byte weight file) that its
children load as they would a real one: a lost or half-written parent fails them as it would.

The bench hands it to `run_study(study, trainer=stand_in)` in place of the real trainer
(raysweep.train.trainer.TrainerConfig: the same methods; what it builds has the Trainer's `fit`). It lives here, with its bench, since
2026-12-07: nothing in the package needs it, no study file or CLI flag can select it, and a tree run
under it says so first.

Durations: `seconds[stage]` is one run of the stage at its full token budget (the bench's tokens
÷ tokens/s, times its time scale); an arm adds `seconds_per_mix × λ` (its λ·|D_post| tokens); a
stage-2 run stops early after a share of its budget drawn log-uniformly from `stop_share`, seeded by
its node key, so every attempt of a node and every rerun of the bench draws the same length. A run
killed mid-sleep starts its sleep again from zero (a real run resumes from its last progress
checkpoint, so the simulation overstates what a lost node costs).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field

from raysweep.spec import RunSpec
from raysweep.store.nodes import finish_progress, load_weights, save_node

LINE = "TIMED STAND-IN for training (bench/cluster_sim.py): every run sleeps its predicted duration and writes a tiny node"


@dataclass(frozen=True)
class StandIn:
    seconds: dict  # stage -> seconds of one run at its full budget (an arm at λ = 0)
    seconds_per_mix: float = 0.0  # an arm's extra seconds per unit of λ
    stop_share: tuple = (0.05, 0.5)  # a stage-2 run's length as a share of its budget: log-uniform in this range
    seed: int = 0
    log: str = ""  # JSON lines, one per fit and per run start and end (the bench's timeline)
    banner: str = field(default=LINE, init=False)  # what a tree run says first
    backend: str = field(default="gloo", init=False)  # the simulation's GPUs are declared, not real: its groups talk over gloo

    def build(self, loop, worker, eval_sets: dict):
        return StandInTrainer(self, loop, worker)

    def record(self, event: str, **fields) -> None:
        record(self, event, **fields)


def unit(seed: int, key: str) -> float:
    """A number in [0, 1), fixed by (seed, key)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64


def share_of_budget(s: StandIn, node_key: str) -> float:
    """How much of its token budget a stage-2 run trains before early stopping ends it."""
    lo, hi = s.stop_share
    return lo * (hi / lo) ** unit(s.seed, node_key)


def run_seconds(s: StandIn, stage: str, node_key: str, mix: float = 0.0) -> float:
    """The stand-in's duration of one run."""
    seconds = s.seconds[stage] + (s.seconds_per_mix * mix if stage == "pretrain" else 0.0)
    return seconds * share_of_budget(s, node_key) if stage == "posttrain" else seconds


def record(s: StandIn, event: str, **fields) -> None:
    """One line of the bench's timeline (appends are atomic for lines this short)."""
    if s.log:
        line = json.dumps({"t": time.time(), "event": event, "pid": os.getpid(), **fields}) + "\n"
        with open(s.log, "a") as f:
            f.write(line)


def fake_result(spec: RunSpec, seconds: float, seq_len: int) -> dict:
    """What a node's result holds, with losses fixed by its key (they mean nothing)."""
    u = unit(0, spec.node_key)
    return {
        "losses": {"pre": 3.0 + u, "post": 2.0 + u, "ft": 2.5 + u},
        "steps": spec.max_steps,
        "best_step": spec.max_steps,
        "stopped_early": spec.stage == "posttrain",
        "tokens": spec.max_steps * spec.batch_size * seq_len,
        "train_seconds": seconds,
        "tokens_per_s": 0.0,
        "steady_tokens_per_s": None,
        "trainable_parameters": 0,
        "resumed_from_step": 0,
        "data_wait_seconds": 0.0,
        "data_wait_share": 0.0,
        "standin": True,
    }


@dataclass(frozen=True)
class StandInTrainer:
    """What a worker of the simulation trains with (raysweep.train.trainer.Trainer's stand-in)."""

    s: StandIn
    cfg: object  # the loop's settings (raysweep.train.context.LoopConfig)
    worker: object

    def fit(self, specs: list[RunSpec], sources: dict) -> list[dict]:
        return train_chain(self.s, specs, self.cfg, self.worker)


def train_chain(s: StandIn, specs: list[RunSpec], cfg, worker) -> list[dict]:
    """raysweep.train.trainer.Trainer.fit's stand-in: same results, same node files."""
    import torch

    results, here = [], set()
    for spec in specs:
        if spec.init_from is not None and spec.init_from not in here and worker.rank == 0:
            load_weights(spec.init_from, cfg.tokenizer_id)  # its parent must be stored, intact
        seconds = run_seconds(s, spec.stage, spec.node_key, float(spec.meta.get("mix_fraction") or 0.0))
        if worker.rank == 0:
            record(s, "start", node_key=spec.node_key, stage=spec.stage, parent=spec.meta.get("parent"), seconds=seconds)
        time.sleep(seconds)
        result = {**fake_result(spec, seconds, cfg.seq_len), "rank": worker.rank}
        if worker.rank == 0:
            save_node(spec, {"w": torch.zeros(4)}, result, cfg.tokenizer_id, worker.uploader, [], trained_by=cfg.trained_by)
            finish_progress(spec, worker.uploader)
            record(s, "done", node_key=spec.node_key, stage=spec.stage)
        here.add(spec.node_dir)
        results.append({"node_key": spec.node_key, **result})
    if worker.uploader is not None:
        worker.uploader.wait()
    if worker.world > 1:
        torch.distributed.barrier()
    return results
