"""The study: one typed, validated object loaded from YAML, the only place defaults live.

A study file is data. Every key is checked against the schema below before Ray starts;
unknown keys, wrong types and out-of-range values are collected and raised together in one
`StudyConfigError` that names the file, the dotted key and what to change.

Convention: inside a stage, a field given as a list is a sweep axis (the grid is their
product); a scalar is held fixed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raysweep.keys import json_key
from raysweep.spec import share_tokens
from raysweep.storage import is_remote

DEFAULT_STUDY = Path(__file__).resolve().parent.parent / "search_spaces" / "default.yaml"


class StudyConfigError(ValueError):
    """A study file or override is invalid. The message lists every problem at once."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        n = len(problems)
        super().__init__(f"{source}: {n} problem{'s' if n != 1 else ''} {self.where}:\n{lines}")

    where = "in the study config"


class StudyInputError(StudyConfigError):
    """The study is valid, but what it points at is not usable: a corpus that cannot be read, a
    budget its corpus cannot hold, a disk too small, a package missing. Reported like a config error
    (every problem at once, each with the key to change) and before any training, but not called a
    mistake in the study file."""

    where = "with what the study points at"


class _Strict(BaseModel):
    # strict: "3" is not silently an int; extra="forbid": a typo is an error, not a default.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelConfig(_Strict):
    kind: Literal["lm", "linear"] = Field(
        "lm",
        description="lm: a Llama decoder from the preset table; linear: the paper's two-layer linear network (section `theory`, raysweep/train/theory.py)",
    )
    preset: str = Field("tiny", description="name in raysweep.presets.PRESETS (`python -m raysweep.presets`)")
    seq_len: int = Field(128, gt=0, le=65536, description="tokens per training block")
    compile: bool = Field(
        False,
        description="torch.compile the training step's model: faster steps after a one-off compile per warm worker slot "
        "(≈ +20% on CPU after ≈ 24 s; bench/gpu_mfu.py measures it on GPU). Results match eager to float "
        "tolerance, not bit for bit. Operational: not part of any node key",
    )

    # The Llama shape over the preset (None: the preset's). raysweep.presets.SHAPE_FIELDS lists
    # them; a test keeps the two in step. Set ones are part of every node key.
    n_layers: int | None = Field(None, description="decoder layers (over the preset's)")
    hidden: int | None = Field(None, description="hidden width; n_heads must divide it into an even head dimension")
    n_heads: int | None = Field(None, description="attention heads")
    n_kv_heads: int | None = Field(None, description="key/value heads (grouped-query attention); must divide n_heads")
    mlp_hidden: int | None = Field(None, description="the SiLU-gated MLP's inner width")
    tie_embeddings: bool | None = Field(None, description="share the input embedding and the output head")
    rope_theta: float | None = Field(None, description="RoPE base")
    norm_eps: float | None = Field(None, description="RMSNorm epsilon")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        from raysweep.presets import PRESETS

        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return name

    @model_validator(mode="after")
    def _buildable(self) -> ModelConfig:
        from raysweep.presets import shape_problems

        given = self.shape_overrides()
        if self.kind == "linear" and given:
            raise ValueError(f"{sorted(given)[0]}: model.kind linear has no Llama shape (its width is theory.width)")
        problems = shape_problems(self.shape)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def shape_overrides(self) -> dict:
        """The shape fields this study sets over its preset."""
        from raysweep.presets import SHAPE_FIELDS

        return {k: getattr(self, k) for k in SHAPE_FIELDS if getattr(self, k) is not None}

    @property
    def shape(self):
        """The decoder's shape: the preset's, with this study's overrides (raysweep.presets.ModelShape)."""
        from raysweep.presets import resolve

        return resolve(self.preset, self.shape_overrides())

    def shape_label(self) -> str:
        """The preset's name, with what the study changes of it, e.g. 'tiny (mlp_hidden 512)'."""
        given = self.shape_overrides()
        shown = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {str(v).lower()}" for k, v in given.items())
        return self.preset + (f" ({shown})" if given else "")


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


class TokenizerConfig(_Strict):
    pretrained: str | None = Field(
        None, description="a local tokenizer folder or a hub id (e.g. HuggingFaceTB/SmolLM2-135M); none: train a BPE tokenizer"
    )
    revision: str | None = Field(None, description="hub revision of the pretrained tokenizer")
    vocab_size: int = Field(2048, ge=260, le=262_144, description="trained BPE only: vocabulary size")
    train_docs: int = Field(20_000, gt=0, description="trained BPE only: documents of each corpus it is trained on")

    @model_validator(mode="after")
    def _one_kind(self) -> TokenizerConfig:
        if self.pretrained is not None:
            stray = sorted({"vocab_size", "train_docs"} & self.model_fields_set)
            if stray:
                raise ValueError(
                    f"{', '.join(stray)}: only for a trained BPE tokenizer; a pretrained tokenizer brings its own vocabulary "
                    "(on the command line, replace the whole section: --set 'tokenizer={pretrained: HuggingFaceTB/SmolLM2-135M}')"
                )
        elif self.revision is not None:
            raise ValueError("revision: only used with pretrained")
        return self


class ResourcesConfig(_Strict):
    workers: int = Field(1, ge=1, description="Ray Train workers (DDP ranks) per run of this stage")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each worker reserves (and its torch threads)")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs each worker reserves; 0 trains on CPU")
    memory_gb: float | None = Field(
        None,
        gt=0,
        le=100_000,
        description="memory one worker has, in GB: its GPU's with gpus_per_worker > 0, else RAM; none: the worker's own GPU "
        "(80 GB, an H100, where the dry run sees none) or this machine's RAM. The memory model (raysweep/memory.py) picks "
        "micro-batches against it. Operational: not part of any node key",
    )


class _StageConfig(_Strict):
    min_lr: float = Field(0.0, ge=0, description="floor of the cosine decay")
    warmup_steps: int = Field(10, ge=0, description="optimizer steps of linear warmup")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay")
    batch_size: int = Field(16, gt=0, description="sequences per optimizer step, summed over workers")
    tokens: int = Field(gt=0, description="training-token budget of one run (tokens, not documents)")
    eval_every: int = Field(50, gt=0, description="optimizer steps between held-out evaluations")
    eval_tokens: int = Field(8192, gt=0, description="held-out tokens per corpus per evaluation")
    checkpoint_every: int = Field(
        100,
        ge=0,
        description="optimizer steps between resumable progress checkpoints (0: none); an interrupted or retried run continues from the last one",
    )
    micro_batch_size: int | Literal["auto"] = Field(
        "auto",
        description="sequences per forward per worker; each worker's share of batch_size is split into micro-batches whose "
        "gradients accumulate (the same optimizer step up to float rounding). auto: the largest that divides the share and "
        "fits the worker's memory (raysweep/memory.py; --dry-run shows it). Operational: not part of any node key",
    )
    activation_checkpointing: bool = Field(
        False,
        description="recompute each decoder layer's activations in backward instead of keeping them (≈ a third more compute, "
        "a fraction of the activation memory): for a micro-batch that would not fit otherwise. Operational: not part of any node key",
    )
    resources: ResourcesConfig = Field(ResourcesConfig(), description="compute per run of this stage")

    @field_validator("micro_batch_size")
    @classmethod
    def _micro(cls, v: int | str) -> int | str:
        if v != "auto" and v < 1:
            raise ValueError(f"must be auto or a positive number of sequences (got {v})")
        return v


def _grid(values: list[float], lo: float, hi: float, name: str, hi_open: bool = False) -> list[float]:
    if not values:
        raise ValueError(f"needs at least one {name}")
    if len(set(values)) != len(values):
        raise ValueError(f"repeated {name}s: {values}")
    for v in values:
        if not (lo <= v < hi if hi_open else lo <= v <= hi):
            raise ValueError(f"{name} {v} outside [{lo}, {hi}{')' if hi_open else ']'}")
    return values


class PretrainConfig(_StageConfig):
    mode: Literal["sweep", "compute_matched"] = Field(
        "sweep",
        description="sweep: λ·|D_post| added to stage 1, stage 2 trains on all of D_post; compute_matched: λ of D_post in stage 1, the disjoint 1−λ in stage 2, one pass in total",
    )
    mix_fraction: list[float] = Field([0.0, 1.0], description="λ: share of D_post's training tokens mixed into stage 1 (one pass at most)")
    post_tokens: int = Field(60_000, gt=0, description="|D_post|: D_post training tokens that λ is a fraction of")
    lr: float = Field(3e-3, gt=0, description="peak learning rate")
    tokens: int = Field(300_000, gt=0, description="D_pre training tokens of one arm; λ·post_tokens come on top")
    min_lr: float = Field(3e-4, ge=0, description="floor of the cosine decay")
    warmup_steps: int = Field(20, ge=0, description="optimizer steps of linear warmup")

    @field_validator("mix_fraction")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(x > 1.0 for x in v):
            raise ValueError(f"mixing fraction {max(v)} above 1: λ·|D_post| would exceed one pass over D_post")
        return _grid(v, 0.0, 1.0, "mixing fraction")


class PosttrainConfig(_StageConfig):
    lr: list[float] = Field([1e-3, 3e-3], description="peak learning rates (sweep axis)")
    dropout: list[float] = Field([0.0], description="residual/attention dropout during stage 2 (sweep axis)")
    replay: list[float] = Field([0.0], description="share of the stage-2 stream drawn from D_pre (replay; 0.01 in the paper) (sweep axis)")
    batch_size: int | list[int] = Field(
        16, description="sequences per optimizer step, summed over workers; a list is a sweep axis (the paper sweeps 192, 480, 896)"
    )
    tuning: list[Literal["full", "lora"]] = Field(
        ["full"], description="full fine-tuning and/or LoRA adapters (sweep axis); for LoRA runs the dropout axis is the LoRA dropout"
    )
    lora_rank: int = Field(64, ge=1, le=4096, description="LoRA rank (the paper's Table 9: 64)")
    lora_alpha: float = Field(128.0, gt=0, description="LoRA alpha (Table 9: 128)")
    lora_targets: list[str] = Field(
        ["o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"],
        min_length=1,
        description="modules given adapters (Table 9: attention output, MLP, head; Q/K/V excluded). With tied embeddings lm_head is left out (see README)",
    )
    tokens: int = Field(
        360_000,
        gt=0,
        description="most D_post tokens one run may train on (early stopping may end it sooner); compute_matched: at most one pass",
    )
    patience: int = Field(3, ge=1, description="evaluations without improvement before early stopping")
    min_lr: float = Field(1e-4, ge=0, description="floor of the cosine decay")
    eval_every: int = Field(10, gt=0, description="optimizer steps between held-out evaluations")
    search: Literal["grid", "optuna"] = Field(
        "grid",
        description="grid: every combination of the axes (the paper); optuna: `trials` configurations per λ chosen by Optuna from the stage-3 children's (L_ret, L_ft), lr log-uniform between the smallest and largest of `lr`, the other axes picked from their lists (raysweep/sweep/search.py)",
    )
    trials: int = Field(8, ge=1, le=100_000, description="search: optuna: stage-2 configurations per λ")
    optuna_batch: int = Field(
        4,
        ge=1,
        le=10_000,
        description="search: optuna: configurations asked for at once per λ (trained side by side, then told). Fixed, not taken from the cluster, so a study picks the same configurations on any cluster",
    )

    @field_validator("lr")
    @classmethod
    def _lrs(cls, v: list[float]) -> list[float]:
        return _grid(v, 1e-12, 10.0, "learning rate")

    @field_validator("dropout")
    @classmethod
    def _dropouts(cls, v: list[float]) -> list[float]:
        return _grid(v, 0.0, 1.0, "dropout", hi_open=True)

    @field_validator("batch_size")
    @classmethod
    def _batches(cls, v: int | list[int]) -> int | list[int]:
        values = v if isinstance(v, list) else [v]
        if not values or len(set(values)) != len(values) or any(b <= 0 for b in values):
            raise ValueError(f"batch sizes must be distinct positive integers, got {v}")
        return v

    @property
    def batch_sizes(self) -> list[int]:
        return self.batch_size if isinstance(self.batch_size, list) else [self.batch_size]

    @field_validator("tuning")
    @classmethod
    def _tunings(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"needs one or more distinct values of full / lora, got {v}")
        return v

    @field_validator("lora_targets")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        known = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"}
        unknown = sorted(set(v) - known)
        if unknown:
            raise ValueError(f"unknown module(s) {unknown}; the Llama decoder has {sorted(known)}")
        return v

    @field_validator("replay")
    @classmethod
    def _replays(cls, v: list[float]) -> list[float]:
        return _grid(v, 0.0, 1.0, "replay fraction", hi_open=True)


class FinetuneConfig(_StageConfig):
    lr: list[float] = Field([3e-4, 1e-3, 3e-3], description="peak learning rates, one stage-3 run each (sweep axis)")
    tokens: int = Field(40_000, gt=0, description="fixed D_ft token budget of every stage-3 run")
    warmup_steps: int = Field(5, ge=0, description="optimizer steps of linear warmup")
    eval_every: int = Field(20, gt=0, description="optimizer steps between held-out evaluations")
    keep_weights: bool = Field(
        True,
        description="false: stage-3 nodes keep their losses and metric points but not their weights (all a frontier needs; --dry-run shows the disk it saves). Not part of any key: a node stored without weights stays so",
    )

    @field_validator("lr")
    @classmethod
    def _lrs(cls, v: list[float]) -> list[float]:
        return _grid(v, 1e-12, 10.0, "learning rate")


class TheoryFeatures(_Strict):
    invariant: int = Field(2, ge=0, le=256, description="directions with one gain in all three tasks")
    inconsistent: int = Field(
        2, ge=1, le=256, description="directions whose gain differs between D_post and the general tasks (D_pre, D_ft)"
    )
    specialised: int = Field(2, ge=1, le=256, description="directions only D_post's inputs vary along")
    ft_only: int = Field(2, ge=0, le=256, description="directions only D_ft's inputs vary along")


class TheoryGains(_Strict):
    invariant: float = Field(1.0, ge=0, le=100)
    inconsistent_general: float = Field(1.0, ge=0, le=100, description="gain of the inconsistent directions in D_pre and D_ft")
    inconsistent_post: float = Field(2.0, ge=0, le=100, description="their gain in D_post")
    specialised: float = Field(1.5, ge=0, le=100, description="β: gain of the specialised directions in D_post")
    ft_only: float = Field(1.0, ge=0, le=100)


class TheorySteps(_Strict):
    pretrain: int = Field(3000, ge=1, le=10_000_000)
    posttrain: int = Field(3000, ge=1, le=10_000_000, description="at most; stage 2 stops once L_post < converged")
    finetune: int = Field(3000, ge=1, le=10_000_000, description="fixed budget, as the paper's stage 3")


class TheoryConfig(_Strict):
    """The linear network and tasks of `model.kind: linear` (raysweep/train/theory.py explains each part).
    Learning rates come from the stages' `lr`; λ becomes the stage-1 mixture weight α exactly as
    tokens would: α = λ·post_tokens / (tokens + λ·post_tokens)."""

    width: int = Field(16, ge=1, le=4096, description="hidden units")
    init_scale: float = Field(0.01, gt=0, le=10, description="std of the initial weights (small: the feature-learning regime)")
    features: TheoryFeatures = TheoryFeatures()
    gains: TheoryGains = TheoryGains()
    co_occurrence: float = Field(
        1.0, ge=0, le=1, description="ρ: correlation of each specialised input with its inconsistent partner in D_post"
    )
    steps: TheorySteps = TheorySteps()
    converged: float = Field(1e-8, gt=0, description="stage 2 ends once the D_post loss is below this")
    seed: int | None = Field(None, ge=0, description="seed of the tasks' singular vectors; none: the study seed")


class Study(_Strict):
    """A whole three-stage study: corpora, model, the three stages and where results go."""

    # 100: a folder name (255 bytes at most on ext4/APFS) that still leaves room for the suffixes
    # raysweep adds to it, and an MLflow experiment name every store accepts.
    name: str = Field(
        "default", max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="study name: MLflow experiment and output folder"
    )
    seed: int = Field(0, ge=0, description="root seed; every node's seed derives from it and the node's path")
    output_dir: str = Field("runs/{name}", description="folder for corpora, checkpoints, MLflow store, report ({name} is filled in)")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default: a SQLite store inside output_dir")
    checkpoint_dir: str | None = Field(
        None,
        description="the content-addressed node store: a folder, or an object-store URI (s3://bucket/prefix, gs://bucket/prefix; raysweep/storage.py); default <output_dir>/checkpoints. Point several studies at one folder and a node any of them finished (same key: parent, stage config, data, tokenizer, seed) is never trained again",
    )
    retries: int = Field(
        2,
        ge=0,
        le=100,
        description="times a failed trial (an exception, a non-finite loss, a lost worker) is retried, from its last progress checkpoint, before it is marked failed",
    )
    max_concurrent_trials: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="warm worker slots (Tune trials, each one Ray Train worker group that trains node after node) per tree run; none: as many as the cluster's CPUs/GPUs can feed now. Set it on an autoscaling cluster (e.g. the GPU workers' max), where the cluster starts small and grows for the slots that wait",
    )
    max_runs: int = Field(
        5_000,
        ge=1,
        le=10_000_000,
        description="a guard: a study whose tree has more runs than this stops before any compute (a typo in a list "
        "of learning rates can ask for tens of thousands); raise it for a study that really is that large. "
        "Operational: not part of any node key",
    )
    model: ModelConfig = ModelConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    corpora: CorporaConfig = CorporaConfig()
    pretrain: PretrainConfig = PretrainConfig()
    posttrain: PosttrainConfig = PosttrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    theory: TheoryConfig = TheoryConfig()

    @field_validator("output_dir", "checkpoint_dir")
    @classmethod
    def _only_name_filled_in(cls, value: str | None) -> str | None:
        import string

        if value is None:
            return value
        try:
            fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(value) if f is not None]
        except ValueError as e:
            raise ValueError(f"not a valid folder template ({e}); write a literal brace as {{{{ or }}}}") from None
        for f, spec, conv in fields:
            if f != "name" or spec or conv:
                raise ValueError(
                    f"only {{name}} is filled in (found {{{f}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}); write a literal brace as {{{{ or }}}}"
                )
        return value

    def run_counts(self) -> dict[str, int]:
        """Runs per level, from the config alone (what --dry-run counts before any data exists)."""
        p1, p2 = self.pretrain, self.posttrain
        arms = len(p1.mix_fraction)
        per_arm = (
            p2.trials if p2.search == "optuna" else len(p2.lr) * len(p2.dropout) * len(p2.replay) * len(p2.tuning) * len(p2.batch_sizes)
        )
        if self.model.kind == "linear":
            per_arm = len(p2.lr)
        return {"pretrain": arms, "posttrain": arms * per_arm, "finetune": arms * per_arm * len(self.finetune.lr)}

    @model_validator(mode="after")
    def _cross_checks(self) -> Study:
        """The checks that span several sections, in order; the first problem found is reported."""
        self._check_run_count()
        if self.model.kind == "linear":
            self._check_linear()
            return self  # token budgets, batches and workers do not apply to it
        self._check_shared_resources()
        self._check_compute_matched()
        self._check_batches()
        from raysweep.memory import memory_problem

        problem = memory_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    def _check_run_count(self) -> None:
        runs = sum(self.run_counts().values())
        if runs > self.max_runs:
            raise ValueError(
                f"max_runs: the tree has {runs:,} runs, more than max_runs ({self.max_runs:,}); check the sweep lists "
                f"(--dry-run shows them), or raise the guard with --set max_runs={runs}"
            )

    def _check_linear(self) -> None:
        """The linear network has no tokens, dropout, replay stream or adapters."""
        for key, value, allowed in (
            ("posttrain.dropout", self.posttrain.dropout, [0.0]),
            ("posttrain.replay", self.posttrain.replay, [0.0]),
            ("posttrain.tuning", self.posttrain.tuning, ["full"]),
            ("posttrain.search", [self.posttrain.search], ["grid"]),
        ):
            if list(value) != allowed:
                raise ValueError(f"{key}: model.kind linear supports only {allowed} (got {value}); the linear network has no such axis")
        if self.checkpoint_dir and is_remote(self.checkpoint_dir):
            raise ValueError("checkpoint_dir: model.kind linear keeps its nodes in a local folder (its runs take milliseconds); use a path")

    def _check_shared_resources(self) -> None:
        if self.finetune.resources != self.posttrain.resources:
            # stage-3 runs train in their stage-2 parent's worker group, right after it
            raise ValueError(
                "finetune.resources must equal posttrain.resources: each stage-2 run's fine-tuning "
                "children run in the same Ray Train worker group (see raysweep/sweep/work.py)"
            )

    def _check_compute_matched(self) -> None:
        """Each λ leaves stage 2 at least one batch of D_post."""
        if self.pretrain.mode != "compute_matched":
            return
        need = max(self.posttrain.batch_sizes) * (self.model.seq_len + 1)
        for mix in self.pretrain.mix_fraction:
            rest = self.pretrain.post_tokens - share_tokens(self.pretrain.post_tokens, mix)
            if rest < need:
                raise ValueError(
                    f"pretrain.mix_fraction: in compute_matched mode λ={mix:g} leaves (1−λ)·|D_post| = {rest:,} "
                    f"tokens for stage 2, less than one stage-2 batch ({need:,}); the two parts cannot both be "
                    f"non-empty and disjoint. Use λ < 1 that leaves a batch, or raise pretrain.post_tokens"
                )

    def _check_batches(self) -> None:
        """Each stage's lr floor, and its batches against its tokens, workers and micro-batch."""
        for stage in ("pretrain", "posttrain", "finetune"):
            cfg = getattr(self, stage)
            lrs = cfg.lr if isinstance(cfg.lr, list) else [cfg.lr]
            if cfg.min_lr > min(lrs):
                raise ValueError(f"{stage}.min_lr ({cfg.min_lr}) is above its smallest lr ({min(lrs)})")
            blocks = cfg.tokens // self.model.seq_len
            for batch in cfg.batch_size if isinstance(cfg.batch_size, list) else [cfg.batch_size]:
                if blocks < batch:
                    raise ValueError(
                        f"{stage}.tokens ({cfg.tokens}) fills {blocks} blocks of {self.model.seq_len} tokens, "
                        f"fewer than one batch ({batch}); raise {stage}.tokens or lower {stage}.batch_size"
                    )
                if batch % cfg.resources.workers:
                    raise ValueError(
                        f"{stage}.batch_size ({batch}) must divide evenly over {stage}.resources.workers ({cfg.resources.workers})"
                    )
                share = batch // cfg.resources.workers
                if cfg.micro_batch_size != "auto" and share % cfg.micro_batch_size:
                    raise ValueError(
                        f"{stage}.micro_batch_size ({cfg.micro_batch_size}) must divide each worker's share of the batch "
                        f"({stage}.batch_size {batch} / {cfg.resources.workers} workers = {share}); or use auto"
                    )

    # ---- derived values (never stored, so they cannot disagree with the fields) ----
    @property
    def out(self) -> Path:
        return Path(self.output_dir.format(name=self.name)).expanduser().resolve()

    @property
    def checkpoints(self) -> Path | str:
        if not self.checkpoint_dir:
            return self.out / "checkpoints"
        where = self.checkpoint_dir.format(name=self.name)
        if is_remote(where):  # an object store (raysweep.storage): kept as the URI it is
            return where
        return Path(where).expanduser().resolve()

    def content_hash(self) -> str:
        # operational knobs that do not change any result stay out of the study's identity
        doc = self.model_dump(
            mode="json",
            exclude={
                "max_concurrent_trials": True,
                "max_runs": True,
                "checkpoint_dir": True,
                "retries": True,
                "model": {"compile"},
                # how a step is split over forwards, and the memory it is fitted to, change no result
                **{stage: {**_OPERATIONAL_STAGE_KEYS, **({"keep_weights": True} if stage == "finetune" else {})} for stage in _STAGES},
            },
        )
        if self.model.kind == "lm":  # fields that do not apply stay out, so older studies keep their hash
            doc.pop("theory")
            doc["model"].pop("kind")
        for k in [k for k, v in doc["model"].items() if v is None]:  # shape fields left to the preset
            doc["model"].pop(k)
        if self.posttrain.search == "grid":
            for key in ("search", "trials", "optuna_batch"):
                doc["posttrain"].pop(key)
        return json_key(doc)


_STAGES = ("pretrain", "posttrain", "finetune")
_OPERATIONAL_STAGE_KEYS = {"micro_batch_size": True, "activation_checkpointing": True, "resources": {"memory_gb"}}


# --------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float (YAML 1.1 wants `1.0e-3` and would give a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


MAX_STUDY_BYTES = 1 << 20  # a study file is a few KB; a bigger one is not a study
MAX_VALUES = 100_000  # values in a study after YAML aliases are expanded (the default study has ~200)
MAX_LIST = 10_000  # items in one list (a sweep axis); the paper's largest has 10


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def _too_big(doc: Any, where: str = "") -> str | None:
    """The first key whose value is too big (a list over MAX_LIST items, or more than MAX_VALUES
    values in all once aliases are expanded: `&a [*b, *b, ...]` nested a few deep is billions),
    walked with a budget so the walk itself stays small."""
    budget = [MAX_VALUES]
    todo = [(where, doc)]
    while todo:
        key, node = todo.pop()
        budget[0] -= 1
        if budget[0] < 0:
            return f"{key or '(top level)'}: more than {MAX_VALUES:,} values in the study (YAML aliases expand each time they are used)"
        if isinstance(node, dict):
            todo += [(f"{key}.{k}" if key else str(k), v) for k, v in node.items()]
        elif isinstance(node, list):
            if len(node) > MAX_LIST:
                return f"{key}: {len(node):,} items, more than the {MAX_LIST:,} a study list may hold"
            todo += [(key, v) for v in node]
    return None


def _apply_override(doc: dict, item: str, problems: list[str]) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        problems.append(f"--set {item!r}: expected key=value, e.g. --set pretrain.mix_fraction=[0,0.5]")
        return
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        problems.append(f"--set {key}: value {raw!r} is not valid YAML ({e.__class__.__name__})")
        return
    node = doc
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            problems.append(f"--set {key}: {part!r} is a value, not a section")
            return
        node = child
    node[parts[-1]] = value


def _describe(err: dict, overridden: set[str]) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    field = re.match(r"([a-z_]+): ", msg)
    if err["type"] == "value_error" and err["loc"] and field:  # a section's check that names one of its keys
        key, msg = f"{key}.{field[1]}", msg[field.end() :]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see search_spaces/default.yaml for every key)"
    origin = " [from --set]" if any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in overridden) else ""
    got = err.get("input")
    shown = "" if err["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
    return f"{key}: {msg}{shown}{origin}" if err["loc"] else f"{msg}{origin}"  # cross-checks name their keys


def load_study(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Study:
    """Read a study file, apply `key=value` overrides, validate, and return the Study.

    Raises StudyConfigError (listing every problem) on anything invalid.
    """
    path = Path(path) if path is not None else DEFAULT_STUDY
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_STUDY_BYTES:
            raise StudyConfigError(source, [f"{size:,} bytes; a study file is at most {MAX_STUDY_BYTES:,} (is this the right file?)"])
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise StudyConfigError(source, ["file not found; pass --config with a path to a study YAML"]) from None
    except UnicodeDecodeError as e:
        raise StudyConfigError(source, [f"not UTF-8 text (byte {e.start})"]) from None
    try:
        doc = parse_yaml(text)
    except yaml.YAMLError as e:
        raise StudyConfigError(source, [f"not valid YAML: {e}"]) from None
    if doc is None:  # an empty file is a mistake (a wrong path, a file not saved), not a request for every default
        raise StudyConfigError(
            source,
            [
                "the file is empty (or only comments); a study file sets at least one key (search_spaces/default.yaml shows them all), "
                "or leave out --config to run the default study"
            ],
        )
    if not isinstance(doc, dict):
        raise StudyConfigError(source, [f"the top level must be a mapping of keys, got {type(doc).__name__}"])

    problems: list[str] = []
    overridden: set[str] = set()
    for item in overrides:
        _apply_override(doc, item, problems)
        overridden.add(item.partition("=")[0].strip())
    big = _too_big(doc)
    if big:  # before validation, which would expand it
        raise StudyConfigError(source, [big])
    try:
        study = Study.model_validate(doc)
    except ValidationError as e:
        problems += [_describe(err, overridden) for err in e.errors()]
        study = None
    if problems:
        raise StudyConfigError(source, problems)
    return study
