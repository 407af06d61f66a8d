"""The driver is SIGKILLed mid-study (its local Ray instance dies with it); the same command again
resumes: finished nodes are not retrained, the interrupted run continues from its last progress
checkpoint, the results equal an uninterrupted run's bit for bit, and MLflow holds exactly what an
uninterrupted run's holds: every run once, every metric point once."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from raysweep.config import load_study
from tests.helpers import (
    REDUCED,
    ROOT,
    SMOKE,
    foreign_lines,
    kill_tree,
    mlflow_snapshot,
    node_results,
    smoke_cli,
    trained_now,
    with_reference_data,
)


def _start_until_a_stage2_checkpoint(cmd: list[str], env: dict, out, log) -> subprocess.Popen:
    """Start the CLI in its own session (as a terminal does), printing into `log`; return it once
    stage 2 has written its first progress checkpoint."""
    from pathlib import Path

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 400
    while not list((out / "checkpoints").glob("posttrain/*.resume/state.pt")):
        assert proc.poll() is None, Path(log.name).read_text()[-3000:]
        assert time.time() < deadline, "no stage-2 progress checkpoint appeared"
        time.sleep(0.1)
    return proc


def test_sigkilled_driver_resumes_exactly(ray_local, reference, tmp_path):
    ref_out, _, ref_mlflow = reference
    want = node_results(ref_out)  # 1 arm, 2 stage-2 runs, 2 stage-3 runs

    out = with_reference_data(ref_out, tmp_path / "killed")  # the data is made; the subprocesses train and resume
    cmd, env = smoke_cli(out)
    with (tmp_path / "first.log").open("w") as log:
        proc = _start_until_a_stage2_checkpoint(cmd, env, out, log)
        # the driver's machine dies mid stage 2: the driver and its local Ray instance (every process
        # below it: raylet, GCS, the Train workers), all at once. Killing the driver's session alone
        # leaves the workers ~1 s to notice, enough for this tiny stage-2 run to finish first.
        kill_tree(proc)
    time.sleep(2)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in (out / "checkpoints").glob("*/*/node.json")}
    interrupted = [p.name.removesuffix(".resume") for p in (out / "checkpoints").glob("posttrain/*.resume")]
    assert interrupted and not set(interrupted) & set(finished)

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    # what the person running it sees: raysweep's lines, at most 5 from below it (issue 19); the
    # libraries' own messages are in the log file the summary names (MLflow's migrations among them)
    foreign = foreign_lines(again.stdout + again.stderr)
    assert len(foreign) <= 5, "\n".join(foreign)
    # workers' lines as the driver's own (issue 46, item 7): no Ray prefix, no colour codes in a file
    assert "pid=" not in again.stdout + again.stderr and "\x1b[" not in again.stdout + again.stderr
    assert any(line.startswith("[posttrain ") for line in again.stdout.splitlines())
    libraries = out / "logs" / "libraries.log"
    assert f"libraries' own messages: {libraries}" in again.stdout
    assert "Creating initial MLflow database tables" in libraries.read_text()  # written by the first, killed run
    # Ray's own logs (under /tmp/ray) are named in the last line and linked beside the study's
    assert again.stdout.rstrip().splitlines()[-1].startswith("Ray's own logs: /")
    assert (out / "logs" / "ray-session" / "logs").is_dir() and any((out / "logs" / "ray-session" / "logs").glob("raylet*"))
    counts = trained_now(again.stdout)
    assert counts["pretrain"] == 0  # stage 2 had started, so the arm was finished before the kill
    assert sum(counts.values()) == 5 - len(finished)  # exactly the nodes that had not finished
    for key, stamp in finished.items():  # no finished node was retrained
        assert next((out / "checkpoints").glob(f"*/{key}/node.json")).stat().st_mtime_ns == stamp

    got = node_results(out)
    assert set(got) == set(want)
    for key in want:  # bit-identical losses: the resumed run continued exactly where it stopped
        assert got[key]["losses"] == want[key]["losses"], key
        assert got[key]["steps"] == want[key]["steps"]
    assert any(got[k]["resumed_from_step"] > 0 for k in interrupted)
    assert not list((out / "checkpoints").glob("*/*.resume"))  # progress files are gone once nodes finish

    study = load_study(SMOKE, [f"output_dir={out}", *REDUCED])
    # one MLflow run per node, no point twice: the stretch between the last checkpoint and the kill
    # was logged before the kill and is not logged again
    assert mlflow_snapshot(f"sqlite:///{out / 'mlflow.db'}", study.name) == ref_mlflow


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_reports_interrupted_and_the_rerun_trains_only_what_is_missing(ray_local, reference, tmp_path, name):
    """Ctrl-C (SIGINT to the driver's whole process group, as a terminal sends it) or SIGTERM (to the
    driver alone, as `timeout`, `ray job stop`, Kubernetes and Slurm send it) mid stage 2: exit 130 or
    143, the summary says interrupted and how to resume, nothing is called FAILED, MLflow marks the
    unfinished runs KILLED, no lease is left; the same study again trains exactly the missing nodes."""
    from mlflow.tracking import MlflowClient

    from raysweep.study import run_study

    ref_out, _, ref_mlflow = reference
    out = with_reference_data(ref_out, tmp_path / "stopped")
    cmd, env = smoke_cli(out)
    with (tmp_path / "first.log").open("w") as log:
        proc = _start_until_a_stage2_checkpoint(cmd, env, out, log)
        if name == "SIGINT":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=120)
    printed = (tmp_path / "first.log").read_text()
    assert rc == 128 + signal.Signals[name], printed[-3000:]
    assert f"interrupted by {name}" in printed and "run the same command to resume" in printed
    assert "FAILED" not in printed and "Traceback" not in printed and "SIGTERM received" not in printed
    assert not list((out / "checkpoints").glob("*/*/.lock"))
    assert not list((out / "checkpoints").glob("*/*.lease"))
    finished = {p.parent.name for p in (out / "checkpoints").glob("*/*/node.json")}
    assert 1 <= len(finished) < 5  # the arm, at least, and not the whole tree

    uri = f"sqlite:///{out / 'mlflow.db'}"
    client = MlflowClient(uri)
    study = load_study(SMOKE, [f"output_dir={out}", *REDUCED])
    runs = client.search_runs([client.get_experiment_by_name(study.name).experiment_id])
    status = {r.data.tags.get("raysweep.node_key", "study"): r.info.status for r in runs}
    assert not {"RUNNING", "SCHEDULED"} & set(status.values()) and status["study"] == "KILLED"
    assert {k for k, s in status.items() if s == "FINISHED"} == finished
    assert "KILLED" in {s for k, s in status.items() if k != "study"}  # the stage-2 run it stopped

    again = run_study(study)
    assert again["failures"] == [] and sum(again["trained"].values()) == 5 - len(finished)
    got, want = node_results(out), node_results(ref_out)
    assert set(got) == set(want) and all(got[k]["losses"] == want[k]["losses"] for k in want)
    assert mlflow_snapshot(uri, study.name) == ref_mlflow  # every run FINISHED now, every point once
