"""raysweep.tracking.store: an unreachable server costs seconds and fails nothing; study names
stay in their folder; the runs table's address."""

from __future__ import annotations

import time

import pytest

from raysweep.tracking.points import MetricSender
from raysweep.tracking.store import Tracker
from tests.helpers import free_port


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
    from raysweep.tracking.store import runs_url

    assert runs_url("http://127.0.0.1:5000", "7") == "http://127.0.0.1:5000/#/experiments/7/runs"
    assert runs_url("https://mlflow.example/", "12") == "https://mlflow.example/#/experiments/12/runs"
    assert runs_url("http://127.0.0.1:5000", None) == "http://127.0.0.1:5000"  # no experiment yet: the UI's start page
