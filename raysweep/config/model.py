"""The model and tokenizer sections: the decoder's shape (a preset with overrides) or the linear
network, and the tokenizer it reads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from raysweep.config.base import _Strict


class ModelConfig(_Strict):
    kind: Literal["lm", "linear"] = Field(
        "lm",
        description="lm: a Llama decoder from the preset table; linear: the paper's two-layer linear network (section `theory`, raysweep/train/theory.py)",
    )
    preset: str = Field("tiny", description="name in raysweep.presets.PRESETS (`python -m raysweep.presets`)")
    seq_len: int = Field(128, gt=0, le=65536, description="tokens per training block")
    compile: bool = Field(
        False,
        description="torch.compile the training step's model: faster steps after a one-off compile per warm worker slot "
        "(≈ +20% on CPU after ≈ 24 s; bench/gpu_mfu.py measures it on GPU). Results match eager to float "
        "tolerance, not bit for bit. Operational: not part of any node key",
    )

    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 autocast on GPU, fp32 on CPU; bf16: bf16 autocast on either (a CPU rehearsal of the GPU's "
        "numerics: torch runs it on CPU, slower); fp32: no autocast. fp32 and bf16 are part of every node key (they change "
        "results); auto is not, so older studies keep their keys",
    )

    # The Llama shape over the preset (None: the preset's). raysweep.presets.SHAPE_FIELDS lists
    # them; a test keeps the two in step. Set ones are part of every node key.
    n_layers: int | None = Field(None, description="decoder layers (over the preset's)")
    hidden: int | None = Field(None, description="hidden width; n_heads must divide it into an even head dimension")
    n_heads: int | None = Field(None, description="attention heads")
    n_kv_heads: int | None = Field(None, description="key/value heads (grouped-query attention); must divide n_heads")
    mlp_hidden: int | None = Field(None, description="the SiLU-gated MLP's inner width")
    tie_embeddings: bool | None = Field(None, description="share the input embedding and the output head")
    rope_theta: float | None = Field(None, description="RoPE base")
    norm_eps: float | None = Field(None, description="RMSNorm epsilon")
    vocab_size: int | None = Field(
        None,
        ge=2,
        le=1_048_576,
        description="the embedding's rows, at least the tokenizer's size (checked once it is made): none takes the tokenizer's; "
        "a larger one pads it, e.g. SmolLM2's 49,152 with a smaller tokenizer trained here (bench/rehearsal_135m.py), "
        "or a multiple of 64 for the GPU's matmuls",
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        from raysweep.presets import PRESETS

        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return name

    @model_validator(mode="after")
    def _buildable(self) -> ModelConfig:
        from raysweep.presets import shape_problems

        given = self.shape_overrides()
        if self.kind == "linear" and given:
            raise ValueError(f"{sorted(given)[0]}: model.kind linear has no Llama shape (its width is theory.width)")
        problems = shape_problems(self.shape)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def shape_overrides(self) -> dict:
        """The shape fields this study sets over its preset."""
        from raysweep.presets import SHAPE_FIELDS

        return {k: getattr(self, k) for k in SHAPE_FIELDS if getattr(self, k) is not None}

    @property
    def shape(self):
        """The decoder's shape: the preset's, with this study's overrides (raysweep.presets.ModelShape)."""
        from raysweep.presets import resolve

        return resolve(self.preset, self.shape_overrides())

    def shape_label(self) -> str:
        """The preset's name, with what the study changes of it, e.g. 'tiny (mlp_hidden 512)'."""
        given = self.shape_overrides()
        shown = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {str(v).lower()}" for k, v in given.items())
        return self.preset + (f" ({shown})" if given else "")


class TokenizerConfig(_Strict):
    pretrained: str | None = Field(
        None, description="a local tokenizer folder or a hub id (e.g. HuggingFaceTB/SmolLM2-135M); none: train a BPE tokenizer"
    )
    revision: str | None = Field(None, description="hub revision of the pretrained tokenizer")
    vocab_size: int = Field(2048, ge=260, le=262_144, description="trained BPE only: vocabulary size")
    train_docs: int = Field(20_000, gt=0, description="trained BPE only: documents of each corpus it is trained on")

    @model_validator(mode="after")
    def _one_kind(self) -> TokenizerConfig:
        if self.pretrained is not None:
            stray = sorted({"vocab_size", "train_docs"} & self.model_fields_set)
            if stray:
                raise ValueError(
                    f"{', '.join(stray)}: only for a trained BPE tokenizer; a pretrained tokenizer brings its own vocabulary "
                    "(on the command line, replace the whole section: --set 'tokenizer={pretrained: HuggingFaceTB/SmolLM2-135M}')"
                )
        elif self.revision is not None:
            raise ValueError("revision: only used with pretrained")
        return self
