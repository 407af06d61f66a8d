"""`ray job submit --working-dir . -- python -m raysweep.main` against a local `ray start --head`."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import REDUCED_TREE, ROOT, SMOKE

RAY = str(Path(sys.executable).with_name("ray"))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def ray_head():
    temp = f"/tmp/rsj-{os.getpid()}"  # short: Ray's socket paths must fit in 107 characters
    # Every port explicit: the test session's own Ray instance already holds the defaults
    # (a second dashboard agent on 52365 never comes up, and job submission then waits forever).
    port, dash, agent, agent_grpc, env_agent, metrics, client, node_mgr, obj_mgr = _free_ports(9)
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    before = {p.pid for p in psutil.process_iter()}
    subprocess.run(
        [
            RAY,
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={env_agent}",
            f"--metrics-export-port={metrics}",
            f"--ray-client-server-port={client}",
            f"--node-manager-port={node_mgr}",
            f"--object-manager-port={obj_mgr}",
            "--min-worker-port=21000",
            "--max-worker-port=21999",
            "--num-cpus=2",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    )
    yield f"http://127.0.0.1:{dash}"
    # `ray stop` would also stop the test session's own Ray instance: end only the processes this
    # cluster started (its daemons rename themselves, e.g. "ray::DashboardAgent", so match by pid).
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    procs = [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.pid not in before and p.pid not in mine and "ray" in (p.info["name"] or "") + " ".join(p.info["cmdline"] or [])
    ]
    for p in procs:
        p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        p.kill()


def test_job_submit_runs_the_study(ray_head, tmp_path):
    out = tmp_path / "job"
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # the head enables token auth; the CLI reads ~/.ray/auth_token
    t0 = time.perf_counter()
    cmd = [
        RAY,
        "job",
        "submit",
        "--address",
        ray_head,
        "--working-dir",
        ".",
        "--",
        "python",
        "-m",
        "raysweep.main",
        "--config",
        str(SMOKE.relative_to(ROOT)),
        "--set",
        f"output_dir={out}",
        *[a for r in REDUCED_TREE for a in ("--set", r)],  # 5 nodes on the slots the cluster can feed (2)
    ]
    for _ in range(45):
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
        # right after `ray start` the head's job agent may not be up yet: the submission is refused, not run
        if "No available agent to submit job" not in proc.stderr + proc.stdout:
            break
        time.sleep(2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr
    assert "Pareto frontier in (L_ret, L_ft)" in proc.stdout
    assert (
        f"mlflow ui --host 127.0.0.1 --workers 1 --backend-store-uri sqlite:///{out / 'mlflow.db'}" in proc.stdout
    )  # the one that works on 2 cores
    assert (out / "report.html").exists() and (out / "mlflow.db").exists()
    print(f"job took {time.perf_counter() - t0:.0f}s")
