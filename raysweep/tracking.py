"""MLflow tracking: one parent run per study, one nested run per tree node.

Runs are found again by their node key (a tag), never created twice: a resumed study reuses the
runs it already has. The store and experiment are created in the driver before any trial starts,
because several processes initialising a fresh SQLite store at once race on its schema.

MLflow is a view, never the record. Every node keeps its own results *and every metric point it
logged* (with the point's original timestamp) in its checkpoint folder, so an MLflow outage loses
nothing: training goes on, and `python -m raysweep.main --sync-mlflow` (also run at the end of
every study: raysweep.sweep.sync) writes what MLflow is missing. Points are delivered exactly once: a point whose
(key, step) the run already holds is never sent again (a resumed or retried run re-makes the same
points, bit for bit), and a batch is re-sent only with the same timestamps, which MLflow's SQL
stores de-duplicate.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

from raysweep.spec import RunSpec
from raysweep.tags import DESCRIPTION, EXPERIMENT_TAGS, FINISHES, NODE_KEY, OUTCOME, STAGE, STUDY_HASH
from raysweep.train.steplog import StepLog

# MLflow 3.17's experiment page opens on the GenAI overview whatever the experiment's kind (its
# sidebar's "Model training" switch is kept per browser), so the summary prints the route of the runs
# table itself (runs_url).
UI_PORT = 5000  # `mlflow ui`'s default port
# For the `mlflow ui` / `mlflow server` a study's summary suggests: MLflow's job runner (8 processes
# for GenAI scoring jobs raysweep never submits) kept a third of a core busy while idle (bench/RESULTS.md).
UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def runs_url(ui: str, experiment_id: str | None) -> str:
    """The page of an experiment's runs table in the MLflow UI at `ui` (the UI's base URL)."""
    base = ui.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs" if experiment_id is not None else base


# MLflow's HTTP client retries a call 7 times with exponential back-off (minutes) by default. raysweep
# never needs a call to succeed (see above), so a down server costs seconds, not hours of stalls.
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def http_env() -> dict[str, str]:
    """The MLflow client settings raysweep's processes use (a user's own values win)."""
    return {k: os.environ.get(k, v) for k, v in HTTP_ENV.items()}


def default_tracking_uri(out: Path) -> str:
    return f"sqlite:///{out / 'mlflow.db'}"


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


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, key + "."))
        else:
            flat[key] = str(v)[:500]  # MLflow caps a param value's length
    return flat


class Tracker:
    """A thin wrapper over MlflowClient, safe to pickle into Ray trials (it pickles only strings and
    flags: the client is made again in each process). `outages` lists every call that failed in this
    process, through this tracker (the driver's summary says how many)."""

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_root: Path | None = None):
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.artifact_root = artifact_root
        self.experiment_id: str | None = None
        self.online = True  # False once the store could not be opened: trials then skip MLflow entirely
        self.outages: list[str] = []
        self._client = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None, "outages": []}  # a trial's outages are its own

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def warn_outage(self, what: str, error: BaseException) -> None:
        warn_outage(what, error, self.outages)

    def sender(self, run_id: str) -> MetricSender:
        """A MetricSender whose failures count among this tracker's outages."""
        return MetricSender(self.tracking_uri, run_id, self.outages)

    def init_store(self) -> str:
        """Create the store and the experiment (driver only); returns the experiment id."""
        if self.tracking_uri.startswith("sqlite:///"):
            _wal(self.tracking_uri.removeprefix("sqlite:///"))
        client = self.client
        exp = client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            location = self.artifact_root.as_uri() if self.artifact_root else None
            self.experiment_id = client.create_experiment(self.experiment_name, artifact_location=location, tags=EXPERIMENT_TAGS)
        else:
            self.experiment_id = exp.experiment_id
            for k, v in EXPERIMENT_TAGS.items():  # an experiment made before raysweep set them
                if exp.tags.get(k) != v:
                    client.set_experiment_tag(self.experiment_id, k, v)
        return self.experiment_id

    def find_run(self, key: str, value: str):
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{key}` = '{value}'", max_results=2)
        return runs[0] if runs else None

    def study_run(self, study_hash: str, name: str, params: dict, description: str = "") -> str:
        """The study's parent run: reused when the same study (same content hash) is run again.
        `description` is what the MLflow UI shows on the run's page (the tree's levels and sizes)."""
        found = self.find_run(STUDY_HASH, study_hash)
        if found is not None:
            self.client.update_run(found.info.run_id, status="RUNNING")
            return found.info.run_id
        tags = {STUDY_HASH: study_hash, STAGE: "study", **({DESCRIPTION: description} if description else {})}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        items = list(flatten(params).items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            from mlflow.entities import Param

            self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in items[i : i + 100]])
        return run.info.run_id

    def node_run(self, node_key: str, name: str, parent_run_id: str, stage: str, params: dict, tags: dict) -> str:
        """Find or create the run of one tree node, nested under parent_run_id."""
        found = self.find_run(NODE_KEY, node_key)
        if found is not None:
            return found.info.run_id
        from mlflow.entities import Param

        all_tags = {NODE_KEY: node_key, STAGE: stage, "mlflow.parentRunId": parent_run_id, **{k: str(v) for k, v in tags.items()}}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flatten(params).items()])
        return run.info.run_id

    def finish(
        self,
        run_id: str,
        metrics: dict[str, float],
        failed: bool = False,
        tags: dict | None = None,
        status: str | None = None,
        step: int = 0,
    ) -> None:
        """Log a run's final metrics at `step` and close it. Timestamp 0: a repeated finish re-sends
        identical points, which the store de-duplicates; a *different* value must come at another
        step (never two values at one (key, step)): see finish_study and sync_node."""
        from mlflow.entities import Metric, RunTag

        ok = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        if ok or tags:
            self.client.log_batch(
                run_id, metrics=[Metric(k, v, 0, step) for k, v in ok.items()], tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()]
            )
        self.client.set_terminated(run_id, status=status or ("FAILED" if failed else "FINISHED"))

    def finish_study(self, run_id: str, metrics: dict[str, float], failed: bool) -> None:
        """The study run's summary (runs, failures) at step n for the n-th completion (from 0) that
        changed it: a rerun that fixed a failure adds its own point instead of a second value at
        step 0; a rerun (or --sync-mlflow) that changed nothing adds none."""
        run = self.client.get_run(run_id)
        n = int(run.data.tags.get(FINISHES, 0))
        if n and all(run.data.metrics.get(k) == float(v) for k, v in metrics.items()):
            self.finish(run_id, {}, failed=failed)
            return
        self.finish(run_id, metrics, failed=failed, tags={FINISHES: n + 1}, step=n)

    def kill_running(self, keep: set[str]) -> int:
        """Mark KILLED every run of the experiment still RUNNING whose node key is not in `keep`
        (an interrupted study: the runs its workers had open). Returns how many."""
        from mlflow.entities import RunTag

        runs = self.client.search_runs([self.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=50_000)
        killed = 0
        for r in runs:
            key = r.data.tags.get(NODE_KEY)
            if key is not None and key not in keep:
                self.client.log_batch(r.info.run_id, tags=[RunTag(OUTCOME, "interrupted")])
                self.client.set_terminated(r.info.run_id, status="KILLED")
                killed += 1
        return killed

    def guard(self, what: str, fn, *args, **kwargs):
        """fn(*args, **kwargs) while MLflow is online; on any failure warn and return None: the node
        store keeps everything and MLflow is synced from it later (module docstring)."""
        if not self.online:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            self.warn_outage(what, e)
            return None

    def start(self) -> bool:
        """Open the store (driver); on failure go offline for the rest of the run, warn and return False."""
        try:
            self.init_store()
            return True
        except Exception as e:  # noqa: BLE001
            self.warn_outage(f"opening the MLflow store {self.tracking_uri}", e)
            self.online = False
            return False

    def lost(self, study_run: str | None) -> str | None:
        """Why the store no longer holds this study (its SQLite file deleted or emptied, the study's
        run gone), or None: also when it cannot be reached now, which is an outage, not a loss."""
        if not self.online or study_run is None:
            return None
        if self.tracking_uri.startswith("sqlite:///"):
            import sqlite3
            from contextlib import closing

            db = Path(self.tracking_uri.removeprefix("sqlite:///"))
            if not db.exists():
                return f"{db} was deleted"
            # a fresh connection: MLflow's pooled ones may still hold a deleted file open
            with closing(sqlite3.connect(db)) as con:
                tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "runs" not in tables:
                return f"{db} lost its tables"
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(study_run)
        except MlflowException as e:
            return "the study's run is gone from it" if e.error_code == "RESOURCE_DOES_NOT_EXIST" else None
        except Exception:  # noqa: BLE001 - unreachable: an outage (the caller counts those)
            return None
        return None

    def rebuild(self) -> str:
        """Open the store afresh (a new SQLite file gets MLflow's tables) with the experiment; its id."""
        if self.tracking_uri.startswith("sqlite:///"):
            _forget_engine(self.tracking_uri)
        self._client = None  # its store holds the old engine
        return self.init_store()

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)


def _forget_engine(uri: str) -> None:
    """MLflow keeps one store and one SQLAlchemy engine per URI for the life of a process; once the
    SQLite file was deleted, their pooled connections still write into the deleted file. Dropped,
    the next client opens (and initialises) the file that is there now. MLflow internals: if they
    move, nothing is dropped, and the check after a rebuild (raysweep.study) says it failed."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        engine = SqlAlchemyStore._engine_map.pop(uri, None)
        if engine is not None:
            engine.dispose()
        _tracking_store_registry._get_store_with_resolved_uri.cache_clear()
    except (ImportError, AttributeError):
        pass


def _wal(db: str) -> None:
    """SQLite in write-ahead-log mode: readers (the MLflow UI, a sync) never block the trials' writers,
    and writers wait on each other (MLflow sets a 20 s busy timeout) instead of failing. The mode is
    stored in the database file, so every later connection uses it."""
    import sqlite3

    Path(db).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(5):
        try:
            with sqlite3.connect(db, timeout=30) as con:
                con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:  # another writer holds the lock: wait and try again
            time.sleep(1 + attempt)


# ----------------------------------------------------------------------------- step metrics from workers


class MLflowStepLog(StepLog):
    """The training loop's StepLog in a study: points also go to the run's MLflow run, from a
    background thread, so a slow or down tracking server never stalls training, and exactly once
    (MetricSender)."""

    def __init__(self, spec: RunSpec, total_steps: int, tokens_per_step: int, active: bool, tracking_uri: str):
        from concurrent.futures import ThreadPoolExecutor

        super().__init__(spec, total_steps, tokens_per_step, active)
        self.unsent: list[tuple] = []
        self.sender = MetricSender(tracking_uri, spec.run_id)
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="mlflow")

    def restore(self, points: list, step: int) -> None:
        super().restore(points, step)
        self.unsent = list(self.points)  # any the store missed before the interruption

    def deliver(self, new: list[tuple]) -> None:
        self.unsent += new
        if len(self.unsent) >= 200:
            self.flush()

    def flush(self) -> None:
        if self.unsent:
            batch, self.unsent = self.unsent, []
            self.thread.submit(self.sender.send, batch)

    def close(self, timeout: float = 30.0) -> None:
        """Send what is left, waiting at most `timeout` s (what MLflow misses, the driver's sync delivers)."""
        self.flush()
        done = self.thread.submit(lambda: None)
        try:
            done.result(timeout=timeout)
        except Exception:  # noqa: BLE001 - a stalled store: leave the thread, never the run
            pass
        self.thread.shutdown(wait=False)


def step_logs(tracking_uri: str | None):
    """The Worker.new_log of a study's workers: MLflow's StepLog for rank 0 of a run with an MLflow
    run, the plain one otherwise (offline, or ranks > 0)."""

    def new_log(spec: RunSpec, total_steps: int, tokens_per_step: int, active: bool) -> StepLog:
        if active and spec.run_id and tracking_uri:
            return MLflowStepLog(spec, total_steps, tokens_per_step, active, tracking_uri)
        return StepLog(spec, total_steps, tokens_per_step, active)

    return new_log
