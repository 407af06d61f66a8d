"""The runs table, read back from any MLflow store (a server, a copied local store)."""

from __future__ import annotations

STAGE = "raysweep.stage"

# The runs table's columns: one row per fine-tuned checkpoint θ_ft.
COLUMNS = ("name", "method", "mix_fraction", "posttrain_lr", "dropout", "replay", "finetune_lr", "L_im", "L_ft", "L_ret", "L_pre")


def make_row(name: str, method: str, mix_fraction: float, posttrain_lr: float, dropout: float, replay: float, finetune_lr: float,
             immediate_loss: float, losses: dict[str, float]) -> dict:
    """A runs-table row from a stage-3 run's held-out losses ({"ft", "post", "pre"}) and its parent's L_im."""
    return {
        "name": name, "method": method, "mix_fraction": mix_fraction, "posttrain_lr": posttrain_lr,
        "dropout": dropout, "replay": replay, "finetune_lr": finetune_lr, "L_im": immediate_loss,
        "L_ft": losses["ft"], "L_ret": losses["post"], "L_pre": losses["pre"],
    }


def rows_from_mlflow(tracking_uri: str, experiment: str) -> list[dict]:
    """One row per finished stage-3 run, in the same shape as raysweep.tree.collect returns."""
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
        parent = by_id.get(t.get("mlflow.parentRunId"))
        rows.append(make_row(
            r.info.run_name, t["raysweep.method"], float(p["mix_fraction"]), float(p["posttrain_lr"]), float(p["dropout"]),
            float(p.get("replay", 0.0)), float(p["lr"]), parent.data.metrics.get("L_im", float("nan")) if parent else float("nan"),
            {"ft": m["L_ft"], "post": m["L_ret"], "pre": m["L_pre"]},
        ))
    return sorted(rows, key=lambda r: r["name"])
