"""The cluster simulation (bench/cluster_sim.py): its smallest case, the paper tree's shape (two arms
of 8 GPUs, stage-2 and stage-3 runs of one GPU) on a fake autoscaling cluster with a worker node
SIGKILLed mid-run, trains every node exactly once and loses none; and its figures, on schedules
whose figures are known."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

# one xdist worker runs both Ray-cluster files, one after the other: each starts a head on 127.0.0.2
pytestmark = pytest.mark.xdist_group("ray-cluster")


def test_the_smallest_simulation_with_a_node_removed_trains_every_node_once(tmp_path):
    out = tmp_path / "figures.json"
    cmd = [sys.executable, "bench/cluster_sim.py", "--smallest", "--only-removal", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "TIMED STAND-IN" in proc.stdout and "makespan / lower bound:" in proc.stdout
    [f] = json.loads(out.read_text())
    assert f["removal"] is not None, "no worker node was removed"
    assert (f["nodes_done"], f["trained_twice"], f["lost"], f["failures"]) == (6, 0, 0, 0)
    # the node was removed while a stage-2 run was in flight on it (an event, not a sleep): that run was attempted again
    assert f["removed_run_starts"] >= 2 and f["attempts"] > f["nodes_done"]


def _timeline(posttrain_start: float, finetune_done: list[float]):
    from bench.cluster_sim import Timeline

    tl = Timeline(t0=0.0, gpus=[(0.0, 8.0)])
    tl.runs = {
        "arm": {"stage": "pretrain", "parent": None, "seconds": 10.0, "starts": [0.0], "done": [10.0], "pids": [1]},
        "post": {
            "stage": "posttrain",
            "parent": "arm",
            "seconds": 5.0,
            "starts": [posttrain_start],
            "done": [posttrain_start + 5],
            "pids": [2],
        },
        "ft": {"stage": "finetune", "parent": "post", "seconds": 5.0, "starts": [posttrain_start + 5], "done": finetune_done, "pids": [2]},
    }
    return tl


GPUS = {"pretrain": 8, "posttrain": 1, "finetune": 1}


def test_an_ideal_schedule_meets_its_bound_and_keeps_its_gpus_busy():
    from bench.cluster_sim import figures

    f = figures(_timeline(10.0, [20.0]), GPUS, peak_gpus=8, planned_nodes=3)
    assert f["critical_path"] == 20.0 and f["work_gpu_s"] == 90.0 and f["bound"] == 20.0
    assert abs(f["ratio"] - 1.0) < 1e-9
    assert abs(f["busy_share"] - 1.0) < 0.02  # 80 + 10 GPU-s busy of 80 + 10 available
    assert abs(f["paid_share"] - 90 / 160) < 0.02
    assert (f["trained_twice"], f["lost"]) == (0, 0)


def test_a_ready_item_left_waiting_counts_against_the_busy_share():
    from bench.cluster_sim import figures

    f = figures(_timeline(12.0, [22.0, 23.0]), GPUS, peak_gpus=8, planned_nodes=4)
    assert abs(f["ratio"] - 23.0 / 20.0) < 1e-9  # the last end counts: a node stored twice, the second at 23
    assert abs(f["busy_share"] - 90 / 92) < 0.02  # 2 s with the subtree ready and no GPU on it
    assert (f["trained_twice"], f["lost"]) == (1, 1)  # 4 planned, 3 stored
