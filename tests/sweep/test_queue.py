"""The warm slots' queue (raysweep.sweep.queue.WorkQueue): plain Python, no Ray. It carries the tree's
guarantees once one worker group trains many nodes: order, cross-level pipelining, a retry per
item (not per slot), blocked subtrees, and no item lost or trained twice."""

from hypothesis import given, settings
from hypothesis import strategies as st

from raysweep.sweep.queue import WAIT, WorkQueue

A0, A1 = ("arm", 0), ("arm", 1)
S0, S1, S2 = ("subtree", 0), ("subtree", 1), ("subtree", 2)


def _tree(retries: int = 1) -> WorkQueue:
    """Two arms to train; subtrees 0 and 2 below arm 1, subtree 1 below arm 0 (trial_order's order)."""
    return WorkQueue([A0, A1, S1, S0, S2], {S0: A1, S1: A0, S2: A1}, retries)


def test_a_subtree_waits_for_its_own_arm_only():
    q = _tree()
    assert q.take(0) == A0 and q.take(1) == A1
    assert q.take(2) == WAIT  # no subtree's arm is done yet
    q.settle(1)  # arm 1 is done first; arm 0 still trains
    assert q.take(1) == S0  # the first subtree of arm 1, ahead of arm 0's subtree 1 in the order
    assert q.take(2) == S2
    assert q.take(3) == WAIT  # subtree 1 still waits for arm 0
    q.settle(0)
    assert q.take(0) == S1
    assert q.take(3) is None  # nothing left to take: that slot stops
    assert q.has_work() is False


def test_an_arm_of_an_earlier_run_is_no_dependency():
    q = WorkQueue([S0, S1], {S0: None, S1: None}, retries=0)
    assert q.take(0) == S0 and q.take(1) == S1


def test_a_failed_item_is_retried_then_failed_and_its_subtrees_blocked():
    q = _tree(retries=1)
    assert q.take(0) == A0
    assert q.fail(0, "worker died") is True  # back in the queue, at its place: first
    assert q.take(1) == A0 and q.attempts[A0] == 2
    assert q.fail(1, "worker died again") is False  # retries used up
    settled, failed, never = q.outcome()
    assert failed == {A0: "worker died again", S1: "blocked (its pretraining arm failed)"}
    assert S1 not in q.pending and q.take(2) == A1


def test_a_diverged_arm_blocks_its_subtrees_without_failures():
    q = _tree()
    q.take(0), q.take(1)
    q.settle(1, "diverged", "diverged at step 7")
    settled, failed, never = q.outcome()
    assert settled == {A1: "diverged", S0: "blocked", S2: "blocked"} and failed == {}
    assert q.take(2) == WAIT and q.has_work(("subtree",))


def test_a_slot_that_asks_again_without_settling_gives_its_item_back():
    q = _tree(retries=0)
    assert q.take(0) == A0
    assert q.take(0) == A1  # A0's attempt counts as failed (retries 0: failed for good)
    assert A0 in q.outcome()[1]


def test_kinds_keep_arm_slots_and_subtree_slots_apart():
    q = _tree()
    assert q.take(0, ("subtree",)) == WAIT
    assert q.take(1, ("arm",)) == A0 and q.take(2, ("arm",)) == A1
    assert q.take(3, ("arm",)) is None and q.has_work(("arm",)) is False and q.has_work(("subtree",))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["settle", "fail", "diverge"])), max_size=60), st.integers(0, 2))
def test_no_item_is_lost_held_twice_or_started_before_its_arm(script, retries):
    """Any interleaving of three slots taking, settling, failing and diverging items: an item is
    held by one slot at a time, a subtree never starts before its arm is done, no item is tried
    more than retries + 1 times, and once the slots drain the queue every item is settled or
    failed, never forgotten."""
    q = _tree(retries)
    items = list(q.needs)

    def step(slot: int, action: str) -> None:
        held = q.holding.get(slot)
        if held is None:
            got = q.take(slot)
            if got not in (None, WAIT):
                need = q.needs[got]
                assert need is None or q.settled.get(need) == "done"
                assert list(q.holding.values()).count(got) == 1
        elif action == "fail":
            q.fail(slot, "boom")
        else:
            q.settle(slot, "diverged" if action == "diverge" and held[0] == "arm" else "done")

    for slot, action in script:
        step(slot, action)
        assert all(n <= retries + 1 for n in q.attempts.values())
    for _ in range(100):  # drain: every slot settles what it holds and takes again
        for slot in range(3):
            step(slot, "settle")
    settled, failed, never = q.outcome()
    assert never == [] and set(settled) | set(failed) == set(items) and not set(settled) & set(failed)


def test_a_slot_that_failed_for_good_gives_its_item_back(ray_local):
    """The Tune callback for a slot trial that failed for good (its process died more than
    `retries` times): the item it held returns to the queue as a failed attempt (the driver moves
    its MLflow runs on from the queue's events), so a slot waiting for that arm is not left waiting forever."""
    from types import SimpleNamespace

    from raysweep.sweep.slots import give_back_on_error

    queue = ray_local.remote(num_cpus=0)(WorkQueue).remote([A0, S1], {S1: A0}, 1)
    assert ray_local.get(queue.take.remote(0)) == A0
    assert ray_local.get(queue.take.remote(1)) == WAIT  # slot 1 waits for arm 0
    abandoned = []
    callback = give_back_on_error(queue, SimpleNamespace(abandon=lambda item, since, error: abandoned.append((item, error))))
    callback.on_trial_error(0, [], SimpleNamespace(config={"slot": (0, ("arm", "subtree"))}, get_error=lambda: "process died"))
    assert abandoned == [(A0, "its worker slot failed: process died")] and ray_local.get(queue.held_by.remote(0)) is None
    assert ray_local.get(queue.take.remote(1)) == A0  # the waiting slot trains the arm (second attempt)
    events = [e[1:] for e in ray_local.get(queue.events_since.remote(0))]
    assert events == [("start", A0, "slot 0"), ("retry", A0, "its worker slot failed: process died"), ("start", A0, "slot 1")]
    ray_local.kill(queue)


L01, L02 = ("leaf", 0, 1), ("leaf", 0, 2)


def test_split_leaves_wait_for_their_stage2_run_and_fall_with_its_arm():
    from raysweep.sweep.work import split_tail

    items, split = split_tail([A0, A1, S1, S0, S2], {0: [0, 1, 2], 1: [0, 1, 2], 2: [2]}, slots=1)
    assert items == [A0, A1, S1, S0, S2, L01, L02] and split == {0: {1, 2}}  # S2 has one child left: nothing to split
    q = WorkQueue(items, {S0: A1, S1: A0, S2: A1, L01: S0, L02: S0}, retries=0)
    assert q.take(0) == A0 and q.take(1) == A1
    q.settle(1)
    assert q.take(1) == S0 and q.take(2) == S2 and q.take(3) == WAIT  # the leaves wait for S0
    q.settle(1)
    assert q.take(1) == L01 and q.take(3) == L02  # S0's other children, side by side
    assert q.fail(0, "arm 0 lost") is False  # A0 failed for good: S1 is blocked, nothing waits forever
    q.settle(1), q.settle(2), q.settle(3)
    settled, failed, never = q.outcome()
    assert failed == {A0: "arm 0 lost", S1: "blocked (its pretraining arm failed)"} and never == []
    assert q.has_work() is False


def test_a_failed_stage2_run_blocks_its_leaves_and_a_diverged_arm_everything_below():
    q = WorkQueue([A1, S0, L01, L02], {S0: A1, L01: S0, L02: S0}, retries=0)
    assert q.take(0) == A1
    q.settle(0)
    assert q.take(0) == S0 and q.fail(0, "oom") is False
    assert q.outcome()[1] == {S0: "oom", L01: "blocked (its stage-2 run failed)", L02: "blocked (its stage-2 run failed)"}
    q = WorkQueue([A1, S0, L01], {S0: A1, L01: S0}, retries=0)
    q.take(0)
    q.settle(0, "diverged", "step 3")
    assert q.outcome()[0] == {A1: "diverged", S0: "blocked", L01: "blocked"} and q.has_work() is False


@given(st.integers(0, 5), st.lists(st.integers(0, 3), min_size=1, max_size=6))
def test_split_tail_keeps_every_child_exactly_once(slots, sizes):
    from raysweep.sweep.work import split_tail

    items = [("subtree", j) for j in range(len(sizes))]
    todo = {j: list(range(n)) for j, n in enumerate(sizes)}
    out, split = split_tail(items, todo, slots)
    assert out[: len(items)] == items  # the order of the subtrees is kept; leaves come last
    kept = {j: [c for c in todo[j] if c not in split.get(j, ())] for j in todo}
    leaves = [(it[1], it[2]) for it in out if it[0] == "leaf"]
    assert sorted(leaves + [(j, c) for j in kept for c in kept[j]]) == sorted((j, c) for j in todo for c in todo[j])
    assert all(kept[j] == todo[j][:1] for j in split) and len(split) <= slots
