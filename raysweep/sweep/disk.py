"""The disk a study takes, from the config alone: its node store at the end and at its peak, its
data cache and MLflow. Pure arithmetic (no torch, no Ray, no data), so `--dry-run` says it before a
cluster or a bucket is paid for; bench/disk.py checks it against `du` of a real study.

What a node holds (raysweep.store.nodes): `model.safetensors` (fp32 weights; with tied embeddings the
embedding is stored twice, as the input embedding and the head, since safetensors refuses shared
tensors), `metrics.json` (every metric point) and `node.json`. While it trains, its `<key>.resume/`
progress checkpoint holds the weights (torch.save keeps a tied tensor once), AdamW's two moments
for each trained parameter, the best weights so far (stage 2's early stopping; the tied embedding
once since 2026-12-07, twice before) and the points so far; a run writes one only if it is longer than its
stage's `checkpoint_every`, and it is deleted once the node is finished. A warm slot trains one
node at a time, so at most one progress checkpoint per slot is alive at once; but a run that
writes a second one holds two while it does (the new file is written beside the old and renamed
over it, so a kill never leaves a run without a whole checkpoint): bench/rehearsal_135m.py found
the local cache at twice the checkpoint's size (2026-12-07).
"""

from __future__ import annotations

from dataclasses import dataclass

from raysweep.config import Study
from raysweep.presets import estimate_parameters, shape_of
from raysweep.spec import share_tokens

WEIGHT_BYTES = 4  # fp32 weights (what the loop trains and the node store keeps)
ADAM_BYTES = 8  # AdamW's exp_avg and exp_avg_sq, fp32, per trained parameter
# A metric point in metrics.json ([key, value, step, timestamp] as JSON) and in MLflow's SQLite
# store (its metrics row and index entries); measured by bench/disk.py (bench/RESULTS.md, 2026-12-03).
POINT_JSON_BYTES = 70
POINT_MLFLOW_BYTES = 250
NODE_FIXED_BYTES = 6_000  # node.json (the spec, results, file digests) and file-system slack, per node
MLFLOW_FIXED_BYTES = 6_000_000  # an empty store's tables, the report (plotly.js inside it: ≈ 4.7 MB) and tables
EVAL_SETS = 3  # held-out D_pre, D_post, D_ft at each evaluation
FINAL_POINTS = 20  # final metrics, tokens/s and the like, per run


@dataclass(frozen=True)
class StageDisk:
    runs: int
    node_bytes: int  # one finished node
    progress_bytes: int  # one progress checkpoint at its largest
    rewrites: bool = False  # a run writes more than one, so holds two while it writes the next

    @property
    def progress_peak(self) -> int:
        """What a run's progress checkpoints take at their fullest (two while one replaces the other)."""
        return self.progress_bytes * (2 if self.rewrites else 1)


@dataclass(frozen=True)
class StudyDisk:
    stages: dict[str, StageDisk]
    slots: int  # progress checkpoints alive at once, at most
    leaf_weights: int  # what stage 3's weights take (or would take, with finetune.keep_weights false)
    keep_leaf_weights: bool
    data: int | None  # token shards and their index (None: generated corpora, not estimated)
    mlflow: int
    rung_peak: int = 0  # halving: the rung nodes with weights at once, at most (before a rung's pruned ones drop theirs)

    @property
    def nodes_end(self) -> int:
        return sum(s.runs * s.node_bytes for s in self.stages.values())

    @property
    def nodes_peak(self) -> int:
        """The store at its fullest. Near the end each of the last `slots` items holds a progress
        checkpoint in place of nodes not yet written: a stage-2 run's in place of itself and its
        leaves, a leaf's in place of itself. Earlier, while the arms train, it holds the arms."""
        arm, post, leaf = (self.stages[s] for s in ("pretrain", "posttrain", "finetune"))
        leaves = leaf.runs // max(post.runs, 1)
        in_stage2 = post.progress_peak - post.node_bytes - leaves * leaf.node_bytes if post.progress_bytes else 0
        in_leaf = leaf.progress_peak - leaf.node_bytes if leaf.progress_bytes else 0
        end = self.nodes_end + self.slots * max(0, in_stage2, in_leaf)
        return max(end, arm.runs * max(arm.node_bytes, arm.progress_peak), arm.runs * arm.node_bytes + self.rung_peak)


def lora_parameters(study: Study, vocab: int) -> int:
    """Parameters of stage 2's LoRA adapters: rank × (inputs + outputs) of every targeted matrix."""
    s, p2 = shape_of(study.model.shape), study.posttrain
    attn_out = s.n_heads * s.head_dim
    shapes = {
        "q_proj": (s.hidden, attn_out),
        "k_proj": (s.hidden, s.n_kv_heads * s.head_dim),
        "v_proj": (s.hidden, s.n_kv_heads * s.head_dim),
        "o_proj": (attn_out, s.hidden),
        "gate_proj": (s.hidden, s.mlp_hidden),
        "up_proj": (s.hidden, s.mlp_hidden),
        "down_proj": (s.mlp_hidden, s.hidden),
    }
    if not s.tie_embeddings:  # with tied embeddings the head is not adapted (README)
        shapes["lm_head"] = (s.hidden, s.vocab_size or vocab)
    per_layer = sum(p2.lora_rank * (i + o) for name, (i, o) in shapes.items() if name in p2.lora_targets and name != "lm_head")
    head = p2.lora_rank * sum(shapes["lm_head"]) if "lm_head" in p2.lora_targets and "lm_head" in shapes else 0
    return s.n_layers * per_layer + head


def points(steps: int, eval_every: int) -> int:
    """Metric points of one run of `steps` optimizer steps (train loss and lr every 10 steps)."""
    return 2 * (steps // 10) + EVAL_SETS * (steps // eval_every + 1) + FINAL_POINTS


def study_disk(study: Study, vocab: int, slots: int, data: int | None) -> StudyDisk:
    """The disk `study` takes with `slots` warm slots; `data`: its token shards' bytes, if known."""
    n = estimate_parameters(study.model.shape, vocab)
    shape = shape_of(study.model.shape)
    stored = n + (shape.hidden * (shape.vocab_size or vocab) if shape.tie_embeddings else 0)  # tensors by key
    counts = study.run_counts()
    if study.posttrain.search == "halving":  # only the last rung's configurations train whole
        from raysweep.sweep.halving import planned_nodes

        counts = {**counts, **planned_nodes(study)}
    seq = study.model.seq_len
    stages, total_points = {}, 0
    for stage in ("pretrain", "posttrain", "finetune"):
        cfg = getattr(study, stage)
        tokens = cfg.tokens + (share_tokens(study.pretrain.post_tokens, max(study.pretrain.mix_fraction)) if stage == "pretrain" else 0)
        batch = min(cfg.batch_sizes) if stage == "posttrain" else cfg.batch_size
        steps = int(tokens // (batch * seq))
        run_points = points(steps, cfg.eval_every)
        total_points += counts[stage] * run_points
        trained = n
        if stage == "posttrain" and cfg.tuning == ["lora"]:
            trained = lora_parameters(study, vocab)
        best = n * WEIGHT_BYTES if stage == "posttrain" else 0  # early stopping keeps the best weights
        weights = 0 if stage == "finetune" and not cfg.keep_weights else stored * WEIGHT_BYTES
        checkpoints = cfg.checkpoint_every and steps > cfg.checkpoint_every
        stages[stage] = StageDisk(
            runs=counts[stage],
            node_bytes=weights + run_points * POINT_JSON_BYTES + NODE_FIXED_BYTES,
            progress_bytes=(n * WEIGHT_BYTES + trained * ADAM_BYTES + best + run_points * POINT_JSON_BYTES) if checkpoints else 0,
            rewrites=bool(checkpoints) and (steps - 1) // cfg.checkpoint_every >= 2,
        )
    rung_peak = 0
    if "rung" in counts:  # halving: a rung node is a stage-2 node cut short (its weights, fewer points); a probe keeps no weights
        post = stages["posttrain"]
        # a pruned configuration's rung drops its weights once decided: its record stays
        weights = stored * WEIGHT_BYTES
        stages["rung"] = StageDisk(runs=counts["rung_weights"], node_bytes=post.node_bytes, progress_bytes=0)
        stages["pruned rung"] = StageDisk(
            runs=counts["rung"] - counts["rung_weights"], node_bytes=post.node_bytes - weights, progress_bytes=0
        )
        rung_peak = counts["rung_weights_peak"] * post.node_bytes
        stages["probe"] = StageDisk(runs=counts["probe"], node_bytes=FINAL_POINTS * POINT_JSON_BYTES + NODE_FIXED_BYTES, progress_bytes=0)
        total_points += (counts["rung"] + counts["probe"]) * FINAL_POINTS
    items = (
        counts["pretrain"] + counts["posttrain"] + counts.get("rung", 0)
    )  # what the slots take: arms, stage-2 runs (and rungs) with their children
    return StudyDisk(
        rung_peak=rung_peak,
        stages=stages,
        slots=max(1, min(slots, items)),
        leaf_weights=counts["finetune"] * stored * WEIGHT_BYTES,
        keep_leaf_weights=study.finetune.keep_weights,
        data=data,
        mlflow=MLFLOW_FIXED_BYTES + total_points * POINT_MLFLOW_BYTES,
    )


def gb(n: float) -> str:
    """Bytes in the unit that reads best: 194.80 GB, 7.8 MB, 12 kB."""
    if n >= 1e8:
        return f"{n / 1e9:,.2f} GB"
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.0f} kB"


def describe_disk(d: StudyDisk, slots_from: str) -> list[str]:
    """The dry run's disk lines."""
    each = " · ".join(
        f"{stage} {gb(s.node_bytes)}"
        + (
            f" (+{gb(s.progress_bytes)} while training" + (f", {gb(s.progress_peak)} while the next replaces it)" if s.rewrites else ")")
            if s.progress_bytes
            else ""
        )
        for stage, s in d.stages.items()
    )
    lines = [
        f"  disk     node store {gb(d.nodes_end)} at the end, at most {gb(d.nodes_peak)} at its peak "
        f"({d.slots} progress checkpoint{'s' if d.slots != 1 else ''} at once: {slots_from}); per node: {each}",
        f"  disk     of which stage 3's weights {gb(d.leaf_weights)} (finetune.keep_weights: false keeps only their losses and metrics, all a frontier needs)"
        if d.keep_leaf_weights
        else f"  disk     stage 3 keeps no weights (finetune.keep_weights: false): {gb(d.leaf_weights)} saved",
        f"  disk     data cache {gb(d.data) if d.data is not None else 'megabytes (generated corpora)'} · MLflow ≈ {gb(d.mlflow)}",
    ]
    if "rung" in d.stages:
        rung, pruned, post, leaf = d.stages["rung"], d.stages["pruned rung"], d.stages["posttrain"], d.stages["finetune"]
        lines.insert(
            1,
            f"  disk     halving keeps {rung.runs + pruned.runs} rung nodes: the {rung.runs} whose configuration went on with their "
            f"weights ({gb(rung.runs * rung.node_bytes)}), the {pruned.runs} pruned ones without (dropped once their rung is "
            f"decided; {gb(d.rung_peak)} of rungs at most before), and {d.stages['probe'].runs} probes (no weights); "
            f"{post.runs} stage-2 runs train whole, with {leaf.runs} stage-3 runs",
        )
    return lines
