"""Which pruning rule predicts the grid's frontier (issue 47)? Collect once, replay every rule.

A rung is a prefix of its run and a probe is a pure function of its rung's weights, so what any
halving schedule would see and keep can be replayed exactly from one collection: the grid, plus
every configuration trained to every rung of a dense ladder and probed there at each probe share
(the real `posttrain.search: halving` with nothing pruned, so that its last rung is the grid). Replaying
a rule then costs milliseconds, and its tokens and hypervolume are what a real halving study with
that rule would spend and reach (`bench/halving.py` checks the kept rule for real).

    python bench/halving_rules.py collect --quick --root /tmp/rules-quick       # seeds 0-2
    python bench/halving_rules.py replay --root /tmp/rules-quick

Each replayed rule prints one line: the share of the grid's stage-2 + stage-3 tokens it spends,
the worst and median share of each method's grid hypervolume it keeps, and in how many seeds its
verdict (mixed against unmixed in (L_ret, L_ft)) equals the grid's.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__:
    from bench.halving import GOALS, LARGER, SMOKE, TWIN
    from bench.terminal import output_to
else:
    from halving import GOALS, LARGER, SMOKE, TWIN
    from terminal import output_to

LADDER = [1 / 9, 1 / 6, 1 / 3, 1 / 2]  # the rung shares collected (1 = the grid's own runs)
PROBES = [0.1, 0.2, 0.3]  # the probe shares collected


# ----------------------------------------------------------------------------- collect


def collect(seed: int, root: Path, extra: list[str], probes: list[float]) -> None:
    """Every configuration at every rung of LADDER, probed at each of PROBES, then trained to the
    end with its stage-3 runs: with nothing pruned, the last rung is the grid itself (same keys)."""
    import raysweep.sweep.halving as halving
    from raysweep.config import load_study
    from raysweep.study import run_study

    out = root / f"seed{seed}"
    ladder = ", ".join(f"{s:.6g}" for s in LADDER)
    common = [f"seed={seed}", *TWIN, *extra, f"output_dir={out}", "posttrain.search=halving", f"posttrain.rungs=[{ladder}, 1]"]
    halving.select = _keep_all
    for share in probes:  # a later share finds every rung stored and trains only its probes
        run_study(load_study(SMOKE, [*common, f"posttrain.probe_share={share}"]))
        (out / f"rungs-{share:g}.json").write_text((out / "halving.json").read_text())


def _keep_all(methods: dict, eta: int) -> list[dict]:
    from raysweep.sweep.halving import rank_configs

    return [{**e, "method": m, "kept": True, "reason": ""} for m, points in methods.items() for e in rank_configs(points)]


# ----------------------------------------------------------------------------- what one seed holds


@dataclass
class Seed:
    """One collected seed: each configuration's final (L_ret, L_ft) points (the grid's), its
    probe points at every collected rung and probe share, and what its pieces cost in tokens."""

    method: dict[str, str]  # configuration -> method
    final: dict[str, list]  # configuration -> the grid's stage-3 points
    probes: dict[tuple[float, int], dict[str, list]]  # (probe share, rung index in LADDER) -> configuration -> points
    stage2: dict[str, tuple[int, int, int]]  # configuration -> (tokens per step, max steps, steps its run trained)
    stage3: int  # tokens of one stage-3 run
    probe_tokens: dict[float, int]  # probe share -> tokens of one probe
    grid_tokens: int


def load_seed(folder: Path) -> Seed:
    from raysweep.spec import finetune_losses
    from raysweep.sweep.halving import probe_steps

    ckpt = folder / "checkpoints"
    specs = {p.parent.name: json.loads(p.read_text()) for p in (ckpt / "posttrain").glob("*/node.json")}
    name = {k: n["spec"]["label"].removeprefix("posttrain ") for k, n in specs.items()}
    final: dict[str, list] = {name[k]: [] for k in specs}
    stage3 = 0
    for p in (ckpt / "finetune").glob("*/node.json"):
        node = json.loads(p.read_text())
        named = finetune_losses(node["result"]["losses"])
        final[name[node["spec"]["meta"]["parent"]]].append((named["L_ret"], named["L_ft"]))
        stage3 = node["result"]["tokens"]
    stage2 = {}
    for k, n in specs.items():
        per_step = n["result"]["tokens"] // n["result"]["steps"]
        stage2[name[k]] = (per_step, n["spec"]["max_steps"], n["result"]["steps"])
    probe_tokens = {}  # a probe's steps -> its tokens
    for p in (ckpt / "probe").glob("*/node.json"):
        node = json.loads(p.read_text())
        probe_tokens.setdefault(node["spec"]["max_steps"], node["result"]["tokens"])
    method, probes = {}, {}
    shares = sorted(float(p.stem.removeprefix("rungs-")) for p in folder.glob("rungs-*.json"))
    for share in shares:
        for e in json.loads((folder / f"rungs-{share:g}.json").read_text()):
            method[e["config"]] = e["method"]
            probes.setdefault((share, e["rung"] - 1), {})[e["config"]] = [tuple(p) for p in e["points"]]
    ft_steps = json.loads(next((ckpt / "finetune").glob("*/node.json")).read_text())["spec"]["max_steps"]
    per_probe = {share: probe_tokens[probe_steps(ft_steps, share)] for share in shares}
    grid_tokens = sum(t[0] * t[2] for t in stage2.values()) + sum(len(v) for v in final.values()) * stage3
    return Seed(method, final, probes, stage2, stage3, per_probe, grid_tokens)


# ----------------------------------------------------------------------------- replay


Rule = Callable[[dict[str, dict[str, list]], dict[str, dict[str, list]] | None, int], list[str]]


def replay(seed: Seed, rungs: list[int], probe: float, keep: list[int], rule: Rule | None = None, lrs: list[int] | None = None) -> dict:
    """Run a schedule on a collected seed: probe at LADDER[rungs[i]] (at the stage-3 lrs of index
    `lrs`, default all), keep keep[i] per method (or what `rule` keeps), the last rung's survivors
    train to the end. Returns tokens and kept."""
    from raysweep.sweep.halving import rung_step

    live = list(seed.final)
    reached = dict.fromkeys(live, 0)  # configuration -> stage-2 steps it has trained
    tokens, previous, seen = 0, None, {}
    for i, r in enumerate(rungs):
        points = {c: [p for i, p in enumerate(ps) if lrs is None or i in lrs] for c, ps in seed.probes[(probe, r)].items()}
        methods: dict[str, dict[str, list]] = {}
        for c in live:
            per_step, max_steps, done = seed.stage2[c]
            step = min(rung_step(max_steps, LADDER[r]), done)
            reached[c] = max(reached[c], step)
            if seen.get(c) != points[c]:  # the same points: the same probes (a run stopped before this rung)
                tokens += len(points[c]) * seed.probe_tokens[probe]
            seen[c] = points[c]
            methods.setdefault(seed.method[c], {})[c] = points[c]
        live = [
            c
            for m, pts in methods.items()
            for c in _choose(pts, previous and previous.get(m), keep[i] if isinstance(keep, list) else keep, rule)
        ]
        previous = methods
    for c, n in reached.items():
        per_step, _, done = seed.stage2[c]
        tokens += per_step * (done if c in live else n)
    tokens += sum(len(seed.final[c]) for c in live) * seed.stage3
    return {"tokens": tokens, "kept": live}


def _choose(points: dict[str, list], before: dict[str, list] | None, keep: int, rule: Rule | None) -> list[str]:
    from raysweep.sweep.halving import rank_configs

    if rule is not None:
        return rule(points, before, keep)
    return [e["config"] for e in rank_configs(points)[:keep]]


def score(seed: Seed, kept: list[str]) -> tuple[dict[str, float], bool]:
    """Each method's share of the grid's hypervolume, and whether the verdict equals the grid's."""
    from analysis.verdict import verdict
    from raysweep.frontier import hypervolume_2d, reference_point

    def pts(configs, m):
        return np.array([p for c in configs if seed.method[c] == m for p in seed.final[c]], float).reshape(-1, 2)

    ref = reference_point(np.vstack([pts(seed.final, m) for m in ("mixed", "unmixed")]))
    shares = {m: hypervolume_2d(pts(kept, m), ref) / hypervolume_2d(pts(seed.final, m), ref) for m in ("mixed", "unmixed")}
    same = (
        verdict(pts(kept, "mixed"), pts(kept, "unmixed"), "mixed", "unmixed", "L_ret", "L_ft").kind
        == verdict(pts(seed.final, "mixed"), pts(seed.final, "unmixed"), "mixed", "unmixed", "L_ret", "L_ft").kind
    )
    return shares, same


def oracle(seed: Seed, k: int) -> dict[str, float]:
    """Each method's largest share of the grid's hypervolume that any k of its configurations keep
    (what a rule that ends with k configurations can reach at best)."""
    from itertools import combinations

    best = {}
    for m in ("mixed", "unmixed"):
        mine, others = [c for c in seed.final if seed.method[c] == m], [c for c in seed.final if seed.method[c] != m]
        best[m] = max(score(seed, [*subset, *others])[0][m] for subset in combinations(mine, k))
    return best


def report(name: str, seeds: list[Seed], schedule: dict) -> dict:
    results = [replay(s, **schedule) for s in seeds]
    tokens = sum(r["tokens"] for r in results) / sum(s.grid_tokens for s in seeds)
    scored = [score(s, r["kept"]) for s, r in zip(seeds, results)]
    shares = [v for sh, _ in scored for v in sh.values()]
    agree = sum(same for _, same in scored)
    ok = tokens <= GOALS["tokens"] and min(shares) >= GOALS["hypervolume"] and agree == len(seeds)
    print(
        f"{name:58s} tokens {tokens:6.1%}  hypervolume worst {min(shares):.3f} median {statistics.median(shares):.3f}  verdicts {agree}/{len(seeds)}{'  ✔' if ok else ''}"
    )
    return {"rule": name, "tokens": tokens, "worst": min(shares), "median": statistics.median(shares), "agree": agree}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["collect", "replay"])
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--quick", action="store_true", help="the small twin (the smoke study's budgets)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--probes", type=float, nargs="+", default=PROBES, help="collect: the probe shares (another run adds shares)")
    args = p.parse_args()
    if args.what == "collect":
        args.root.mkdir(parents=True, exist_ok=True)
        with output_to(args.root / "studies.log"):
            for seed in args.seeds:
                collect(seed, args.root, [] if args.quick else LARGER, args.probes)
        return
    seeds = [load_seed(args.root / f"seed{s}") for s in args.seeds]
    for k in (2, 3, 4):
        shares = [v for s in seeds for v in oracle(s, k).values()]
        print(
            f"{f'oracle: the best {k} configurations of each method':58s} tokens      -  hypervolume worst {min(shares):.3f} median {statistics.median(shares):.3f}"
        )
    for name, schedule in schedules().items():
        if all(schedule["probe"] in s.probe_tokens for s in seeds):  # collected at that probe share
            report(name, seeds, schedule)


def _layers(points: dict[str, list], before, keep: int) -> list[str]:
    """MO-ASHA's promotion: every configuration with a point on the rung's front goes on, at least `keep`."""
    from raysweep.sweep.halving import rank_configs

    ranked = rank_configs(points)
    front = sum(e["rank"] == 0 for e in ranked)
    return [e["config"] for e in ranked[: max(keep, front)]]


def _slope(points: dict[str, list], before, keep: int) -> list[str]:
    """Rank the points each probe would reach if it went on improving as it did between the last two
    rungs (one more step of the same size in log-share: 2 p_now - p_before, per stage-3 lr)."""
    from raysweep.sweep.halving import rank_configs

    if before is None:
        return [e["config"] for e in rank_configs(points)[:keep]]
    ahead = {c: [(2 * a[0] - b[0], 2 * a[1] - b[1]) for a, b in zip(ps, before.get(c, ps))] for c, ps in points.items()}
    return [e["config"] for e in rank_configs(ahead)[:keep]]


def _balanced(points: dict[str, list], before, keep: int) -> list[str]:
    """Rank by each configuration's best L_ret + L_ft (the point nearest the origin's corner)."""
    best = {c: min((p[0] + p[1] for p in ps), default=float("inf")) for c, ps in points.items()}
    return sorted(points, key=lambda c: (best[c], c))[:keep]


def schedules() -> dict[str, dict]:
    """The rules replayed (LADDER indices: 0 = 1/9, 1 = 1/6, 2 = 1/3, 3 = 1/2)."""
    out = {}
    for probe in PROBES:
        tag = f"probes {probe:g}"
        out[f"today: 1/9, 1/3 keep 4, 2; {tag}"] = {"rungs": [0, 2], "probe": probe, "keep": [4, 2]}
        out[f"eta 2: 1/9, 1/3 keep 6, 3; {tag}"] = {"rungs": [0, 2], "probe": probe, "keep": [6, 3]}
        out[f"1/9, 1/3 keep 4, 3; {tag}"] = {"rungs": [0, 2], "probe": probe, "keep": [4, 3]}
        out[f"1/9, 1/3 keep 5, 3; {tag}"] = {"rungs": [0, 2], "probe": probe, "keep": [5, 3]}
        out[f"1/6, 1/3 keep 4, 2; {tag}"] = {"rungs": [1, 2], "probe": probe, "keep": [4, 2]}
        out[f"1/6, 1/2 keep 4, 2; {tag}"] = {"rungs": [1, 3], "probe": probe, "keep": [4, 2]}
        out[f"1/6, 1/2 keep 4, 3; {tag}"] = {"rungs": [1, 3], "probe": probe, "keep": [4, 3]}
        for r, name in enumerate(["1/9", "1/6", "1/3"]):
            out[f"one rung {name} keep 3; {tag}"] = {"rungs": [r], "probe": probe, "keep": [3]}
        out[f"one rung 1/9 keep 4; {tag}"] = {"rungs": [0], "probe": probe, "keep": [4]}
        for i, lr in enumerate(["low", "middle", "high"]):
            out[f"one rung 1/9 keep 4, {lr} stage-3 lr only; {tag}"] = {"rungs": [0], "probe": probe, "keep": [4], "lrs": [i]}
            out[f"1/9, 1/3 keep 6, 4, {lr} stage-3 lr only; {tag}"] = {"rungs": [0, 2], "probe": probe, "keep": [6, 4], "lrs": [i]}
        out[f"one rung 1/9 keep 4, low and high stage-3 lrs; {tag}"] = {"rungs": [0], "probe": probe, "keep": [4], "lrs": [0, 2]}
        out[f"layers: 1/9, 1/3 keep ≥ 4, ≥ 2; {tag}"] = {"rungs": [0, 2], "probe": probe, "keep": [4, 2], "rule": _layers}
        out[f"layers: 1/9, 1/3 keep ≥ 3, ≥ 2; {tag}"] = {"rungs": [0, 2], "probe": probe, "keep": [3, 2], "rule": _layers}
        out[f"slope: 1/9, 1/3 keep 4, 2; {tag}"] = {"rungs": [0, 2], "probe": probe, "keep": [4, 2], "rule": _slope}
        out[f"slope: 1/9, 1/6, 1/3 keep 6, 4, 2; {tag}"] = {"rungs": [0, 1, 2], "probe": probe, "keep": [6, 4, 2], "rule": _slope}
        out[f"balanced: 1/9, 1/3 keep 4, 2; {tag}"] = {"rungs": [0, 2], "probe": probe, "keep": [4, 2], "rule": _balanced}
        out[f"balanced: 1/9, 1/3 keep 4, 3; {tag}"] = {"rungs": [0, 2], "probe": probe, "keep": [4, 3], "rule": _balanced}
        out[f"balanced: one rung 1/9 keep 3; {tag}"] = {"rungs": [0], "probe": probe, "keep": [3], "rule": _balanced}
        out[f"balanced: 1/6, 1/3 keep 4, 2; {tag}"] = {"rungs": [1, 2], "probe": probe, "keep": [4, 2], "rule": _balanced}
    return out


if __name__ == "__main__":
    main()
