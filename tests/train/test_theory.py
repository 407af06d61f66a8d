"""raysweep.train.theory, the linear theory backend's math: its tasks share singular vectors, a
training step follows the loss's gradient, and divergence is a clear error (the theorems measured
on trained networks run through the study tree: tests/sweep/test_linear.py)."""

from __future__ import annotations

import numpy as np
import pytest

from raysweep.train import theory

FEATURES = {"invariant": 2, "inconsistent": 2, "specialised": 2, "ft_only": 1}
GAINS = {"invariant": 1.0, "inconsistent_general": 1.0, "inconsistent_post": 2.0, "specialised": 1.5, "ft_only": 0.7}


def test_tasks_share_singular_vectors_and_specialised_directions_have_no_variance_outside_d_post():
    p = theory.make_problem(FEATURES, GAINS, co_occurrence=1.0, seed=3)
    spec = p.groups["specialised"]
    for name, t in p.tasks().items():
        M = p.U.T @ t.A @ p.V
        assert np.allclose(M, np.diag(np.diag(M))), f"{name}: the target map is not diagonal in the shared bases"
        variance = np.diag(p.V.T @ t.S @ p.V)
        if name in ("pre", "ft"):
            assert np.allclose(variance[spec], 0.0)
        else:
            assert np.all(variance[spec] > 0.5)
    assert np.allclose(np.diag(p.U.T @ p.post.A @ p.V)[spec], 1.5)
    assert np.allclose(np.diag(p.U.T @ p.pre.A @ p.V)[spec], 0.0)


def test_training_step_follows_the_loss_gradient():
    """One tiny step changes the loss by −lr·‖∇‖² to first order: the update is the true gradient."""
    p = theory.make_problem(FEATURES, GAINS, 1.0, seed=1)
    W1, W2 = theory.init_weights(7, 5, 0.3, seed=2)
    objective = [(0.7, p.pre), (0.3, p.post)]

    def L(W1, W2):
        return sum(w * theory.loss(W2 @ W1, t) for w, t in objective)

    G = sum(w * (t.A - W2 @ W1) @ t.S for w, t in objective)
    g1, g2 = -(W2.T @ G), -(G @ W1.T)  # ∂L/∂W1, ∂L/∂W2
    lr = 1e-6
    n1, n2, _, _ = theory.train(W1, W2, objective, lr, 1)
    predicted = -lr * (np.sum(g1**2) + np.sum(g2**2))
    assert L(n1, n2) - L(W1, W2) == pytest.approx(predicted, rel=1e-3)


def test_train_raises_a_clear_error_on_divergence():
    p = theory.make_problem(FEATURES, GAINS, 1.0, seed=1)
    W1, W2 = theory.init_weights(7, 5, 1.0, seed=2)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        theory.train(W1, W2, [(1.0, p.post)], lr=5.0, steps=200, eval_every=10)
