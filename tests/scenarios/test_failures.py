"""A failing run loses nothing else: it is retried, then marked failed; its siblings finish, the runs
that shared its fit and finished before it keep their results, it is reported, and a rerun trains only it."""

import json

from mlflow.tracking import MlflowClient

from raysweep.config import load_study
from raysweep.study import run_study
from tests.helpers import REDUCED, SMOKE, duplicate_points, with_reference_data


def test_one_failing_subtree_leaves_the_rest_complete(ray_local, reference, tmp_path, monkeypatch):
    out = with_reference_data(reference[0], tmp_path / "study")
    study = load_study(SMOKE, [f"output_dir={out}", "name=failing", "retries=1", *REDUCED, "finetune.lr=[1e-3, 3e-3]"])
    n_lr = len(study.finetune.lr)
    # the last stage-3 run of one subtree fails, after its stage-2 parent and its sibling finished in the same fit
    monkeypatch.setenv("RAYSWEEP_INJECT_FAILURE", "λ=0.5 lr=0.001 drop=0 ft_lr=0.003")
    summary = run_study(study)
    assert len(summary["failures"]) == 1 and "mix=0.5/lr=0.001" in summary["failures"][0]
    assert summary["trained"] == {"pretrain": 1, "posttrain": 2, "finetune": 2 * n_lr - 1}
    assert len(summary["rows"]) == 2 * n_lr - 1  # every other result is complete
    [log] = list((out / "checkpoints" / "finetune").glob("*.failures.jsonl"))
    attempts = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(attempts) == 2 and all("failure injected" in a["error"] for a in attempts)  # tried, retried once, then failed
    client = MlflowClient(summary["tracking_uri"])
    exp = client.get_experiment_by_name(study.name)
    runs = client.search_runs([exp.experiment_id])
    failed = [r.info.run_name for r in runs if r.info.status == "FAILED"]
    assert sorted(failed) == ["failing", "finetune/mix=0.5/lr=0.001/dropout=0/ft_lr=0.003"]  # the run, and the study
    assert "Failed runs (1)" in summary["report"].read_text() and "mix=0.5/lr=0.001" in summary["report"].read_text()
    parent = next(r for r in runs if r.info.run_name == "posttrain/mix=0.5/lr=0.001/dropout=0")
    assert parent.info.status == "FINISHED" and "L_im" in parent.data.metrics

    monkeypatch.delenv("RAYSWEEP_INJECT_FAILURE")
    again = run_study(study)
    assert again["failures"] == []
    assert again["trained"] == {"pretrain": 0, "posttrain": 0, "finetune": 1}  # only what failed
    assert len(again["rows"]) == 2 * n_lr
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 + 1 + 2 + 2 * n_lr and all(r.info.status == "FINISHED" for r in runs)
    assert duplicate_points(summary["tracking_uri"], study.name) == []  # the rerun's summary is its own point, not a second value
    [study_run] = [r for r in runs if r.info.run_name == "failing"]
    assert [(m.step, m.value) for m in client.get_metric_history(study_run.info.run_id, "failures")] == [(0, 1.0), (1, 0.0)]


def test_an_error_after_tracking_opens_leaves_the_study_run_failed_with_its_reason(ray_local, reference, tmp_path):
    """A budget beyond the corpus is found once the corpora are read, after the study's MLflow run
    was opened: the error reaches the caller as before, and the run is FAILED with the reason as
    its tag, never left RUNNING (issue 45)."""
    import pytest

    from raysweep.config import StudyConfigError
    from raysweep.tags import FAILURE, OUTCOME

    out = with_reference_data(reference[0], tmp_path / "study")
    study = load_study(SMOKE, [f"output_dir={out}", "name=too-big", *REDUCED, "finetune.tokens=10000000"])
    with pytest.raises(StudyConfigError, match=r"finetune\.tokens: 10,000,000 tokens asked") as raised:
        run_study(study)
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("too-big").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags[OUTCOME] == "failed"
    assert run.data.tags[FAILURE] == str(raised.value)
