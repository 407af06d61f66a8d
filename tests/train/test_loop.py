"""The per-run loop in a plain process, without Ray or MLflow (as on a GPU machine that has neither):
it trains, stops early keeping the best weights, resumes bit for bit from a progress checkpoint,
and reports a non-finite loss as Diverged."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from bench.arrays import ArraySource
from raysweep.data.mixing import Selection
from raysweep.data.streams import StreamSource, build_plan
from raysweep.presets import PRESETS
from raysweep.spec import Diverged, RunSpec
from raysweep.store.nodes import load_weights, node_done
from raysweep.train.callbacks.faults import Faults
from raysweep.train.context import LoopConfig, Worker, load_eval_sets
from raysweep.train.trainer import Trainer
from tests.helpers import ROOT, run_spec, token_view

VOCAB, SEQ = 64, 16


@pytest.fixture
def setup(tmp_path):
    """A learnable stream in memory (each block counts up by one, so the loss can fall well below
    log(VOCAB)), a held-out stream of the same kind planned over token shards, and the loop's settings."""
    rng = np.random.default_rng(0)

    def counting(n, length):
        start = rng.integers(1, VOCAB - length - 1, size=n)
        return (start[:, None] + np.arange(length)[None, :]).astype(np.int64)

    docs = counting(8, SEQ)  # a document and its separator fill one block exactly
    view = token_view(tmp_path / "heldout", list(docs), "held")
    plan = build_plan("heldout", {"held": (view, Selection.whole(np.arange(8), view.lengths))}, None, SEQ, 0, tmp_path / "streams")
    cfg = LoopConfig(PRESETS["debug"], VOCAB, SEQ, 10_000, {"post": StreamSource(str(plan.path))}, "tok")
    return cfg, ArraySource(counting(64, SEQ + 1)), load_eval_sets(cfg), tmp_path


def _spec(tmp_path, **over) -> RunSpec:
    base = run_spec(tmp_path / "node", label="plain", lr=3e-3, min_lr=3e-4, warmup_steps=2, weight_decay=0.1, batch_size=4)
    base = replace(base, max_steps=30, eval_every=5, monitor=["post"], seed=3)
    return replace(base, **over)


def test_a_run_trains_and_early_stopping_keeps_the_best_weights(setup):
    cfg, rows, evals, tmp = setup
    result, state, points = Trainer(cfg, Worker(torch.device("cpu")), evals).run(
        _spec(tmp, early_stop_on="post", patience=2, max_steps=200, lr=3e-2), rows
    )
    held = [v for k, v, _, step in points if k == "heldout_post"]
    assert result["stopped_early"] and result["steps"] < 200
    assert result["best_step"] <= result["steps"] - 2 * 5  # patience 2 × eval_every 5 evaluations after the best
    assert result["losses"]["post"] == pytest.approx(min(held), rel=1e-6)  # the final model is the best one, not the last
    assert result["losses"]["post"] < np.log(VOCAB)


def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_one(setup):
    cfg, rows, evals, tmp = setup
    whole, state, _ = Trainer(cfg, Worker(torch.device("cpu")), evals).run(_spec(tmp, node_dir=str(tmp / "whole")), rows)
    # a first attempt stops at step 12 (an injected NaN), after its progress checkpoint at step 10;
    # a fresh attempt of the same node resumes from that checkpoint
    spec = _spec(tmp, node_dir=str(tmp / "resumed"), checkpoint_every=10)
    with pytest.raises(Diverged):
        Trainer(replace(cfg, callbacks=(Faults(nan="plain@12"),)), Worker(torch.device("cpu")), evals).run(spec, rows)
    again, state2, _ = Trainer(cfg, Worker(torch.device("cpu")), evals).run(spec, rows)
    assert again["resumed_from_step"] == 10
    assert again["losses"] == whole["losses"]
    assert all(torch.equal(state[k], state2[k]) for k in state)


def test_a_non_finite_loss_is_diverged_and_recorded_not_raised_by_the_chain(setup):
    cfg, rows, evals, tmp = setup
    cfg = replace(cfg, callbacks=(Faults(nan="plain@3"),))
    parent = _spec(tmp, node_dir=str(tmp / "parent"))
    child = _spec(tmp, label="child", node_key="c", node_dir=str(tmp / "child"), init_from=parent.node_dir)
    results = Trainer(cfg, Worker(torch.device("cpu")), evals).fit([parent, child], {"train": rows})
    assert results == [{"node_key": "k", "diverged": 3}, {"node_key": "c", "blocked": True}]
    assert (tmp / "parent.diverged.json").exists() and not (tmp / "parent").exists()


def test_the_loop_imports_neither_ray_nor_mlflow():
    code = "import sys\nimport raysweep.train.trainer, raysweep.train.loop\nprint(sorted(m for m in ('ray', 'mlflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


@pytest.mark.gpu_path
def test_the_compiled_training_step_matches_the_eager_one(setup):
    """`model.compile: true`: the step runs through torch.compile (inductor on CPU here), its graphs
    are really built, and the result matches eager to float tolerance (compiled kernels round
    differently, so not bit for bit). tests/sweep/test_plan.py checks the study key reaches the loop."""
    cfg, rows, evals, tmp = setup
    worker = Worker(torch.device("cpu"))
    eager, _, _ = Trainer(cfg, worker, evals).run(_spec(tmp, node_dir=str(tmp / "eager"), max_steps=8), rows)
    compiled, _, _ = Trainer(replace(cfg, compile=True), worker, evals).run(_spec(tmp, node_dir=str(tmp / "compiled"), max_steps=8), rows)
    assert compiled["compiled_graphs"] > 0 and "compiled_graphs" not in eager
    assert compiled["steps"] == eager["steps"] == 8
    assert compiled["losses"] == pytest.approx(eager["losses"], rel=1e-4)


def test_a_run_in_micro_batches_of_one_equals_the_run_in_one_forward_and_resumes_the_same(setup):
    cfg, rows, evals, tmp = setup
    whole, state, _ = Trainer(cfg, Worker(torch.device("cpu")), evals).run(_spec(tmp, node_dir=str(tmp / "whole")), rows)
    micro, mstate, _ = Trainer(cfg, Worker(torch.device("cpu")), evals).run(
        _spec(tmp, node_dir=str(tmp / "micro"), micro_batch_size=1), rows
    )
    assert whole["micro_batch_size"] == 4 and whole["accumulation_steps"] == 1
    assert micro["micro_batch_size"] == 1 and micro["accumulation_steps"] == 4
    assert micro["losses"] == pytest.approx(whole["losses"], rel=1e-5)
    assert all(torch.allclose(mstate[k], state[k], rtol=1e-4, atol=1e-6) for k in state)
    # interrupted at step 12 after its progress checkpoint at 10, then resumed: bit for bit the same run
    spec = _spec(tmp, node_dir=str(tmp / "resumed"), micro_batch_size=1, checkpoint_every=10)
    with pytest.raises(Diverged):
        Trainer(replace(cfg, callbacks=(Faults(nan="plain@12"),)), Worker(torch.device("cpu")), evals).run(spec, rows)
    again, astate, _ = Trainer(cfg, Worker(torch.device("cpu")), evals).run(spec, rows)
    assert again["resumed_from_step"] == 10 and again["losses"] == micro["losses"]
    assert all(torch.equal(astate[k], mstate[k]) for k in mstate)


def test_activation_checkpointing_changes_memory_not_results(setup):
    cfg, rows, evals, tmp = setup
    for dropout in (0.0, 0.1):  # with dropout the recomputed layers must draw the same masks
        plain, _, _ = Trainer(cfg, Worker(torch.device("cpu")), evals).run(
            _spec(tmp, node_dir=str(tmp / f"p{dropout}"), dropout=dropout, max_steps=10), rows
        )
        ckpt, _, _ = Trainer(cfg, Worker(torch.device("cpu")), evals).run(
            _spec(tmp, node_dir=str(tmp / f"c{dropout}"), dropout=dropout, max_steps=10, activation_checkpointing=True), rows
        )
        assert ckpt["losses"] == pytest.approx(plain["losses"], rel=1e-5), dropout


def test_rungs_are_prefixes_of_the_run_and_the_run_continues_from_the_last_one_bit_for_bit(setup):
    """Halving's rungs (RunSpec.stop_at/rung_of): the run trained in three pieces, 0-7, 7-16, 16-30,
    each rung stored as a node of its own, ends with the uninterrupted run's weights and losses;
    each rung's snapshot holds the best weights so far; the run's progress is its own throughout."""
    cfg, rows, evals, tmp = setup
    worker = Worker(torch.device("cpu"))
    run = _spec(tmp, node_dir=str(tmp / "whole"), checkpoint_every=100, early_stop_on="post", patience=50)
    whole = Trainer(cfg, worker, evals).fit([run], {"train": rows})[0]
    wanted = load_weights(run.node_dir, "tok")
    pieces = replace(run, node_dir=str(tmp / "pieces"), node_key="p")
    rung_of = {"node_key": pieces.node_key, "node_dir": pieces.node_dir, "label": pieces.label}
    for step in (7, 16):
        rung = replace(pieces, node_key=f"p@{step}", node_dir=str(tmp / f"pieces.rung{step}"), stop_at=step, rung_of=rung_of)
        [got] = Trainer(cfg, worker, evals).fit([rung], {"train": rows})
        assert got["steps"] == step and node_done(rung.node_dir) and not node_done(pieces.node_dir)
    [last] = Trainer(cfg, worker, evals).fit([pieces], {"train": rows})
    assert last["resumed_from_step"] == 16 and last["losses"] == whole["losses"]
    assert all(torch.equal(wanted[k], v) for k, v in load_weights(pieces.node_dir, "tok").items())
    assert not (tmp / "pieces.resume").exists()  # the run finished: its progress is gone, its rungs stay
    assert node_done(str(tmp / "pieces.rung16"))["result"]["steps"] == 16


def test_a_rung_whose_run_stops_early_before_it_finishes_the_run_itself(setup):
    cfg, rows, evals, tmp = setup
    run = _spec(
        tmp, node_dir=str(tmp / "run"), node_key="r", checkpoint_every=100, early_stop_on="post", patience=1, max_steps=200, lr=3e-2
    )
    rung_of = {"node_key": run.node_key, "node_dir": run.node_dir, "label": run.label}
    rung = replace(run, node_key="r@150", node_dir=str(tmp / "run.rung150"), stop_at=150, rung_of=rung_of)
    [got] = Trainer(cfg, Worker(torch.device("cpu")), evals).fit([rung], {"train": rows})
    assert got["stopped_early"] and got["steps"] < 150
    done = node_done(run.node_dir)
    assert done["result"]["losses"] == got["losses"] and done["spec"]["node_key"] == "r" and done["spec"]["stop_at"] is None
