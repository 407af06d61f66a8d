"""raysweep.tags: every tag raysweep writes on an MLflow run is its own name, in raysweep's own
namespace (or MLflow's, for the one MLflow reads), so no two meanings share a tag and no other
tool's tag is overwritten."""

from __future__ import annotations

from raysweep import tags


def test_every_tag_is_one_name_in_raysweeps_or_mlflows_namespace():
    names = {k: v for k, v in vars(tags).items() if k.isupper() and isinstance(v, str)}
    assert len(names) >= 15
    assert len(set(names.values())) == len(names), names  # no two constants name the same tag
    assert all(v.startswith("raysweep.") or v.startswith("mlflow.") for v in names.values()), names
    assert all(k.startswith("mlflow.") for k in tags.EXPERIMENT_TAGS)
