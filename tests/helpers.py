"""What several tests share: paths, the reduced smoke study, an MLflow server, node and MLflow snapshots."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from bench.s3_server import FAKE_AWS, free_port, s3_uri, start_s3_server  # noqa: F401  (the tests' own names)
from bench.terminal import trained_now  # noqa: F401  (the summary's "trained now" counts)

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "search_spaces" / "smoke.yaml"
# The smoke study cut to one arm, two stage-2 runs and one stage-3 run each (5 nodes): the
# undisturbed reference every fault test compares with. No early stop, so stage 2 always has
# steps left after its progress checkpoints (58 steps, one every 4). One warm slot: on 2 cores a
# second slot's start-up costs more than it saves on 3 short items (tree 27 s vs 35 s, 2026-12-01);
# the whole smoke study, the job-submit test and tests/sweep/test_queue.py cover several slots.
REDUCED_TREE = [
    "pretrain.mix_fraction=[0.5]",
    "posttrain.lr=[1e-3, 3e-3]",
    "finetune.lr=[1e-3]",
    "posttrain.checkpoint_every=4",
    "posttrain.patience=100",
]
REDUCED = [*REDUCED_TREE, "max_concurrent_trials=1"]


def smoke_cli(out: Path, *overrides: str) -> tuple[list[str], dict]:
    """The REDUCED smoke study's command line into `out` (with `overrides` after), and its environment."""
    import sys

    sets = [f"output_dir={out}", *REDUCED, *overrides]
    cmd = [sys.executable, "-m", "raysweep.main", "--config", str(SMOKE), *[a for s in sets for a in ("--set", s)]]
    return cmd, {**os.environ, "PYTHONPATH": str(ROOT)}


TIMING_METRICS = {"tokens_per_s", "data_wait_share"}  # wall-clock figures: the only metrics that differ between identical runs


# The shapes of raysweep's own output lines (the tree and cost, progress, the summary): anything
# else a study prints came from a library below it. Ray prefixes what a worker prints with
# "(name pid=N)" and colours it.
_OWN_STARTS = (
    "study '",
    "raysweep study",
    "trained now:",
    "Pareto frontier",
    "Frontier comparison",
    "report:",
    "MLflow:",
    "libraries' own messages:",
    "Ray's own logs:",
    "error:",
    "warning:",
    "=",
    "  ",
)


def foreign_lines(text: str) -> list[str]:
    """The lines of a study's terminal output that raysweep did not write (the summary, between its
    two rules of '=', is raysweep's; so are the tree, the progress and its warnings)."""
    import re

    out, in_summary = [], False
    for raw in text.splitlines():
        if raw == "=" * 78:
            in_summary = not in_summary
            continue
        if in_summary:
            continue
        line = re.sub(r"\x1b\[[0-9;]*m", "", raw)
        line = re.sub(r"^\([A-Za-z_]\w* pid=\d+(, ip=[\d.]+)?\) ", "", line)
        own = not line.startswith("[repeated ") and (  # Ray's folding of alike lines, and its notice
            not line.strip()
            or line.startswith(_OWN_STARTS)
            or re.match(r"^\[[A-Za-z]", line)
            or re.match(r"^\d+ (FAILED|diverged|failed)", line)
        )
        if not own:
            out.append(raw)
    return out


def plan_smoke(smoke_data, *overrides: str):
    """The smoke study's stage-2 subtrees as planned, and as planned with `overrides` (same data)."""
    from raysweep.config import load_study
    from raysweep.sweep.plan import plan

    study, data = smoke_data
    changed = load_study(SMOKE, [f"output_dir={study.out}", *overrides])
    return plan(study, data)[1], plan(changed, data)[1], changed


def start_mlflow_server(folder: Path, port: int):
    """A real `mlflow server` on 127.0.0.1 (SQLite backend, proxied artifacts); returns (process, URI)
    once it answers."""
    import shutil
    import subprocess
    import sys
    import time
    import urllib.request

    from raysweep.tracking.store import UI_ENV

    folder.mkdir(parents=True, exist_ok=True)
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen(
        [
            mlflow,
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "server.log", "a"),
        start_new_session=True,
        env={**os.environ, **UI_ENV},  # as the summary suggests it: no idle job runner taking CPU from the suite
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            return proc, uri
        except OSError as e:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}") from e
            time.sleep(0.5)


def stop_mlflow_server(proc, hard: bool = False) -> None:
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGKILL if hard else signal.SIGTERM)  # the server and its gunicorn/uvicorn workers
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def node_results(out: Path) -> dict[str, dict]:
    """node key → result of every finished node under a study's checkpoints."""
    import json

    return {
        p.parent.name: json.loads(p.read_text())["result"] for p in (out / "checkpoints").glob("*/*/node.json") if "." not in p.parent.name
    }  # not the <key>.corrupt-<time> folders moved aside


def with_reference_data(ref_out: Path, out: Path, arm_to: Path | None = None) -> Path:
    """A fresh study folder holding the reference's prepared data (corpora, tokenizer, streams), so a
    test pays for training only; node keys do not depend on the folder. `arm_to`: also copy the
    finished pretraining arm into that node store (for tests about stages 2 and 3)."""
    import shutil

    shutil.copytree(ref_out / "cache", out / "cache")
    if arm_to is not None:
        shutil.copytree(ref_out / "checkpoints" / "pretrain", arm_to / "pretrain")
    return out


def mlflow_snapshot(uri: str, experiment: str) -> dict[str, tuple]:
    """Everything a study's MLflow experiment holds that two identical runs must share: per run name,
    (status, outcome tag, every metric's (step, value) points in order). A point logged twice shows
    up twice, so equality with an undisturbed run means every point arrived exactly once."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    snap = {}
    for r in runs:
        history = {
            k: sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, k))
            for k in r.data.metrics
            if k not in TIMING_METRICS
        }
        snap[r.info.run_name] = (r.info.status, r.data.tags.get("raysweep.outcome"), history)
    assert len(snap) == len(runs), "two MLflow runs share a name (a node was registered twice)"
    return snap


def duplicate_points(uri: str, experiment: str) -> list[tuple]:
    """(run name, key, step, values) wherever a run of the experiment holds more than one value at
    one (key, step), wall-clock metrics and the study run included: MLflow keeps every value, so a
    metric point sent twice with a new value shows up here."""
    from collections import defaultdict

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    found = []
    for r in client.search_runs([exp.experiment_id]):
        for key in r.data.metrics:
            at = defaultdict(list)
            for m in client.get_metric_history(r.info.run_id, key):
                at[m.step].append(m.value)
            found += [(r.info.run_name, key, step, values) for step, values in at.items() if len(values) > 1]
    return found


def example_rows() -> list[dict]:
    """Six runs-table rows, two methods: a front of two per method, one dominated, one non-finite."""
    rows = []
    for i, (m, ret, ft) in enumerate(
        [
            ("unmixed", 1.0, 3.0),
            ("unmixed", 2.0, 2.0),
            ("unmixed", 2.5, 2.5),
            ("mixed", 0.5, 2.9),
            ("mixed", 1.5, 1.5),
            ("mixed", math.nan, 1.0),
        ]
    ):
        rows.append(
            {
                "name": f"r{i}",
                "method": m,
                "L_ret": ret,
                "L_ft": ft,
                "L_pre": 3.0 - ft,
                "L_im": 1.0,
                "mix_fraction": 0.0 if m == "unmixed" else 1.0,
                "posttrain_lr": 1e-3,
                "dropout": 0.0,
                "replay": 0.0,
                "finetune_lr": 1e-3,
                "mode": "sweep",
                "post_tokens": 1000,
                "seed": 0,
            }
        )
    return rows


def sliced(rows, shifts):
    """Rows scored on len(shifts) slices: slice k's losses are the row's plus shifts[k] (a function of the row)."""
    return [{**r, "slices": [{n: r[n] + f(r) for n in ("L_im", "L_ft", "L_ret", "L_pre")} for f in shifts]} for r in rows]


def token_view(folder, docs: list[np.ndarray], label: str, max_bytes: int = 1 << 30):
    """A TokenView over shards written from `docs` (several shard files when max_bytes is small)."""
    from raysweep.data.shards import ShardWriter, TokenView

    infos = ShardWriter(folder, label, np.dtype(np.uint16), max_bytes=max_bytes)
    infos.add([np.asarray(d) for d in docs])
    infos = infos.close()
    file_ix = np.concatenate([np.full(i.docs, k, dtype=np.int32) for k, i in enumerate(infos)])
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    offset = np.concatenate([np.cumsum(n) - n for n in np.split(lengths, np.cumsum([i.docs for i in infos])[:-1])])
    return TokenView(
        label,
        folder,
        tuple(i.name for i in infos),
        tuple(i.sha256 for i in infos),
        "uint16",
        file_ix,
        offset,
        lengths,
        np.arange(len(docs), dtype=np.uint64),
    )


def mount_tmpfs(where: Path, size: str):
    """A real small filesystem (tmpfs of `size`, e.g. "2M") at `where`, for full-disk tests; None
    where mounting is not allowed (it needs root with CAP_SYS_ADMIN). Unmount with `unmount`."""
    import subprocess

    where.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True).returncode != 0:
        return None
    return where


def unmount(where: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(where: Path) -> None:
    """Fill a filesystem until no byte is free."""
    for name, chunk in (("filler", 65536), ("filler-tail", 1)):
        fd = os.open(where / name, os.O_CREAT | os.O_WRONLY)
        try:
            while True:
                os.write(fd, b"\0" * chunk)
        except OSError:
            pass
        finally:
            os.close(fd)


def headless(chromium: str, profile: Path, budget_ms: int = 5000) -> list[str]:
    """Chromium's command line for a page on this machine: headless, a new profile, no background
    connections (refused here, many at a time), `budget_ms` of virtual time for the page's scripts."""
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget_ms}",
    ]


def run_spec(node_dir, **over):
    """A RunSpec for tests that build one run by hand: a short stage-2 run unless `over` says otherwise."""
    from raysweep.spec import RunSpec

    base = {"stage": "posttrain", "label": "t", "node_key": "k", "dataset": "train", "lr": 1e-3, "min_lr": 0.0}
    base |= {"warmup_steps": 0, "weight_decay": 0.0, "batch_size": 2, "max_steps": 4, "eval_every": 1, "monitor": [], "seed": 0}
    return RunSpec(node_dir=str(node_dir), **(base | over))


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc, taken before anything is killed)."""
    from pathlib import Path

    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        out += below
        todo += below
    return out


def kill_tree(proc) -> None:
    """SIGKILL a driver and every process below it at once (its machine dies: its local Ray instance,
    raylet, GCS and workers, with it). Killing the driver's session alone leaves the workers ~1 s to
    notice, enough for a tiny run to finish first."""
    import os
    import signal

    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)
