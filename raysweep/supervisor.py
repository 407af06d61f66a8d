"""The command line's process: the study runs in a child process in a process group of its own,
and this process passes each stop signal on to it.

    python -m raysweep.main  (this process: its terminal's or its scheduler's process group)
      └─ python -m raysweep.main, RAYSWEEP_SUPERVISED set  (the driver: a process group of its own)
           └─ the local Ray instance: gcs_server, raylet, dashboard, workers (the driver's group)

Why: a driver that starts Ray itself has Ray's head processes in its process group, and the usual
way a cluster job ends — `timeout`, Slurm's `scancel` and preemption, `docker stop`, systemd —
signals the whole group. Ray's GCS and raylet then shut down at the same instant as the driver
tries to stop cleanly, and the driver trained on, died on a broken pipe, or waited 60 s for the
GCS (shared/STACK_NOTES.md, 2026-12-07). Here only this process is in the signalled group: it
passes the signal to the driver alone, which stops as it does after Ctrl-C (raysweep.signals:
no item starts after it, the summary, MLflow closed, exit 128 + the signal's number), and Ray
stops when the driver says so.

The Kubernetes contract: SIGTERM, then SIGKILL after a grace period (30 s by default). A driver
still running `grace_s()` seconds after the first stop signal (RAYSWEEP_STOP_GRACE_S, default 25)
is killed with its process group; its reaper (raysweep.ray_instance) stops the rest of its tree.
A second stop signal is passed on too: the driver then ends at once. If this process is killed
(SIGKILL), the kernel kills the driver with it (the parent-death signal), as before.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

from raysweep.signals import STOP_FILE_ENV

SUPERVISED_ENV = "RAYSWEEP_SUPERVISED"  # set in the driver's environment: it runs the study itself
GRACE_ENV = "RAYSWEEP_STOP_GRACE_S"
DEFAULT_GRACE_S = 25.0  # under Kubernetes' default terminationGracePeriodSeconds (30 s)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def inside() -> bool:
    """Is this process the supervised driver (or a platform where the driver runs alone)?"""
    return bool(os.environ.get(SUPERVISED_ENV)) or sys.platform == "win32"


def grace_s() -> float:
    """Seconds a stopped driver has to end before it is killed (RAYSWEEP_STOP_GRACE_S)."""
    try:
        return max(1.0, float(os.environ.get(GRACE_ENV, DEFAULT_GRACE_S)))
    except ValueError:
        return DEFAULT_GRACE_S


def _own_group_dying_with(parent: int):
    """The driver's first steps, before it runs Python: a process group of its own (so a signal to
    the supervisor's group misses it and Ray's head), and SIGKILL when its parent dies."""

    def setup() -> None:
        os.setpgid(0, 0)
        if sys.platform.startswith("linux"):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the supervisor died before the parent-death signal was armed
            os._exit(1)

    return setup


def _kill_group(pgid: int) -> None:
    """SIGKILL whatever is left in the driver's process group (Ray's processes outliving it)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def supervise(argv: list[str]) -> int:
    """Run `python -m raysweep.main argv` as the driver (see the module docstring); return its exit
    code, 128 + N where it died of signal N."""
    stop_file = os.path.join(tempfile.gettempdir(), f"raysweep-stop-{os.getpid()}")  # raysweep.signals: the workers' gate
    driver = subprocess.Popen(
        [sys.executable, "-m", "raysweep.main", *argv],
        env={**os.environ, SUPERVISED_ENV: str(os.getpid()), STOP_FILE_ENV: stop_file},
        preexec_fn=_own_group_dying_with(os.getpid()),
    )
    stopping: list[float] = []  # when the first stop signal came

    def pass_on(signum, frame) -> None:
        if not stopping:
            stopping.append(time.monotonic())
            try:
                open(stop_file, "w").close()  # first: from now on no worker stores a node or starts a run
            except OSError:
                pass
        try:
            os.kill(driver.pid, signum)
        except ProcessLookupError:
            pass

    for sig in STOP_SIGNALS:
        signal.signal(sig, pass_on)
    while True:
        timeout = None if not stopping else max(0.0, stopping[0] + grace_s() - time.monotonic())
        try:
            rc = driver.wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            print(
                f"error: the study did not stop within {grace_s():.0f} s of the stop signal ({GRACE_ENV}); killed. "
                "Run the same command to resume: finished runs are kept",
                file=sys.stderr,
                flush=True,
            )
            _kill_group(driver.pid)
    _kill_group(driver.pid)  # nothing of the driver's group outlives it
    if os.path.exists(stop_file):
        os.unlink(stop_file)
    return 128 - rc if rc < 0 else rc
