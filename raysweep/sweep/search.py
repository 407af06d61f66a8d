"""Stage-2 search with Optuna (`posttrain.search: optuna`): ask and tell in rounds, objectives from
the stage-3 children.

The grid (the paper's way) trains every combination of the stage-2 axes. A search instead gives each
arm (λ) its own Optuna study that proposes `posttrain.trials` stage-2 configurations, `optuna_batch`
at a time: a round's configurations train side by side (each followed by its stage-3 children, as
in the grid), then every trial is told the (L_ret, L_ft) of its children. Two objectives, both
minimised, so Optuna's multi-objective TPE spends later trials where the (L_ret, L_ft) frontier
moves. A stage-2 run has one child per stage-3 learning rate; the pair told is that of its best
balanced child (lowest L_ret + L_ft), the point of its own small front nearest the origin's corner.

The learning rate is searched log-uniformly between the smallest and largest value of
`posttrain.lr`; dropout, replay, tuning and batch size are picked from their lists, so every run
still belongs to one of the analysis's methods (a continuous dropout would make every run
"+dropout").

Reproducible: each arm's sampler is seeded from (study seed, λ), a round's configurations are
asked before any result is told, and results are told in a fixed order, so the same study file
asks for the same configurations on any cluster, at any concurrency. Resuming replays the rounds:
finished nodes are not trained again, their stored results are told again, and the search goes on
where it stopped.
"""

from __future__ import annotations

import json

from raysweep.config import Study
from raysweep.spec import balanced_point, finetune_losses
from raysweep.store.keys import derive_seed
from raysweep.store.nodes import node_done
from raysweep.sweep.plan import Stage2Config, plan


def tpe_options(p2) -> dict:
    """Every TPE option that decides a proposal, spelled out: Optuna 5.0 turned the multivariate and
    constant-liar modes on by default, so a study left to the defaults proposes other configurations
    under another Optuna version. These are Optuna 4's defaults, the ones the searches so far ran with
    (the options Optuna deprecates are left at their only value)."""
    return {
        "n_startup_trials": min(p2.optuna_batch, p2.trials),
        "multivariate": False,
        "group": False,
        "constant_liar": False,
        "n_ei_candidates": 24,
    }


def suggest(trial, study: Study, mix: float) -> Stage2Config:
    """One stage-2 configuration for an Optuna trial (see the module docstring for the space)."""
    p2 = study.posttrain
    lo, hi = min(p2.lr), max(p2.lr)
    lr = trial.suggest_float("lr", lo, hi, log=True) if hi > lo else lo

    def pick(name: str, values: list):
        return trial.suggest_categorical(name, values) if len(values) > 1 else values[0]

    return Stage2Config(
        mix,
        lr,
        pick("dropout", p2.dropout),
        pick("replay", p2.replay),
        pick("tuning", p2.tuning),
        pick("batch_size", p2.batch_sizes),
        trial=trial.number,
    )


def searchers(study: Study) -> dict:
    """One seeded multi-objective Optuna study per arm. The first round samples at random (TPE's
    start-up trials), later rounds model the results told so far."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    p2 = study.posttrain
    out = {}
    for mix in study.pretrain.mix_fraction:
        sampler = optuna.samplers.TPESampler(seed=derive_seed(study.seed, "optuna", mix), **tpe_options(p2))
        out[mix] = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler, study_name=f"{study.name} λ={mix:g}")
    return out


def search_loop(study: Study):
    """Ask, train, tell until every arm has `trials` configurations: yields each round's
    configurations and is sent each back with its told pair (None: failed). Returns the search's log."""
    from optuna.trial import TrialState

    p2 = study.posttrain
    opt = searchers(study)
    log: list[dict] = []
    for start in range(0, p2.trials, p2.optuna_batch):
        asked = []
        for mix, s in opt.items():
            for _ in range(min(p2.optuna_batch, p2.trials - start)):
                trial = s.ask()
                asked.append((mix, trial, suggest(trial, study, mix)))
        told = yield [c for _, _, c in asked]
        results = {(c.mix_fraction, c.trial): v for c, v in told}
        for mix, trial, cfg in asked:
            values = results.get((mix, cfg.trial))
            if values is None:
                opt[mix].tell(trial, state=TrialState.FAIL)
            else:
                opt[mix].tell(trial, list(values))
            log.append(
                {
                    "mix_fraction": mix,
                    "trial": cfg.trial,
                    "round": start // p2.optuna_batch,
                    "lr": cfg.lr,
                    "dropout": cfg.dropout,
                    "replay": cfg.replay,
                    "tuning": cfg.tuning,
                    "batch_size": cfg.batch_size,
                    "L_ret": values[0] if values else None,
                    "L_ft": values[1] if values else None,
                }
            )
    return log


def optuna_rounds(study: Study, data):
    """The search on the real tree (raysweep.sweep.tree.SEARCHES): yields each round's arms
    (trained in the first round, skipped after) and subtrees, and is sent the round's TreeResult.
    Returns the whole search's TreeResult (every round's subtrees, the log in `search`)."""
    total = None
    asks = search_loop(study)
    configs = next(asks)
    while True:
        arms, round_subtrees = plan(study, data, configs)
        print(
            f"[search] round of {len(configs)} stage-2 configurations: "
            + ", ".join(f"λ={c.mix_fraction:g} lr={c.lr:.3g}" for c in configs),
            flush=True,
        )
        result = yield arms, round_subtrees
        if total is None:
            total = result
        else:
            total.absorb(result).subtrees = [*total.subtrees, *round_subtrees]
        try:
            configs = asks.send(told_pairs(configs, round_subtrees))
        except StopIteration as done:
            total.search = write_log(study, done.value)
            return total


def told_pairs(configs: list[Stage2Config], round_subtrees: list) -> list[tuple[Stage2Config, tuple[float, float] | None]]:
    """Each configuration of a round with the (L_ret, L_ft) told for it: its best balanced child's."""
    by_trial = {(n2.params["mix_fraction"], n2.params["optuna_trial"]): children for n2, children in round_subtrees}
    told = []
    for cfg in configs:
        done = [node_done(c.spec.node_dir) for c in by_trial[cfg.mix_fraction, cfg.trial]]
        named = [finetune_losses(d["result"]["losses"]) for d in done if d]
        told.append((cfg, balanced_point([(n["L_ret"], n["L_ft"]) for n in named])))
    return told


def write_log(study: Study, log: list[dict]) -> list[dict]:
    """The search's log in search.json, and each arm's best balanced configuration said."""
    path = study.own_file("search.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(log, indent=1))
    best = {
        mix: min(
            (r for r in log if r["mix_fraction"] == mix and r["L_ret"] is not None), key=lambda r: r["L_ret"] + r["L_ft"], default=None
        )
        for mix in study.pretrain.mix_fraction
    }
    for mix, r in best.items():
        if r:
            print(
                f"[search] λ={mix:g}: best balanced stage-2 configuration lr={r['lr']:.3g} dropout={r['dropout']:g} "
                f"(L_ret {r['L_ret']:.3f}, L_ft {r['L_ft']:.3f}); all trials in {path}",
                flush=True,
            )
    return log
