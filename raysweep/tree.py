"""The sweep tree: Ray Tune levels whose trials each fit one Ray Train `TorchTrainer`.

    study
    └── level 1: one pretraining arm per mixing fraction λ                   (Tune trial -> fit)
        └── level 2: one post-training run per stage-2 configuration          (Tune trial -> fit)
            └── stage 3: one fine-tuning run per learning rate, from θ_post    (same fit, after stage 2)

A stage-2 trial runs its stage-3 children in the same worker group right after stage 2: they
start the moment their parent ends (not when the slowest sibling does), and the tree pays one
fit's start-up per stage-2 configuration instead of one per leaf.

Every node has a content key (parent key, stage config, data, tokenizer, seed) and a folder
named by it. A node whose folder holds node.json is finished and never trained again, so running
the same command after an interruption resumes where it stopped.

Trials reserve one byte of Ray's `memory` resource, never CPU or GPU: their Train workers need
those, and a trial that holds a CPU starves its own workers (ray#25239, ray#54305). Tune refuses
a trial with no resources at all; one byte of memory exists on every node of every cluster, so
no custom resource has to be declared anywhere. Concurrency is capped at what the cluster's
CPUs/GPUs can feed, so no trial waits on workers it cannot get.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from analysis.runs import make_row
from raysweep.config import Study
from raysweep.mixing import derive_seed
from raysweep.stage import RunSpec, node_done
from raysweep.streams import Stream

TRIAL_RESOURCES = {"memory": 1}  # see the module docstring


def node_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def method_of(mix_fraction: float, replay: float = 0.0, dropout: float = 0.0, tuning: str = "full") -> str:
    """The method a run belongs to, as the analysis groups them (PAPER.md: unmixed, mixed, +dropout,
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
    from raysweep.models import PRESETS

    tied = PRESETS[study.model.preset].tie_embeddings
    return [t for t in study.posttrain.lora_targets if not (tied and t == "lm_head")]


@dataclass(frozen=True)
class Node:
    """One run of the tree and where it lives."""

    spec: RunSpec
    name: str        # MLflow run name, deterministic from the tree path
    parent: str | None  # parent node key (None for arms)
    params: dict
    tags: dict
    stream: Stream   # what it trains on


def _steps(tokens: int, batch_size: int, seq_len: int) -> int:
    return max(1, tokens // (batch_size * seq_len))


def stream_params(stream: Stream) -> dict:
    """A stream's realised make-up, as MLflow params (data.tokens.<source>, ...)."""
    st = stream.stats
    return {"stream": st["name"], "blocks": st["blocks"], "tokens": st["tokens"], "waste_fraction": round(st["waste_fraction"], 6)}


def plan(study: Study, data) -> tuple[list[Node], list[tuple[Node, list[Node]]]]:
    """The whole tree as RunSpecs: arms, and (stage-2 node, its stage-3 children) pairs."""
    out = study.checkpoints
    seq = study.model.seq_len
    model_id = {"preset": study.model.preset, "seq_len": seq, "tokenizer": data.tokenizer_id}
    arms, subtrees = [], []
    p1, p2, p3 = study.pretrain, study.posttrain, study.finetune
    for lam in p1.mix_fraction:
        stream = data.pretrain[lam]
        # one pass over the stage-1 stream at most: the step count comes from its size
        steps = max(1, stream.n_blocks // p1.batch_size)
        hyper = {"lr": p1.lr, "min_lr": p1.min_lr, "warmup_steps": p1.warmup_steps, "weight_decay": p1.weight_decay, "batch_size": p1.batch_size}
        key = node_key("pretrain", model_id, hyper, stream.stats, study.seed)
        spec = RunSpec(
            stage="pretrain", label=f"pretrain λ={lam:g}", node_key=key, node_dir=str(out / "pretrain" / key), dataset="train",
            max_steps=steps, eval_every=p1.eval_every, monitor=["pre", "post"], seed=derive_seed(study.seed, "pretrain", lam),
            checkpoint_every=p1.checkpoint_every,
            meta={"mix_fraction": lam, "mode": p1.mode, "stream": stream.stats, **model_id}, **hyper,
        )
        arm = Node(spec, f"pretrain/mix={lam:g}", None, {"mix_fraction": lam, "mode": p1.mode, "steps": steps, **hyper, "data": stream_params(stream)},
                   {"raysweep.mix_fraction": lam, "raysweep.method": method_of(lam)}, stream)
        arms.append(arm)
        for lr2 in p2.lr:
            for drop in p2.dropout:
                for rep, tuning, bs in [(r, t, b) for r in p2.replay for t in p2.tuning for b in p2.batch_sizes]:
                    s2stream = data.posttrain[lam, rep]
                    lora = {"rank": p2.lora_rank, "alpha": p2.lora_alpha, "targets": lora_targets(study)} if tuning == "lora" else None
                    steps2 = _steps(p2.tokens, bs, seq)
                    if p1.mode == "compute_matched":  # one pass in total: stage 2 never repeats its share
                        steps2 = min(steps2, max(1, s2stream.n_blocks // bs))
                    hyper2 = {"lr": lr2, "min_lr": p2.min_lr, "warmup_steps": p2.warmup_steps, "weight_decay": p2.weight_decay,
                              "batch_size": bs, "dropout": drop, **({"lora": lora} if lora else {})}
                    k2 = node_key("posttrain", key, hyper2, s2stream.stats, steps2, p2.patience, p2.eval_every, study.seed)
                    # axes beyond lr and dropout appear in names only when used, so older names stay as they were
                    extras = [part for part, used in ((f"replay={rep:g}", rep), ("lora", lora), (f"batch={bs}", len(p2.batch_sizes) > 1)) if used]
                    path2 = "/".join([f"mix={lam:g}/lr={lr2:g}/dropout={drop:g}", *extras])
                    method = method_of(lam, rep, drop, tuning)
                    s2 = RunSpec(
                        stage="posttrain", label=" ".join([f"posttrain λ={lam:g} lr={lr2:g} drop={drop:g}", *extras]),
                        node_key=k2, node_dir=str(out / "posttrain" / k2),
                        dataset="train", max_steps=steps2, eval_every=p2.eval_every, monitor=["post"],
                        seed=derive_seed(study.seed, "posttrain", path2), init_from=arm.spec.node_dir, early_stop_on="post", patience=p2.patience,
                        checkpoint_every=p2.checkpoint_every,
                        meta={"mix_fraction": lam, "replay": rep, "parent": key, "stream": s2stream.stats, **model_id}, **hyper2,
                    )
                    n2 = Node(s2, f"posttrain/{path2}", key,
                              {"mix_fraction": lam, "replay": rep, "tuning": tuning, **hyper2, "max_steps": steps2, "patience": p2.patience, "data": stream_params(s2stream)},
                              {"raysweep.mix_fraction": lam, "raysweep.method": method, "raysweep.parent_node": key}, s2stream)
                    children = []
                    for lr3 in p3.lr:
                        hyper3 = {"lr": lr3, "min_lr": p3.min_lr, "warmup_steps": p3.warmup_steps, "weight_decay": p3.weight_decay, "batch_size": p3.batch_size}
                        k3 = node_key("finetune", k2, hyper3, data.finetune.stats, p3.tokens, study.seed)
                        path3 = f"{path2}/ft_lr={lr3:g}"
                        s3 = RunSpec(
                            stage="finetune", label=f"finetune {s2.label.removeprefix('posttrain ')} ft_lr={lr3:g}", node_key=k3,
                            node_dir=str(out / "finetune" / k3), dataset="ft", max_steps=_steps(p3.tokens, p3.batch_size, seq),
                            eval_every=p3.eval_every, monitor=["ft"], seed=derive_seed(study.seed, "finetune", path3), init_from=s2.node_dir,
                            checkpoint_every=p3.checkpoint_every,
                            meta={"mix_fraction": lam, "replay": rep, "parent": k2, "stream": data.finetune.stats, **model_id}, **hyper3,
                        )
                        children.append(Node(s3, f"finetune/{path3}", k2,
                                             {"mix_fraction": lam, "posttrain_lr": lr2, "dropout": drop, "replay": rep, "tuning": tuning, **hyper3, "tokens": p3.tokens,
                                              "mode": p1.mode, "post_tokens": p1.post_tokens, "seed": study.seed, "data": stream_params(data.finetune)},
                                             {"raysweep.mix_fraction": lam, "raysweep.method": method, "raysweep.parent_node": k2}, data.finetune))
                    subtrees.append((n2, children))
    return arms, subtrees


# ----------------------------------------------------------------------------- Ray glue

def _final_metrics(stage: str, losses: dict[str, float]) -> dict[str, float]:
    """The study's named losses (PAPER.md) from a node's held-out losses."""
    m = {f"final_{k}": v for k, v in losses.items()}
    if stage == "posttrain":
        m["L_im"] = losses["post"]
    if stage == "finetune":
        m.update(L_ft=losses["ft"], L_ret=losses["post"], L_pre=losses["pre"])
    return m


def _fit(runs: list[RunSpec], datasets: dict, ctx: dict, resources, run_name: str) -> list[dict]:
    import ray.train
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raysweep.stage import train_loop

    loop_cfg = {**ctx["loop"], "runs": [asdict(r) for r in runs]}
    loop_cfg["threads"] = max(1, int(resources.cpus_per_worker))
    worker = {"CPU": resources.cpus_per_worker}
    if resources.gpus_per_worker:
        worker["GPU"] = resources.gpus_per_worker
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_cfg,
        scaling_config=ScalingConfig(num_workers=resources.workers, use_gpu=resources.gpus_per_worker > 0, resources_per_worker=worker),
        run_config=RunConfig(name=run_name, storage_path=ctx["ray_storage"]),
        datasets=datasets,
        # every rank reads its own per-rank dataset (streams.rank_rows): no Ray-side splitting
        dataset_config=DataConfig(datasets_to_split=[]),
    )
    return trainer.fit().return_value


def _record(tracker, node: Node, run_id: str, result: dict) -> dict:
    metrics = _final_metrics(node.spec.stage, result["losses"])
    metrics.update(steps=result["steps"], tokens=result["tokens"], tokens_per_s=result["tokens_per_s"], best_step=result["best_step"])
    if "data_wait_share" in result:
        metrics["data_wait_share"] = result["data_wait_share"]
    tracker.finish(run_id, metrics)
    return metrics


def _ensure_finished(tracker, node: Node, parent_run: str) -> str:
    """For a node already trained: make sure its MLflow run exists and holds its final losses."""
    run_id = tracker.node_run(*_run_args(node, parent_run))
    done = node_done(node.spec.node_dir)
    if tracker.client.get_run(run_id).info.status != "FINISHED":
        _record(tracker, node, run_id, done["result"])
    return run_id


def pretrain_trial(config: dict, ctx: dict) -> None:
    from ray import tune

    from raysweep.streams import as_train_datasets

    arm: Node = ctx["arms"][config["arm"]]
    tracker = ctx["tracker"]
    run_id = tracker.node_run(*_run_args(arm, ctx["study_run"]))
    spec = RunSpec(**{**asdict(arm.spec), "run_id": run_id})
    try:
        res = ctx["resources"]["pretrain"]
        datasets = as_train_datasets(arm.stream, "train", arm.spec.batch_size, res.workers)
        [result] = _fit([spec], datasets, ctx, res, f"{arm.spec.node_key}")
    except Exception:
        tracker.finish(run_id, {}, failed=True)
        raise
    tune.report(_record(tracker, arm, run_id, result))


def posttrain_trial(config: dict, ctx: dict) -> None:
    from ray import tune

    from raysweep.streams import as_train_datasets

    node, children = ctx["subtrees"][config["subtree"]]
    tracker = ctx["tracker"]
    arm_run = tracker.node_run(*_run_args(ctx["arm_nodes"][node.parent], ctx["study_run"]))
    post_run = tracker.node_run(*_run_args(node, arm_run))
    runs, nodes, run_ids = [], [], {}
    if not node_done(node.spec.node_dir):
        run_ids[node.spec.node_key] = post_run
        runs.append(RunSpec(**{**asdict(node.spec), "run_id": post_run}))
        nodes.append(node)
    else:
        _ensure_finished(tracker, node, arm_run)
    for child in children:
        if node_done(child.spec.node_dir):
            _ensure_finished(tracker, child, post_run)
            continue
        run_ids[child.spec.node_key] = tracker.node_run(*_run_args(child, post_run))
        runs.append(RunSpec(**{**asdict(child.spec), "run_id": run_ids[child.spec.node_key]}))
        nodes.append(child)
    if runs:
        res = ctx["resources"]["posttrain"]
        datasets = {**as_train_datasets(node.stream, "train", node.spec.batch_size, res.workers),
                    **as_train_datasets(children[0].stream, "ft", children[0].spec.batch_size, res.workers)}
        try:
            results = _fit(runs, datasets, ctx, res, node.spec.node_key)
        except Exception:
            # runs of this fit that finished before the failure keep their results
            for n in nodes:
                done = node_done(n.spec.node_dir)
                if done:
                    _record(tracker, n, run_ids[n.spec.node_key], done["result"])
                else:
                    tracker.finish(run_ids[n.spec.node_key], {}, failed=True)
            raise
        for n, res in zip(nodes, results):
            _record(tracker, n, run_ids[n.spec.node_key], res)
    tune.report({"trained": len(runs), "L_im": (node_done(node.spec.node_dir) or {}).get("result", {}).get("losses", {}).get("post")})


def _run_args(node: Node, parent_run: str):
    return (node.spec.node_key, node.name, parent_run, node.spec.stage, node.params, node.tags)


def _progress_callback(level: str, total: int, describe):
    """A Tune callback printing one line per finished or failed trial, with the level's progress."""
    from ray.tune import Callback

    class _Progress(Callback):
        def __init__(self):
            self.t0, self.done = time.perf_counter(), 0

        def _line(self, trial, what: str) -> None:
            self.done += 1
            elapsed = time.perf_counter() - self.t0
            left = elapsed / self.done * (total - self.done)
            print(f"[tree] {level} {self.done}/{total} {describe(trial.config)} {what} "
                  f"({elapsed:.0f}s elapsed, ~{left:.0f}s left)", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            r = trial.last_result or {}
            shown = ", ".join(f"{k} {r[k]:.3f}" for k in ("final_pre", "final_post", "L_im") if isinstance(r.get(k), float))
            self._line(trial, f"done{': ' + shown if shown else ''}")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line(trial, "FAILED")

    return _Progress()


def _tune(trainable, axis: str, indices: list[int], ctx: dict, slots: int, name: str, describe):
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, ctx=ctx), TRIAL_RESOURCES),
        param_space={axis: tune.grid_search(indices)},
        tune_config=tune.TuneConfig(max_concurrent_trials=slots),
        # a retried trial skips its finished nodes and continues its unfinished one from its last progress checkpoint
        run_config=tune.RunConfig(name=name, storage_path=ctx["tune_storage"], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=ctx["retries"]),
                                  callbacks=[_progress_callback(name, len(indices), describe)]),
    )
    return tuner.fit()


def concurrency(resources) -> int:
    """Runs of a stage that the cluster can feed at once (CPU-bound, or GPU-bound when GPUs are asked)."""
    import ray

    total = ray.cluster_resources()
    per_run_cpu = resources.workers * resources.cpus_per_worker
    slots = int(total.get("CPU", 0) // per_run_cpu) if per_run_cpu else 1
    if resources.gpus_per_worker:
        slots = min(slots, int(total.get("GPU", 0) // (resources.workers * resources.gpus_per_worker)))
    return max(1, slots)


def run_tree(study: Study, data, tracker, study_run: str) -> dict:
    """Train every node not yet finished; returns counts and the failures."""
    arms, subtrees = plan(study, data)
    ctx = {
        "arms": arms,
        "arm_nodes": {a.spec.node_key: a for a in arms},
        "subtrees": subtrees,
        "tracker": tracker,
        "study_run": study_run,
        "retries": study.retries,
        "tune_storage": str(study.out / "tune"),
        "ray_storage": str(study.out / "ray"),
        "resources": {s: getattr(study, s).resources for s in ("pretrain", "posttrain", "finetune")},
        "loop": {
            "preset": study.model.preset,
            "vocab_size": data.vocab_size,
            "seq_len": study.model.seq_len,
            "eval_tokens": min(study.pretrain.eval_tokens, study.posttrain.eval_tokens, study.finetune.eval_tokens),
            "eval_paths": {r: str(s.path) for r, s in data.heldout.items()},
            "tokenizer_id": data.tokenizer_id,
            "tracking_uri": tracker.tracking_uri,
            # Fault injection for tests and drills: every run whose label contains this text raises.
            "inject_failure": os.environ.get("RAYSWEEP_INJECT_FAILURE"),
        },
    }
    failures, trained = [], {"pretrain": 0, "posttrain": 0, "finetune": 0}
    t0 = time.perf_counter()
    todo = [i for i, a in enumerate(arms) if not node_done(a.spec.node_dir)]
    for a in arms:
        if node_done(a.spec.node_dir):
            _ensure_finished(tracker, a, study_run)
    print(f"[tree] level 1: {len(arms)} pretraining arms, {len(arms) - len(todo)} already done", flush=True)
    if todo:
        grid = _tune(pretrain_trial, "arm", todo, ctx, study.max_concurrent_trials or concurrency(study.pretrain.resources), "pretrain",
                     lambda c: arms[c["arm"]].spec.label)
        failures += [f"pretrain arm {arms[r.config['arm']].name}: {r.error}" for r in grid if r.error]
    trained["pretrain"] = sum(1 for i in todo if node_done(arms[i].spec.node_dir))

    ready = [i for i, (n, _) in enumerate(subtrees) if node_done(ctx["arm_nodes"][n.parent].spec.node_dir)]
    todo2 = [i for i in ready if not (node_done(subtrees[i][0].spec.node_dir) and all(node_done(c.spec.node_dir) for c in subtrees[i][1]))]
    leaves = sum(len(c) for _, c in subtrees)
    print(f"[tree] level 2: {len(subtrees)} post-training runs x {leaves // max(1, len(subtrees))} fine-tuning runs each; "
          f"{len(subtrees) - len(todo2)} subtrees already done, {len(subtrees) - len(ready)} blocked by a failed arm", flush=True)
    every_node = [m for n2, children in subtrees for m in (n2, *children)]
    before = {m.spec.node_key for m in every_node if node_done(m.spec.node_dir)}
    if todo2:
        grid = _tune(posttrain_trial, "subtree", todo2, ctx, study.max_concurrent_trials or concurrency(study.posttrain.resources), "posttrain",
                     lambda c: subtrees[c["subtree"]][0].spec.label + f" (+{len(subtrees[c['subtree']][1])} fine-tuning runs)")
        failures += [f"subtree {subtrees[r.config['subtree']][0].name}: {r.error}" for r in grid if r.error]
    for m in every_node:
        if node_done(m.spec.node_dir) and m.spec.node_key not in before:
            trained[m.spec.stage] += 1
    failures += [f"{n.name}: blocked (its pretraining arm failed)" for i, (n, _) in enumerate(subtrees) if i not in ready]
    return {"arms": arms, "subtrees": subtrees, "trained": trained, "failures": failures, "seconds": time.perf_counter() - t0}


def collect(study: Study, data) -> list[dict]:
    """One row per finished stage-3 node: the four losses, the method and the path to it."""
    arms, subtrees = plan(study, data)
    rows = []
    for n2, children in subtrees:
        post = node_done(n2.spec.node_dir)
        for c in children:
            done = node_done(c.spec.node_dir)
            if not (post and done):
                continue
            rows.append(make_row(c.name, c.tags["raysweep.method"], {**c.params, "finetune_lr": c.params["lr"]},
                                 post["result"]["losses"]["post"], done["result"]["losses"]))
    return rows
