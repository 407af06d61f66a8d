"""`posttrain.search: halving` on the reduced smoke tree (one arm, two stage-2 lrs, one stage-3 lr),
from the reference study's data and arm: the survivor's nodes are the grid's own (key and losses),
a search stopped before its end goes on without training anything twice, and probes stay off the
frontier tables."""

from __future__ import annotations

import json

from raysweep.config import load_study
from raysweep.study import run_study
from tests.helpers import REDUCED, SMOKE, node_results, with_reference_data


def test_a_halving_search_ends_on_the_grids_nodes_and_resumes_without_training_twice(reference, tmp_path, monkeypatch):
    ref_out = reference[0]
    out = with_reference_data(ref_out, tmp_path / "halving", arm_to=tmp_path / "halving" / "checkpoints")
    study = load_study(SMOKE, [f"output_dir={out}", *REDUCED, "posttrain.search=halving", "retries=0"])

    # the first attempt fails on its last step, the survivor's stage-3 run
    monkeypatch.setenv("RAYSWEEP_INJECT_FAILURE", "finetune λ")
    first = run_study(study)
    assert len(first["failures"]) == 1 and first["trained"] == {"pretrain": 0, "posttrain": 1, "finetune": 0, "rung": 3, "probe": 3}
    log = json.loads((out / "halving.json").read_text())
    assert [(e["rung"], e["kept"]) for e in log] == [(1, True), (1, False), (2, True)]
    assert all(e["method"] == "mixed" for e in log) and log[1]["reason"]

    monkeypatch.delenv("RAYSWEEP_INJECT_FAILURE")
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
