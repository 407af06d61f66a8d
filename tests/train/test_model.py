import pytest
import torch

from raysweep.presets import PRESETS, estimate_parameters
from raysweep.train.model import build_model, count_parameters, set_dropout


@pytest.mark.parametrize("preset", ["debug", "tiny"])
def test_small_presets_build_and_match_the_estimate(preset):
    model = build_model(preset, vocab_size=512, seq_len=64)
    assert count_parameters(model) == estimate_parameters(preset, 512)


@pytest.mark.parametrize(
    "overrides",
    [
        {"mlp_hidden": 96},
        {"hidden": 48, "n_heads": 4, "n_kv_heads": 4, "n_layers": 3},
        {"tie_embeddings": False, "rope_theta": 5e5, "norm_eps": 1e-6},
    ],
)
def test_a_custom_shape_builds_as_given_and_matches_the_estimate(overrides):
    from raysweep.presets import resolve

    shape = resolve("debug", overrides)
    model = build_model(shape, vocab_size=512, seq_len=64)
    assert count_parameters(model) == estimate_parameters(shape, 512)
    c = model.config
    got = {
        "hidden": c.hidden_size,
        "n_heads": c.num_attention_heads,
        "n_kv_heads": c.num_key_value_heads,
        "n_layers": c.num_hidden_layers,
        "mlp_hidden": c.intermediate_size,
        "tie_embeddings": c.tie_word_embeddings,
        "rope_theta": c.rope_parameters["rope_theta"],
        "norm_eps": model.model.norm.variance_epsilon,
    }
    assert {k: got[k] for k in overrides} == overrides


def test_paper_shapes():
    assert round(estimate_parameters("smollm2-135m", 49152) / 1e6, 1) == 134.5  # SmolLM2-135M
    assert 1.00e9 < estimate_parameters("smollm2-1b", 49152) < 1.06e9  # Table 2: ≈1.03B
    assert PRESETS["smollm2-1b"].n_heads == PRESETS["smollm2-1b"].n_kv_heads == 27


def test_dropout_is_real_and_only_in_training():
    torch.manual_seed(0)
    model = build_model("debug", 256, 32, dropout=0.2)
    x = torch.randint(0, 256, (2, 16))
    model.train()
    assert not torch.equal(model(input_ids=x).logits, model(input_ids=x).logits)
    model.eval()
    assert torch.equal(model(input_ids=x).logits, model(input_ids=x).logits)
    set_dropout(model, 0.0)
    model.train()
    assert torch.equal(model(input_ids=x).logits, model(input_ids=x).logits)


def test_same_seed_same_init():
    a, b = build_model("debug", 256, 32, seed=1), build_model("debug", 256, 32, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_host_state_copies_each_tensor_once_and_unshared_clones_only_the_tied_head():
    """A tied model's state dict names one tensor twice (the embedding and the head): the host copy
    keeps it one tensor (the best weights and the progress checkpoint hold it once), a final state on
    CPU is the model's own tensors (no copy), and the node's safetensors file gets the head as a
    clone, the only tensor it refuses to share (found by bench/rehearsal_135m.py, 2026-12-07)."""
    from raysweep.store.nodes import unshared
    from raysweep.train.model import build_model, host_state

    model = build_model("debug", 64, 16)
    sd = model.state_dict()
    assert sd["lm_head.weight"].data_ptr() == sd["model.embed_tokens.weight"].data_ptr()  # tied
    best = host_state(sd, copy=True)
    assert best["lm_head.weight"] is best["model.embed_tokens.weight"]
    assert all(best[k].data_ptr() != sd[k].data_ptr() and torch.equal(best[k], sd[k]) for k in sd)
    final = host_state(sd, copy=False)
    assert all(final[k].data_ptr() == sd[k].data_ptr() for k in sd)
    saved = unshared(final)
    clones = [k for k in sd if saved[k].data_ptr() != sd[k].data_ptr()]
    assert clones == ["lm_head.weight"] and torch.equal(saved["lm_head.weight"], sd["lm_head.weight"])
