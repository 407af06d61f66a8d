"""One run's parts, from its initial weights to its final held-out losses (raysweep.train.trainer's
Trainer.run puts them together, around its steps):

    start_run (callbacks' start, model, dropout, LoRA, optimizer, compile, the run's own callbacks:
    progress lines, early stopping, progress checkpoints; resume from a progress checkpoint; this
    rank's batches) -> steps (Trainer.run: lr schedule, forward/backward, non-finite check) ->
    after_step (periodic evaluation; early stopping's verdict) -> finish (best weights back, final
    evaluation, LoRA merged, the result)

Per run: AdamW (β 0.9/0.95, grad clip 1.0), linear warmup + cosine decay, a step budget, periodic
held-out evaluation (sharded over ranks, all-reduced), optional early stopping. It imports no Ray
and no MLflow: the worker's place in its group comes in a `Worker` (raysweep.train.context), and
everything that is not training (progress lines, early stopping, progress checkpoints, metric
sinks, fault drills, audits) is a callback (raysweep.train.callbacks), so the same loop runs in a
Ray Train worker, in a plain process and on a GPU machine without Ray. The run keeps its metric
points itself (its checkpoints and its node save them) and hands each new one to the callbacks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from raysweep.memory import fit_stage
from raysweep.spec import RunSpec
from raysweep.train.callbacks import each
from raysweep.train.callbacks.checkpoints import ProgressCheckpoints
from raysweep.train.callbacks.early_stopping import EarlyStopping
from raysweep.train.callbacks.progress import ProgressLines
from raysweep.train.context import LoopConfig, Worker
from raysweep.train.model import add_lora, build_model, host_state, set_dropout
from raysweep.train.optimizer import build_optimizer
from raysweep.train.step import batches, evaluate


@dataclass
class Model:
    """What one run trains: the (possibly DDP-wrapped) model, the plain module under it (evaluation,
    checkpoints), the optimizer and the module the step runs (compiled or not)."""

    model: torch.nn.Module
    raw: torch.nn.Module
    opt: torch.optim.Optimizer
    step_model: torch.nn.Module
    trainable: int
    micro: int = 0  # sequences per forward (raysweep.memory); 0: the rank's whole share
    eval_batch: int = 32  # blocks per evaluation forward


@dataclass
class RunProgress:
    """The loop's counters: what a progress checkpoint saves, and the run's timing."""

    step: int = 0
    best: float = math.inf
    best_state: dict | None = None
    best_step: int = 0
    bad: int = 0  # evaluations without improvement
    train_loss: float = float("nan")
    stopped_early: bool = False
    seconds_before: float = 0.0  # training time of earlier attempts (resumed)
    resumed_from: int = 0
    data_wait: float = 0.0  # seconds spent waiting for the next batch: the stream must never starve training
    t_first: float | None = None  # end of this attempt's first step: the steady-state rate excludes one-off start-up
    first_step: int = 0
    t_train: float = 0.0  # when this attempt's steps began
    aside: float = 0.0  # seconds of this attempt's steps spent evaluating and writing progress checkpoints
    # the run's metric points (key, value, ms, step), rank 0: saved with its checkpoints and its node
    points: list = field(default_factory=list)
    callbacks: tuple = ()  # this run's: the loop's own (progress lines), then the config's (raysweep.train.callbacks)
    rank0: bool = True

    def metrics(self, spec: RunSpec, values: dict[str, float]) -> None:
        """New metric points at the current step (rank 0), handed to the callbacks."""
        if not self.rank0 or not values:
            return
        ts = int(time.time() * 1000)
        new = [(k, float(v), ts, self.step) for k, v in values.items()]
        self.points += new
        each(self.callbacks, "on_metrics", spec, new)


def build(spec: RunSpec, init_state: dict | None, cfg: LoopConfig, worker: Worker) -> Model:
    """A fresh model of the study's shape (seeded by the run), its parent's weights, dropout, LoRA adapters."""
    residual_dropout = 0.0 if spec.lora else spec.dropout
    model = build_model(cfg.shape, cfg.vocab_size, cfg.seq_len, dropout=residual_dropout, seed=spec.seed)
    if init_state is not None:
        model.load_state_dict(init_state)
        set_dropout(model, residual_dropout)
    if spec.activation_checkpointing:
        # non-reentrant: works under DDP and LoRA's frozen inputs, and restores the RNG so dropout masks match
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if spec.lora:
        model = add_lora(model, spec.lora, spec.dropout)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model = worker.wrap(model)
    raw = model.module if hasattr(model, "module") else model
    opt = build_optimizer(model, spec.lr, spec.weight_decay, worker.device, spec.decay_1d)
    # the training step may run a compiled graph; evaluation and checkpoints use the plain module
    step_model = torch.compile(model) if cfg.compile else model
    fit = fit_run(spec, cfg, worker, trainable if spec.lora else None)
    return Model(model, raw, opt, step_model, trainable, fit.micro, fit.eval_batch)


def fit_run(spec: RunSpec, cfg: LoopConfig, worker: Worker, trainable: int | None):
    """The run's micro-batch and evaluation batch (raysweep.memory.fit_stage): the spec's
    micro_batch_size, or the largest that fits this worker's memory (its GPU's own on CUDA)."""
    cuda = worker.device.type == "cuda"
    device_bytes = torch.cuda.get_device_properties(worker.device).total_memory if cuda else None
    return fit_stage(
        cfg.shape,
        cfg.vocab_size,
        cfg.seq_len,
        spec.batch_size,
        worker.world,
        micro_batch_size=spec.micro_batch_size,
        gpus_per_worker=1.0 if cuda else 0.0,
        memory_gb=spec.memory_gb,
        device_bytes=device_bytes,
        checkpointing=spec.activation_checkpointing,
        trainable=trainable,
        keeps_best=spec.early_stop_on is not None,
        dropout=spec.dropout > 0,
        precision=cfg.precision,
        holds_parent=spec.stage == "finetune",
    )


def after_step(spec: RunSpec, m: Model, p: RunProgress, cfg: LoopConfig, monitor: dict, worker: Worker) -> None:
    """After a trained step: at an evaluation step the monitored held-out losses, their metric
    points, the step's callbacks (rank 0) and the callbacks' verdict (early stopping sets
    p.stopped_early); at any other step the step's callbacks alone."""
    if not (p.step % spec.eval_every == 0 or p.step == spec.max_steps):
        if p.rank0:
            each(p.callbacks, "on_step", spec, p.step, p.train_loss, None)
        return
    t_aside = time.perf_counter()
    evals = evaluate(m.model, monitor, worker.device, worker.rank, worker.world, m.eval_batch, cfg.precision)
    p.metrics(spec, {f"heldout_{k}": v for k, v in evals.items()})
    if p.rank0:
        each(p.callbacks, "on_step", spec, p.step, p.train_loss, evals)
    p.stopped_early = any([cb.on_evaluated(spec, p.step, evals) for cb in p.callbacks])  # every callback hears it
    p.aside += time.perf_counter() - t_aside


def finish(spec: RunSpec, m: Model, p: RunProgress, cfg: LoopConfig, eval_sets: dict, worker: Worker) -> tuple[dict, dict]:
    """The best weights back, the final evaluation on every held-out set, LoRA merged; (result, weights on CPU)."""
    t_end = time.perf_counter()
    train_seconds = p.seconds_before + t_end - p.t_train
    tokens_per_step = spec.batch_size * cfg.seq_len
    # tokens/s after the first step (the data iterator's start, first allocations): the loop's own speed
    steady = (p.step - p.first_step) * tokens_per_step / (t_end - p.t_first) if p.t_first is not None and p.step > p.first_step else None
    if p.best_state is not None:
        m.raw.load_state_dict(p.best_state)  # θ_post is the best checkpoint, not the last
    final = evaluate(m.model, eval_sets, worker.device, worker.rank, worker.world, m.eval_batch, cfg.precision)
    raw = m.raw.merge_and_unload() if spec.lora else m.raw  # θ_post = base + the adapters' product: a plain model for stage 3
    rung = spec.stops_at_rung(p.step, p.stopped_early)
    if not rung:  # a rung's losses are its snapshot's, not the run's final ones
        p.metrics(spec, {f"final_{k}": v for k, v in final.items()})
    each(p.callbacks, "on_close", spec)
    result = {
        "losses": final,
        "steps": p.step,
        "best_step": p.best_step if spec.early_stop_on else p.step,
        "stopped_early": p.stopped_early,
        "tokens": p.step * tokens_per_step,
        "train_seconds": train_seconds,
        "tokens_per_s": p.step * tokens_per_step / max(train_seconds, 1e-9),
        "steady_tokens_per_s": steady,
        # the steps' own rate in this attempt, evaluations and progress checkpoints left out: what a
        # bare training loop's tokens/s compares with (bench/rehearsal_135m.py)
        "step_tokens_per_s": (p.step - p.resumed_from) * tokens_per_step / max(t_end - p.t_train - p.aside, 1e-9),
        "trainable_parameters": m.trainable,
        "micro_batch_size": m.micro,
        "accumulation_steps": spec.batch_size // worker.world // m.micro,
        "resumed_from_step": p.resumed_from,
        "data_wait_seconds": p.data_wait,
        "data_wait_share": p.data_wait / max(train_seconds, 1e-9),
    }
    if cfg.compile:  # graphs torch.compile has built in this worker so far (a warm slot reuses them)
        from torch._dynamo.utils import counters

        result["compiled_graphs"] = int(counters["stats"]["unique_graphs"])
    state = host_state(raw.state_dict(), copy=False)  # the run's model is done with: its own tensors where they are on the host
    each(p.callbacks, "on_finish", spec, result, state, worker)
    return result, state


def start_run(spec: RunSpec, parent, source, cfg: LoopConfig, eval_sets: dict[str, torch.Tensor], worker: Worker):
    """Everything a run's steps need, resumed where an interrupted attempt left off: (model,
    progress with the run's callbacks, this rank's batches, the held-out sets it monitors).
    `parent()`: the weights it starts from, loaded here so that nothing but the model holds them
    once it is built (a parent loaded for this run alone is freed before the run resumes and
    trains). `source.rows_for(batch, world, rank)`: a StreamSource's plan, or bench/arrays.py's
    ArraySource."""
    p = RunProgress(callbacks=(ProgressLines(cfg.seq_len), *cfg.callbacks), rank0=worker.rank == 0)
    each(p.callbacks, "on_start", spec, worker)
    m = build(spec, parent() if parent is not None else None, cfg, worker)
    checkpoints = ProgressCheckpoints(m, p)
    p.callbacks = (p.callbacks[0], EarlyStopping(p, m.raw), checkpoints, *p.callbacks[1:])  # the run's own, made with its model
    torch.manual_seed(spec.seed + worker.rank)  # dropout masks differ per rank, fixed per seed
    monitor = {k: eval_sets[k] for k in spec.monitor}
    rows = source.rows_for(spec.batch_size, worker.world, worker.rank)
    checkpoints.restore(spec, worker)
    return m, p, batches(rows, worker.device, start=p.step), monitor
