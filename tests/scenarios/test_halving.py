"""`posttrain.search: halving` on the reduced smoke tree (one arm, two stage-2 lrs, one stage-3 lr),
from the reference study's data and arm: the survivor's nodes are the grid's own (key and losses),
a search stopped before its end goes on without training anything twice and makes the decisions an
uninterrupted one makes, and probes stay off the frontier tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from raysweep.config import load_study
from raysweep.study import run_study
from tests.helpers import REDUCED, ROOT, SMOKE, kill_tree, node_results, with_reference_data

# two rungs (the defaults have one), so a search has a rung to resume after and one to resume in
LADDER = ["posttrain.search=halving", "posttrain.rungs=[0.1111111111111111, 0.3333333333333333, 1.0]", "posttrain.eta=3"]
# one worker runs both tests, so the search the second compares its decisions with is run once
pytestmark = pytest.mark.xdist_group("halving")


@pytest.fixture(scope="module")
def searched(reference, tmp_path_factory):
    """A halving search whose first attempt fails on its very last step, the survivor's stage-3 run
    (every decision made, none interrupted): (its overrides, output folder, first summary)."""
    out = tmp_path_factory.mktemp("halving")
    with_reference_data(reference[0], out, arm_to=out / "checkpoints")
    overrides = [f"output_dir={out}", *REDUCED, *LADDER, "retries=0"]
    os.environ["RAYSWEEP_INJECT_FAILURE"] = "finetune λ"
    try:
        first = run_study(load_study(SMOKE, overrides))
    finally:
        del os.environ["RAYSWEEP_INJECT_FAILURE"]
    return overrides, out, first


def test_a_halving_search_ends_on_the_grids_nodes_and_resumes_without_training_twice(reference, searched, tmp_path):
    ref_out = reference[0]
    overrides, out, first = searched
    study = load_study(SMOKE, overrides)
    assert len(first["failures"]) == 1 and first["trained"] == {"pretrain": 0, "posttrain": 1, "finetune": 0, "rung": 3, "probe": 3}
    log = json.loads((out / "halving.json").read_text())
    assert [(e["rung"], e["kept"]) for e in log] == [(1, True), (1, False), (2, True)]
    assert all(e["method"] == "mixed" for e in log) and log[1]["reason"]
    # the pruned configuration's rung keeps its losses and record, not its weights; the kept ones keep theirs
    rungs = [(json.loads(p.read_text())["spec"]["rung_of"]["label"], p.parent) for p in (out / "checkpoints" / "rung").glob("*/node.json")]
    pruned = [d for label, d in rungs if label.removeprefix("posttrain ") == log[1]["config"]]
    assert len(rungs) == 3 and len(pruned) == 1 and not (pruned[0] / "model.safetensors").exists()
    assert "halving pruned" in json.loads((pruned[0] / "node.json").read_text())["weights_dropped"]
    assert all((d / "model.safetensors").exists() for _, d in rungs if d not in pruned)

    second = run_study(study)
    assert second["failures"] == [] and second["trained"] == {"pretrain": 0, "posttrain": 0, "finetune": 1}  # nothing twice
    assert run_study(study)["trained"] == {"pretrain": 0, "posttrain": 0, "finetune": 0}

    # the survivor's stage-2 run (trained in three pieces) and its stage-3 run are the grid's nodes
    mine, grid = node_results(out), node_results(ref_out)
    survivors = [k for k in mine if k in grid and k not in {p.name for p in (ref_out / "checkpoints" / "pretrain").iterdir()}]
    assert len(survivors) == 2  # its stage-2 node and its one stage-3 child
    for key in survivors:
        assert mine[key]["losses"] == grid[key]["losses"] and mine[key]["steps"] == grid[key]["steps"]
    # the frontier tables hold the grid's stage-3 run for the survivor only, no probe
    assert [r["name"] for r in second["rows"]] == [
        r["name"] for r in reference[1]["rows"] if r["name"] in {x["name"] for x in second["rows"]}
    ]
    assert len(second["rows"]) == 1
    # rungs and probes are in MLflow, tagged, and left out of the runs table read back from it
    from mlflow.tracking import MlflowClient

    from analysis.runs import rows_from_mlflow
    from raysweep.tags import PROBE

    runs = MlflowClient(second["tracking_uri"]).search_runs(
        [MlflowClient(second["tracking_uri"]).get_experiment_by_name(study.name).experiment_id]
    )
    assert sorted(r.data.tags[PROBE] for r in runs if PROBE in r.data.tags) == ["rung 1"] * 4 + ["rung 2"] * 2  # 3 rungs, 3 probes
    assert [r["name"] for r in rows_from_mlflow(second["tracking_uri"], study.name)] == [r["name"] for r in second["rows"]]
    # the report says which configuration was pruned at which rung, and why
    report = (out / "report.html").read_text()
    assert "<h2>Search</h2>" in report and "pruned: " in report
    # --sync-mlflow into an empty store: the search's decisions again from the stored probes, no Ray
    empty = f"sqlite:///{tmp_path / 'resynced.db'}"
    resynced = run_study(load_study(SMOKE, [*overrides, f"tracking_uri={empty}"]), train=False)
    assert resynced["rows"] == second["rows"] and json.loads((out / "halving.json").read_text()) == log
    probes = [
        r
        for r in MlflowClient(empty).search_runs([MlflowClient(empty).get_experiment_by_name(study.name).experiment_id])
        if PROBE in r.data.tags
    ]
    assert len(probes) == 6


def test_a_sigkilled_halving_search_resumes_mid_rung_without_training_anything_twice(reference, searched, tmp_path):
    """The driver and its Ray instance SIGKILLed in the middle of the first rung (both rungs stored,
    one probe stored and the other in flight, held there by an injected delay): the same command
    again trains no stored node again, makes the uninterrupted search's decisions (same points,
    same configurations kept) and ends on the grid's nodes. (Killed once the rung's probes were all
    stored, until 2026-12-07: the same resume, with nothing of the rung left to train.)"""
    ref_out = reference[0]
    out = with_reference_data(ref_out, tmp_path / "killed", arm_to=tmp_path / "killed" / "checkpoints")
    sets = [f"output_dir={out}", *REDUCED, *LADDER]
    cmd = [sys.executable, "-m", "raysweep.main", "--config", str(SMOKE), *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # the second configuration's probe (the queue's last item of the rung) sleeps until killed
    held = {**env, "RAYSWEEP_INJECT_DELAY": "probe λ=0.5 lr=0.003@600"}
    with (tmp_path / "first.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=held, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 400
        while (
            not list((out / "checkpoints").glob("probe/*/node.json")) or "RAYSWEEP_INJECT_DELAY" not in (tmp_path / "first.log").read_text()
        ):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "the first rung never reached its second probe"
            time.sleep(0.1)
        kill_tree(proc)
    # who trained each node (a driver call's own id): a pruned rung's node.json is rewritten when its
    # weights are dropped, so its mtime is no witness
    finished = {p.parent.name: json.loads(p.read_text())["trained_by"] for p in (out / "checkpoints").glob("*/*/node.json")}
    assert len(finished) == 4  # the arm, two rungs, one probe
    assert not (out / "halving.json").exists()  # no decision made yet

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for key, trainer in finished.items():  # nothing stored before the kill is trained again
        assert json.loads(next((out / "checkpoints").glob(f"*/{key}/node.json")).read_text())["trained_by"] == trainer, key
    assert json.loads((out / "halving.json").read_text()) == json.loads((searched[1] / "halving.json").read_text())
    mine, grid = node_results(out), node_results(ref_out)
    ends = [k for k in mine if k in grid and k not in finished]  # the survivor's stage-2 and stage-3 nodes
    assert len(ends) == 2 and all(mine[k]["losses"] == grid[k]["losses"] for k in ends)
