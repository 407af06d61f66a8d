"""The report opens in headless Chromium, renders its plots, and logs no console errors."""

import shutil
import subprocess

import pytest

from analysis.report import write_report
from tests.test_pareto import _rows

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    report = write_report(_rows(), tmp_path / "report.html")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--window-size=1400,1100",
             "--enable-logging=stderr", "--v=0"]
    shot = tmp_path / "report.png"
    proc = subprocess.run([*flags, f"--screenshot={shot}", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    console = [l for l in proc.stderr.splitlines() if "CONSOLE" in l]
    assert not [l for l in console if "error" in l.lower() or "Uncaught" in l], console
    dom = subprocess.run([*flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="main-svg"') >= 2  # plotly.js ran and drew both views
