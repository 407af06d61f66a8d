"""The node store: one folder per finished run, named by its key, local or in an object store.

What a node folder guarantees (README, "Guarantees"): it is written under a temporary name and
renamed, node.json last, so a folder with node.json is complete; node.json holds the size and
SHA-256 of every other file, checked before weights are ever loaded (a corrupt node is moved
aside and trained again, never loaded); metrics.json holds every metric point the run logged, so
MLflow can be rebuilt from the folders alone. A run whose loss turns non-finite is recorded as
*diverged* (`<node>.diverged.json`): a deterministic outcome of its config, never retried. Every
failed attempt adds a line to `<node>.failures.jsonl`. An unfinished node keeps its resumable
progress in `<node>.resume/` (weights, optimizer, counters, each rank's RNG).

torch and safetensors are imported only where weights are read or written, so planning a tree
(which asks which nodes are done) stays light.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from raysweep import signals
from raysweep.spec import RunSpec
from raysweep.store import storage
from raysweep.store.keys import file_digest


class TokenizerMismatchError(RuntimeError):
    """A checkpoint, stream or parent node was made with another tokenizer than the study's."""


def check_same_tokenizer(expected: str, found: str | None, what: str) -> None:
    """Refuse to mix vocabularies: `what` was made with tokenizer `found`, the study uses `expected`."""
    if found != expected:
        raise TokenizerMismatchError(
            f"{what} was made with tokenizer {found!r}, but this study's tokenizer is {expected!r}; "
            "token ids would mean different strings. Use the same tokenizer settings or a new output_dir."
        )


NODE_FILE = "node.json"  # written last: a node folder with this file is complete
SLICES_SUFFIX = ".slices.json"  # beside a node: its scores on the held-out slices (raysweep.sweep.slices)
METRICS_FILE = "metrics.json"  # every metric point the run logged: [key, value, timestamp ms, step]


class CorruptCheckpoint(RuntimeError):
    """A node's files do not match the sizes and checksums its node.json recorded."""


# ------------------------------------------------------------------------------ reading


def node_done(node_dir: str | Path) -> dict | None:
    """The node.json of a finished node (a local folder or a URI, raysweep.store.storage), or None."""
    text = storage.read_text(storage.join(node_dir, NODE_FILE))
    return json.loads(text) if text is not None else None


def slices_path(node_dir: str | Path) -> str:
    return storage.with_suffix(node_dir, SLICES_SUFFIX)


def diverged_path(node_dir: str | Path) -> str:
    return storage.with_suffix(node_dir, ".diverged.json")


def node_diverged(node_dir: str | Path) -> dict | None:
    """The record of a run whose loss became non-finite ({step, lr, error, metrics}), or None."""
    text = storage.read_text(diverged_path(node_dir))
    return json.loads(text) if text is not None else None


def node_settled(node_dir: str | Path) -> bool:
    """Nothing is left to train at `node_dir`: the run finished, or it diverged (an outcome too)."""
    return node_done(node_dir) is not None or node_diverged(node_dir) is not None


def node_points(node_dir: str | Path) -> list[list]:
    """Every metric point a settled node logged (finished: metrics.json; diverged: its record)."""
    text = storage.read_text(storage.join(node_dir, METRICS_FILE))
    if text is not None:
        return json.loads(text)
    return (node_diverged(node_dir) or {}).get("metrics", [])


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
        if full and file_digest(path) != want["sha256"]:
            return f"{name} does not match the SHA-256 node.json recorded (corrupted)"
    return None


def quarantine(node_dir: str | Path, problem: str) -> str:
    """Move a corrupt node out of the store (kept beside it for a post-mortem); it is trained again,
    and scored again on the held-out slices (its scores were of the weights now found corrupt)."""
    storage.delete(slices_path(node_dir))
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


def load_weights(node_dir: str, tokenizer_id: str) -> dict:
    """A finished node's weights (name -> tensor), refused if they were trained with another
    tokenizer or if its files fail their checksums (then the node is moved aside, so the next run
    trains it again)."""
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


# ------------------------------------------------------------------------------ writing


def unshared(state: dict) -> dict:
    """`state` as safetensors takes it: it refuses tensors that share storage, so the second of a
    tied pair (the head, sharing the embedding's) is a clone; the rest are saved as they are
    (they were all cloned before 2026-12-07: a transient copy of the model per node written)."""
    seen: set = set()
    out = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.detach().clone() if ptr in seen else v.detach().contiguous()
        seen.add(ptr)
    return out


def save_node(
    spec: RunSpec, state: dict, result: dict, tokenizer_id: str, uploader=None, points: list | None = None, trained_by: str = ""
) -> None:
    """Write the finished node; in an object store, via the local cache and a background upload
    (node.json last), so the next run of the fit starts without waiting for the network. Any
    error (a full disk, an unwritable folder) leaves no node.json behind: nothing half-written is
    ever taken as finished."""
    from safetensors.torch import save_file

    remote = storage.is_remote(spec.node_dir)
    final = storage.cache_dir(spec.node_dir) if remote else Path(spec.node_dir)
    try:
        with storage.atomic_dir(final) as tmp:
            if spec.keep_weights:
                save_file(unshared(state), str(tmp / "model.safetensors"))
            (tmp / METRICS_FILE).write_text(json.dumps(points or []))
            files = {p.name: {"bytes": p.stat().st_size, "sha256": file_digest(p)} for p in sorted(tmp.iterdir())}
            node = {"spec": asdict(spec), "result": result, "tokenizer_id": tokenizer_id, "files": files, "trained_by": trained_by}
            (tmp / NODE_FILE).write_text(json.dumps(node, indent=1))
            signals.hold_if_stopping()  # a stop signal came: this node is not stored (its progress checkpoint is)
    except Exception as e:  # safetensors reports a full disk as its own error, in words
        if not (isinstance(e, OSError) or storage.is_disk_full(e)):
            raise
        needed = tensor_bytes(state) if spec.keep_weights else None
        raise write_error(spec, "checkpoint", final, e, "nothing was marked finished", needed) from e
    if remote:
        uploader.submit(storage.upload_dir, final, spec.node_dir, NODE_FILE)


def drop_weights(node_dir: str | Path, why: str) -> bool:
    """A finished node's weights deleted, its losses, metric points and record kept (node.json says
    why, and lists its files without them, so it stays intact). For nodes nothing will load again:
    a halving rung whose configuration was pruned. False where there were none to drop."""
    done = node_done(node_dir)
    if done is None or "model.safetensors" not in done.get("files", {}):
        return False
    done["files"] = {k: v for k, v in done["files"].items() if k != "model.safetensors"}
    done["weights_dropped"] = why
    # the record first: a stop between the two leaves unlisted weights (harmless), never a listed file missing
    storage.write_text(storage.join(node_dir, NODE_FILE), json.dumps(done, indent=1))
    storage.delete(storage.join(node_dir, "model.safetensors"))
    if storage.is_remote(node_dir):  # the local copy of it, if this machine downloaded one
        shutil.rmtree(storage.cache_dir(str(node_dir)), ignore_errors=True)
    return True


def save_diverged(node_dir: str | Path, lr: float, step: int, error: str, points: list) -> None:
    """Record a run whose loss became non-finite (its outcome, never retried); its progress goes."""
    storage.write_text(
        diverged_path(node_dir), json.dumps({"step": step, "lr": lr, "error": error, "metrics": points, "time": time.time()})
    )
    shutil.rmtree(progress_dir(node_dir), ignore_errors=True)


def record_failure(spec: RunSpec, error: BaseException | str) -> None:
    """Append one line per failed attempt next to the node, for the report and for audits (an
    error raised in the worker, or the driver's account of an attempt whose worker died)."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    line = json.dumps({"time": time.time(), "error": text[:2000]}) + "\n"
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


def failures_since(node_dir, since: float) -> int:
    """How many failed attempts of the node were recorded at or after `since` (seconds since the epoch)."""
    text = storage.read_text(storage.with_suffix(node_dir, ".failures.jsonl"))
    return sum(1 for line in (text or "").splitlines() if line.strip() and json.loads(line)["time"] >= since)


def write_error(spec: RunSpec, what: str, where: Path, error: Exception, consequence: str, needed: int | None = None) -> OSError:
    """A failed checkpoint write, said so that the user knows what to change: a full disk as
    storage.DiskFull (the path, the bytes free there and the bytes the write needed), anything else
    with the errno kept."""
    # torch's writer says only "file write failed" or "unexpected pos": a write that needed more than is free was a full disk
    if storage.is_disk_full(error) or (needed and storage.free_bytes(where) < needed):
        return storage.disk_full(where, needed, f"{spec.label}: could not write its {what}", consequence, key="checkpoint_dir")
    free = storage.free_bytes(where)
    detail = (getattr(error, "strerror", None) or str(error))[:300]
    message = (
        f"{spec.label}: could not write its {what} to {where} ({detail}; {free / 2**30:.3f} GiB free there). "
        f"Free space or point checkpoint_dir elsewhere; {consequence}"
    )
    return OSError(error.errno, message) if getattr(error, "errno", None) else OSError(message)


def tensor_bytes(obj) -> int:
    """Bytes of the tensors in a (nested) state: what writing it needs, about."""
    if hasattr(obj, "nbytes") and hasattr(obj, "dtype"):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


# ------------------------------------------------------------------------------ progress (resume)


def progress_dir(node_dir: str | Path) -> Path:
    """Where an unfinished node keeps its resumable progress (deleted once node.json exists); for a
    node in an object store, the local copy of `<node>.resume` (uploaded after each save)."""
    if storage.is_remote(node_dir):
        return storage.cache_dir(storage.with_suffix(node_dir, ".resume"))
    return Path(str(node_dir) + ".resume")


def save_progress(
    spec: RunSpec, rank: int, model_state: dict | None, opt_state: dict | None, counters: dict, best_state: dict | None, uploader=None
) -> None:
    """Everything needed to continue bit for bit: weights, optimizer, counters, best-so-far, and
    each rank's RNG. Each file is written atomically, so a kill never leaves half a file."""
    import torch

    key, node_dir = spec.progress_node  # a rung's are its run's (raysweep.spec.RunSpec.rung_of)
    folder = progress_dir(node_dir)
    files = {f"rng{rank}.pt": {"step": counters["step"], "rng": torch.get_rng_state()}}
    if rank == 0:
        files["state.pt"] = {"node_key": key, "model": model_state, "opt": opt_state, "best_state": best_state or {}, **counters}
    for name, blob in files.items():
        try:
            with storage.atomic_file(folder / name) as tmp:
                torch.save(blob, tmp)
        except (OSError, RuntimeError) as e:  # torch reports a full disk as RuntimeError from its writer
            raise write_error(spec, "progress checkpoint", folder, e, "the last complete checkpoint is kept", tensor_bytes(blob)) from e
    if storage.is_remote(node_dir) and uploader is not None:  # in the background: training goes on
        uploader.submit(
            storage.upload_files, folder, storage.with_suffix(node_dir, ".resume"), sorted(files, key=lambda n: n == "state.pt")
        )


def load_progress(spec: RunSpec, rank: int) -> dict | None:
    """The progress an interrupted attempt of this node saved (with this rank's RNG), or None. A
    rung reads its run's, and none from beyond its own last step (that rung is then made again)."""
    import torch

    key, node_dir = spec.progress_node
    folder = progress_dir(node_dir)
    if storage.is_remote(node_dir) and not (folder / "state.pt").exists():
        remote = storage.with_suffix(node_dir, ".resume")
        for name in ("state.pt", f"rng{rank}.pt"):  # each rank fetches what it reads
            storage.download_file(storage.join(remote, name), folder / name)
    if not (folder / "state.pt").exists():
        return None
    state = torch.load(folder / "state.pt", weights_only=True)  # tensors and numbers only: never unpickles code
    if state.get("node_key") != key or (spec.stop_at is not None and state["step"] > spec.stop_at):
        return None
    rng = folder / f"rng{rank}.pt"
    own = torch.load(rng, weights_only=True) if rng.exists() else None
    state["rng"] = own["rng"] if own and own["step"] == state["step"] else None
    return state


def finish_progress(spec: RunSpec, uploader=None) -> None:
    """A finished node has nothing to resume: its progress checkpoint goes (remote copy included).
    A rung's stays: the next rung, or the run itself, continues from it."""
    if spec.rung_of is not None:
        return
    shutil.rmtree(progress_dir(spec.node_dir), ignore_errors=True)
    if storage.is_remote(spec.node_dir) and uploader is not None:
        uploader.submit(storage.delete, storage.with_suffix(spec.node_dir, ".resume"))
