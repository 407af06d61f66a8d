"""What one run of the tree is: its spec (stored verbatim in its node.json) and its place in the tree.

These sit below everything that handles runs (the node store, the plan, the training loop, the
MLflow sync), so none of those has to import another to agree on what a run is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raysweep.data.blocks import Stream


def share_tokens(total: int, fraction: float) -> int:
    """Tokens of a fraction of a total: round half to even, the one rounding of a λ share (the data
    layer cuts streams with it, the config checks stage 2's share with it; node keys depend on it)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"mix_fraction must be in [0, 1], got {fraction}")
    return int(round(fraction * total))


@dataclass
class RunSpec:
    """Everything one run needs; stored verbatim in its checkpoint's node.json."""

    stage: str  # pretrain | posttrain | finetune
    label: str  # human-readable, e.g. "posttrain λ=0.5 lr=1e-3"
    node_key: str  # content hash of (parent key, stage config, data, tokenizer, seed)
    node_dir: str  # where the checkpoint goes
    dataset: str  # which of its item's row sets it trains on: "train" (its stage's stream) or "ft"
    lr: float
    min_lr: float
    warmup_steps: int
    weight_decay: float
    batch_size: int  # sequences per optimizer step, all ranks together
    max_steps: int
    eval_every: int  # steps
    monitor: list[str]  # held-out sets evaluated during training
    seed: int
    dropout: float = 0.0  # residual/attention dropout; with `lora`, the LoRA dropout instead
    lora: dict | None = None  # {"rank", "alpha", "targets"}: train LoRA adapters only, merged into θ at the end
    # conventions the paper leaves unstated (raysweep.config.conventions); in a node key only when set off these defaults
    schedule: str = "warmup_cosine"
    decay_1d: bool = False
    early_stop_min_delta: float = 1e-4
    init_from: str | None = None  # parent node folder
    early_stop_on: str | None = None  # held-out set whose loss decides early stopping
    patience: int | None = None
    run_id: str | None = None  # MLflow run receiving step metrics
    checkpoint_every: int = 0  # steps between resumable progress checkpoints (0: none); not part of the node key
    keep_weights: bool = True  # False: the node keeps its results and metric points, not its weights (a leaf only); not in the key
    # how the worker splits a step over forwards, and the memory it fits them to (raysweep.memory): not in the key
    micro_batch_size: int | str = "auto"
    activation_checkpointing: bool = False
    memory_gb: float | None = None
    # A rung (raysweep.sweep.halving): the first `stop_at` steps of the run `rung_of` names
    # ({node_key, node_dir, label}), stored as a node of its own (its weights: what probes start
    # from). Its progress checkpoints are that run's, so the next rung, and the run itself,
    # continue from where it stopped: a rung is a prefix of the run, never trained twice.
    stop_at: int | None = None
    rung_of: dict | None = None
    meta: dict = field(default_factory=dict)  # config and lineage to keep with the checkpoint

    @property
    def progress_node(self) -> tuple[str, str]:
        """(key, folder) of the run whose progress checkpoints this one reads and writes."""
        return (self.rung_of["node_key"], self.rung_of["node_dir"]) if self.rung_of else (self.node_key, self.node_dir)

    def stops_at_rung(self, steps: int, stopped_early: bool) -> bool:
        """Whether a run that trained `steps` steps ended at its rung, to be continued (not finished)."""
        return self.stop_at is not None and steps == self.stop_at < self.max_steps and not stopped_early

    def run_itself(self) -> RunSpec:
        """The run a rung is a prefix of (itself when it is no rung)."""
        if self.rung_of is None:
            return self
        meta = {k: v for k, v in self.meta.items() if k != "rung"}
        return replace(self, **self.rung_of, stop_at=None, rung_of=None, run_id=None, meta=meta)


class Diverged(FloatingPointError):
    """The training loss (so the gradient) became non-finite: an outcome of the run's config."""

    def __init__(self, message: str, step: int, points: list):
        super().__init__(message)
        self.step, self.points = step, points


@dataclass(frozen=True)
class Node:
    """One run of the tree and where it lives."""

    spec: RunSpec
    name: str  # MLflow run name, deterministic from the tree path
    parent: str | None  # parent node key (None for arms)
    params: dict
    tags: dict
    stream: Stream  # what it trains on


Subtree = tuple[Node, list[Node]]  # a stage-2 node and its stage-3 children

# The paper's named losses, each a node's held-out loss on one corpus role (pre: D_pre, post: D_post,
# ft: D_ft): L_im is a stage-2 node's loss on D_post; L_ft, L_ret and L_pre a stage-3 node's on each.
IMMEDIATE_ROLE = "post"
FINETUNE_ROLES = {"L_ft": "ft", "L_ret": "post", "L_pre": "pre"}


def immediate_loss(losses: dict[str, float]) -> float:
    """L_im from a stage-2 node's held-out losses (by role)."""
    return losses[IMMEDIATE_ROLE]


def balanced_point(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Of a stage-2 run's (L_ret, L_ft) points (one per stage-3 child or probe), the one with the
    lowest L_ret + L_ft (ties: the lower L_ret): the point of its own small front nearest the
    origin's corner. None when no point is finite."""
    finite = [p for p in points if all(math.isfinite(v) for v in p)]
    return min(finite, key=lambda p: (p[0] + p[1], p)) if finite else None


def finetune_losses(losses: dict[str, float]) -> dict[str, float]:
    """L_ft, L_ret and L_pre from a stage-3 node's held-out losses (by role)."""
    return {name: losses[role] for name, role in FINETUNE_ROLES.items()}


def losses_by_role(named: dict[str, float]) -> dict[str, float]:
    """The held-out losses by role from a stage-3 run's L_ft, L_ret and L_pre."""
    return {role: named[name] for name, role in FINETUNE_ROLES.items()}


def all_nodes(arms: list[Node], subtrees: list[Subtree]) -> list[Node]:
    """Every node of a tree, parents before children: the arms, then each stage-2 node and its children."""
    return [*arms, *(m for n2, children in subtrees for m in (n2, *children))]
