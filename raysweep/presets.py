"""One table of model presets: the shapes of the Llama decoders raysweep builds (raysweep.train.model).

Kept free of heavy imports (no torch, no transformers), like litgpt's config table, so that loading
a study and `--dry-run` stay light. `python -m raysweep.presets` lists the presets with their
parameter counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


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
    norm_eps: float = 1e-5  # RMSNorm's epsilon
    note: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    def summary(self) -> str:
        """The shape in a few words, e.g. '4 layers, hidden 128, 4 heads / 2 KV, MLP 384, tied'."""
        heads = f"{self.n_heads} heads" + (f" / {self.n_kv_heads} KV" if self.n_kv_heads != self.n_heads else "")
        extra = "" if self.rope_theta == 10_000.0 else f", RoPE base {self.rope_theta:g}"
        extra += "" if self.norm_eps == 1e-5 else f", norm eps {self.norm_eps:g}"
        tie = "tied" if self.tie_embeddings else "untied"
        return f"{self.n_layers} layers, hidden {self.hidden}, {heads}, MLP {self.mlp_hidden}, {tie}{extra}"


# The fields a study may set over its preset (`model: {preset: tiny, mlp_hidden: 512}`); the note
# is a label. vocab_size left unset is the tokenizer's.
SHAPE_FIELDS = tuple(f.name for f in fields(ModelShape) if f.name != "note")


PRESETS: dict[str, ModelShape] = {
    # CPU-sized: ~1M parameters with a 2k vocabulary, ≈5-8k tokens/s on 2 cores.
    "tiny": ModelShape(n_layers=4, hidden=128, n_heads=4, n_kv_heads=2, mlp_hidden=384, note="CPU tests and the default study"),
    # A mid-size CPU model (~6M parameters with a 2k vocabulary), for benchmarks of the stage loop.
    "small": ModelShape(n_layers=8, hidden=256, n_heads=4, n_kv_heads=2, mlp_hidden=768, note="CPU benchmarks"),
    # Even smaller, for tests that only need the code path to run.
    "debug": ModelShape(n_layers=2, hidden=64, n_heads=2, n_kv_heads=1, mlp_hidden=128, note="unit tests"),
    # SmolLM2-135M's shape (its published config); vocab 49,152 when used with SmolLM2's tokenizer.
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


def shape_problems(s: ModelShape) -> list[str]:
    """What makes a shape unbuildable, one line per problem naming the field (empty: it builds)."""
    problems = []
    for name in ("n_layers", "hidden", "n_heads", "n_kv_heads", "mlp_hidden"):
        if getattr(s, name) < 1:
            problems.append(f"{name}: must be at least 1 (got {getattr(s, name)})")
    if problems:
        return problems
    if s.hidden % s.n_heads:
        problems.append(f"n_heads: {s.n_heads} heads do not divide hidden {s.hidden} (each head gets hidden / n_heads dimensions)")
    elif s.head_dim % 2:
        problems.append(f"n_heads: head dimension hidden / n_heads = {s.head_dim} is odd; RoPE rotates dimension pairs, so it must be even")
    if s.n_heads % s.n_kv_heads:
        problems.append(
            f"n_kv_heads: {s.n_kv_heads} KV heads do not divide n_heads {s.n_heads} (grouped-query attention shares each KV head by a group)"
        )
    if not s.rope_theta > 0:
        problems.append(f"rope_theta: must be positive (got {s.rope_theta})")
    if not 0 < s.norm_eps < 1:
        problems.append(f"norm_eps: must be in (0, 1) (got {s.norm_eps})")
    return problems


def shape_of(shape: ModelShape | str) -> ModelShape:
    """A shape, given as itself or by its preset's name."""
    return PRESETS[shape] if isinstance(shape, str) else shape


def resolve(preset: str, overrides: dict | None = None) -> ModelShape:
    """The preset's shape with a study's overrides (SHAPE_FIELDS) applied."""
    return replace(PRESETS[preset], **(overrides or {}))


def estimate_parameters(shape: ModelShape | str, vocab_size: int) -> int:
    """Parameters of the decoder (a preset name or a shape) with a vocabulary of `vocab_size`."""
    s = shape_of(shape)
    v = s.vocab_size or vocab_size
    head_dim = s.head_dim
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
