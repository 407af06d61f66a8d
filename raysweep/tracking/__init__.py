"""MLflow tracking: one parent run per study, one nested run per tree node.

Runs are found again by their node key (a tag), never created twice: a resumed study reuses the
runs it already has. The store and experiment are created in the driver before any trial starts,
because several processes initialising a fresh SQLite store at once race on its schema.

MLflow is a view, never the record. Every node keeps its own results *and every metric point it
logged* (with the point's original timestamp) in its checkpoint folder, so an MLflow outage loses
nothing: training goes on, and `python -m raysweep.main --sync-mlflow` (also run at the end of
every study: raysweep.sweep.sync) writes what MLflow is missing. Points are delivered exactly once: a point whose
(key, step) the run already holds is never sent again (a resumed or retried run re-makes the same
points, bit for bit), and a batch is re-sent only with the same timestamps, which MLflow's SQL
stores de-duplicate.

The driver's side, every run's life and every call but metric points, is raysweep.tracking.store
(the Tracker); the workers' side, metric points sent from a background thread, is
raysweep.tracking.points (MLflowPoints, a training-loop callback, raysweep.train.callbacks).
"""
