"""The sweep tree for `model.kind: linear`: the same levels, node keys, node store, MLflow runs and
runs table as the language-model tree (raysweep.tree), with raysweep.theory's network as the model.

A linear run takes milliseconds, far less than a Ray Tune trial's start-up, so the tree is walked
in the driver, in order: level 1 per λ, level 2 per stage-2 lr, stage 3 per stage-3 lr. Resume works
as for the language models: a node whose folder holds node.json is never trained again.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.runs import make_row
from raysweep import theory
from raysweep.config import Study
from raysweep.mixing import derive_seed
from raysweep.stage import NODE_FILE, node_done
from raysweep.tracking import warn_outage
from raysweep.tree import final_metrics, method_of, node_key


@dataclass(frozen=True)
class LinearNode:
    stage: str
    key: str
    dir: Path
    name: str
    parent: "LinearNode | None"
    lr: float
    steps: int
    params: dict
    tags: dict


def mixture_weight(study: Study, lam: float) -> float:
    """α: D_post's share of the stage-1 objective, from λ the way tokens would mix (config.TheoryConfig)."""
    p1 = study.pretrain
    extra = lam * p1.post_tokens
    return extra / (p1.tokens + extra)


def plan(study: Study) -> tuple[list[LinearNode], list[tuple[LinearNode, list[LinearNode]]]]:
    th = study.theory
    problem_id = th.model_dump(mode="json", exclude={"steps", "converged"}) | {"seed": th.seed if th.seed is not None else study.seed}
    root = study.checkpoints / "linear"
    arms, subtrees = [], []
    for lam in study.pretrain.mix_fraction:
        alpha = mixture_weight(study, lam)
        k1 = node_key("linear-pretrain", problem_id, alpha, study.pretrain.lr, th.steps.pretrain, study.seed)
        tags = {"raysweep.mix_fraction": lam, "raysweep.method": method_of(lam)}
        arm = LinearNode("pretrain", k1, root / "pretrain" / k1, f"pretrain/mix={lam:g}", None, study.pretrain.lr, th.steps.pretrain,
                         {"mix_fraction": lam, "alpha": alpha, "lr": study.pretrain.lr, "steps": th.steps.pretrain, "kind": "linear"}, tags)
        arms.append(arm)
        for lr2 in study.posttrain.lr:
            k2 = node_key("linear-posttrain", k1, lr2, th.steps.posttrain, th.converged)
            path2 = f"mix={lam:g}/lr={lr2:g}/dropout=0"
            n2 = LinearNode("posttrain", k2, root / "posttrain" / k2, f"posttrain/{path2}", arm, lr2, th.steps.posttrain,
                            {"mix_fraction": lam, "alpha": alpha, "lr": lr2, "max_steps": th.steps.posttrain, "kind": "linear"},
                            {**tags, "raysweep.parent_node": k1})
            children = []
            for lr3 in study.finetune.lr:
                k3 = node_key("linear-finetune", k2, lr3, th.steps.finetune)
                children.append(LinearNode(
                    "finetune", k3, root / "finetune" / k3, f"finetune/{path2}/ft_lr={lr3:g}", n2, lr3, th.steps.finetune,
                    {"mix_fraction": lam, "alpha": alpha, "posttrain_lr": lr2, "dropout": 0.0, "replay": 0.0, "lr": lr3, "steps": th.steps.finetune,
                     "mode": study.pretrain.mode, "post_tokens": study.pretrain.post_tokens, "seed": study.seed, "kind": "linear"},
                    {**tags, "raysweep.parent_node": k2}))
            subtrees.append((n2, children))
    return arms, subtrees


def problem_of(study: Study) -> theory.Problem:
    th = study.theory
    return theory.make_problem(th.features.model_dump(), th.gains.model_dump(), th.co_occurrence, th.seed if th.seed is not None else study.seed)


def _weights(node: LinearNode) -> tuple[np.ndarray, np.ndarray]:
    with np.load(node.dir / "weights.npz") as z:
        return z["W1"], z["W2"]


def _train_node(node: LinearNode, study: Study, problem: theory.Problem) -> dict:
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
    W1, W2, steps, curve = theory.train(W1, W2, objective, node.lr, node.steps, eval_every=max(1, node.steps // 100), watch=watch, tol=th.converged)
    W = W2 @ W1
    result = {"losses": theory.all_losses(W, problem), "gains": theory.gains(W, problem), "singular_values": theory.singular_values(W),
              "steps": steps, "seconds": time.perf_counter() - t0, "curve": curve}
    # written to a temp folder and renamed: a folder with node.json is always complete
    tmp = node.dir.with_name(node.dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    np.savez(tmp / "weights.npz", W1=W1, W2=W2)
    (tmp / NODE_FILE).write_text(json.dumps({"node_key": node.key, "stage": node.stage, "params": node.params, "result": result}, indent=1))
    if node.dir.exists():
        shutil.rmtree(node.dir)
    tmp.replace(node.dir)
    return result


def _metrics(node: LinearNode, result: dict, parent_result: dict | None) -> dict[str, float]:
    m = final_metrics(node.stage, result["losses"]) | {f"sv.{g}": v for g, v in result["gains"].items()} | {"steps": result["steps"]}
    if node.stage == "finetune":
        m["delta"] = result["losses"]["post"] - parent_result["losses"]["post"]
    return m


def run_tree(study: Study, tracker, study_run: str) -> dict:
    """Train every node not yet finished, log each to MLflow (with its loss curve as step metrics)."""
    from mlflow.entities import Metric

    problem = problem_of(study)
    arms, subtrees = plan(study)
    trained = {"pretrain": 0, "posttrain": 0, "finetune": 0}
    runs: dict[str, str] = {}
    t0 = time.perf_counter()
    order = arms + [n for n2, children in subtrees for n in (n2, *children)]
    for i, node in enumerate(order, 1):
        done = node_done(node.dir)
        if done is None:
            result = _train_node(node, study, problem)
            trained[node.stage] += 1
        else:
            result = done["result"]
        if tracker.online:  # MLflow is a view of the node store: an unreachable store loses nothing
            try:
                parent_run = runs.get(node.parent.key) if node.parent else study_run
                run_id = runs[node.key] = tracker.node_run(node.key, node.name, parent_run, node.stage, node.params, node.tags)
                if tracker.client.get_run(run_id).info.status != "FINISHED":
                    curve = [Metric(f"loss_{node.stage}", float(v), 0, int(s)) for s, v in result.get("curve", [])]
                    for j in range(0, len(curve), 500):  # timestamps 0: a repeated sync re-sends identical points
                        tracker.client.log_batch(run_id, metrics=curve[j:j + 500])
                    parent = node_done(node.parent.dir)["result"] if node.parent else None
                    tracker.finish(run_id, _metrics(node, result, parent))
            except Exception as e:  # noqa: BLE001
                warn_outage(f"syncing the MLflow run of {node.name}", e)
        print(f"[tree] {i}/{len(order)} {node.name}: " + ", ".join(f"{k} {v:.4g}" for k, v in result["losses"].items())
              + f"; specialised gain {result['gains']['specialised']:.3f}", flush=True)
    return {"arms": arms, "subtrees": subtrees, "trained": trained, "failures": [], "seconds": time.perf_counter() - t0}


def collect(study: Study) -> list[dict]:
    rows = []
    for n2, children in plan(study)[1]:
        post = node_done(n2.dir)
        for c in children:
            done = node_done(c.dir)
            if post and done:
                rows.append(make_row(c.name, c.tags["raysweep.method"], {**c.params, "finetune_lr": c.lr},
                                     post["result"]["losses"]["post"], done["result"]["losses"]))
    return rows


def summary(study: Study) -> dict:
    """Per arm: α and the learned gains after each stage; per leaf: Δ = L(θ_ft; D_post) − L(θ_post; D_post)."""
    arms, subtrees = plan(study)
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
                out["leaves"].append({
                    "name": c.name, "method": c.tags["raysweep.method"], "mix_fraction": c.params["mix_fraction"], "alpha": c.params["alpha"],
                    "posttrain_lr": c.params["posttrain_lr"], "finetune_lr": c.lr,
                    "gains_pre": node_done(n2.parent.dir)["result"]["gains"], "gains_post": post["result"]["gains"], "gains_ft": done["result"]["gains"],
                    "L_im": post["result"]["losses"]["post"], "L_ret": done["result"]["losses"]["post"], "L_ft": done["result"]["losses"]["ft"],
                    "delta": done["result"]["losses"]["post"] - post["result"]["losses"]["post"],
                })
    return out


def summary_table(s: dict) -> str:
    lines = ["Learned gains (singular values in the shared bases) after each stage, and the forgetting Δ = L_ret − L_im",
             f"{'λ':>5} {'α':>6} {'post lr':>8} {'ft lr':>7} | {'specialised pre/post/ft':>24} | {'inconsistent pre/post/ft':>24} | {'L_im':>9} {'L_ret':>9} {'L_ft':>9} {'Δ':>9}"]
    for r in s["leaves"]:
        sp = "/".join(f"{r[f'gains_{k}']['specialised']:.2f}" for k in ("pre", "post", "ft"))
        ic = "/".join(f"{r[f'gains_{k}']['inconsistent']:.2f}" for k in ("pre", "post", "ft"))
        lines.append(f"{r['mix_fraction']:>5g} {r['alpha']:>6.3f} {r['posttrain_lr']:>8g} {r['finetune_lr']:>7g} | {sp:>24} | {ic:>24} | "
                     f"{r['L_im']:>9.2e} {r['L_ret']:>9.2e} {r['L_ft']:>9.2e} {r['delta']:>9.2e}")
    return "\n".join(lines) + "\n"
