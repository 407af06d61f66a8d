"""The sweep tree, trained on warm worker slots (raysweep.pool).

    study
    └── level 1: one pretraining arm per mixing fraction λ                   (an item of the queue)
        └── level 2: one post-training run per stage-2 configuration          (an item of the queue)
            └── stage 3: one fine-tuning run per learning rate, from θ_post    (same item, after stage 2)

A tree run puts its items (arms first, then subtrees in their arms' order) in one queue. A few
Tune trials, the slots, each fit one Ray Train worker group that trains item after item until
the queue is empty: the tree pays one fit's start-up per slot, not one per stage-2 configuration
(a fit costs 8-16 s here). A subtree is taken as soon as its own arm is done, while other arms
may still train (it never waits for the slowest arm), and its stage-3 children start from its
weights in memory right after it.

Every node has a content key (parent key, stage config, data, tokenizer, seed) and a folder
named by it. A node whose folder holds node.json is finished and never trained again, so running
the same command after an interruption resumes where it stopped.

Slot trials reserve one byte of Ray's `memory` resource, never CPU or GPU: their Train workers
need those, and a trial that holds a CPU starves its own workers (ray#25239, ray#54305). Tune
refuses a trial with no resources at all; one byte of memory exists on every node of every
cluster, so no custom resource has to be declared anywhere. The number of slots is what the
cluster's CPUs/GPUs can feed (or `max_concurrent_trials`), so no slot waits on workers it cannot get.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass

from analysis.runs import make_row
from raysweep import storage
from raysweep.config import Study
from raysweep.mixing import derive_seed
from raysweep.stage import RunSpec, node_diverged, node_done, node_points, quarantine, verify_node
from raysweep.streams import Stream
from raysweep.tracking import MetricSender, warn_outage

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


def all_nodes(arms: list[Node], subtrees: list[tuple[Node, list[Node]]]) -> list[Node]:
    """Every node of a tree, parents before children: the arms, then each stage-2 node and its children."""
    return [*arms, *(m for n2, children in subtrees for m in (n2, *children))]


def _steps(tokens: int, batch_size: int, seq_len: int) -> int:
    return max(1, tokens // (batch_size * seq_len))


def stream_params(stream: Stream) -> dict:
    """A stream's realised make-up, as MLflow params (data.tokens.<source>, ...)."""
    st = stream.stats
    return {"stream": st["name"], "blocks": st["blocks"], "tokens": st["tokens"], "waste_fraction": round(st["waste_fraction"], 6)}


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
    return [Stage2Config(lam, lr, drop, rep, tuning, bs) for lam in study.pretrain.mix_fraction for lr in p2.lr
            for drop in p2.dropout for rep in p2.replay for tuning in p2.tuning for bs in p2.batch_sizes]


def plan(study: Study, data, stage2: list[Stage2Config] | None = None) -> tuple[list[Node], list[tuple[Node, list[Node]]]]:
    """The whole tree as RunSpecs: arms, and (stage-2 node, its stage-3 children) pairs, for the
    given stage-2 configurations (default: the grid)."""
    stage2 = grid(study) if stage2 is None else stage2
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
            stage="pretrain", label=f"pretrain λ={lam:g}", node_key=key, node_dir=storage.join(out, "pretrain", key), dataset="train",
            max_steps=steps, eval_every=p1.eval_every, monitor=["pre", "post"], seed=derive_seed(study.seed, "pretrain", lam),
            checkpoint_every=p1.checkpoint_every,
            meta={"mix_fraction": lam, "mode": p1.mode, "stream": stream.stats, **model_id}, **hyper,
        )
        arm = Node(spec, f"pretrain/mix={lam:g}", None, {"mix_fraction": lam, "mode": p1.mode, "steps": steps, **hyper, "data": stream_params(stream)},
                   {"raysweep.mix_fraction": lam, "raysweep.method": method_of(lam)}, stream)
        arms.append(arm)
        for cfg in (c for c in stage2 if c.mix_fraction == lam):
            lr2, drop, rep, tuning, bs = cfg.lr, cfg.dropout, cfg.replay, cfg.tuning, cfg.batch_size
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
                node_key=k2, node_dir=storage.join(out, "posttrain", k2),
                dataset="train", max_steps=steps2, eval_every=p2.eval_every, monitor=["post"],
                seed=derive_seed(study.seed, "posttrain", path2), init_from=arm.spec.node_dir, early_stop_on="post", patience=p2.patience,
                checkpoint_every=p2.checkpoint_every,
                meta={"mix_fraction": lam, "replay": rep, "parent": key, "stream": s2stream.stats, **model_id}, **hyper2,
            )
            n2 = Node(s2, f"posttrain/{path2}", key,
                      {"mix_fraction": lam, "replay": rep, "tuning": tuning, **hyper2, "max_steps": steps2, "patience": p2.patience, "data": stream_params(s2stream),
                       **({"optuna_trial": cfg.trial} if cfg.trial is not None else {})},
                      {"raysweep.mix_fraction": lam, "raysweep.method": method, "raysweep.parent_node": key}, s2stream)
            children = []
            for lr3 in p3.lr:
                hyper3 = {"lr": lr3, "min_lr": p3.min_lr, "warmup_steps": p3.warmup_steps, "weight_decay": p3.weight_decay, "batch_size": p3.batch_size}
                k3 = node_key("finetune", k2, hyper3, data.finetune.stats, p3.tokens, study.seed)
                path3 = f"{path2}/ft_lr={lr3:g}"
                s3 = RunSpec(
                    stage="finetune", label=f"finetune {s2.label.removeprefix('posttrain ')} ft_lr={lr3:g}", node_key=k3,
                    node_dir=storage.join(out, "finetune", k3), dataset="ft", max_steps=_steps(p3.tokens, p3.batch_size, seq),
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

def final_metrics(stage: str, losses: dict[str, float]) -> dict[str, float]:
    """The study's named losses (PAPER.md) from a node's held-out losses."""
    m = {f"final_{k}": v for k, v in losses.items()}
    if stage == "posttrain":
        m["L_im"] = losses["post"]
    if stage == "finetune":
        m.update(L_ft=losses["ft"], L_ret=losses["post"], L_pre=losses["pre"])
    return m


def _fit(loop: dict, ctx: dict, resources, run_name: str) -> list[dict]:
    """One TorchTrainer fit of raysweep.stage.train_loop with `loop` added to the loop config."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raysweep.stage import train_loop

    loop_cfg = {**ctx["loop"], **loop, "threads": max(1, int(resources.cpus_per_worker))}
    worker = {"CPU": resources.cpus_per_worker}
    if resources.gpus_per_worker:
        worker["GPU"] = resources.gpus_per_worker
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_cfg,
        scaling_config=ScalingConfig(num_workers=resources.workers, use_gpu=resources.gpus_per_worker > 0, resources_per_worker=worker),
        # each fit gets a fresh name: a reused one would make Ray Train resume the old run
        run_config=RunConfig(name=run_name, storage_path=ctx["ray_storage"]),
    )
    return trainer.fit().return_value


def summary_metrics(stage: str, result: dict) -> dict[str, float]:
    """What a finished node's MLflow run shows as its final metrics."""
    metrics = final_metrics(stage, result["losses"])
    metrics.update(steps=result["steps"], tokens=result["tokens"], tokens_per_s=result["tokens_per_s"], best_step=result["best_step"])
    if "data_wait_share" in result:
        metrics["data_wait_share"] = result["data_wait_share"]
    return metrics


SYNCED = "raysweep.synced_points"  # tag: how many stored points a sync delivered (a repeated sync skips the run)
OUTCOME = "raysweep.outcome"       # tag on runs that did not finish normally: diverged | blocked | failed


def open_run(tracker, node: Node, parent_run: str | None) -> str | None:
    """The node's MLflow run, found by node key or created; None when MLflow is offline or fails now
    (the node trains anyway and is synced later)."""
    if parent_run is None:
        return None
    return tracker.guard(f"opening the MLflow run of {node.name}", tracker.node_run, *_run_args(node, parent_run))


def close_run(tracker, run_id: str | None, outcome: str) -> None:
    """Mark a run that did not finish normally (its node is not settled)."""
    if run_id is not None:
        tracker.guard(f"closing MLflow run {run_id}", tracker.finish, run_id, {}, failed=True, tags={OUTCOME: outcome})


def sync_node(tracker, node: Node, parent_run: str | None) -> str | None:
    """Bring a settled node's MLflow run up to date from its checkpoint folder alone: the run exists
    and holds every metric point the node logged (exactly once), its final metrics and its status
    (FINISHED; FAILED with outcome "diverged"). Idempotent and cheap once synced (a tag records it).
    Returns the run id, or None when MLflow is unreachable (warned; nothing is lost)."""
    run_id = open_run(tracker, node, parent_run)
    if run_id is None:
        return None
    done = node_done(node.spec.node_dir)
    diverged = None if done else node_diverged(node.spec.node_dir)
    if not (done or diverged):
        return run_id
    try:
        run = tracker.client.get_run(run_id)
        points = node_points(node.spec.node_dir)
        status = "FINISHED" if done else "FAILED"
        if run.info.status == status and run.data.tags.get(SYNCED) == str(len(points)):
            return run_id
        if not MetricSender(tracker.tracking_uri, run_id).send(points):
            return run_id
        if done:
            if OUTCOME in run.data.tags:  # an earlier attempt failed; this one finished the node
                tracker.client.delete_tag(run_id, OUTCOME)
            tracker.finish(run_id, summary_metrics(node.spec.stage, done["result"]), tags={SYNCED: len(points)})
        else:
            tracker.finish(run_id, {"diverged_at_step": diverged["step"]}, failed=True, tags={SYNCED: len(points), OUTCOME: "diverged"})
    except Exception as e:  # noqa: BLE001
        warn_outage(f"syncing the MLflow run of {node.name}", e)
    return run_id


def sync_tree(tracker, study_run: str | None, arms: list[Node], subtrees: list[tuple[Node, list[Node]]]) -> None:
    """sync_node over a whole tree (driver), parents before children."""
    if not tracker.online or study_run is None:
        return
    arm_runs = {a.spec.node_key: sync_node(tracker, a, study_run) for a in arms}
    for n2, children in subtrees:
        post_run = sync_node(tracker, n2, arm_runs.get(n2.parent))
        for c in children:
            sync_node(tracker, c, post_run)


class Work:
    """What an item of the warm slots' queue (raysweep.pool) trains: ("arm", i) pretraining arm i;
    ("subtree", j) stage-2 node j, then its stage-3 children from its weights in memory. Finished
    and diverged nodes are skipped, so a retried item continues where its last attempt stopped."""

    def __init__(self, arms: list[Node], subtrees: list[tuple[Node, list[Node]]], tracker, study_run: str | None):
        self.arms, self.subtrees, self.tracker, self.study_run = arms, subtrees, tracker, study_run
        self.by_key = {m.spec.node_key: m for m in all_nodes(arms, subtrees)}
        self.rows: dict[tuple, dict] = {}

    def group(self, item) -> list[Node]:
        kind, i = item
        return [self.arms[i]] if kind == "arm" else [self.subtrees[i][0], *self.subtrees[i][1]]

    def todo(self, item) -> list[Node]:
        """The item's nodes still to train, in training order (none below a diverged stage-2 node)."""
        group = self.group(item)
        if item[0] == "subtree" and node_diverged(group[0].spec.node_dir):
            return []
        return [n for n in group if not (node_done(n.spec.node_dir) or node_diverged(n.spec.node_dir))]

    def put_rows(self, items: list, world: dict[str, int]) -> None:
        """Every rank's rows of every stream the items train on, into the object store once (driver)."""
        from raysweep.streams import put_rank_blocks

        cache: dict[tuple, list] = {}

        def rows(node: Node, workers: int) -> list:
            key = (str(node.stream.path), node.spec.batch_size, workers)
            if key not in cache:
                cache[key] = put_rank_blocks(node.stream, node.spec.batch_size, workers)
            return cache[key]

        for item in items:
            if item[0] == "arm":
                self.rows[item] = {"train": rows(self.arms[item[1]], world["pretrain"])}
            else:
                n2, children = self.subtrees[item[1]]
                self.rows[item] = {"train": rows(n2, world["posttrain"]), "ft": rows(children[0], world["posttrain"])}

    def run_of(self, node: Node, memo: dict) -> str | None:
        """The node's MLflow run id (found by node key or created, parents first); None offline."""
        key = node.spec.node_key
        if key not in memo:
            parent = self.study_run if node.parent is None else self.run_of(self.by_key[node.parent], memo)
            memo[key] = open_run(self.tracker, node, parent)
        return memo[key]

    def parent_run(self, node: Node, memo: dict) -> str | None:
        return self.study_run if node.parent is None else self.run_of(self.by_key[node.parent], memo)

    def run_item(self, item, ctx: dict, eval_sets: dict, rank: int, world: int) -> tuple[str, str] | None:
        """Train the item on this rank (inside a worker); rank 0 returns (outcome, text) for the queue."""
        from raysweep.pool import broadcast
        from raysweep.stage import run_specs

        keys = broadcast([n.spec.node_key for n in self.todo(item)] if rank == 0 else None, world)
        nodes = [self.by_key[k] for k in keys]
        memo: dict = {}
        run_ids = {n.spec.node_key: self.run_of(n, memo) for n in nodes} if rank == 0 else {}
        specs = [RunSpec(**{**asdict(n.spec), "run_id": run_ids.get(n.spec.node_key)}) for n in nodes]
        results = run_specs(specs, self.rows[item], ctx, eval_sets, rank, world) if specs else []
        if rank != 0:
            return None
        for n, r in zip(nodes, results):
            if r.get("blocked"):
                close_run(self.tracker, run_ids[n.spec.node_key], "blocked")
            else:
                sync_node(self.tracker, n, self.parent_run(n, memo))
        head = self.group(item)[0]  # the arm, or the stage-2 node
        done = node_done(head.spec.node_dir)
        if done is None:  # it diverged: an arm blocks its subtrees, a stage-2 node its children
            step = (node_diverged(head.spec.node_dir) or {}).get("step")
            return ("diverged" if item[0] == "arm" else "done"), f"{head.spec.stage} diverged at step {step}"
        losses = done["result"]["losses"]
        if item[0] == "arm":
            return "done", f"final_pre {losses['pre']:.3f}, final_post {losses['post']:.3f}"
        return "done", f"L_im {losses['post']:.3f}"

    def abandon(self, item) -> None:
        """After a failed attempt (slot trial, outside the workers): the item's finished nodes are
        synced to MLflow, its unfinished ones marked failed (a retry reopens them)."""
        memo: dict = {}
        unfinished = self.todo(item)
        for n in self.group(item):
            if node_done(n.spec.node_dir):
                sync_node(self.tracker, n, self.parent_run(n, memo))
            elif n in unfinished:
                close_run(self.tracker, self.run_of(n, memo), "failed")


def slot_trial(config: dict, ctx: dict) -> None:
    """One warm slot (a Tune trial): fits one worker group that trains items from the queue until
    none is left (raysweep.pool.serve). A failed fit gives its item back to the queue as a failed
    attempt (its finished nodes kept) and a fresh fit takes the next item. A fit that fails before
    it holds an item is retried `retries` times, then the slot gives up (the others go on)."""
    import ray

    slot, kinds = config["slot"]
    kinds = tuple(kinds)
    queue, work = ctx["queue"], ctx["work"]
    give_back(queue, work, slot, "its worker slot died")  # held only if this trial was restarted (its process died)
    resources = ctx["resources"]["pretrain" if kinds == ("arm",) else "posttrain"]
    start_failures, fits = 0, 0
    while ray.get(queue.has_work.remote(kinds)):
        fits += 1
        try:
            _fit({"work": work, "queue": queue, "slot": slot, "kinds": kinds}, ctx, resources, f"slot{slot}-{fits}-{time.time_ns()}")
        except Exception as e:  # noqa: BLE001  (a worker's error, or its death)
            if not give_back(queue, work, slot, error_text(e)):
                start_failures += 1
                if start_failures > ctx["retries"]:
                    raise


def give_back(queue, work: Work, slot: int, error: str) -> bool:
    """If `slot` holds an item, return it to the queue as a failed attempt (its finished nodes
    synced, its unfinished ones closed as failed in MLflow). False when it held none."""
    import ray

    held = ray.get(queue.held.remote(slot))
    if held is None:
        return False
    work.abandon(held)
    ray.get(queue.fail.remote(slot, error))
    return True


def error_text(e: BaseException) -> str:
    """A failed fit's error, as its worker raised it (Ray Train wraps it)."""
    text = str(e).strip()
    return text or type(e).__name__


def _run_args(node: Node, parent_run: str):
    return (node.spec.node_key, node.name, parent_run, node.spec.stage, node.params, node.tags)


def _release_on_error(queue, work):
    """A Tune callback for a slot trial that failed for good (its process died more than `retries`
    times): the item it held goes back to the queue as a failed attempt, so the slots waiting for
    it (a subtree for its arm) do not wait forever."""
    from ray.tune import Callback

    class _Release(Callback):
        def on_trial_error(self, iteration, trials, trial, **info):
            give_back(queue, work, trial.config["slot"][0], f"its worker slot failed: {trial.get_error()}")

    return _Release()


def _tune(trainable, axis: str, indices: list, ctx: dict, slots: int, name: str, callbacks: list = ()):
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, ctx=ctx), TRIAL_RESOURCES),
        # grid_search keeps the list's order, and Tune starts trials in that order
        param_space={axis: tune.grid_search(indices)},
        tune_config=tune.TuneConfig(max_concurrent_trials=slots),
        # a slot trial whose process died is restarted; the item it held counts as a failed attempt
        run_config=tune.RunConfig(name=name, storage_path=ctx["tune_storage"], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=ctx["retries"]), callbacks=list(callbacks)),
    )
    return tuner.fit()


def trial_order(arms: list[Node], subtrees: list[tuple[Node, list[Node]]], todo: list[int], todo2: list[int]) -> list[tuple[str, int]]:
    """The items of one tree run, in the order slots take them: the arms to train first, then the
    subtrees to train in the order of their arms, so the first subtrees to start are those whose
    arm started (and so ends) first."""
    rank = {a.spec.node_key: i for i, a in enumerate(arms)}
    return [("arm", i) for i in todo] + [("subtree", j) for j in sorted(todo2, key=lambda j: (rank[subtrees[j][0].parent], j))]


class _Progress:
    """Prints the queue's events in the driver (a thread), one line each, with the run's progress."""

    def __init__(self, queue, total: int, describe):
        import threading

        self.queue, self.total, self.describe, self.seen, self.done = queue, total, describe, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.poll()

    def _loop(self) -> None:
        while not self.stop.wait(1.0):
            self.poll()

    def poll(self) -> None:
        import ray

        try:
            events = ray.get(self.queue.events_since.remote(self.seen))
        except Exception:  # noqa: BLE001  (progress lines are best-effort)
            return
        self.seen += len(events)
        for t, what, item, text in events:
            self.done += what != "retry"
            left = t / max(1, self.done) * (self.total - self.done)
            what = {"done": "done", "retry": "FAILED (retrying)", "failed": "FAILED"}.get(what, what)
            print(f"[tree] {self.done}/{self.total} {self.describe(item)} {what}{': ' + text if text else ''} "
                  f"({t:.0f}s elapsed, ~{left:.0f}s left)", flush=True)


def concurrency(resources) -> int:
    """Runs of a stage that the cluster can feed at once (CPU-bound, or GPU-bound when GPUs are asked)."""
    import ray

    total = ray.cluster_resources()
    per_run_cpu = resources.workers * resources.cpus_per_worker
    slots = int(total.get("CPU", 0) // per_run_cpu) if per_run_cpu else 1
    if resources.gpus_per_worker:
        slots = min(slots, int(total.get("GPU", 0) // (resources.workers * resources.gpus_per_worker)))
    return max(1, slots)


def run_tree(study: Study, data, tracker, study_run: str | None, train: bool = True) -> dict:
    """Train every node not yet finished; returns counts, failures and the tree's nodes. With
    `posttrain.search: optuna` the stage-2 configurations come from raysweep.search, round by round.
    `train=False` trains nothing: it checks the node store and syncs MLflow from it (--sync-mlflow)."""
    if study.posttrain.search == "optuna":
        from raysweep.search import run_search

        return run_search(study, data, lambda arms, subtrees: run_nodes(study, data, tracker, study_run, arms, subtrees, train))
    return run_nodes(study, data, tracker, study_run, *plan(study, data), train=train)


def verified_done(arms: list[Node], subtrees: list[tuple[Node, list[Node]]]) -> set[str]:
    """Keys of the finished nodes whose files are intact. A node that this run will load (the parent
    of an unfinished node) is hashed in full; the rest get a size check (cheap, catches truncation).
    A corrupt node is moved aside (raysweep.stage.quarantine) and so trained again. Leaves are
    checked first, so a parent is hashed only when a child really needs it. Remote nodes are
    checked in full when they are downloaded to be loaded (raysweep.stage.load_weights)."""
    done: set[str] = set()

    def check(node: Node, needed: bool) -> None:
        if not node_done(node.spec.node_dir):
            return
        if not storage.is_remote(node.spec.node_dir):
            problem = verify_node(node.spec.node_dir, full=needed)
            if problem:
                quarantine(node.spec.node_dir, problem)
                return
        done.add(node.spec.node_key)

    for n2, children in subtrees:
        for c in children:
            check(c, False)
        check(n2, any(c.spec.node_key not in done for c in children))
    for a in arms:
        check(a, any(n2.parent == a.spec.node_key and n2.spec.node_key not in done for n2, _ in subtrees))
    return done


def run_nodes(study: Study, data, tracker, study_run: str | None, arms: list[Node], subtrees: list[tuple[Node, list[Node]]],
              train: bool = True) -> dict:
    """Train the given arms and subtrees on warm slots (`_train`); finished (and diverged) nodes are skipped."""
    inject = {k: os.environ.get(f"RAYSWEEP_INJECT_{k.upper()}") for k in ("failure", "kill", "nan")}
    ctx = {
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
            "compile": study.model.compile,
            "tracking_uri": tracker.tracking_uri if tracker.online else None,
            # Fault injection for tests and drills (README, "Guarantees"): RAYSWEEP_INJECT_FAILURE=<text>
            # raises in every run whose label holds <text>; RAYSWEEP_INJECT_KILL=<text>@<step> SIGKILLs
            # its worker once at that step; RAYSWEEP_INJECT_NAN=<text>@<step> makes its loss NaN there.
            **{f"inject_{k}": v for k, v in inject.items()},
        },
    }
    failures, trained = [], {"pretrain": 0, "posttrain": 0, "finetune": 0}
    t0 = time.perf_counter()
    nodes = all_nodes(arms, subtrees)
    # one look at each node (a remote read with an object store); everything below derives from it
    before = verified_done(arms, subtrees)
    settled = before | {m.spec.node_key for m in nodes if m.spec.node_key not in before and node_diverged(m.spec.node_dir)}
    blocked = _blocked(arms, subtrees, settled - before)
    todo = [i for i, a in enumerate(arms) if a.spec.node_key not in settled]
    todo2 = [i for i, (n, children) in enumerate(subtrees) if not {m.spec.node_key for m in (n, *children)} <= settled | blocked]
    # finished here or by another study sharing the node store: this study's MLflow lists them before training starts
    sync_tree(tracker, study_run, [a for a in arms if a.spec.node_key in settled],
              [(n2, c) for i, (n2, c) in enumerate(subtrees) if i not in set(todo2)])
    leaves = sum(len(c) for _, c in subtrees)
    print(f"[tree] level 1: {len(arms)} pretraining arms, {len(arms) - len(todo)} already done", flush=True)
    print(f"[tree] level 2: {len(subtrees)} post-training runs x {leaves // max(1, len(subtrees))} fine-tuning runs each; "
          f"{len(subtrees) - len(todo2)} subtrees already done; each starts as soon as its own arm is done", flush=True)
    items = trial_order(arms, subtrees, todo, todo2) if train else []
    if items:
        failures = _train(study, ctx, Work(arms, subtrees, tracker, study_run), items)
    for m in nodes:
        if node_done(m.spec.node_dir) and m.spec.node_key not in before:
            trained[m.spec.stage] += 1
    # MLflow is a view of the node store: whatever an outage or a killed worker kept from it is written now
    sync_tree(tracker, study_run, arms, subtrees)
    return {"arms": arms, "subtrees": subtrees, "trained": trained, "failures": failures, "diverged": diverged_report(arms, subtrees),
            "seconds": time.perf_counter() - t0}


def _train(study: Study, ctx: dict, work: Work, items: list) -> list[str]:
    """Train `items` on warm slots (raysweep.pool): one queue, and Tune trials that each keep one
    worker group for the whole run. Returns the failures, one line each."""
    import ray

    from raysweep.pool import Schedule

    arm_item = {a.spec.node_key: ("arm", i) for i, a in enumerate(work.arms)}
    arm_of = {it: arm_item[work.group(it)[0].parent] for it in items if it[0] == "subtree"}
    needs = {it: arm for it, arm in arm_of.items() if arm in items}  # an arm not in this run is done already
    res = {s: getattr(study, s).resources for s in ("pretrain", "posttrain")}
    work.put_rows(items, {s: r.workers for s, r in res.items()})
    queue = ray.remote(num_cpus=0)(Schedule).remote(items, needs, study.retries)
    ctx = {**ctx, "queue": queue, "work": work}
    # One slot shape for every item when both stages ask the same resources (arms and subtrees then
    # share slots: a subtree starts the moment its own arm is done). Otherwise arms run first on
    # slots of their shape, then subtrees on theirs: two shapes at once could deadlock, a subtree
    # slot holding CPUs/GPUs while it waits for an arm whose worker group cannot be placed.
    if res["pretrain"] == res["posttrain"]:
        phases = [(("arm", "subtree"), concurrency(res["pretrain"]))]
    else:
        phases = [(("arm",), concurrency(res["pretrain"])), (("subtree",), concurrency(res["posttrain"]))]

    def describe(item) -> str:
        head, *children = work.group(item)
        return head.spec.label + (f" (+{len(children)} fine-tuning runs)" if item[0] == "subtree" else "")

    slot_errors = []
    with _Progress(queue, len(items), describe):
        first = 0
        for kinds, slots in phases:
            n = min(study.max_concurrent_trials or slots, sum(1 for it in items if it[0] in kinds))
            if n == 0:
                continue
            print(f"[tree] {n} warm worker slot{'s' if n > 1 else ''} for {' and '.join(k + 's' for k in kinds)}", flush=True)
            grid = _tune(slot_trial, "slot", [(first + k, kinds) for k in range(n)], ctx, n, "tree" if len(phases) == 1 else f"tree-{kinds[0]}s",
                         [_release_on_error(queue, work)])
            slot_errors += [str(r.error) for r in grid if r.error]
            first += n
    _, failed, never = ray.get(queue.outcome.remote())
    ray.kill(queue)
    failures = []
    for item, error in failed.items():
        name = work.group(item)[0].name
        what = "pretrain arm " if item[0] == "arm" else "" if error.startswith("blocked") else "subtree "
        failures.append(f"{what}{name}: {error}")
    why = f"every worker slot failed: {slot_errors[0]}" if slot_errors else "no worker slot took it"
    return failures + [f"{work.group(item)[0].name}: not trained ({why})" for item in never]


def _blocked(arms: list[Node], subtrees: list[tuple[Node, list[Node]]], diverged: set[str]) -> set[str]:
    """Nodes below a diverged node: they have no weights to start from, so they are settled too."""
    out = set()
    for n2, children in subtrees:
        if n2.parent in diverged:
            out |= {n2.spec.node_key, *(c.spec.node_key for c in children)}
        elif n2.spec.node_key in diverged:
            out |= {c.spec.node_key for c in children}
    return out


def diverged_report(arms: list[Node], subtrees: list[tuple[Node, list[Node]]]) -> list[str]:
    """One line per diverged node (and what it blocks): outcomes, not failures; never retried."""
    lines = []
    blocked_by = {a.spec.node_key: [n2 for n2, _ in subtrees if n2.parent == a.spec.node_key] for a in arms}
    for n2, children in subtrees:
        blocked_by[n2.spec.node_key] = children
    for m in all_nodes(arms, subtrees):
        d = node_diverged(m.spec.node_dir)
        if d:
            below = blocked_by.get(m.spec.node_key, [])
            lines.append(f"{m.name}: diverged at step {d['step']} (lr {d['lr']:g}; lower it)" + (f", {len(below)} runs below it not trained" if below else ""))
    return lines


def collect(study: Study, data, subtrees: list[tuple[Node, list[Node]]] | None = None) -> list[dict]:
    """One row per finished stage-3 node: the four losses, the method and the path to it
    (of the grid, or of the subtrees a search ran)."""
    subtrees = plan(study, data)[1] if subtrees is None else subtrees
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
