"""One table of model presets: the shapes of the Llama decoders raysweep builds (raysweep.train.model).

Kept free of heavy imports (no torch, no transformers), like litgpt's config table, so that loading
a study and `--dry-run` stay light. `python -m raysweep.presets` lists the presets with their
parameter counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
    "smollm2-1b": ModelShape(
        n_layers=24,
        hidden=1728,
        n_heads=27,
        n_kv_heads=27,
        mlp_hidden=4608,
        rope_theta=100_000.0,
        tie_embeddings=False,
        note="paper, 1B (Table 2), untied: 1.03B",
    ),
}


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
