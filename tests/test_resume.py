"""The driver is SIGKILLed mid-study (its local Ray instance dies with it); the same command again
resumes: finished nodes are not retrained, the interrupted run continues from its last progress
checkpoint, the results equal an uninterrupted run's bit for bit, and MLflow holds no duplicates."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from mlflow.tracking import MlflowClient

from raysweep.config import load_study
from raysweep.main import run
from tests.conftest import ROOT, SMOKE

REDUCED = ["pretrain.mix_fraction=[0.5]", "posttrain.lr=[1e-3, 3e-3]", "finetune.lr=[1e-3]", "posttrain.checkpoint_every=4",
           "posttrain.patience=100"]  # no early stop: the interrupted run has steps left after its checkpoint


def _results(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())["result"] for p in (out / "checkpoints").glob("*/*/node.json")}


def test_sigkilled_driver_resumes_exactly(ray_local, tmp_path):
    # the reference: the same study, uninterrupted
    reference = run(load_study(SMOKE, [f"output_dir={tmp_path / 'reference'}", *REDUCED]))
    assert reference["failures"] == []
    want = _results(tmp_path / "reference")
    assert len(want) == 5  # 1 arm, 2 stage-2 runs, 2 stage-3 runs

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "raysweep.main", "--config", str(SMOKE), "--set", f"output_dir={out}", *[a for r in REDUCED for a in ("--set", r)]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (tmp_path / "first.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 400
        while not list((out / "checkpoints").glob("posttrain/*.resume/state.pt")):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "no stage-2 progress checkpoint appeared"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything in its session, mid stage 2
        proc.wait(timeout=60)
    time.sleep(2)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in (out / "checkpoints").glob("*/*/node.json")}
    interrupted = [p.name.removesuffix(".resume") for p in (out / "checkpoints").glob("posttrain/*.resume")]
    assert interrupted and not set(interrupted) & set(finished)

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    line = next(line for line in again.stdout.splitlines() if line.startswith("trained now:"))
    counts = ast.literal_eval(line.removeprefix("trained now: ").split(";")[0])
    assert counts["pretrain"] == 0  # stage 2 had started, so the arm was finished before the kill
    assert sum(counts.values()) == 5 - len(finished)  # exactly the nodes that had not finished
    for key, stamp in finished.items():  # no finished node was retrained
        assert next((out / "checkpoints").glob(f"*/{key}/node.json")).stat().st_mtime_ns == stamp

    got = _results(out)
    assert set(got) == set(want)
    for key in want:  # bit-identical losses: the resumed run continued exactly where it stopped
        assert got[key]["losses"] == want[key]["losses"], key
        assert got[key]["steps"] == want[key]["steps"]
    assert any(got[k]["resumed_from_step"] > 0 for k in interrupted)
    assert not list((out / "checkpoints").glob("*/*.resume"))  # progress files are gone once nodes finish

    study = load_study(SMOKE, [f"output_dir={out}", *REDUCED])
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(study.name).experiment_id])
    keys = Counter(r.data.tags.get("raysweep.node_key") for r in runs if r.data.tags.get("raysweep.stage") != "study")
    assert len(keys) == 5 and set(keys.values()) == {1}  # one MLflow run per node: no duplicates
    assert sum(r.data.tags.get("raysweep.stage") == "study" for r in runs) == 1
    assert all(r.info.status == "FINISHED" for r in runs)

