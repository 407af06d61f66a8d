"""Warm worker slots: the Ray Tune / Ray Train glue that trains a tree run's items.

A fit costs 8–16 s of start-up and teardown on a small machine (bench/RESULTS.md), and a study is
dozens of short runs. So instead of one `TorchTrainer.fit` per arm and per stage-2 configuration,
a few Tune trials, the *slots*, each train item after item from one queue (raysweep.sweep.queue)
until it is empty: the tree pays one start-up per slot, whatever the number of runs.

    work_queue ── WorkQueue actor ── slot_trial 0 (Tune) → worker_group → serve_queue: item, item, …
                                 └─ slot_trial 1 (Tune) → serve_queue (a stage of one worker): item, item, …

A stage of several workers (DDP) fits one Ray Train worker group per slot. Its slot trials reserve
one byte of Ray's `memory` resource, never CPU or GPU: their Train workers need those, and a trial
that holds a CPU starves its own workers (ray#25239, ray#54305). Tune refuses a trial with no
resources at all; one byte of memory exists on every node of every cluster, so no custom resource
has to be declared anywhere.

A stage of one worker trains inside its slot trial, which reserves that worker's CPUs and GPUs
itself: a worker group of one adds five processes per slot (controller, worker, placement-group
cleaner, synchronisation and preemption actors), each importing torch and Ray Train, for no
parallelism; on a 2-core machine they were most of a small study's time (bench/RESULTS.md). The
training loop, its device placement and its failures are the same either way: an exception gives
the item back, a killed process is a killed trial that Tune restarts.

The number of slots is what the cluster's CPUs/GPUs can feed (or `max_concurrent_trials`), so no
slot waits on workers it cannot get.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from raysweep.config import ResourcesConfig
from raysweep.signals import hold_if_stopping
from raysweep.sweep.queue import WAIT, Item, WorkQueue
from raysweep.sweep.work import Work
from raysweep.train.context import LoopConfig
from raysweep.train.trainer import TrainerConfig

TRIAL_RESOURCES = {"memory": 1}  # see the module docstring


@dataclass(frozen=True)
class SlotContext:
    """What every slot of one tree run shares (pickled into each Tune trial)."""

    loop: LoopConfig
    resources: dict[str, ResourcesConfig]  # stage -> its worker group's resources
    retries: int
    tune_storage: str
    ray_storage: str
    tracking_uri: str | None  # None: MLflow offline, workers log nowhere (the driver syncs later)
    work: Work  # the tree's nodes, each item's streams and its MLflow runs
    trainer: TrainerConfig  # what each worker builds its trainer of chains of runs from (raysweep.train.trainer)
    queue: object = None  # the WorkQueue actor handle


@dataclass(frozen=True)
class SlotJob:
    """What one fit of a slot trains (the `job` of its worker group's config): the items of `kinds`
    from the queue, as slot `slot`; `in_trial` ("cpu" or "cuda") when the trial trains by itself."""

    ctx: SlotContext
    slot: int
    kinds: tuple[str, ...]
    in_trial: str | None = None


# ----------------------------------------------------------------------------- inside a worker group


def broadcast(obj, world: int):
    """Rank 0's `obj` on every rank of the worker group (the ranks of a slot train the same items)."""
    if world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def worker_setup(loop: LoopConfig, tracking_uri: str | None, in_trial: str | None = None):
    """This process as the training loop sees it (raysweep.train.context.Worker), its held-out
    sets, and the loop's config with this worker's MLflow sink among its callbacks. `in_trial`
    ("cpu" or "cuda"): a slot trial training by itself, rank 0 of 1 on that device; otherwise a Ray
    Train worker of its group."""
    import torch

    from raysweep.store import storage
    from raysweep.tracking.points import metric_sinks
    from raysweep.train.context import Worker, load_eval_sets

    torch.set_num_threads(max(1, loop.threads))
    uploader = storage.Uploader()  # object-store writes happen behind training
    loop = replace(loop, callbacks=(*loop.callbacks, *metric_sinks(tracking_uri)))
    if in_trial:
        # Ray gives the trial its GPU as CUDA_VISIBLE_DEVICES, so it is device 0 of this process
        device = torch.device("cuda", 0) if in_trial == "cuda" else torch.device("cpu")
        return Worker(device, uploader=uploader), load_eval_sets(loop), loop
    import ray.train
    import ray.train.torch

    tc = ray.train.get_context()
    worker = Worker(ray.train.torch.get_device(), tc.get_world_rank(), tc.get_world_size(), ray.train.torch.prepare_model, uploader)
    return worker, load_eval_sets(loop), loop


def serve_queue(config: dict) -> None:
    """Ray Train entry point of a warm slot (config["job"]: a SlotJob): take an item, train it on
    every rank, settle it, again, until the queue has nothing left for this slot. An exception
    leaves the item held: the slot trial gives it back as a failed attempt."""
    import ray

    job: SlotJob = config["job"]
    ctx, slot, kinds = job.ctx, job.slot, job.kinds
    worker, eval_sets, loop = worker_setup(ctx.loop, ctx.tracking_uri, job.in_trial)
    trainer = ctx.trainer.build(loop, worker, eval_sets)
    rank, world = worker.rank, worker.world
    if rank == 0:
        ctx.trainer.record("fit", slot=slot, kinds=list(kinds), node=ray.get_runtime_context().get_node_id())
    while True:
        hold_if_stopping()  # no item is taken once a stop signal has come (raysweep.signals)
        item = ray.get(ctx.queue.take.remote(slot, kinds)) if rank == 0 else None
        item = broadcast(item, world)
        if item is None:
            return
        if item == WAIT:
            time.sleep(0.25)
            continue
        with ctx.work.claim(item, rank, world, broadcast) as specs:
            if specs:  # a chain of runs, each rank on its own rows (raysweep.train.trainer.Trainer.fit)
                trainer.fit(specs, ctx.work.sources[item])
        if rank == 0:
            ray.get(ctx.queue.settle.remote(slot, *ctx.work.outcome(item)))


# ----------------------------------------------------------------------------- the slots (Tune trials)


def worker_resources(resources: ResourcesConfig) -> dict:
    """What one worker of a stage reserves in Ray: its CPUs, and its GPUs when it asks for any."""
    own = {"CPU": resources.cpus_per_worker}
    if resources.gpus_per_worker:
        own["GPU"] = resources.gpus_per_worker
    return own


def worker_group(entry, job: SlotJob, resources: ResourcesConfig, ray_storage: str, run_name: str):
    """One TorchTrainer of `entry` with `job`, ready to fit (the slot trial fits it)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    return TorchTrainer(
        entry,
        train_loop_config={"job": job},
        torch_config=TorchConfig(backend=job.ctx.trainer.backend) if job.ctx.trainer.backend else None,
        scaling_config=ScalingConfig(
            num_workers=resources.workers, use_gpu=resources.gpus_per_worker > 0, resources_per_worker=worker_resources(resources)
        ),
        # each fit gets a fresh name: a reused one would make Ray Train resume the old run
        run_config=RunConfig(name=run_name, storage_path=ray_storage),
    )


def trial_device(resources: ResourcesConfig) -> str:
    """The device of a slot trial that trains by itself: its GPU when it reserved one."""
    return "cuda" if resources.gpus_per_worker else "cpu"


def trains_in_trial(resources: ResourcesConfig) -> bool:
    return resources.workers == 1


def trial_resources(resources: ResourcesConfig) -> dict:
    """What a slot trial reserves: its one worker's CPUs/GPUs when it trains itself, else one byte."""
    return worker_resources(resources) if trains_in_trial(resources) else TRIAL_RESOURCES


def slot_resources(resources: dict[str, ResourcesConfig], kinds: tuple[str, ...]) -> ResourcesConfig:
    """The worker shape of a slot serving `kinds` (arms only: pretraining's; otherwise post-training's,
    which is also pretraining's when the two share slots)."""
    return resources["pretrain" if tuple(kinds) == ("arm",) else "posttrain"]


def with_threads(loop: LoopConfig, resources: ResourcesConfig) -> LoopConfig:
    """The loop's torch threads follow its workers' CPU reservation."""
    return replace(loop, threads=max(1, int(resources.cpus_per_worker)))


def slot_trial(config: dict, ctx: SlotContext) -> None:
    """One warm slot (a Tune trial): trains items from the queue until none is left, itself or in
    one worker group (see the module docstring). A failed attempt gives its item back to the queue
    (its finished nodes kept) and a fresh attempt takes the next item. An attempt that fails before
    it holds an item is retried `retries` times, then the slot gives up (the others go on)."""
    import ray

    slot, kinds = config["slot"]
    kinds = tuple(kinds)
    queue, work = ctx.queue, ctx.work
    give_back(queue, work, slot, "its worker slot died")  # held only if this trial was restarted (its process died)
    resources = slot_resources(ctx.resources, kinds)
    job = SlotJob(replace(ctx, loop=with_threads(ctx.loop, resources)), slot, kinds)
    start_failures, fits = 0, 0
    while ray.get(queue.has_work.remote(kinds)):
        fits += 1
        try:
            if trains_in_trial(resources):  # in this trial's own process, on the CPUs/GPUs it reserved
                serve_queue({"job": replace(job, in_trial=trial_device(resources))})
            else:
                worker_group(serve_queue, job, resources, ctx.ray_storage, f"slot{slot}-{fits}-{time.time_ns()}").fit()
        except Exception as e:  # noqa: BLE001  (a worker's error, or its death)
            if not give_back(queue, work, slot, error_text(e)):
                start_failures += 1
                if start_failures > ctx.retries:
                    raise


def give_back(queue, work: Work, slot: int, error: str) -> bool:
    """If `slot` holds an item, return it to the queue as a failed attempt (its finished nodes
    synced, its unfinished ones closed as failed in MLflow, the attempt recorded in the node store
    if its worker could not: a SIGKILL writes nothing). False when it held none."""
    import ray

    held = ray.get(queue.held_by.remote(slot))
    if held is None:
        return False
    work.abandon(*held, error)
    ray.get(queue.fail.remote(slot, error))
    return True


def error_text(e: BaseException) -> str:
    """A failed attempt's error, as its worker raised it (Ray Train wraps it in a fit's error)."""
    text = str(e).strip()
    return text or type(e).__name__


def give_back_on_error(queue, work: Work):
    """A Tune callback for a slot trial that failed for good (its process died more than `retries`
    times): the item it held goes back to the queue as a failed attempt, so the slots waiting for
    it (a subtree for its arm) do not wait forever."""
    from ray.tune import Callback

    class _GiveBack(Callback):
        def on_trial_error(self, iteration, trials, trial, **info):
            why = trial.get_error() or "its process died (SIGKILL: a preemption, the OOM killer)"
            give_back(queue, work, trial.config["slot"][0], f"its worker slot failed: {why}")

    return _GiveBack()


def silent_trial_lines() -> list:
    """In Tune's classic console mode (RAY_AIR_NEW_OUTPUT=0, which raysweep.console sets), a
    callback that replaces Tune's per-trial lines ("Trial slot_trial_… completed. Last result:");
    raysweep prints each item's progress itself. None in the newer mode, which warns about it."""
    import os

    if os.environ.get("RAY_AIR_NEW_OUTPUT") != "0":
        return []
    from ray.tune.progress_reporter import TrialProgressCallback

    class _Silent(TrialProgressCallback):
        def _print(self, msg: str) -> None:
            pass

        def log_result(self, trial, result, error: bool = False) -> None:
            pass

    return [_Silent()]


def slot_restarts(ctx: SlotContext) -> int:
    """How often Tune may restart a slot whose process died. A restarted slot charges the item it
    held as one failed attempt (slot_trial's give_back), and the queue tries no item more than
    `retries` + 1 times, so this bounds nothing the queue does not: one death per attempt of every
    node, plus `retries` deaths before a slot holds anything. It was `retries` until 2026-12-07:
    with `retries: 0` one killed worker ended its slot, and every item not yet trained was
    reported "not trained" (bench/rehearsal_135m.py)."""
    nodes = len(ctx.work.arms) + sum(1 + len(children) for _, children in ctx.work.subtrees)
    return nodes * (ctx.retries + 1) + ctx.retries


def slot_tuner(ctx: SlotContext, slots: list[tuple[int, tuple[str, ...]]], name: str):
    """One Tune run of slot trials (all of one shape), at most len(slots) at once, ready to fit."""
    from ray import tune

    resources = trial_resources(slot_resources(ctx.resources, slots[0][1]))
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(slot_trial, ctx=ctx), resources),
        # grid_search keeps the list's order, and Tune starts trials in that order
        param_space={"slot": tune.grid_search(slots)},
        tune_config=tune.TuneConfig(max_concurrent_trials=len(slots)),
        # a slot trial whose process died is restarted; the item it held counts as a failed attempt
        run_config=tune.RunConfig(
            name=name,
            storage_path=ctx.tune_storage,
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=slot_restarts(ctx)),
            callbacks=[give_back_on_error(ctx.queue, ctx.work), *silent_trial_lines()],
        ),
    )
    return tuner


def concurrency(resources: ResourcesConfig) -> int:
    """Runs of a stage that the cluster can feed at once (CPU-bound, or GPU-bound when GPUs are asked)."""
    import ray

    total = ray.cluster_resources()
    per_run_cpu = resources.workers * resources.cpus_per_worker
    slots = int(total.get("CPU", 0) // per_run_cpu) if per_run_cpu else 1
    if resources.gpus_per_worker:
        slots = min(slots, int(total.get("GPU", 0) // (resources.workers * resources.gpus_per_worker)))
    return max(1, slots)


def phases(resources: dict[str, ResourcesConfig]) -> list[tuple[tuple[str, ...], int]]:
    """Which item kinds share slots, and how many slots each phase can feed. One slot shape for
    every item when both stages ask the same resources (arms and subtrees then share slots: a
    subtree starts the moment its own arm is done). Otherwise arms run first on slots of their
    shape, then subtrees on theirs: two shapes at once could deadlock, a subtree slot holding
    CPUs/GPUs while it waits for an arm whose worker group cannot be placed."""
    if resources["pretrain"] == resources["posttrain"]:
        return [(("arm", "subtree", "leaf"), concurrency(resources["pretrain"]))]
    return [(("arm",), concurrency(resources["pretrain"])), (("subtree", "leaf"), concurrency(resources["posttrain"]))]


def phase_slots(kinds: tuple[str, ...], fits: int, max_slots: int | None, items: list[Item]) -> int:
    """Slots of one phase: what the cluster feeds (or max_concurrent_trials), never more than its
    arms and subtrees (leaf items come at the tail, when slots of their subtrees are free)."""
    return min(max_slots or fits, sum(1 for it in items if it[0] in kinds and it[0] != "leaf"))


def subtree_slots(resources: dict[str, ResourcesConfig], max_slots: int | None, subtrees: int) -> int:
    """How many slots will train subtrees (raysweep.sweep.work.split_tail spreads the tail over them)."""
    fits = next(f for kinds, f in phases(resources) if "subtree" in kinds)
    return min(max_slots or fits, subtrees)


def on_this_node():
    """Where the queue actor lives: the driver's node. Placed by Ray it lands on any node, and when
    that worker node is lost (a spot GPU node preempted) the queue dies with it and the whole tree
    with the queue (seen in the two-node test: the study failed on the queue's ActorDiedError)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def work_queue(items: list[Item], needs: dict[Item, Item], retries: int):
    """The queue actor a tree run's slots take `items` from (raysweep.sweep.queue), on the driver's node."""
    import ray

    return ray.remote(num_cpus=0, scheduling_strategy=on_this_node())(WorkQueue).remote(items, needs, retries)


def slot_tuners(ctx: SlotContext, items: list[Item], max_slots: int | None) -> Iterator:
    """Phase by phase (see `phases`), the Tune run of warm slots that trains `items` from
    ctx.queue, ready to fit: the tree fits each before the next phase is said and made."""
    if ctx.trainer.banner:
        print(f"[tree] {ctx.trainer.banner}", flush=True)
    ctx.trainer.record("tree", items=len(items))
    first = 0
    shapes = phases(ctx.resources)
    for kinds, fits in shapes:
        n = phase_slots(kinds, fits, max_slots, items)
        if n == 0:
            continue
        print(f"[tree] {n} warm worker slot{'s' if n > 1 else ''} for {' and '.join(k + 's' for k in kinds)}", flush=True)
        ctx.trainer.record("phase", kinds=list(kinds), slots=n)
        yield slot_tuner(ctx, [(first + k, kinds) for k in range(n)], "tree" if len(shapes) == 1 else f"tree-{kinds[0]}s")
        first += n


def queue_outcome(queue) -> tuple[dict, dict, list]:
    """The queue's (settled, failed, never trained) once every slot has ended; the actor is gone after."""
    import ray

    settled, failed, never = ray.get(queue.outcome.remote())
    ray.kill(queue)
    return settled, failed, never
