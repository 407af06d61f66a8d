"""Hostile study files: whatever the YAML (wrong types, unknown keys, out-of-range and huge numbers,
empty files, non-UTF-8 bytes), loading either succeeds or raises the project's own StudyConfigError,
never a traceback from deep inside a library."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raysweep.config import Study, StudyConfigError, load_study

KEYS = [
    "name",
    "seed",
    "output_dir",
    "model",
    "preset",
    "seq_len",
    "tokenizer",
    "vocab_size",
    "pretrained",
    "corpora",
    "pre",
    "post",
    "ft",
    "source",
    "path",
    "dataset",
    "template",
    "pretrain",
    "posttrain",
    "finetune",
    "mix_fraction",
    "lr",
    "tokens",
    "batch_size",
    "dropout",
    "replay",
    "tuning",
    "mode",
    "resources",
    "workers",
    "retries",
    "lora_targets",
    "nonsense",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["hub", "local", "synthetic", "lora", "compute_matched", "tiny", "{x}"]),
)
values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)), max_leaves=20
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


def _load(tmp_path, blob: bytes):
    path = tmp_path / "study.yaml"
    path.write_bytes(blob)
    try:
        study = load_study(path)
    except StudyConfigError as e:
        assert str(e).startswith(str(path)) and e.problems  # names the file and at least one problem
        return None
    assert isinstance(study, Study)
    return study


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents)
def test_any_yaml_mapping_loads_or_raises_a_config_error(tmp_path, doc):
    _load(tmp_path, yaml.safe_dump(doc, allow_unicode=True).encode())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_any_bytes_load_or_raise_a_config_error(tmp_path, blob):
    _load(tmp_path, blob)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["pretrain", "posttrain", "finetune"]),
    st.sampled_from(["lr", "tokens", "batch_size", "eval_every", "warmup_steps"]),
    values,
)
def test_any_value_for_a_real_key_loads_or_names_that_key(tmp_path, stage, key, value):
    blob = yaml.safe_dump({stage: {key: value}}, allow_unicode=True).encode()
    path = tmp_path / "s.yaml"
    path.write_bytes(blob)
    try:
        load_study(path)
    except StudyConfigError as e:
        assert any(p.startswith(f"{stage}.") or stage in p for p in e.problems), e.problems
