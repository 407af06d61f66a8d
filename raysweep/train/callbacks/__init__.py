"""The training loop's callbacks, one file each (raysweep.train.callbacks.base says how the loop
calls them): progress lines (progress.py), early stopping (early_stopping.py), progress
checkpoints (checkpoints.py), fault drills (faults.py), what each data-parallel rank saw
(audit.py). The MLflow sink is raysweep.tracking.points.MLflowPoints, handed in by the study's
workers, so this package imports no MLflow."""

from raysweep.train.callbacks.base import Callback, Point, each

__all__ = ["Callback", "Point", "each"]
