"""The Llama decoders of the preset table (raysweep.presets), built from config alone (no
download): real dropout on the residual stream, and LoRA adapters for post-training."""

from __future__ import annotations

import torch
from torch import nn

from raysweep.presets import ModelShape, shape_of


def llama_config(shape: ModelShape | str, vocab_size: int, seq_len: int, attention_dropout: float = 0.0):
    """transformers' LlamaConfig of a shape (or a preset's name)."""
    from transformers import LlamaConfig

    s = shape_of(shape)
    return LlamaConfig(
        vocab_size=s.vocab_size or vocab_size,
        hidden_size=s.hidden,
        intermediate_size=s.mlp_hidden,
        num_hidden_layers=s.n_layers,
        num_attention_heads=s.n_heads,
        num_key_value_heads=s.n_kv_heads,
        head_dim=s.head_dim,
        max_position_embeddings=max(seq_len, 2048),
        rope_parameters={"rope_type": "default", "rope_theta": s.rope_theta},
        tie_word_embeddings=s.tie_embeddings,
        attention_dropout=attention_dropout,
        rms_norm_eps=s.norm_eps,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def build_model(shape: ModelShape | str, vocab_size: int, seq_len: int, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    """A freshly initialised causal LM of a shape (or a preset's name). `dropout` is applied for
    real (see add_residual_dropout)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(shape, vocab_size, seq_len, attention_dropout=dropout))
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


def add_lora(model, lora: dict, dropout: float):
    """Freeze the model and add LoRA adapters (peft) on `lora["targets"]`; only the adapters train."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"], lora_dropout=dropout, target_modules=list(lora["targets"]), bias="none")
    return get_peft_model(model, cfg)


def host_state(state: dict, copy: bool) -> dict:
    """A state dict on the host, each storage once: tied tensors (the embedding and the head) stay
    one tensor, as in the model. `copy`: a copy even of tensors already on the host (the best
    weights, while the model trains on); else those are the model's own. Before 2026-12-07 every
    key was copied, so the tied embedding twice and the final weights once more: in the 135M
    rehearsal ≈ 0.8 GB of host memory per run that held no information."""
    copies: dict = {}
    out = {}
    for k, v in state.items():
        same = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()), v.device)
        if same not in copies:
            copies[same] = v.detach().to("cpu", copy=copy)
        out[k] = copies[same]
    return out
