"""What `--dry-run` prints: the tree's runs per level, tokens and compute, from the config alone.

No data is read and neither torch nor Ray is imported (a test checks), so a paper-scale study can be
checked on a laptop in seconds before a cluster is paid for.
"""

from __future__ import annotations

import os

from raysweep.config import Study
from raysweep.data.mixing import ROLES, mixture_weight, needed_tokens
from raysweep.data.shards import INDEX_BYTES_PER_DOC, cache_bytes
from raysweep.data.slices import needed_tokens as slices_needed_tokens
from raysweep.memory import PRETRAINED_VOCAB, stage_fits
from raysweep.presets import estimate_parameters
from raysweep.spec import share_tokens
from raysweep.sweep.disk import describe_disk, gb, study_disk

# Tokenization rate per CPU, measured by bench/data_scale.py (bench/RESULTS.md, 2026-12-01: this
# project's 2-core CPU machine, byte-level BPE of 4,096 ids, local jsonl: 318k tokens/s on 1 CPU,
# 282k per CPU with both busy); a cluster's CPUs tokenize side by side, one shard per CPU.
TOKENIZE_TOKENS_PER_CPU_S = 280_000
TOKENS_PER_DOC_GUESS = 500  # for the index's size only (C4 averages ≈ 480 tokens a document)
H100_BF16_FLOPS, ASSUMED_MFU = 989e12, 0.4  # dense bf16 peak; the MFU a tuned Llama of this size reaches
# Training tokens/s of one GPU measured by bench/gpu_check.py, per preset: (tokens/s, GPU, date).
# None yet: no GPU was lent when the loop could fit the paper's shape (2026-12-03); the GPU-hours
# then rest on ASSUMED_MFU, and the dry run says so.
MEASURED_TOKENS_PER_S: dict[str, tuple[float, str, str]] = {}
# What a node store moves per second from one machine, for the dry run's transfer times: an
# assumption (S3 multipart or a shared file system from one cloud VM is typically 0.1–1 GB/s),
# stated where it is used; bench/rehearsal_135m.py measures the local S3 API's.
STORE_BYTES_PER_S = 250e6


def gpu_tokens_per_s(n_params: int) -> float:
    """Training tokens/s of one H100 on a model of `n_params` (6·N FLOPs a token at ASSUMED_MFU)."""
    return H100_BF16_FLOPS * ASSUMED_MFU / (6 * n_params)


def corpus_label(c) -> str:
    return {"synthetic": f"{c.name} (built-in)", "hub": f"{c.dataset}" + (f"/{c.subset}" if c.subset else "") + " (hub)"}.get(
        c.source, f"{c.path} (local)"
    )


def stage_tokens(study: Study) -> tuple[float, float, float]:
    """Tokens each level trains on at most: stage 1 (every arm), stage 2 (every run), stage 3."""
    p1, p2, p3 = study.pretrain, study.posttrain, study.finetune
    sizes = study.run_counts()
    t1 = sum(p1.tokens + share_tokens(p1.post_tokens, mix) for mix in p1.mix_fraction)
    per_arm = sizes["posttrain"] // sizes["pretrain"]
    if p1.mode == "compute_matched":  # stage 2 makes one pass over the (1−λ)·|D_post| stage 1 left
        t2 = per_arm * sum(min(p2.tokens, p1.post_tokens - share_tokens(p1.post_tokens, mix)) for mix in p1.mix_fraction)
    else:
        t2 = sizes["posttrain"] * p2.tokens
    return t1, t2, sizes["finetune"] * p3.tokens


def describe_data(study: Study) -> list[str]:
    """Per corpus: tokens to tokenize, the token shards' bytes on disk, CPU-hours to tokenize them."""
    vocab = PRETRAINED_VOCAB if study.tokenizer.pretrained else study.tokenizer.vocab_size
    need, shards = needed_tokens(study), cache_bytes(study, vocab)
    lines = []
    for role in ROLES:
        cfg = getattr(study.corpora, role)
        if cfg.source == "synthetic":
            lines.append(
                f"  data     {role:<4} {corpus_label(cfg)}: generated, {cfg.train_docs or 'default'} documents; tokenized in seconds"
            )
            continue
        disk = shards[role] + need[role] / TOKENS_PER_DOC_GUESS * INDEX_BYTES_PER_DOC
        hours = need[role] / TOKENIZE_TOKENS_PER_CPU_S / 3600
        lines.append(
            f"  data     {role:<4} {corpus_label(cfg)}: {need[role]:,} tokens to tokenize (read once, whatever the arms), "
            f"≈ {disk / 1e9:,.2f} GB of token shards, ≈ {hours:,.2f} CPU-hours at {TOKENIZE_TOKENS_PER_CPU_S / 1e3:,.0f}k tokens/s per CPU"
        )
    return lines


def heldout_summary(study: Study) -> str:
    c, eval_tokens = study.corpora, min(study.pretrain.eval_tokens, study.posttrain.eval_tokens, study.finetune.eval_tokens)
    line = (
        f"  held-out {c.pre.heldout_docs:,} / {c.post.heldout_docs:,} / {c.ft.heldout_docs:,} documents (pre / post / ft) kept out of "
        f"training; an evaluation scores all of a set, or a seeded sample of {eval_tokens:,} tokens from across it"
    )
    return line + "\n" + slices_summary(study, eval_tokens)


def slices_summary(study: Study, eval_tokens: int) -> str:
    """What the held-out slices need and cost (raysweep.data.slices): tokens per held-out set, and
    the evaluation passes that score every final checkpoint on them after training."""
    k = study.analysis.heldout_slices
    if k < 2:
        return f"  held-out slices: none (analysis.heldout_slices is {k})"
    need = slices_needed_tokens(k, eval_tokens, study.model.seq_len + 1)
    return (
        f"  held-out slices: {k} per held-out set (analysis.heldout_slices), by document, each filling an evaluation of "
        f"{eval_tokens:,} tokens: each set needs ≥ {need:,} held-out tokens (fewer slices are made where it has less); "
        f"after training, every final checkpoint is scored on them from its stored weights ({slice_tokens(study):,} tokens, no training)"
    )


def describe_tree(study: Study) -> str:
    """The tree's size and cost, from the config alone (no data, no Ray)."""
    if study.model.kind == "linear":
        return describe_linear(study)
    p1, p2, p3 = study.pretrain, study.posttrain, study.finetune
    sizes = study.run_counts()
    vocab = PRETRAINED_VOCAB if study.tokenizer.pretrained else study.tokenizer.vocab_size
    n_params = estimate_parameters(study.model.shape, vocab)
    t1, t2, t3 = stage_tokens(study)
    flops = 6 * n_params * (t1 + t2 + t3)
    disk = disk_of(study, vocab)
    if p2.search == "optuna":
        level2 = (
            f"Optuna: {p2.trials} per λ, {p2.optuna_batch} at a time, lr log-uniform in [{min(p2.lr):g}, {max(p2.lr):g}], dropout ∈ {p2.dropout}, "
            f"replay ∈ {p2.replay}, tuning ∈ {p2.tuning}, batch ∈ {p2.batch_sizes}, told the stage-3 children's (L_ret, L_ft); "
        )
    else:
        level2 = f"lr ∈ {p2.lr} × dropout ∈ {p2.dropout} × replay ∈ {p2.replay} × tuning ∈ {p2.tuning} × batch ∈ {p2.batch_sizes} per λ; "
    if p2.search == "halving":
        level2 = "at most (halving prunes them): " + level2
    level2 += (
        f"one pass over (1−λ)·{p1.post_tokens:,} D_post tokens"
        if p1.mode == "compute_matched"
        else f"≤ {p2.tokens:,} tokens each (early stopping)"
    )
    lines = [
        f"study {study.name!r} (hash {study.content_hash()}), model {study.model.shape_label()} ≈{n_params / 1e6:.2f}M params, seq {study.model.seq_len}",
        f"  model    {study.model.shape.summary()}, vocabulary {study.model.shape.vocab_size or vocab:,}",
        f"  corpora  pre {corpus_label(study.corpora.pre)} · post {corpus_label(study.corpora.post)} · ft {corpus_label(study.corpora.ft)}",
        *describe_data(study),
        heldout_summary(study),
        f"  level 1  pretrain   {sizes['pretrain']:>4} runs  λ ∈ {p1.mix_fraction} ({p1.mode}); {p1.tokens:,} D_pre tokens + λ·{p1.post_tokens:,} D_post each",
        f"  level 2  posttrain  {sizes['posttrain']:>4} runs  " + level2,
        f"  level 3  finetune   {sizes['finetune']:>4} runs  lr ∈ {p3.lr} per stage-2 run; {p3.tokens:,} tokens each",
        f"  runs     {sum(sizes.values()):,} in all (the guard max_runs is {study.max_runs:,})",
        f"  tokens at most: {t1 + t2 + t3:,.0f} ({t1:,.0f} / {t2:,.0f} / {t3:,.0f}); compute ≈ 6·N·D = {flops:.3g} FLOPs"
        f" ≈ {gpu_hours(study, flops, t1 + t2 + t3)}",
        *describe_compute(study, n_params),
        *describe_halving(study),
        *describe_robustness(study, disk[0]),
        *describe_memory(study),
        *describe_disk(*disk),
        *describe_transfer(disk[0]),
        f"  output: {study.out}",
    ]
    return "\n".join(lines)


def variant_runs(study: Study, change: dict) -> dict[str, float]:
    """Per stage, the runs a robustness variant trains anew: the nodes whose key its change moves
    (raysweep.robustness). A stage-2-only change keeps the arms; a stage-1 mixing change keeps the
    arm without D_post (λ = 0) and its subtree; every other change moves every node."""
    sizes = study.run_counts()
    [key] = change
    if key == "early_stop_min_delta":
        return {**sizes, "pretrain": 0}
    share = sum(m > 0 for m in study.pretrain.mix_fraction) / len(study.pretrain.mix_fraction) if key == "stage1_mixing" else 1.0
    return {stage: share * n for stage, n in sizes.items()}


def variant_cost(study: Study, change: dict) -> tuple[float, float]:
    """(runs, tokens) a robustness variant trains anew (variant_runs)."""
    runs, sizes = variant_runs(study, change), study.run_counts()
    tokens = dict(zip(("pretrain", "posttrain", "finetune"), stage_tokens(study)))
    return sum(runs.values()), sum(tokens[s] * runs[s] / sizes[s] for s in runs if sizes[s])


def describe_robustness(study: Study, disk=None) -> list[str]:
    """What the robustness section adds before any compute: per variant, the runs and tokens trained
    anew; and with the study's disk (raysweep.sweep.disk.StudyDisk), the node store they add."""
    if not study.robustness:
        return []
    from raysweep.config.conventions import variant_label

    costs = [(variant_label(c), *variant_cost(study, c)) for c in study.robustness]
    each = "; ".join(f"{label}: {runs:,.0f} runs, {tokens:,.0f} tokens" for label, runs, tokens in costs)
    runs, tokens = sum(c[1] for c in costs), sum(c[2] for c in costs)
    stored = ""
    if disk is not None:  # the variants' finished nodes, each as large as the study's own of its stage
        added = sum(n * disk.stages[s].node_bytes for c in study.robustness for s, n in variant_runs(study, c).items())
        stored = f" and {gb(added)} to the node store"
    return [
        f"  robust.  {len(costs)} variants of the study's conventions add {runs:,.0f} runs, ≤ {tokens:,.0f} training tokens{stored} "
        f"(nodes a change leaves alone are shared): {each}"
    ]


def describe_halving(study: Study) -> list[str]:
    """What `search: halving` plans against the grid (raysweep.sweep.halving.planned_tokens)."""
    p2 = study.posttrain
    if p2.search != "halving":
        return []
    from raysweep.sweep.halving import eta_of, planned_tokens

    t, eta = planned_tokens(study), eta_of(study)
    counts = "; ".join(f"{m} {' → '.join(map(str, n))}" for m, n in t["per_method"].items())
    chosen = f" (the smallest η within posttrain.budget_share {p2.budget_share:g})" if p2.budget_share is not None else ""
    return [
        f"  halving  rungs at {', '.join(f'{s:.3g}' for s in p2.rungs)} of each stage-2 run, the best 1/{eta}{chosen} of each method going on "
        f"({counts} configurations), probes of {p2.probe_share:g} of a stage-3 run at each stage-3 lr",
        f"           stage-2 + stage-3 tokens at most: {t['halving']:,} against the grid's {t['grid']:,} ({t['halving'] / t['grid']:.0%})",
    ]


def gpu_hours(study: Study, flops: float, tokens: float, short: bool = False) -> str:
    """The tree's GPU-hours: from a measured rate where bench/gpu_check.py measured the preset (the
    GPU and date named), else from ASSUMED_MFU, said as an assumption (`short`: the hours alone)."""
    measured = MEASURED_TOKENS_PER_S.get(study.model.preset) if not study.model.shape_overrides() else None
    if measured:
        rate, gpu, date = measured
        if short:
            return f"{tokens / rate / 3600:.3g} {gpu}-hours"
        return f"{tokens / rate / 3600:.3g} {gpu}-hours at the {rate:,.0f} tokens/s measured on one ({date}, bench/gpu_check.py)"
    if short:
        return f"{flops / (H100_BF16_FLOPS * ASSUMED_MFU) / 3600:.3g} H100-hours"
    return (
        f"{flops / (H100_BF16_FLOPS * ASSUMED_MFU) / 3600:.3g} H100-hours at {ASSUMED_MFU:.0%} MFU (bf16 dense peak "
        f"{H100_BF16_FLOPS / 1e12:.0f} TFLOP/s; assumed, not measured for this shape: bench/gpu_check.py measures it)"
    )


def describe_compute(study: Study, n_params: int) -> list[str]:
    """Per stage: runs, tokens at most, 6·N·D FLOPs and GPU-hours, with where the rate comes from."""
    sizes, lines = study.run_counts(), []
    for stage, tokens in zip(("pretrain", "posttrain", "finetune"), stage_tokens(study)):
        flops = 6 * n_params * tokens
        lines.append(
            f"  compute  {stage:<9} {sizes[stage]:>4} runs, ≤ {tokens:,.0f} tokens, {flops:.3g} FLOPs ≈ {gpu_hours(study, flops, tokens, short=True)}"
        )
    if "lora" in study.posttrain.tuning:
        lines.append("  compute  (LoRA runs counted at 6·N a token: their backward skips the frozen weights' gradients, ≈ 4·N)")
    scored = slice_tokens(study)
    if scored:  # forward passes only: 2·N a token, a third of a training token's 6·N
        flops = 2 * n_params * scored
        lines.append(
            f"  compute  slices    {scored:,} held-out tokens scored after training (forward only), {flops:.3g} FLOPs "
            f"≈ {gpu_hours(study, flops, scored / 3, short=True)}"
        )
    return lines


def slice_tokens(study: Study) -> int:
    """Tokens the held-out slices' evaluation passes score after training, at most (0: no slices)."""
    k = study.analysis.heldout_slices
    if k < 2 or study.model.kind != "lm":
        return 0
    runs = study.run_counts()
    eval_tokens = min(study.pretrain.eval_tokens, study.posttrain.eval_tokens, study.finetune.eval_tokens)
    return (runs["posttrain"] + 3 * runs["finetune"]) * k * eval_tokens


def describe_transfer(d) -> list[str]:
    """Per stage: a node's bytes and its progress checkpoint's, in seconds to upload (or download)
    at STORE_BYTES_PER_S."""
    each = " · ".join(
        f"{stage} {gb(s.node_bytes)} {s.node_bytes / STORE_BYTES_PER_S:,.1f} s"
        + (f" (progress {gb(s.progress_bytes)} {s.progress_bytes / STORE_BYTES_PER_S:,.1f} s)" if s.progress_bytes else "")
        for stage, s in d.stages.items()
    )
    return [
        f"  transfer per node, up or down, at {STORE_BYTES_PER_S / 1e6:,.0f} MB/s (assumed for an object store or shared "
        f"file system from one machine; measure yours): {each}"
    ]


def describe_memory(study: Study) -> list[str]:
    """Per stage (and stage-2 batch size): micro-batch, accumulation steps, estimated peak per worker
    against its memory (raysweep.memory)."""
    lines = []
    for stage, what, fit in stage_fits(study):
        ckpt = ", activation checkpointing" if getattr(study, stage).activation_checkpointing else ""
        lines.append(f"  memory   {stage:<9} {what + ': ' if what else ''}{fit.line()}{ckpt}")
    if any("assumed" in fit.memory_said for _, _, fit in stage_fits(study)):
        lines.append("  memory   for another GPU set <stage>.resources.memory_gb to its memory (e.g. 48 for an L40S; README, 'Memory')")
    return lines


def disk_of(study: Study, vocab: int):
    """The study's disk (raysweep.sweep.disk) with the slots it would have: `max_concurrent_trials`,
    or as many as this machine's CPUs feed (what a local run gets)."""
    need, shards = needed_tokens(study), cache_bytes(study, vocab)
    data = sum(shards[r] + need[r] / TOKENS_PER_DOC_GUESS * INDEX_BYTES_PER_DOC for r in shards) if shards else None
    if study.max_concurrent_trials:
        slots, said = study.max_concurrent_trials, "max_concurrent_trials"
    else:
        r = study.pretrain.resources
        cpus = os.cpu_count() or 1
        slots, said = (
            max(1, int(cpus // (r.workers * r.cpus_per_worker))),
            f"this machine's {cpus} CPUs; set max_concurrent_trials for a cluster",
        )
    return study_disk(study, vocab, slots, data), said


def describe_linear(study: Study) -> str:
    th, p1, p2, p3 = study.theory, study.pretrain, study.posttrain, study.finetune
    f = th.features
    d = f.invariant + f.inconsistent + f.specialised + f.ft_only
    sizes = study.run_counts()
    alphas = ", ".join(f"{mixture_weight(p1.tokens, p1.post_tokens, mix):.3f}" for mix in p1.mix_fraction)
    return "\n".join(
        [
            f"study {study.name!r} (hash {study.content_hash()}), two-layer linear network {d}→{th.width}→{d} (raysweep/train/theory.py)",
            f"  features invariant {f.invariant} · inconsistent {f.inconsistent} · specialised {f.specialised} · ft_only {f.ft_only}; co-occurrence ρ={th.co_occurrence:g}",
            f"  level 1  pretrain   {sizes['pretrain']:>4} runs  λ ∈ {p1.mix_fraction} → stage-1 mixture weight α ∈ [{alphas}]; {th.steps.pretrain:,} GD steps, lr {p1.lr:g}",
            f"  level 2  posttrain  {sizes['posttrain']:>4} runs  lr ∈ {p2.lr} per λ; ≤ {th.steps.posttrain:,} GD steps (until L_post < {th.converged:g})",
            f"  level 3  finetune   {sizes['finetune']:>4} runs  lr ∈ {p3.lr} per stage-2 run; {th.steps.finetune:,} GD steps each",
            f"  runs in the driver in seconds (no Ray); output: {study.out}",
        ]
    )
