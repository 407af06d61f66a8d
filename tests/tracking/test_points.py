"""raysweep.tracking.points: every metric point into MLflow exactly once, from many processes at
once and across a resumed attempt, through the training loop's MLflow sink."""

from __future__ import annotations

import multiprocessing as mp
import time

from mlflow.tracking import MlflowClient

from raysweep.tracking.points import MetricSender
from raysweep.tracking.store import Tracker, default_tracking_uri
from tests.helpers import run_spec

PROCESSES, STEPS, KEYS = 8, 120, ("train_loss", "lr", "heldout_post")


def _value(run: int, key: str, step: int) -> float:
    return run * 1000 + KEYS.index(key) * 0.001 + step * 1e-6


def _log_like_a_trial(args) -> None:
    """One trial's rank 0: the real MLflow sink of the training loop (background sender), a flush
    after every step (the worst case for contention), then a resumed attempt that makes the second
    half's steps again."""
    from types import SimpleNamespace

    from raysweep.tracking.points import MLflowPoints

    uri, run_id, index, barrier = args
    spec = run_spec("/nonexistent", label=f"run {index}", min_lr=1e-4, warmup_steps=1, max_steps=STEPS, eval_every=10, run_id=run_id)
    rank0 = SimpleNamespace(rank=0)

    def points(step: int) -> list[tuple]:
        return [(k, _value(index, k, step), int(time.time() * 1000), step) for k in KEYS]

    barrier.wait()  # every process starts writing at the same moment
    sink, logged = MLflowPoints(uri), []
    sink.on_start(spec, rank0)
    for step in range(1, STEPS + 1):
        logged += points(step)
        sink.on_metrics(spec, logged[-len(KEYS) :])
        sink.flush()
    sink.on_close(spec, timeout=300)
    sink.on_start(spec, rank0)  # resumed from a checkpoint half way
    sink.on_resume(spec, [p for p in logged if p[3] <= STEPS // 2])
    for step in range(STEPS // 2 + 1, STEPS + 1):
        sink.on_metrics(spec, points(step))
    sink.on_close(spec, timeout=300)


def test_eight_trials_logging_at_once_deliver_every_point_exactly_once(tmp_path):
    tracker = Tracker(default_tracking_uri(tmp_path), "load", artifact_root=tmp_path / "artifacts")
    tracker.init_store()  # the driver creates the store first, as raysweep.main does
    study = tracker.study_run("hash", "load", {})
    runs = [tracker.node_run(f"key{i}", f"run{i}", study, "posttrain", {}, {}) for i in range(PROCESSES)]
    ctx = mp.get_context("spawn")  # fresh interpreters, like Ray workers
    with ctx.Manager() as manager:
        barrier = manager.Barrier(PROCESSES)
        with ctx.Pool(PROCESSES) as pool:
            pool.map(_log_like_a_trial, [(tracker.tracking_uri, run_id, i, barrier) for i, run_id in enumerate(runs)])
    client = MlflowClient(tracker.tracking_uri)
    for i, run_id in enumerate(runs):
        for key in KEYS:
            points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            assert points == [(s, _value(i, key, s)) for s in range(1, STEPS + 1)], (i, key)  # all of them, once each


def test_a_resent_batch_is_not_logged_twice(tmp_path):
    tracker = Tracker(default_tracking_uri(tmp_path), "resend")
    tracker.init_store()
    run_id = tracker.node_run("k", "r", tracker.study_run("h", "s", {}), "pretrain", {}, {})
    points = [("loss", 1.0 / s, 1000 + s, s) for s in range(1, 51)]
    assert MetricSender(tracker.tracking_uri, run_id).send(points[:30])
    assert MetricSender(tracker.tracking_uri, run_id).send(points)  # a new attempt (another process) sends everything
    assert len(tracker.client.get_metric_history(run_id, "loss")) == 50
