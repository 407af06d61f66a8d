"""The GPU benchmark's code path stays runnable on CPU (CI has no GPU): the same step, a tiny
model, a few steps; and its FLOP count matches the 6·N + attention accounting it documents."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def test_gpu_benchmark_runs_on_cpu():
    cmd = [
        sys.executable,
        "bench/gpu_mfu.py",
        "--device",
        "cpu",
        "--preset",
        "tiny",
        "--seq-len",
        "64",
        "--batch",
        "2",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--compile",
        "off",
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch.compile off:" in out.stdout and "tok/s" in out.stdout and "MFU n/a on CPU" in out.stdout


def test_flops_per_token_of_smollm2_135m():
    from bench.gpu_mfu import flops_per_token
    from raysweep.train.model import build_model

    model = build_model("smollm2-135m", 49_152, 1024)
    n = sum(p.numel() for p in model.parameters())  # tied: the embedding table is the output projection too
    assert 134e6 < n < 135e6
    attention = 12 * 30 * 576 * 1024
    assert flops_per_token(model, 1024) == 6 * n + attention


def test_the_gpu_check_runs_on_cpu_and_its_checks_pass(tmp_path):
    """bench/gpu_check.py's CPU mode: the same checks and sweep as on a GPU, on the debug shape."""
    import json

    out = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--cpu", "--json", str(tmp_path / "g.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    doc = json.loads((tmp_path / "g.json").read_text())
    assert [c["ok"] for c in doc["checks"]] == [True] * 5 and "5 passed, 0 failed" in out.stdout
    assert doc["best"]["tokens_per_s"] > 0 and doc["loop_tokens_per_s"] > 0


def test_the_halving_bench_counts_each_stage_2_run_once_at_its_furthest_piece(tmp_path):
    """bench/halving.py's token count: a rung is a prefix of its run, so a run's tokens are its
    furthest piece's (the run itself, or its last rung), never the sum of its rungs."""
    import json

    from bench.halving import tokens_spent

    def node(folder: str, key: str, stage: str, tokens: int, rung_of: str | None = None) -> None:
        spec = {"stage": stage, "node_key": key, "rung_of": {"node_key": rung_of} if rung_of else None}
        path = tmp_path / folder / key / "node.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"spec": spec, "result": {"tokens": tokens}}))

    node("posttrain", "a", "posttrain", 900)  # a survivor: rungs at 100 and 300, then the whole run
    node("rung", "a1", "posttrain", 100, rung_of="a")
    node("rung", "a2", "posttrain", 300, rung_of="a")
    node("rung", "b1", "posttrain", 100, rung_of="b")  # pruned after its first rung
    node("probe", "p1", "finetune", 10)
    node("probe", "p2", "finetune", 10)
    node("finetune", "f1", "finetune", 50)
    node("pretrain", "arm", "pretrain", 5000)  # arms are the same for both: not counted
    assert tokens_spent(tmp_path) == {"posttrain": 1000, "probe": 20, "finetune": 50}


def test_the_halving_rules_replay_spends_what_a_search_would_and_no_rule_beats_the_oracle():
    """bench/halving_rules.py: a replayed schedule pays each configuration's stage-2 steps up to its
    last rung (all of them for a survivor), a probe per stage-3 lr at each rung it is probed at, and
    the survivors' stage-3 runs; keeping everything costs the grid plus the probes; and no rule
    ending with k configurations keeps more hypervolume than the best k (the oracle)."""
    from bench.halving_rules import Seed, oracle, replay, score

    def pts(x: float) -> list:  # three stage-3 lrs: one front point, two dominated ones
        return [(x, 3 - x), (x + 1, 4 - x), (x + 2, 5 - x)]

    configs = {f"c{i}": i * 0.5 for i in range(4)}
    method = {c: ("mixed" if i < 2 else "unmixed") for i, c in enumerate(configs)}
    probes = {(0.1, r): {c: [(p[0] + 1, p[1] + 1) for p in pts(x)] for c, x in configs.items()} for r in range(4)}
    stage2 = {c: (100, 90, 90) for c in configs}  # 100 tokens a step, 90 steps, none stopped early
    seed = Seed(method, {c: pts(x) for c, x in configs.items()}, probes, stage2, 1000, {0.1: 10}, 4 * 9000 + 12 * 1000)
    everything = replay(seed, [0], 0.1, [2])
    assert everything["tokens"] == seed.grid_tokens + 4 * 3 * 10 and sorted(everything["kept"]) == sorted(configs)
    one = replay(seed, [0], 0.1, [1])  # rung 1/9 of 90 steps: 10 steps, then one of each method goes on
    assert one["tokens"] == 2 * 10 * 100 + 2 * 90 * 100 + 4 * 3 * 10 + 2 * 3 * 1000
    for k in (1, 2):
        kept = replay(seed, [0], 0.1, [k])["kept"]
        shares, _ = score(seed, kept)
        assert all(shares[m] <= best + 1e-12 for m, best in oracle(seed, k).items())
