"""The corpora section: where D_pre, D_post and D_ft come from (built-in generators, the hub, local
files) and how a record becomes one text."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from raysweep.config.base import _Strict

# The built-in offline corpora (raysweep/data/corpora/synthetic.py generates each; a test keeps the two in step).
SYNTHETIC_CORPORA = ("general", "notation", "chem")

# Instruction data -> one text per record (corpora.<role>.template). Placeholders are record fields.
TEMPLATES = {
    "flan": "{inputs}\n\n{targets}",  # Flan Collection submixes (inputs, targets)
    "alpaca": "{instruction}\n\n{input}\n\n{output}",  # instruction, input, output
    "question-answer": "Question: {question}\nAnswer: {answer}",
}

# Which CorpusConfig fields each source reads; any other field set for it is an error.
_SOURCE_FIELDS = {
    "synthetic": {"name", "train_docs", "heldout_docs"},
    "hub": {
        "name",
        "dataset",
        "subset",
        "revision",
        "split",
        "heldout_split",
        "heldout_docs",
        "heldout_fraction",
        "text_field",
        "template",
        "train_docs",
    },
    "local": {
        "name",
        "path",
        "split",
        "heldout_split",
        "heldout_path",
        "heldout_docs",
        "heldout_fraction",
        "text_field",
        "template",
        "train_docs",
    },
}


class CorpusConfig(_Strict):
    """One corpus: built-in offline generator, Hugging Face dataset (streamed), or local files."""

    source: Literal["synthetic", "hub", "local"] = Field(
        "synthetic", description="synthetic (built-in, offline) | hub (Hugging Face, streamed) | local (files)"
    )
    name: str | None = Field(None, description="synthetic: the generator (general, notation, chem); others: a label for logs and caches")
    train_docs: int | None = Field(
        None,
        gt=0,
        le=1_000_000_000,
        description="synthetic: documents generated (default 6000); hub/local: most documents read (default: as many as the token budgets need)",
    )
    heldout_docs: int = Field(
        300, gt=0, le=10_000_000, description="documents kept out of every training stream and used for the held-out losses"
    )
    dataset: str | None = Field(None, description="hub: dataset id, e.g. allenai/c4 (a local folder laid out like a hub repo also works)")
    subset: str | None = Field(None, description="hub: dataset config name, e.g. en for allenai/c4")
    revision: str | None = Field(None, description="hub: git revision (tag, branch or commit) to pin the data to")
    path: str | None = Field(
        None, description="local: a .jsonl/.json(.gz), .parquet or .txt file, a folder of them, or a datasets save_to_disk folder"
    )
    split: str = Field("train", description="hub / save_to_disk: the split training documents come from")
    heldout_split: str | None = Field(
        None, description="hub / save_to_disk: a split to hold out as given (e.g. validation); none: carve one"
    )
    heldout_path: str | None = Field(None, description="local: a file or folder of held-out documents; none: carve them from path")
    heldout_fraction: float = Field(
        0.02, gt=0, lt=1, description="when carving: the share of documents (chosen by a hash of their text) that are held out"
    )
    text_field: str = Field("text", description="the record field holding the document text")
    template: str | None = Field(
        None, description="instead of text_field: a named template (TEMPLATES above) or a format string like '{inputs}\\n{targets}'"
    )

    @model_validator(mode="after")
    def _fits_source(self) -> CorpusConfig:
        allowed = _SOURCE_FIELDS[self.source]
        stray = sorted(f for f in self.model_fields_set if f != "source" and f not in allowed)
        if stray:
            raise ValueError(f"{', '.join(stray)}: not used by source {self.source!r} (it reads {', '.join(sorted(allowed))})")
        if self.source == "synthetic":
            if self.name not in SYNTHETIC_CORPORA:
                raise ValueError(f"unknown synthetic corpus {self.name!r}; choose one of {sorted(SYNTHETIC_CORPORA)}")
        elif self.source == "hub" and not self.dataset:
            raise ValueError("source hub needs dataset: a Hugging Face dataset id such as allenai/c4")
        elif self.source == "local":
            if not self.path:
                raise ValueError("source local needs path: a file or folder of documents")
            for key in ("path", "heldout_path"):
                value = getattr(self, key)
                if value and not Path(value).expanduser().exists():
                    raise ValueError(f"{key}: {value} does not exist (relative paths start from {Path.cwd()})")
        if self.template is not None and self.template not in TEMPLATES and "{" not in self.template:
            raise ValueError(
                f"template {self.template!r} is neither a named template ({', '.join(sorted(TEMPLATES))}) nor a format string with {{field}} placeholders"
            )
        return self

    @property
    def label(self) -> str:
        """A short name for logs and cache folders."""
        if self.name:
            return self.name
        if self.source == "hub":
            raw = Path(self.dataset).name if Path(self.dataset).expanduser().exists() else self.dataset  # a local copy of a repo
            raw += f"-{self.subset}" if self.subset else ""
        else:
            raw = Path(self.path or "corpus").name
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(raw)).strip("-") or "corpus"


class CorporaConfig(_Strict):
    pre: CorpusConfig = Field(
        CorpusConfig(name="general", train_docs=12000, heldout_docs=400), description="D_pre, the general corpus (C4 in the paper)"
    )
    post: CorpusConfig = Field(
        CorpusConfig(name="notation", train_docs=6000, heldout_docs=300), description="D_post, the post-training domain (MusicPile)"
    )
    ft: CorpusConfig = Field(
        CorpusConfig(name="chem", train_docs=6000, heldout_docs=300), description="D_ft, the downstream task (ChemPile)"
    )
