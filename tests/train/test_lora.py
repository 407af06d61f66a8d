"""LoRA post-training (peft): only the adapters train, the merged θ_post is a plain model that
differs from its parent exactly in the targeted modules, and LoRA runs are their own method.
The run goes through the real per-run loop in this process, without Ray."""

from dataclasses import replace

import torch

from raysweep.data.streams import StreamSource
from raysweep.store.nodes import load_weights, node_done, save_node
from raysweep.train.context import LoopConfig, Worker, load_eval_sets
from raysweep.train.model import build_model
from raysweep.train.trainer import Trainer
from tests.helpers import plan_smoke, run_spec


def test_lora_run_changes_only_its_targets_and_saves_a_merged_model(smoke_data, tmp_path):
    study, data = smoke_data
    parent = run_spec(
        tmp_path / "parent", stage="pretrain", label="parent", node_key="p", weight_decay=0.1, batch_size=8, max_steps=1, seed=5
    )
    base = build_model(study.model.preset, data.vocab_size, study.model.seq_len, seed=5).state_dict()
    save_node(parent, base, {}, data.tokenizer_id)
    targets = ["o_proj", "gate_proj", "up_proj", "down_proj"]
    spec = run_spec(tmp_path / "lora", label="lora", node_key="l", lr=1e-2, batch_size=8, max_steps=8, eval_every=4, seed=6)
    spec = replace(spec, monitor=["post"], dropout=0.05, lora={"rank": 4, "alpha": 8.0, "targets": targets}, init_from=parent.node_dir)
    cfg = LoopConfig(
        study.model.shape,
        data.vocab_size,
        study.model.seq_len,
        512,
        {r: StreamSource(str(s.path)) for r, s in data.heldout.items()},
        data.tokenizer_id,
    )
    source = StreamSource(str(data.posttrain[0.0, 0.0].path))
    [result] = Trainer(cfg, Worker(torch.device("cpu")), load_eval_sets(cfg)).fit([spec], {"train": source})

    n_layers = sum(1 for k in base if k.endswith("o_proj.weight"))
    shapes = {k: v.shape for k, v in base.items()}
    # rank 4 adapters: A (4 x in) + B (out x 4) per targeted matrix
    expected = sum(4 * (shapes[k][1] + shapes[k][0]) for k in base if any(k.endswith(f"{t}.weight") for t in targets))
    assert result["trainable_parameters"] == expected and n_layers > 0
    merged = load_weights(spec.node_dir, data.tokenizer_id)
    assert set(merged) == set(base)  # a plain model: stage 3 loads it like any θ_post
    for k in base:
        changed = not torch.equal(merged[k], base[k])
        assert changed == any(k.endswith(f"{t}.weight") for t in targets), k  # embeddings, norms, Q/K/V untouched
    assert node_done(spec.node_dir)["spec"]["lora"]["rank"] == 4


def test_lora_is_its_own_method_and_leaves_full_runs_keys_alone(smoke_data):
    full_only, with_lora, _ = plan_smoke(smoke_data, "posttrain.tuning=[full, lora]")
    assert len(with_lora) == 2 * len(full_only)
    methods = {n.tags["raysweep.method"] for n, _ in with_lora}
    assert methods == {"unmixed", "mixed", "unmixed+lora", "mixed+lora"}
    assert {n.spec.node_key for n, _ in full_only} <= {n.spec.node_key for n, _ in with_lora}  # adding LoRA retrains nothing
    lora_nodes = [n for n, _ in with_lora if n.spec.lora]
    assert all("lm_head" not in n.spec.lora["targets"] for n in lora_nodes)  # tied embeddings: head left out
