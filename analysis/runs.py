"""The runs table, read back from any MLflow store (a server, a copied local store)."""

from __future__ import annotations

STAGE = "raysweep.stage"


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
        rows.append({
            "name": r.info.run_name,
            "method": t["raysweep.method"],
            "mix_fraction": float(p["mix_fraction"]),
            "posttrain_lr": float(p["posttrain_lr"]),
            "dropout": float(p["dropout"]),
            "finetune_lr": float(p["lr"]),
            "L_im": parent.data.metrics.get("L_im", float("nan")) if parent else float("nan"),
            "L_ft": m["L_ft"],
            "L_ret": m["L_ret"],
            "L_pre": m["L_pre"],
        })
    return sorted(rows, key=lambda r: r["name"])
