"""The `conventions` section: the protocol choices the paper leaves unstated (shared/PAPER.md marks
them), each a study option so that a verdict can be checked against another choice of each
(the `robustness` section runs the study's comparison under such variants).

Every default is what raysweep did before these options existed, and an option enters a node key
only when it is set off its default, so the node keys of every existing study are unchanged.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raysweep.config.base import _Strict

DEFAULT_MIN_DELTA = 1e-4


class ConventionsConfig(_Strict):
    schedule: Literal["warmup_cosine", "cosine_times_warmup", "wsd"] = Field(
        "warmup_cosine",
        description="learning-rate schedule of every stage. warmup_cosine: linear warmup, then cosine decay to min_lr over the "
        "remaining steps. cosine_times_warmup: a cosine over all steps times the warmup ramp, clamped below at min_lr. wsd: "
        "warmup, stable at the peak, then a linear decay to min_lr over the last 20% of steps (SmolLM2's own recipe). "
        "The paper says 'linear warmup, cosine decay' for stage 2 and nothing of its shape",
    )
    decay_1d: bool = Field(
        False,
        description="weight decay on one-dimensional parameters too (norm weights, biases); false: on matrices only "
        "(nanoGPT's choice). The paper gives the decay (0.1), not what it applies to",
    )
    early_stop_min_delta: float = Field(
        DEFAULT_MIN_DELTA,
        ge=0,
        le=1,
        description="stage 2's early stopping: how much lower a held-out D_post loss must be to count as an improvement. "
        "The paper says early stopping on held-out D_post with a patience, not its threshold",
    )
    packing: Literal["seq_plus_one", "seq"] = Field(
        "seq_plus_one",
        description="how documents are cut into training and held-out blocks. seq_plus_one: blocks of seq_len + 1 tokens, "
        "seq_len predictions each. seq: blocks of seq_len tokens with shifted labels, seq_len − 1 predictions each "
        "(Hugging Face's group_texts). The paper does not say",
    )
    heldout_carving: Literal["hash", "position"] = Field(
        "hash",
        description="how a corpus without a held-out split of its own (hub with heldout_fraction, local without "
        "heldout_path) is carved. hash: a document is held out when its text's hash falls below heldout_fraction, so "
        "every copy of a held-out text stays out of training. position: when a seeded draw for its position does (the "
        "first share of a seeded shuffle), so copies of a held-out text may be trained on. The paper does not say how "
        "its held-out D_post was made. Built-in corpora and given held-out splits are held out as they come",
    )
    stage1_mixing: Literal["documents", "blocks"] = Field(
        "documents",
        description="how λ·|D_post| enters stage 1. documents: D_pre and D_post documents interleaved in a seeded order, "
        "then packed (a block may hold both). blocks: each corpus packed on its own, and whole blocks permuted by the "
        "pass order. The paper says the share, not the interleaving ('uniform random' is the natural reading)",
    )

    def off_default(self, *names: str) -> dict:
        """The named conventions set off their defaults: what a node key gains (nothing by default)."""
        default = ConventionsConfig()
        return {n: getattr(self, n) for n in names if getattr(self, n) != getattr(default, n)}


def variant_label(change: dict) -> str:
    """A robustness variant's name: `schedule=wsd`, `decay_1d=true`."""
    [(key, value)] = change.items()
    return f"{key}={str(value).lower() if isinstance(value, bool) else value}"


def check_variants(base: ConventionsConfig, variants: list[dict]) -> list[ConventionsConfig]:
    """Each `robustness` entry as the conventions it runs under: one convention changed from the
    study's own. ValueError naming the entry otherwise."""
    out = []
    for i, change in enumerate(variants):
        where = f"robustness[{i}]"
        if len(change) != 1:
            raise ValueError(f"{where}: a variant changes one convention, e.g. {{schedule: wsd}}; got {dict(change)}")
        [(key, value)] = change.items()
        if key not in ConventionsConfig.model_fields:
            raise ValueError(f"{where}: {key!r} is no convention; one of {', '.join(ConventionsConfig.model_fields)}")
        try:
            changed = ConventionsConfig(**{**base.model_dump(), key: value})
        except ValueError as e:
            first = e.errors()[0] if hasattr(e, "errors") else {"msg": str(e)}
            raise ValueError(f"{where}.{key}: {first['msg']}") from None
        if changed == base:
            raise ValueError(f"{where}.{key}: {value!r} is the study's own convention; a variant must change it")
        if changed in out:
            raise ValueError(f"{where}: the same variant twice ({variant_label(change)})")
        out.append(changed)
    return out
