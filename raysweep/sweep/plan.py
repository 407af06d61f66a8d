"""The sweep tree as data: which runs a study makes, their specs, keys, names and lineage.

    study
    └── level 1: one pretraining arm per mixing fraction λ
        └── level 2: one post-training run per stage-2 configuration (grid point or Optuna trial)
            └── stage 3: one fine-tuning run per learning rate, from θ_post

Every node has a content key (raysweep.store.keys.node_key: parent key, stage config, data, tokenizer,
seed) and a folder named by it; a node whose folder holds node.json is finished and never trained
again. Planning reads only the study and the prepared data's statistics: no Ray, no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from raysweep.config import Study
from raysweep.presets import PRESETS
from raysweep.spec import Node, RunSpec, Subtree
from raysweep.store import storage
from raysweep.store.keys import TRAINING_PROTOCOL, derive_seed, node_key
from raysweep.tags import METHOD, MIX_FRACTION, PARENT_NODE


def method_of(mix_fraction: float, replay: float = 0.0, dropout: float = 0.0, tuning: str = "full") -> str:
    """The method a run belongs to, as the analysis groups them (the paper's names: unmixed, mixed, +dropout,
    +replay, LoRA vs full fine-tuning). For LoRA runs the dropout is LoRA's, part of the LoRA method."""
    name = "mixed" if mix_fraction > 0 else "unmixed"
    if tuning == "lora":
        return name + "+lora" + ("+replay" if replay > 0 else "")
    if dropout > 0:
        name += "+dropout"
    if replay > 0:
        name += "+replay"
    return name


def lora_targets(study: Study) -> list[str]:
    """The modules that get adapters. With tied input/output embeddings an adapter on lm_head would,
    once merged, also change the input embeddings; it is left out there (README, "LoRA")."""
    tied = study.model.shape.tie_embeddings
    return [t for t in study.posttrain.lora_targets if not (tied and t == "lm_head")]


@dataclass(frozen=True)
class Stage2Config:
    """One point of the stage-2 search space under one arm."""

    mix_fraction: float
    lr: float
    dropout: float
    replay: float
    tuning: str
    batch_size: int
    trial: int | None = None  # the Optuna trial that asked for it (None: a grid point)


def grid(study: Study) -> list[Stage2Config]:
    """Every stage-2 configuration of the study's grid, in the tree's order."""
    p2 = study.posttrain
    return [
        Stage2Config(mix, lr, drop, rep, tuning, bs)
        for mix in study.pretrain.mix_fraction
        for lr in p2.lr
        for drop in p2.dropout
        for rep in p2.replay
        for tuning in p2.tuning
        for bs in p2.batch_sizes
    ]


def steps_for(tokens: int, batch_size: int, seq_len: int) -> int:
    """Optimizer steps of a token budget (at least one)."""
    return max(1, tokens // (batch_size * seq_len))


def stream_params(stream) -> dict:
    """A stream's realised make-up, as MLflow params (data.tokens.<source>, ...)."""
    st = stream.stats
    return {"stream": st["name"], "blocks": st["blocks"], "tokens": st["tokens"], "waste_fraction": round(st["waste_fraction"], 6)}


def model_id(study: Study, data) -> dict:
    """What every node key holds of the model: its shape and the tokenizer. A shape that differs
    from its preset's adds the whole shape (so the keys of preset-only studies are unchanged, and
    overrides that restate the preset change nothing)."""
    mid = {"preset": study.model.preset, "seq_len": study.model.seq_len, "tokenizer": data.tokenizer_id}
    shape = study.model.shape
    if shape != PRESETS[study.model.preset]:
        mid["shape"] = {k: v for k, v in asdict(shape).items() if k != "note"}
    if study.model.precision != "auto":  # auto (the device's own) keeps older studies' keys
        mid["precision"] = study.model.precision
    return mid


def node_spec(study: Study, stage: str, key: str, cfg, hyper: dict, **fields) -> RunSpec:
    """A node's RunSpec: its folder in the node store (from its stage and key), its stage's
    evaluation period and operational settings, its hyperparameters, and the node's own `fields`."""
    return RunSpec(
        stage=stage,
        node_key=key,
        node_dir=storage.join(study.checkpoints, stage, key),
        eval_every=cfg.eval_every,
        **cfg.operational(),
        **hyper,
        **fields,
    )


def plan_arm(study: Study, data, mix: float) -> Node:
    """The stage-1 node of one mixing fraction: one pass over its stream at most."""
    p1, mid = study.pretrain, model_id(study, data)
    stream = data.pretrain[mix]
    steps = max(1, stream.n_blocks // p1.batch_size)
    hyper = {
        "lr": p1.lr,
        "min_lr": p1.min_lr,
        "warmup_steps": p1.warmup_steps,
        "weight_decay": p1.weight_decay,
        "batch_size": p1.batch_size,
        **study.conventions.off_default("schedule", "decay_1d"),  # {} by default: older keys stay
    }
    key = node_key("pretrain", mid, hyper, stream.stats, study.seed, {"protocol": TRAINING_PROTOCOL})
    spec = node_spec(
        study,
        "pretrain",
        key,
        p1,
        hyper,
        label=f"pretrain λ={mix:g}",
        dataset="train",
        max_steps=steps,
        monitor=["pre", "post"],
        # paired arms: every λ starts from the same weights, so the λ comparison is not also an init comparison
        seed=derive_seed(study.seed, "init"),
        meta={"mix_fraction": mix, "mode": p1.mode, "stream": stream.stats, **mid},
    )
    params = {"mix_fraction": mix, "mode": p1.mode, "steps": steps, **hyper, "data": stream_params(stream)}
    return Node(spec, f"pretrain/mix={mix:g}", None, params, {MIX_FRACTION: mix, METHOD: method_of(mix)}, stream)


def plan_posttrain(study: Study, data, arm: Node, cfg: Stage2Config) -> Node:
    """The stage-2 node of one configuration under its arm."""
    p1, p2, mid, mix = study.pretrain, study.posttrain, model_id(study, data), cfg.mix_fraction
    stream = data.posttrain[mix, cfg.replay]
    lora = {"rank": p2.lora_rank, "alpha": p2.lora_alpha, "targets": lora_targets(study)} if cfg.tuning == "lora" else None
    steps = steps_for(p2.tokens, cfg.batch_size, study.model.seq_len)
    if p1.mode == "compute_matched":  # one pass in total: stage 2 never repeats its share
        steps = min(steps, max(1, stream.n_blocks // cfg.batch_size))
    hyper = {
        "lr": cfg.lr,
        "min_lr": p2.min_lr,
        "warmup_steps": p2.warmup_steps,
        "weight_decay": p2.weight_decay,
        "batch_size": cfg.batch_size,
        "dropout": cfg.dropout,
        **({"lora": lora} if lora else {}),
        **study.conventions.off_default("schedule", "decay_1d", "early_stop_min_delta"),
    }
    key = node_key("posttrain", arm.spec.node_key, hyper, stream.stats, steps, p2.patience, p2.eval_every, study.seed)
    # axes beyond lr and dropout appear in names only when used, so older names stay as they were
    used = ((f"replay={cfg.replay:g}", cfg.replay), ("lora", lora), (f"batch={cfg.batch_size}", len(p2.batch_sizes) > 1))
    extras = [part for part, on in used if on]
    path = "/".join([f"mix={mix:g}/lr={cfg.lr:g}/dropout={cfg.dropout:g}", *extras])
    spec = node_spec(
        study,
        "posttrain",
        key,
        p2,
        hyper,
        label=" ".join([f"posttrain λ={mix:g} lr={cfg.lr:g} drop={cfg.dropout:g}", *extras]),
        dataset="train",
        max_steps=steps,
        monitor=["post"],
        seed=derive_seed(study.seed, "posttrain", path),
        init_from=arm.spec.node_dir,
        early_stop_on="post",
        patience=p2.patience,
        meta={"mix_fraction": mix, "replay": cfg.replay, "parent": arm.spec.node_key, "stream": stream.stats, **mid},
    )
    params = {
        "mix_fraction": mix,
        "replay": cfg.replay,
        "tuning": cfg.tuning,
        **hyper,
        "max_steps": steps,
        "patience": p2.patience,
        "data": stream_params(stream),
        **({"optuna_trial": cfg.trial} if cfg.trial is not None else {}),
    }
    tags = {MIX_FRACTION: mix, METHOD: method_of(mix, cfg.replay, cfg.dropout, cfg.tuning), PARENT_NODE: arm.spec.node_key}
    return Node(spec, f"posttrain/{path}", arm.spec.node_key, params, tags, stream)


def plan_finetune(study: Study, data, post: Node, cfg: Stage2Config, lr: float) -> Node:
    """One stage-3 child of a stage-2 node: a fixed D_ft budget at one learning rate."""
    p1, p3, mid, mix = study.pretrain, study.finetune, model_id(study, data), cfg.mix_fraction
    hyper = {
        "lr": lr,
        "min_lr": p3.min_lr,
        "warmup_steps": p3.warmup_steps,
        "weight_decay": p3.weight_decay,
        "batch_size": p3.batch_size,
        **study.conventions.off_default("schedule", "decay_1d"),
    }
    key = node_key("finetune", post.spec.node_key, hyper, data.finetune.stats, p3.tokens, study.seed)
    path = f"{post.name.removeprefix('posttrain/')}/ft_lr={lr:g}"
    spec = node_spec(
        study,
        "finetune",
        key,
        p3,
        hyper,
        label=f"finetune {post.spec.label.removeprefix('posttrain ')} ft_lr={lr:g}",
        dataset="ft",
        max_steps=steps_for(p3.tokens, p3.batch_size, study.model.seq_len),
        monitor=["ft"],
        seed=derive_seed(study.seed, "finetune", path),
        init_from=post.spec.node_dir,
        keep_weights=p3.keep_weights,
        meta={"mix_fraction": mix, "replay": cfg.replay, "parent": post.spec.node_key, "stream": data.finetune.stats, **mid},
    )
    params = {
        "mix_fraction": mix,
        "posttrain_lr": cfg.lr,
        "dropout": cfg.dropout,
        "replay": cfg.replay,
        "tuning": cfg.tuning,
        **hyper,
        "tokens": p3.tokens,
        "mode": p1.mode,
        "post_tokens": p1.post_tokens,
        "seed": study.seed,
        "data": stream_params(data.finetune),
    }
    tags = {MIX_FRACTION: mix, METHOD: post.tags[METHOD], PARENT_NODE: post.spec.node_key}
    return Node(spec, f"finetune/{path}", post.spec.node_key, params, tags, data.finetune)


def plan(study: Study, data, stage2: list[Stage2Config] | None = None) -> tuple[list[Node], list[Subtree]]:
    """The whole tree as nodes: arms, and (stage-2 node, its stage-3 children) pairs, for the given
    stage-2 configurations (default: the grid)."""
    stage2 = grid(study) if stage2 is None else stage2
    arms, subtrees = [], []
    for mix in study.pretrain.mix_fraction:
        arm = plan_arm(study, data, mix)
        arms.append(arm)
        for cfg in (c for c in stage2 if c.mix_fraction == mix):
            post = plan_posttrain(study, data, arm, cfg)
            subtrees.append((post, [plan_finetune(study, data, post, cfg, lr) for lr in study.finetune.lr]))
    return arms, subtrees


def grid_rounds(study: Study, data):
    """The grid as a search (raysweep.sweep.tree.SEARCHES): one round, every configuration; it is
    sent the round's TreeResult and returns it."""
    return (yield plan(study, data))
