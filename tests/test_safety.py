"""Safety properties checked on the source itself: checkpoints never unpickle code, and nothing
raysweep starts listens beyond 127.0.0.1 (cluster files: tests/test_clusters.py)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

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
from raysweep.study import init_ray
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
ray.shutdown()
"""


def test_the_local_ray_instance_listens_on_loopback_only(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    done = subprocess.run([sys.executable, "-c", _LISTENERS], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    line = next((x for x in done.stdout.splitlines() if x.startswith("LISTENING ")), None)
    assert line is not None, done.stderr[-2000:]
    found = json.loads(line.removeprefix("LISTENING "))
    names = {name for name, _, _ in found}
    assert {"gcs_server", "raylet"} <= names and len(found) >= 6  # Ray's servers were seen, so the listing works
    outside = [f for f in found if f[1] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
    assert outside == []
    assert all(port != 8265 for _, _, port in found)  # no dashboard UI


def test_a_local_ray_start_that_fails_is_retried_once_then_said_in_one_line(monkeypatch, tmp_path, capsys):
    import ray

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
    monkeypatch.setattr(study_module, "_OWN_RAY", [])
    monkeypatch.setattr(ray, "init", init(1))
    study_module.init_ray(retry_after_s=0)  # the second try starts
    assert calls == ["local", "local"] and study_module._OWN_RAY == [True]

    calls.clear()
    monkeypatch.setattr(ray, "init", init(2))
    with pytest.raises(study_module.RayStartError, match=r"failed to start twice \(RuntimeError: Failed to start the raylet.\); check"):
        study_module.init_ray(retry_after_s=0)
    assert calls == ["local", "local"]

    def no_ray(*args, **kwargs):
        raise study_module.RayStartError("the local Ray instance failed to start twice (RuntimeError: x); check ...")

    monkeypatch.setattr(study_module, "run_study", no_ray)
    assert main(["--config", str(ROOT / "search_spaces" / "smoke.yaml"), "--set", f"output_dir={tmp_path}", "--verbose"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the local Ray instance failed to start twice (RuntimeError: x); check ..."]  # one line, no traceback
