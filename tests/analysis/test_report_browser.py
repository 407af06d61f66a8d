"""The report opens in headless Chromium, renders its plots, and logs no console errors."""

import os
import shutil
import subprocess

import pytest

from analysis.report import write_report
from tests.helpers import example_rows


def _find() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium: used if present, else installed with apt-get (root only), else the test is skipped
    with the reason. RAYSWEEP_NO_BROWSER_INSTALL=1 turns the install off."""
    if _find():
        return _find()
    if os.environ.get("RAYSWEEP_NO_BROWSER_INSTALL") == "1":
        pytest.skip("Chromium is not installed and RAYSWEEP_NO_BROWSER_INSTALL=1 (Debian: apt-get install chromium)")
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("Chromium is not installed and this user cannot apt-get install it (Debian: sudo apt-get install chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
        except subprocess.TimeoutExpired:
            pytest.skip(f"installing Chromium timed out at `{' '.join(cmd)}`")
        if proc.returncode:
            pytest.skip(f"installing Chromium failed at `{' '.join(cmd)}`: {proc.stderr.strip()[-300:]}")
    if not _find():
        pytest.skip("apt-get installed chromium but no chromium binary is on PATH")
    return _find()


def test_report_renders_in_headless_chromium(tmp_path, chromium):
    report = write_report(example_rows(), tmp_path / "report.html")
    flags = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--window-size=1400,1100",
        "--enable-logging=stderr",
        "--v=0",
    ]
    shot = tmp_path / "report.png"
    proc = subprocess.run([*flags, f"--screenshot={shot}", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "error" in line.lower() or "Uncaught" in line], console
    dom = subprocess.run([*flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="main-svg"') >= 4  # plotly.js ran and drew both frontier views, the λ view and the 3D set
