"""Every third-party module the code imports is declared in pyproject.toml.

A fresh machine has only what pyproject.toml declares; a module left installed on a developer's
machine (or pulled in by another package's extras today, not tomorrow) would hide the gap until a
newcomer's first run. The test reads the imports from the source (no import is executed), maps each
top-level module to the distributions that provide it, and fails on any module that no declared
distribution provides.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("raysweep", "analysis", "tests", "bench")
# Import names whose distribution has another name and that packages_distributions() cannot see
# when the distribution is not installed here.
KNOWN = {"yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn", "attr": "attrs"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(requirements) -> set[str]:
    return {_normal(re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0]) for r in requirements}


def declared(extras: bool = True) -> set[str]:
    """Distribution names in [project] dependencies (and, with `extras`, every optional extra)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the installed metadata is pyproject.toml's, as installed
        reqs = [r for r in metadata.requires("raysweep") or [] if extras or "extra ==" not in r]
    else:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        reqs = [
            *project.get("dependencies", []),
            *(r for extra in project.get("optional-dependencies", {}).values() for r in extra if extras),
        ]
    return _names(reqs)


def local_modules() -> set[str]:
    """Names that resolve to this repository: its packages and the modules beside the scanned files."""
    names = {p.name for p in ROOT.iterdir() if p.is_dir()} | {p.stem for p in ROOT.glob("*.py")}
    for folder in SCANNED:
        names |= {p.stem for p in (ROOT / folder).rglob("*.py")}
    return names


def third_party_imports() -> dict[str, str]:
    """Top-level module -> the first file importing it, for every absolute import in SCANNED."""
    local, found = local_modules(), {}
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in local and top != "__future__":
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_module_is_declared():
    providers = metadata.packages_distributions()
    wanted = declared()
    missing = []
    for module, where in sorted(third_party_imports().items()):
        owners = {_normal(d) for d in providers.get(module, [KNOWN.get(module, module)])}
        if not owners & wanted:
            missing.append(f"{module} (imported in {where}; distribution {', '.join(sorted(owners))})")
    assert not missing, "imported but not declared in pyproject.toml:\n  " + "\n  ".join(missing)


def test_the_scan_sees_what_it_must():
    """The scan is not vacuous: it finds the imports that made this test necessary."""
    found = third_party_imports()
    for module in ("torch", "ray", "peft", "psutil", "jsonschema", "mlflow"):
        assert module in found, module
    assert "raysweep" not in found and "json" not in found


def test_ci_runs_the_readmes_test_command_in_a_fresh_venv():
    """`.ci/run` finds the README's test command (the one a newcomer types) and runs it in a venv
    it makes in a temporary folder, never in whatever environment the machine already has."""
    import subprocess

    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(pip install torch==2\.13\.0 && pip install -e .*)\n```", readme)
    assert commands == [
        "pip install torch==2.13.0 && pip install -e . && python -m raysweep.main",
        "pip install torch==2.13.0 && pip install -e '.[test]' && python -m pytest",
    ]
    ci = (ROOT / ".ci" / "run").read_text()
    finder = next(line for line in ci.splitlines() if line.startswith("cmd=$(grep"))
    found = subprocess.run(["bash", "-c", finder.removeprefix("cmd=$(").split(")", 1)[0]], cwd=ROOT, capture_output=True, text=True)
    assert found.stdout.strip() == commands[1]
    assert "python3 -m venv" in ci and "mktemp -d" in ci and "rm -rf" in ci and 'eval "$cmd"' in ci


def test_the_kuberay_job_installs_every_runtime_dependency():
    """clusters/kuberay/rayjob.yaml lists its pip packages by hand (its image brings Ray, and with
    it numpy and pyarrow): the list must not fall behind pyproject.toml."""
    import yaml

    job = yaml.safe_load((ROOT / "clusters" / "kuberay" / "rayjob.yaml").read_text())
    pip = _names(yaml.safe_load(job["spec"]["runtimeEnvYAML"])["pip"])
    runtime = declared(extras=False)
    assert runtime - {"ray", "numpy", "pyarrow"} <= pip, sorted(runtime - pip)
