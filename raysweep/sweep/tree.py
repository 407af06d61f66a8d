"""Training the sweep tree: what is left to train, in what order, on warm slots; what came of it.

A tree run puts its items (arms first, then subtrees in their arms' order) in one queue, trained by
warm worker slots (raysweep.sweep.slots). A subtree is taken as soon as its own arm is done, while
other arms may still train (it never waits for the slowest arm), and its stage-3 children start
from its weights in memory right after it. Finished nodes (node.json) are never trained again, so
running the same command after an interruption resumes where it stopped; diverged nodes and what
is below them are settled too (outcomes, not failures).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from functools import partial

from raysweep.config import Study
from raysweep.data.mirror import data_mirror
from raysweep.data.streams import source_of
from raysweep.spec import Node, Subtree, all_nodes, immediate_loss
from raysweep.store import storage
from raysweep.store.nodes import node_diverged, node_done, quarantine, verify_node
from raysweep.sweep.halving import halving_rounds
from raysweep.sweep.plan import grid_rounds, plan
from raysweep.sweep.queue import Item
from raysweep.sweep.runs import TreeRuns
from raysweep.sweep.search import optuna_rounds
from raysweep.sweep.slots import SlotContext, queue_outcome, slot_tuners, subtree_slots, work_queue
from raysweep.sweep.sync import sync_tree
from raysweep.sweep.work import Work, split_tail
from raysweep.tags import METHOD, PROBE
from raysweep.train.callbacks.faults import Faults
from raysweep.train.context import LoopConfig
from raysweep.train.trainer import TrainerConfig


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM while a tree trained (raysweep.console): the tree it was training, so the
    study can count what is finished and close what is not (raysweep.study.report_interrupted)."""

    def __init__(self, arms: list[Node], subtrees: list[Subtree], *args, clear_leases=None):
        super().__init__(*args)  # the signal's name, when raysweep.console's handler raised it
        self.arms, self.subtrees = arms, subtrees
        self.clear_leases = clear_leases  # to call once Ray has stopped the workers


@dataclass
class TreeResult:
    """What one tree run (or a whole search) did."""

    arms: list[Node]
    subtrees: list[Subtree]
    trained: dict[str, int] = field(default_factory=lambda: {"pretrain": 0, "posttrain": 0, "finetune": 0})
    finished_elsewhere: int = 0  # nodes another driver sharing the node store finished while this one ran
    failures: list[str] = field(default_factory=list)  # one line per node that failed for good (or was never trained)
    diverged: list[str] = field(default_factory=list)  # one line per diverged node (an outcome)
    seconds: float = 0.0
    search: list[dict] | None = None  # the Optuna search's log (posttrain.search: optuna)
    halving: list[dict] | None = None  # every rung's decisions (posttrain.search: halving)
    variants: list = field(default_factory=list)  # raysweep.robustness.VariantResult per robustness variant
    slices: tuple[str, dict] = ("", {})  # the held-out slices' signature, node key -> losses per slice (raysweep.sweep.slices)

    def absorb(self, other: TreeResult) -> TreeResult:
        """Another tree run of the same search (a round, a rung) counted into this one."""
        self.seconds += other.seconds
        self.failures += other.failures
        self.diverged += [d for d in other.diverged if d not in self.diverged]  # an arm's line comes once per round
        for k, v in other.trained.items():
            self.trained[k] = self.trained.get(k, 0) + v
        self.finished_elsewhere += other.finished_elsewhere
        return self


SEARCHES = {"grid": grid_rounds, "optuna": optuna_rounds, "halving": halving_rounds}
"""`posttrain.search` -> its rounds: a generator of the (arms, subtrees) to train, one tree run
each, sent each run's TreeResult, returning the whole search's TreeResult. The grid is one round."""


def train_tree(study: Study, data, tracker, study_run: str | None, trainer: TrainerConfig | None) -> TreeResult:
    """Train every node not yet finished, round by round of the study's search (SEARCHES), each
    round's items on warm slots; finished (and diverged) nodes are skipped. `trainer` trains each
    chain of runs (raysweep.train.trainer); None trains nothing: it checks the node store and syncs
    MLflow from it (--sync-mlflow)."""
    rounds = SEARCHES[study.posttrain.search](study, data)
    arms, subtrees = next(rounds)
    me = trainer_id(study)
    while True:
        t0 = time.perf_counter()
        result, before, settled, items = survey(tracker, study_run, arms, subtrees, trainer)
        if items:
            work = Work(arms, subtrees)
            runs = TreeRuns(tracker, study_run)
            try:
                ctx, items, needs = slot_context(study, data, work, runs, items, trainer, me, settled)
                ctx = replace(ctx, queue=work_queue(items, needs, ctx.retries))
                slot_errors: list[str] = []
                with QueueEvents(ctx.queue, len(items), partial(item_label, ctx.work), runs.on_event):
                    for tuner in slot_tuners(ctx, items, study.max_concurrent_trials):
                        slot_errors += [str(r.error) for r in tuner.fit() if r.error]
                _, failed, never = queue_outcome(ctx.queue)
                # an interrupted study marks what is still open KILLED instead (raysweep.study.report_interrupted)
                runs.close_rest()
                result.failures = failure_lines(ctx.work, failed, never, slot_errors)
            except KeyboardInterrupt as stop:
                # Ray is still up here: the study clears the leases once it has stopped the workers
                raise Interrupted(arms, subtrees, *stop.args, clear_leases=work.clear_leases) from None
            work.clear_leases()  # every trial has ended: what a killed or failed worker held is stale
        count_trained(result, before, me)
        # MLflow is a view of the node store: whatever an outage or a killed worker kept from it is written now
        sync_tree(tracker, study_run, arms, subtrees)
        result.diverged = diverged_report(arms, subtrees)
        result.seconds = time.perf_counter() - t0
        try:
            arms, subtrees = rounds.send(result)
        except StopIteration as done:
            return done.value


def kind_of(node: Node) -> str:
    """What a node counts as in a tree run's summary: its stage, or halving's rung or probe."""
    if node.spec.rung_of is not None:
        return "rung"
    return "probe" if PROBE in node.tags else node.spec.stage


def verified_done(arms: list[Node], subtrees: list[Subtree]) -> set[str]:
    """Keys of the finished nodes whose files are intact. A node that this run will load (the parent
    of an unfinished node) is hashed in full; the rest get a size check (cheap, catches truncation).
    A corrupt node is moved aside (raysweep.store.nodes.quarantine) and so trained again. Leaves are
    checked first, so a parent is hashed only when a child really needs it. Remote nodes are
    checked in full when they are downloaded to be loaded (raysweep.store.nodes.load_weights)."""
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


def blocked_below(subtrees: list[Subtree], diverged: set[str]) -> set[str]:
    """Nodes below a diverged node: they have no weights to start from, so they are settled too."""
    out = set()
    for n2, children in subtrees:
        if n2.parent in diverged:
            out |= {n2.spec.node_key, *(c.spec.node_key for c in children)}
        elif n2.spec.node_key in diverged:
            out |= {c.spec.node_key for c in children}
    return out


def trial_order(arms: list[Node], subtrees: list[Subtree], todo: list[int], todo2: list[int]) -> list[Item]:
    """The items of one tree run, in the order slots take them: the arms to train first, then the
    subtrees to train in the order of their arms, so the first subtrees to start are those whose
    arm started (and so ends) first."""
    rank = {a.spec.node_key: i for i, a in enumerate(arms)}
    return [("arm", i) for i in todo] + [("subtree", j) for j in sorted(todo2, key=lambda j: (rank[subtrees[j][0].parent], j))]


def trainer_id(study: Study) -> str:
    """Who trains a tree now, as each node it stores says: the study's hash and one call's own id,
    so that two drivers of one study sharing a node store each count what they trained."""
    return f"{study.content_hash()}/{uuid.uuid4().hex[:12]}"


def loop_config(study: Study, data, trained_by: str = "") -> LoopConfig:
    """What every run of the tree shares in its worker group (threads are set per stage by the slots)."""
    return LoopConfig(
        shape=study.model.shape,
        vocab_size=data.vocab_size,
        seq_len=study.model.seq_len,
        eval_tokens=min(study.pretrain.eval_tokens, study.posttrain.eval_tokens, study.finetune.eval_tokens),
        eval_sources={r: source_of(s, study.out / "cache", data_mirror(study.checkpoints)) for r, s in data.heldout.items()},
        tokenizer_id=data.tokenizer_id,
        compile=study.model.compile,
        precision=study.model.precision,
        callbacks=Faults.drills(),  # read here, in the driver, once: the workers get them with the config
        trained_by=trained_by,
    )


def survey(tracker, study_run: str | None, arms: list[Node], subtrees: list[Subtree], trainer: TrainerConfig | None):
    """What one tree run finds in the node store, said: (its result so far, the nodes finished
    before it, the nodes settled (finished, diverged or blocked below), the items left to train in
    order). What is settled is listed in this study's MLflow before training starts."""
    # one look at each node (a remote read with an object store); everything below derives from it
    before = verified_done(arms, subtrees)
    settled = before | {
        m.spec.node_key for m in all_nodes(arms, subtrees) if m.spec.node_key not in before and node_diverged(m.spec.node_dir)
    }
    blocked = blocked_below(subtrees, settled - before)
    todo = [i for i, a in enumerate(arms) if a.spec.node_key not in settled]
    todo2 = [i for i, (n, children) in enumerate(subtrees) if not {m.spec.node_key for m in (n, *children)} <= settled | blocked]
    # finished here or by another study sharing the node store
    sync_tree(
        tracker, study_run, [a for a in arms if a.spec.node_key in settled], [st for i, st in enumerate(subtrees) if i not in set(todo2)]
    )
    leaves = sum(len(c) for _, c in subtrees)
    print(f"[tree] level 1: {len(arms)} pretraining arms, {len(arms) - len(todo)} already done", flush=True)
    print(
        f"[tree] level 2: {len(subtrees)} post-training runs x {leaves // max(1, len(subtrees))} fine-tuning runs each; "
        f"{len(subtrees) - len(todo2)} subtrees already done; each starts as soon as its own arm is done",
        flush=True,
    )
    items = trial_order(arms, subtrees, todo, todo2) if trainer is not None else []
    return TreeResult(arms, subtrees), before, settled | blocked, items


def count_trained(result: TreeResult, before: set[str], me: str) -> None:
    """Count into `result` the nodes finished since `before`: by this call (`me`), per kind, or by another driver."""
    for m in all_nodes(result.arms, result.subtrees):
        done = node_done(m.spec.node_dir) if m.spec.node_key not in before else None
        if done is not None and done.get("trained_by") == me:
            kind = kind_of(m)
            result.trained[kind] = result.trained.get(kind, 0) + 1
        elif done is not None:
            result.finished_elsewhere += 1


def slot_context(
    study: Study, data, work: Work, runs: TreeRuns, items: list[Item], trainer: TrainerConfig, trained_by: str, settled: set[str]
) -> tuple[SlotContext, list[Item], dict[Item, Item]]:
    """What the slots of one tree run share, the items in the order slots take them (the tree's
    tail split into leaf items) and what each waits for. Each node is stamped `trained_by`, and each
    not in `settled` has its MLflow run opened first by this driver (`runs`)."""
    resources = {s: getattr(study, s).resources for s in ("pretrain", "posttrain", "finetune")}
    arm_item = {a.spec.node_key: ("arm", i) for i, a in enumerate(work.arms)}
    arm_of = {it: arm_item[work.group(it)[0].parent] for it in items if it[0] == "subtree"}
    needs = {it: arm for it, arm in arm_of.items() if arm in items}  # an arm not in this run is done already
    todo = {}  # subtree -> its children still to train (one look at the node store per subtree)
    for _, j in arm_of:
        left = {n.spec.node_key for n in work.todo(("subtree", j))}
        todo[j] = [c for c, n in enumerate(work.subtrees[j][1]) if n.spec.node_key in left]
    items, split = split_tail(items, todo, subtree_slots(resources, study.max_concurrent_trials, len(arm_of)))
    needs.update({it: ("subtree", it[1]) for it in items if it[0] == "leaf"})
    work = work.with_tail(split).with_sources(items, study.out / "cache", data_mirror(study.checkpoints))
    work = work.with_runs(runs.open(work, items, settled))
    ctx = SlotContext(
        loop=loop_config(study, data, trained_by),
        resources=resources,
        retries=study.retries,
        tune_storage=str(study.out / "tune"),
        ray_storage=str(study.out / "ray"),
        tracking_uri=runs.tracker.tracking_uri if runs.online else None,
        work=work,
        trainer=trainer,
    )
    return ctx, items, needs


def item_label(work: Work, item: Item) -> str:
    """An item in the progress lines: its first run's label, and how many stage-3 runs follow it."""
    head, *children = work.group(item)
    return head.spec.label + (f" (+{len(children)} fine-tuning runs)" if item[0] == "subtree" else "")


def failure_lines(work: Work, failed: dict, never: list, slot_errors: list[str]) -> list[str]:
    """One line per item that failed for good or was never trained (a leaf blocked by its stage-2
    run is said by that run's own line)."""
    failures = []
    for item, error in failed.items():
        if item[0] == "leaf" and error.startswith("blocked"):
            continue
        name = work.group(item)[0].name
        what = {"arm": "pretrain arm ", "subtree": "subtree ", "leaf": "finetune run "}[item[0]]
        failures.append(f"{'' if error.startswith('blocked') else what}{name}: {error}")
    why = f"every worker slot failed: {slot_errors[0]}" if slot_errors else "no worker slot took it"
    return failures + [f"{work.group(item)[0].name}: not trained ({why})" for item in never]


def diverged_report(arms: list[Node], subtrees: list[Subtree]) -> list[str]:
    """One line per diverged node (and what it blocks): outcomes, not failures; never retried."""
    lines = []
    blocked_by = {a.spec.node_key: [n2 for n2, _ in subtrees if n2.parent == a.spec.node_key] for a in arms}
    for n2, children in subtrees:
        blocked_by[n2.spec.node_key] = children
    for m in all_nodes(arms, subtrees):
        d = node_diverged(m.spec.node_dir)
        if d:
            below = blocked_by.get(m.spec.node_key, [])
            lines.append(
                f"{m.name}: diverged at step {d['step']} (lr {d['lr']:g}; lower it)"
                + (f", {len(below)} runs below it not trained" if below else "")
            )
    return lines


def collect(study: Study, data, subtrees: list[Subtree] | None = None, slices: dict | None = None) -> list[dict]:
    """One record per finished stage-3 node (of the grid, or of the subtrees a search ran): what
    analysis.runs.make_row turns into a runs-table row. `slices`: node key -> losses per held-out
    slice (raysweep.sweep.slices), where both the leaf and its stage-2 node were scored."""
    subtrees = plan(study, data)[1] if subtrees is None else subtrees
    slices = slices or {}
    records = []
    for n2, children in subtrees:
        post = node_done(n2.spec.node_dir)
        for c in children:
            done = node_done(c.spec.node_dir)
            if post and done:
                per_slice = slice_losses(slices.get(n2.spec.node_key), slices.get(c.spec.node_key))
                records.append(leaf_record(c.name, c.tags[METHOD], {**c.params, "finetune_lr": c.params["lr"]}, post, done, per_slice))
    return records


def slice_losses(post: list[dict] | None, leaf: list[dict] | None) -> list[dict] | None:
    """A leaf's L_im (its stage-2 node's) and held-out losses on each slice, by role; None unless both were scored."""
    if not post or not leaf or len(post) != len(leaf):
        return None
    return [{"immediate_loss": immediate_loss(p), "losses": f} for p, f in zip(post, leaf)]


def leaf_record(name: str, method: str, config: dict, post: dict, done: dict, slices: list[dict] | None = None) -> dict:
    """A finished leaf as the analysis reads it: name, method, config, L_im and its held-out losses
    (and the same on each held-out slice, when scored)."""
    record = {
        "name": name,
        "method": method,
        "config": config,
        "immediate_loss": immediate_loss(post["result"]["losses"]),
        "losses": done["result"]["losses"],
    }
    if slices:
        record["slices"] = slices
    return record


class QueueEvents:
    """Prints the queue's events in the driver (a thread), one line each, with the run's progress,
    and hands each to `on_event(what, item, text)` (raysweep.sweep.runs moves MLflow runs on)."""

    def __init__(self, queue, total: int, describe, on_event=None):
        self.queue, self.total, self.describe, self.seen, self.done = queue, total, describe, 0, 0
        self.on_event = on_event
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
            if self.on_event is not None:
                self.on_event(what, item, text)
            if what == "start":
                continue
            self.done += what != "retry"
            left = t / max(1, self.done) * (self.total - self.done)
            what = {"done": "done", "retry": "FAILED (retrying)", "failed": "FAILED"}.get(what, what)
            print(
                f"[tree] {self.done}/{self.total} {self.describe(item)} {what}{': ' + text if text else ''} "
                f"({t:.0f}s elapsed, ~{left:.0f}s left)",
                flush=True,
            )
