"""MLflow brought up to date from the node store: each settled node's run holds every metric point
the node logged (exactly once), its final metrics and its status. Run by the driver only: as each
item of a tree run ends (raysweep.sweep.runs), before and after a tree, and alone with
--sync-mlflow; idempotent.

MLflow is a view, never the record (raysweep.tracking): whatever an outage, a killed worker or a
retrained node left out of it, or changed, is written from the node's own files.
"""

from __future__ import annotations

from raysweep.spec import FINETUNE_ROLES, IMMEDIATE_ROLE, Node, Subtree, finetune_losses, immediate_loss
from raysweep.store.keys import json_key
from raysweep.store.nodes import node_diverged, node_done, node_points
from raysweep.tags import FINAL_STEP, NODE_KEY, OUTCOME, SLICES, SLICES_KEY, SLICES_SIGNATURE, SLICES_STEP, SYNCED, SYNCED_RESULT
from raysweep.tracking.store import Tracker


def final_metrics(stage: str, losses: dict[str, float]) -> dict[str, float]:
    """The study's named losses (the paper's L_im, L_ret, L_ft, L_pre) from a node's held-out losses."""
    m = {f"final_{k}": v for k, v in losses.items()}
    if stage == "posttrain":
        m["L_im"] = immediate_loss(losses)
    if stage == "finetune":
        m.update(finetune_losses(losses))
    return m


def summary_metrics(stage: str, result: dict) -> dict[str, float]:
    """What a finished node's MLflow run shows as its final metrics."""
    metrics = final_metrics(stage, result["losses"])
    metrics.update(steps=result["steps"], tokens=result["tokens"], tokens_per_s=result["tokens_per_s"], best_step=result["best_step"])
    if "data_wait_share" in result:
        metrics["data_wait_share"] = result["data_wait_share"]
    return metrics


def run_args(node: Node, parent_run: str) -> tuple:
    """Tracker.node_run's arguments for a node."""
    return (node.spec.node_key, node.name, parent_run, node.spec.stage, node.params, node.tags)


def open_run(tracker: Tracker, node: Node, parent_run: str | None) -> str | None:
    """The node's MLflow run, found by node key or created; None when MLflow is offline or fails now
    (the node trains anyway and is synced later)."""
    if parent_run is None:
        return None
    return tracker.guard(f"opening the MLflow run of {node.name}", tracker.node_run, *run_args(node, parent_run))


def close_run(tracker: Tracker, run_id: str | None, outcome: str) -> None:
    """Mark a run that did not finish normally (its node is not settled)."""
    if run_id is not None:
        tracker.guard(f"closing MLflow run {run_id}", tracker.finish, run_id, {}, failed=True, tags={OUTCOME: outcome})


def sync_node(tracker: Tracker, node: Node, parent_run: str | None, run_id: str | None = None) -> str | None:
    """Bring a settled node's MLflow run up to date from its checkpoint folder alone: the run exists
    and holds every metric point the node logged (exactly once), its final metrics and its status
    (FINISHED; FAILED with outcome "diverged"). Idempotent and cheap once synced (a tag records it).
    `run_id`: the node's run when the caller holds it (else found by node key, or created).
    Returns the run id, or None when MLflow is unreachable (warned; nothing is lost)."""
    done = node_done(node.spec.node_dir)
    diverged = None if done else node_diverged(node.spec.node_dir)
    if not (done or diverged):  # not settled: its run if it has one (trained before), never a new one
        found = (
            tracker.guard(f"finding the MLflow run of {node.name}", tracker.find_run, NODE_KEY, node.spec.node_key) if parent_run else None
        )
        return found.info.run_id if found is not None else None
    run_id = run_id or open_run(tracker, node, parent_run)
    if run_id is None:
        return None
    try:
        run = tracker.client.get_run(run_id)
        points = node_points(node.spec.node_dir)
        status = "FINISHED" if done else "FAILED"
        result = json_key(done["result"] if done else {"diverged": diverged["step"]})
        tags = run.data.tags
        if run.info.status == status and tags.get(SYNCED) == str(len(points)) and tags.get(SYNCED_RESULT) == result:
            return run_id
        if not tracker.sender(run_id).send(points):
            return run_id
        # a node trained again (its stored copy was corrupt) has a new result, with new wall-clock
        # figures: its final metrics go one step further, never a second value at the same step
        step = int(tags.get(FINAL_STEP, 0)) + (1 if tags.get(SYNCED_RESULT, result) != result else 0)
        synced = {SYNCED: len(points), SYNCED_RESULT: result, FINAL_STEP: step}
        if done:
            if OUTCOME in tags:  # an earlier attempt failed; this one finished the node
                tracker.client.delete_tag(run_id, OUTCOME)
            tracker.finish(run_id, summary_metrics(node.spec.stage, done["result"]), tags=synced, step=step)
        else:
            tracker.finish(run_id, {"diverged_at_step": diverged["step"]}, failed=True, tags={**synced, OUTCOME: "diverged"}, step=step)
    except Exception as e:  # noqa: BLE001
        tracker.warn_outage(f"syncing the MLflow run of {node.name}", e)
    return run_id


def sync_tree(tracker: Tracker, study_run: str | None, arms: list[Node], subtrees: list[Subtree]) -> None:
    """sync_node over a whole tree (driver), parents before children."""
    if not tracker.online or study_run is None:
        return
    arm_runs = {a.spec.node_key: sync_node(tracker, a, study_run) for a in arms}
    for n2, children in subtrees:
        post_run = sync_node(tracker, n2, arm_runs.get(n2.parent))
        for c in children:
            sync_node(tracker, c, post_run)


SLICE_NAMES = {"posttrain": {"L_im": IMMEDIATE_ROLE}, "finetune": FINETUNE_ROLES}


def slice_metrics(stage: str, losses: list[dict[str, float]]) -> dict[str, float]:
    """A node's losses per held-out slice as MLflow metrics: `L_ret/slice_2`, ... (the UI groups them by loss)."""
    return {f"{name}/slice_{k}": by_role[role] for k, by_role in enumerate(losses) for name, role in SLICE_NAMES[stage].items()}


def sync_slices(tracker: Tracker, study_run: str | None, subtrees: list[Subtree], signature: str, scored: dict) -> None:
    """Each scored node's losses per held-out slice (raysweep.sweep.slices) onto its MLflow run, once:
    one search finds the runs that have these losses already. Slices scored anew (another signature,
    or a node trained again) go one step further, never a second value at one step."""
    if not tracker.online or study_run is None or not scored:
        return
    from mlflow.entities import Metric, RunTag

    try:
        have = {
            (r.data.tags.get(NODE_KEY), r.data.tags.get(SLICES_KEY))
            for r in tracker.client.search_runs(
                [tracker.experiment_id], filter_string=f"tags.`{SLICES_SIGNATURE}` = '{signature}'", max_results=50_000
            )
        }
        for node in (m for n2, children in subtrees for m in (n2, *children)):
            key = node.spec.node_key
            if key not in scored or (key, json_key(scored[key])) in have:
                continue
            run = tracker.find_run(NODE_KEY, key)
            if run is None:
                continue
            step = int(run.data.tags[SLICES_STEP]) + 1 if SLICES_STEP in run.data.tags else 0
            metrics = slice_metrics(node.spec.stage, scored[key])
            tags = {SLICES_SIGNATURE: signature, SLICES_STEP: step, SLICES: len(scored[key]), SLICES_KEY: json_key(scored[key])}
            tracker.client.log_batch(
                run.info.run_id,
                metrics=[Metric(k, float(v), 0, step) for k, v in metrics.items()],
                tags=[RunTag(k, str(v)) for k, v in tags.items()],
            )
    except Exception as e:  # noqa: BLE001 -- the scores are in the node store; a later run logs what is missing
        tracker.warn_outage("logging the held-out slices' losses", e)


def sync_all(tracker: Tracker, study_run: str | None, tree) -> None:
    """A tree run's nodes and their held-out slices' losses (raysweep.sweep.tree.TreeResult), written again."""
    sync_tree(tracker, study_run, tree.arms, tree.subtrees)
    sync_slices(tracker, study_run, tree.subtrees, *tree.slices)
