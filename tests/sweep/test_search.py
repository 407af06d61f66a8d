"""Stage-2 search with Optuna (raysweep/sweep/search.py): the ask/tell loop on a known objective, then a
real search on the smoke study (Ray Tune / Train / MLflow), resumed."""

from __future__ import annotations

import json
import math

import pytest

from raysweep.config import load_study
from raysweep.spec import balanced_point as balanced_child
from raysweep.sweep.search import search_loop
from tests.helpers import SMOKE, with_reference_data


def test_balanced_child_is_the_lowest_sum_and_skips_non_finite():
    assert balanced_child([(1.0, 5.0), (2.0, 2.5), (4.0, 1.0)]) == (2.0, 2.5)
    assert balanced_child([(float("nan"), 0.1), (3.0, 3.0)]) == (3.0, 3.0)
    assert balanced_child([(float("inf"), 1.0)]) is None and balanced_child([]) is None


def _study(*overrides: str):
    return load_study(
        SMOKE, ["posttrain.search=optuna", "posttrain.lr=[1e-5, 1e-1]", "posttrain.min_lr=1e-6", "posttrain.dropout=[0.0, 0.1]", *overrides]
    )


def _run(study, train_round) -> list[dict]:
    """search_loop driven as the tree drives it: each round's configurations trained, then sent back."""
    asks = search_loop(study)
    try:
        configs = next(asks)
        while True:
            configs = asks.send(train_round(configs))
    except StopIteration as done:
        return done.value


def _toy(calls: list):
    """A known two-objective landscape in log10(lr): L_ret is best at 1e-3, L_ft at 1e-2, so the
    Pareto set is lr ∈ [1e-3, 1e-2]; dropout 0.1 costs a little L_ft."""

    def train_round(configs):
        calls.append(configs)
        out = []
        for c in configs:
            x = math.log10(c.lr)
            out.append((c, ((x + 3) ** 2, (x + 2) ** 2 + 0.1 * (c.dropout > 0))))
        return out

    return train_round


def test_search_is_seeded_reproducible_and_stays_in_its_space():
    study = _study("posttrain.trials=10", "posttrain.optuna_batch=4")
    first, again, other = [], [], []
    log = _run(study, _toy(first))
    assert _run(study, _toy(again)) == log  # same seed: same configurations
    assert _run(_study("posttrain.trials=10", "posttrain.optuna_batch=4", "seed=1"), _toy(other)) != log
    arms = study.pretrain.mix_fraction
    assert [len(r) for r in first] == [4 * len(arms), 4 * len(arms), 2 * len(arms)]  # rounds of optuna_batch per arm
    for lam in arms:
        mine = [r for r in log if r["mix_fraction"] == lam]
        assert [r["trial"] for r in mine] == list(range(10))
        assert all(1e-5 <= r["lr"] <= 1e-1 and r["dropout"] in (0.0, 0.1) for r in mine)
        assert len({r["lr"] for r in mine}) == 10  # a continuous search, not the grid


def test_search_spends_later_trials_near_the_frontier():
    """Told the children's (L_ret, L_ft), TPE moves its proposals toward the Pareto set in lr."""
    study = _study("posttrain.trials=40", "posttrain.optuna_batch=4", "pretrain.mix_fraction=[0.0]")
    log = _run(study, _toy([]))

    def off_front(r):  # distance in decades from lr ∈ [1e-3, 1e-2]
        x = math.log10(r["lr"])
        return max(0.0, -3 - x, x + 2)

    first, last = [off_front(r) for r in log[:4]], [off_front(r) for r in log[-12:]]
    assert sum(last) / len(last) < sum(first) / len(first)
    assert sum(d == 0 for d in last) >= 6


def test_a_failed_configuration_is_told_as_failed_and_the_search_goes_on():
    study = _study("posttrain.trials=4", "posttrain.optuna_batch=2", "pretrain.mix_fraction=[0.0]")

    def train_round(configs):
        return [(c, None if c.trial == 1 else (1.0, 1.0)) for c in configs]

    log = _run(study, train_round)
    assert [r["L_ret"] for r in log] == [1.0, None, 1.0, 1.0]


def test_optuna_search_on_the_real_tree_then_resumed(ray_local, reference, tmp_path, capsys):
    from raysweep.study import run_study

    with_reference_data(reference[0], tmp_path)  # corpora and tokenizer made once; the λ=0 streams are planned here
    study = load_study(
        SMOKE,
        [
            f"output_dir={tmp_path}",
            "pretrain.mix_fraction=[0.0]",
            "finetune.lr=[1e-3, 3e-3]",
            "posttrain.search=optuna",
            "posttrain.trials=3",
            "posttrain.optuna_batch=2",
            "posttrain.lr=[3e-4, 1e-2]",
        ],
    )
    first = run_study(study)
    assert first["failures"] == []
    assert first["trained"] == {"pretrain": 1, "posttrain": 3, "finetune": 6}
    assert len(first["rows"]) == 6
    log = json.loads((tmp_path / "search.json").read_text())
    assert [r["round"] for r in log] == [0, 0, 1]
    for r in log:  # each trial was told its balanced child, read from the rows the report uses
        kids = [(x["L_ret"], x["L_ft"]) for x in first["rows"] if x["posttrain_lr"] == pytest.approx(r["lr"])]
        assert len(kids) == 2 and (r["L_ret"], r["L_ft"]) == balanced_child(kids)
    assert "[search] λ=0: best balanced stage-2 configuration" in capsys.readouterr().out

    again = run_study(study)  # replays the rounds from the stored results: same configurations, nothing trained
    assert again["trained"] == {"pretrain": 0, "posttrain": 0, "finetune": 0}
    assert json.loads((tmp_path / "search.json").read_text()) == log


def test_the_samplers_options_are_spelled_out_not_left_to_optunas_defaults():
    """Optuna 5.0 turned TPE's multivariate and constant-liar modes on by default: a study's proposals
    must depend on the study alone, so every option that decides them is passed (and none deprecated)."""
    import warnings

    from raysweep.config import load_study
    from raysweep.sweep.search import searchers

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        made = searchers(load_study(None, ["posttrain.search=optuna", "posttrain.trials=4", "posttrain.optuna_batch=2"]))
    for s in made.values():
        assert s.sampler._multivariate is False and s.sampler._constant_liar is False and s.sampler._n_startup_trials == 2
