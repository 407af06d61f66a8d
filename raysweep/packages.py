"""The packages a study needs, checked before any compute.

A study should never learn of a missing package inside a Ray worker, after its pretraining arms
have been paid for (a LoRA study without peft used to fail exactly there). Each entry names the
study key that asks for a package, so the error says what to install or what to change. Modules
are looked up with `importlib.util.find_spec`, which imports nothing (so this stays cheap and
keeps `--dry-run` free of torch and Ray).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from raysweep.config import Study, StudyInputError


@dataclass(frozen=True)
class Need:
    key: str  # the study key that asks for it, e.g. "posttrain.tuning"
    why: str  # what the key asks for, e.g. "lora"
    module: str  # the import name
    distribution: str  # what to pip install


def needs(study: Study) -> list[Need]:
    """Every package the study's settings need, beyond what every study needs."""
    if study.model.kind == "linear":
        return []  # numpy only (and MLflow, which every study uses)
    out = [
        Need("model.kind", "lm", m, d)
        for m, d in (
            ("torch", "torch"),
            ("transformers", "transformers"),
            ("tokenizers", "tokenizers"),
            ("safetensors", "safetensors"),
            ("ray", "ray[default,tune,train,data]"),
        )
    ]
    if "lora" in study.posttrain.tuning:
        out.append(Need("posttrain.tuning", "lora", "peft", "peft"))
    if study.posttrain.search == "optuna":
        out.append(Need("posttrain.search", "optuna", "optuna", "optuna"))
    for role in ("pre", "post", "ft"):
        corpus = getattr(study.corpora, role)
        if corpus.source == "hub":  # streamed through datasets, which talks to the hub through huggingface_hub
            out += [
                Need(f"corpora.{role}.source", "hub", "datasets", "datasets"),
                Need(f"corpora.{role}.source", "hub", "huggingface_hub", "huggingface_hub"),
            ]
        elif corpus.source == "local" and any((Path(corpus.path).expanduser() / f).exists() for f in ("dataset_dict.json", "state.json")):
            out.append(Need(f"corpora.{role}.path", "a datasets save_to_disk folder", "datasets", "datasets"))
    if study.tokenizer.pretrained:
        out.append(Need("tokenizer.pretrained", study.tokenizer.pretrained, "transformers", "transformers"))
    return out


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-installed package
        return False


def missing(study: Study) -> list[str]:
    """One line per missing package: the key that needs it and the command that installs it."""
    lines, seen = [], set()
    for need in needs(study):
        if (need.key, need.module) in seen or installed(need.module):
            continue
        seen.add((need.key, need.module))
        lines.append(
            f"{need.key}: {need.why!r} needs the package {need.module!r}, which is not installed; "
            f"pip install '{need.distribution}' (or change {need.key})"
        )
    return lines


def check(study: Study) -> None:
    """Raise StudyInputError listing every missing package (before Ray starts)."""
    problems = missing(study)
    if problems:
        raise StudyInputError("packages", problems)
