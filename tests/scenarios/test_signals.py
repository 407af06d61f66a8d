"""SIGTERM to the command line's whole process group — what `timeout`, Slurm's `scancel`, `docker
stop` and systemd send — ends a study as cleanly as Ctrl-C, wherever it lands (issue 45): exit 143,
the summary, no node stored after the signal, no MLflow run RUNNING, no lease, no process left; the
same command again trains exactly what is missing, to the undisturbed run's losses."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from raysweep.config import load_study
from tests.helpers import REDUCED, ROOT, SMOKE, node_results, smoke_cli, with_reference_data

# progress checkpoints every 4 steps in both trained stages, so each stage has one to wait for
# (operational settings: the node keys, so the reference's nodes, are the same)
ARM_CHECKPOINTS = "pretrain.checkpoint_every=4"
STOPPED = [*REDUCED, ARM_CHECKPOINTS]


def _reached(point: str, out: Path, log: Path) -> bool:
    """Has the study reached `point`? Each is an event the study leaves behind, never a delay."""
    if point == "data preparation":  # the tokenizer is made and the corpora are being tokenized
        return "[data] tokenizer" in log.read_text()
    stage = {"stage 1": "pretrain", "mid stage 2": "posttrain"}[point]
    return bool(list((out / "checkpoints").glob(f"{stage}/*.resume/state.pt")))


def _alive(seen: dict[int, float]) -> list[str]:
    """The processes of `seen` (pid -> start time) still running."""
    import psutil

    left = []
    for pid, started in seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == started and p.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(p.cmdline())[:120])
        except psutil.Error:
            pass
    return left


@pytest.mark.slow
@pytest.mark.parametrize("point", ["data preparation", "stage 1", "mid stage 2"])
def test_sigterm_to_the_process_group_stops_the_study_cleanly(ray_local, reference, tmp_path, point):
    import psutil
    from mlflow.tracking import MlflowClient

    from raysweep.study import run_study
    from raysweep.supervisor import DEFAULT_GRACE_S

    ref_out = reference[0]
    out = tmp_path / "stopped"
    if point != "data preparation":  # the data is made: the study gets to its point sooner
        with_reference_data(ref_out, out)
    cmd, env = smoke_cli(out, ARM_CHECKPOINTS)
    log = tmp_path / "first.log"
    with log.open("w") as f:
        # a session of its own, as a batch job or a terminal gives it: its process group is the one signalled
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        seen: dict[int, float] = {}
        deadline = time.time() + 400
        while not _reached(point, out, log):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, f"the study never reached {point}"
            for p in psutil.Process(proc.pid).children(recursive=True):
                try:
                    seen[p.pid] = p.create_time()
                except psutil.Error:
                    pass
            time.sleep(0.05)
        for p in psutil.Process(proc.pid).children(recursive=True):
            seen.setdefault(p.pid, p.create_time())
        signalled = time.time()
        os.killpg(proc.pid, signal.SIGTERM)  # the whole group, as `timeout -s TERM` and Slurm send it
        rc = proc.wait(timeout=DEFAULT_GRACE_S + 30)
    printed = log.read_text()
    assert rc == 143, printed[-3000:]
    assert "interrupted by SIGTERM" in printed and "run the same command to resume" in printed, printed[-3000:]
    assert "Traceback" not in printed and "FAILED" not in printed and "SIGTERM received" not in printed, printed[-3000:]

    # nothing stored after the signal: a node folder appears by a rename, which sets its ctime
    nodes = [p for p in (out / "checkpoints").glob("*/*") if p.is_dir() and "." not in p.name]
    late = [p.name for p in nodes if p.stat().st_ctime > signalled]
    assert late == [], f"{len(late)} nodes stored after the signal"
    finished = {p.name for p in nodes if (p / "node.json").exists()}
    assert not list((out / "checkpoints").glob("*/*.lease"))
    assert len(seen) > 3  # the driver and its local Ray instance were seen, so the count below means something
    gone_by = time.time() + 10  # the reaper's SIGTERM, then SIGKILL after 3 s
    while _alive(seen) and time.time() < gone_by:
        time.sleep(0.2)
    assert _alive(seen) == []

    study = load_study(SMOKE, [f"output_dir={out}", *STOPPED])
    if (out / "mlflow.db").exists():
        client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
        runs = client.search_runs([client.get_experiment_by_name(study.name).experiment_id])
        assert [r.info.run_name for r in runs if r.info.status in ("RUNNING", "SCHEDULED")] == []
        assert {r.info.status for r in runs if "raysweep.node_key" not in r.data.tags} == {"KILLED"}

    again = run_study(study)  # the same study: exactly what is missing, to the undisturbed losses
    assert again["failures"] == [] and sum(again["trained"].values()) == 5 - len(finished)
    got, want = node_results(out), node_results(ref_out)
    assert set(got) == set(want) and all(got[k]["losses"] == want[k]["losses"] for k in want)
