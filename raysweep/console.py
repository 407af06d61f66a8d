"""What the person running a study sees: raysweep's own lines on the terminal (progress, the
summary, warnings that say what to do), other libraries' messages in a log file under
`output_dir` that the end of the run names. `--verbose` leaves them on the terminal.

Ray, Ray Data, Ray Tune and MLflow each print their own start-up notices, hints and warnings
(Tune's configuration box and a TensorBoard hint for a folder raysweep never writes, MLflow's
database migrations, Ray's token notice); a user cannot tell which lines matter, so they go to
`<output_dir>/logs/libraries.log`, where an error report can still quote them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

# the loggers that print to the terminal by themselves (their own handlers, not the root's)
LIBRARY_LOGGERS = ("ray", "ray.data", "ray.tune", "ray.train", "mlflow", "alembic", "py.warnings", "urllib3", "optuna")


class _LazyFile(logging.FileHandler):
    """A log file made at its first record: a study refused before compute writes nothing."""

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def quiet_libraries(folder: Path) -> Path:
    """Send the library loggers' records to `folder`/libraries.log instead of the terminal, and
    turn off Tune's console report (raysweep prints its own progress). Returns the log's path
    (the file exists once a library has said something)."""
    # Ray Data and MLflow configure their loggers when imported: import them first, then re-route
    import mlflow  # noqa: F401
    import ray.data  # noqa: F401

    path = folder / "libraries.log"
    handler = _LazyFile(path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
    logging.captureWarnings(True)  # Python warnings raised in the driver go to py.warnings, so to the file
    # Tune's newer console output prints a configuration box and a TensorBoard hint at every
    # Tuner.fit whatever the verbosity; the classic reporter at verbose=0 prints nothing
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    return path
