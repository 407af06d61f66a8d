"""What a worker group's runs share: the loop's settings (picklable, they cross the Ray boundary)
and the worker's own live helpers (made in the worker, never pickled)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from raysweep.presets import ModelShape


@dataclass(frozen=True)
class LoopConfig:
    """The model, held-out sets and switches every run of one tree run uses."""

    shape: ModelShape  # the decoder's shape (a preset with the study's overrides)
    vocab_size: int
    seq_len: int
    eval_tokens: int  # held-out tokens per set per evaluation
    eval_sources: dict  # role ("pre", "post", "ft") -> held-out stream (raysweep.data.streams.StreamSource)
    tokenizer_id: str
    compile: bool = False  # torch.compile the training step (model.compile)
    precision: str = "auto"  # model.precision: auto (bf16 autocast on GPU, fp32 on CPU), bf16, fp32
    threads: int = 1  # torch threads per worker (its CPU reservation)
    callbacks: tuple = ()  # raysweep.train.callbacks.Callback: fault drills, audits, the MLflow sink (the loop calls them at named points)
    trained_by: str = ""  # who trains (raysweep.sweep.tree.trainer_id), kept in each node it trains: another driver sharing the store may finish a node first


def _plain(model):
    return model


@dataclass
class Worker:
    """This process's place in its worker group and its helpers. Outside Ray (a plain process, a
    GPU box without Ray): rank 0 of 1, the model moved to `device`, nothing sent anywhere."""

    device: object  # torch.device
    rank: int = 0
    world: int = 1
    wrap_model: Callable = _plain  # Ray Train's prepare_model (device placement, DDP) in a worker group
    uploader: object = None  # raysweep.store.storage.Uploader for object-store node stores

    def wrap(self, model):
        return self.wrap_model(model) if self.wrap_model is not _plain else model.to(self.device)


def load_eval_sets(cfg: LoopConfig) -> dict:
    """The held-out sets every run evaluates on (role -> (blocks, block_len) int64 tensor): all of a
    set's blocks, or a seeded sample of them up to `eval_tokens` tokens (raysweep.data.streams.sample_blocks)."""
    import torch

    from raysweep.data.streams import sample_blocks

    # local_plan: a worker that does not share the driver's disk fetches the published plan, as for training rows
    return {name: torch.from_numpy(sample_blocks(src.local_plan(), cfg.eval_tokens)) for name, src in cfg.eval_sources.items()}
