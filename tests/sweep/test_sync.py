"""raysweep.sweep.sync on its own (no Ray, no study): the paper's loss names from a node's held-out
losses, and one finished node written to a SQLite MLflow store exactly once, however often synced."""

from __future__ import annotations

from raysweep.spec import Node, losses_by_role
from raysweep.store.nodes import save_node
from raysweep.sweep.sync import final_metrics, summary_metrics, sync_node
from raysweep.tracking.store import Tracker
from tests.helpers import run_spec


def test_final_metrics_name_the_papers_losses_from_the_roles():
    assert final_metrics("posttrain", {"post": 0.5}) == {"final_post": 0.5, "L_im": 0.5}
    ft = final_metrics("finetune", {"ft": 1.0, "post": 2.0, "pre": 3.0})
    assert {k: ft[k] for k in ("L_ft", "L_ret", "L_pre")} == {"L_ft": 1.0, "L_ret": 2.0, "L_pre": 3.0}
    assert losses_by_role({k: ft[k] for k in ("L_ft", "L_ret", "L_pre")}) == {"ft": 1.0, "post": 2.0, "pre": 3.0}
    assert final_metrics("pretrain", {"pre": 4.0, "post": 5.0}) == {"final_pre": 4.0, "final_post": 5.0}


def _result(losses: dict, seconds: float) -> dict:
    return {"losses": losses, "steps": 2, "tokens": 64, "tokens_per_s": 64 / seconds, "best_step": 2}


def test_a_finished_node_is_synced_once_and_a_retrained_one_one_step_further(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "sync-test")
    assert tracker.start()
    parent = tracker.client.create_run(tracker.experiment_id).info.run_id
    spec = run_spec(tmp_path / "node", stage="finetune", dataset="ft", max_steps=2, monitor=["ft"])
    node = Node(spec, "finetune/x", None, {"lr": "0.001"}, {}, None)
    points = [["train_loss", 2.5, 1000, 1], ["heldout_ft", 2.25, 1001, 2]]
    save_node(spec, {}, _result({"ft": 2.25, "post": 3.0, "pre": 4.0}, 1.0), "tok", points=points)

    run_id = sync_node(tracker, node, parent)
    assert sync_node(tracker, node, parent) == run_id  # found by node key, nothing sent twice
    history = {k: [(m.step, m.value) for m in tracker.client.get_metric_history(run_id, k)] for k in ("train_loss", "heldout_ft", "L_ret")}
    assert history == {"train_loss": [(1, 2.5)], "heldout_ft": [(2, 2.25)], "L_ret": [(0, 3.0)]}
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent
    assert summary_metrics("finetune", _result({"ft": 2.25, "post": 3.0, "pre": 4.0}, 1.0)).items() <= run.data.metrics.items()

    # trained again (its stored copy was corrupt): a new result goes one step further, never a second value at step 0
    save_node(spec, {}, _result({"ft": 2.25, "post": 3.0, "pre": 4.0}, 2.0), "tok", points=points)
    assert sync_node(tracker, node, parent) == run_id
    assert [(m.step, m.value) for m in tracker.client.get_metric_history(run_id, "tokens_per_s")] == [(0, 64.0), (1, 32.0)]
    assert [(m.step, m.value) for m in tracker.client.get_metric_history(run_id, "train_loss")] == [(1, 2.5)]
    assert tracker.outages == []
