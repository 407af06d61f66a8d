"""The three stages' sections: each stage's optimizer, budget, evaluation and resources, and its
sweep axes (a list is an axis; `lrs` and `batch_sizes` read every stage the same way)."""

from __future__ import annotations

from operator import attrgetter
from typing import Literal

from pydantic import Field, field_validator

from raysweep.config.base import _as_axis, _grid, _Strict


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


# A stage's settings that change how its runs are computed, not what they compute: in no node key;
# every RunSpec gets them (_StageConfig.operational), and the study's hash leaves them out but for
# checkpoint_every, which studies hashed before this rule (they keep their hash).
OPERATIONAL = ("checkpoint_every", "micro_batch_size", "activation_checkpointing", "resources.memory_gb")
HASHED_OPERATIONAL = ("checkpoint_every",)


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

    def operational(self) -> dict:
        """The OPERATIONAL settings by their last name (RunSpec's fields)."""
        return {path.rpartition(".")[2]: attrgetter(path)(self) for path in OPERATIONAL}

    @field_validator("micro_batch_size")
    @classmethod
    def _micro(cls, v: int | str) -> int | str:
        if v != "auto" and v < 1:
            raise ValueError(f"must be auto or a positive number of sequences (got {v})")
        return v

    # Every stage read as axes, whether its study sweeps them (a list) or holds them fixed.
    @property
    def lrs(self) -> list[float]:
        return self.lr if isinstance(self.lr, list) else [self.lr]

    @property
    def batch_sizes(self) -> list[int]:
        return [self.batch_size]


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

    _one_value = field_validator("mix_fraction", mode="before")(_as_axis)

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
    search: Literal["grid", "optuna", "halving"] = Field(
        "grid",
        description="grid: every combination of the axes (the paper); optuna: `trials` configurations per λ chosen by Optuna from the stage-3 children's (L_ret, L_ft), lr log-uniform between the smallest and largest of `lr`, the other axes picked from their lists (raysweep/sweep/search.py); halving: the grid, pruned per method at each of `rungs` from short stage-3 probes, the best 1/eta going on (raysweep/sweep/halving.py)",
    )
    # one early rung, a quarter going on: of the schedules replayed in bench/halving_rules.py that
    # rungs and eta can say, the one whose worst method kept most of the grid's hypervolume within
    # 40% of its tokens on both CPU twins (bench/RESULTS.md, 2026-12-07)
    rungs: list[float] = Field(
        [1 / 9, 1.0],
        description="search: halving: the shares of each stage-2 run's step budget at which its configurations are compared and pruned, rising, the last 1 (the end)",
    )
    eta: int = Field(
        4, ge=2, le=1000, description="search: halving: at each rung, the best ceil(n / eta) configurations of each method go on"
    )
    budget_share: float | None = Field(
        None,
        gt=0,
        le=1,
        description="search: halving: the stage-2 + stage-3 tokens the search may spend, as a share of the grid's; eta "
        "becomes the smallest that keeps within it (--dry-run prints it). none: eta as given",
    )
    probe_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="search: halving: a probe's share of a stage-3 run's token budget (one probe per stage-3 lr at each rung)",
    )
    trials: int = Field(8, ge=1, le=100_000, description="search: optuna: stage-2 configurations per λ")
    optuna_batch: int = Field(
        4,
        ge=1,
        le=10_000,
        description="search: optuna: configurations asked for at once per λ (trained side by side, then told). Fixed, not taken from the cluster, so a study picks the same configurations on any cluster",
    )

    _one_value = field_validator("lr", "dropout", "replay", "tuning", "lora_targets", mode="before")(_as_axis)

    @field_validator("lr")
    @classmethod
    def _lrs(cls, v: list[float]) -> list[float]:
        return _grid(v, 1e-12, 10.0, "learning rate")

    @field_validator("dropout")
    @classmethod
    def _dropouts(cls, v: list[float]) -> list[float]:
        return _grid(v, 0.0, 1.0, "dropout", hi_open=True)

    @field_validator("rungs")
    @classmethod
    def _rungs(cls, v: list[float]) -> list[float]:
        if not v or v[-1] != 1.0 or any(not 0 < a < b for a, b in zip(v, v[1:])) or v[0] <= 0:
            raise ValueError(f"rung shares must rise strictly within (0, 1] and end at 1 (the run's end), got {v}")
        return v

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

    _one_value = field_validator("lr", mode="before")(_as_axis)

    @field_validator("lr")
    @classmethod
    def _lrs(cls, v: list[float]) -> list[float]:
        return _grid(v, 1e-12, 10.0, "learning rate")
