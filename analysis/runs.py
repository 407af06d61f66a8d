"""The runs table, read back from any MLflow store (a server, a copied local store)."""

from __future__ import annotations

from raysweep.spec import finetune_losses, losses_by_role
from raysweep.tags import METHOD, PROBE, SLICES, STAGE

# The runs table's columns: one row per fine-tuned checkpoint θ_ft.
CONFIG = ("mode", "post_tokens", "mix_fraction", "posttrain_lr", "dropout", "replay", "finetune_lr", "seed")
COLUMNS = ("name", "method", *CONFIG, "L_im", "L_ft", "L_ret", "L_pre")
_TYPES = {"mode": str, "post_tokens": int, "seed": int}
_DEFAULTS = {"mode": "sweep", "replay": 0.0, "seed": 0}  # stores written before these existed


def make_row(
    name: str, method: str, config: dict, immediate_loss: float, losses: dict[str, float], slices: list[dict] | None = None
) -> dict:
    """A runs-table row from a stage-3 run's config (CONFIG keys), held-out losses ({"ft", "post", "pre"})
    and its parent's L_im. `slices` ({"immediate_loss", "losses"} per held-out slice): the same
    losses on each slice, as the row's "slices" (a list of {L_im, L_ft, L_ret, L_pre}; analysis.slices)."""
    row = {"name": name, "method": method}
    for key in CONFIG:
        value = config.get(key, _DEFAULTS.get(key))
        row[key] = _TYPES.get(key, float)(value) if value is not None else None
    row.update(L_im=immediate_loss, **finetune_losses(losses))
    if slices:
        row["slices"] = [{"L_im": s["immediate_loss"], **finetune_losses(s["losses"])} for s in slices]
    return row


def rows_from_mlflow(tracking_uri: str, experiment: str) -> list[dict]:
    """One row per finished stage-3 run, in the same shape as raysweep.sweep.tree.collect returns.

    Every study run logged into the experiment counts, so running a study again with another
    `seed` into the same experiment gives the report several seeds (and confidence intervals)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise SystemExit(f"no experiment {experiment!r} in {tracking_uri}; it has: {names}")
    runs = client.search_runs([exp.experiment_id], max_results=50_000)
    by_id = {r.info.run_id: r for r in runs}
    rows = []
    for r in runs:
        m, p, t = r.data.metrics, r.data.params, r.data.tags
        if t.get(STAGE) != "finetune" or r.info.status != "FINISHED" or not {"L_ft", "L_ret", "L_pre"} <= set(m):
            continue
        if PROBE in t:  # halving's probes informed the search; they are no stage-3 run of the study
            continue
        parent = by_id.get(t.get("mlflow.parentRunId"))
        config = {k: p.get(k) for k in CONFIG} | {"finetune_lr": p["lr"]}
        rows.append(
            make_row(
                r.info.run_name,
                t[METHOD],
                {k: v for k, v in config.items() if v is not None},
                parent.data.metrics.get("L_im", float("nan")) if parent else float("nan"),
                losses_by_role(m),
                slices_from_metrics(r, parent),
            )
        )
    return sorted(rows, key=lambda r: (r["name"], r["seed"]))


def slices_from_metrics(run, parent) -> list[dict] | None:
    """A stage-3 run's losses per held-out slice from its metrics (`L_ret/slice_2`, ...) and its
    stage-2 parent's (`L_im/slice_2`), as make_row takes them; None unless both have every slice."""
    if parent is None:
        return None
    k = int(run.data.tags.get(SLICES, 0))
    m, pm = run.data.metrics, parent.data.metrics
    names = ("L_ft", "L_ret", "L_pre")
    if k < 2 or int(parent.data.tags.get(SLICES, 0)) != k:
        return None
    if not all(f"{n}/slice_{i}" in m for n in names for i in range(k)) or not all(f"L_im/slice_{i}" in pm for i in range(k)):
        return None
    return [{"immediate_loss": pm[f"L_im/slice_{i}"], "losses": losses_by_role({n: m[f"{n}/slice_{i}"] for n in names})} for i in range(k)]


def failed_runs_from_mlflow(tracking_uri: str, experiment: str) -> list[str]:
    """Names of the experiment's node runs whose last attempt failed (the study runs themselves excluded)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FAILED'", max_results=50_000)
    return sorted(r.info.run_name for r in runs if r.data.tags.get(STAGE) not in (None, "study"))
