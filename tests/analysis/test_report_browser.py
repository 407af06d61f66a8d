"""The report opens in headless Chromium, renders its plots, and logs no console errors."""

import subprocess

from analysis.report import write_report
from tests.helpers import example_rows, headless


def test_report_renders_in_headless_chromium(tmp_path, chromium):
    report = write_report(example_rows(), tmp_path / "report.html")
    flags = [*headless(chromium, tmp_path / "profile"), "--window-size=1400,1100", "--enable-logging=stderr", "--v=0"]
    shot = tmp_path / "report.png"
    proc = subprocess.run([*flags, f"--screenshot={shot}", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "error" in line.lower() or "Uncaught" in line], console
    dom = subprocess.run([*flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="main-svg"') >= 4  # plotly.js ran and drew both frontier views, the λ view and the 3D set
