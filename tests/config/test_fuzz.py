"""Hostile study files: whatever the YAML (wrong types, unknown keys, out-of-range and huge numbers,
empty files, non-UTF-8 bytes), loading either succeeds or raises the project's own StudyConfigError,
never a traceback from deep inside a library."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raysweep.config import Study, StudyConfigError, load_study
from tests.helpers import ROOT

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


def _laughs(depth: int, width: int, key: str) -> str:
    """YAML whose aliases expand to width**depth values under `key` (a few hundred bytes)."""
    lines = [f"  a0: &a0 [{', '.join(['1.0e-3'] * width)}]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth)]
    stage, field = key.split(".")
    return "anchors:\n" + "\n".join(lines) + f"\n{stage}:\n  {field}: *a{depth - 1}\n"


HOSTILE = {
    "aliases nested nine deep": (_laughs(9, 10, "posttrain.lr"), "posttrain.lr: more than 100,000 values"),
    "a million learning rates": ("posttrain:\n  lr: [" + ", ".join(["1.0e-3"] * 1_000_000) + "]\n", "at most 1,048,576"),
    "20,000 learning rates": ("finetune:\n  lr: [" + ", ".join(f"{i}.0e-9" for i in range(1, 20_001)) + "]\n", "finetune.lr: 20,000 items"),
    "80,000 runs": ("posttrain:\n  lr: [" + ", ".join(f"{i}.0e-8" for i in range(1, 10_001)) + "]\n", "max_runs: the tree has 80,002 runs"),
    "a positional field in output_dir": ("output_dir: runs/{0}\n", "output_dir: only {name} is filled in (found {0})"),
    "an attribute in output_dir": ("output_dir: runs/{name.__class__}\n", "output_dir: only {name} is filled in"),
    "a 300-character name": ("name: " + "a" * 300 + "\n", "name: String should have at most 100 characters"),
    "an open brace in checkpoint_dir": ("checkpoint_dir: store/{\n", "checkpoint_dir: not a valid folder template"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_study_files_are_refused_quickly_in_bounded_memory(tmp_path, case):
    """Exit 2 and the key named, under a 1 GB address-space limit and a 10 s timeout (issue 18)."""
    text, said = HOSTILE[case]
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    limit = "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
    run = "sys.argv = ['raysweep.main', '--dry-run', '--config', sys.argv[1]]; runpy.run_module('raysweep.main', run_name='__main__')"
    proc = subprocess.run([sys.executable, "-c", limit + run, str(path)], capture_output=True, text=True, timeout=10, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert said in proc.stderr, proc.stderr[-2000:]
