"""How the held-out slices' scoring is spread over Ray tasks (raysweep.sweep.slices): as many tasks
as the cluster fits at once, each checkpoint in exactly one."""

from hypothesis import given
from hypothesis import strategies as st

from raysweep.config import ResourcesConfig
from raysweep.sweep.slices import MAX_SUBTREES_PER_TASK, _fits, deal


def test_tasks_fit_the_cluster_by_the_stage_3_workers_reservation():
    assert _fits({"CPU": 2.0}, ResourcesConfig()) == 2
    assert _fits({"CPU": 64.0, "GPU": 8.0}, ResourcesConfig(cpus_per_worker=4, gpus_per_worker=1)) == 8
    assert _fits({"CPU": 1.0}, ResourcesConfig(cpus_per_worker=2)) == 1  # one, waiting for room, never none


@given(st.lists(st.lists(st.integers(), min_size=1, max_size=4), max_size=60), st.integers(1, 16))
def test_every_checkpoint_is_scored_by_exactly_one_task(groups, fits):
    tasks = deal(groups, fits)
    assert sorted(x for t in tasks for x in t) == sorted(x for g in groups for x in g)
    assert len(tasks) <= max(fits, len(groups))
    assert all(len(groups[i :: len(tasks)]) <= max(MAX_SUBTREES_PER_TASK, -(-len(groups) // len(tasks))) for i in range(len(tasks)))
