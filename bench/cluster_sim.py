"""Cluster simulation: the paper's 135M frontier tree on a fake autoscaling GPU cluster, scheduled by
raysweep's real plan, queue, slots, node store and MLflow, with training replaced by a timed
stand-in (bench/standin.py). How close is the makespan to the ideal? Goals (issue 21):
makespan ≤ 1.15 × the lower bound, GPU busy share ≥ 0.9 while work is available, 0 nodes trained
twice and 0 lost with a worker node removed mid-run.

    python bench/cluster_sim.py [--quick | --smallest] [--nodes N] [--scale S] [--max-concurrent K]
                                [--no-removal] [--arm-workers 8]

The cluster (bench/fake_cluster.py): a CPU head and one GPU worker type of 8 GPUs and 64 CPUs a
node, scaling from 0 to N nodes. Each node is a real raylet on this machine declaring those
resources; nothing can run on its GPUs, which is why training is a stand-in. Each run sleeps its
predicted duration: its tokens ÷ the tokens/s of one H100 on the 135M preset (6·N FLOPs a token at
40% MFU, what --dry-run assumes) ÷ its GPUs, times the time scale S. A stage-2 run stops early
after a share of its 2B-token budget drawn log-uniformly from [5%, 50%] (the paper states none),
seeded by its node key.

The study is search_spaces/paper-135m-frontier.yaml with `--set` overrides for what this machine
cannot hold only: the built-in offline corpora and a small trained tokenizer in place of C4,
MusicPile, ChemPile and SmolLM2's (no network), token budgets and a model small enough for them (the
stand-in's durations come from the paper's budgets and preset, not from these), a temporary
output folder; `--quick`/`--smallest` also shrink the stage-2 grid. Each run of the simulation
starts a fresh cluster.

Figures, each from the stand-in's timeline (one JSON line per fit, run start and run end):
  makespan        the tree's start (its queue created) to the last node stored
  lower bound     max(critical path, total GPU-work ÷ peak GPUs); critical path: an arm, then its
                  longest subtree (its stage-2 run and its stage-3 runs, back to back in one slot);
                  peak GPUs: the cluster's at its largest, capped by what the study's slots can hold
                  (max_concurrent_trials subtree slots, or every arm at once)
  busy share      GPU-seconds training ÷ GPU-seconds the cluster had while work was waiting or running
                  (at each moment: min(GPUs present, GPUs running + GPUs of ready items not started))
  autoscaler      from a phase's slots being asked for to each slot's first fit
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")  # before Ray is imported: a multi-node Ray asks its clients for the head's token

if __package__:  # python -m bench.cluster_sim, or a test importing it
    from bench.fake_cluster import NODE_ID_ENV, FakeCluster
    from bench.terminal import output_to
else:  # python bench/cluster_sim.py: this folder is on the path
    from fake_cluster import NODE_ID_ENV, FakeCluster
    from terminal import output_to

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "search_spaces" / "paper-135m-frontier.yaml"
GOAL_RATIO, GOAL_BUSY = 1.15, 0.9
NODE = {"CPU": 64, "GPU": 8}  # one 8-GPU machine (the study asks 8 CPUs per GPU worker)

# what this machine cannot hold, replaced (the stand-in's durations use the paper's own budgets)
HOLDABLE = [
    "corpora.pre={source: synthetic, name: general, train_docs: 3000, heldout_docs: 40}",
    "corpora.post={source: synthetic, name: notation, train_docs: 1000, heldout_docs: 40}",
    "corpora.ft={source: synthetic, name: chem, train_docs: 1000, heldout_docs: 40}",
    "tokenizer={vocab_size: 512}",
    "model={preset: debug, seq_len: 16}",
    "pretrain.tokens=20000",
    "pretrain.post_tokens=5000",
    "posttrain.tokens=15000",
    "finetune.tokens=8000",
    "pretrain.eval_tokens=256",
    "posttrain.eval_tokens=256",
    "finetune.eval_tokens=256",
    "checkpoint_dir=null",
]
QUICK = ["posttrain.lr=[1.0e-4, 1.0e-3, 5.0e-3]", "posttrain.dropout=[0.0]", "posttrain.batch_size=[480]"]
SMALLEST = ["posttrain.lr=[1.0e-3]", "posttrain.dropout=[0.0]", "posttrain.batch_size=[480]", "finetune.lr=[1.0e-4]"]


@dataclass(frozen=True)
class Case:
    name: str
    overrides: list[str]
    nodes: int
    scale: float
    max_concurrent: int | None = None
    arm_workers: int = 8
    seed: int = 0


def stand_in_for(paper, scale: float, log: str, seed: int, arm_gpus: int):
    """The stand-in's durations from the paper study's own budgets and preset (bench/standin.py)."""
    from ray import cloudpickle

    from raysweep.presets import estimate_parameters
    from raysweep.sweep.describe import PRETRAINED_VOCAB, gpu_tokens_per_s

    if __package__:
        from bench import standin
    else:
        import standin
    # by value: Ray's workers need not find this folder (as `bench.standin` or as `standin`) to unpickle it
    cloudpickle.register_pickle_by_value(standin)
    StandIn = standin.StandIn
    tps = gpu_tokens_per_s(estimate_parameters(paper.model.shape, PRETRAINED_VOCAB))
    p1, p2, p3 = paper.pretrain, paper.posttrain, paper.finetune
    gpus = {
        "pretrain": arm_gpus,
        "posttrain": p2.resources.workers * p2.resources.gpus_per_worker,
        "finetune": p3.resources.workers * p3.resources.gpus_per_worker,
    }
    seconds = {"pretrain": p1.tokens, "posttrain": p2.tokens, "finetune": p3.tokens}
    seconds = {s: tokens / (tps * gpus[s]) * scale for s, tokens in seconds.items()}
    return StandIn(seconds, p1.post_tokens / (tps * gpus["pretrain"]) * scale, (0.05, 0.5), seed, log), gpus, tps


# ----------------------------------------------------------------------------- the figures (pure)


@dataclass
class Timeline:
    """The stand-in's log read back: attempts per node, fits, phases, and the cluster's GPUs over time."""

    t0: float
    runs: dict = field(default_factory=dict)  # node_key -> {"stage", "parent", "seconds", "starts": [t], "done": [t]}
    fits: list = field(default_factory=list)  # (t, kinds, node)
    phases: list = field(default_factory=list)  # (t, kinds, slots)
    gpus: list = field(default_factory=list)  # (t, GPUs of the alive worker nodes)
    by_process: dict = field(default_factory=dict)  # pid -> [(t, "start" | "done")]: one slot's runs in order

    @classmethod
    def read(cls, path: Path, gpus: list) -> Timeline:
        events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        tl = cls(min(e["t"] for e in events if e["event"] == "tree"), gpus=sorted(gpus))
        for e in events:
            if e["event"] in ("start", "done"):
                tl.by_process.setdefault(e["pid"], []).append((e["t"], e["event"]))
            if e["event"] == "start":
                r = tl.runs.setdefault(
                    e["node_key"],
                    {"stage": e["stage"], "parent": e["parent"], "seconds": e["seconds"], "starts": [], "done": [], "pids": []},
                )
                r["starts"].append(e["t"])
                r["pids"].append(e["pid"])
            elif e["event"] == "done":
                tl.runs[e["node_key"]]["done"].append(e["t"])
            elif e["event"] == "fit":
                tl.fits.append((e["t"], tuple(e["kinds"]), e["node"]))
            elif e["event"] == "phase":
                tl.phases.append((e["t"], tuple(e["kinds"]), e["slots"]))
        return tl


def critical_path(runs: dict) -> float:
    """An arm, then its longest subtree: its stage-2 run and, back to back in its slot, its stage-3 runs."""
    below: dict[str, float] = {}
    for r in runs.values():
        if r["stage"] == "finetune":
            below[r["parent"]] = below.get(r["parent"], 0.0) + r["seconds"]
    arms = {k: r["seconds"] for k, r in runs.items() if r["stage"] == "pretrain"}
    paths = [arms.get(r["parent"], 0.0) + r["seconds"] + below.get(k, 0.0) for k, r in runs.items() if r["stage"] == "posttrain"]
    return max(paths or arms.values() or [0.0])


def present_at(gpus: list, t: float) -> float:
    """GPUs of the alive worker nodes at time t (the last poll at or before it)."""
    now = 0.0
    for when, n in gpus:
        if when > t:
            break
        now = n
    return now


def gpu_seconds(tl: Timeline, stage_gpus: dict, end: float, step: float) -> tuple[float, float, float]:
    """(GPU-s training, GPU-s the cluster had while work was waiting or running, GPU-s it had)."""
    attempts = []  # each attempt: [start, its next start or its end]
    for r in tl.runs.values():
        starts, ends = sorted(r["starts"]), sorted(r["done"])
        for i, s in enumerate(starts):
            nxt = starts[i + 1] if i + 1 < len(starts) else None
            fin = next((e for e in ends if e >= s), end)
            attempts.append((s, min(x for x in (nxt, fin, s + r["seconds"]) if x is not None), stage_gpus[r["stage"]]))
    parent_end = {k: min(r["done"]) for k, r in tl.runs.items() if r["done"]}
    ready = []  # (ready from, started at, GPUs): an item is ready from its parent's end (an arm from the start)
    for r in tl.runs.values():
        # a stage-3 run is an item of its own when another process than its parent's trained it (split_tail)
        own_item = r["stage"] != "finetune" or r["pids"][:1] != tl.runs.get(r["parent"], {}).get("pids", [])[-1:]
        if r["starts"] and own_item:
            since = parent_end.get(r["parent"], tl.t0) if r["parent"] else tl.t0
            ready.append((since, min(r["starts"]), stage_gpus[r["stage"]]))
    busy_s = avail_s = paid_s = 0.0
    t = tl.t0
    while t < end:
        busy = sum(g for s, e, g in attempts if s <= t < e)
        waiting = sum(g for s, e, g in ready if s <= t < e)
        present = present_at(tl.gpus, t)
        busy_s += min(busy, present) * step
        avail_s += min(present, busy + waiting) * step
        paid_s += present * step
        t += step
    return busy_s, avail_s, paid_s


def overheads(tl: Timeline) -> dict:
    """Where wall seconds of this machine go: from a phase's slots asked for to each slot's first fit,
    from a phase to its first run, and between a slot's runs (MLflow, leases, the queue)."""
    first_fit, startup = {}, {}
    stages = {"arm": "pretrain", "subtree": "posttrain", "leaf": "finetune"}
    for t_phase, kinds, slots in tl.phases:
        fits = sorted(f for f, k, _ in tl.fits if k == kinds and f >= t_phase)[:slots]
        first_fit[kinds] = [f - t_phase for f in fits]
        firsts = [min(r["starts"]) for r in tl.runs.values() if r["starts"] and r["stage"] in {stages[k] for k in kinds}]
        startup[" and ".join(kinds)] = min(firsts) - t_phase if firsts else None
    gaps = [b[0] - a[0] for runs in tl.by_process.values() for a, b in zip(runs, runs[1:]) if a[1] == "done" and b[1] == "start"]
    return {"slot_latency": first_fit, "phase_startup": startup, "gap_mean": sum(gaps) / len(gaps) if gaps else 0.0, "gaps": len(gaps)}


def figures(tl: Timeline, stage_gpus: dict, peak_gpus: float, planned_nodes: int, step: float = 0.05) -> dict:
    """Everything the bench prints, from one run's timeline."""
    done = {k: r for k, r in tl.runs.items() if r["done"]}
    end = max(t for r in done.values() for t in r["done"])
    makespan = end - tl.t0
    work = sum(r["seconds"] * stage_gpus[r["stage"]] for r in done.values())
    cp = critical_path(done)
    bound = max(cp, work / peak_gpus)
    arms = [r["seconds"] for r in done.values() if r["stage"] == "pretrain"]
    # no subtree can start before an arm ends: the bound with that dependency (not the goal's bound)
    dependent = max(bound, min(arms, default=0.0) + (work - sum(arms) * stage_gpus["pretrain"]) / peak_gpus)
    busy_s, avail_s, paid_s = gpu_seconds(tl, stage_gpus, end, step)
    # the stage-2/3 phase alone, from its first run: its span against its GPU-work spread over the peak
    first2 = min((min(r["starts"]) for r in done.values() if r["stage"] == "posttrain"), default=tl.t0)
    below_work = sum(r["seconds"] * stage_gpus[r["stage"]] for r in done.values() if r["stage"] != "pretrain")
    over = overheads(tl)
    return {
        "makespan": makespan,
        "critical_path": cp,
        "work_gpu_s": work,
        "peak_gpus": peak_gpus,
        "bound": bound,
        "ratio": makespan / bound,
        "dependent_bound": dependent,
        "dependent_ratio": makespan / dependent,
        "busy_share": busy_s / max(avail_s, 1e-9),
        "paid_share": work / max(paid_s, 1e-9),
        "paid_gpu_s": paid_s,
        **over,
        # the phases' start-ups are this 2-core machine's wall seconds (16 worker processes importing
        # torch on 2 cores), not scaled with the runs; without them: what the schedule itself costs
        "ratio_less_startup": (makespan - sum(v for v in over["phase_startup"].values() if v)) / bound,
        "subtree_phase_ratio": (end - first2) / max(below_work / peak_gpus, 1e-9),
        "fits": len(tl.fits),
        "attempts": sum(len(r["starts"]) for r in tl.runs.values()),
        "trained_twice": sum(1 for r in tl.runs.values() if len(r["done"]) > 1),
        "lost": planned_nodes - len(done),
        "nodes_done": len(done),
    }


# ----------------------------------------------------------------------------- running one simulation


class Watcher(threading.Thread):
    """Polls the cluster's alive worker nodes (their GPUs) and prints a live line every 10 s."""

    def __init__(self, log: Path, total: int, terminal):
        super().__init__(daemon=True)
        self.log, self.total, self.gpus, self.stop, self.terminal = log, total, [], threading.Event(), terminal
        self.nodes: dict[str, float] = {}  # alive worker node id -> GPUs

    def run(self) -> None:
        import ray

        last = 0.0
        while not self.stop.wait(0.25):
            try:
                alive = {n["NodeID"]: n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")}
            except Exception:  # noqa: BLE001  (Ray not up yet, or shut down by the study's end)
                continue
            self.nodes = alive
            self.gpus.append((time.time(), sum(alive.values())))
            if time.time() - last >= 10:
                last = time.time()
                n_done = sum(1 for line in _lines(self.log) if '"event": "done"' in line)
                print(
                    f"  [sim] {len(alive)} GPU nodes, {sum(alive.values()):.0f} GPUs; {n_done}/{self.total} nodes stored",
                    file=self.terminal,
                    flush=True,
                )


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def in_flight(events: list[dict], now: float) -> list[tuple[float, dict]]:
    """Runs started and not stored yet, with the seconds each has left (its stand-in's duration)."""
    done = {e["node_key"] for e in events if e["event"] == "done"}
    return [(e["t"] + e["seconds"] - now, e) for e in events if e["event"] == "start" and e["node_key"] not in done]


def node_of(pid: int) -> str | None:
    """The fake node a process belongs to (every process of a fake node carries its id)."""
    import psutil

    try:
        return psutil.Process(pid).environ().get(NODE_ID_ENV)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def remove_a_node(cluster: FakeCluster, log: Path, watcher: Watcher, after_subtrees: int, removed: list) -> None:
    """Once `after_subtrees` stage-2 runs have started, SIGKILL a worker node the moment a stage-2
    run is in flight on it with at least half its duration left: the kill always lands mid-run
    (an event, not a guess after a sleep; a node picked by an earlier fit event could be idle by
    then on a loaded machine, and the simulation then had nothing to attempt again)."""
    while not removed:
        events = [json.loads(x) for x in _lines(log)]
        if sum(1 for e in events if e["event"] == "start" and e["stage"] == "posttrain") >= after_subtrees:
            now = time.time()
            for left, e in sorted(in_flight(events, now), key=lambda x: -x[0]):
                node = node_of(e["pid"])
                if e["stage"] == "posttrain" and left >= 0.5 * e["seconds"] and node in watcher.nodes:
                    removed.append((time.time(), node, cluster.kill_node(node), e["node_key"]))
                    return
        time.sleep(0.05)


# long: one simulated study, cluster up to figures, in the order it happens
def simulate(case: Case, remove: bool, keep: bool = False) -> dict:
    from raysweep.config import load_study
    from raysweep.ray_instance import init_ray
    from raysweep.study import run_study

    out = Path(tempfile.mkdtemp(prefix="raysweep-sim-"))
    log = out / "standin.jsonl"
    paper = load_study(
        PAPER, [o for o in case.overrides if o.startswith(("posttrain.lr", "posttrain.dropout", "posttrain.batch", "finetune.lr"))]
    )
    overrides = [*HOLDABLE, *case.overrides, f"output_dir={out}", f"pretrain.resources.workers={case.arm_workers}"]
    if case.arm_workers != 8:  # one worker holding the arm's 8 GPUs: the same 8-GPU shape for the scheduler
        overrides.append(f"pretrain.resources.gpus_per_worker={8 // case.arm_workers}")
    if case.max_concurrent:
        overrides.append(f"max_concurrent_trials={case.max_concurrent}")
    study = load_study(PAPER, overrides)
    stand_in, stage_gpus, tps = stand_in_for(paper, case.scale, str(log), case.seed, 8)
    sizes = study.run_counts()
    slots = study.max_concurrent_trials or case.nodes * NODE["GPU"]
    peak = min(case.nodes * NODE["GPU"], max(sizes["pretrain"] * stage_gpus["pretrain"], slots * stage_gpus["posttrain"]))
    with output_to(out / "study.log") as terminal, FakeCluster(NODE, case.nodes, head_cpus=8, idle_timeout_s=6.0) as cluster:
        os.environ["RAY_ADDRESS"] = cluster.address
        try:
            init_ray()
            watcher = Watcher(log, sum(sizes.values()), terminal)
            watcher.start()
            removed: list = []
            if remove:
                threading.Thread(
                    target=remove_a_node, args=(cluster, log, watcher, max(1, sizes["posttrain"] // 3), removed), daemon=True
                ).start()
            t0 = time.time()
            summary = run_study(study, trainer=stand_in)
            wall = time.time() - t0
            watcher.stop.set()
            watcher.join()
        finally:
            os.environ.pop("RAY_ADDRESS", None)
            import ray

            ray.shutdown()
    timeline = Timeline.read(log, watcher.gpus)
    fig = figures(timeline, stage_gpus, peak, sum(sizes.values()))
    fig.update(
        case=case.name,
        removal=removed[0][1][-5:] if removed else None,
        removed_at=(removed[0][0] - timeline.t0) if removed else None,
        # starts of the run that was in flight on the removed node: 2 or more, it was attempted again
        removed_run_starts=len(timeline.runs.get(removed[0][3], {}).get("starts", [])) if removed else None,
        failures=len(summary["failures"]),
        wall=wall,
        out=str(out),
        scale=case.scale,
        tps=tps,
        sizes=sizes,
    )
    if not keep:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    return fig


def print_figures(f: dict, title: str) -> None:
    s = f["scale"]
    print(f"\n{title}")
    print(
        f"  tree: {f['sizes']['pretrain']} arms, {f['sizes']['posttrain']} stage-2, {f['sizes']['finetune']} stage-3 runs; {f['nodes_done']} nodes stored"
    )
    print(
        f"  makespan {f['makespan']:.1f} s simulated = {f['makespan'] / s / 3600:.2f} h on the cluster; lower bound {f['bound'] / s / 3600:.2f} h "
        f"(critical path {f['critical_path'] / s / 3600:.2f} h, GPU-work {f['work_gpu_s'] / s / 3600:.1f} GPU-h ÷ {f['peak_gpus']:.0f} GPUs)"
    )
    print(f"  makespan / lower bound: {f['ratio']:.3f} (goal ≤ {GOAL_RATIO}) -> {'met' if f['ratio'] <= GOAL_RATIO else 'MISSED'}")
    print(
        f"  makespan / bound with the arm dependency (no subtree before an arm ends): {f['dependent_ratio']:.3f} "
        f"(that bound {f['dependent_bound'] / s / 3600:.2f} h)"
    )
    print(
        f"  GPU busy share while work was available: {f['busy_share']:.3f} (goal ≥ {GOAL_BUSY}) -> {'met' if f['busy_share'] >= GOAL_BUSY else 'MISSED'}"
    )
    print(f"  GPU-hours paid {f['paid_gpu_s'] / s / 3600:.1f} (the nodes' lifetimes), of which training {f['paid_share']:.3f}")
    for kinds, lat in f["slot_latency"].items():
        if lat:
            med = sorted(lat)[len(lat) // 2]
            print(
                f"  autoscaler: {' and '.join(kinds)} slots pending -> running: first {min(lat):.1f} s, median {med:.1f} s, last {max(lat):.1f} s "
                f"simulated ({len(lat)} slots)"
            )
    starts = ", ".join(f"{k} {v:.1f} s" for k, v in f["phase_startup"].items() if v is not None)
    print(f"  from a phase's start to its first run: {starts} (wall seconds of this machine, not scaled)")
    print(f"  makespan less those start-ups / lower bound: {f['ratio_less_startup']:.3f}")
    print(f"  stage-2/3 phase, from its first run to the last node: {f['subtree_phase_ratio']:.3f} x its GPU-work / peak GPUs")
    print(f"  between two runs of one slot: {f['gap_mean']:.2f} s on average ({f['gaps']} gaps; MLflow, leases, the queue)")
    print(f"  fits started {f['fits']}; run attempts {f['attempts']}; failures {f['failures']}")
    if f["removal"]:
        print(f"  worker node …{f['removal']} SIGKILLed at {f['removed_at']:.1f} s simulated")
    print(f"  nodes trained twice: {f['trained_twice']} (goal 0); lost: {f['lost']} (goal 0)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="3 stage-2 runs per arm (≤ 5 minutes here)")
    size.add_argument("--smallest", action="store_true", help="1 stage-2 and 1 stage-3 run per arm (the test's case)")
    p.add_argument("--nodes", type=int, default=None, help="the GPU worker type's max nodes (8 GPUs each)")
    p.add_argument("--scale", type=float, default=None, help="simulated seconds per second on the cluster")
    p.add_argument("--max-concurrent", type=int, default=None, help="max_concurrent_trials (default: the study file's)")
    p.add_argument("--arm-workers", type=int, default=None, choices=(1, 2, 4, 8), help="Ray Train workers per arm (8 GPUs in all)")
    p.add_argument("--no-removal", action="store_true", help="only the undisturbed run")
    p.add_argument("--only-removal", action="store_true", help="only the run with a node removed")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--keep", action="store_true", help="keep each simulation's output folder")
    args = p.parse_args()
    if args.smallest:
        case = Case("smallest", SMALLEST, args.nodes or 2, args.scale or 0.003, args.max_concurrent, args.arm_workers or 1)
    elif args.quick:
        case = Case("quick", QUICK, args.nodes or 2, args.scale or 0.01, args.max_concurrent, args.arm_workers or 1)
    else:
        case = Case("paper", [], args.nodes or 4, args.scale or 0.02, args.max_concurrent, args.arm_workers or 8)

    import ray

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, ray {ray.__version__}, python {platform.python_version()}"
    )
    print(
        f"cluster: a CPU head + up to {case.nodes} GPU nodes of {NODE['GPU']} GPUs / {NODE['CPU']} CPUs (fake: raylets on this machine); "
        f"time scale {case.scale:g}; arms as {case.arm_workers} worker(s)"
    )
    print("training: TIMED STAND-IN (bench/standin.py), every run sleeps its predicted H100 duration x the time scale")
    runs = ([] if args.only_removal else [("undisturbed", False)]) + (
        [] if args.no_removal else [("one worker node removed mid-run", True)]
    )
    results = []
    for title, remove in runs:
        f = simulate(case, remove, args.keep)
        results.append({"title": title, **{k: v for k, v in f.items() if k != "slot_latency"}})
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        print_figures(f, f"{case.name} tree, {title} (output {f['out'] if args.keep else 'removed'}; {f['wall']:.0f} s wall for the study)")
        print(f"  wall clock of the study {f['wall']:.0f} s (data, tree, report)")


if __name__ == "__main__":
    main()
