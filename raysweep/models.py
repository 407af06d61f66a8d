"""One table of model presets, and the code that builds them from config alone (no download).

`python -m raysweep.models` lists the presets with their parameter counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelShape:
    """A SmolLM2-style Llama decoder (RMSNorm, SiLU-gated MLP, RoPE, tied embeddings)."""

    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    mlp_hidden: int
    rope_theta: float = 10_000.0
    vocab_size: int | None = None  # None: take the study tokenizer's size
    tie_embeddings: bool = True
    note: str = ""


PRESETS: dict[str, ModelShape] = {
    # CPU-sized: ~1M parameters with a 2k vocabulary, ≈5-8k tokens/s on 2 cores.
    "tiny": ModelShape(n_layers=4, hidden=128, n_heads=4, n_kv_heads=2, mlp_hidden=384, note="CPU tests and the default study"),
    # A mid-size CPU model (~6M parameters with a 2k vocabulary), for benchmarks of the stage loop.
    "small": ModelShape(n_layers=8, hidden=256, n_heads=4, n_kv_heads=2, mlp_hidden=768, note="CPU benchmarks"),
    # Even smaller, for tests that only need the code path to run.
    "debug": ModelShape(n_layers=2, hidden=64, n_heads=2, n_kv_heads=1, mlp_hidden=128, note="unit tests"),
    # SmolLM2-135M's shape (PAPER.md); vocab 49,152 when used with SmolLM2's tokenizer.
    "smollm2-135m": ModelShape(n_layers=30, hidden=576, n_heads=9, n_kv_heads=3, mlp_hidden=1536, rope_theta=100_000.0, note="paper, 135M"),
    # The paper's 1B (Table 2): 24 layers, hidden 1728, 27 heads MHA (head dim 64), MLP 4608, RoPE base 1e5.
    "smollm2-1b": ModelShape(n_layers=24, hidden=1728, n_heads=27, n_kv_heads=27, mlp_hidden=4608, rope_theta=100_000.0, tie_embeddings=False, note="paper, 1B (Table 2), untied: 1.03B"),
}


def llama_config(preset: str, vocab_size: int, seq_len: int, attention_dropout: float = 0.0):
    from transformers import LlamaConfig

    s = PRESETS[preset]
    return LlamaConfig(
        vocab_size=s.vocab_size or vocab_size,
        hidden_size=s.hidden,
        intermediate_size=s.mlp_hidden,
        num_hidden_layers=s.n_layers,
        num_attention_heads=s.n_heads,
        num_key_value_heads=s.n_kv_heads,
        head_dim=s.hidden // s.n_heads,
        max_position_embeddings=max(seq_len, 2048),
        rope_parameters={"rope_type": "default", "rope_theta": s.rope_theta},
        tie_word_embeddings=s.tie_embeddings,
        attention_dropout=attention_dropout,
        rms_norm_eps=1e-5,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def build_model(preset: str, vocab_size: int, seq_len: int, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    """A freshly initialised causal LM. `dropout` is applied for real (see add_residual_dropout)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(preset, vocab_size, seq_len, attention_dropout=dropout))
    model.config.use_cache = False
    set_dropout(model, dropout)
    return model


class _ResidualDropout:
    """Forward hook: dropout on a module's output, active only in training mode.

    transformers' Llama has only `attention_dropout` (and accepts unknown keys such as
    `hidden_dropout` without using them), so the paper's stage-2 dropout is added here: on the
    embedding output and on each residual branch (attention o_proj and MLP down_proj), the same
    places GPT-2's resid/embd dropout sit.
    """

    def __init__(self, p: float):
        self.p = p

    def __call__(self, module: nn.Module, args, output):
        if self.p == 0.0 or not module.training:
            return output
        return nn.functional.dropout(output, self.p, training=True)


def set_dropout(model: nn.Module, p: float) -> None:
    """Set (or change) the dropout of a model built by build_model: residual, embedding and attention."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for handle in getattr(base, "_raysweep_dropout_hooks", []):
        handle.remove()
    hooks = []
    if p > 0:
        inner = base.model
        targets = [inner.embed_tokens] + [m for layer in inner.layers for m in (layer.self_attn.o_proj, layer.mlp.down_proj)]
        hooks = [t.register_forward_hook(_ResidualDropout(p)) for t in targets]
    base._raysweep_dropout_hooks = hooks
    base.config.attention_dropout = p
    for layer in base.model.layers:
        layer.self_attn.attention_dropout = p


def count_parameters(model: nn.Module) -> int:
    # tied embeddings are one tensor: count unique storages
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    return total


def estimate_parameters(preset: str, vocab_size: int) -> int:
    s = PRESETS[preset]
    v = s.vocab_size or vocab_size
    head_dim = s.hidden // s.n_heads
    attn = s.hidden * head_dim * (2 * s.n_heads + 2 * s.n_kv_heads)
    mlp = 3 * s.hidden * s.mlp_hidden
    per_layer = attn + mlp + 2 * s.hidden
    emb = v * s.hidden * (1 if s.tie_embeddings else 2)
    return s.n_layers * per_layer + emb + s.hidden


def main() -> None:
    print(f"{'preset':<14} {'params (vocab 49152)':>21}  shape")
    for name, s in PRESETS.items():
        shape = {k: v for k, v in asdict(s).items() if k != "note" and v is not None}
        print(f"{name:<14} {estimate_parameters(name, 49152) / 1e6:>19.1f}M  {shape}  {s.note}")


if __name__ == "__main__":
    main()
