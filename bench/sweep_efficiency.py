"""Sweep efficiency: the share of a study's core-seconds spent inside the training loop (train steps
and held-out evaluations), the rest being Ray start-up, data preparation, trial scheduling,
TorchTrainer start-up, checkpoint I/O and MLflow. Goal (issue 8): ≥ 85%.

    python bench/sweep_efficiency.py [--config search_spaces/default.yaml] [--set key=value ...]

Runs the study from scratch in a temporary folder (nothing reused), then reads every node's
node.json: share = Σ_nodes train_seconds × CPUs of its run / (wall seconds × the cluster's CPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

GOAL = 0.85


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()

    import ray
    import torch

    from raysweep.config import load_study
    from raysweep.study import run_study

    out = Path(tempfile.mkdtemp(prefix="raysweep-sweep-eff-"))
    study = load_study(args.config, [*args.overrides, f"output_dir={out}", "checkpoint_dir=null"])
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}, python {platform.python_version()}"
    )
    print(f"study: {study.name} ({args.config or 'search_spaces/default.yaml'}), output {out}")
    t0 = time.perf_counter()
    summary = run_study(study)
    wall = time.perf_counter() - t0
    cores = ray.cluster_resources().get("CPU", os.cpu_count())

    per_stage: dict[str, list[float]] = {}
    for node_json in sorted((out / "checkpoints").glob("*/*/node.json")):
        node = json.loads(node_json.read_text())
        stage = node["spec"]["stage"]
        res = getattr(study, stage).resources
        per_stage.setdefault(stage, []).append(node["result"]["train_seconds"] * res.workers * res.cpus_per_worker)
    inside = sum(sum(v) for v in per_stage.values())
    share = inside / (wall * cores)
    print()
    print(f"wall {wall:.0f} s x {cores:g} CPUs = {wall * cores:.0f} core-s; inside the training loop {inside:.0f} core-s")
    for stage, secs in per_stage.items():
        print(f"  {stage:<10} {len(secs):>3} runs, {sum(secs):>7.0f} core-s in the loop ({sum(secs) / len(secs):.1f} per run)")
    print(f"sweep efficiency: {share:.3f} (goal ≥ {GOAL}) -> {'met' if share >= GOAL else 'MISSED'}")
    tree = summary["tree_seconds"]
    # the same share over the tree alone: what a study pays once its data is prepared and Ray is up
    # (a rerun, or a second study sharing the cache, pays only this part)
    print(
        f"  of which: outside the tree (Ray start, data, report) {wall - tree:.0f} s wall; tree {tree:.0f} s wall -> "
        f"share over the tree alone {inside / (tree * cores):.3f}"
    )
    print(f"runs: {sum(summary['trained'].values())} trained, {len(summary['failures'])} failed")


if __name__ == "__main__":
    main()
