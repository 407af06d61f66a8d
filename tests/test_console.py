"""The terminal shows raysweep's lines; Ray's, Ray Data's, Tune's and MLflow's own messages go to
`<output_dir>/logs/libraries.log` (raysweep.console). Checked in a fresh interpreter: it re-routes
process-wide loggers. The whole study's output is counted in scenarios/test_resume.py."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT, foreign_lines

CODE = """
import logging, os, sys, warnings
from pathlib import Path
from raysweep.console import quiet_libraries
path = quiet_libraries(Path(sys.argv[1]))
for name in ("ray", "ray.data", "ray.tune", "ray.train._internal", "mlflow.store.db.utils", "alembic.runtime.migration"):
    logging.getLogger(name).warning("notice from %s", name)
warnings.warn("a library's deprecation", UserWarning)
print("[tree] raysweep's own line")
print("TUNE_NEW_OUTPUT", os.environ["RAY_AIR_NEW_OUTPUT"])
"""


def test_library_messages_go_to_the_log_file_not_the_terminal(tmp_path):
    out = subprocess.run([sys.executable, "-c", CODE, str(tmp_path / "logs")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr == ""  # nothing from below raysweep reached the terminal
    assert out.stdout.splitlines() == ["[tree] raysweep's own line", "TUNE_NEW_OUTPUT 0"]
    logged = (tmp_path / "logs" / "libraries.log").read_text()
    for name in ("ray", "ray.data", "ray.tune", "ray.train._internal", "mlflow.store.db.utils", "alembic.runtime.migration"):
        assert f"notice from {name}" in logged
    assert "a library's deprecation" in logged


def test_foreign_lines_tells_raysweep_lines_from_the_libraries():
    text = "\n".join(
        [
            "study 'smoke' (hash 0fec76bd02fa2e31), model debug ≈0.11M params, seq 64",
            "  level 1  pretrain      1 runs",
            "[data] all streams ready in 8.9s",
            "\x1b[36m(slot_trial pid=30894)\x1b[0m [pretrain λ=0.5] step 20/76 | 10k/39k tok",
            "raysweep study 'smoke': 2 fine-tuned checkpoints in 59s",
            "",
            "2026-12-01 23:53:59,141\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled",
            "\x1b[36m(TrainController pid=13686)\x1b[0m [2026-12-01 23:21:54,459 E 13686 13747] core_worker.cc:2465: Actor",
            "\x1b[33m(raylet)\x1b[0m WARNING: 8 PYTHON worker processes have been started",
            "╭──────────────╮",
        ]
    )
    assert len(foreign_lines(text)) == 4
