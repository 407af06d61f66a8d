"""The Ray glue: a worker's SIGTERM-handler traceback goes to the libraries' log, not the terminal."""

from __future__ import annotations

import logging
import time

from raysweep.ray_instance import WorkerNoiseFilter, route_worker_noise

NOISE = [
    "Exception ignored in: <function Worker.main_loop.<locals>.sigterm_handler at 0x7f3a2c1d5e40>",
    "Traceback (most recent call last):",
    '  File "/venv/lib/python3.11/site-packages/ray/_private/worker.py", line 1063, in sigterm_handler',
    "    raise_sys_exit_with_custom_error_message(",
    "SystemExit: 1",
]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _filtered(batches):
    printed, records = [], _Records()
    logger = logging.getLogger("ray")
    logger.addHandler(records)
    try:
        f = WorkerNoiseFilter(lambda data: printed.append(data["lines"]))
        for lines in batches:
            f({"pid": 7, "is_err": True, "lines": lines})
    finally:
        logger.removeHandler(records)
    return printed, records.messages


def test_a_sigterm_traceback_is_logged_not_printed_even_split_over_two_batches():
    printed, logged = _filtered([["[finetune] step 4", *NOISE[:2]], [*NOISE[2:], "after"]])
    assert printed == [["[finetune] step 4"], ["after"]]
    assert len(logged) == 1 and all(line in logged[0] for line in NOISE)


def test_other_tracebacks_and_unended_blocks_are_printed_as_ray_prints_them():
    other = ["Exception ignored in: <function _after_fork at 0x1>", "Traceback (most recent call last):", "ValueError: x"]
    assert _filtered([other]) == ([other], [])
    endless = [NOISE[0]] + [f"  line {i}" for i in range(60)]
    printed, logged = _filtered([endless])
    assert sum(printed, []) == endless and logged == []  # not a traceback of that kind: nothing hidden


def test_the_filter_sits_in_front_of_rays_printer_and_works_on_a_real_worker(ray_local, capfd):
    """A task prints the traceback and a marker to its stderr; the driver shows the marker only."""
    assert route_worker_noise() and route_worker_noise()  # idempotent: one filter, not two

    @ray_local.remote
    def noisy():
        import sys

        print("\n".join(NOISE), file=sys.stderr, flush=True)
        print("marker-after-noise", file=sys.stderr, flush=True)

    ray_local.get(noisy.remote())
    seen = ""
    for _ in range(300):  # Ray's printer thread delivers the worker's lines when it reads them
        seen += capfd.readouterr().err
        if "marker-after-noise" in seen:
            break
        time.sleep(0.1)
    assert "marker-after-noise" in seen
    assert "sigterm_handler" not in seen and "SystemExit" not in seen
