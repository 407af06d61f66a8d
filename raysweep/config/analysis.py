"""The `analysis` section: how a study's finished checkpoints are judged, beyond training them.
Nothing here enters a node key or the study's hash: changing it re-scores stored weights, never
retrains them."""

from __future__ import annotations

from pydantic import Field

from raysweep.config.base import _Strict


class AnalysisConfig(_Strict):
    heldout_slices: int = Field(
        5,
        ge=0,
        le=50,
        description="disjoint slices of each held-out set (by document) every final checkpoint is also scored on, so a verdict "
        "can be checked against another choice of held-out documents (the paper is silent on it); each slice holds at least "
        "eval_tokens tokens, fewer slices are made where a held-out set is too small (the data step says so); 0 or 1: none. "
        "Scored after training from the stored weights: a finished study gains them without training anything",
    )
