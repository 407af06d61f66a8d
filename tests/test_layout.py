"""The habits that keep the code readable from its tree (issue 16), checked on every run of the suite:
ruff (format and lint, one line length), import-linter's contracts (layers in data-flow order, a
training loop without Ray, no cycles), small modules and functions, a dry run that imports neither
torch nor Ray, and tests that share helpers only through tests/helpers.py."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("raysweep", "analysis")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_OK = re.compile(r"#\s*long:")  # a function may be longer when a comment on its def line (or the line above) says why


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


def _python_files(*folders: str):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_ruff_lint_and_format_are_clean():
    lint = subprocess.run([_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-3000:]
    fmt = subprocess.run([_tool("ruff"), "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert fmt.returncode == 0, f"run `ruff format .`:\n{fmt.stdout[-3000:]}"


def test_import_contracts_hold():
    """Layers config < data < nodes < train < tracking < sweep < analysis < study < console < main; the training
    loop imports no Ray or MLflow; no cycles (pyproject.toml, [tool.importlinter])."""
    out = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:]


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in _python_files(*PACKAGES) if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, long


def test_no_function_is_over_60_lines_unless_a_comment_says_why():
    offenders = []
    for path in _python_files(*PACKAGES, "bench"):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                said = any(LONG_OK.search(lines[i]) for i in (node.lineno - 2, node.lineno - 1) if i >= 0)
                if length > MAX_FUNCTION_LINES and not said:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not offenders, offenders


def test_dry_run_of_every_study_imports_neither_torch_nor_ray():
    """`python -m raysweep.main --dry-run` stays light (a laptop checks a cluster study in seconds):
    every shipped study file, in one fresh interpreter, then the literal command once."""
    studies = [str(p) for p in sorted((ROOT / "search_spaces").rglob("*.yaml"))]
    code = (
        "import sys\n"
        "from raysweep.main import main\n"
        f"for path in {studies!r}:\n"
        "    assert main(['--config', path, '--dry-run']) == 0, path\n"
        f"assert main(['--config', {studies[0]!r}, '--dry-run', '--set', 'posttrain.search=halving']) == 0\n"
        "heavy = sorted(m for m in ('torch', 'ray', 'transformers', 'mlflow', 'pyarrow') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"
    literal = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "raysweep.main", "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert literal.returncode == 0, literal.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in literal.stderr.splitlines() if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in ("torch", "ray")}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_tests_share_helpers_only_through_tests_helpers():
    """No test imports from another test file (or from conftest): shared code lives in tests/helpers.py
    (and the data tests' hub layouts in tests/data/hub_layouts.py)."""
    offenders = []
    for path in _python_files("tests"):
        for module, names in _imports(path):
            shared = module in ("tests.helpers", "tests.data.hub_layouts") or (module == "tests.data" and names == ["hub_layouts"])
            if module.startswith("tests") and not shared:
                offenders.append(f"{path.relative_to(ROOT)}: from {module} import {', '.join(names)}")
            private = [n for n in names if n.startswith("_") and module.startswith("tests")]
            if private:
                offenders.append(f"{path.relative_to(ROOT)}: a private name {private} from {module}")
    assert not offenders, offenders


@pytest.mark.parametrize("folder", ["raysweep", "analysis", "tests", "bench"])
def test_no_sys_path_edits(folder):
    """The package is installed (`pip install -e .`); nothing reaches it by editing sys.path."""
    here = Path(__file__).resolve()
    edits = [
        str(p.relative_to(ROOT)) for p in _python_files(folder) if p != here and re.search(r"sys\.path\.(insert|append)", p.read_text())
    ]
    assert not edits, edits


def test_tests_mirror_the_package():
    """tests/<package folder>/ exists for each folder of raysweep/ (and analysis/), scenario tests apart."""
    folders = {p.name for p in (ROOT / "raysweep").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= {p.name for p in (ROOT / "tests").iterdir() if p.is_dir()}, folders
    assert (ROOT / "tests" / "analysis").is_dir() and (ROOT / "tests" / "scenarios").is_dir()
