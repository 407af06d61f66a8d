"""The `theory` section: the two-layer linear network and tasks of `model.kind: linear`, and the
checks that say which of the other sections' axes it has no use for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from raysweep.config.base import _Strict
from raysweep.store.storage import is_remote

if TYPE_CHECKING:
    from raysweep.config.study import Study


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


def check_linear(study: Study) -> None:
    """The linear network has no tokens, dropout, replay stream or adapters."""
    p2 = study.posttrain
    for key, value, allowed in (
        ("posttrain.dropout", p2.dropout, [0.0]),
        ("posttrain.replay", p2.replay, [0.0]),
        ("posttrain.tuning", p2.tuning, ["full"]),
        ("posttrain.search", [p2.search], ["grid"]),
    ):
        if list(value) != allowed:
            raise ValueError(f"{key}: model.kind linear supports only {allowed} (got {value}); the linear network has no such axis")
    if study.checkpoint_dir and is_remote(study.checkpoint_dir):
        raise ValueError("checkpoint_dir: model.kind linear keeps its nodes in a local folder (its runs take milliseconds); use a path")
