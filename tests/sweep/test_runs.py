"""raysweep.sweep.runs on its own (no Ray): the driver opens every node run before training, and
the queue's events move each through SCHEDULED, RUNNING and its end, on a SQLite MLflow store."""

from __future__ import annotations

from pathlib import Path

from raysweep.spec import Node
from raysweep.store.nodes import save_diverged, save_node
from raysweep.sweep.runs import TreeRuns
from raysweep.sweep.work import Work
from raysweep.tags import OUTCOME
from raysweep.tracking.store import Tracker
from tests.helpers import run_spec


def _node(tmp_path, key: str, stage: str, parent: str | None = None) -> Node:
    spec = run_spec(tmp_path / key, stage=stage, label=f"{stage} {key}", node_key=key)
    return Node(spec, f"{stage}/{key}", parent, {}, {}, None)


def _runs(tmp_path) -> tuple[TreeRuns, Work, Tracker]:
    """One arm with two stage-2 nodes, each with two stage-3 children; every item opened."""
    arm = _node(tmp_path, "a0", "pretrain")
    subtrees = [
        (_node(tmp_path, f"s{j}", "posttrain", "a0"), [_node(tmp_path, f"c{j}{k}", "finetune", f"s{j}") for k in range(2)])
        for j in range(2)
    ]
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "runs-test")
    assert tracker.start()
    study_run = tracker.study_run("hash", "study", {})
    runs = TreeRuns(tracker, study_run)
    work = Work([arm], subtrees)
    work = work.with_runs(runs.open(work, [("arm", 0), ("subtree", 0), ("subtree", 1)], settled=set()))
    return runs, work, tracker


def _status(tracker: Tracker) -> dict[str, tuple[str, str | None]]:
    found = tracker.client.search_runs([tracker.experiment_id])
    return {r.info.run_name: (r.info.status, r.data.tags.get(OUTCOME)) for r in found if r.info.run_name != "study"}


def _finish(node: Node) -> None:
    save_node(
        node.spec, {}, {"losses": {"pre": 3.0, "post": 2.0, "ft": 1.0}, "steps": 2, "tokens": 8, "tokens_per_s": 1.0, "best_step": 2}, "tok"
    )


def test_the_driver_opens_every_run_scheduled_and_nested_before_anything_trains(tmp_path):
    runs, work, tracker = _runs(tmp_path)
    assert set(work.runs) == {"a0", "s0", "s1", "c00", "c01", "c10", "c11"}
    assert {s for s, _ in _status(tracker).values()} == {"SCHEDULED"}
    parent = {r.info.run_name: r.data.tags.get("mlflow.parentRunId") for r in tracker.client.search_runs([tracker.experiment_id])}
    assert parent["finetune/c10"] == work.runs["s1"] and parent["posttrain/s1"] == work.runs["a0"]
    again = TreeRuns(tracker, runs.study_run)  # a resumed tree run finds the same runs, opens none twice
    assert again.open(work, [("subtree", 1)], settled={"s1"}) == {k: work.runs[k] for k in ("c10", "c11")}


def test_the_queues_events_move_each_run_to_its_end(tmp_path):
    runs, work, tracker = _runs(tmp_path)
    arm, (s0, c0), (s1, _) = work.arms[0], *work.subtrees
    runs.on_event("start", ("arm", 0), "slot 0")
    assert _status(tracker)["pretrain/a0"] == ("RUNNING", None) and _status(tracker)["posttrain/s0"] == ("SCHEDULED", None)
    _finish(arm)
    runs.on_event("done", ("arm", 0), "")
    runs.on_event("start", ("subtree", 0), "slot 0")
    runs.on_event("retry", ("subtree", 0), "its worker slot died")  # back in the queue: waiting again
    assert _status(tracker)["posttrain/s0"] == ("SCHEDULED", None)
    runs.on_event("start", ("subtree", 0), "slot 1")
    _finish(s0)
    _finish(c0[0])
    runs.on_event("failed", ("subtree", 0), "boom")  # its second child failed for good
    save_diverged(Path(s1.spec.node_dir), 1e-2, 3, "nan", [])
    runs.on_event("start", ("subtree", 1), "slot 0")
    runs.on_event("done", ("subtree", 1), "posttrain diverged at step 3")
    assert _status(tracker) == {
        "pretrain/a0": ("FINISHED", None),
        "posttrain/s0": ("FINISHED", None),
        "finetune/c00": ("FINISHED", None),
        "finetune/c01": ("FAILED", "failed"),
        "posttrain/s1": ("FAILED", "diverged"),
        "finetune/c10": ("FAILED", "blocked"),
        "finetune/c11": ("FAILED", "blocked"),
    }


def test_a_run_whose_item_never_ended_is_closed_once_the_slots_stop(tmp_path):
    runs, _, tracker = _runs(tmp_path)
    runs.on_event("start", ("arm", 0), "slot 0")  # then every slot died
    runs.close_rest()
    assert set(_status(tracker).values()) == {("FAILED", "not trained")}


def test_offline_nothing_is_opened_and_events_do_nothing(tmp_path):
    work = Work([_node(tmp_path, "a0", "pretrain")], [])
    runs = TreeRuns(None, None)
    assert runs.open(work, [("arm", 0)], settled=set()) == {}
    runs.on_event("start", ("arm", 0), "slot 0")
    runs.close_rest()


def test_workers_add_metric_points_and_nothing_else_of_mlflow():
    """The modules a slot and its workers run open, close and sync no MLflow run (issue 46)."""
    root = Path(__file__).resolve().parents[2] / "raysweep"
    worker_side = [
        root / "sweep" / "work.py",
        root / "sweep" / "slots.py",
        root / "sweep" / "queue.py",
        *sorted((root / "train").rglob("*.py")),
    ]
    for path in worker_side:
        text = path.read_text()
        assert not any(name in text for name in ("sync_node", "open_run", "close_run", "set_status", ".finish(")), path
