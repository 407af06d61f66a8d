"""The sweep tree for `model.kind: linear`: the same levels, node keys, node store, MLflow runs and
runs table as the language-model tree (raysweep.sweep.tree), with raysweep.train.theory's network
as the model.

A linear run takes milliseconds, far less than a Ray Tune trial's start-up, so the tree is walked
in the driver, in order: level 1 per λ, level 2 per stage-2 lr, stage 3 per stage-3 lr. Resume works
as for the language models: a node whose folder holds node.json is never trained again. A run
whose loss turns non-finite is recorded as diverged (`<node>.diverged.json`, never retried) and the
runs below it as blocked, as for the language models.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raysweep.config import Study
from raysweep.data.mixing import mixture_weight
from raysweep.spec import Diverged, all_nodes, finetune_losses, immediate_loss
from raysweep.store import storage
from raysweep.store.keys import derive_seed, node_key
from raysweep.store.nodes import NODE_FILE, node_diverged, node_done, save_diverged
from raysweep.sweep.plan import method_of
from raysweep.sweep.sync import close_run, final_metrics
from raysweep.sweep.tree import TreeResult, leaf_record
from raysweep.tags import METHOD, MIX_FRACTION, OUTCOME, PARENT_NODE
from raysweep.tracking.store import Tracker
from raysweep.train import theory


@dataclass(frozen=True)
class LinearNode:
    stage: str
    key: str
    dir: Path
    name: str
    parent: LinearNode | None
    lr: float
    steps: int
    params: dict
    tags: dict


def arm_weight(study: Study, mix: float) -> float:
    """α of an arm: D_post's share of its stage-1 objective (raysweep.data.mixing.mixture_weight)."""
    return mixture_weight(study.pretrain.tokens, study.pretrain.post_tokens, mix)


def _problem_id(study: Study) -> dict:
    th = study.theory
    return th.model_dump(mode="json", exclude={"steps", "converged"}) | {"seed": th.seed if th.seed is not None else study.seed}


def _arm(study: Study, mix: float, root: Path) -> LinearNode:
    th, p1, alpha = study.theory, study.pretrain, arm_weight(study, mix)
    key = node_key("linear-pretrain", _problem_id(study), alpha, p1.lr, th.steps.pretrain, study.seed)
    params = {"mix_fraction": mix, "alpha": alpha, "lr": p1.lr, "steps": th.steps.pretrain, "kind": "linear"}
    tags = {MIX_FRACTION: mix, METHOD: method_of(mix)}
    return LinearNode("pretrain", key, root / "pretrain" / key, f"pretrain/mix={mix:g}", None, p1.lr, th.steps.pretrain, params, tags)


def _post(study: Study, arm: LinearNode, lr: float, root: Path) -> LinearNode:
    th, mix = study.theory, arm.params["mix_fraction"]
    key = node_key("linear-posttrain", arm.key, lr, th.steps.posttrain, th.converged)
    params = {"mix_fraction": mix, "alpha": arm.params["alpha"], "lr": lr, "max_steps": th.steps.posttrain, "kind": "linear"}
    name = f"posttrain/mix={mix:g}/lr={lr:g}/dropout=0"
    return LinearNode(
        "posttrain", key, root / "posttrain" / key, name, arm, lr, th.steps.posttrain, params, {**arm.tags, PARENT_NODE: arm.key}
    )


def _leaf(study: Study, post: LinearNode, lr: float, root: Path) -> LinearNode:
    th, p1 = study.theory, study.pretrain
    key = node_key("linear-finetune", post.key, lr, th.steps.finetune)
    params = {
        "mix_fraction": post.params["mix_fraction"],
        "alpha": post.params["alpha"],
        "posttrain_lr": post.lr,
        "dropout": 0.0,
        "replay": 0.0,
        "lr": lr,
        "steps": th.steps.finetune,
        "mode": p1.mode,
        "post_tokens": p1.post_tokens,
        "seed": study.seed,
        "kind": "linear",
    }
    name = f"finetune/{post.name.removeprefix('posttrain/')}/ft_lr={lr:g}"
    tags = {MIX_FRACTION: post.tags[MIX_FRACTION], METHOD: post.tags[METHOD], PARENT_NODE: post.key}
    return LinearNode("finetune", key, root / "finetune" / key, name, post, lr, th.steps.finetune, params, tags)


def linear_tree(study: Study) -> tuple[list[LinearNode], list[tuple[LinearNode, list[LinearNode]]]]:
    """The linear tree as nodes: one arm per λ, a stage-2 node per stage-2 lr under it, a stage-3 node per stage-3 lr under each."""
    root = study.checkpoints / "linear"
    arms, subtrees = [], []
    for mix in study.pretrain.mix_fraction:
        arm = _arm(study, mix, root)
        arms.append(arm)
        for lr2 in study.posttrain.lr:
            post = _post(study, arm, lr2, root)
            subtrees.append((post, [_leaf(study, post, lr3, root) for lr3 in study.finetune.lr]))
    return arms, subtrees


def problem_of(study: Study) -> theory.Problem:
    th = study.theory
    return theory.make_problem(
        th.features.model_dump(), th.gains.model_dump(), th.co_occurrence, th.seed if th.seed is not None else study.seed
    )


def _weights(node: LinearNode) -> tuple[np.ndarray, np.ndarray]:
    with np.load(node.dir / "weights.npz") as z:
        return z["W1"], z["W2"]


def train_node(node: LinearNode, study: Study, problem: theory.Problem) -> dict:
    """Train one node from its parent's weights (an arm: from the seeded init) and store it.
    Raises Diverged (recorded by the caller) when its loss becomes non-finite."""
    th = study.theory
    if node.parent is None:
        d = problem.U.shape[0]
        W1, W2 = theory.init_weights(d, th.width, th.init_scale, derive_seed(study.seed, "linear-init"))
        alpha = node.params["alpha"]
        objective = [(1 - alpha, problem.pre), (alpha, problem.post)]
    else:
        W1, W2 = _weights(node.parent)
        objective = [(1.0, problem.post if node.stage == "posttrain" else problem.ft)]
    watch = problem.post if node.stage == "posttrain" else None
    t0 = time.perf_counter()
    W1, W2, steps, curve = theory.train(
        W1, W2, objective, node.lr, node.steps, eval_every=max(1, node.steps // 100), watch=watch, tol=th.converged
    )
    W = W2 @ W1
    result = {
        "losses": theory.all_losses(W, problem),
        "gains": theory.gains(W, problem),
        "singular_values": theory.singular_values(W),
        "steps": steps,
        "seconds": time.perf_counter() - t0,
        "curve": curve,
    }
    with storage.atomic_dir(node.dir) as tmp:  # a folder with node.json is always complete
        np.savez(tmp / "weights.npz", W1=W1, W2=W2)
        (tmp / NODE_FILE).write_text(
            json.dumps({"node_key": node.key, "stage": node.stage, "params": node.params, "result": result}, indent=1)
        )
    return result


def _metrics(node: LinearNode, result: dict, parent_result: dict | None) -> dict[str, float]:
    m = final_metrics(node.stage, result["losses"]) | {f"sv.{g}": v for g, v in result["gains"].items()} | {"steps": result["steps"]}
    if node.stage == "finetune":
        m["delta"] = finetune_losses(result["losses"])["L_ret"] - immediate_loss(parent_result["losses"])
    return m


def _sync(tracker: Tracker, node: LinearNode, parent_run: str | None, settled: dict) -> str | None:
    """The node's MLflow run, up to date with its node folder: its loss curve (exactly once), final
    metrics and status (FAILED with outcome diverged / blocked where it did not finish)."""
    if parent_run is None:
        return None
    run_id = tracker.guard(
        f"opening the MLflow run of {node.name}", tracker.node_run, node.key, node.name, parent_run, node.stage, node.params, node.tags
    )
    if (
        run_id is None
        or tracker.guard(f"reading the MLflow run of {node.name}", lambda: tracker.client.get_run(run_id).info.status) != "RUNNING"
    ):
        return run_id
    outcome, result = settled[node.key]
    if outcome == "blocked":
        close_run(tracker, run_id, "blocked")
        return run_id
    # timestamps 0: the points are those of the stored curve, the same on every sync
    points = [(f"loss_{node.stage}", float(v), 0, int(s)) for s, v in result.get("curve", [])]
    if not tracker.sender(run_id).send(points):
        return run_id
    if outcome == "diverged":
        tracker.guard(
            f"closing the MLflow run of {node.name}",
            tracker.finish,
            run_id,
            {"diverged_at_step": result["step"]},
            failed=True,
            tags={OUTCOME: "diverged"},
        )
    else:
        parent = settled[node.parent.key][1] if node.parent else None
        tracker.guard(f"closing the MLflow run of {node.name}", tracker.finish, run_id, _metrics(node, result, parent))
    return run_id


def _settle(node: LinearNode, study: Study, problem: theory.Problem, settled: dict, trained: dict) -> tuple[str, dict]:
    """(outcome, result) of a node: finished, diverged (now or before) or blocked by a diverged parent."""
    if node.parent is not None and settled[node.parent.key][0] != "done":
        return "blocked", {}
    done = node_done(node.dir)
    if done is not None:
        return "done", done["result"]
    diverged = node_diverged(node.dir)
    if diverged is not None:
        return "diverged", diverged
    try:
        result = train_node(node, study, problem)
    except Diverged as e:
        save_diverged(node.dir, node.lr, e.step, str(e), [(f"loss_{node.stage}", float(v), 0, int(s)) for s, v in e.points])
        return "diverged", node_diverged(node.dir)
    trained[node.stage] += 1
    return "done", result


def train_tree(study: Study, tracker: Tracker, study_run: str) -> TreeResult:
    """Train every node not yet finished, log each to MLflow (with its loss curve as step metrics)."""
    problem = problem_of(study)
    arms, subtrees = linear_tree(study)
    tree = TreeResult(arms, subtrees)
    settled: dict[str, tuple[str, dict]] = {}
    runs: dict[str, str | None] = {}
    t0 = time.perf_counter()
    order = all_nodes(arms, subtrees)
    for i, node in enumerate(order, 1):
        outcome, result = settled[node.key] = _settle(node, study, problem, settled, tree.trained)
        runs[node.key] = _sync(tracker, node, runs.get(node.parent.key) if node.parent else study_run, settled) if tracker.online else None
        if outcome == "diverged":
            below = sum(1 for m in order if m.parent is node or (m.parent is not None and m.parent.parent is node))
            tree.diverged.append(
                f"{node.name}: diverged at step {result['step']} (lr {node.lr:g}; lower it)"
                + (f", {below} runs below it not trained" if below else "")
            )
        if outcome != "done":
            print(f"[tree] {i}/{len(order)} {node.name}: {outcome}", flush=True)
            continue
        print(
            f"[tree] {i}/{len(order)} {node.name}: "
            + ", ".join(f"{k} {v:.4g}" for k, v in result["losses"].items())
            + f"; specialised gain {result['gains']['specialised']:.3f}",
            flush=True,
        )
    tree.seconds = time.perf_counter() - t0
    return tree


def collect(study: Study) -> list[dict]:
    """One record per finished leaf (raysweep.sweep.tree.leaf_record)."""
    records = []
    for n2, children in linear_tree(study)[1]:
        post = node_done(n2.dir)
        for c in children:
            done = node_done(c.dir)
            if post and done:
                records.append(leaf_record(c.name, c.tags[METHOD], {**c.params, "finetune_lr": c.lr}, post, done))
    return records


def summary(study: Study) -> dict:
    """Per arm: α and the learned gains after each stage; per leaf: Δ = L(θ_ft; D_post) − L(θ_post; D_post)."""
    arms, subtrees = linear_tree(study)
    out = {"arms": [], "leaves": []}
    for arm in arms:
        done = node_done(arm.dir)
        if done:
            out["arms"].append({"mix_fraction": arm.params["mix_fraction"], "alpha": arm.params["alpha"], "gains": done["result"]["gains"]})
    for n2, children in subtrees:
        post = node_done(n2.dir)
        for c in children:
            done = node_done(c.dir)
            if post and done:
                named, l_im = finetune_losses(done["result"]["losses"]), immediate_loss(post["result"]["losses"])
                out["leaves"].append(
                    {
                        "name": c.name,
                        "method": c.tags[METHOD],
                        "mix_fraction": c.params["mix_fraction"],
                        "alpha": c.params["alpha"],
                        "posttrain_lr": c.params["posttrain_lr"],
                        "finetune_lr": c.lr,
                        "gains_pre": node_done(n2.parent.dir)["result"]["gains"],
                        "gains_post": post["result"]["gains"],
                        "gains_ft": done["result"]["gains"],
                        "L_im": l_im,
                        "L_ret": named["L_ret"],
                        "L_ft": named["L_ft"],
                        "delta": named["L_ret"] - l_im,
                    }
                )
    return out


def summary_table(s: dict) -> str:
    lines = [
        "Learned gains (singular values in the shared bases) after each stage, and the forgetting Δ = L_ret − L_im",
        f"{'λ':>5} {'α':>6} {'post lr':>8} {'ft lr':>7} | {'specialised pre/post/ft':>24} | {'inconsistent pre/post/ft':>24} | {'L_im':>9} {'L_ret':>9} {'L_ft':>9} {'Δ':>9}",
    ]
    for r in s["leaves"]:
        sp = "/".join(f"{r[f'gains_{k}']['specialised']:.2f}" for k in ("pre", "post", "ft"))
        ic = "/".join(f"{r[f'gains_{k}']['inconsistent']:.2f}" for k in ("pre", "post", "ft"))
        lines.append(
            f"{r['mix_fraction']:>5g} {r['alpha']:>6.3f} {r['posttrain_lr']:>8g} {r['finetune_lr']:>7g} | {sp:>24} | {ic:>24} | "
            f"{r['L_im']:>9.2e} {r['L_ret']:>9.2e} {r['L_ft']:>9.2e} {r['delta']:>9.2e}"
        )
    return "\n".join(lines) + "\n"
