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
