"""The training loop that runs inside every Ray Train worker.

A worker group trains runs (`RunSpec`s) back to back: `run_specs` trains a list of them (a
stage-2 run, then each of its stage-3 children starting from its weights in memory), and a warm
slot (raysweep.pool) keeps one worker group for a whole tree run, pulling such lists from a
queue. A fit costs 8-16 s of start-up on a small machine, so paying it once per slot instead of
once per list is what keeps a CPU sweep busy with training rather than with starting workers.
Each run still is its own tree node: its own seed, checkpoint folder, MLflow run and results.
Each rank reads its own rows of the stream (streams.rank_blocks) from the object store.

Per run: AdamW (β 0.9/0.95, grad clip 1.0), linear warmup + cosine decay, a step budget,
periodic held-out evaluation (sharded over ranks, all-reduced), optional early stopping that
keeps the best weights, and a checkpoint (safetensors + node.json with the exact config).

What a node folder guarantees (README, "Guarantees"): it is written under a temporary name and
renamed, node.json last, so a folder with node.json is complete; node.json holds the size and
SHA-256 of every other file, checked before weights are ever loaded (a corrupt node is moved
aside and trained again, never loaded); metrics.json holds every metric point the run logged, so
MLflow can be rebuilt from the folders alone. A run whose loss turns non-finite is recorded as
*diverged* (`<node>.diverged.json`): a deterministic outcome of its config, never retried.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from raysweep import storage
from raysweep.models import build_model, set_dropout
from raysweep.schedule import lr_at
from raysweep.streams import read_blocks
from raysweep.tokenizer import check_same_tokenizer

NODE_FILE = "node.json"  # written last: a node folder with this file is complete
METRICS_FILE = "metrics.json"  # every metric point the run logged: [key, value, timestamp ms, step]


class CorruptCheckpoint(RuntimeError):
    """A node's files do not match the sizes and checksums its node.json recorded."""


class Diverged(FloatingPointError):
    """The training loss (so the gradient) became non-finite."""

    def __init__(self, message: str, step: int, points: list):
        super().__init__(message)
        self.step, self.points = step, points


@dataclass
class RunSpec:
    """Everything one run needs; stored verbatim in its checkpoint's node.json."""

    stage: str                 # pretrain | posttrain | finetune
    label: str                 # human-readable, e.g. "posttrain λ=0.5 lr=1e-3"
    node_key: str              # content hash of (parent key, stage config, data, tokenizer, seed)
    node_dir: str              # where the checkpoint goes
    dataset: str               # which of its fit's row sets it trains on: "train" (its stage's stream) or "ft"
    lr: float
    min_lr: float
    warmup_steps: int
    weight_decay: float
    batch_size: int            # sequences per optimizer step, all ranks together
    max_steps: int
    eval_every: int            # steps
    monitor: list[str]         # held-out sets evaluated during training
    seed: int
    dropout: float = 0.0       # residual/attention dropout; with `lora`, the LoRA dropout instead
    lora: dict | None = None   # {"rank", "alpha", "targets"}: train LoRA adapters only, merged into θ at the end
    init_from: str | None = None  # parent node folder
    early_stop_on: str | None = None  # held-out set whose loss decides early stopping
    patience: int | None = None
    run_id: str | None = None  # MLflow run receiving step metrics
    checkpoint_every: int = 0  # steps between resumable progress checkpoints (0: none); not part of the node key
    meta: dict = field(default_factory=dict)  # config and lineage to keep with the checkpoint


def node_done(node_dir: str | Path) -> dict | None:
    """The node.json of a finished node (a local folder or a URI, raysweep.storage), or None."""
    text = storage.read_text(storage.join(node_dir, NODE_FILE))
    return json.loads(text) if text is not None else None


def diverged_path(node_dir: str | Path) -> str:
    return storage.with_suffix(node_dir, ".diverged.json")


def node_diverged(node_dir: str | Path) -> dict | None:
    """The record of a run whose loss became non-finite ({step, lr, error, metrics}), or None."""
    text = storage.read_text(diverged_path(node_dir))
    return json.loads(text) if text is not None else None


def node_points(node_dir: str | Path) -> list[list]:
    """Every metric point a settled node logged (finished: metrics.json; diverged: its record)."""
    text = storage.read_text(storage.join(node_dir, METRICS_FILE))
    if text is not None:
        return json.loads(text)
    return (node_diverged(node_dir) or {}).get("metrics", [])


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_node(node_dir: str | Path, full: bool = True) -> str | None:
    """What is wrong with a finished local node's files (None: nothing). `full` hashes every file;
    otherwise only sizes are compared (a truncated file is caught at the cost of a stat).
    Nodes written before checksums were recorded are taken as they are."""
    folder = Path(node_dir)
    done = node_done(folder)
    if done is None:
        return "node.json missing"
    for name, want in done.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            return f"{name} missing"
        if path.stat().st_size != want["bytes"]:
            return f"{name} is {path.stat().st_size} bytes, node.json recorded {want['bytes']} (truncated or overwritten)"
        if full and _digest(path) != want["sha256"]:
            return f"{name} does not match the SHA-256 node.json recorded (corrupted)"
    return None


def quarantine(node_dir: str | Path, problem: str) -> str:
    """Move a corrupt node out of the store (kept beside it for a post-mortem); it is trained again."""
    if storage.is_remote(node_dir):  # without node.json the node is unfinished; the local copy goes
        storage.delete(storage.join(node_dir, NODE_FILE))
        shutil.rmtree(storage.cache_dir(str(node_dir)), ignore_errors=True)
        where = "its node.json deleted"
    else:
        where = f"{node_dir}.corrupt-{int(time.time())}"
        Path(node_dir).rename(where)
        where = f"moved to {where}"
    print(f"[checkpoint] {node_dir}: {problem}; {where}, the node will be trained again", file=sys.__stderr__, flush=True)
    return where


def progress_dir(node_dir: str | Path) -> Path:
    """Where an unfinished node keeps its resumable progress (deleted once node.json exists); for a
    node in an object store, the local copy of `<node>.resume` (uploaded after each save)."""
    if storage.is_remote(node_dir):
        return storage.cache_dir(storage.with_suffix(node_dir, ".resume"))
    return Path(str(node_dir) + ".resume")


def _save_progress(spec: RunSpec, rank: int, model_state: dict | None, opt_state: dict | None, counters: dict, best_state: dict | None,
                   uploader=None) -> None:
    """Everything needed to continue bit for bit: weights, optimizer, counters, best-so-far, and
    each rank's RNG. Written to a temp file and renamed, so a kill never leaves half a file."""
    folder = progress_dir(spec.node_dir)
    folder.mkdir(parents=True, exist_ok=True)
    files = {f"rng{rank}.pt": {"step": counters["step"], "rng": torch.get_rng_state()}}
    if rank == 0:
        files["state.pt"] = {"node_key": spec.node_key, "model": model_state, "opt": opt_state, "best_state": best_state or {}, **counters}
    for name, blob in files.items():
        tmp = folder / (name + ".tmp")
        try:
            torch.save(blob, tmp)
        except (OSError, RuntimeError) as e:  # torch reports a full disk as RuntimeError from its writer
            tmp.unlink(missing_ok=True)
            raise _write_error(spec, "progress checkpoint", folder, e, "the last complete checkpoint is kept") from e
        tmp.replace(folder / name)
    if storage.is_remote(spec.node_dir) and uploader is not None:  # in the background: training goes on
        uploader.submit(storage.upload_files, folder, storage.with_suffix(spec.node_dir, ".resume"), sorted(files, key=lambda n: n == "state.pt"))


def _load_progress(spec: RunSpec, rank: int) -> dict | None:
    folder = progress_dir(spec.node_dir)
    if storage.is_remote(spec.node_dir) and not (folder / "state.pt").exists():
        remote = storage.with_suffix(spec.node_dir, ".resume")
        for name in ("state.pt", f"rng{rank}.pt"):  # each rank fetches what it reads
            storage.download_file(storage.join(remote, name), folder / name)
    if not (folder / "state.pt").exists():
        return None
    state = torch.load(folder / "state.pt", weights_only=True)  # tensors and numbers only: never unpickles code
    if state.get("node_key") != spec.node_key:
        return None
    rng = folder / f"rng{rank}.pt"
    own = torch.load(rng, weights_only=True) if rng.exists() else None
    state["rng"] = own["rng"] if own and own["step"] == state["step"] else None
    return state


def _record_failure(spec: RunSpec, error: BaseException) -> None:
    """Append one line per failed attempt next to the node, for the report and for audits."""
    line = json.dumps({"time": time.time(), "error": f"{type(error).__name__}: {error}"[:2000]}) + "\n"
    try:
        if storage.is_remote(spec.node_dir):  # object stores cannot append: rewrite (one attempt at a time)
            path = storage.with_suffix(spec.node_dir, ".failures.jsonl")
            storage.write_text(path, (storage.read_text(path) or "") + line)
            return
        path = Path(str(spec.node_dir) + ".failures.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(line)
    except OSError as e:  # a full disk must not hide the error being recorded (it is raised either way)
        print(f"[{spec.label}] could not record the failure in the node store ({e})", file=sys.__stderr__, flush=True)


def load_weights(node_dir: str, tokenizer_id: str) -> dict[str, torch.Tensor]:
    """A finished node's weights, refused if they were trained with another tokenizer or if its
    files fail their checksums (then the node is moved aside, so the next run trains it again)."""
    from safetensors.torch import load_file

    local = Path(node_dir)
    if storage.is_remote(node_dir):  # fetched once into the local cache
        local = storage.cache_dir(node_dir)
        if not (local / NODE_FILE).exists():
            if node_done(node_dir) is None:
                raise FileNotFoundError(f"{node_dir}: no finished checkpoint (node.json missing)")
            storage.download_dir(node_dir, local)
    done = node_done(local)
    if done is None:
        raise FileNotFoundError(f"{node_dir}: no finished checkpoint (node.json missing)")
    check_same_tokenizer(tokenizer_id, done.get("tokenizer_id"), f"checkpoint {node_dir}")
    problem = verify_node(local)
    if problem:
        quarantine(node_dir, problem)
        raise CorruptCheckpoint(f"checkpoint {node_dir}: {problem}; not loaded. Run the study again to retrain it")
    return load_file(str(local / "model.safetensors"))


def _save_node(spec: RunSpec, state: dict[str, torch.Tensor], result: dict, tokenizer_id: str, uploader=None, points: list | None = None) -> None:
    """Write the finished node; in an object store, via the local cache and a background upload
    (node.json last), so the next run of the fit starts without waiting for the network. Any
    error (a full disk, an unwritable folder) leaves no node.json behind: nothing half-written is
    ever taken as finished."""
    from safetensors.torch import save_file

    remote = storage.is_remote(spec.node_dir)
    final = storage.cache_dir(spec.node_dir) if remote else Path(spec.node_dir)
    tmp = final.with_name(final.name + ".partial")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        # tied embeddings share storage; safetensors refuses shared tensors, so save clones
        save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(tmp / "model.safetensors"))
        (tmp / METRICS_FILE).write_text(json.dumps(points or []))
        files = {p.name: {"bytes": p.stat().st_size, "sha256": _digest(p)} for p in sorted(tmp.iterdir())}
        (tmp / NODE_FILE).write_text(json.dumps({"spec": asdict(spec), "result": result, "tokenizer_id": tokenizer_id, "files": files}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(spec, "checkpoint", final, e, "nothing was marked finished") from e
    if remote:
        uploader.submit(storage.upload_dir, final, spec.node_dir, NODE_FILE)


def _write_error(spec: RunSpec, what: str, where: Path, error: Exception, consequence: str) -> OSError:
    """A failed checkpoint write, said so that the user knows what to change (keeps the errno)."""
    existing = next((p for p in (where, *where.parents) if p.exists()), None)
    free = shutil.disk_usage(existing).free if existing else 0
    full = " (the disk is full)" if free < 2**27 else ""
    detail = (getattr(error, "strerror", None) or str(error))[:300]
    message = (f"{spec.label}: could not write its {what} to {where}{full} ({detail}; {free / 2**30:.3f} GiB free there). "
               f"Free space or point checkpoint_dir elsewhere; {consequence}")
    return OSError(error.errno, message) if getattr(error, "errno", None) else OSError(message)


class _StepLogger:
    """Rank 0's window to the outside: progress lines on stdout and step metrics to MLflow.

    Every point is kept (`points`: saved with progress checkpoints and in the node's metrics.json);
    MLflow gets them from a background thread, so a slow or down tracking server never stalls
    training, and exactly once (raysweep.tracking.MetricSender)."""

    def __init__(self, spec: RunSpec, tracking_uri: str | None, total_steps: int, tokens_per_step: int, active: bool):
        from concurrent.futures import ThreadPoolExecutor

        from raysweep.tracking import MetricSender

        self.spec, self.total, self.tps, self.active = spec, total_steps, tokens_per_step, active
        self.points: list[tuple] = []
        self.unsent: list[tuple] = []
        self.sender = MetricSender(tracking_uri, spec.run_id) if active and spec.run_id and tracking_uri else None
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="mlflow") if self.sender else None
        self.t0 = self.last_print = time.perf_counter()

    def restore(self, points: list, step: int) -> None:
        """After a resume: the points logged up to the checkpoint's step (later ones are made again)."""
        self.points = [tuple(p) for p in points if p[3] <= step]
        self.unsent = list(self.points) if self.sender else []  # any the store missed before the interruption

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if not self.active:
            return
        ts = int(time.time() * 1000)
        new = [(k, float(v), ts, step) for k, v in values.items()]
        self.points += new
        if self.sender:
            self.unsent += new
            if len(self.unsent) >= 200:
                self.flush()

    def flush(self) -> None:
        if self.sender and self.unsent:
            batch, self.unsent = self.unsent, []
            self.thread.submit(self.sender.send, batch)

    def close(self, timeout: float = 30.0) -> None:
        """Send what is left, waiting at most `timeout` s (what MLflow misses, the driver's sync delivers)."""
        if not self.thread:
            return
        self.flush()
        done = self.thread.submit(lambda: None)
        try:
            done.result(timeout=timeout)
        except Exception:  # noqa: BLE001 - a stalled store: leave the thread, never the run
            pass
        self.thread.shutdown(wait=False)

    def progress(self, step: int, train_loss: float, evals: dict[str, float] | None = None, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.active or (not force and now - self.last_print < 10.0):
            return
        self.last_print = now
        elapsed = now - self.t0
        rate = step * self.tps / max(elapsed, 1e-9)
        eta = (self.total - step) * self.tps / max(rate, 1e-9)
        ev = "".join(f" | {k} {v:.3f}" for k, v in (evals or {}).items())
        # sys.__stdout__: Ray Train patches print() in workers to tee into its logger, which
        # would show every line twice; a print to the raw stream is shown once.
        print(
            f"[{self.spec.label}] step {step}/{self.total} | {step * self.tps / 1e3:.0f}k/{self.total * self.tps / 1e3:.0f}k tok"
            f" | {rate / 1e3:.1f}k tok/s | left ~{eta:.0f}s | train {train_loss:.3f}{ev}",
            file=sys.__stdout__,
            flush=True,
        )


def _evaluate(model, sets: dict[str, torch.Tensor], device, rank: int, world: int, batch: int = 32) -> dict[str, float]:
    """Mean next-token cross-entropy per held-out set; blocks are sharded over ranks and summed."""
    was_training = model.training
    model.eval()
    out = {}
    with torch.no_grad():
        for name, blocks in sets.items():
            mine = blocks[rank::world]
            total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, count of tokens)
            for i in range(0, len(mine), batch):
                x = mine[i : i + batch].to(device)
                with _autocast(device):
                    logits = model(input_ids=x[:, :-1]).logits
                loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="sum")
                total += torch.stack([loss.double(), torch.tensor(x[:, 1:].numel(), dtype=torch.float64, device=device)])
            if world > 1:
                torch.distributed.all_reduce(total)
            out[name] = (total[0] / total[1]).item()
    model.train(was_training)
    return out


def forward_backward(step_model, model, opt, x: torch.Tensor, device, poison: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step up to the optimizer update: next-token cross-entropy on the block `x`
    (bf16 autocast on GPU), gradients, clipping to norm 1.0. Returns (loss, gradient norm); the
    caller decides whether to step (bench/gpu_mfu.py times this same function). `poison`: make
    the loss NaN (fault injection, RAYSWEEP_INJECT_NAN)."""
    with _autocast(device):
        logits = step_model(input_ids=x[:, :-1]).logits  # (batch, seq, vocab)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
    if poison:
        loss = loss * float("nan")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    return loss, torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)


def _autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _optimizer(model, spec: RunSpec, device) -> torch.optim.Optimizer:
    # No weight decay on norms (1-D tensors), as in nanoGPT; embeddings (2-D) are decayed.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=spec.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def add_lora(model, lora: dict, dropout: float):
    """Freeze the model and add LoRA adapters (peft) on `lora["targets"]`; only the adapters train."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"], lora_dropout=dropout, target_modules=list(lora["targets"]), bias="none")
    return get_peft_model(model, cfg)


def batches(blocks: np.ndarray, per_rank: int, device, label: str = "") -> Iterator[torch.Tensor]:
    """This rank's batches, in order, repeating the rows as often as the step budget needs."""
    n = len(blocks) // per_rank
    if n == 0:
        raise ValueError(f"{label}: the training stream holds less than one batch per worker")
    while True:
        for i in range(n):  # a copy: the rows are a read-only view of the object store
            yield torch.tensor(blocks[i * per_rank:(i + 1) * per_rank], dtype=torch.long, device=device)


def run_one(spec: RunSpec, init_state, blocks: np.ndarray, ctx: dict, eval_sets: dict[str, torch.Tensor], rank: int, world: int):
    """Train one run on this rank's rows `blocks` (streams.rank_blocks); returns (result dict, final weights on CPU, metric points)."""
    import ray.train.torch

    if ctx.get("inject_failure") and ctx["inject_failure"] in spec.label:
        raise RuntimeError(f"{spec.label}: failure injected by RAYSWEEP_INJECT_FAILURE={ctx['inject_failure']!r}")
    kill_at = _injected_step(ctx.get("inject_kill"), spec.label)
    nan_at = _injected_step(ctx.get("inject_nan"), spec.label)
    device = ray.train.torch.get_device()
    residual_dropout = 0.0 if spec.lora else spec.dropout
    model = build_model(ctx["preset"], ctx["vocab_size"], ctx["seq_len"], dropout=residual_dropout, seed=spec.seed)
    if init_state is not None:
        model.load_state_dict(init_state)
        set_dropout(model, residual_dropout)
    if spec.lora:
        model = add_lora(model, spec.lora, spec.dropout)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model = ray.train.torch.prepare_model(model)
    raw = model.module if hasattr(model, "module") else model
    opt = _optimizer(model, spec, device)
    # the training step may run a compiled graph; evaluation and checkpoints use the plain module
    step_model = torch.compile(model) if ctx.get("compile") else model
    per_rank = spec.batch_size // world
    tokens_per_step = spec.batch_size * ctx["seq_len"]
    log = _StepLogger(spec, ctx.get("tracking_uri"), spec.max_steps, tokens_per_step, active=rank == 0)
    torch.manual_seed(spec.seed + rank)  # dropout masks differ per rank, fixed per seed

    monitor = {k: eval_sets[k] for k in spec.monitor}
    best, best_state, best_step, bad = math.inf, None, 0, 0
    step, train_loss, stopped_early, evals = 0, float("nan"), False, {}
    it = batches(blocks, per_rank, device, spec.label)
    resumed_from, seconds_before = 0, 0.0
    saved = _load_progress(spec, rank) if spec.checkpoint_every else None
    if saved is not None:  # continue where an interrupted attempt left off, bit for bit
        raw.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        step, best, best_step, bad = saved["step"], saved["best"], saved["best_step"], saved["bad"]
        best_state = saved["best_state"] or None
        seconds_before = saved["train_seconds"]
        if saved["rng"] is not None:
            torch.set_rng_state(saved["rng"])
        log.restore(saved.get("metrics", []), step)
        for _ in range(step):  # the data position: the same batches follow as in an uninterrupted run
            next(it)
        resumed_from = step
        if rank == 0:
            print(f"[{spec.label}] resumed at step {step}/{spec.max_steps} from {progress_dir(spec.node_dir)}", file=sys.__stdout__, flush=True)
    t_train = time.perf_counter()
    model.train()
    seen_rows: list[str] = []  # audit only: digests of the rows this rank trained on
    data_wait = 0.0  # seconds spent waiting for the next batch: the stream must never starve training
    t_first = None  # end of this attempt's first step: the steady-state rate excludes one-off start-up
    while step < spec.max_steps:
        t_wait = time.perf_counter()
        x = next(it)
        data_wait += time.perf_counter() - t_wait
        if ctx.get("audit"):
            seen_rows += [hashlib.sha1(r.cpu().numpy().tobytes()).hexdigest() for r in x]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, spec.lr, spec.min_lr, spec.warmup_steps, spec.max_steps)
        loss, norm = forward_backward(step_model, model, opt, x, device, poison=nan_at is not None and step == nan_at)
        # The norm of the all-reduced gradient is the same on every rank, so all ranks stop together
        # (a per-rank loss test could stop one rank inside a collective the others wait in).
        if not torch.isfinite(norm):
            log.close()
            raise Diverged(f"{spec.label}: non-finite loss/gradient at step {step} (loss {loss.item():.4g}); "
                           f"this config diverges: lower its lr ({spec.lr:g})", step, log.points)
        opt.step()
        step += 1
        train_loss = loss.item()
        if t_first is None:
            t_first, first_step = time.perf_counter(), step
        if step % 10 == 0:
            log.metrics(step, {"train_loss": train_loss, "lr": opt.param_groups[0]["lr"]})
        if step % spec.eval_every == 0 or step == spec.max_steps:
            evals = _evaluate(model, monitor, device, rank, world)
            log.metrics(step, {f"heldout_{k}": v for k, v in evals.items()})
            log.progress(step, train_loss, evals, force=True)
            if spec.early_stop_on:
                current = evals[spec.early_stop_on]
                if current < best - 1e-4:
                    best, best_step, bad = current, step, 0
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in raw.state_dict().items()}
                else:
                    bad += 1
                    if bad >= spec.patience:
                        stopped_early = True
                        break
        else:
            log.progress(step, train_loss)
        if spec.checkpoint_every and step % spec.checkpoint_every == 0 and step < spec.max_steps:
            counters = {"step": step, "best": best, "best_step": best_step, "bad": bad,
                        "train_seconds": seconds_before + time.perf_counter() - t_train, "metrics": list(log.points)}
            _save_progress(spec, rank, raw.state_dict() if rank == 0 else None, opt.state_dict() if rank == 0 else None, counters, best_state,
                           ctx.get("uploader"))
        if kill_at is not None and step == kill_at and rank == 0:
            _injected_kill(spec, step)
    t_end = time.perf_counter()
    train_seconds = seconds_before + t_end - t_train
    # tokens/s after the first step (the data iterator's start, first allocations): the loop's own speed
    steady = (step - first_step) * tokens_per_step / (t_end - t_first) if t_first is not None and step > first_step else None
    if best_state is not None:
        raw.load_state_dict(best_state)  # θ_post is the best checkpoint, not the last
    final = _evaluate(model, eval_sets, device, rank, world)
    if spec.lora:
        raw = raw.merge_and_unload()  # θ_post = base + the adapters' product: a plain model for stage 3
    log.metrics(step, {f"final_{k}": v for k, v in final.items()})
    log.close()
    result = {
        "losses": final,
        "steps": step,
        "best_step": best_step if spec.early_stop_on else step,
        "stopped_early": stopped_early,
        "tokens": step * tokens_per_step,
        "train_seconds": train_seconds,
        "tokens_per_s": step * tokens_per_step / max(train_seconds, 1e-9),
        "steady_tokens_per_s": steady,
        "trainable_parameters": trainable,
        "resumed_from_step": resumed_from,
        "data_wait_seconds": data_wait,
        "data_wait_share": data_wait / max(train_seconds, 1e-9),
    }
    if ctx.get("compile"):  # graphs torch.compile has built in this worker so far (a warm slot reuses them)
        from torch._dynamo.utils import counters

        result["compiled_graphs"] = int(counters["stats"]["unique_graphs"])
    state = {k: v.detach().to("cpu", copy=True) for k, v in raw.state_dict().items()}
    if ctx.get("audit"):
        result["audit"] = _audit(state, seen_rows, world)
    return result, state, log.points


def _injected_step(value: str | None, label: str) -> int | None:
    """Fault injection for tests and drills: "<text>@<step>" hits the runs whose label holds <text>."""
    if not value or "@" not in value:
        return None
    text, _, step = value.rpartition("@")
    return int(step) if text in label else None


def _injected_kill(spec: RunSpec, step: int) -> None:
    """SIGKILL this worker once (RAYSWEEP_INJECT_KILL), like a preempted machine: no cleanup runs."""
    marker = progress_dir(spec.node_dir) / f"killed-at-{step}"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    print(f"[{spec.label}] worker SIGKILLed at step {step} (RAYSWEEP_INJECT_KILL)", file=sys.__stdout__, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _audit(state: dict[str, torch.Tensor], seen_rows: list[str], world: int) -> dict:
    """What each rank trained on and ended with, gathered on every rank (for tests of DDP)."""
    digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()
    mine = {"weights": digest, "rows": seen_rows}
    everyone = [None] * world
    if world > 1:
        torch.distributed.all_gather_object(everyone, mine)
    else:
        everyone = [mine]
    return {"weights": [e["weights"] for e in everyone], "rows": [e["rows"] for e in everyone]}


def train_loop(ctx: dict) -> list[dict]:
    """Ray Train entry point. ctx: model shape, eval sets, tokenizer id, and either the runs to train
    (`runs`, with this fit's rows in `data`) or a warm slot's queue (`work`: raysweep.pool.serve)."""
    import ray.train

    tc = ray.train.get_context()
    rank, world = tc.get_world_rank(), tc.get_world_size()
    torch.set_num_threads(max(1, int(ctx.get("threads", 1))))
    eval_sets = {name: torch.from_numpy(read_blocks(path, ctx["eval_tokens"])) for name, path in ctx["eval_paths"].items()}
    ctx["uploader"] = storage.Uploader()  # object-store writes happen behind training
    if "work" in ctx:
        from raysweep.pool import serve

        work = ctx["work"]
        serve(ctx["queue"], ctx["slot"], ctx["kinds"], rank, world, lambda item: work.run_item(item, ctx, eval_sets, rank, world))
        return []
    return run_specs([RunSpec(**s) for s in ctx["runs"]], ctx["data"], ctx, eval_sets, rank, world)


def run_specs(specs: list[RunSpec], data: dict, ctx: dict, eval_sets: dict[str, torch.Tensor], rank: int, world: int) -> list[dict]:
    """Train `specs` in order on every rank of the worker group; a run whose parent was trained just
    before starts from its weights in memory. data[spec.dataset][rank] is the ObjectRef of each
    rank's rows (streams.put_rank_blocks). Every node is stored (uploads included) before this returns."""
    import ray

    results, states, diverged = [], {}, set()
    uploader = ctx["uploader"]
    for spec in specs:
        if spec.init_from in diverged:  # its parent diverged in this fit: nothing to start from
            results.append({"node_key": spec.node_key, "blocked": True})
            continue
        if spec.init_from is None:
            init = None
        elif spec.init_from in states:
            init = states[spec.init_from]
        else:
            init = load_weights(spec.init_from, ctx["tokenizer_id"])
        blocks = ray.get(data[spec.dataset][rank])
        try:
            result, state, points = run_one(spec, init, blocks, ctx, eval_sets, rank, world)
        except Diverged as e:  # deterministic: recorded as the run's outcome, not retried
            if rank == 0:
                storage.write_text(diverged_path(spec.node_dir), json.dumps(
                    {"step": e.step, "lr": spec.lr, "error": str(e), "metrics": e.points, "time": time.time()}))
                shutil.rmtree(progress_dir(spec.node_dir), ignore_errors=True)
            diverged.add(spec.node_dir)
            results.append({"node_key": spec.node_key, "diverged": e.step})
            continue
        except Exception as e:
            if rank == 0:
                _record_failure(spec, e)
            uploader.wait()  # what finished before the failure is stored before the attempt ends
            raise
        result["rank"] = rank
        if rank == 0:
            _save_node(spec, state, result, ctx["tokenizer_id"], uploader, points)
            shutil.rmtree(progress_dir(spec.node_dir), ignore_errors=True)  # finished: nothing to resume
            if storage.is_remote(spec.node_dir):
                uploader.submit(storage.delete, storage.with_suffix(spec.node_dir, ".resume"))
        states[spec.node_dir] = state
        results.append({"node_key": spec.node_key, **result})
    uploader.wait()  # every node is stored before it counts as done (a child in another slot may load it next)
    if world > 1:
        torch.distributed.barrier()  # every checkpoint is on disk before the group goes on
    return results
