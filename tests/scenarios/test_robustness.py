"""The robustness section end to end: the finished smoke study run again with a variant trains only
the nodes the variant's change moves, tracks the variant apart, and ends with the robustness line."""

import shutil

from analysis.runs import rows_from_mlflow
from raysweep.config import load_study
from raysweep.study import run_study
from tests.helpers import SMOKE


def test_a_stage_2_variant_shares_the_arms_and_leaves_the_study_s_runs_alone(smoke_study, tmp_path, capsys):
    study, summary, _ = smoke_study
    out = tmp_path / "study"
    for part in ("cache", "checkpoints"):  # the finished study, copied: nothing of it is trained again
        shutil.copytree(study.out / part, out / part)
    robust = load_study(SMOKE, [f"output_dir={out}", "robustness=[{early_stop_min_delta: 0.01}]"])
    result = run_study(robust)
    printed = capsys.readouterr().out

    assert result["trained"] == {"pretrain": 0, "posttrain": 0, "finetune": 0}  # the study's own tree: all stored
    assert (
        "variant early_stop_min_delta=0.01: 12 fine-tuned checkpoints, trained now {'pretrain': 0, 'posttrain': 4, 'finetune': 12}"
        in printed
    )
    assert "robustness: the verdict holds under " in printed and "of 1 variants and in " in printed
    assert "<h2>Robustness</h2>" in result["report"].read_text()
    # the study's experiment holds the study's runs alone; the variant has its own
    assert sorted(rows_from_mlflow(result["tracking_uri"], robust.name), key=lambda r: r["name"]) == sorted(
        result["rows"], key=lambda r: r["name"]
    )
    variant_rows = rows_from_mlflow(result["tracking_uri"], "smoke.early_stop_min_delta-0.01")
    assert len(variant_rows) == len(result["rows"]) and all(len(r["slices"]) >= 2 for r in variant_rows)
    # the arms are the study's own: the same node under both
    assert len(list((out / "checkpoints" / "pretrain").glob("*/node.json"))) == 2
    # the analysis CLI reads the variants back from the store (every seed tracked into them)
    from analysis.__main__ import main as analysis_main

    assert (
        analysis_main(["--tracking-uri", result["tracking_uri"], "--experiment", robust.name, "--out", str(tmp_path), "--robustness"]) == 0
    )
    said = capsys.readouterr().out
    assert "early_stop_min_delta=0.01" in said and "robustness: the verdict holds under " in said
    # --sync-mlflow into an empty store rebuilds the variant's experiment too, training nothing
    empty = f"sqlite:///{tmp_path / 'resynced.db'}"
    resynced = run_study(
        load_study(SMOKE, [f"output_dir={out}", "robustness=[{early_stop_min_delta: 0.01}]", f"tracking_uri={empty}"]), train=False
    )
    assert resynced["trained"] == {"pretrain": 0, "posttrain": 0, "finetune": 0}
    assert sorted(r["name"] for r in rows_from_mlflow(empty, "smoke.early_stop_min_delta-0.01")) == sorted(r["name"] for r in variant_rows)
