"""raysweep.sweep.halving's arithmetic (pure): rung and probe steps and the per-method selection
with its reasons (its fronts and areas are raysweep.frontier's, tests/test_frontier.py)."""

from __future__ import annotations

import math

from raysweep.sweep.halving import probe_steps, rank_configs, rung_step, select


def test_rungs_and_probes_are_shares_of_their_runs_steps():
    assert [rung_step(58, s) for s in (1 / 9, 1 / 3, 1.0)] == [6, 19, 58]
    assert rung_step(3, 0.01) == 1 and rung_step(3, 0.9) == 3  # a short run trains whole at that rung
    assert probe_steps(15, 0.1) == 2 and probe_steps(4, 0.1) == 1


def test_configurations_rank_by_their_best_layer_then_by_the_hypervolume_they_add():
    ranked = rank_configs({"a": [(1.0, 5.0), (3.0, 3.0)], "b": [(2.0, 4.0)], "c": [(4.0, 4.0)], "d": [(math.nan, 1.0)]})
    assert [e["config"] for e in ranked] == ["a", "b", "c", "d"]
    assert ranked[0]["rank"] == ranked[1]["rank"] == 0 and ranked[2]["rank"] == 1 and ranked[3]["rank"] is None
    assert ranked[0]["added_hypervolume"] > ranked[1]["added_hypervolume"] > 0


def test_each_method_is_pruned_apart_with_the_reason_said():
    """Every mixed point dominates every unmixed one: still, each method keeps ceil(n / η) of its own."""
    mixed = {f"m{i}": [(1.0 + i, 1.0 + i)] for i in range(5)}
    unmixed = {f"u{i}": [(10.0 + i, 10.0 + i)] for i in range(4)}
    out = select({"mixed": mixed, "unmixed": unmixed}, eta=3)
    kept = {m: [e["config"] for e in out if e["method"] == m and e["kept"]] for m in ("mixed", "unmixed")}
    assert kept == {"mixed": ["m0", "m1"], "unmixed": ["u0", "u1"]}
    reasons = {e["config"]: e["reason"] for e in out if not e["kept"]}
    assert reasons["u3"].startswith("dominated by u0") and reasons["m2"].startswith("dominated by m0")
    tied = select({"mixed": {"a": [(1.0, 3.0)], "b": [(2.0, 2.0)], "c": [(3.0, 1.0)]}}, eta=2)
    assert [e["kept"] for e in tied].count(True) == 2
    assert next(e["reason"] for e in tied if not e["kept"]).startswith("as near the front as the last kept")


def test_the_planned_tokens_follow_the_survivors_of_each_method():
    from raysweep.config import load_study
    from raysweep.sweep.halving import planned_tokens, survivors
    from tests.helpers import SMOKE

    assert survivors(12, 3, 3) == [12, 4, 2] and survivors(5, 1, 3) == [5]
    ladder = ["posttrain.rungs=[0.1111111111111111, 0.3333333333333333, 1.0]", "posttrain.eta=3"]  # two rungs before the end
    study = load_study(SMOKE, ["posttrain.search=halving", *ladder, "posttrain.lr=[1e-3, 2e-3, 3e-3, 5e-3]", "finetune.tokens=16000"])
    plan = planned_tokens(study)
    assert plan["per_method"] == {"unmixed": [4, 2, 1], "mixed": [4, 2, 1]}
    seq, stage2 = 64, (30000 // (8 * 64)) * 8 * 64  # every configuration: batch 8, 58 steps
    ft, probe = (16000 // (8 * 64)) * 8 * 64, 3 * 8 * 64  # 31 steps; a probe 3 (0.1 of them)
    per_method = (4 / 9 + 2 * (1 / 3 - 1 / 9) + (1 - 1 / 3)) * stage2 + (4 + 2) * 3 * probe + 1 * 3 * ft
    assert plan["halving"] == 2 * round(per_method) and plan["grid"] == 2 * 4 * (stage2 + 3 * ft)
    assert seq == study.model.seq_len
    whole = load_study(SMOKE, ["posttrain.search=halving", "posttrain.rungs=[1.0]"])
    assert planned_tokens(whole)["halving"] == planned_tokens(whole)["grid"]  # one rung: the grid


def test_the_dry_run_says_what_halving_plans_against_the_grid():
    from raysweep.config import load_study
    from raysweep.sweep.describe import describe_tree
    from tests.helpers import ROOT

    text = describe_tree(load_study(ROOT / "search_spaces" / "paper-135m-frontier.yaml", ["posttrain.search=halving"]))
    assert (
        "mixed 15 → 4;" in text
        and "rungs at 0.111, 1 of each stage-2 run, the best 1/4" in text
        and "against the grid's" in text
        and "at most (halving prunes them)" in text
    )


def test_a_budget_share_picks_the_smallest_eta_that_keeps_within_it(capsys):
    """posttrain.budget_share (issue 47): η becomes the smallest whose planned tokens stay within
    that share of the grid's; an unreachable share is refused naming the key, before anything runs;
    unset, the study and its hash are as before."""
    from raysweep.config import load_study
    from raysweep.main import main
    from raysweep.sweep.halving import eta_of, planned_tokens
    from tests.helpers import ROOT

    paper = "search_spaces/paper-135m-frontier.yaml"
    base = load_study(ROOT / paper, ["posttrain.search=halving"])
    assert eta_of(base) == base.posttrain.eta
    assert load_study(ROOT / paper, ["posttrain.search=halving", "posttrain.budget_share=null"]).content_hash() == base.content_hash()
    for share in (0.5, 0.3, 0.2):
        study = load_study(ROOT / paper, ["posttrain.search=halving", f"posttrain.budget_share={share}"])
        eta = eta_of(study)
        t = planned_tokens(study)
        assert t["halving"] <= share * t["grid"]
        if eta > 2:  # one less would spend more than the share
            before = planned_tokens(study, eta - 1)
            assert before["halving"] > share * before["grid"]
    assert (
        main(["--config", str(ROOT / paper), "--set", "posttrain.search=halving", "--set", "posttrain.budget_share=0.05", "--dry-run"]) == 2
    )
    assert "posttrain.budget_share: 0.05 of the grid's tokens is less than halving spends with any η" in capsys.readouterr().err
