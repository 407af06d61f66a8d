"""The node store's records (raysweep.store.nodes); its faults (corrupt, truncated, full disk) are in
tests/scenarios/test_faults.py."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from raysweep.config import load_study
from raysweep.spec import RunSpec
from raysweep.store.nodes import node_done, save_node, verify_node
from tests.helpers import SMOKE, run_spec


def _spec(tmp_path, keep_weights: bool) -> RunSpec:
    spec = run_spec(tmp_path / "node", stage="finetune", label="f", dataset="ft", min_lr=1e-4, warmup_steps=1, max_steps=1, monitor=["ft"])
    return replace(spec, keep_weights=keep_weights)


def test_a_leaf_without_weights_keeps_its_results_and_points_and_verifies(tmp_path):
    points = [["train_loss", 2.5, 7, 10], ["heldout_ft", 2.25, 9, 10]]
    save_node(_spec(tmp_path, False), {"w": torch.arange(1000.0)}, {"losses": {"ft": 2.25}}, "tok", points=points)
    node = tmp_path / "node"
    assert sorted(p.name for p in node.iterdir()) == ["metrics.json", "node.json"]
    done = node_done(node)
    assert done["result"] == {"losses": {"ft": 2.25}} and set(done["files"]) == {"metrics.json"}
    assert verify_node(node) is None

    save_node(_spec(tmp_path / "kept", True), {"w": torch.arange(1000.0)}, {"losses": {}}, "tok", points=points)
    assert (tmp_path / "kept" / "node" / "model.safetensors").stat().st_size > 4000


def test_keeping_no_leaf_weights_changes_no_key_and_not_the_study():
    """An operational choice: the same nodes (their results are the same), the same study hash."""
    from types import SimpleNamespace

    from raysweep.sweep.plan import Stage2Config, plan_finetune

    kept, dropped = load_study(SMOKE), load_study(SMOKE, ["finetune.keep_weights=false"])
    assert kept.content_hash() == dropped.content_hash()
    stats = {"name": "ft", "blocks": 3, "tokens": 192, "waste_fraction": 0.0}
    data = SimpleNamespace(tokenizer_id="tok", finetune=SimpleNamespace(stats=stats))
    post = SimpleNamespace(
        name="posttrain/mix=0/lr=0.001",
        spec=SimpleNamespace(node_key="p", node_dir="/nodes/p", label="posttrain x"),
        tags={"raysweep.method": "m"},
    )
    cfg = Stage2Config(0.0, 1e-3, 0.0, 0.0, "full", 8)
    a, b = (plan_finetune(s, data, post, cfg, 1e-3) for s in (kept, dropped))
    assert a.spec.node_key == b.spec.node_key and (a.spec.keep_weights, b.spec.keep_weights) == (True, False)


def test_a_node_is_settled_once_finished_or_diverged_and_not_before(tmp_path):
    import json

    from raysweep.store.nodes import node_settled, save_diverged

    finished, diverged, open_ = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    finished.mkdir()
    (finished / "node.json").write_text(json.dumps({"files": {}}))
    save_diverged(diverged, 1e-3, 7, "non-finite loss", [])
    assert node_settled(finished) and node_settled(diverged) and not node_settled(open_)


def test_a_checkpoint_from_another_tokenizer_is_refused(tmp_path):
    import torch
    from safetensors.torch import save_file

    from raysweep.store.nodes import NODE_FILE, TokenizerMismatchError, load_weights

    node = tmp_path / "node"
    node.mkdir()
    save_file({"w": torch.zeros(2)}, str(node / "model.safetensors"))
    (node / NODE_FILE).write_text(json.dumps({"spec": {}, "result": {}, "tokenizer_id": "aaaa"}))
    assert set(load_weights(str(node), "aaaa")) == {"w"}
    with pytest.raises(TokenizerMismatchError, match="made with tokenizer 'aaaa'.*this study's tokenizer is 'bbbb'"):
        load_weights(str(node), "bbbb")
