"""The checks that span several sections of a study, one function per concern, run in order by
`cross_checks` once every section is valid on its own. Each raises ValueError naming the key to
change; the first problem found is reported."""

from __future__ import annotations

from typing import TYPE_CHECKING

from raysweep.config.theory import check_linear
from raysweep.spec import share_tokens

if TYPE_CHECKING:
    from raysweep.config.study import Study

STAGES = ("pretrain", "posttrain", "finetune")


def cross_checks(study: Study) -> None:
    check_run_count(study)
    if study.model.kind == "linear":
        check_linear(study)
        return  # token budgets, batches and workers do not apply to it
    check_shared_resources(study)
    check_carving(study)
    check_halving(study)
    check_compute_matched(study)
    check_batches(study)
    from raysweep.memory import memory_problem

    problem = memory_problem(study)
    if problem:
        raise ValueError(problem)


def check_carving(study: Study) -> None:
    """Another held-out carving is asked (conventions or a robustness variant) only where some
    corpus carves its held-out documents from its one split; elsewhere it would change nothing."""
    asked = study.conventions.heldout_carving != "hash" or any("heldout_carving" in v for v in study.robustness)
    corpora = (study.corpora.pre, study.corpora.post, study.corpora.ft)
    carved = [c for c in corpora if c.source in ("hub", "local") and not c.heldout_split and not c.heldout_path]
    if asked and not carved:
        raise ValueError(
            "conventions.heldout_carving: no corpus of this study carves its held-out documents (built-in corpora and given "
            "held-out splits are held out as they come), so another carving would change nothing; remove it"
        )


def check_run_count(study: Study) -> None:
    runs = sum(study.run_counts().values())
    if runs > study.max_runs:
        raise ValueError(
            f"max_runs: the tree has {runs:,} runs, more than max_runs ({study.max_runs:,}); check the sweep lists "
            f"(--dry-run shows them), or raise the guard with --set max_runs={runs}"
        )


def check_shared_resources(study: Study) -> None:
    if study.finetune.resources != study.posttrain.resources:
        # stage-3 runs train in their stage-2 parent's worker group, right after it
        raise ValueError(
            "finetune.resources must equal posttrain.resources: each stage-2 run's fine-tuning "
            "children run in the same Ray Train worker group (see raysweep/sweep/work.py)"
        )


def check_compute_matched(study: Study) -> None:
    """Each λ leaves stage 2 at least one batch of D_post."""
    if study.pretrain.mode != "compute_matched":
        return
    need = max(study.posttrain.batch_sizes) * (study.model.seq_len + 1)
    for mix in study.pretrain.mix_fraction:
        rest = study.pretrain.post_tokens - share_tokens(study.pretrain.post_tokens, mix)
        if rest < need:
            raise ValueError(
                f"pretrain.mix_fraction: in compute_matched mode λ={mix:g} leaves (1−λ)·|D_post| = {rest:,} "
                f"tokens for stage 2, less than one stage-2 batch ({need:,}); the two parts cannot both be "
                f"non-empty and disjoint. Use λ < 1 that leaves a batch, or raise pretrain.post_tokens"
            )


def check_batches(study: Study) -> None:
    """Each stage's lr floor, and its batches against its tokens, workers and micro-batch."""
    for stage in STAGES:
        cfg = getattr(study, stage)
        if cfg.min_lr > min(cfg.lrs):
            raise ValueError(f"{stage}.min_lr ({cfg.min_lr}) is above its smallest lr ({min(cfg.lrs)})")
        blocks = cfg.tokens // study.model.seq_len
        for batch in cfg.batch_sizes:
            if blocks < batch:
                raise ValueError(
                    f"{stage}.tokens ({cfg.tokens}) fills {blocks} blocks of {study.model.seq_len} tokens, "
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


def check_halving(study: Study) -> None:
    """Halving continues each stage-2 run from its rung's progress checkpoint."""
    if study.posttrain.search == "halving" and not study.posttrain.checkpoint_every:
        raise ValueError(
            "posttrain.checkpoint_every: search halving continues each stage-2 run from its last rung's progress "
            "checkpoint; set it above 0 (the rungs add their own checkpoints)"
        )
