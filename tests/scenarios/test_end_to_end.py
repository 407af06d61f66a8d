"""The smoke study through the real Ray Data / Train / Tune / MLflow path, then resumed.

It tracks into a real `mlflow server` on 127.0.0.1 (the job-submit test covers the default
local SQLite store), and checks what the server's REST API lists.
"""

import json
import re
import subprocess
import sys
import urllib.request
from collections import Counter

from mlflow.tracking import MlflowClient

from analysis.runs import rows_from_mlflow
from raysweep.study import run_study
from tests.helpers import headless


def _runs(uri, name):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], max_results=1000)


def by_stage_run(runs, stage):
    [run] = [r for r in runs if r.data.tags["raysweep.stage"] == stage]
    return run.info.run_id


def test_smoke_study_end_to_end_and_resume(smoke_study, smoke_out, mlflow_server, tmp_path):
    study, summary, out = smoke_study  # the whole smoke study, trained once per session (conftest.py)
    n_arms = len(study.pretrain.mix_fraction)
    n_post = n_arms * len(study.posttrain.lr) * len(study.posttrain.dropout)
    n_ft = n_post * len(study.finetune.lr)

    assert summary["failures"] == []
    assert summary["trained"] == {"pretrain": n_arms, "posttrain": n_post, "finetune": n_ft}
    assert len(summary["rows"]) == n_ft
    assert {r["method"] for r in summary["rows"]} == {"unmixed", "mixed"}
    assert "Pareto frontier in (L_ret, L_ft)" in out and "Pareto frontier in (L_pre, L_ret)" in out
    assert out.count("    verdict: ") == 2  # mixed vs unmixed in words, in each view (tests/analysis/test_verdict.py)
    assert str(summary["report"]) in out and f"browse:    {mlflow_server}/#/experiments/" in out

    runs = _runs(summary["tracking_uri"], study.name)
    assert len(runs) == 1 + n_arms + n_post + n_ft
    # MLflow's UI opens the experiment on its training runs (not the GenAI overview), and the
    # study's run says what the tree is
    experiment = MlflowClient(summary["tracking_uri"]).get_experiment_by_name(study.name)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    [study_run] = [r for r in runs if r.data.tags["raysweep.stage"] == "study"]
    assert study_run.data.tags["mlflow.note.content"] == (
        f"raysweep study 'smoke': {n_arms} pretraining arms (λ ∈ {study.pretrain.mix_fraction}) → {n_post // n_arms} stage-2 runs per arm "
        f"({n_post}) → {n_ft // n_post} fine-tuning runs per stage-2 run ({n_ft}); {n_arms + n_post + n_ft} runs nested under this one by stage."
    )
    by_id = {r.info.run_id: r for r in runs}
    stage = Counter(r.data.tags["raysweep.stage"] for r in runs)
    assert stage == {"study": 1, "pretrain": n_arms, "posttrain": n_post, "finetune": n_ft}
    parent_stage = {"pretrain": "study", "posttrain": "pretrain", "finetune": "posttrain"}
    for r in runs:
        s = r.data.tags["raysweep.stage"]
        assert r.info.status == "FINISHED", r.info.run_name
        if s == "study":
            continue
        parent = by_id[r.data.tags["mlflow.parentRunId"]]
        assert parent.data.tags["raysweep.stage"] == parent_stage[s]  # correctly nested
        # the realised make-up of the stream each run trained on
        p = r.data.params
        if s == "pretrain":
            lam = float(p["mix_fraction"])
            assert int(p["data.tokens.pre"]) == study.pretrain.tokens
            assert int(p.get("data.tokens.post", 0)) == round(lam * study.pretrain.post_tokens)
        if s == "posttrain":
            assert int(p["data.tokens.post"]) == study.pretrain.post_tokens and "data.waste_fraction" in p
        if s == "posttrain":
            assert "L_im" in r.data.metrics
        if s == "finetune":
            assert {"L_ft", "L_ret", "L_pre"} <= set(r.data.metrics)
            assert len(MlflowClient(summary["tracking_uri"]).get_metric_history(r.info.run_id, "train_loss")) > 0

    # Every stage-2 run started after its own arm's checkpoint was complete (cross-level pipelining
    # never starts a subtree early; that it starts without waiting for other arms is tests/sweep/test_queue.py's).
    arm_done = {
        float(r.data.params["mix_fraction"]): (smoke_out / "checkpoints" / "pretrain" / r.data.tags["raysweep.node_key"] / "node.json")
        .stat()
        .st_mtime
        * 1000
        for r in runs
        if r.data.tags["raysweep.stage"] == "pretrain"
    }
    client = MlflowClient(summary["tracking_uri"])
    for r in runs:
        if r.data.tags["raysweep.stage"] == "posttrain":
            # its first point from training (the driver opens every run before the tree starts, so
            # the run's start_time says nothing of when it trained; final metrics carry timestamp 0)
            first = min(m.timestamp for k in r.data.metrics for m in client.get_metric_history(r.info.run_id, k) if m.timestamp > 0)
            assert first >= arm_done[float(r.data.params["mix_fraction"])] - 1  # ms clocks

    listed = json.load(
        urllib.request.urlopen(f"{mlflow_server}/api/2.0/mlflow/artifacts/list?run_id={by_stage_run(runs, 'study')}", timeout=30)
    )
    assert {"report.html", "frontiers.txt", "tables", "data.json"} <= {f["path"] for f in listed["files"]}

    # Every finished run's losses reached MLflow: the report rebuilt from the store alone matches.
    assert rows_from_mlflow(summary["tracking_uri"], study.name) == sorted(summary["rows"], key=lambda r: r["name"])
    cli = subprocess.run(
        [sys.executable, "-m", "analysis", "--tracking-uri", summary["tracking_uri"], "--experiment", study.name, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert (tmp_path / "report.html").exists() and "Pareto frontier in (L_ret, L_ft)" in cli.stdout

    # Every final checkpoint was scored on the held-out slices; MLflow holds those losses too (the
    # rows rebuilt from it above carry them)
    assert all(len(r["slices"]) >= 2 for r in summary["rows"])
    assert "held-out slices: the verdict holds in" in out and "Held-out slices: every run scored on" in out
    scored = sorted((smoke_out / "checkpoints").glob("*/*.slices.json"))
    assert len(scored) == n_post + n_ft

    # The same command again, the slices' scores deleted (a study finished before slices existed):
    # nothing retrained, the slices scored anew from the stored weights, no duplicate runs, the same results.
    for path in scored:
        path.unlink()
    again = run_study(study)
    assert again["trained"] == {"pretrain": 0, "posttrain": 0, "finetune": 0}
    assert sorted((smoke_out / "checkpoints").glob("*/*.slices.json")) == scored
    assert len(_runs(summary["tracking_uri"], study.name)) == len(runs)
    assert sorted(again["rows"], key=lambda r: r["name"]) == sorted(summary["rows"], key=lambda r: r["name"])


def test_the_printed_mlflow_url_opens_the_study_runs(smoke_study, mlflow_server, chromium, tmp_path):
    """MLflow 3.17 opens an experiment on its GenAI overview; the summary's URL opens the runs table."""
    study, summary, out = smoke_study
    [url] = re.findall(r"browse: +(\S+) \(the study's runs", out)
    experiment = MlflowClient(summary["tracking_uri"]).get_experiment_by_name(study.name)
    assert url == f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs"
    dom = subprocess.run(
        [*headless(chromium, tmp_path / "profile", 15_000), "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.S)))
    assert "Training runs" in text and study.name in text, text[:2000]
    assert re.search(r"\b\d+ matching runs", text), text[:2000]
