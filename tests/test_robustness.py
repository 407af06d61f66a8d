"""raysweep.robustness: a variant is the study under one changed convention, tracked apart, sharing
the study's folders, with a search log of its own (the study's end-to-end run with variants is
tests/scenarios/test_robustness.py)."""

from __future__ import annotations

import pickle

from raysweep.config import load_study
from raysweep.robustness import variant_study
from tests.helpers import SMOKE


def test_a_variant_shares_the_studys_folders_but_writes_its_search_log_apart(tmp_path):
    study = load_study(SMOKE, [f"output_dir={tmp_path / 'out'}", "posttrain.search=halving"])
    variant = variant_study(study, {"schedule": "wsd"})
    assert variant.name == "smoke.schedule-wsd" and variant.conventions.schedule == "wsd"
    assert variant.out == study.out and variant.checkpoints == study.checkpoints  # nodes and data shared
    assert study.own_file("halving.json") == study.out / "halving.json"
    assert variant.own_file("halving.json") == study.out / "robustness" / "schedule-wsd" / "halving.json"
    assert pickle.loads(pickle.dumps(variant)).own_file("search.json") == variant.own_file("search.json")
    # the marker is no setting: the variant's hash is its conventions', as before
    same = study.model_copy(update={"name": variant.name, "conventions": variant.conventions, "robustness": []})
    assert variant.content_hash() == same.content_hash()


def test_sync_skips_a_data_variant_that_never_ran_and_training_refuses_it(tmp_path, capsys):
    """--sync-mlflow (no trainer) rebuilds each variant from the data cache: one whose data was never
    made (it never ran) is said and skipped, the rest of the sync goes on; when training, the same
    error stops the study as any data error does."""
    import pytest

    from raysweep.config import StudyInputError
    from raysweep.robustness import run_variants

    study = load_study(SMOKE, [f"output_dir={tmp_path / 'out'}", "robustness=[{packing: seq}]"])

    def not_cached(v):
        raise StudyInputError("--sync-mlflow", ["the data cache lacks it"])

    def no_tracking(v):
        raise AssertionError("a skipped variant opens no MLflow run")

    assert run_variants(study, None, None, None, no_tracking, not_cached) == []
    assert "variant packing=seq: not synced, it has not run yet" in capsys.readouterr().out
    with pytest.raises(StudyInputError):
        run_variants(study, None, None, object(), no_tracking, not_cached)
