"""MLflow tracking: one parent run per study, one nested run per tree node.

Runs are found again by their node key (a tag), never created twice: a resumed study reuses the
runs it already has. The store and experiment are created in the driver before any trial starts,
because several processes initialising a fresh SQLite store at once race on its schema.
"""

from __future__ import annotations

import math
from pathlib import Path

NODE_KEY = "raysweep.node_key"
STAGE = "raysweep.stage"
STUDY_HASH = "raysweep.study_hash"


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
    """A thin wrapper over MlflowClient, safe to pickle into Ray trials (it holds only strings)."""

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_root: Path | None = None):
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.artifact_root = artifact_root
        self.experiment_id: str | None = None

    @property
    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.tracking_uri)

    def init_store(self) -> str:
        """Create the store and the experiment (driver only); returns the experiment id."""
        client = self.client
        exp = client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            location = self.artifact_root.as_uri() if self.artifact_root else None
            self.experiment_id = client.create_experiment(self.experiment_name, artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id
        return self.experiment_id

    def _find(self, key: str, value: str):
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{key}` = '{value}'", max_results=2)
        return runs[0] if runs else None

    def study_run(self, study_hash: str, name: str, params: dict) -> str:
        """The study's parent run: reused when the same study (same content hash) is run again."""
        found = self._find(STUDY_HASH, study_hash)
        if found is not None:
            self.client.update_run(found.info.run_id, status="RUNNING")
            return found.info.run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags={STUDY_HASH: study_hash, STAGE: "study"})
        items = list(flatten(params).items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            from mlflow.entities import Param

            self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in items[i : i + 100]])
        return run.info.run_id

    def node_run(self, node_key: str, name: str, parent_run_id: str, stage: str, params: dict, tags: dict) -> str:
        """Find or create the run of one tree node, nested under parent_run_id."""
        found = self._find(NODE_KEY, node_key)
        if found is not None:
            return found.info.run_id
        from mlflow.entities import Param

        all_tags = {NODE_KEY: node_key, STAGE: stage, "mlflow.parentRunId": parent_run_id, **{k: str(v) for k, v in tags.items()}}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flatten(params).items()])
        return run.info.run_id

    def finish(self, run_id: str, metrics: dict[str, float], failed: bool = False) -> None:
        from mlflow.entities import Metric

        ok = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        if ok:
            self.client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in ok.items()])
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)
