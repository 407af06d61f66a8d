"""The signals that stop a study cleanly, and which one did.

Ctrl-C (SIGINT), SIGTERM (`timeout`, `ray job stop`, Kubernetes, Slurm) and SIGHUP (a closed
terminal) each raise KeyboardInterrupt in the main thread once, so the study closes what it was
training and reports it (raysweep.study); a second one ends the process at once. The first
signal's name is kept here because Ray Tune re-raises a bare KeyboardInterrupt of its own, which
loses the name the handler gave it (a SIGTERM was reported as SIGINT, exit 130 for 143).
"""

from __future__ import annotations

import os
import signal
import time

STOP_SIGNALS = tuple(name for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
_RECEIVED: list[str] = []


def stop_on_signals() -> None:
    """Install the handler for every stop signal. Tune's own SIGINT handler is turned off: it
    would stop the trials in its own way and return as if the tree had ended."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"

    def stop(signum, frame):
        for name in STOP_SIGNALS:
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        _RECEIVED.append(signal.Signals(signum).name)
        raise KeyboardInterrupt(_RECEIVED[0])

    for name in STOP_SIGNALS:
        signal.signal(getattr(signal, name), stop)


def received(stop: BaseException | None = None) -> str:
    """The name of the signal that stopped the study: the first the handler saw, else the one the
    interrupt carries, else SIGINT (a plain KeyboardInterrupt: Ctrl-C without the CLI's handler)."""
    if _RECEIVED:
        return _RECEIVED[0]
    return stop.args[0] if stop is not None and stop.args else "SIGINT"


def keeping_handlers(start):
    """Run `start()` and put back the Python stop-signal handlers it replaced: Ray's core worker
    (ray.init) installs its own C++ SIGTERM handler, which printed a stack trace and aborted the
    driver (exit 134, no summary, MLflow runs left RUNNING) instead of stopping it cleanly."""
    saved = {name: signal.getsignal(getattr(signal, name)) for name in STOP_SIGNALS}
    try:
        return start()
    finally:
        for name, handler in saved.items():
            if callable(handler):  # one a Python caller set (the CLI's); C-level defaults stay Ray's
                signal.signal(getattr(signal, name), handler)


# The stop file: made by the command line's supervisor (raysweep.supervisor) the instant a stop
# signal reaches it, before it passes the signal on, and named in every process of the study's
# local Ray instance. A worker that finds it stores no node and starts no run: what was in flight
# when the signal came is left to its progress checkpoint, so "finished" means finished before the
# signal. (The driver needs a few tenths of a second to stop its slots; nodes were written in that
# window.) Workers on other machines of a cluster do not see the file; their driver's stop is the
# signal's only effect there, as before.
STOP_FILE_ENV = "RAYSWEEP_STOP_FILE"


def stop_file_env() -> dict[str, str]:
    """The stop file's variable, for the environment of the study's Ray workers (empty: none)."""
    path = os.environ.get(STOP_FILE_ENV)
    return {STOP_FILE_ENV: path} if path else {}


def stop_requested() -> bool:
    """Has a stop signal reached the study (its stop file exists)?"""
    path = os.environ.get(STOP_FILE_ENV)
    return bool(path) and os.path.exists(path)


def hold_if_stopping(longest_s: float = 300.0) -> None:
    """Where a worker is about to store a node or start a run: once the study is stopping, wait for
    the driver to stop this process instead (it does within seconds; after `longest_s` this process
    ends itself). Nothing is written, raised or closed here: the run stays as its last progress
    checkpoint left it, and the driver marks it KILLED."""
    if not stop_requested():
        return
    time.sleep(longest_s)
    os._exit(1)
