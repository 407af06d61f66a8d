"""Shared fixtures: one local Ray instance (2 CPUs) per test session, the smoke study's data, a real
MLflow server, and the undisturbed reduced smoke study every fault test compares with. Plain
helpers live in tests/helpers.py."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.helpers import (
    FAKE_AWS,
    REDUCED,
    SMOKE,
    free_port,
    mlflow_snapshot,
    node_results,
    start_mlflow_server,
    stop_mlflow_server,
)


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

    from raysweep.ray_instance import LOOPBACK_ENV, loopback_only

    loopback_only()  # as raysweep's own local instance (tests/test_safety.py)
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    # a stopped MLflow server fails a call at once (raysweep's default allows 2 retries; tests need none)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    cache = str(tmp_path_factory.mktemp("raysweep-cache"))  # object-store node copies stay in the test's temp
    os.environ["RAYSWEEP_CACHE"] = cache
    os.environ.update(FAKE_AWS)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={
            "env_vars": {
                "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
                "RAYSWEEP_CACHE": cache,
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                **LOOPBACK_ENV,
                **FAKE_AWS,
            }
        },
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One S3 server for the session's S3 tests; yields (port, its request log)."""
    from tests.helpers import start_s3_server

    os.environ.update(FAKE_AWS)
    proc, port, log = start_s3_server(tmp_path_factory.mktemp("s3"))
    yield port, log
    proc.kill()
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def smoke_out(tmp_path_factory):
    """One output folder for the smoke study, shared so corpora and streams are made once."""
    return tmp_path_factory.mktemp("smoke")


@pytest.fixture(scope="session")
def smoke_data(ray_local, smoke_out):
    from raysweep.config import load_study
    from raysweep.data.prepare import prepare

    study = load_study(SMOKE, [f"output_dir={smoke_out}"])
    return study, prepare(study)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    proc, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), free_port())
    yield uri
    stop_mlflow_server(proc)


@pytest.fixture(scope="session")
def smoke_study(ray_local, smoke_out, mlflow_server):
    """The whole smoke study, trained once into `smoke_out` and tracked into the MLflow server:
    (study, summary, what it printed). The end-to-end test checks it and resumes it; the golden
    test reads its losses (one 18-node study instead of two)."""
    import contextlib
    import io

    from raysweep.config import load_study
    from raysweep.study import run_study

    study = load_study(SMOKE, [f"output_dir={smoke_out}", f"tracking_uri={mlflow_server}"])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = run_study(study)
    return study, summary, printed.getvalue()


@pytest.fixture(scope="session")
def reference(ray_local, tmp_path_factory):
    """The REDUCED smoke study, undisturbed: (output folder, summary, MLflow snapshot)."""
    from raysweep.config import load_study
    from raysweep.study import run_study

    out = tmp_path_factory.mktemp("reference")
    study = load_study(SMOKE, [f"output_dir={out}", *REDUCED])
    summary = run_study(study)
    assert summary["failures"] == [] and len(node_results(out)) == 5
    return out, summary, mlflow_snapshot(summary["tracking_uri"], study.name)


def _find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium: used if present, else installed with apt-get (root only), else the test is skipped
    with the reason. RAYSWEEP_NO_BROWSER_INSTALL=1 turns the install off."""
    if _find_chromium():
        return _find_chromium()
    if os.environ.get("RAYSWEEP_NO_BROWSER_INSTALL") == "1":
        pytest.skip("Chromium is not installed and RAYSWEEP_NO_BROWSER_INSTALL=1 (Debian: apt-get install chromium)")
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("Chromium is not installed and this user cannot apt-get install it (Debian: sudo apt-get install chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
        except subprocess.TimeoutExpired:
            pytest.skip(f"installing Chromium timed out at `{' '.join(cmd)}`")
        if proc.returncode:
            pytest.skip(f"installing Chromium failed at `{' '.join(cmd)}`: {proc.stderr.strip()[-300:]}")
    if not _find_chromium():
        pytest.skip("apt-get installed chromium but no chromium binary is on PATH")
    return _find_chromium()
