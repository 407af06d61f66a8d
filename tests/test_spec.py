"""raysweep.spec: the λ share's one rounding, what a rung is of its run, the paper's named losses and
a tree's order (pure; the loop's use of rungs is tests/train/test_loop.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raysweep.spec import (
    FINETUNE_ROLES,
    Node,
    RunSpec,
    all_nodes,
    balanced_point,
    finetune_losses,
    immediate_loss,
    losses_by_role,
    share_tokens,
)


@given(st.integers(0, 10**12), st.floats(0, 1), st.floats(0, 1))
def test_a_share_is_within_its_total_and_grows_with_its_fraction(total, a, b):
    lo, hi = sorted((a, b))
    assert 0 <= share_tokens(total, lo) <= share_tokens(total, hi) <= total
    assert share_tokens(total, 0.0) == 0 and share_tokens(total, 1.0) == total
    assert abs(share_tokens(total, lo) - lo * total) <= 0.5 + 1e-6 * total  # one rounding, to the nearest


def test_a_share_rounds_half_to_even_and_refuses_a_fraction_outside_0_1():
    assert share_tokens(5, 0.5) == 2 and share_tokens(7, 0.5) == 4  # 2.5 -> 2, 3.5 -> 4
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="mix_fraction must be in"):
            share_tokens(10, bad)


def _spec(**fields) -> RunSpec:
    base = dict(stage="posttrain", label="posttrain λ=0.5 lr=0.001", node_key="run", node_dir="/store/posttrain/run")
    base |= dict(dataset="train", lr=1e-3, min_lr=0.0, warmup_steps=2, weight_decay=0.1, batch_size=8, max_steps=60)
    base |= dict(eval_every=10, monitor=["post"], seed=0)
    return RunSpec(**(base | fields))


def test_a_rung_is_its_run_cut_short_and_reads_and_writes_the_runs_progress():
    run = _spec(meta={"mix_fraction": 0.5})
    rung = _spec(
        label="posttrain λ=0.5 lr=0.001 rung 1 (step 6)",
        node_key="rung",
        node_dir="/store/rung/rung",
        stop_at=6,
        rung_of={"node_key": "run", "node_dir": "/store/posttrain/run", "label": run.label},
        run_id="mlflow-run-of-the-rung",
        meta={"mix_fraction": 0.5, "rung": 6},
    )
    assert rung.progress_node == run.progress_node == ("run", "/store/posttrain/run")
    assert rung.run_itself() == run and run.run_itself() is run
    assert rung.stops_at_rung(6, stopped_early=False)  # continued by the next rung
    assert not rung.stops_at_rung(6, stopped_early=True) and not rung.stops_at_rung(4, stopped_early=True)  # its run ended there
    assert not run.stops_at_rung(6, stopped_early=False)  # a run is no rung
    assert not _spec(stop_at=60).stops_at_rung(60, stopped_early=False)  # a rung at the run's end is the run


def test_the_named_losses_are_each_a_held_out_set_s_loss():
    losses = {"ft": 1.0, "post": 2.0, "pre": 3.0}
    assert finetune_losses(losses) == {"L_ft": 1.0, "L_ret": 2.0, "L_pre": 3.0}
    assert losses_by_role(finetune_losses(losses)) == losses and set(FINETUNE_ROLES.values()) == set(losses)
    assert immediate_loss(losses) == 2.0  # L_im: a stage-2 node's loss on D_post, as L_ret is a stage-3 node's


def test_the_balanced_point_is_the_one_nearest_the_corner_among_the_finite():
    assert balanced_point([(2.0, 3.0), (1.0, 3.5), (3.0, 1.0)]) == (3.0, 1.0)
    assert balanced_point([(2.0, 2.0), (1.0, 3.0)]) == (1.0, 3.0)  # a tie: the lower L_ret
    assert balanced_point([(math.nan, 0.0), (5.0, 5.0)]) == (5.0, 5.0)
    assert balanced_point([(math.inf, 1.0)]) is None and balanced_point([]) is None


def test_a_tree_lists_parents_before_children():
    def node(key: str, parent: str | None) -> Node:
        return Node(_spec(node_key=key), key, parent, {}, {}, None)

    arms = [node("a0", None), node("a1", None)]
    subtrees = [(node("p0", "a0"), [node("f0", "p0"), node("f1", "p0")]), (node("p1", "a1"), [node("f2", "p1")])]
    order = [n.spec.node_key for n in all_nodes(arms, subtrees)]
    assert order == ["a0", "a1", "p0", "f0", "f1", "p1", "f2"]
    seen = set()
    for n in all_nodes(arms, subtrees):
        assert n.parent is None or n.parent in seen
        seen.add(n.spec.node_key)
