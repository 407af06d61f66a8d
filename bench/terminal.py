"""A benchmark's terminal: a study's output goes to a file, the bench's own lines to the terminal;
and what a study's summary says it trained."""

from __future__ import annotations

import ast
import contextlib
import os
import sys
from pathlib import Path


@contextlib.contextmanager
def output_to(path: Path):
    """The study's output, Ray's and Tune's included (written to the file descriptors), goes to
    `path`; yields a stream to the terminal for the bench's own live lines."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    with path.open("w") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            terminal.close()


def trained_now(text: str) -> dict:
    """The counts of a study's summary line `trained now: {...}` ({} when it has none)."""
    line = next((x for x in text.splitlines() if x.startswith("trained now:")), None)
    return ast.literal_eval(line.removeprefix("trained now: ").split(";")[0]) if line else {}
