"""Shared fixtures: one local Ray instance (2 CPUs) per test session, and the smoke study."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "search_spaces" / "smoke.yaml"


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    import ray

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    cache = str(tmp_path_factory.mktemp("raysweep-cache"))  # object-store node copies stay in the test's temp
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAYSWEEP_CACHE": cache}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_out(tmp_path_factory) -> Path:
    """One output folder for the smoke study, shared so corpora and streams are made once."""
    return tmp_path_factory.mktemp("smoke")


@pytest.fixture(scope="session")
def smoke_data(ray_local, smoke_out):
    from raysweep.config import load_study
    from raysweep.prepare import prepare

    study = load_study(SMOKE, [f"output_dir={smoke_out}"])
    return study, prepare(study)


def plan_smoke(smoke_data, *overrides: str):
    """The smoke study's stage-2 subtrees as planned, and as planned with `overrides` (same data)."""
    from raysweep.config import load_study
    from raysweep.tree import plan

    study, data = smoke_data
    changed = load_study(SMOKE, [f"output_dir={study.out}", *overrides])
    return plan(study, data)[1], plan(changed, data)[1], changed


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 (SQLite backend, proxied artifacts); yields its URI."""
    import shutil
    import subprocess
    import sys
    import time
    import urllib.request

    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen(
        [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "w"),
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield uri
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
