"""The data cache published beside an object-store node store, for workers that do not share the
driver's disk: plans and shards copied once under `<checkpoint_dir>/data/` with a manifest of
every file's SHA-256, and fetched by a worker into its own cache, checked byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

from raysweep.data.blocks import ARRAYS, Stream


def data_mirror(checkpoint_dir) -> str | None:
    """Where the data cache is copied for workers that do not share the driver's disk: beside the
    nodes, when the node store is an object store (a shared folder needs no copy)."""
    from raysweep.store import storage

    return storage.join(checkpoint_dir, "data") if storage.is_remote(checkpoint_dir) else None


def _plan_files(plan_file: Path) -> list[Path]:
    """A plan's own files and the shard files it reads (paths as on this machine)."""
    folder = plan_file.parent
    shards = [(folder / f["path"]).resolve() for f in json.loads(plan_file.read_text())["files"]]
    return [plan_file, *(folder / f"{a}.npy" for a in ARRAYS), *shards, folder / "stats.json"]


MANIFEST = "manifest.json"  # beside a published plan: every file it needs, with its bytes and SHA-256


class CorruptData(OSError):
    """A published data file whose bytes do not match its manifest, twice: never trained on."""


def publish(streams: list[Stream], cache_root: Path, mirror: str) -> None:
    """Copy the streams' plans and shards under `mirror` (an object-store URI), each file once (a
    file already there with its size is skipped), then a manifest of every file's SHA-256, then
    stats.json last, so workers on machines that do not share this one's disk can fetch them
    (StreamSource) and check every byte they fetched."""
    from raysweep.store import storage
    from raysweep.store.keys import file_digest

    root = cache_root.resolve()
    done: set[Path] = set()
    for stream in streams:
        files = _plan_files(Path(stream.path))
        plan_dir = files[0].parent.relative_to(root).parts
        remote_manifest = storage.join(mirror, *plan_dir, MANIFEST)
        sizes = {path: storage.file_size(storage.join(mirror, *path.relative_to(root).parts)) for path in files}
        if storage.file_size(remote_manifest) is not None and all(sizes[p] == p.stat().st_size for p in files):
            continue  # published whole before
        for path in files[:-1]:  # stats.json last: its presence says the rest is there
            if path not in done and sizes[path] != path.stat().st_size:
                parts = path.relative_to(root).parts
                storage.upload_files(path.parent, storage.join(mirror, *parts[:-1]), [path.name])
            done.add(path)
        manifest = {path.relative_to(root).as_posix(): {"bytes": path.stat().st_size, "sha256": file_digest(path)} for path in files}
        storage.write_text(remote_manifest, json.dumps(manifest, indent=1))
        stats = files[-1]
        storage.upload_files(stats.parent, storage.join(mirror, *plan_dir), [stats.name])


def fetch(mirror: str, rel: str) -> Path:
    """The local copy (RAYSWEEP_CACHE) of a published plan and its shards, downloaded once per
    machine and checked against the manifest's SHA-256: a file whose bytes differ is fetched
    again, and one that differs twice raises CorruptData (the local copy is never completed, so
    nothing trains on it)."""
    from raysweep.store import storage
    from raysweep.store.keys import file_digest

    root = storage.cache_dir(mirror)  # one folder per mirror; its layout is the data cache's
    plan = root / rel
    if (plan.parent / "stats.json").exists():
        return plan
    remote_manifest = storage.join(mirror, *Path(rel).parent.parts, MANIFEST)
    text = storage.read_text(remote_manifest)
    if text is None:
        raise FileNotFoundError(f"{remote_manifest}: no manifest; the driver publishes one with the data (run the study again)")
    for name, want in json.loads(text).items():  # stats.json is listed last
        local = root / name
        for downloads in range(3):  # a copy already here (an earlier fetch cut short), then at most two downloads
            if local.exists() and local.stat().st_size == want["bytes"] and file_digest(local) == want["sha256"]:
                break
            if downloads < 2:
                local.unlink(missing_ok=True)
                storage.download_file(storage.join(mirror, *Path(name).parts), local)
        else:
            got = file_digest(local) if local.exists() else "nothing"
            local.unlink(missing_ok=True)
            raise CorruptData(
                f"{storage.join(mirror, name).partition('?')[0]}: its bytes (SHA-256 {got[:16]}) differ from the manifest's ({want['sha256'][:16]}) "
                "after fetching it twice; delete it from the node store's data/ and run the study again (the driver publishes it anew)"
            )
    return plan
