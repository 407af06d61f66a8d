"""The reference study's linear theory (Section 5, Appendix C) as a model kind: `model.kind: linear`.

A two-layer linear network x -> W2 W1 x, trained by full-batch gradient descent on the squared loss
of three regression tasks (D_pre, D_post, D_ft) that share their singular vectors: every task maps
input direction v_k to output direction u_k with its own gain (singular value) s_k,

    task t:  y = A_t x,  A_t = U diag(s^t) V^T,   x ~ N(0, Σ_t),   L_t(W) = ½ E‖A_t x − W x‖²
                                                                      = ½ tr((A_t − W) Σ_t (A_t − W)^T)

The directions come in four groups (the paper's Section 5):
- invariant:    the same gain in all three tasks;
- inconsistent: one gain in D_pre and D_ft (the general distribution) and another in D_post;
- specialised:  only D_post's inputs vary along them (D_pre and D_ft have zero input variance
                there), gain β;
- ft_only:      only D_ft's inputs vary along them: what fine-tuning has to learn.

In D_post the specialised directions co-occur with the inconsistent ones (input correlation ρ =
`theory.co_occurrence`): D_post's new behaviour can be carried either by changing the
inconsistent features, which D_pre and D_ft also use, or by the specialised ones, which only
D_post uses. With ρ = 1 D_post's loss cannot tell the two apart, so *how* the capability was
acquired decides what fine-tuning later does to it:
- unmixed: stage 1 never sees the specialised directions (W on them stays at its small random
  init); stage 2 mostly rewrites the inconsistent features, already large and so fast to move
  (post-training's "immediate specialisation"); stage 3, trained on the general gains, rewrites
  them back and D_post's loss rises: Δ > 0;
- mixed (α of the stage-1 objective is D_post's): stage 1 must fit D_pre's inconsistent gains and
  D_post at once, which only the specialised directions allow, so it learns them (their
  input-output correlation in the mixture is α·β); stage 2 has little left to do, stage 3 does not
  touch the specialised directions, and Δ ≈ 0.
The exact construction of the paper's Appendix C is not spelled out in the paper's text we work from: this is raysweep's own
instance of its description, and docs/results.md reports what it does, including where the effect
disappears (ρ < 1 with post-training run to convergence: D_post's optimum is then unique and
history is forgotten).

Everything here is pure numpy and deterministic; raysweep.sweep.linear runs it through the tree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raysweep.spec import Diverged

GROUPS = ("invariant", "inconsistent", "specialised", "ft_only")


@dataclass(frozen=True)
class Task:
    """One regression task: target map A (out x in) and input covariance S (in x in)."""

    A: np.ndarray
    S: np.ndarray


@dataclass(frozen=True)
class Problem:
    """The three tasks, the shared singular vectors and which indices belong to which group."""

    pre: Task
    post: Task
    ft: Task
    U: np.ndarray
    V: np.ndarray
    groups: dict[str, np.ndarray]

    def tasks(self) -> dict[str, Task]:
        return {"pre": self.pre, "post": self.post, "ft": self.ft}


def make_problem(features: dict[str, int], gains: dict[str, float], co_occurrence: float, seed: int) -> Problem:
    """The three tasks of `theory` config values. U and V are random orthogonal bases (seeded):
    the tasks share them, which is what 'sharing singular vectors' means here."""
    sizes = [features[g] for g in GROUPS]
    d = sum(sizes)
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.normal(size=(d, d)))[0]
    V = np.linalg.qr(rng.normal(size=(d, d)))[0]
    bounds = np.cumsum([0, *sizes])
    idx = {g: np.arange(bounds[i], bounds[i + 1]) for i, g in enumerate(GROUPS)}

    def task(gain: dict[str, float], var: dict[str, float], pair: float = 0.0) -> Task:
        s, P = np.zeros(d), np.zeros((d, d))
        for g in GROUPS:
            s[idx[g]] = gain.get(g, 0.0)
            P[idx[g], idx[g]] = var.get(g, 0.0)
        if pair:  # inconsistent direction i and specialised direction i vary together in D_post
            n = min(len(idx["inconsistent"]), len(idx["specialised"]))
            for c, k in zip(idx["inconsistent"][:n], idx["specialised"][:n]):
                P[c, k] = P[k, c] = pair
        return Task(U @ np.diag(s) @ V.T, V @ P @ V.T)

    general = {"invariant": gains["invariant"], "inconsistent": gains["inconsistent_general"]}
    pre = task(general, {"invariant": 1.0, "inconsistent": 1.0})
    post = task(
        {"invariant": gains["invariant"], "inconsistent": gains["inconsistent_post"], "specialised": gains["specialised"]},
        {"invariant": 1.0, "inconsistent": 1.0, "specialised": 1.0},
        pair=co_occurrence,
    )
    ft = task({**general, "ft_only": gains["ft_only"]}, {"invariant": 1.0, "inconsistent": 1.0, "ft_only": 1.0})
    return Problem(pre, post, ft, U, V, idx)


def init_weights(d: int, width: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Small random init (scale ≪ 1/√d puts the network in the feature-learning regime the theory uses)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(width, d)) * scale, rng.normal(size=(d, width)) * scale


def loss(W: np.ndarray, task: Task) -> float:
    E = task.A - W
    return float(0.5 * np.trace(E @ task.S @ E.T))


def train(
    W1: np.ndarray,
    W2: np.ndarray,
    objective: list[tuple[float, Task]],
    lr: float,
    steps: int,
    eval_every: int = 100,
    watch: Task | None = None,
    tol: float = 0.0,
):
    """Gradient descent on Σ_i w_i L_{t_i}(W2 W1). Stops early once `watch`'s loss is below `tol`
    (stage 2's "to convergence"). Returns the weights, the steps taken and (step, objective loss)
    every `eval_every` steps; raises Diverged once that loss is not finite."""
    # numpy's overflow warnings are not shown: a non-finite loss is detected below and raised as Diverged
    with np.errstate(over="ignore", invalid="ignore"):
        return _descend(W1, W2, objective, lr, steps, eval_every, watch, tol)


def _descend(W1, W2, objective, lr, steps, eval_every, watch, tol):
    curve = []
    for step in range(1, steps + 1):
        W = W2 @ W1
        G = sum(w * (t.A - W) @ t.S for w, t in objective)  # −∂L/∂W
        W1, W2 = W1 + lr * W2.T @ G, W2 + lr * G @ W1.T
        if step % eval_every == 0 or step == steps:
            W = W2 @ W1
            curve.append((step, sum(w * loss(W, t) for w, t in objective)))
            if not np.isfinite(curve[-1][1]):
                raise Diverged(f"loss is {curve[-1][1]} at step {step}: lower the learning rate (lr={lr})", step, curve)
            if watch is not None and loss(W, watch) < tol:
                return W1, W2, step, curve
    return W1, W2, steps, curve


def gains(W: np.ndarray, problem: Problem) -> dict[str, float]:
    """The learned singular values per group, read in the shared bases: mean of u_k^T W v_k over the
    group; `specialised_cross` is how strongly the specialised inputs drive the inconsistent outputs
    (how the mixed model carries D_post's change of the inconsistent features)."""
    M = problem.U.T @ W @ problem.V
    out = {g: float(np.mean(np.diag(M)[ix])) if len(ix) else 0.0 for g, ix in problem.groups.items()}
    c, s = problem.groups["inconsistent"], problem.groups["specialised"]
    n = min(len(c), len(s))
    out["specialised_cross"] = float(np.mean([M[c[i], s[i]] for i in range(n)])) if n else 0.0
    return out


def singular_values(W: np.ndarray) -> list[float]:
    return [float(x) for x in np.linalg.svd(W, compute_uv=False)]


def all_losses(W: np.ndarray, problem: Problem) -> dict[str, float]:
    return {name: loss(W, t) for name, t in problem.tasks().items()}
