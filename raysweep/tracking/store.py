"""The driver's MLflow store (raysweep.tracking): the study's experiment and runs, found again by key."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from raysweep.tags import DESCRIPTION, EXPERIMENT_TAGS, FINISHES, NODE_KEY, OUTCOME, STAGE, STUDY_HASH
from raysweep.tracking.points import MetricSender, warn_outage

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
    """A thin wrapper over MlflowClient, the driver's only (since 2026-12-07 no worker holds one:
    workers get run ids and send points, raysweep.tracking.points). `outages` lists every call that
    failed through this tracker (the driver's summary says how many)."""

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_root: Path | None = None):
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.artifact_root = artifact_root
        self.experiment_id: str | None = None
        self.online = True  # False once the store could not be opened: the workers then get no run ids and send nothing
        self.outages: list[str] = []
        self._client = None
        self._inode: int | None = None  # the SQLite file the store was opened on (lost() tells a new one from it)

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
            db = self.tracking_uri.removeprefix("sqlite:///")
            _wal(db)
            self._inode = os.stat(db).st_ino
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

    def set_status(self, run_id: str, status: str) -> None:
        """A node run's state while it is open: SCHEDULED (its item waits in the queue) or RUNNING."""
        self.client.update_run(run_id, status=status)

    def kill_running(self, keep: set[str]) -> int:
        """Mark KILLED every node run of the experiment still RUNNING or SCHEDULED whose node key
        is not in `keep` (an interrupted study: the runs the driver had open). Returns how many."""
        from mlflow.entities import RunTag

        # two searches: MLflow's filter has no OR, and IN only for run ids
        runs = [
            r
            for status in ("RUNNING", "SCHEDULED")
            for r in self.client.search_runs([self.experiment_id], filter_string=f"attributes.status = '{status}'", max_results=50_000)
        ]
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
            if self._inode is not None and db.stat().st_ino != self._inode:
                # the driver's own calls after the deletion (it moves node runs on while the tree
                # trains) made a new file, part of a store, while older connections wrote into the old one
                return f"{db} was deleted (a partial store was made in its place)"
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
        """Open the store afresh (a new SQLite file gets MLflow's tables) with the experiment; its id.
        A partial file made in place of the deleted one is moved aside (`<file>.partial-<time>`), so
        every run is written again into one whole store, nested as the node store says."""
        if self.tracking_uri.startswith("sqlite:///"):
            _forget_engine(self.tracking_uri)
            db = Path(self.tracking_uri.removeprefix("sqlite:///"))
            if self._inode is not None and db.exists() and db.stat().st_ino != self._inode:
                stamp = time.strftime("%Y%m%d-%H%M%S")
                for f in db.parent.glob(db.name + "*"):
                    if ".partial-" not in f.name:
                        f.rename(f.with_name(f.name.replace(db.name, f"{db.name}.partial-{stamp}", 1)))
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
