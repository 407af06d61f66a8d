"""The paper's 135M tree end to end on this machine, through the real CLI, the real node store (a
local S3 API) and a real kill: what breaks at the real shape breaks here, not after a cluster's
pretraining arms are paid for (issue 44).

    python bench/rehearsal_135m.py            # search_spaces/rehearsal-135m.yaml: 14 runs of smollm2-135m
    python bench/rehearsal_135m.py --quick    # 2 layers of the real width, vocabulary 49,152, seq 32, 5 runs (the suite's)

1. The study runs through `python -m raysweep.main` with its nodes in moto's S3 server on
   127.0.0.1 and `retries: 0`; the first arm's stage-2 runs (full and LoRA: the injected label
   names both) are SIGKILLed at step 4, after their progress checkpoint at step 3
   (RAYSWEEP_INJECT_KILL). The run ends with those subtrees failed and the others trained.
2. The same command again: it must train only what was not stored (each killed run resumes from
   its progress checkpoint, then its stage-3 children). A node trained twice would carry a second
   trainer's stamp (node.json's trained_by).
3. Measured against the dry run's figures (raysweep.sweep.disk, raysweep.memory): each stage's node
   bytes in the store and its progress checkpoint's largest size (its complete files, sampled every
   0.2 s in the workers' local node cache; while a run replaces its checkpoint it holds two, which
   the dry run's peak counts and a sample would catch at any size); the training process's peak RSS per stage (attributed by the last
   progress line the CLI printed) against the memory model's peak, and the peak RSS of the
   supervisor, the driver, Ray's head and the S3 server (which no model estimates); seconds to
   download and upload one node of each stage through raysweep.store.storage.
4. Tokens/s of each stage's training steps (the loop's step_tokens_per_s: evaluations and progress
   checkpoints left out) against a bare PyTorch loop of the same model, batch and threads, run here
   after the study.

The last line, for scripts: `rehearsal: dry-run bytes error X%, memory model worst error Y%, nodes
trained twice N, loop/bare R`. Goals: bytes ≤ 10%, memory ≤ 15%, 0 nodes twice, loop/bare ≥ 0.97.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__:  # python -m bench.rehearsal_135m, or a test importing it
    from bench.arrays import ArraySource
    from bench.disk import du
    from bench.s3_server import FAKE_AWS, s3_uri, start_s3_server
    from bench.stage_loop import bare_loop
    from bench.terminal import trained_now
else:  # python bench/rehearsal_135m.py: this folder is on the path
    from arrays import ArraySource
    from disk import du
    from s3_server import FAKE_AWS, s3_uri, start_s3_server
    from stage_loop import bare_loop
    from terminal import trained_now

STUDY = ROOT / "search_spaces" / "rehearsal-135m.yaml"
# the suite's version (tests/scenarios/test_rehearsal.py): the real width and vocabulary, 2 layers,
# one arm, full and LoRA stage 2, one stage-3 lr: 5 runs
QUICK = ["model.n_layers=2", "model.seq_len=32", "pretrain.mix_fraction=[1.0]", "finetune.lr=[1e-3]", "name=rehearsal-quick"]
KILL_STEP = 4  # after stage 2's progress checkpoint at step 3 (posttrain.checkpoint_every)
GOALS = {"bytes": 0.10, "memory": 0.15, "loop": 0.97}
STAGES = ("pretrain", "posttrain", "finetune")
STEPS_TIMED = 6  # steps of the loop and of the bare loop, each timed after its first


def role_of(proc, cli_pid: int, s3_pid: int, slots: set[int]) -> str:
    """What a process of the study is, from its pid and command line (`slots`: the pids that print
    the slot trials' lines, which Ray prefixes with "(slot_trial pid=N)")."""
    if proc.pid == cli_pid:
        return "supervisor"
    if proc.pid == s3_pid:
        return "S3 server"
    if proc.pid in slots:
        return "slot (trains a 1-worker stage)"
    cmd = " ".join(proc.cmdline())
    if "raysweep.main" in cmd:
        return "driver"
    if cmd.startswith("ray::"):
        return "other Ray workers"
    return "Ray's head and helpers"


class Sampler(threading.Thread):
    """Every 0.2 s: the RSS of every process of the study (largest per role; the slot's per stage in
    flight) and the size of every progress checkpoint in the local node cache (largest per cache
    folder: a folder holding a state.pt; which node's it is, is known once the store is listed)."""

    def __init__(self, cli_pid: int, s3_pid: int, cache: Path):
        super().__init__(daemon=True)
        self.cli_pid, self.s3_pid, self.cache = cli_pid, s3_pid, cache
        self.stage: str | None = None  # set by the reader of the CLI's lines
        self.slots: set[int] = set()  # likewise
        self.peak: dict[str, int] = {}
        self.slot_peak: dict[str, int] = {}
        self.progress: dict[str, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.done.wait(0.2):
            try:
                root = psutil.Process(self.cli_pid)
                procs = [root, *root.children(recursive=True), psutil.Process(self.s3_pid)]
            except psutil.Error:
                continue
            for p in procs:
                try:
                    role, rss = role_of(p, self.cli_pid, self.s3_pid, self.slots), p.memory_info().rss
                except psutil.Error:
                    continue
                self.peak[role] = max(self.peak.get(role, 0), rss)
                if role.startswith("slot") and self.stage:
                    self.slot_peak[self.stage] = max(self.slot_peak.get(self.stage, 0), rss)
            for state in self.cache.glob("nodes/*/state.pt"):
                # the complete files: a rewrite's .tmp beside them is caught at any size, so the
                # doubling while one replaces another is the dry run's arithmetic, not sampled
                try:
                    size = sum(f.stat().st_size for f in state.parent.iterdir() if f.suffix == ".pt")
                except OSError:
                    continue  # renamed or removed while we look
                self.progress[state.parent.name] = max(self.progress.get(state.parent.name, 0), size)


def run_cli(args: list[str], env: dict, log: Path, s3_pid: int, cache: Path) -> tuple[int, str, Sampler, float]:
    """The CLI in a session of its own, its lines to `log` and read as they come (the stage in flight)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "raysweep.main", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    sampler = Sampler(proc.pid, s3_pid, cache)
    sampler.start()
    lines = []
    with log.open("a") as f:
        for line in proc.stdout:
            f.write(line)
            lines.append(line)
            found = re.search(r"\(slot_trial pid=(\d+)\).*\[(pretrain|posttrain|finetune) ", line)
            if found:
                sampler.slots.add(int(found.group(1)))
                sampler.stage = found.group(2)
            print(line, end="", flush=True)
    rc = proc.wait()
    sampler.done.set()
    sampler.join()
    return rc, "".join(lines), sampler, time.perf_counter() - t0


def store_nodes(store_uri: str) -> dict[str, dict]:
    """node key -> (stage, bytes of its files, node.json) for every finished node in the store."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(store_uri)
    nodes: dict[str, dict] = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(root) :].strip("/").split("/")
        if len(rel) != 3 or "." in rel[1]:  # <stage>/<key>/<file>; not <key>.resume, .lease, .failures
            continue
        node = nodes.setdefault(rel[1], {"stage": rel[0], "bytes": 0, "json": None})
        node["bytes"] += info.size
        if rel[2] == "node.json":
            with fs.open_input_stream(info.path) as f:
                node["json"] = json.loads(f.read())
    return {k: v for k, v in nodes.items() if v["json"] is not None}


def transfer_seconds(store_uri: str, nodes: dict, tmp: Path) -> dict[str, tuple[float, float, int]]:
    """stage -> (download s, upload s, bytes) of one node of it, through raysweep.store.storage."""
    from raysweep.store.storage import download_dir, join, upload_dir

    out = {}
    for stage in STAGES:
        key = next(k for k, n in sorted(nodes.items()) if n["stage"] == stage)
        src = join(store_uri, stage, key)
        local = tmp / f"transfer-{stage}"
        t0 = time.perf_counter()
        download_dir(src, local)
        down = time.perf_counter() - t0
        t0 = time.perf_counter()
        upload_dir(local, join(store_uri, "transfer-check", key), last="node.json")
        up = time.perf_counter() - t0
        out[stage] = (down, up, du(local))
        shutil.rmtree(local)
    return out


def loop_tokens_per_s(shape, vocab: int, blocks, batch: int, threads: int, lora: dict | None, tmp: Path) -> float:
    """raysweep's per-run loop (raysweep.train.trainer.Trainer.run) on the same model, blocks, batch and
    threads as stage_loop.bare_loop, alone on the machine: tokens/s after its first step."""
    import torch

    from raysweep.spec import RunSpec
    from raysweep.train.context import LoopConfig, Worker
    from raysweep.train.trainer import Trainer

    torch.set_num_threads(threads)
    steps, seq = len(blocks) // batch, blocks.shape[1] - 1
    spec = RunSpec(
        stage="posttrain",
        label="loop alone",
        node_key="loop",
        node_dir=str(tmp / f"loop-{lora is not None}"),
        dataset="train",
        lr=1e-4,
        min_lr=1e-5,
        warmup_steps=1,
        weight_decay=0.1,
        batch_size=batch,
        max_steps=steps,
        eval_every=10**9,
        monitor=[],
        seed=0,
        lora=lora,
    )
    result, _, _ = Trainer(LoopConfig(shape, vocab, seq, 1 << 30, {}, "tok"), Worker(torch.device("cpu")), {}).run(
        spec, ArraySource(blocks)
    )
    return result["steady_tokens_per_s"]


def bytes_report(store_uri: str, after: dict, samplers: list, disk) -> float:
    """Each stage's node bytes in the store and its progress checkpoint's largest size against the
    dry run's; prints them and returns the largest relative error."""
    from raysweep.store.storage import cache_dir, join, with_suffix
    from raysweep.sweep.disk import gb

    progress_seen = {name: size for smp in samplers for name, size in smp.progress.items()}

    cached = {cache_dir(with_suffix(join(store_uri, n["stage"], k), ".resume")).name: n["stage"] for k, n in after.items()}
    byte_errors, rows = [], []
    for stage in STAGES:
        sizes = [n["bytes"] for n in after.values() if n["stage"] == stage]
        want = disk.stages[stage]
        got = statistics.mean(sizes)
        byte_errors.append(want.node_bytes / got - 1)
        rows.append(f"  {stage:<9} node {gb(got):>9} measured, {gb(want.node_bytes):>9} dry run: {want.node_bytes / got - 1:+.1%}")
        progress = max([0, *(size for name, size in progress_seen.items() if cached.get(name) == stage)])
        if progress and want.progress_bytes:
            byte_errors.append(want.progress_bytes / progress - 1)
            rows[-1] += f"; progress {gb(progress)} measured, {gb(want.progress_bytes)} dry run: {want.progress_bytes / progress - 1:+.1%}"
        elif want.progress_bytes or progress:
            rows[-1] += f"; progress {gb(progress)} measured, {gb(want.progress_bytes)} dry run (one was not seen)"
    print("bytes (node store; progress checkpoints at their largest):")
    print("\n".join(rows))

    return max(abs(e) for e in byte_errors)


def memory_report(samplers: list, fits: dict) -> float:
    """The training slot's peak RSS per stage against the memory model, the other processes' as
    measured; prints them and returns the largest relative error (nan where no slot was seen)."""
    from raysweep.sweep.disk import gb

    mem_errors = []
    print("peak RSS:")
    for stage in STAGES:
        got = max(smp.slot_peak.get(stage, 0) for smp in samplers)
        want = fits[stage].peak.total
        if got:
            mem_errors.append(want / got - 1)
            print(f"  slot in {stage:<9} {gb(got):>9} measured, {gb(want):>9} memory model: {want / got - 1:+.1%}")
    for role in sorted({role for smp in samplers for role in smp.peak}):
        if not role.startswith("slot"):
            print(f"  {role:<30} {gb(max(smp.peak.get(role, 0) for smp in samplers)):>9} (not modelled)")

    return max(abs(e) for e in mem_errors) if mem_errors else float("nan")


def speed_report(study, after: dict, vocab: int, threads: int, tmp: Path) -> float:
    """The loop against a bare loop of the same model, batch and threads: in the study (sharing the
    2 cores with the node uploads and the S3 server), and alone, one after the other, here. Prints
    them and returns the worst ratio of the loop alone to the bare loop."""
    import numpy as np

    from raysweep.sweep.plan import lora_targets

    ratios = []
    lora = {"rank": study.posttrain.lora_rank, "alpha": study.posttrain.lora_alpha, "targets": lora_targets(study)}
    print(f"tokens/s of the training steps ({threads} threads; evaluations and progress checkpoints left out):")
    for stage, tuning in (("pretrain", "full"), ("posttrain", "full"), ("posttrain", "lora"), ("finetune", "full")):
        mine = [
            n["json"]["result"]["step_tokens_per_s"]
            for n in after.values()
            if n["stage"] == stage and bool(n["json"]["spec"].get("lora")) == (tuning == "lora")
        ]
        batch, adapters = getattr(study, stage).batch_sizes[0], lora if tuning == "lora" else None
        blocks = np.random.default_rng(0).integers(0, vocab, size=(batch * STEPS_TIMED, study.model.seq_len + 1)).astype(np.int64)
        _, bare = bare_loop(study.model.shape, vocab, study.model.seq_len, blocks, batch, STEPS_TIMED, threads, adapters)
        alone = loop_tokens_per_s(study.model.shape, vocab, blocks, batch, threads, adapters, tmp)
        ratios.append(alone / bare)
        print(
            f"  {stage:<9} {tuning:<4} bare {bare:,.0f}; the loop alone {alone:,.0f} ({alone / bare:.3f}); "
            f"the loop in the study {statistics.median(mine):,.0f} ({statistics.median(mine) / bare:.3f}, sharing the CPUs)"
        )

    return min(ratios)


# long: the rehearsal read top to bottom (set up, run twice, compare, report); each measurement is its own function
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 layers of the real width, vocabulary 49,152, seq 32 (≤ 3 min)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="more study overrides")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--keep", action="store_true", help="keep the study's folder")
    args = p.parse_args()

    import psutil
    import ray
    import torch

    from raysweep.config import load_study
    from raysweep.memory import stage_fits
    from raysweep.sweep.describe import disk_of
    from raysweep.sweep.disk import gb

    t_start = time.perf_counter()
    os.environ.update(FAKE_AWS)  # moto takes any credentials; pyarrow's S3 client needs some
    tmp = Path(tempfile.mkdtemp(prefix="raysweep-rehearsal-"))
    s3, port, _ = start_s3_server(tmp / "s3")
    store_uri = s3_uri(port, "rehearsal")
    overrides = [*(QUICK if args.quick else []), *args.overrides, f"output_dir={tmp / 'study'}", f"checkpoint_dir={store_uri}"]
    study = load_study(STUDY, overrides)
    vocab = study.model.shape.vocab_size
    threads = int(study.posttrain.resources.cpus_per_worker)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"torch {torch.__version__}, ray {ray.__version__}, python {platform.python_version()}"
    )
    print(f"study: {study.name}, {study.model.shape_label()}, seq {study.model.seq_len}, vocabulary {vocab:,}; {study.run_counts()}")
    disk, _ = disk_of(study, vocab)
    fits = {stage: fit for stage, _, fit in stage_fits(study)}

    cache = tmp / "node-cache"
    # FAKE_AWS included; Ray's "(slot_trial pid=…)" prefix kept on the workers' lines (raysweep.main
    # drops it by default): the sampler learns from it which process trains, and which stage
    env = {**os.environ, "RAYSWEEP_CACHE": str(cache), "RAY_DISABLE_WORKER_LOG_PREFIX": "0"}
    cli = ["--config", str(STUDY), *[a for o in overrides for a in ("--set", o)]]
    log = tmp / "cli.log"
    label = f"posttrain λ={study.pretrain.mix_fraction[0]:g} lr={study.posttrain.lr[0]:g} drop=0"
    first = run_cli(cli, {**env, "RAYSWEEP_INJECT_KILL": f"{label}@{KILL_STEP}"}, log, s3.pid, cache)
    before = store_nodes(store_uri)
    second = run_cli(cli, env, log, s3.pid, cache)
    after = store_nodes(store_uri)
    runs = sum(study.run_counts().values())

    twice = sum(1 for k, n in before.items() if after[k]["json"]["trained_by"] != n["json"]["trained_by"])
    killed = "SIGKILL" in first[1] or "killed" in first[1].lower()
    print("\n" + "=" * 78)
    print(f"first run: exit {first[0]} after {first[3]:.0f} s, {len(before)} of {runs} nodes stored, trained now {trained_now(first[1])}")
    print(
        f"second run: exit {second[0]} after {second[3]:.0f} s, {len(after)} of {runs} nodes stored, trained now {trained_now(second[1])}"
    )
    resumed = sorted(n["json"]["result"].get("resumed_from_step") for n in after.values() if n["json"]["spec"]["label"].startswith(label))
    print(
        f"the killed runs ({label}: full, and LoRA where the study has it) resumed from steps {resumed}; nodes trained twice: {twice}; the kill happened: {killed}"
    )

    bytes_err = bytes_report(store_uri, after, [first[2], second[2]], disk)
    mem_err = memory_report([first[2], second[2]], fits)
    transfers = transfer_seconds(store_uri, after, tmp)
    print("node transfer through raysweep.store.storage to the local S3 API (moto):")
    for stage, (down, up, size) in transfers.items():
        print(
            f"  {stage:<9} {gb(size)}: download {down:.1f} s ({size / down / 1e6:,.0f} MB/s), upload {up:.1f} s ({size / up / 1e6:,.0f} MB/s)"
        )

    ratio = speed_report(study, after, vocab, threads, tmp)
    print(
        f"goals: bytes ≤ {GOALS['bytes']:.0%} {'met' if bytes_err <= GOALS['bytes'] else 'MISSED'}; memory ≤ {GOALS['memory']:.0%} "
        f"{'met' if mem_err <= GOALS['memory'] else 'MISSED'}; nodes twice 0 {'met' if twice == 0 else 'MISSED'}; "
        f"loop/bare ≥ {GOALS['loop']} {'met' if ratio >= GOALS['loop'] else 'MISSED'}; whole bench {time.perf_counter() - t_start:.0f} s"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "first": {"rc": first[0], "trained": trained_now(first[1]), "stored": len(before), "seconds": first[3]},
                    "second": {"rc": second[0], "trained": trained_now(second[1]), "stored": len(after), "seconds": second[3]},
                    "runs": runs,
                    "twice": twice,
                    "resumed_from": resumed,
                    "bytes_error": bytes_err,
                    "memory_error": mem_err,
                    "loop_bare": ratio,
                    "peaks": {**first[2].peak, **{f"slot {k}": v for k, v in first[2].slot_peak.items()}},
                    "transfers": transfers,
                },
                indent=1,
            )
        )
    s3.kill()
    s3.wait(timeout=30)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"rehearsal: dry-run bytes error {bytes_err:.1%}, memory model worst error {mem_err:.1%}, nodes trained twice {twice}, loop/bare {ratio:.3f}"
    )
    return 0 if second[0] == 0 and len(after) == runs and twice == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
