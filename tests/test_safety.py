"""Safety properties checked on the source itself: checkpoints never unpickle code, and nothing
raysweep starts listens beyond 127.0.0.1 (cluster files: tests/test_clusters.py)."""

from __future__ import annotations

import ast

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
