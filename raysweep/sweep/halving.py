"""Stage-2 search by multi-objective successive halving over the checkpoint tree
(`posttrain.search: halving`).

The grid trains every stage-2 configuration to the end and fine-tunes each at every stage-3 lr,
though each method's frontier ends up holding a handful of them. Halving trains the same grid in
rungs, growing shares of the stage-2 budget (`posttrain.rungs`). At each rung every live
configuration has trained to the rung's step (or stopped early), and a short probe at every
stage-3 lr (`posttrain.probe_share` of a stage-3 run's tokens, from the rung's weights) gives it
(L_ret, L_ft) points. Within each method (mixed and unmixed apart, so each method's frontier is
estimated with the same care) configurations are ranked by non-dominated sorting of their points,
ties broken greedily by the hypervolume their points add to those ranked before them, and the
best ceil(n / η) go on (`posttrain.eta`).
The survivors then train to the end and get their full stage-3 runs.

A rung is a prefix of its run (raysweep.spec.RunSpec.rung_of): no step is trained twice, and a
survivor continues from its last rung to the grid's own node for that configuration, same key,
same losses, with the grid's stage-3 children. Every rung and probe is a node of the store (its
MLflow run tagged as a probe, off the frontier tables), so a killed search resumes where it stopped.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

from raysweep.config import Study
from raysweep.frontier import dominates, front_ranks, hypervolume_2d, reference_point
from raysweep.spec import Node, balanced_point, finetune_losses
from raysweep.store import storage
from raysweep.store.keys import derive_seed, node_key
from raysweep.store.nodes import drop_weights, node_done
from raysweep.sweep.plan import Stage2Config, grid, method_of, plan, plan_finetune, plan_posttrain, steps_for
from raysweep.tags import METHOD, PROBE

Point = tuple[float, float]  # (L_ret, L_ft)


# ----------------------------------------------------------------------------- the arithmetic (pure)


def rung_step(max_steps: int, share: float) -> int:
    """The step a run of `max_steps` stops at for a rung of `share`: at least 1, at most its end
    (a run that short trains whole at that rung)."""
    return min(max_steps, max(1, round(share * max_steps)))


def probe_steps(steps: int, share: float) -> int:
    """A probe's steps: `share` of a stage-3 run's, at least one."""
    return max(1, round(share * steps))


def rank_configs(points: dict[str, list[Point]], margin: float = 0.05) -> list[dict]:
    """The configurations of one method, best first: by the best non-dominated rank among their
    points; within a rank, greedily by the hypervolume their points add to those of every
    configuration before them (so the kept set covers the front, its corners included); then by
    name. A configuration with no finite point comes last. The reference point is the worst of the
    method's points plus `margin` of their range (raysweep.frontier.reference_point, the analysis's
    own), so a corner point counts."""
    owned = [(c, p) for c, ps in points.items() for p in ps if all(map(math.isfinite, p))]
    ranks = front_ranks([p for _, p in owned])
    best = {c: min((r for (o, _), r in zip(owned, ranks) if o == c), default=math.inf) for c in points}
    ref = reference_point([p for _, p in owned], margin)
    mine = {c: [p for o, p in owned if o == c] for c in points}
    order, before = [], []
    for rank in sorted(set(best.values())):
        layer = sorted(c for c in points if best[c] == rank)
        while layer:
            base = hypervolume_2d(before, ref)
            gains = {c: hypervolume_2d(before + mine[c], ref) - base for c in layer}
            c = max(layer, key=lambda c: (gains[c], -layer.index(c)))
            order.append({"config": c, "rank": rank if math.isfinite(rank) else None, "added_hypervolume": gains[c]})
            before += mine[c]
            layer.remove(c)
    return order


def select(methods: dict[str, dict[str, list[Point]]], eta: int) -> list[dict]:
    """Per method, the best ceil(n / η) configurations go on; each entry says why a pruned one did
    not (a kept configuration whose point dominates its best point, or the hypervolume it adds)."""
    out = []
    for method, points in methods.items():
        ranked = rank_configs(points)
        keep = math.ceil(len(ranked) / eta)
        kept = [e["config"] for e in ranked[:keep]]
        for i, e in enumerate(ranked):
            entry = {**e, "method": method, "kept": i < keep, "reason": ""}
            if i >= keep:
                entry["reason"] = _why_pruned(e, points, kept, ranked[keep - 1])
            out.append(entry)
    return out


def _why_pruned(entry: dict, points: dict[str, list[Point]], kept: list[str], last_kept: dict) -> str:
    mine = [p for p in points[entry["config"]] if all(map(math.isfinite, p))]
    if not mine:
        return "no finite probe point (diverged or failed)"
    if entry["rank"] == last_kept["rank"]:
        return (
            f"as near the front as the last kept, but adds {entry['added_hypervolume']:.3g} hypervolume to those ranked before it "
            f"(the last kept added {last_kept['added_hypervolume']:.3g})"
        )
    others = [(k, q) for k in kept for q in points[k]] + [(c, q) for c, qs in points.items() if c not in kept for q in qs]
    for p in sorted(mine, key=lambda p: (p[0] + p[1], p)):
        for k, q in others:
            if dominates(q, p):
                return f"dominated by {k} ({q[0]:.3f}, {q[1]:.3f} against {p[0]:.3f}, {p[1]:.3f})"
    return "behind the kept ones"  # not reached: a rank above the last kept's means a dominated point


def survivors(n: int, rungs: int, eta: int) -> list[int]:
    """How many of a method's n configurations train at each rung (the first: all of them)."""
    out = [n]
    for _ in range(rungs - 1):
        out.append(math.ceil(out[-1] / eta))
    return out


def grid_by_method(study: Study) -> dict[str, list[Stage2Config]]:
    """The grid's stage-2 configurations of each method (halving prunes within a method)."""
    methods: dict[str, list[Stage2Config]] = {}
    for c in grid(study):
        methods.setdefault(method_of(c.mix_fraction, c.replay, c.dropout, c.tuning), []).append(c)
    return methods


def planned_nodes(study: Study) -> dict[str, int]:
    """The nodes halving stores at most, from the study alone (what --dry-run's disk lines count):
    a rung node per live configuration at each rung but the last, a probe per stage-3 lr from each,
    and the last rung's configurations' whole stage-2 runs with their stage-3 children."""
    p2 = study.posttrain
    counts = [survivors(len(configs), len(p2.rungs), eta_of(study)) for configs in grid_by_method(study).values()]
    rungs = sum(sum(c[:-1]) for c in counts)
    final = sum(c[-1] for c in counts)
    # a pruned configuration's rung drops its weights once decided (halving_rounds): the kept rungs keep
    # theirs; at rung r the store holds the kept rungs before it and every rung of r, until r is decided
    kept = sum(sum(c[1:]) for c in counts)
    peak = max((sum(sum(c[1 : r + 1]) + c[r] for c in counts) for r in range(len(p2.rungs) - 1)), default=0)
    return {
        "rung": rungs,
        "rung_weights": kept,
        "rung_weights_peak": peak,
        "probe": rungs * len(study.finetune.lr),
        "posttrain": final,
        "finetune": final * len(study.finetune.lr),
    }


def eta_of(study: Study) -> int:
    """The η the search prunes with: `posttrain.eta`, or with `posttrain.budget_share` the smallest
    η whose planned tokens (planned_tokens) stay within that share of the grid's. ValueError naming
    the key where no η can (the first rung alone costs more)."""
    p2 = study.posttrain
    if p2.budget_share is None:
        return p2.eta
    most = max(2, max(len(c) for c in grid_by_method(study).values()))
    for eta in range(2, most + 1):
        t = planned_tokens(study, eta)
        if t["halving"] <= p2.budget_share * t["grid"]:
            return eta
    t = planned_tokens(study, most)
    raise ValueError(
        f"posttrain.budget_share: {p2.budget_share:g} of the grid's tokens is less than halving spends with any η "
        f"(at least {t['halving'] / t['grid']:.0%}: every configuration trains to the first rung and is probed); "
        "raise it, or put the first of posttrain.rungs earlier, or lower posttrain.probe_share"
    )


def planned_tokens(study: Study, eta: int | None = None) -> dict:
    """Halving's stage-2 + stage-3 training tokens at most (no run stopping early), against the
    grid's, from the study alone (what --dry-run prints): per method, the configurations at each
    rung (`survivors`) train that rung's share of an average configuration's steps, with a probe
    per stage-3 lr before the last rung; the last rung's get their full stage-3 runs."""
    p2, p3, seq = study.posttrain, study.finetune, study.model.seq_len
    eta = eta_of(study) if eta is None else eta
    ft_steps = steps_for(p3.tokens, p3.batch_size, seq)
    ft, probe = ft_steps * p3.batch_size * seq, probe_steps(ft_steps, p2.probe_share) * p3.batch_size * seq
    methods = {m: [steps_for(p2.tokens, c.batch_size, seq) * c.batch_size * seq for c in cs] for m, cs in grid_by_method(study).items()}
    total = {"grid": 0, "halving": 0, "per_method": {}}
    for method, each in methods.items():
        counts, mean = survivors(len(each), len(p2.rungs), eta), sum(each) / len(each)
        shares = [0.0, *p2.rungs]
        stage2 = sum(n * (shares[r + 1] - shares[r]) * mean for r, n in enumerate(counts))
        probes = sum(counts[:-1]) * len(p3.lr) * probe
        total["grid"] += sum(each) + len(each) * len(p3.lr) * ft
        total["halving"] += round(stage2 + probes + counts[-1] * len(p3.lr) * ft)
        total["per_method"][method] = counts
    return total


# ----------------------------------------------------------------------------- the rungs' nodes


def config_name(run: Node) -> str:
    """A stage-2 configuration as the search's lines name it: its run's label without the stage."""
    return run.spec.label.removeprefix("posttrain ")


def rung_node(study: Study, run: Node, step: int, index: int) -> Node:
    """The first `step` steps of stage-2 run `run`, a node of its own (raysweep.spec.RunSpec.rung_of)."""
    s = run.spec
    key = node_key("rung", s.node_key, step)
    spec = replace(
        s,
        label=f"{s.label} rung {index + 1} (step {step})",
        node_key=key,
        node_dir=storage.join(study.checkpoints, "rung", key),
        stop_at=step,
        rung_of={"node_key": s.node_key, "node_dir": s.node_dir, "label": s.label},
        meta={**s.meta, "rung": step},
    )
    params = {**run.params, "rung": index + 1, "rung_step": step}
    return Node(spec, f"rung{index + 1}/{run.name}", run.parent, params, {**run.tags, PROBE: f"rung {index + 1}"}, run.stream)


def head_at(study: Study, run: Node, index: int) -> tuple[Node, int]:
    """What a configuration is probed from at rung `index`, and that rung's index: its rung node
    there (trained now, or by an earlier attempt); once its run has finished (stopped early), the
    rung where it finished, whose probes then stand for every later rung; a run too short for the
    rung, whole."""
    max_steps = run.spec.max_steps
    steps = [rung_step(max_steps, share) for share in study.posttrain.rungs[: index + 1]]
    here = rung_node(study, run, steps[-1], index) if steps[-1] < max_steps else None
    done = node_done(run.spec.node_dir)
    if here is None or node_done(here.spec.node_dir) or not done:
        return (here, index) if here is not None else (run, index)
    for k, step in enumerate(steps[:-1]):
        earlier = rung_node(study, run, step, k) if step < max_steps else None
        reached = node_done(earlier.spec.node_dir) if earlier is not None else None
        if reached and reached["result"]["steps"] == done["result"]["steps"]:
            return earlier, k
    return run, index  # finished without this search's rungs (another study sharing the store): probed from its end


def probe_nodes(study: Study, data, head: Node, cfg: Stage2Config, index: int) -> list[Node]:
    """Short stage-3 runs at every stage-3 lr from `head` (a rung, or the finished run itself):
    the rung's (L_ret, L_ft) points. They keep no weights."""
    share, probes = study.posttrain.probe_share, []
    for lr in study.finetune.lr:
        full = plan_finetune(study, data, head, cfg, lr)
        steps = probe_steps(full.spec.max_steps, share)
        key = node_key("probe", head.spec.node_key, lr, steps, study.seed)
        spec = replace(
            full.spec,
            label=f"probe {full.spec.label.removeprefix('finetune ')} rung {index + 1}",
            node_key=key,
            node_dir=storage.join(study.checkpoints, "probe", key),
            max_steps=steps,
            warmup_steps=min(full.spec.warmup_steps, steps // 2),
            seed=derive_seed(study.seed, "probe", head.name, lr),
            keep_weights=False,
        )
        params = {**full.params, "probe_steps": steps, "rung": index + 1}
        probes.append(
            Node(spec, f"probe{index + 1}/{full.name}", head.spec.node_key, params, {**full.tags, PROBE: f"rung {index + 1}"}, full.stream)
        )
    return probes


def probe_points(probes: list[Node]) -> list[Point]:
    points = []
    for p in probes:
        done = node_done(p.spec.node_dir)
        if done:
            named = finetune_losses(done["result"]["losses"])
            points.append((named["L_ret"], named["L_ft"]))
    return points


# ----------------------------------------------------------------------------- the search


def halving_rounds(study: Study, data):
    """The search on the real tree (raysweep.sweep.tree.SEARCHES): yields one round per rung, the
    live configurations' rungs and probes, then one of the survivors' whole runs and their stage-3
    children; it is sent each round's TreeResult. Returns the TreeResult of the whole search (the
    survivors' subtrees; every rung's decisions in `halving`)."""
    p2, eta = study.posttrain, eta_of(study)
    configs = grid(study)
    arms, _ = plan(study, data, [])
    arm_of = {a.params["mix_fraction"]: a for a in arms}
    planned = [(c, plan_posttrain(study, data, arm_of[c.mix_fraction], c)) for c in configs]
    runs = {config_name(run): (c, run) for c, run in planned}
    live, log, total, points = list(runs), [], None, {}  # points: configuration -> its latest probes' (L_ret, L_ft)
    for index, share in enumerate(p2.rungs[:-1]):
        probed = {}  # configuration -> (what it is probed from, its probes)
        for name in live:
            cfg, run = runs[name]
            head, at = head_at(study, run, index)
            probed[name] = (head, probe_nodes(study, data, head, cfg, at))
        subtrees = list(probed.values())
        print(f"[halving] rung {index + 1}/{len(p2.rungs)}: {len(live)} stage-2 configurations at {share:.3g} of their budget", flush=True)
        result = yield arms, subtrees
        total = result if total is None else total.absorb(result)
        for name, (_, probes) in probed.items():
            points[name] = probe_points(probes)
        methods: dict[str, dict[str, list[Point]]] = {}
        for name in live:
            methods.setdefault(runs[name][1].tags[METHOD], {})[name] = points.get(name, [])
        decisions = select(methods, eta)
        for d in decisions:
            mine = points.get(d["config"], [])
            log.append({"rung": index + 1, "share": share, **d, "points": mine, "best": balanced_point(mine)})
        live = [d["config"] for d in decisions if d["kept"]]
        for d in decisions:
            if not d["kept"]:
                print(f"[halving] rung {index + 1}: pruned {d['config']} ({d['method']}): {d['reason']}", flush=True)
                head = probed[d["config"]][0]
                if head.spec.rung_of is not None:  # its probes are stored: nothing loads these weights again
                    drop_weights(head.spec.node_dir, f"halving pruned {d['config']} at rung {index + 1}")
    final_arms, final = plan(study, data, [runs[name][0] for name in live])
    print(f"[halving] final: {len(live)} stage-2 configurations train to the end, with their stage-3 runs", flush=True)
    result = yield final_arms, final
    total = result if total is None else total.absorb(result)
    total.subtrees = final
    total.halving = log
    path = study.own_file("halving.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(log, indent=1))
    return total
