"""A failing trial loses nothing else: its siblings finish, it is reported, and a rerun trains only it."""

from mlflow.tracking import MlflowClient

from raysweep.config import load_study
from raysweep.main import run
from tests.conftest import SMOKE


def test_one_failing_subtree_leaves_the_rest_complete(ray_local, tmp_path, monkeypatch):
    study = load_study(SMOKE, [f"output_dir={tmp_path / 'study'}", "name=failing"])
    n_lr = len(study.finetune.lr)
    monkeypatch.setenv("RAYSWEEP_INJECT_FAILURE", "posttrain λ=0.5 lr=0.001")
    summary = run(study)
    assert len(summary["failures"]) == 1 and "mix=0.5/lr=0.001" in summary["failures"][0]
    assert summary["trained"] == {"pretrain": 2, "posttrain": 3, "finetune": 3 * n_lr}
    assert len(summary["rows"]) == 3 * n_lr  # every other result is complete
    client = MlflowClient(summary["tracking_uri"])
    exp = client.get_experiment_by_name(study.name)
    runs = client.search_runs([exp.experiment_id])
    failed = [r.info.run_name for r in runs if r.info.status == "FAILED"]
    assert "posttrain/mix=0.5/lr=0.001/dropout=0" in failed

    monkeypatch.delenv("RAYSWEEP_INJECT_FAILURE")
    again = run(study)
    assert again["failures"] == []
    assert again["trained"] == {"pretrain": 0, "posttrain": 1, "finetune": n_lr}  # only what failed
    assert len(again["rows"]) == 4 * n_lr
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 + 2 + 4 + 4 * n_lr and all(r.info.status == "FINISHED" for r in runs)
