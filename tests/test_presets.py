"""raysweep.presets: the preset table's parameter counts agree with the models built from it (and
with the published sizes its notes quote), each preset builds, and an unbuildable shape names the
field to change."""

from __future__ import annotations

from dataclasses import replace

import pytest

from raysweep.presets import PRESETS, estimate_parameters, resolve, shape_problems


@pytest.mark.parametrize("name", [n for n, s in PRESETS.items() if estimate_parameters(n, 512) < 20_000_000])
def test_the_estimate_is_the_built_models_parameter_count(name):
    from raysweep.train.model import build_model

    model = build_model(name, 512, 16)
    assert estimate_parameters(name, 512) == sum(p.numel() for p in model.parameters())


def test_every_preset_builds_and_the_paper_shapes_have_their_published_sizes():
    assert all(shape_problems(s) == [] for s in PRESETS.values())
    assert estimate_parameters("smollm2-135m", 49152) == pytest.approx(134.5e6, rel=0.01)  # SmolLM2-135M


def test_an_unbuildable_shape_names_the_field_and_overrides_apply():
    base = PRESETS["debug"]
    assert any(p.startswith("n_heads:") for p in shape_problems(replace(base, n_heads=3)))
    assert any(p.startswith("n_kv_heads:") for p in shape_problems(replace(base, n_heads=4, n_kv_heads=3)))
    assert shape_problems(replace(base, n_layers=0)) == ["n_layers: must be at least 1 (got 0)"]
    assert resolve("debug", {"n_layers": 3}).n_layers == 3 and resolve("debug").n_layers == base.n_layers
