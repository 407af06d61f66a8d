"""How much memory one training worker needs, from the shape alone, and the micro-batch that fits.

Pure arithmetic (no torch), beside the preset table, so that loading a study and `--dry-run` can
refuse a study that cannot fit before anything is paid for. A worker's peak is

    weights + gradients + AdamW's two moments (+ DDP's gradient buckets with several workers)
    (+ on CPU, the best weights stage 2 keeps for early stopping: they live in host memory)
    (+ on CPU, in stage 3, the parent's weights, kept while its other children are still to train)
    + per sequence of the micro-batch: the activations autograd saves, and the logits' share
    + the cross-entropy's chunk temporaries + a fixed overhead (the process, or the CUDA context)

Activation bytes per token per decoder layer were counted exactly on CPU in fp32 (every tensor
autograd saves, storages counted once; bench/paper_shape.py) for nine shapes from 64 to 1,728 wide:
4 · (8·hidden + 4·mlp_hidden + 2·kv_dim + n_heads + 2), and 4 · hidden per layer with activation
checkpointing (each layer keeps its input; one layer's activations are rebuilt at a time). Under
bf16 autocast (GPU) the norms' tensors and the residual stream stay fp32 and the rest is bf16:
that split is reasoned from transformers' Llama, not measured on a GPU here (bench/RESULTS.md
says what was checked where).
"""

from __future__ import annotations

from dataclasses import dataclass

from raysweep.presets import ModelShape, estimate_parameters, shape_of

GB = 1e9
# One chunk of the cross-entropy's fp32 temporaries (raysweep.train.loss): 16M elements.
CHUNK_ELEMENTS = 1 << 24
# What `micro_batch_size: auto` leaves free of a worker's memory: allocator fragmentation, the
# data loader, NCCL buffers, and the model's own error (bench/RESULTS.md).
MARGIN = 0.15
# Memory that is not the model's: on CPU the process's resident size with torch and transformers
# imported (measured 0.55-0.65 GB here); on GPU the CUDA context and cuBLAS/NCCL workspaces.
OVERHEAD = {"fp32": 0.7 * GB, "bf16": 1.5 * GB}
# Largest evaluation batch (blocks per forward); the memory model may take fewer.
EVAL_BATCH = 32
# A GPU whose memory the dry run cannot see (no GPU where the study is checked) is taken to be an
# H100's 80 GB, the GPU clusters/ and the dry run's GPU-hours name; a worker that has a GPU uses
# its own memory instead.
ASSUMED_GPU_GB = 80.0


@dataclass(frozen=True)
class Peak:
    """A worker's estimated peak, in bytes, by part."""

    static: float  # weights, gradients, optimizer state, DDP buckets, the best-weights copy on CPU
    activations: float  # what autograd saves for the micro-batch's backward
    logits: float  # the logits and their gradient (and fp32 copies) for the micro-batch
    overhead: float

    @property
    def total(self) -> float:
        return self.static + self.activations + self.logits + self.overhead


def lora_parameters(shape: ModelShape | str, vocab: int, rank: int, targets: list[str] | tuple[str, ...]) -> int:
    """Trainable parameters of LoRA adapters of `rank` on `targets` (two factors per module)."""
    s = shape_of(shape)
    v = s.vocab_size or vocab
    kv = s.n_kv_heads * s.head_dim
    dims = {
        "q_proj": (s.hidden, s.hidden),
        "k_proj": (s.hidden, kv),
        "v_proj": (s.hidden, kv),
        "o_proj": (s.hidden, s.hidden),
        "gate_proj": (s.hidden, s.mlp_hidden),
        "up_proj": (s.hidden, s.mlp_hidden),
        "down_proj": (s.mlp_hidden, s.hidden),
    }
    per_layer = sum(rank * (i + o) for t, (i, o) in dims.items() if t in targets)
    head = rank * (s.hidden + v) if "lm_head" in targets else 0
    return s.n_layers * per_layer + head


def activation_bytes_per_token(
    shape: ModelShape | str, precision: str, checkpointing: bool = False, dropout: bool = False, seq_len: int = 0
) -> float:
    """Bytes autograd saves per token of a training forward (see the module doc)."""
    s = shape_of(shape)
    h, m, kv, nh = s.hidden, s.mlp_hidden, s.n_kv_heads * s.head_dim, s.n_heads
    outside = 4 * (3 * h + 2 * s.head_dim + 3)  # embeddings, final norm, RoPE tables
    if checkpointing:
        # every layer keeps its input (fp32 residual stream); one layer is rebuilt at a time in backward
        per_layer = 4 * h
        rebuilt = activation_bytes_per_token(replace_layers(s, 1), precision, dropout=dropout, seq_len=seq_len) - outside
        return s.n_layers * per_layer + rebuilt + outside
    if precision == "bf16":
        per_layer = 4 * (4 * h) + 2 * (4 * h + 4 * m + 2 * kv) + 4 * nh + 8
    else:
        per_layer = 4 * (8 * h + 4 * m + 2 * kv + nh + 2)
    if dropout:
        # boolean masks and outputs of the two residual dropouts; on CPU the attention dropout
        # takes SDPA's math path, which keeps each head's attention row (measured 12 bytes a key)
        per_layer += 6 * h + (12 * nh * seq_len if precision == "fp32" else 0)
    return s.n_layers * per_layer + outside


def replace_layers(s: ModelShape, n: int) -> ModelShape:
    from dataclasses import replace

    return replace(s, n_layers=n)


def logits_bytes_per_token(vocab: int, precision: str, chunked: bool) -> float:
    """The logits' share per token at the backward's peak: the logits themselves (saved by the
    loss), and their gradient; the plain loss adds an fp32 log-softmax and its fp32 gradient (and
    on GPU the fp32 copy of bf16 logits)."""
    act = 2 if precision == "bf16" else 4
    if chunked:
        return vocab * (act + act)
    return vocab * (act + 4 + 4 + 4 + (4 if precision == "bf16" else 0))


def training_peak(
    shape: ModelShape | str,
    vocab: int,
    seq_len: int,
    micro: int,
    *,
    precision: str = "fp32",
    trainable: int | None = None,
    checkpointing: bool = False,
    world: int = 1,
    keeps_best: bool = False,
    dropout: bool = False,
    holds_parent: bool = False,
    host: bool | None = None,
) -> Peak:
    """A training worker's estimated peak (steady state, after the first optimizer step) for a
    micro-batch of `micro` sequences of `seq_len` tokens. `trainable`: parameters the optimizer
    updates (LoRA: the adapters'; None: all). `host`: the worker trains on CPU, so the weights it
    keeps aside (the best, a parent's) share its memory (default: fp32, as before bf16 on CPU)."""
    host = precision == "fp32" if host is None else host
    s = shape_of(shape)
    v = s.vocab_size or vocab
    params = estimate_parameters(s, v)
    t = params if trainable is None else trainable
    static = 4 * params  # fp32 master weights (autocast keeps them fp32)
    static += 4 * t + 8 * t  # gradients, AdamW's exp_avg and exp_avg_sq
    if world > 1:
        static += 4 * t  # DDP's gradient buckets (a copy of the gradients)
    if keeps_best and host:
        static += 4 * params  # the best weights so far, kept in host memory (the worker's, on CPU)
    if holds_parent and host:
        static += 4 * params  # a stage-2 run's weights, kept for its next child (raysweep.train.trainer.Trainer.fit)
    tokens = micro * seq_len
    chunked = tokens * v > CHUNK_ELEMENTS
    acts = tokens * activation_bytes_per_token(s, precision, checkpointing, dropout, seq_len)
    logits = tokens * logits_bytes_per_token(v, precision, chunked) + (3 * 4 * CHUNK_ELEMENTS if chunked else 0)
    return Peak(static, acts, logits, OVERHEAD[precision])


def eval_peak(
    shape: ModelShape | str, vocab: int, seq_len: int, batch: int, *, precision: str = "fp32", trainable: int | None = None
) -> Peak:
    """Peak of a held-out evaluation of `batch` blocks (no autograd: one layer's tensors at a time,
    the logits and the loss's fp32 chunk), while the training state stays in memory."""
    s = shape_of(shape)
    v = s.vocab_size or vocab
    params = estimate_parameters(s, v)
    t = params if trainable is None else trainable
    act = 2 if precision == "bf16" else 4
    tokens = batch * seq_len
    layer = tokens * (activation_bytes_per_token(replace_layers(s, 1), precision) - 4 * (3 * s.hidden + 2 * s.head_dim + 3))
    chunked = tokens * v > CHUNK_ELEMENTS
    logits = tokens * v * act + (3 * 4 * CHUNK_ELEMENTS if chunked else tokens * v * 8)
    return Peak(4 * params + 12 * t, layer, logits, OVERHEAD[precision])


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def choose_micro_batch(share: int, memory_bytes: float, peak_of, margin: float = MARGIN) -> tuple[int, Peak]:
    """The largest micro-batch dividing a worker's `share` of the batch whose peak (`peak_of(micro)`)
    fits `memory_bytes` less the margin; 1 (with its peak) when none fits (the caller refuses)."""
    budget = memory_bytes * (1 - margin)
    for micro in reversed(divisors(share)):
        peak = peak_of(micro)
        if peak.total <= budget:
            return micro, peak
    return 1, peak_of(1)


def choose_eval_batch(memory_bytes: float, peak_of, margin: float = MARGIN) -> int:
    """Blocks per evaluation forward: the largest up to EVAL_BATCH that fits (at least 1)."""
    budget = memory_bytes * (1 - margin)
    for batch in range(EVAL_BATCH, 0, -1):
        if peak_of(batch).total <= budget:
            return batch
    return 1


def machine_memory() -> float:
    """This machine's RAM in bytes (what a CPU worker has when the study does not say)."""
    import os

    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a laptop's 16 GB
        return 16 * GB


def worker_memory(gpus_per_worker: float, memory_gb: float | None, device_bytes: float | None = None) -> tuple[float, str]:
    """What one worker has (bytes) and where the figure comes from: the study's
    `resources.memory_gb`; else the worker's own GPU (`device_bytes`, known inside a worker) or, where
    no GPU is visible (the dry run), an H100's 80 GB; else this machine's RAM."""
    if memory_gb is not None:
        return memory_gb * GB, f"{memory_gb:g} GB (resources.memory_gb)"
    if gpus_per_worker > 0:
        if device_bytes:
            return device_bytes, f"{device_bytes / GB:.0f} GB (the worker's GPU)"
        return ASSUMED_GPU_GB * GB, f"{ASSUMED_GPU_GB:g} GB (an H100's, assumed)"
    ram = machine_memory()
    return ram, f"{ram / GB:.0f} GB (this machine's RAM)"


@dataclass(frozen=True)
class Fit:
    """How one stage's runs fit a worker: micro-batch, accumulation steps, peak against memory."""

    share: int  # sequences per worker per optimizer step
    micro: int
    peak: Peak
    memory: float
    memory_said: str
    eval_batch: int
    given: bool  # the study set micro_batch_size (not auto)

    @property
    def accumulation(self) -> int:
        return self.share // self.micro

    @property
    def fits(self) -> bool:
        return self.peak.total <= self.memory

    def line(self) -> str:
        how = "set" if self.given else "auto"
        return (
            f"micro-batch {self.micro} ({how}) × {self.accumulation} accumulation step{'s' if self.accumulation != 1 else ''} "
            f"= {self.share} per worker; peak ≈ {fmt_gb(self.peak.total)} per worker of {self.memory_said}"
        )


def fit_stage(
    shape: ModelShape | str,
    vocab: int,
    seq_len: int,
    batch_size: int,
    workers: int,
    *,
    micro_batch_size: int | str = "auto",
    gpus_per_worker: float = 0.0,
    memory_gb: float | None = None,
    device_bytes: float | None = None,
    checkpointing: bool = False,
    trainable: int | None = None,
    keeps_best: bool = False,
    dropout: bool = False,
    precision: str = "auto",
    holds_parent: bool = False,
) -> Fit:
    """The micro-batch one run of a stage trains with: the study's `micro_batch_size`, or (auto)
    the largest that divides the worker's share of `batch_size` and fits its memory with MARGIN.
    `precision`: model.precision (auto: bf16 on GPU, fp32 on CPU)."""
    if precision == "auto":
        precision = "bf16" if gpus_per_worker > 0 else "fp32"
    memory, said = worker_memory(gpus_per_worker, memory_gb, device_bytes)
    share = batch_size // workers
    peak_of = lambda micro: training_peak(
        shape,
        vocab,
        seq_len,
        micro,
        precision=precision,
        trainable=trainable,
        checkpointing=checkpointing,
        world=workers,
        keeps_best=keeps_best,
        dropout=dropout,
        holds_parent=holds_parent,
        host=gpus_per_worker == 0,
    )
    if micro_batch_size == "auto":
        micro, peak = choose_micro_batch(share, memory, peak_of)
    else:
        micro = min(int(micro_batch_size), share)
        peak = peak_of(micro)
    evals = choose_eval_batch(memory, lambda b: eval_peak(shape, vocab, seq_len, b, precision=precision, trainable=trainable))
    return Fit(share, micro, peak, memory, said, evals, micro_batch_size != "auto")


def fmt_gb(b: float) -> str:
    return f"{b / GB:,.1f} GB" if b >= 0.1 * GB else f"{b / 1e6:,.0f} MB"


# SmolLM2's vocabulary, assumed for a pretrained tokenizer where none is read (the dry run, the
# study's checks); a worker fits its runs with the tokenizer's real size.
PRETRAINED_VOCAB = 49_152


def study_vocab(study) -> int:
    return PRETRAINED_VOCAB if study.tokenizer.pretrained else study.tokenizer.vocab_size


def stage_fits(study) -> list[tuple[str, str, Fit]]:
    """(stage, what the row is, Fit) for each stage and stage-2 batch size, at its most demanding
    run: stage 2 counts full fine-tuning (LoRA trains fewer parameters), its dropout when any, and
    the best weights it keeps. `study`: a raysweep.config.Study (not imported: this module sits below it)."""
    vocab, seq = study_vocab(study), study.model.seq_len
    shape = study.model.shape
    out = []
    for stage in ("pretrain", "posttrain", "finetune"):
        cfg = getattr(study, stage)
        sizes = cfg.batch_sizes if stage == "posttrain" else [cfg.batch_size]
        full = stage != "posttrain" or "full" in cfg.tuning
        trainable = None
        if not full:
            trainable = lora_parameters(shape, vocab, cfg.lora_rank, cfg.lora_targets)
        for batch in sizes:
            fit = fit_stage(
                shape,
                vocab,
                seq,
                batch,
                cfg.resources.workers,
                micro_batch_size=cfg.micro_batch_size,
                gpus_per_worker=cfg.resources.gpus_per_worker,
                memory_gb=cfg.resources.memory_gb,
                checkpointing=cfg.activation_checkpointing,
                trainable=trainable,
                keeps_best=stage == "posttrain",
                dropout=stage == "posttrain" and max(cfg.dropout) > 0,
                precision=study.model.precision,
                holds_parent=stage == "finetune",  # its stage-2 parent's weights, kept for the next child
            )
            out.append((stage, f"batch {batch}" if len(sizes) > 1 else "", fit))
    return out


def memory_problem(study) -> str | None:
    """Why a study cannot fit its workers' memory (the first stage that cannot), naming the key; None if it fits."""
    if study.model.kind != "lm":
        return None
    for stage, _, fit in stage_fits(study):
        if fit.fits:
            continue
        cfg = getattr(study, stage)
        p = fit.peak
        parts = (
            f"weights and optimizer {fmt_gb(p.static)}, activations {fmt_gb(p.activations)}, "
            f"logits {fmt_gb(p.logits)}, overhead {fmt_gb(p.overhead)}"
        )
        fixes = [] if cfg.activation_checkpointing else [f"--set {stage}.activation_checkpointing=true"]
        if fit.given and fit.micro > 1:
            fixes.insert(0, f"a smaller {stage}.micro_batch_size (or auto)")
        fixes += [f"more workers ({stage}.resources.workers)", "a larger GPU (resources.memory_gb)", "a shorter model.seq_len"]
        return (
            f"{stage}.micro_batch_size: a micro-batch of {fit.micro} sequence{'s' if fit.micro != 1 else ''} of "
            f"{study.model.seq_len} tokens needs ≈ {fmt_gb(p.total)} per worker ({parts}), more than the worker's "
            f"{fit.memory_said}; try {', '.join(fixes)}"
        )
    return None
