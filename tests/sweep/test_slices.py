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


def test_each_nodes_stored_scores_are_read_once_and_weightless_nodes_are_counted(tmp_path, monkeypatch):
    """jobs() sorts a subtree's finished nodes into scored (their stored scores returned, read once:
    a read is a request on an object store), weightless (counted, not scored) and still to score
    (with the scores it holds for other slices, which its new scores are stored beside)."""
    import json

    from raysweep.spec import Node, RunSpec
    from raysweep.store import storage
    from raysweep.store.nodes import slices_path
    from raysweep.sweep import slices

    def node(name: str, stage: str, files: dict | None, scores: list | None = None, sig: str = "sig") -> Node:
        folder = tmp_path / name
        if files is not None:
            folder.mkdir()
            (folder / "node.json").write_text(json.dumps({"files": files}))
        if scores is not None:
            storage.write_text(slices_path(folder), json.dumps({"signature": sig, "losses": scores}))
        spec = RunSpec(stage, name, name, str(folder), "train", 1e-3, 0.0, 0, 0.0, 8, 10, 5, [], 0)
        return Node(spec, name, None, {}, {}, None)

    weights = {"model.safetensors": 1}
    scored = node("a", "posttrain", weights, [{"post": 1.0}])
    children = [
        node("b", "finetune", weights, [{"ft": 2.0}], sig="other slices"),  # scored on other slices: to score again
        node("c", "finetune", {"metrics.json": 1}),  # stored without weights
        node("d", "finetune", None),  # not finished
    ]
    reads = []
    real = storage.read_text
    monkeypatch.setattr(storage, "read_text", lambda path: reads.append(str(path)) or real(path))
    todo, weightless, known = slices.jobs([(scored, children)], "sig")
    assert known == {str(tmp_path / "a"): [{"post": 1.0}]} and weightless == 1
    assert todo == [[(str(tmp_path / "b"), ("ft", "post", "pre"), {"other slices": [{"ft": 2.0}]})]]  # its other scores kept
    assert sorted(reads).count(slices_path(tmp_path / "a")) == 1  # once, not again after scoring
