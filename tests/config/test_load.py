"""raysweep.config.load: a study file and its --set overrides read into one Study, every problem
reported at once with its key; files that cannot be a study (bad YAML, empty, missing) refused by name."""

from __future__ import annotations

import re

import pytest

from raysweep.config import StudyConfigError, load_study


def test_every_problem_is_reported_at_once_with_its_key():
    with pytest.raises(StudyConfigError) as err:
        load_study(
            None, ["pretrain.mix_fraction=[0, 1.5]", "model.preset=huge", "finetune.tokens=-1", "pretrain.bogus=1", "corpora.ft.name=nope"]
        )
    msg = str(err.value)
    assert "5 problems" in msg
    for key in ("pretrain.mix_fraction", "model.preset", "finetune.tokens", "pretrain.bogus", "corpora.ft"):
        assert key in msg
    assert "default.yaml" in msg


def test_scientific_notation_is_a_float(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("pretrain:\n  lr: 1e-3\nfinetune:\n  lr: [3e-4, 1E-3]\n")
    s = load_study(p)
    assert s.pretrain.lr == 1e-3 and s.finetune.lr == [3e-4, 1e-3]


@pytest.mark.parametrize(
    "text, match",
    [
        (b"[1, 2]", "top level must be a mapping"),
        (b"a: [", "not valid YAML"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"model:\n  preset: tiny\n  colour: red\n", r"model\.colour: unknown key"),
    ],
)
def test_bad_files(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_bytes(text)
    with pytest.raises(StudyConfigError, match=match):
        load_study(p)


@pytest.mark.parametrize("text", ["", "# only a comment\n\n", "---\n"])
def test_an_empty_or_comment_only_file_is_refused_naming_it(tmp_path, text):
    """It used to run the whole default study silently (a wrong path, an unsaved file)."""
    p = tmp_path / "empty.yaml"
    p.write_text(text)
    with pytest.raises(StudyConfigError, match=rf"(?s){re.escape(str(p))}: 1 problem.*the file is empty \(or only comments\)"):
        load_study(p)


def test_missing_file():
    with pytest.raises(StudyConfigError, match="file not found"):
        load_study("no/such/study.yaml")
