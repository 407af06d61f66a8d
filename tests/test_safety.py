"""Safety properties checked on the source itself and on a real local Ray instance: checkpoints
never unpickle code, nothing raysweep starts listens beyond 127.0.0.1 (cluster files:
tests/test_clusters.py), and nothing it starts outlives a killed driver."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT

SOURCES = sorted((ROOT / "raysweep").rglob("*.py")) + sorted((ROOT / "analysis").rglob("*.py"))


def _calls(name: str):
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == name:
                yield path, node


def test_every_torch_load_refuses_pickled_code():
    loads = list(_calls("torch.load"))
    assert loads  # progress checkpoints are read this way
    for path, call in loads:
        kw = {k.arg: k.value for k in call.keywords}
        assert "weights_only" in kw and ast.literal_eval(kw["weights_only"]) is True, f"{path.name}:{call.lineno}"
    assert not list(_calls("pickle.load")) and not list(_calls("pickle.loads"))


def test_the_local_ray_instance_starts_no_dashboard():
    inits = [
        call
        for _, call in _calls("ray.init")
        if any(k.arg == "address" and ast.literal_eval(k.value) == "local" for k in call.keywords if isinstance(k.value, ast.Constant))
    ]
    assert inits
    for call in inits:
        kw = {k.arg: k.value for k in call.keywords}
        assert ast.literal_eval(kw["include_dashboard"]) is False


def test_the_printed_mlflow_ui_command_binds_to_localhost():
    text = (ROOT / "raysweep" / "study.py").read_text()
    assert "mlflow ui --host 127.0.0.1" in text


# Ray started as `python -m raysweep.main` starts it, one task and one actor run (a slot trial is an
# actor), then every listening socket of the driver's process tree is listed.
_LISTENERS = """
import json, psutil, ray
from raysweep.ray_instance import init_ray
init_ray()
@ray.remote
def task():
    return 1
@ray.remote
class Actor:
    def ping(self):
        return 1
actor = Actor.remote()
ray.get([task.remote(), actor.ping.remote()])
me = psutil.Process()
found = []
for p in [me, *me.children(recursive=True)]:
    try:
        found += [[p.name(), c.laddr.ip, c.laddr.port] for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    except psutil.Error:
        pass
print("LISTENING " + json.dumps(found))
time.sleep(2)  # the reaper lists the tree every second
print("TREE " + json.dumps([[p.pid, p.create_time(), " ".join(p.cmdline())[:300]] for p in me.children(recursive=True)]), flush=True)
time.sleep(600)  # until SIGKILLed, as the OOM killer would
"""


def test_the_local_ray_instance_listens_on_loopback_only_and_dies_with_its_driver(tmp_path):
    import psutil

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    driver = subprocess.Popen(
        [sys.executable, "-c", "import time\n" + _LISTENERS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        lines = {}
        for line in driver.stdout:
            head, _, rest = line.partition(" ")
            lines[head] = json.loads(rest)
            if head == "TREE":
                break
        assert "TREE" in lines, driver.stderr.read()[-2000:]
        found = lines["LISTENING"]
        names = {name for name, _, _ in found}
        assert {"gcs_server", "raylet"} <= names and len(found) >= 6  # Ray's servers were seen, so the listing works
        outside = [f for f in found if f[1] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
        assert outside == []
        assert all(port != 8265 for _, _, port in found)  # no dashboard UI
    finally:
        driver.kill()  # SIGKILL: nothing of the driver runs after this
        driver.wait(timeout=30)

    def alive():
        out = []
        for pid, started, name in lines.get("TREE", []):
            try:
                p = psutil.Process(pid)
                if p.create_time() == started and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(name)
            except psutil.Error:
                pass
        return out

    agents = [
        cmd for _, _, cmd in lines["TREE"] if "agent" in cmd.lower()
    ]  # ray::DashboardAgent (or dashboard/agent.py), ray::RuntimeEnvAgent
    assert agents  # the processes that outlived their driver by ~60 s before (issue 18) were in the tree
    deadline = time.time() + 10
    while alive() and time.time() < deadline:
        time.sleep(0.2)
    assert alive() == []  # Ray's whole tree, agents and workers included, within 10 s of the driver


def test_a_local_ray_start_that_fails_is_retried_once_then_said_in_one_line(monkeypatch, tmp_path, capsys):
    import ray

    from raysweep import ray_instance
    from raysweep import study as study_module
    from raysweep.main import main

    calls = []

    def init(fail_times: int):
        def fake(*args, **kwargs):
            calls.append(kwargs.get("address"))
            if len(calls) <= fail_times:
                raise RuntimeError("Failed to start the raylet.\n(raylet) Check failed: ...\n  many lines of C++")

        return fake

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray_instance, "_OWN_RAY", [])
    monkeypatch.setattr(ray_instance, "start_reaper", lambda: None)
    monkeypatch.setattr(ray, "init", init(1))
    ray_instance.init_ray(retry_after_s=0)  # the second try starts
    assert calls == ["local", "local"] and ray_instance._OWN_RAY == [True]

    calls.clear()
    monkeypatch.setattr(ray, "init", init(2))
    with pytest.raises(ray_instance.RayStartError, match=r"failed to start twice \(RuntimeError: Failed to start the raylet.\); check"):
        ray_instance.init_ray(retry_after_s=0)
    assert calls == ["local", "local"]

    def no_ray(*args, **kwargs):
        raise ray_instance.RayStartError("the local Ray instance failed to start twice (RuntimeError: x); check ...")

    monkeypatch.setattr(study_module, "run_study", no_ray)
    assert main(["--config", str(ROOT / "search_spaces" / "smoke.yaml"), "--set", f"output_dir={tmp_path}", "--verbose"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the local Ray instance failed to start twice (RuntimeError: x); check ..."]  # one line, no traceback


def test_joining_a_cluster_whose_head_answers_late_is_retried_once_then_said_in_one_line(monkeypatch):
    import ray

    from raysweep import ray_instance

    calls = []

    def init(fail_times: int):
        def fake(*args, **kwargs):
            calls.append(kwargs.get("address"))
            if len(calls) <= fail_times:
                raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379\nRpcError: Timed out while waiting for GCS")

        return fake

    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray_instance, "_OWN_RAY", [])
    monkeypatch.setattr(ray, "init", init(1))
    ray_instance.init_ray(retry_after_s=0)
    assert calls == ["10.0.0.5:6379"] * 2 and ray_instance._OWN_RAY == [True]

    calls.clear()
    monkeypatch.setattr(ray, "init", init(2))
    with pytest.raises(ray_instance.RayStartError, match=r"RAY_ADDRESS=10\.0\.0\.5:6379 twice \(Failed to connect .*\); check"):
        ray_instance.init_ray(retry_after_s=0)
    assert calls == ["10.0.0.5:6379"] * 2
