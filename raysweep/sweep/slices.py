"""Every final checkpoint scored on the held-out slices (raysweep.data.slices), after its tree has
trained: evaluation passes from the stored weights, never training.

What a checkpoint needs: a stage-2 node its D_post loss on each slice (L_im per slice), a stage-3
node all three (L_ft, L_ret, L_pre per slice). The scores are kept beside the node
(`<node>.slices.json`, by the slices' signature: the slices' streams and the tokens scored, so
studies sharing a node store with other slice settings keep each other's scores), so a study run
again scores nothing twice, and a study finished before slices existed gains them on its
next run with no node trained. Scoring runs as Ray tasks, one per subtree, each reserving what one
stage-3 worker reserves (its GPU on a GPU cluster); without Ray (--sync-mlflow) only what is
stored is read.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from raysweep.spec import FINETUNE_ROLES, IMMEDIATE_ROLE, Node, Subtree
from raysweep.store import storage
from raysweep.store.keys import json_key
from raysweep.store.nodes import node_done, slices_path


def signature(slices: dict, eval_tokens: int) -> str:
    """What a node's slice scores depend on besides its weights: each slice's stream (its plan's
    folder is named by its content) and the tokens an evaluation scores."""
    return json_key(
        {"slices": {r: [Path(s.path).parent.name for s in streams] for r, streams in sorted(slices.items())}, "eval_tokens": eval_tokens}
    )


def roles_of(node: Node) -> tuple[str, ...]:
    """The held-out sets a final checkpoint is judged on: L_im's for stage 2, all three for stage 3."""
    return (IMMEDIATE_ROLE,) if node.spec.stage == "posttrain" else tuple(sorted(set(FINETUNE_ROLES.values())))


def scores_by_signature(node_dir: str) -> dict[str, list[dict[str, float]]]:
    """Everything scored beside a node: signature -> its losses per slice. (Before 2026-12-07 a
    file held one signature, {"signature", "losses"}, and another study's slices replaced it.)"""
    text = storage.read_text(slices_path(node_dir))
    if text is None:
        return {}
    doc = json.loads(text)
    return doc["scores"] if "scores" in doc else {doc["signature"]: doc["losses"]}


def has_weights(done: dict) -> bool:
    return "model.safetensors" in done.get("files", {})


def jobs(subtrees: list[Subtree], sig: str) -> tuple[list[list[tuple[str, tuple[str, ...], dict]]], int, dict[str, list]]:
    """Per subtree, the finished checkpoints still to score ((node folder, roles, the scores it
    holds for other slices)); how many finished checkpoints cannot be scored because they were
    stored without weights; and the scores already stored, by node folder (each node's scores are
    read once, here: a read is a request on an object store)."""
    out, weightless, known = [], 0, {}
    for n2, children in subtrees:
        group = []
        for node in (n2, *children):
            done = node_done(node.spec.node_dir)
            if done is None:
                continue
            have = scores_by_signature(node.spec.node_dir)
            if sig in have:
                known[str(node.spec.node_dir)] = have[sig]
            elif not has_weights(done):
                weightless += 1
            else:
                group.append((str(node.spec.node_dir), roles_of(node), have))
        if group:
            out.append(group)
    return out, weightless, known


def score_group(
    group: list[tuple[str, tuple[str, ...], dict]], loop, sources: dict, eval_tokens: int, sig: str, threads: int
) -> dict[str, list]:
    """Score one subtree's checkpoints on every slice and store each one's scores beside those it
    holds for other slices (in a Ray task); returns them by node folder."""
    import torch

    from raysweep.data.streams import sample_blocks
    from raysweep.store.nodes import load_weights
    from raysweep.train.score import score_weights

    torch.set_num_threads(max(1, threads))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    k = len(next(iter(sources.values())))
    sets = [{r: torch.from_numpy(sample_blocks(src[i].local_plan(), eval_tokens)) for r, src in sources.items()} for i in range(k)]
    scores = {}
    for node_dir, roles, kept in group:
        scores[node_dir] = score_weights(load_weights(node_dir, loop.tokenizer_id), loop, [{r: s[r] for r in roles} for s in sets], device)
        storage.write_text(slices_path(node_dir), json.dumps({"scores": {**kept, sig: scores[node_dir]}}))
    return scores


def score_slices(study, data, subtrees: list[Subtree], loop) -> tuple[str, dict[str, list[dict[str, float]]]]:
    """Score every finished checkpoint of `subtrees` not yet scored on the study's held-out slices
    (with Ray up); returns the slices' signature and each scored node's losses per slice by node
    key ({} without slices)."""
    if not data.heldout_slices:
        return "", {}
    from raysweep.data.mirror import data_mirror
    from raysweep.data.streams import source_of

    sig = signature(data.heldout_slices, loop.eval_tokens)
    todo, weightless, scores = jobs(subtrees, sig)
    if weightless:
        print(
            f"[slices] {weightless} finished checkpoints were stored without weights (finetune.keep_weights: false) and are not "
            "scored on the held-out slices; the analysis leaves the slices out",
            flush=True,
        )
    if todo and _ray_up():
        mirror = data_mirror(study.checkpoints)
        sources = {r: [source_of(s, study.out / "cache", mirror) for s in streams] for r, streams in data.heldout_slices.items()}
        scores |= _run(todo, loop, sources, sig, study.finetune.resources, len(next(iter(data.heldout_slices.values()))))
    nodes = [node for n2, children in subtrees for node in (n2, *children)]
    return sig, {node.spec.node_key: scores[str(node.spec.node_dir)] for node in nodes if str(node.spec.node_dir) in scores}


def _ray_up() -> bool:
    import ray

    return ray.is_initialized()


def _run(todo: list, loop, sources: dict, sig: str, resources, k: int) -> dict[str, list]:
    """The groups as Ray tasks, one stage-3 worker's reservation each and as many as the cluster
    fits at once (a task's start, importing torch and transformers, costs more than scoring a small
    subtree: on 2 cores one task per subtree took 19–37 s for the twins' 16 checkpoints), with a
    progress line per task. Returns the scores by node folder (a failed task's nodes missing)."""
    import ray

    todo = deal(todo, _fits(ray.cluster_resources(), resources))
    t0, total = time.perf_counter(), sum(len(g) for g in todo)
    print(f"[slices] scoring {total} finished checkpoints on {k} held-out slices each ({len(todo)} tasks)", flush=True)
    task = ray.remote(num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker, max_retries=1)(score_group)
    pending = {task.remote(g, loop, sources, loop.eval_tokens, sig, int(resources.cpus_per_worker)): len(g) for g in todo}
    done, scores = 0, {}
    while pending:
        [ref], _ = ray.wait(list(pending))
        n = pending.pop(ref)
        try:
            scores |= ray.get(ref)
            done += n
        except Exception as e:  # noqa: BLE001 -- a checkpoint that cannot be read is said; the rest are scored
            print(f"[slices] {n} checkpoints not scored: {str(e).strip().splitlines()[-1]}", file=sys.stderr, flush=True)
        elapsed = time.perf_counter() - t0
        print(f"[slices] {done}/{total} scored ({elapsed:.0f}s elapsed, ~{elapsed / max(1, done) * (total - done):.0f}s left)", flush=True)
    return scores


MAX_SUBTREES_PER_TASK = 8  # beyond the tasks the cluster fits, more tasks: a progress line every few subtrees


def deal(groups: list[list], fits: int) -> list[list]:
    """Subtrees' checkpoints dealt out in turn to as many tasks as fit at once, more where a task
    would hold over MAX_SUBTREES_PER_TASK subtrees; every checkpoint in exactly one task."""
    n = min(len(groups), max(fits, -(-len(groups) // MAX_SUBTREES_PER_TASK)))
    return [sum(groups[i::n], []) for i in range(n)]


def _fits(cluster: dict, resources) -> int:
    """How many scoring tasks of one stage-3 worker's reservation the cluster holds at once."""
    want = {"CPU": resources.cpus_per_worker, **({"GPU": resources.gpus_per_worker} if resources.gpus_per_worker else {})}
    return max(1, min(int(cluster.get(k, 0) // v) for k, v in want.items()))


def slices_of_tree(study, data, tree, tracker, study_run) -> dict:
    """Every finished checkpoint of the tree scored on the held-out slices (raysweep.sweep.slices)
    and its scores on its MLflow run; a stop while scoring keeps what is scored, as a stop while
    training does. Returns node key -> losses per slice."""
    from raysweep.sweep.sync import sync_slices
    from raysweep.sweep.tree import Interrupted, loop_config

    try:
        signature, scored = score_slices(study, data, tree.subtrees, loop_config(study, data))
    except KeyboardInterrupt as stop:
        raise Interrupted(tree.arms, tree.subtrees, *stop.args) from None
    sync_slices(tracker, study_run, tree.subtrees, signature, scored)
    tree.slices = (signature, scored)  # a store rebuilt after the tree gets them again (settle_tracking)
    return scored
