"""Content-addressed reuse across studies: a second study sharing the first one's stage-1 prefix
(same data, model, stage-1 config and seed) and its checkpoint store trains no stage-1 node; a
study that restates its preset's shape trains nothing, and one with a custom shape trains all anew."""

import math

from mlflow.tracking import MlflowClient

from raysweep.config import load_study
from raysweep.spec import all_nodes
from raysweep.store.nodes import node_done
from raysweep.study import run_study
from raysweep.sweep.plan import plan
from tests.helpers import SMOKE, with_reference_data

ONE_BRANCH = ["pretrain.mix_fraction=[0.5]", "finetune.lr=[1e-3]"]


def test_second_study_reuses_the_shared_stage1_node(ray_local, reference, tmp_path):
    store = tmp_path / "store"
    for name in "abc":  # each study has its own output folder; the prepared data is copied, not remade
        with_reference_data(reference[0], tmp_path / name)
    a = load_study(SMOKE, ["name=reuse-a", f"output_dir={tmp_path / 'a'}", f"checkpoint_dir={store}", "posttrain.lr=[1e-3]", *ONE_BRANCH])
    first = run_study(a)
    assert first["failures"] == [] and first["trained"] == {"pretrain": 1, "posttrain": 1, "finetune": 1}
    [arm] = list((store / "pretrain").iterdir())
    stamp = (arm / "model.safetensors").stat().st_mtime_ns

    b = load_study(SMOKE, ["name=reuse-b", f"output_dir={tmp_path / 'b'}", f"checkpoint_dir={store}", "posttrain.lr=[3e-3]", *ONE_BRANCH])
    second = run_study(b)
    assert second["failures"] == []
    assert second["trained"] == {"pretrain": 0, "posttrain": 1, "finetune": 1}  # stage 1 reused, counted
    assert (arm / "model.safetensors").stat().st_mtime_ns == stamp  # the shared checkpoint was not rewritten
    from raysweep.data.prepare import prepare

    arms, subtrees = plan(b, prepare(b))
    assert [x.spec.node_dir for x in arms] == [str(arm)] and node_done(arm)
    # the reused arm is still a finished, measured run in the second study's own MLflow experiment
    client = MlflowClient(second["tracking_uri"])
    exp = client.get_experiment_by_name("reuse-b")
    [pre] = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags["raysweep.stage"] == "pretrain"]
    assert pre.info.status == "FINISHED" and "final_pre" in pre.data.metrics

    # A third study made only of nodes the first one finished trains nothing, and its own MLflow
    # experiment still lists every run with its losses (the report rebuilt from it is complete).
    from analysis.runs import rows_from_mlflow

    # Its model fields restate the preset's shape (debug: MLP 128): the same model, so the same keys.
    restated = ["model.mlp_hidden=128", "model.n_layers=2"]
    c = load_study(
        SMOKE, ["name=reuse-c", f"output_dir={tmp_path / 'c'}", f"checkpoint_dir={store}", "posttrain.lr=[1e-3]", *ONE_BRANCH, *restated]
    )
    third = run_study(c)
    assert third["trained"] == {"pretrain": 0, "posttrain": 0, "finetune": 0} and len(third["rows"]) == 1
    assert rows_from_mlflow(third["tracking_uri"], "reuse-c") == third["rows"] == first["rows"]

    # A custom shape over the preset (issue 19: "hidden 128, 4 layers, MLP 512") is another model:
    # every node key differs from the first study's, so all three train, into the same store.
    with_reference_data(reference[0], tmp_path / "d")
    shape = ["model.n_layers=3", "model.mlp_hidden=192", "model.n_kv_heads=2"]
    d = load_study(
        SMOKE, ["name=reuse-d", f"output_dir={tmp_path / 'd'}", f"checkpoint_dir={store}", "posttrain.lr=[1e-3]", *ONE_BRANCH, *shape]
    )
    fourth = run_study(d)
    assert fourth["failures"] == [] and fourth["trained"] == {"pretrain": 1, "posttrain": 1, "finetune": 1}
    keys_a = {m.spec.node_key for m in all_nodes(*plan(a, prepare(a)))}
    keys_d = {m.spec.node_key for m in all_nodes(*plan(d, prepare(d)))}
    assert len(keys_d) == 3 and keys_a.isdisjoint(keys_d)
    [row] = fourth["rows"]
    assert all(math.isfinite(row[k]) for k in ("L_ret", "L_ft", "L_pre")) and row["L_ft"] != first["rows"][0]["L_ft"]


def test_two_drivers_of_one_study_at_once_train_each_node_once_and_each_counts_its_own(ray_local, reference, mlflow_server, tmp_path):
    """Two drivers (each its own local Ray, as a job submitted twice) start the same study, on one
    output_dir and one MLflow server, at the same moment: each item is trained by whichever takes
    its lease first (raysweep.store.leases), the other waits and then finds those nodes finished, so the
    two together train every node exactly once; each summary counts what its own process trained
    and what the other finished (both once counted all five: issue 45), and the results equal the
    undisturbed run's."""
    import re
    import subprocess

    from tests.helpers import ROOT, node_results, smoke_cli, trained_now

    ref_out = reference[0]
    out = with_reference_data(ref_out, tmp_path / "shared")
    store = out / "checkpoints"
    # whoever takes the arm's lease keeps it 8 s longer, so the other (started at the same moment)
    # surely finds it held, whatever their start-ups cost
    cmd, env = smoke_cli(out, "name=lease", f"tracking_uri={mlflow_server}")
    env["RAYSWEEP_INJECT_DELAY"] = "pretrain@8"
    procs, logs = {}, {}
    for name in ("first", "second"):
        logs[name] = (tmp_path / f"{name}.log").open("w")
        procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=logs[name], stderr=subprocess.STDOUT, start_new_session=True)
    texts, counts, elsewhere = {}, {}, {}
    for name, proc in procs.items():
        assert proc.wait(timeout=600) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
        logs[name].close()
        texts[name] = text = (tmp_path / f"{name}.log").read_text()
        counts[name] = trained_now(text)
        found = re.search(r"(\d+) finished meanwhile by another driver sharing the node store", text)
        elsewhere[name] = int(found.group(1)) if found else 0
    total = {stage: counts["first"][stage] + counts["second"][stage] for stage in counts["first"]}
    assert total == {"pretrain": 1, "posttrain": 2, "finetune": 2}, counts  # every node once, by one of them
    assert all(sum(counts[n].values()) + elsewhere[n] == 5 for n in procs), (counts, elsewhere)  # each accounts for all 5
    assert any("waiting: another trainer holds it" in t for t in texts.values())
    assert not list(store.glob("*/*.lease"))  # every lease released
    got, want = node_results(store.parent), node_results(ref_out)
    assert set(got) == set(want) and all(got[k]["losses"] == want[k]["losses"] for k in want)
