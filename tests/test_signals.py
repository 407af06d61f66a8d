"""raysweep.signals' pieces on their own (the whole study under signals: tests/scenarios/
test_signals.py): a stop signal becomes one KeyboardInterrupt carrying its name, a second one ends
the process; handlers a library replaces are put back; the stop file holds a worker."""

from __future__ import annotations

import signal
import subprocess
import sys

from raysweep import signals
from tests.helpers import ROOT


def _python(code: str) -> subprocess.CompletedProcess:
    # in a process of its own: the handlers would otherwise be pytest's worker's
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_stop_signal_is_one_keyboard_interrupt_with_its_name_and_a_second_ends_the_process():
    code = """
import os, signal, time
from raysweep import signals
signals.stop_on_signals()
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
except KeyboardInterrupt as stop:
    print(stop.args[0], signals.received(), signals.received(KeyboardInterrupt("SIGHUP")), flush=True)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(5)
print("survived", flush=True)
"""
    out = _python(code)
    assert out.stdout.split() == ["SIGTERM", "SIGTERM", "SIGTERM"]  # the first signal's name wins
    assert out.returncode == -signal.SIGTERM  # the second: the default action, at once


def test_without_a_handler_the_name_comes_from_the_interrupt_or_is_sigint():
    assert signals.received(KeyboardInterrupt("SIGHUP")) in ("SIGHUP", *signals._RECEIVED)
    assert signals.received(None) in ("SIGINT", *signals._RECEIVED)


def test_handlers_a_library_replaces_are_put_back():
    code = """
import signal
from raysweep import signals
mine = lambda signum, frame: None
signal.signal(signal.SIGTERM, mine)
def start():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as ray.init's core worker does, in C
    return 7
print(signals.keeping_handlers(start), signal.getsignal(signal.SIGTERM) is mine)
"""
    assert _python(code).stdout.split() == ["7", "True"]


def test_the_stop_file_is_named_to_workers_and_holds_them(tmp_path, monkeypatch):
    stop = tmp_path / "stop"
    monkeypatch.setenv(signals.STOP_FILE_ENV, str(stop))
    assert signals.stop_file_env() == {signals.STOP_FILE_ENV: str(stop)} and not signals.stop_requested()
    signals.hold_if_stopping(longest_s=0)  # no stop yet: returns at once
    stop.touch()
    assert signals.stop_requested()
    code = "from raysweep import signals\nsignals.hold_if_stopping(longest_s=0)\nprint('went on')"
    held = _python(code)
    assert held.returncode == 1 and "went on" not in held.stdout  # it ends itself rather than go on
    monkeypatch.delenv(signals.STOP_FILE_ENV)
    assert signals.stop_file_env() == {} and not signals.stop_requested()
