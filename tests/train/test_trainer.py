"""raysweep.train.trainer: what a slot's TrainerConfig builds, and how `fit` trains a chain: each
run from its parent's weights in memory (kept only while a later run starts from them), a diverged
run's children blocked, every finished run stored as its node."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from raysweep.spec import Diverged
from raysweep.store.nodes import node_diverged, node_done
from raysweep.train.context import LoopConfig, Worker
from raysweep.train.trainer import Trainer, TrainerConfig
from tests.helpers import ROOT, run_spec

CPU = Worker(torch.device("cpu"))
LOOP = LoopConfig(shape=None, vocab_size=8, seq_len=4, eval_tokens=0, eval_sources={}, tokenizer_id="t")


def test_the_real_trainer_config_builds_the_loops_trainer_and_keeps_no_timeline():
    built = TrainerConfig().build(LOOP, CPU, {})
    assert type(built) is Trainer and built.cfg is LOOP and built.worker is CPU  # pickled to a slot, built in its worker
    assert TrainerConfig().record("tree", items=3) is None and TrainerConfig.backend is None and TrainerConfig.banner is None


@dataclass
class Scripted(Trainer):
    """`fit` as it is, each run replaced: it notes the weights it started from and returns its own."""

    started_from: dict = field(default_factory=dict)

    def run(self, spec, source, parent=None):
        self.started_from[spec.node_key] = parent() if parent is not None else None
        if spec.node_key == "bad":
            raise Diverged("non-finite loss", 3, [("train_loss", float("nan"), 0, 3)])
        result = {"losses": {"post": 1.0}, "steps": spec.max_steps, "stopped_early": False}
        return result, {"w": torch.full((2,), float(len(self.started_from)))}, []


def test_a_chain_starts_children_from_their_parent_in_memory_and_blocks_below_a_diverged_run(tmp_path):
    parent = run_spec(tmp_path / "p", node_key="p")
    child = [replace(run_spec(tmp_path / f"c{i}", node_key=f"c{i}", stage="finetune"), init_from=parent.node_dir) for i in (1, 2)]
    bad = run_spec(tmp_path / "bad", node_key="bad")
    below = replace(run_spec(tmp_path / "b", node_key="b", stage="finetune"), init_from=bad.node_dir)
    trainer = Scripted(LOOP, CPU, {})
    results = trainer.fit([parent, *child, bad, below], {"train": None})
    assert [r["node_key"] for r in results] == ["p", "c1", "c2", "bad", "b"]
    assert results[3] == {"node_key": "bad", "diverged": 3} and results[4] == {"node_key": "b", "blocked": True}
    assert trainer.started_from["p"] is None
    # both children start from the parent's own weights in memory (no reload from its node)
    assert trainer.started_from["c1"] is trainer.started_from["c2"] and torch.equal(trainer.started_from["c1"]["w"], torch.full((2,), 1.0))
    assert all(node_done(s.node_dir) for s in (parent, *child)) and node_done(below.node_dir) is None
    assert node_diverged(bad.node_dir)["step"] == 3


def test_a_run_leaves_no_model_or_optimizer_for_the_cycle_collector(tmp_path):
    """Once `run` returns, its model, optimizer and progress are freed by reference counting alone:
    a reference cycle (a callback holding the run's progress that holds the callback) would keep a
    135M model and its AdamW state (≈ 1.6 GB) alive into the next run until Python's cycle collector
    happened to run."""
    import gc

    from bench.arrays import ArraySource
    from raysweep.presets import PRESETS
    from raysweep.train import loop
    from raysweep.train.model import build_model

    cfg = replace(LOOP, shape=PRESETS["debug"], vocab_size=64, seq_len=16)
    spec = run_spec(tmp_path / "n", max_steps=4, eval_every=2, monitor=[], early_stop_on=None, checkpoint_every=2)
    blocks = torch.randint(0, 64, (32, 17)).numpy()
    build_model("debug", 64, 16)  # transformers imported first: its lazy import leaves a cycle of its own (the next test)
    gc.collect()
    gc.disable()
    try:
        Trainer(cfg, CPU, {}).run(spec, ArraySource(blocks))
        left = [o for o in gc.get_objects() if isinstance(o, (loop.Model, loop.RunProgress, torch.optim.Optimizer))]
    finally:
        gc.enable()
    assert left == []


def test_fit_frees_the_first_runs_optimizer_before_the_second_run_builds_in_a_fresh_process():
    """In a fresh process the first run imports transformers lazily inside build_model, and those
    import frames hold the run's frames (its model and AdamW state among their locals) in a
    reference cycle: `fit` collects it before the next run builds, so at the second run's start no
    optimizer is alive, with Python's cycle collector off."""
    import subprocess
    import sys

    code = """
import gc, tempfile, torch
from bench.arrays import ArraySource
from raysweep.presets import PRESETS
from raysweep.train.callbacks import Callback
from raysweep.train.context import LoopConfig, Worker
from raysweep.train.trainer import Trainer
from tests.helpers import ROOT, run_spec

alive = []
class Count(Callback):
    def on_start(self, spec, worker):
        alive.append(sum(isinstance(o, torch.optim.Optimizer) for o in gc.get_objects()))

tmp = tempfile.mkdtemp()
specs = [run_spec(f"{tmp}/{k}", node_key=k, max_steps=2, monitor=[]) for k in ("a", "b")]
cfg = LoopConfig(PRESETS["debug"], 64, 16, 0, {}, "t", callbacks=(Count(),))
gc.disable()
Trainer(cfg, Worker(torch.device("cpu")), {}).fit(specs, {"train": ArraySource(torch.randint(0, 64, (16, 17)).numpy())})
print(alive)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[0, 0]"
