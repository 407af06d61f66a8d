"""raysweep.sweep.work on its own (no Ray, no MLflow): an
item's nodes, what is left of it, what a trained item tells the queue, what a failed attempt
leaves in the node store, and the copies `with_tail` / `with_sources` make."""

from __future__ import annotations

from raysweep.spec import Node
from raysweep.store.nodes import failures_since, node_done, save_diverged, save_node
from raysweep.sweep.work import Work
from tests.helpers import run_spec


def _node(tmp_path, key: str, stage: str, parent: str | None = None) -> Node:
    spec = run_spec(tmp_path / key, stage=stage, label=f"{stage} {key}", node_key=key)
    return Node(spec, f"{stage}/{key}", parent, {}, {}, None)


def _tree(tmp_path):
    """One arm; one stage-2 node under it with three stage-3 children."""
    arm = _node(tmp_path, "a0", "pretrain")
    post = _node(tmp_path, "s0", "posttrain", "a0")
    children = [_node(tmp_path, f"c{k}", "finetune", "s0") for k in range(3)]
    return Work([arm], [(post, children)])


def _finish(node: Node, losses: dict) -> None:
    save_node(node.spec, {}, {"losses": losses}, "tok")


def test_an_item_is_its_nodes_and_a_split_subtree_leaves_its_split_children_to_leaf_items(tmp_path):
    work = _tree(tmp_path)
    (post, children) = work.subtrees[0]
    assert work.group(("arm", 0)) == work.arms
    assert work.group(("subtree", 0)) == [post, *children]
    split = work.with_tail({0: {1, 2}})
    assert split.group(("subtree", 0)) == [post, children[0]] and split.group(("leaf", 0, 2)) == [children[2]]
    assert work.split == {} and split.lease_tag == work.lease_tag  # a copy: the same run's leases
    assert set(split.by_key) == {"a0", "s0", "c0", "c1", "c2"}


def test_what_is_left_of_an_item_skips_finished_nodes_and_everything_below_a_diverged_stage_2_run(tmp_path):
    work = _tree(tmp_path)
    post, children = work.subtrees[0]
    _finish(post, {"post": 2.0})
    _finish(children[1], {"ft": 1.0, "post": 2.0, "pre": 3.0})
    assert work.todo(("subtree", 0)) == [children[0], children[2]]
    save_diverged(children[0].spec.node_dir, 1e-3, 3, "nan", [])
    assert work.todo(("subtree", 0)) == [children[2]]
    other = _tree(tmp_path / "other")
    save_diverged(other.subtrees[0][0].spec.node_dir, 1e-3, 5, "nan", [])
    assert other.todo(("subtree", 0)) == [] and other.todo(("leaf", 0, 1)) == []


def test_a_trained_item_tells_the_queue_its_outcome_in_words(tmp_path):
    work = _tree(tmp_path)
    arm, (post, children) = work.arms[0], work.subtrees[0]
    _finish(arm, {"pre": 3.25, "post": 4.5})
    assert work.outcome(("arm", 0)) == ("done", "final_pre 3.250, final_post 4.500")
    _finish(children[2], {"ft": 1.5, "post": 2.25, "pre": 3.0})
    assert work.outcome(("leaf", 0, 2)) == ("done", "L_ft 1.500, L_ret 2.250")
    save_diverged(post.spec.node_dir, 1e-2, 7, "nan", [])
    assert work.outcome(("subtree", 0)) == ("done", "posttrain diverged at step 7")  # an outcome: its children are settled too
    assert work.outcome(("leaf", 0, 1)) == ("done", "not trained: its stage-2 run diverged")
    lone = _tree(tmp_path / "lone")
    save_diverged(lone.arms[0].spec.node_dir, 1e-2, 2, "nan", [])
    assert lone.outcome(("arm", 0)) == ("diverged", "pretrain diverged at step 2")  # an arm blocks its subtrees


def test_a_claimed_item_is_what_is_left_in_order_under_its_lease_then_settled(tmp_path):
    tree = _tree(tmp_path)
    post, children = tree.subtrees[0]
    _finish(children[0], {"ft": 1.0, "post": 2.0, "pre": 3.0})
    work = Work(tree.arms, tree.subtrees, sources={("subtree", 0): {"train": "stream"}})
    seen = []

    def train(specs, sources):
        seen.append(([s.node_key for s in specs], sources))
        for s in specs:
            save_node(s, {}, {"losses": {"post": 2.5, "ft": 1.0, "pre": 3.0}}, "tok")
        return [{"node_key": s.node_key} for s in specs]

    with work.claim(("subtree", 0), 0, 1, lambda obj, world: obj) as specs:
        assert list(tmp_path.rglob("*.lease"))  # held while the item trains
        train(specs, work.sources[("subtree", 0)])
    outcome = work.outcome(("subtree", 0))
    assert seen == [(["s0", "c1", "c2"], {"train": "stream"})]
    assert outcome == ("done", "L_im 2.500")
    assert all(node_done(n.spec.node_dir) for n in (post, *children))
    assert not list(tmp_path.rglob("*.lease*"))  # its lease was released


def test_a_failed_attempt_is_recorded_once_on_the_node_it_was_training(tmp_path):
    import time

    work = _tree(tmp_path)
    post, children = work.subtrees[0]
    since = time.time()
    work.abandon(("subtree", 0), since, "its worker slot died")  # a SIGKILLed worker wrote nothing
    assert failures_since(post.spec.node_dir, since) == 1
    work.abandon(("subtree", 0), since, "again")  # the record is there now: not written twice for the same attempt
    assert failures_since(post.spec.node_dir, since) == 1
    assert failures_since(children[0].spec.node_dir, since) == 0
