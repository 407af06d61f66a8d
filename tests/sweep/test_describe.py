"""raysweep.sweep.describe: what --dry-run prints, from the config alone: every study file in
search_spaces/ dry-runs, and a custom shape is shown with its parameter count."""

from __future__ import annotations

import pytest

from raysweep.config import Study, load_study
from raysweep.sweep.describe import describe_tree
from tests.helpers import ROOT

STUDIES = sorted((ROOT / "search_spaces").rglob("*.yaml"))  # the CPU twins in twins/ too


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: str(p.relative_to(ROOT / "search_spaces")))
def test_every_study_file_loads_and_dry_runs(path):
    study = load_study(path)
    text = describe_tree(study)
    assert study.name in text and ("FLOPs" in text or "linear network" in text)


def test_a_custom_shape_is_shown_by_the_dry_run_with_its_parameter_count():
    from raysweep.presets import estimate_parameters

    study = load_study(None, ["model.hidden=96", "model.n_heads=6", "model.n_kv_heads=3", "model.mlp_hidden=512"])
    text = describe_tree(study)
    n = estimate_parameters(study.model.shape, study.tokenizer.vocab_size)
    assert f"model tiny (hidden 96, n_heads 6, n_kv_heads 3, mlp_hidden 512) ≈{n / 1e6:.2f}M params" in text
    assert "  model    4 layers, hidden 96, 6 heads / 3 KV, MLP 512, tied, vocabulary 2,048" in text
    assert study.content_hash() != Study().content_hash()
