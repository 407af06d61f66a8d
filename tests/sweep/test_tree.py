"""raysweep.sweep.tree's pure parts (no Ray, no MLflow): the order slots take items in, what a
diverged node settles below it, which finished nodes are trusted, and the lines a tree run reports."""

from __future__ import annotations

from raysweep.spec import Node
from raysweep.store.nodes import node_done, save_diverged, save_node
from raysweep.sweep.tree import blocked_below, diverged_report, failure_lines, leaf_record, trial_order, verified_done
from raysweep.sweep.work import Work
from tests.helpers import run_spec


def _node(tmp_path, key: str, stage: str, parent: str | None = None) -> Node:
    spec = run_spec(tmp_path / key, stage=stage, label=f"{stage} {key}", node_key=key, lr=1e-2)
    return Node(spec, f"{stage}/{key}", parent, {}, {}, None)


def _tree(tmp_path):
    """Two arms; stage-2 nodes s0 and s2 under arm a1, s1 under a0; two stage-3 children each."""
    arms = [_node(tmp_path, f"a{i}", "pretrain") for i in (0, 1)]
    subtrees = []
    for j, p in enumerate((1, 0, 1)):
        post = _node(tmp_path, f"s{j}", "posttrain", f"a{p}")
        subtrees.append((post, [_node(tmp_path, f"s{j}c{k}", "finetune", f"s{j}") for k in range(2)]))
    return arms, subtrees


def _finish(node: Node) -> None:
    save_node(node.spec, {}, {"losses": {"pre": 3.0, "post": 2.0, "ft": 1.0}}, "tok")


def test_items_start_arms_first_then_subtrees_in_their_arms_order(tmp_path):
    arms, subtrees = _tree(tmp_path)
    assert trial_order(arms, subtrees, [0, 1], [0, 1, 2]) == [("arm", 0), ("arm", 1), ("subtree", 1), ("subtree", 0), ("subtree", 2)]
    assert trial_order(arms, subtrees, [1], [0, 2]) == [("arm", 1), ("subtree", 0), ("subtree", 2)]


def test_a_diverged_node_settles_everything_below_it(tmp_path):
    arms, subtrees = _tree(tmp_path)
    assert blocked_below(subtrees, {"a0"}) == {"s1", "s1c0", "s1c1"}
    assert blocked_below(subtrees, {"s2"}) == {"s2c0", "s2c1"}
    assert blocked_below(subtrees, set()) == set()
    save_diverged(arms[0].spec.node_dir, 1e-2, 4, "nan", [])
    save_diverged(subtrees[2][0].spec.node_dir, 1e-2, 9, "nan", [])
    assert diverged_report(arms, subtrees) == [
        "pretrain/a0: diverged at step 4 (lr 0.01; lower it), 1 runs below it not trained",
        "posttrain/s2: diverged at step 9 (lr 0.01; lower it), 2 runs below it not trained",
    ]


def test_a_truncated_node_is_quarantined_and_trained_again_and_an_intact_one_trusted(tmp_path):
    arms, subtrees = _tree(tmp_path)
    for n in (arms[0], subtrees[1][0], *subtrees[1][1]):
        _finish(n)
    assert verified_done(arms, subtrees) == {"a0", "s1", "s1c0", "s1c1"}
    metrics = next((tmp_path / "s1c0").glob("metrics*"))
    metrics.write_text(metrics.read_text()[:-1])  # a truncated file: its size no longer matches
    assert verified_done(arms, subtrees) == {"a0", "s1", "s1c1"}
    assert node_done(subtrees[1][1][0].spec.node_dir) is None  # moved aside, so trained again


def test_failures_read_as_what_failed_and_why(tmp_path):
    arms, subtrees = _tree(tmp_path)
    work = Work(arms, subtrees)
    failed = {("arm", 1): "out of memory", ("subtree", 0): "blocked: its arm diverged", ("leaf", 2, 1): "blocked: diverged"}
    assert failure_lines(work, failed, [("subtree", 2)], []) == [
        "pretrain arm pretrain/a1: out of memory",
        "posttrain/s0: blocked: its arm diverged",  # a blocked subtree; a blocked leaf is said by its stage-2 run's line
        "posttrain/s2: not trained (no worker slot took it)",
    ]
    assert failure_lines(work, {}, [("arm", 0)], ["lost"]) == ["pretrain/a0: not trained (every worker slot failed: lost)"]


def test_a_leaf_record_carries_its_stage_2_runs_immediate_loss():
    record = leaf_record("finetune/x", "mixed", {"lr": 1e-3}, {"result": {"losses": {"post": 2.5}}}, {"result": {"losses": {"ft": 1.0}}})
    assert record == {"name": "finetune/x", "method": "mixed", "config": {"lr": 1e-3}, "immediate_loss": 2.5, "losses": {"ft": 1.0}}
