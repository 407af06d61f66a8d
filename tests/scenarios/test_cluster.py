"""A study on a two-node Ray cluster (a head and a worker `ray start`, on loopback addresses), submitted
with `ray job submit --working-dir . -- python -m raysweep.main` as on a real cluster (README), its
nodes stored in a real S3 API (moto's server) and each Ray node with its own raysweep cache, so
nodes travel between machines only through S3. Then the same study with the worker node SIGKILLed
mid stage 2: it finishes on the head. Both equal the undisturbed run's nodes, losses and MLflow
runs and points."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import FAKE_AWS, REDUCED_TREE, ROOT, SMOKE, free_port, mlflow_snapshot, node_results, s3_uri, with_reference_data

# one xdist worker runs both Ray-cluster files, one after the other: each starts a head on 127.0.0.2
pytestmark = pytest.mark.xdist_group("ray-cluster")

RAY = str(Path(sys.executable).with_name("ray"))


def _ports(*names: str) -> dict[str, int]:
    return {n: free_port() for n in names}


# Two loopback addresses: Ray turns 127.0.0.1 (and only it) into the machine's outward address once
# multi-node clusters are on, so each node takes another address of 127.0.0.0/8, as two machines would.
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


def _start(args: list[str], ip: str, cache: Path, log: Path) -> subprocess.Popen:
    """`ray start --block` in its own process group (so the node can be killed whole), its raysweep
    cache its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env.update({**FAKE_AWS, "RAYSWEEP_CACHE": str(cache), "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"})
    node_ports = _ports("agent", "agent_grpc", "env_agent", "metrics", "node_mgr", "obj_mgr")
    common = [
        f"--node-ip-address={ip}",
        f"--dashboard-agent-listen-port={node_ports['agent']}",
        f"--dashboard-agent-grpc-port={node_ports['agent_grpc']}",
        f"--runtime-env-agent-port={node_ports['env_agent']}",
        f"--metrics-export-port={node_ports['metrics']}",
        f"--node-manager-port={node_ports['node_mgr']}",
        f"--object-manager-port={node_ports['obj_mgr']}",
        "--num-cpus=1",
        "--disable-usage-stats",
        "--block",
    ]
    return subprocess.Popen([RAY, "start", *args, *common], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGKILL a node whole, as a machine lost: `ray start` and every process below it (raylet,
    agents, workers; they are not all in its process group), listed before any dies."""
    import psutil

    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    """(dashboard URL, head process, worker process, the two nodes' caches, folder for logs)."""
    base = Path(f"/tmp/rsc-{os.getpid()}")  # short: Ray's socket paths must fit in 107 characters
    logs = tmp_path_factory.mktemp("cluster")
    ports = _ports("gcs", "dash", "client")
    head = _start(
        [
            "--head",
            f"--port={ports['gcs']}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={ports['dash']}",
            f"--ray-client-server-port={ports['client']}",
            "--min-worker-port=23000",
            "--max-worker-port=23499",
            f"--temp-dir={base}",
        ],
        HEAD_IP,
        logs / "cache-head",
        logs / "head.log",
    )
    url = f"http://127.0.0.1:{ports['dash']}"
    # its own temp folder too, as on another machine: two nodes sharing one would share the job's
    # unpacked working folder, which either node's runtime-env agent may delete
    worker = _start(
        [f"--address={HEAD_IP}:{ports['gcs']}", "--min-worker-port=23500", "--max-worker-port=23999", f"--temp-dir={base}w"],
        WORKER_IP,
        logs / "cache-worker",
        logs / "worker.log",
    )
    deadline = time.time() + 120
    while True:  # both nodes alive in the head's view (`ray status` lists one "1 node_<id>" line per node)
        status = subprocess.run(
            [RAY, "status", f"--address={HEAD_IP}:{ports['gcs']}"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "RAY_AUTH_MODE": "token"},
        )
        if status.stdout.split("Pending:")[0].count(" node_") == 2:
            break
        assert head.poll() is None and worker.poll() is None and time.time() < deadline, status.stdout + status.stderr
        time.sleep(1)
    yield url, head, worker, logs
    _stop(worker)
    _stop(head)
    for folder in (base, Path(f"{base}w")):
        shutil.rmtree(folder, ignore_errors=True)


def _submit(url: str, out: Path, store: str, *more: str) -> subprocess.CompletedProcess:
    cmd = [RAY, "job", "submit", "--address", url, "--working-dir", ".", "--", "python", "-m", "raysweep.main"]
    cmd += ["--config", str(SMOKE.relative_to(ROOT)), "--set", f"output_dir={out}", "--set", f"checkpoint_dir={store}"]
    cmd += [a for r in [*REDUCED_TREE, *more] for a in ("--set", r)]  # 5 nodes on 2 slots, one per Ray node
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    for _ in range(45):
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
        if "No available agent to submit job" not in proc.stderr + proc.stdout:  # the head's job agent is not up yet
            (out.parent / "job.log").write_text(proc.stdout + proc.stderr)
            return proc
        time.sleep(2)
    return proc


def _same_as_reference(out: Path, store_root: Path, reference) -> None:
    ref_out, _, ref_mlflow = reference
    got, want = node_results(store_root), node_results(ref_out)
    assert set(got) == set(want)
    for key in want:
        assert got[key]["losses"] == want[key]["losses"] and got[key]["steps"] == want[key]["steps"], key
    assert mlflow_snapshot(f"sqlite:///{out / 'mlflow.db'}", "smoke") == ref_mlflow


def _local_copy(uri: str, into: Path) -> Path:
    """The S3 node store copied to `into/checkpoints` (to read it with the tests' file helpers)."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(uri)
    pafs.copy_files(root, str(into / "checkpoints"), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return into


def test_a_study_spreads_over_two_ray_nodes_through_s3(cluster, reference, s3_server, tmp_path):
    url, _, _, logs = cluster
    out = with_reference_data(reference[0], tmp_path / "job")
    store = s3_uri(s3_server[0], "cluster", "nodes")
    proc = _submit(url, out, store)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr and "Pareto frontier in (L_ret, L_ft)" in proc.stdout
    # the driver's outputs stay on the head: the report, the SQLite store, the `mlflow ui` that works on 2 cores
    assert (out / "report.html").exists() and (out / "mlflow.db").exists()
    assert f"mlflow ui --host 127.0.0.1 --port 5000 --workers 1 --backend-store-uri sqlite:///{out / 'mlflow.db'}" in proc.stdout
    assert "then open: http://127.0.0.1:5000/#/experiments/" in proc.stdout
    # both Ray nodes trained: each wrote nodes through its own cache, and read what it loaded from S3
    for cache in ("cache-head", "cache-worker"):
        assert list((logs / cache / "nodes").glob("*/node.json")), cache
    _same_as_reference(out, _local_copy(store, tmp_path / "copy"), reference)


def test_a_study_finishes_when_a_ray_node_is_lost_mid_stage_2(cluster, reference, s3_server, tmp_path):
    import pyarrow.fs as pafs

    url, _, worker, _ = cluster
    out = with_reference_data(reference[0], tmp_path / "job")
    store = s3_uri(s3_server[0], "cluster", "lost")
    fs, root = pafs.FileSystem.from_uri(store)
    killed = []

    def kill_the_worker_node_at_a_stage2_checkpoint():
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                found = fs.get_file_info(pafs.FileSelector(f"{root}/posttrain", recursive=True, allow_not_found=True))
            except OSError:
                found = []
            if any(i.path.endswith(".resume/state.pt") for i in found):
                _stop(worker)
                killed.append(time.time())
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_the_worker_node_at_a_stage2_checkpoint, daemon=True)
    killer.start()
    proc = _submit(url, out, store, "posttrain.checkpoint_every=20")
    killer.join(timeout=5)
    assert killed, "no stage-2 progress checkpoint appeared"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " FAILED:" not in proc.stdout  # the lost attempt was retried on the head, not a failure
    copy = _local_copy(store, tmp_path / "copy")
    lost = list((copy / "checkpoints" / "posttrain").glob("*.failures.jsonl"))
    assert len(lost) == 1, lost  # the attempt the lost node held, recorded, then trained again on the head
    _same_as_reference(out, copy, reference)
