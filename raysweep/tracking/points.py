"""Metric points into MLflow, exactly once (raysweep.tracking): the sender every process uses, and
the training loop's MLflow sink, which a study's workers add to their loop's callbacks."""

from __future__ import annotations

import sys

from raysweep.spec import RunSpec
from raysweep.train.callbacks import Callback


def warn_outage(what: str, error: BaseException, outages: list[str] | None = None) -> None:
    """Say that an MLflow call failed (training goes on); record it in `outages` when given."""
    if outages is not None:
        outages.append(f"{what} ({type(error).__name__})")
    print(
        f"[mlflow] {what} failed ({type(error).__name__}: {str(error)[:300]}); training goes on, "
        "the results are kept with the checkpoints and MLflow is synced from them later",
        file=sys.__stderr__,
        flush=True,
    )


def logged_steps(client, run_id: str) -> set[tuple[str, int]]:
    """(key, step) of every metric point the run holds."""
    run = client.get_run(run_id)
    return {(key, m.step) for key in run.data.metrics for m in client.get_metric_history(run_id, key)}


class MetricSender:
    """Delivers one run's metric points, (key, value, timestamp ms, step), exactly once (module
    docstring). A failed send keeps its points for the next try and never raises; its first failure
    is recorded in `outages` when given (the driver's, through Tracker.sender)."""

    def __init__(self, tracking_uri: str, run_id: str, outages: list[str] | None = None):
        self.tracking_uri, self.run_id, self.outages = tracking_uri, run_id, outages
        self.sent: set[tuple[str, int]] | None = None  # read from the run on the first send
        self.pending: list[tuple] = []
        self.failures = 0

    def send(self, points: list[tuple] = ()) -> bool:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        self.pending += list(points)
        try:
            client = MlflowClient(self.tracking_uri)
            if self.sent is None:
                self.sent = logged_steps(client, self.run_id)
            todo = [p for p in self.pending if (p[0], p[3]) not in self.sent]
            for i in range(0, len(todo), 1000):  # MLflow takes at most 1000 metrics per batch
                batch = todo[i : i + 1000]
                client.log_batch(self.run_id, metrics=[Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in batch])
                self.sent.update((k, step) for k, _, _, step in batch)
            self.pending = []
            return True
        except Exception as e:  # noqa: BLE001 - any failure of the store: keep the points, go on
            if self.failures == 0:
                warn_outage(f"logging metrics of run {self.run_id}", e, self.outages)
            self.failures += 1
            self.sent = None  # a batch may have landed before the error: look again before re-sending
            return False


class MLflowPoints(Callback):
    """The training loop's MLflow sink (raysweep.train.callbacks): rank 0 sends each run's metric
    points to the run the driver opened for it (spec.run_id), from a background thread, so a slow
    or down tracking server never stalls training, and exactly once (MetricSender). Made in each
    worker by the slots (raysweep.sweep.slots), never pickled."""

    def __init__(self, tracking_uri: str):
        self.tracking_uri = tracking_uri
        self.sender: MetricSender | None = None
        self.unsent: list[tuple] = []
        self.thread = None

    def on_start(self, spec: RunSpec, worker) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.sender, self.unsent = None, []
        if worker.rank == 0 and spec.run_id:
            self.sender = MetricSender(self.tracking_uri, spec.run_id)
            self.thread = ThreadPoolExecutor(1, thread_name_prefix="mlflow")

    def on_resume(self, spec: RunSpec, points: list) -> None:
        self.unsent = list(points)  # any the store missed before the interruption

    def on_metrics(self, spec: RunSpec, points: list) -> None:
        if self.sender is None:
            return
        self.unsent += points
        if len(self.unsent) >= 200:
            self.flush()

    def flush(self) -> None:
        if self.sender is not None and self.unsent:
            batch, self.unsent = self.unsent, []
            self.thread.submit(self.sender.send, batch)

    def on_close(self, spec: RunSpec, timeout: float = 30.0) -> None:
        """Send what is left, waiting at most `timeout` s (what MLflow misses, the driver's sync delivers)."""
        if self.sender is None:
            return
        self.flush()
        done = self.thread.submit(lambda: None)
        try:
            done.result(timeout=timeout)
        except Exception:  # noqa: BLE001 - a stalled store: leave the thread, never the run
            pass
        self.thread.shutdown(wait=False)
        self.sender = None


def metric_sinks(tracking_uri: str | None) -> tuple:
    """The callbacks a study's worker adds to its loop: the MLflow sink when MLflow is online."""
    return (MLflowPoints(tracking_uri),) if tracking_uri else ()
