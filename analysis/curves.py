"""L_im and L_ret as functions of the mixing fraction λ (the paper's Fig. 3a and 3b), as pure functions.

One curve per (mode, |D_post|): at each λ, the best (lowest) value over every run at that λ, with
the run it came from. Best-of is what a practitioner would pick at each λ; every run is also kept
so the figures can show the spread behind each point. With several seeds, each point also keeps
the best of each seed on its own: a best over pooled seeds favours whichever λ had the luckiest
seed, the per-seed bests show the spread and let λ be compared seed by seed (arms are paired).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LambdaCurve:
    mode: str  # sweep (Fig. 3a) | compute_matched (Fig. 3b)
    post_tokens: int  # |D_post|
    metric: str  # L_im | L_ret
    mix_fraction: tuple[float, ...]  # λ at each point
    best: tuple[float, ...]
    best_run: tuple[str, ...]
    seeds: tuple[int, ...] = ()  # the seeds with a finite value at every λ of the curve
    seed_best: tuple[tuple[float, ...], ...] = ()  # per λ: the best of each of `seeds`, in that order


def lambda_curves(rows: list[dict], metrics: tuple[str, ...] = ("L_im", "L_ret")) -> list[LambdaCurve]:
    """Curves over λ for each (mode, |D_post|, metric); non-finite values are skipped."""
    out = []
    groups = sorted({(r["mode"], r["post_tokens"]) for r in rows}, key=lambda g: (g[0], g[1] if g[1] is not None else -1))
    for mode, post in groups:
        mine = [r for r in rows if r["mode"] == mode and r["post_tokens"] == post]
        for metric in metrics:
            mixes, best, names, by_seed = [], [], [], []
            for mix in sorted({r["mix_fraction"] for r in mine}):
                at = [r for r in mine if r["mix_fraction"] == mix and math.isfinite(r[metric])]
                if at:
                    top = min(at, key=lambda r: (r[metric], r["name"]))
                    mixes.append(mix)
                    best.append(top[metric])
                    names.append(top["name"])
                    by_seed.append({s: min(r[metric] for r in at if r.get("seed", 0) == s) for s in {r.get("seed", 0) for r in at}})
            seeds = tuple(sorted(set.intersection(*(set(b) for b in by_seed)))) if by_seed else ()
            seed_best = tuple(tuple(b[s] for s in seeds) for b in by_seed)
            out.append(LambdaCurve(mode, post, metric, tuple(mixes), tuple(best), tuple(names), seeds, seed_best))
    return out
