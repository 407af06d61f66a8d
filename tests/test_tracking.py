"""Tracking under load and outage: many trial processes logging step metrics at once into the
default store (SQLite) deliver every point exactly once, also when a resumed attempt makes the
same points again; an unreachable store never blocks or fails a study."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
from mlflow.tracking import MlflowClient

from raysweep.tracking import MetricSender, Tracker, default_tracking_uri
from tests.helpers import free_port, run_spec

PROCESSES, STEPS, KEYS = 8, 120, ("train_loss", "lr", "heldout_post")


def _value(run: int, key: str, step: int) -> float:
    return run * 1000 + KEYS.index(key) * 0.001 + step * 1e-6


def _log_like_a_trial(args) -> None:
    """One trial's rank 0: the real step logger (background sender), a flush after every step (the
    worst case for contention), then a resumed attempt that makes the second half's steps again."""
    uri, run_id, index, barrier = args
    from raysweep.tracking import step_logs

    spec = run_spec("/nonexistent", label=f"run {index}", min_lr=1e-4, warmup_steps=1, max_steps=STEPS, eval_every=10, run_id=run_id)
    barrier.wait()  # every process starts writing at the same moment
    log = step_logs(uri)(spec, STEPS, 1, True)
    for step in range(1, STEPS + 1):
        log.metrics(step, {k: _value(index, k, step) for k in KEYS})
        log.flush()
    log.close(timeout=300)
    again = step_logs(uri)(spec, STEPS, 1, True)  # resumed from a checkpoint half way
    again.restore(log.points, STEPS // 2)
    for step in range(STEPS // 2 + 1, STEPS + 1):
        again.metrics(step, {k: _value(index, k, step) for k in KEYS})
    again.close(timeout=300)


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


def test_an_unreachable_tracking_server_costs_seconds_and_fails_nothing(tmp_path, monkeypatch, capfd):
    """Seconds, not minutes: each call tries to connect once, with no retry and no back-off sleep
    (counted, rather than timed: a loaded machine makes a time bound noisy)."""
    import urllib3.connection

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    connects, slept = [], []
    connect = urllib3.connection.HTTPConnection.connect
    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", lambda self: connects.append(self.port) or connect(self))
    monkeypatch.setattr(time, "sleep", slept.append)
    tracker = Tracker(uri, "down")
    assert tracker.start() is False and tracker.online is False
    sender = MetricSender(uri, "0" * 32)
    assert sender.send([("loss", 1.0, 1, 1)]) is False and sender.pending  # kept for the next try
    assert tracker.sender("0" * 32).send([("loss", 1.0, 1, 1)]) is False  # the driver's sends count as its outages
    assert [o.split(" ")[0] for o in tracker.outages] == ["opening", "logging"]
    assert len(connects) == 3 and slept == []  # one try per call above (with 2 retries it is 3 each: counted, 2026-12-07)
    assert "training goes on" in capfd.readouterr().err


@pytest.mark.parametrize("name", ["../escape", "a/b", "", " spaced", "émoji✓"])
def test_study_names_cannot_leave_their_folder_or_break_run_names(tmp_path, name):
    """The study name becomes a folder, an MLflow experiment and a run name: only [A-Za-z0-9_.-]."""
    from raysweep.config import StudyConfigError, load_study

    path = tmp_path / "s.yaml"
    path.write_text(f"name: {name!r}\n")
    with pytest.raises(StudyConfigError, match="name"):
        load_study(path)


def test_runs_url_opens_the_experiments_runs_table():
    from raysweep.tracking import runs_url

    assert runs_url("http://127.0.0.1:5000", "7") == "http://127.0.0.1:5000/#/experiments/7/runs"
    assert runs_url("https://mlflow.example/", "12") == "https://mlflow.example/#/experiments/12/runs"
    assert runs_url("http://127.0.0.1:5000", None) == "http://127.0.0.1:5000"  # no experiment yet: the UI's start page
