"""A study's packages are checked before any compute, with the key and the package named."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysweep import packages
from raysweep.config import StudyConfigError, load_study
from raysweep.main import main

ROOT = Path(__file__).resolve().parent.parent
STUDIES = sorted((ROOT / "search_spaces").rglob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: str(p.relative_to(ROOT / "search_spaces")))
def test_every_shipped_study_finds_its_packages_here(path):
    """A fresh install of pyproject.toml has everything every shipped study needs (and the table
    names real modules: a misspelt one would show up as missing here)."""
    assert packages.missing(load_study(path)) == []


def _without(monkeypatch, *modules: str) -> None:
    real = packages.installed
    monkeypatch.setattr(packages, "installed", lambda m: m not in modules and real(m))


def test_lora_without_peft_fails_before_compute_naming_key_and_package(monkeypatch, tmp_path, capsys):
    _without(monkeypatch, "peft")
    config = ROOT / "search_spaces" / "twins" / "lora.yaml"
    assert main(["--config", str(config), "--set", f"output_dir={tmp_path}/out"]) == 2
    err = capsys.readouterr().err
    assert "posttrain.tuning: 'lora' needs the package 'peft'" in err and "pip install 'peft'" in err
    assert not (tmp_path / "out").exists(), "nothing may be computed or written before the check"


def test_hub_corpus_without_datasets_names_the_corpus_key(monkeypatch):
    _without(monkeypatch, "datasets")
    study = load_study(ROOT / "search_spaces" / "paper-135m-frontier.yaml")
    with pytest.raises(StudyConfigError, match=r"corpora\.pre\.source: 'hub' needs the package 'datasets'"):
        packages.check(study)


def test_a_study_that_needs_nothing_optional_passes_without_it(monkeypatch):
    _without(monkeypatch, "peft", "optuna", "datasets")
    packages.check(load_study(ROOT / "search_spaces" / "smoke.yaml"))


def test_dry_run_says_what_is_missing_but_still_plans(monkeypatch, capsys):
    _without(monkeypatch, "peft")
    assert main(["--config", str(ROOT / "search_spaces" / "twins" / "lora.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "level 2" in out and "not installed here: posttrain.tuning" in out
