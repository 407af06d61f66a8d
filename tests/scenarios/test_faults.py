"""Faults a study meets on preemptible machines, one test each. Every test compares with the same
study run undisturbed (conftest `reference`): the finished nodes, their results bit for bit, and
MLflow's runs and metric points (each exactly once). Nothing lost, nothing twice, nothing wrong.

Faults are injected the way they happen: a worker process SIGKILLed mid-stage, a real MLflow server
killed mid-run, bytes flipped or cut in checkpoint files on disk, ENOSPC from the checkpoint write,
a NaN loss (README, "Guarantees")."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from raysweep.config import load_study
from raysweep.main import main
from raysweep.study import run_study
from tests.helpers import (
    REDUCED,
    SMOKE,
    duplicate_points,
    fill,
    free_port,
    mlflow_snapshot,
    mount_tmpfs,
    node_results,
    run_spec,
    start_mlflow_server,
    stop_mlflow_server,
    unmount,
    with_reference_data,
)


def _study(out: Path, *extra: str):
    return load_study(SMOKE, [f"output_dir={out}", *REDUCED, *extra])


def _same_results(got: dict, want: dict, keys=None) -> None:
    for key in want if keys is None else keys:
        assert got[key]["losses"] == want[key]["losses"], key  # bit for bit
        assert got[key]["steps"] == want[key]["steps"], key


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_worker_killed_mid_stage_resumes_from_its_checkpoint(ray_local, reference, tmp_path, monkeypatch):
    ref_out, _, ref_mlflow = reference
    out = with_reference_data(ref_out, tmp_path / "study", arm_to=tmp_path / "study" / "checkpoints")
    # stage 2's rank-0 worker dies by SIGKILL at step 6 (its last progress checkpoint: step 4), like a preempted VM
    monkeypatch.setenv("RAYSWEEP_INJECT_KILL", "posttrain λ=0.5 lr=0.001 drop=0@6")
    study = _study(out)
    summary = run_study(study)
    assert summary["failures"] == []
    got, want = node_results(out), node_results(ref_out)
    assert set(got) == set(want)
    _same_results(got, want)
    killed = [k for k, r in got.items() if r["resumed_from_step"]]
    assert len(killed) == 1 and got[killed[0]]["resumed_from_step"] == 4  # continued from its checkpoint, not from 0
    # a SIGKILLed worker writes nothing; the queue knew the lease was lost, so the attempt is recorded once, by the slot
    [log] = list((out / "checkpoints").glob("*/*.failures.jsonl"))
    assert log.name == Path(str(out / "checkpoints" / "posttrain" / killed[0]) + ".failures.jsonl").name
    [attempt] = [json.loads(line) for line in log.read_text().splitlines()]
    assert "died" in attempt["error"], attempt
    assert mlflow_snapshot(summary["tracking_uri"], study.name) == ref_mlflow  # steps 5-6 were logged once, not twice


def test_with_no_retries_a_killed_worker_fails_its_item_only_and_the_rerun_resumes_it(ray_local, reference, tmp_path, monkeypatch):
    """`retries: 0` and one warm slot (the 135M rehearsal's setting, bench/rehearsal_135m.py): a
    SIGKILLed worker fails the item it held, and only it. Before 2026-12-07 the slot was not
    restarted (Tune's restarts were capped at `retries`), so every item after it was reported
    "not trained", and the failure read "its worker slot failed: None"."""
    ref_out, _, _ = reference
    out = with_reference_data(ref_out, tmp_path / "study", arm_to=tmp_path / "study" / "checkpoints")
    monkeypatch.setenv("RAYSWEEP_INJECT_KILL", "posttrain λ=0.5 lr=0.001 drop=0@6")
    study = _study(out, "retries=0")
    summary = run_study(study)
    assert summary["trained"] == {"pretrain": 0, "posttrain": 1, "finetune": 1}, summary["failures"]  # the other subtree
    [failure] = summary["failures"]
    assert "lr=0.001" in failure and "died" in failure and "None" not in failure, failure
    monkeypatch.delenv("RAYSWEEP_INJECT_KILL")
    again = run_study(study)
    assert again["failures"] == [] and again["trained"] == {"pretrain": 0, "posttrain": 1, "finetune": 1}
    got, want = node_results(out), node_results(ref_out)
    _same_results(got, want)
    assert [r["resumed_from_step"] for r in got.values() if r["resumed_from_step"]] == [4]


def test_tracking_server_down_for_part_of_the_run(ray_local, reference, tmp_path, capsys):
    """A real MLflow server is SIGKILLed at stage 2's first progress checkpoint, so most of stage 2
    and all of stage 3 train with no tracking; it comes back after the study, and --sync-mlflow
    restores everything."""
    ref_out, _, ref_mlflow = reference
    out = with_reference_data(ref_out, tmp_path / "study", arm_to=tmp_path / "study" / "checkpoints")
    port = free_port()
    server, uri = start_mlflow_server(tmp_path / "server", port)
    study = _study(out, f"tracking_uri={uri}")

    def kill_at_the_first_stage2_checkpoint():
        while not list((out / "checkpoints" / "posttrain").glob("*.resume/state.pt")):
            time.sleep(0.05)
        stop_mlflow_server(server, hard=True)

    killer = threading.Thread(target=kill_at_the_first_stage2_checkpoint, daemon=True)
    killer.start()
    summary = run_study(study)
    killer.join(timeout=60)
    assert server.poll() is not None  # the server really was down for most of stage 2 and 3
    assert summary["failures"] == []  # an outage of the tracking server is not a training failure
    mlflow_lines = capsys.readouterr().out.split("MLflow:", 1)[1]
    assert "MLflow failed during this run" in mlflow_lines and "--sync-mlflow (trains nothing" in mlflow_lines  # said, with the repair
    got, want = node_results(out), node_results(ref_out)
    assert set(got) == set(want)
    _same_results(got, want)
    assert all(
        (out / "checkpoints" / p.parent.parent.name / p.parent.name / "metrics.json").exists()
        for p in (out / "checkpoints").glob("*/*/node.json")
    )  # every metric point is kept with its node

    server, uri = start_mlflow_server(tmp_path / "server", port)  # back, same database
    try:
        argv = [
            "--config",
            str(SMOKE),
            "--set",
            f"output_dir={out}",
            "--set",
            f"tracking_uri={uri}",
            *[a for r in REDUCED for a in ("--set", r)],
        ]
        missing = mlflow_snapshot(uri, study.name)
        assert missing != ref_mlflow  # what the outage cost MLflow (the runs and points of stage 2 and 3)
        assert main([*argv, "--sync-mlflow"]) == 0
        assert mlflow_snapshot(uri, study.name) == ref_mlflow
        assert main([*argv, "--sync-mlflow"]) == 0  # idempotent: a second sync changes nothing
        assert mlflow_snapshot(uri, study.name) == ref_mlflow
    finally:
        stop_mlflow_server(server)
    assert node_results(out) == got  # syncing trained nothing


def test_mlflow_store_deleted_mid_run_is_rebuilt_at_the_end(ray_local, reference, tmp_path, capsys):
    """The SQLite store (with its WAL files) is deleted at stage 2's first progress checkpoint: the
    trials' next calls fail ("no such table"), the driver's pooled connections write into the
    deleted file; the end of the study notices, rebuilds the store and writes every run again."""
    ref_out, _, ref_mlflow = reference
    out = with_reference_data(ref_out, tmp_path / "study", arm_to=tmp_path / "study" / "checkpoints")
    study = _study(out)

    def delete_at_the_first_stage2_checkpoint():
        while not list((out / "checkpoints" / "posttrain").glob("*.resume/state.pt")):
            time.sleep(0.05)
        for f in out.glob("mlflow.db*"):
            f.unlink()

    deleter = threading.Thread(target=delete_at_the_first_stage2_checkpoint, daemon=True)
    deleter.start()
    summary = run_study(study)
    deleter.join(timeout=60)
    assert summary["failures"] == []
    _same_results(node_results(out), node_results(ref_out))
    said = capsys.readouterr().out
    assert "REBUILT: the store lost this study during the run" in said and "was deleted" in said
    assert mlflow_snapshot(summary["tracking_uri"], study.name) == ref_mlflow  # every run and point, once
    assert duplicate_points(summary["tracking_uri"], study.name) == []


def test_corrupt_checkpoint_is_detected_and_retrained_never_loaded(ray_local, reference, tmp_path):
    ref_out, _, ref_mlflow = reference
    out = with_reference_data(ref_out, tmp_path / "study")
    shutil.copytree(ref_out / "checkpoints", out / "checkpoints")
    want = node_results(ref_out)
    posts = sorted(p for p in (out / "checkpoints" / "posttrain").iterdir() if p.is_dir())  # not the held-out slices' scores
    flipped, intact = posts
    # a stage-2 node with one flipped byte (same size: only the checksum can tell), which a missing child needs
    weights = flipped / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    child_of = {
        json.loads((d / "node.json").read_text())["spec"]["init_from"]: d
        for d in (out / "checkpoints" / "finetune").iterdir()
        if d.is_dir()
    }
    shutil.rmtree(child_of[str(flipped).replace(str(out), str(ref_out))])
    # and a stage-3 node cut short (a truncated write)
    cut = child_of[str(intact).replace(str(out), str(ref_out))] / "model.safetensors"
    cut.write_bytes(cut.read_bytes()[:1000])

    study = _study(out)
    _copy_mlflow(ref_out, out, study.content_hash())  # MLflow still shows the results of the nodes now found corrupt
    summary = run_study(study)
    assert summary["failures"] == []
    assert summary["trained"] == {"pretrain": 0, "posttrain": 1, "finetune": 2}  # the corrupt ones and the missing child, no more
    got = node_results(out)
    assert set(got) == set(want)
    _same_results(got, want)
    for stage in ("pretrain", "posttrain", "finetune"):  # the retrained files equal the reference's byte for byte
        for d in (p for p in (ref_out / "checkpoints" / stage).iterdir() if p.is_dir()):
            assert _sha(out / "checkpoints" / stage / d.name / "model.safetensors") == _sha(d / "model.safetensors")
    assert len(list((out / "checkpoints").glob("*/*.corrupt-*"))) == 2  # moved aside for a post-mortem, not deleted
    # the 3 nodes trained again show their new final values one step further: the curves are
    # unchanged (bit-identical), no run was made twice, no (key, step) holds two values; the study
    # run's summary (the same 4 runs, no failure) gains no point
    assert duplicate_points(summary["tracking_uri"], study.name) == []
    got = mlflow_snapshot(summary["tracking_uri"], study.name)
    changed = sorted(name for name in got if got[name] != ref_mlflow[name])
    assert len(changed) == 3 and "smoke" not in changed and set(got) == set(ref_mlflow)
    assert got == _finished_again(ref_mlflow, changed)


def _copy_mlflow(ref_out: Path, out: Path, study_hash: str) -> None:
    """The reference study's SQLite MLflow store, as if this study (its output folder is part of
    its hash) had run there before; its artifacts point at this folder, so the reference's are left alone."""
    import sqlite3

    for f in ref_out.glob("mlflow.db*"):
        shutil.copy2(f, out / f.name)
    with sqlite3.connect(out / "mlflow.db") as con:
        con.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)", (str(ref_out), str(out)))
        con.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (str(ref_out), str(out)))
        con.execute("UPDATE tags SET value = ? WHERE key = 'raysweep.study_hash'", (study_hash,))


def _finished_again(snapshot: dict, names: list[str]) -> dict:
    """`snapshot` after the runs `names` were finished a second time with the same values: each
    final metric (logged at step 0) once more at step 1; the losses on the held-out slices, scored
    again with the same values, are not logged again."""
    out = dict(snapshot)
    for name in names:
        status, outcome, history = snapshot[name]
        again = lambda k, h: h if "/slice_" in k else sorted(h + [(1, v) for step, v in h if step == 0])  # noqa: E731
        out[name] = (status, outcome, {k: again(k, h) for k, h in history.items()})
    return out


def test_a_corrupt_parent_is_never_loaded(tmp_path):
    """Unit: the worker-side check (load_weights) refuses a corrupt node and moves it aside."""
    import torch

    from raysweep.store.nodes import CorruptCheckpoint, load_weights, node_done, save_node

    spec = run_spec(tmp_path / "node", stage="pretrain", label="p", min_lr=1e-4, warmup_steps=1, max_steps=1)
    save_node(spec, {"w": torch.arange(1000.0)}, {"losses": {}}, "tok", points=[["loss", 1.0, 5, 1]])
    assert torch.equal(load_weights(spec.node_dir, "tok")["w"], torch.arange(1000.0))
    path = tmp_path / "node" / "model.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(CorruptCheckpoint, match="SHA-256"):
        load_weights(spec.node_dir, "tok")
    assert node_done(spec.node_dir) is None and len(list(tmp_path.glob("node.corrupt-*"))) == 1  # will be trained again


def test_full_disk_at_checkpoint_write_leaves_nothing_marked_done(tmp_path, monkeypatch):
    """ENOSPC from the checkpoint write: a clear error naming the folder and the free space, and no
    node.json or partial folder (so the node counts as unfinished and is trained again)."""
    import safetensors.torch
    import torch

    from raysweep.store.nodes import node_done, save_node

    def full(*args, **kwargs):
        Path(args[1]).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    spec = run_spec(tmp_path / "ckpt" / "node", stage="pretrain", label="pretrain λ=0", min_lr=1e-4, warmup_steps=1, max_steps=1)
    with pytest.raises(
        OSError, match=r"could not write its checkpoint: the disk is full at .*node \([\d,.]+ MiB free, 0.0 MiB needed\).*checkpoint_dir"
    ) as e:
        save_node(spec, {"w": torch.zeros(3)}, {"losses": {}}, "tok")
    assert e.value.errno == errno.ENOSPC
    assert node_done(spec.node_dir) is None
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == []  # no node, no .partial


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 2 MiB filesystem (tmpfs) for the node store; skipped where mounting is not allowed."""
    where = mount_tmpfs(tmp_path / "disk", "2M")
    if where is None:
        pytest.skip("mounting a small tmpfs needs root with CAP_SYS_ADMIN (the unit test above covers ENOSPC)")
    yield where
    unmount(where)


def test_a_node_bigger_than_the_free_space_says_where_how_much_is_free_and_needed(tiny_disk):
    """safetensors reports a full disk in its own words ("os error 28"): the error names the path,
    the free and the needed bytes, and nothing is left that could pass for a node."""
    import torch

    from raysweep.store.nodes import node_done, save_node
    from raysweep.store.storage import DiskFull

    spec = run_spec(tiny_disk / "node", stage="pretrain", label="pretrain λ=0", min_lr=1e-4, warmup_steps=1, max_steps=1)
    with pytest.raises(
        DiskFull,
        match=r"pretrain λ=0: could not write its checkpoint: the disk is full at .*/disk/node \([\d.]+ MiB free, 4.0 MiB needed\)",
    ) as e:
        save_node(spec, {"w": torch.zeros(1 << 20)}, {"losses": {}}, "tok")
    assert e.value.needed == 4 << 20 and e.value.free <= 2 << 20
    assert node_done(spec.node_dir) is None and list(tiny_disk.iterdir()) == []


def test_a_report_that_does_not_fit_leaves_no_half_written_file(tiny_disk):
    from analysis.report import write_report
    from raysweep.store.storage import DiskFull
    from tests.helpers import example_rows

    fill(tiny_disk)
    with pytest.raises(DiskFull, match=r"writing the report: the disk is full at .*report.html \(0.0 MiB free, [\d.]+ MiB needed\)"):
        write_report(example_rows(), tiny_disk / "report.html")
    assert not [p for p in tiny_disk.iterdir() if p.name.startswith("report")]


def test_a_full_output_dir_ends_the_study_in_one_line_with_its_run_failed(ray_local, reference, tmp_path):
    """The driver's own writes (here the tables, after the report) hit a full disk: the summary says
    where, how much is free and needed, the study's MLflow run is FAILED, and the nodes are kept."""
    from mlflow.tracking import MlflowClient

    ref_out, _, _ = reference
    out = with_reference_data(ref_out, tmp_path / "study")
    tables = mount_tmpfs(out / "tables", "64k")
    if tables is None:
        pytest.skip("mounting a small tmpfs needs root with CAP_SYS_ADMIN")
    try:
        fill(tables)
        study = _study(out, f"checkpoint_dir={ref_out / 'checkpoints'}")  # every node finished: nothing trains
        summary = run_study(study)
    finally:
        unmount(tables)
    assert summary["disk_full"] and f"the disk is full at {tables}" in summary["disk_full"] and "0.0 MiB free" in summary["disk_full"]
    client = MlflowClient(summary["tracking_uri"])
    [run] = client.search_runs([client.get_experiment_by_name(study.name).experiment_id], "tags.`raysweep.stage` = 'study'") or [None]
    assert run is not None and run.info.status == "FAILED"
    assert len(node_results(ref_out)) == 5


def test_disk_full_mid_study_then_freed_loses_nothing(ray_local, reference, tmp_path, tiny_disk):
    """The node store fills up during stage 2 (a real ENOSPC): those runs fail with an error that
    names the folder and the free space, nothing half-written counts as finished; once space is
    freed, the same command trains only what is missing and ends equal to the undisturbed run."""
    import subprocess

    ref_out, _, ref_mlflow = reference
    out = with_reference_data(ref_out, tmp_path / "study", arm_to=tiny_disk)  # the arm (0.6 MB) fits
    study = _study(out, f"checkpoint_dir={tiny_disk}", "retries=0")
    summary = run_study(study)  # stage 2's progress checkpoints (2.2 MB each) do not
    assert len(summary["failures"]) == 2
    assert all(
        "could not write its progress checkpoint" in f and "the disk is full" in f and "point checkpoint_dir elsewhere" in f
        for f in summary["failures"]
    ), summary["failures"]
    assert summary["trained"] == {"pretrain": 0, "posttrain": 0, "finetune": 0}
    assert not list(tiny_disk.glob("*/*.partial")) and not list(tiny_disk.glob("*/*.resume/*.tmp"))  # nothing half-written left
    assert [p.parent.parent.name for p in tiny_disk.glob("*/*/node.json")] == ["pretrain"]

    subprocess.run(["mount", "-o", "remount,size=64M", str(tiny_disk)], check=True)  # space freed
    again = run_study(study)
    assert again["failures"] == []
    assert again["trained"] == {"pretrain": 0, "posttrain": 2, "finetune": 2}
    got = {p.parent.name: json.loads(p.read_text())["result"] for p in tiny_disk.glob("*/*/node.json")}
    want = node_results(ref_out)
    assert set(got) == set(want)
    _same_results(got, want)
    snap = mlflow_snapshot(again["tracking_uri"], study.name)
    assert snap[study.name][0] == "FINISHED"  # the study run's history also holds the first run's failure count
    assert {k: v for k, v in snap.items() if k != study.name} == {k: v for k, v in ref_mlflow.items() if k != study.name}


def test_unwritable_storage_fails_before_any_compute(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rc = main(["--config", str(SMOKE), "--set", f"output_dir={tmp_path / 'out'}", "--set", f"checkpoint_dir={blocker / 'nodes'}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "checkpoint_dir: cannot write to" in err and "--set checkpoint_dir=" in err
    assert not (tmp_path / "out" / "cache").exists()  # no data was prepared


def test_non_finite_loss_is_recorded_as_diverged_not_retried(ray_local, reference, tmp_path, monkeypatch):
    """A NaN loss in stage 2: that run is recorded as diverged (its child, with nothing to start
    from, as blocked), never retried or retrained; everything else equals the reference."""
    ref_out, _, ref_mlflow = reference
    out = with_reference_data(ref_out, tmp_path / "study", arm_to=tmp_path / "study" / "checkpoints")
    monkeypatch.setenv("RAYSWEEP_INJECT_NAN", "posttrain λ=0.5 lr=0.003 drop=0@7")
    study = _study(out)
    summary = run_study(study)
    assert summary["failures"] == []  # an outcome of the config, not a failure of the tool
    assert len(summary["diverged"]) == 1 and "posttrain/mix=0.5/lr=0.003" in summary["diverged"][0]
    assert "step 7" in summary["diverged"][0] and "1 runs below it not trained" in summary["diverged"][0]
    got, want = node_results(out), node_results(ref_out)
    kept = set(want) - set(got)
    assert len(got) == 3 and len(kept) == 2  # the arm and the other subtree; not the diverged node, not its child
    _same_results(got, want, got)
    [record] = list((out / "checkpoints" / "posttrain").glob("*.diverged.json"))
    assert json.loads(record.read_text())["step"] == 7
    assert list((out / "checkpoints").glob("*/*.failures.jsonl")) == []  # not retried
    assert [r["name"] for r in summary["rows"]] == ["finetune/mix=0.5/lr=0.001/dropout=0/ft_lr=0.001"]

    snap = mlflow_snapshot(summary["tracking_uri"], study.name)
    post, child = "posttrain/mix=0.5/lr=0.003/dropout=0", "finetune/mix=0.5/lr=0.003/dropout=0/ft_lr=0.001"
    assert snap[post][:2] == ("FAILED", "diverged") and snap[child][:2] == ("FAILED", "blocked")
    # its step metrics up to the divergence are kept, equal to the reference's over those steps
    for key, points in snap[post][2].items():
        if key in ref_mlflow[post][2] and not key.startswith("final"):
            assert points == [p for p in ref_mlflow[post][2][key] if p[0] <= 7], key
    for name in set(ref_mlflow) - {post, child, study.name}:
        assert snap[name] == ref_mlflow[name], name

    monkeypatch.delenv("RAYSWEEP_INJECT_NAN")
    again = run_study(study)  # resumed: the diverged node is settled, nothing is trained
    assert again["trained"] == {"pretrain": 0, "posttrain": 0, "finetune": 0}
    assert again["diverged"] == summary["diverged"]


# Run as `python -c` so that nothing of the test process (its Ray instance) stands in: whatever would
# start Ray, read a corpus or tokenize raises instead.
_FORBIDDING = """
import sys
import ray
import raysweep.data.corpus, raysweep.data.prepare, raysweep.study
def refuse(what):
    def call(*args, **kwargs):
        raise AssertionError(f"--sync-mlflow {what}")
    return call
ray.init = refuse("started Ray")
raysweep.study.init_ray = refuse("started Ray")
raysweep.data.corpus.run_tasks = refuse("tokenized a shard")
raysweep.data.prepare.training_texts = refuse("read a corpus to train a tokenizer")
from raysweep.main import main
sys.exit(main(sys.argv[1:]))
"""


def _params(uri: str, experiment: str) -> dict[str, dict]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return {r.info.run_name: r.data.params for r in runs}


def test_sync_mlflow_starts_no_ray_and_tokenizes_nothing(reference, tmp_path):
    """--sync-mlflow into an empty store rebuilds the reference's MLflow (runs, params, every metric
    point) from the node store and the data cache alone."""
    import subprocess
    import sys

    ref_out, ref_summary, ref_mlflow = reference
    out = with_reference_data(ref_out, tmp_path / "study")
    shutil.copytree(ref_out / "checkpoints", out / "checkpoints")
    uri = f"sqlite:///{tmp_path / 'rebuilt.db'}"
    argv = [
        "--config",
        str(SMOKE),
        "--set",
        f"output_dir={out}",
        "--set",
        f"tracking_uri={uri}",
        *[a for r in REDUCED for a in ("--set", r)],
    ]
    proc = subprocess.run([sys.executable, "-c", _FORBIDDING, *argv, "--sync-mlflow"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    name = load_study(SMOKE, REDUCED).name
    assert mlflow_snapshot(uri, name) == ref_mlflow
    want = _params(ref_summary["tracking_uri"], name)
    got = _params(uri, name)
    assert got.keys() == want.keys() and all(got[r] == want[r] for r in want if r != name)  # the study run's params name its paths
    assert node_results(out) == node_results(ref_out)  # nothing trained


def test_sync_mlflow_without_the_data_cache_says_what_to_do(reference, tmp_path, capsys):
    ref_out, _, _ = reference
    out = tmp_path / "study"
    shutil.copytree(ref_out / "checkpoints", out / "checkpoints")  # the nodes, but no data cache
    argv = ["--config", str(SMOKE), "--set", f"output_dir={out}", *[a for r in REDUCED for a in ("--set", r)]]
    assert main([*argv, "--sync-mlflow"]) == 2
    err = capsys.readouterr()
    said = err.out + err.err
    assert "--sync-mlflow" in said and str(out / "cache") in said and "run the study without --sync-mlflow" in said
