"""The linear theory backend's tree (raysweep/sweep/linear.py): the theorems' inequalities measured
on trained networks run through the study tree (search_spaces/theory.yaml), resume, divergence
(the backend's math: tests/train/test_theory.py)."""

from __future__ import annotations

import json

import pytest

from raysweep.config import load_study
from raysweep.main import main


def _run(tmp_path, *overrides: str) -> dict:
    out = tmp_path / "study"
    assert main(["--config", "search_spaces/theory.yaml", "--set", f"output_dir={out}", *[a for o in overrides for a in ("--set", o)]]) == 0
    return json.loads((out / "theory.json").read_text())


def test_theorems_hold_on_the_trained_linear_networks(tmp_path, capsys):
    """Measured on trained networks (search_spaces/theory.yaml, β = 1.5):
    5.1 stage 1 learns the specialised features only with mixing;
    5.2 after stage 2, mixed and unmixed look the same on D_post (L_im ≈ 0 for both);
    5.3 after stage 3, D_post's loss rose for the unmixed network and stayed ≈ 0 for the mixed ones."""
    s = _run(tmp_path)
    beta = load_study("search_spaces/theory.yaml").theory.gains.specialised
    arms = {a["mix_fraction"]: a for a in s["arms"]}
    assert abs(arms[0.0]["gains"]["specialised"]) < 0.05 * beta  # 5.1: not learned unmixed
    for lam, arm in arms.items():
        if lam > 0:
            assert arm["gains"]["specialised"] == pytest.approx(beta, rel=0.05)  # 5.1: learned with mixing
    leaves = s["leaves"]
    assert len(leaves) == 8
    assert all(r["L_im"] < 1e-6 for r in leaves)  # 5.2
    for ft_lr in {r["finetune_lr"] for r in leaves}:
        unmixed = [r["delta"] for r in leaves if r["finetune_lr"] == ft_lr and r["mix_fraction"] == 0]
        mixed = [r["delta"] for r in leaves if r["finetune_lr"] == ft_lr and r["mix_fraction"] > 0]
        assert min(unmixed) > 0.5  # 5.3: Δ_unmixed > 0
        assert max(mixed) < 0.02 * min(unmixed)  # 5.3: Δ_mixed ≈ 0 < Δ_unmixed
        assert all(r["L_ft"] < 1e-6 for r in leaves)  # fine-tuning itself succeeded for every network
    assert "forgetting Δ" in capsys.readouterr().out


def test_running_the_theory_study_again_trains_nothing_and_keeps_its_mlflow_runs(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    first = _run(tmp_path)
    capsys.readouterr()
    second = _run(tmp_path)
    assert "trained now: {'pretrain': 0, 'posttrain': 0, 'finetune': 0}" in capsys.readouterr().out
    assert second == first
    client = MlflowClient(f"sqlite:///{tmp_path / 'study' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("theory")
    runs = client.search_runs([exp.experiment_id])
    nodes = [r for r in runs if r.data.tags.get("raysweep.stage") != "study"]
    assert len(nodes) == 4 + 4 + 8 and all(r.info.status == "FINISHED" for r in nodes)
    leaf = next(r for r in nodes if r.data.tags["raysweep.stage"] == "finetune")
    assert {"L_ft", "L_ret", "L_pre", "delta", "sv.specialised"} <= set(leaf.data.metrics)


def test_without_co_occurrence_history_is_forgotten(tmp_path):
    """The control docs/results.md reports: with ρ < 1 and stage 2 run to convergence, D_post's optimum
    is unique, so mixed and unmixed networks leave stage 2 alike and forget alike."""
    s = _run(tmp_path, "theory.co_occurrence=0.5", "theory.steps={pretrain: 3000, posttrain: 20000, finetune: 3000}")
    deltas = {r["mix_fraction"]: r["delta"] for r in s["leaves"] if r["finetune_lr"] == 0.05}
    assert deltas[0.0] > 0.5
    for lam, d in deltas.items():
        assert d == pytest.approx(deltas[0.0], rel=0.02), lam


def test_linear_kind_rejects_axes_it_does_not_have():
    from raysweep.config import StudyConfigError

    with pytest.raises(StudyConfigError, match="posttrain.dropout"):
        load_study("search_spaces/theory.yaml", ["posttrain.dropout=[0.0, 0.1]"])


def test_a_diverging_linear_run_is_recorded_as_diverged_and_blocks_its_children(tmp_path, capsys):
    """As for the language models: a non-finite loss is an outcome (recorded, never retried), the
    runs below it are blocked, the study ends normally and its summary lists it."""
    from mlflow.tracking import MlflowClient

    s = _run(tmp_path, "pretrain.mix_fraction=[0.0, 0.5]", "posttrain.lr=[0.05, 5.0]", "finetune.lr=[0.05]")
    out = capsys.readouterr().out
    assert "2 diverged (a non-finite loss is an outcome" in out and "posttrain/mix=0/lr=5/dropout=0: diverged at step" in out
    assert len(s["leaves"]) == 2  # the two lr=0.05 branches; the lr=5 ones have no leaf
    diverged = list((tmp_path / "study" / "checkpoints" / "linear" / "posttrain").glob("*.diverged.json"))
    assert len(diverged) == 2 and all(json.loads(p.read_text())["lr"] == 5.0 for p in diverged)
    client = MlflowClient(f"sqlite:///{tmp_path / 'study' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("theory").experiment_id])
    outcome = {r.info.run_name: (r.info.status, r.data.tags.get("raysweep.outcome")) for r in runs}
    assert outcome["posttrain/mix=0/lr=5/dropout=0"] == ("FAILED", "diverged")
    assert outcome["finetune/mix=0/lr=5/dropout=0/ft_lr=0.05"] == ("FAILED", "blocked")
    assert outcome["finetune/mix=0/lr=0.05/dropout=0/ft_lr=0.05"] == ("FINISHED", None)
    _run(tmp_path, "pretrain.mix_fraction=[0.0, 0.5]", "posttrain.lr=[0.05, 5.0]", "finetune.lr=[0.05]")
    assert "trained now: {'pretrain': 0, 'posttrain': 0, 'finetune': 0}" in capsys.readouterr().out  # diverged: not retried
