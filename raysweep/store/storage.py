"""Where nodes live: a local folder (or NFS mount), or an object store named by a URI.

`checkpoint_dir` may be a path, or any URI pyarrow's filesystems open: `s3://bucket/prefix`,
`gs://bucket/prefix`, `hdfs://…`, `file:///…`. pyarrow options go in the URI's query, e.g.
`s3://bucket/nodes?region=eu-west-1` or `?endpoint_override=minio:9000&scheme=http`; credentials
come from the environment or the instance role, never from a study file.

For a URI, every node is written to a local cache first (`RAYSWEEP_CACHE`, default
~/.cache/raysweep) and uploaded by a background thread while training goes on; node.json is
uploaded last, so a node is finished remotely only once all of it is there. Parents are
downloaded into the cache once. A local path is used directly, as before.

Every file raysweep writes locally goes through `atomic_file` or `atomic_dir`: written under a
temporary name and renamed into place, so a file or folder that exists is complete (a kill or a
full disk leaves at most the temporary behind, never half a file taken for a whole one).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from raysweep.store.keys import text_key


class DiskFull(OSError):
    """A write that found no space: says where, how much was free there and how much was needed."""

    def __init__(self, path: str | Path, free: int, needed: int | None, what: str = "", consequence: str = "", key: str = "output_dir"):
        self.path, self.free, self.needed = str(path), free, needed
        need = f", {needed / 2**20:,.1f} MiB needed" if needed else ""
        what = f"{what}: " if what else ""
        message = f"{what}the disk is full at {path} ({free / 2**20:,.1f} MiB free{need}); free space there or point {key} elsewhere"
        super().__init__(errno.ENOSPC, message + (f"; {consequence}" if consequence else ""))

    def __str__(self) -> str:  # the message alone, not OSError's "[Errno 28] ..."
        return self.strerror


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC, raised as such or reported in words by a library (safetensors: "No space left on
    device (os error 28)"; torch's writer: "file write failed")."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text


def free_bytes(path: str | Path) -> int:
    """Free bytes on the filesystem of `path` (its nearest existing parent); 0 if none is found."""
    p = Path(path)
    existing = next((q for q in (p, *p.parents) if q.exists()), None)
    return shutil.disk_usage(existing).free if existing else 0


def disk_full(path: str | Path, needed: int | None = None, what: str = "", consequence: str = "", key: str = "output_dir") -> DiskFull:
    """The DiskFull of a write to `path` that needed `needed` bytes; `key`: the study key that moves it."""
    return DiskFull(path, free_bytes(path), needed, what, consequence, key)


def _private_suffix() -> str:
    """A temporary-name suffix no other process or thread uses (concurrent downloads of one node)."""
    return f".download-{os.getpid()}-{threading.get_ident()}"


@contextlib.contextmanager
def atomic_file(path: str | Path, private: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; once the block ends without error it is renamed to
    `path` (atomic on one filesystem), else removed. `private`: a temporary name unique to this
    process and thread, for files several writers may make at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + (_private_suffix() if private else ".tmp"))
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path, private: bool = False) -> Iterator[Path]:
    """Yield a new, empty temporary folder beside `path`; once the block ends without error it
    replaces `path` whole (an older folder of that name is removed first), else it is removed."""
    path = Path(path)
    tmp = path.with_name(path.name + (_private_suffix() if private else ".partial"))
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_remote(path: str | Path) -> bool:
    return "://" in str(path)


def join(base: str | Path, *parts: str) -> str:
    """`base/part/...`, keeping a URI's query at the end."""
    if not is_remote(base):
        return str(Path(base, *parts))
    head, sep, query = str(base).partition("?")
    return "/".join([head.rstrip("/"), *parts]) + sep + query


def with_suffix(path: str | Path, suffix: str) -> str:
    """`path` + suffix (e.g. '.resume'), before a URI's query."""
    head, sep, query = str(path).partition("?")
    return head + suffix + sep + query


@functools.lru_cache(maxsize=4096)
def _resolve(uri: str):
    """(filesystem, path) of a URI, made once per URI: building an S3 or GCS client is not free, and
    a tree run looks at every node's node.json (and more) several times."""
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(uri)


@functools.lru_cache(maxsize=16)
def _s3_client(endpoint: str | None, region: str | None):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=region)


def create_exclusive(path: str, text: str) -> bool | None:
    """Write an object only if none is there (S3's conditional write, `If-None-Match: *`, which AWS
    S3 and S3-compatible stores such as MinIO honour): True if this call created it, False if an
    object was there already, None where the store cannot say (not S3, boto3 missing, a bucket not
    made yet, a store without conditional writes): the caller then writes and reads back."""
    from urllib.parse import parse_qs, urlparse

    u = urlparse(str(path))
    if u.scheme != "s3":
        return None
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return None
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    endpoint = f"{q.get('scheme', 'https')}://{q['endpoint_override']}" if q.get("endpoint_override") else None
    try:
        _s3_client(endpoint, q.get("region")).put_object(Bucket=u.netloc, Key=u.path.lstrip("/"), Body=text.encode(), IfNoneMatch="*")
        return True
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            return False
        return None  # NoSuchBucket, NotImplemented, AccessDenied ...: the write-settle-read path decides
    except BotoCoreError:
        return None


def cache_dir(uri: str) -> Path:
    """The local copy of a remote folder (stable: the same URI always maps to the same folder)."""
    head = uri.partition("?")[0]
    root = Path(os.environ.get("RAYSWEEP_CACHE", Path.home() / ".cache" / "raysweep"))
    return root / "nodes" / text_key(head, 24)


def read_text(path: str | Path) -> str | None:
    """A file's text, or None if it does not exist."""
    if not is_remote(path):
        p = Path(path)
        return p.read_text() if p.exists() else None
    import pyarrow.fs as pafs

    fs, p = _resolve(str(path))
    if fs.get_file_info(p).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(p) as f:
        return f.read().decode()


def write_text(path: str | Path, text: str) -> None:
    """Write a whole file (a temp name, then renamed, where the filesystem can rename)."""
    if not is_remote(path):
        with atomic_file(path) as tmp:
            tmp.write_text(text)
        return
    fs, p = _resolve(str(path))
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as f:  # an object store writes an object whole or not at all
        f.write(text.encode())


def file_size(path: str | Path) -> int | None:
    """A file's size in bytes, or None if it does not exist."""
    if not is_remote(path):
        p = Path(path)
        return p.stat().st_size if p.is_file() else None
    import pyarrow.fs as pafs

    fs, p = _resolve(str(path))
    info = fs.get_file_info(p)
    return info.size if info.type == pafs.FileType.File else None


def exists(path: str | Path) -> bool:
    if not is_remote(path):
        return Path(path).exists()
    import pyarrow.fs as pafs

    fs, p = _resolve(str(path))
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def delete(path: str | Path) -> None:
    """Remove a file or a folder; nothing if it is not there."""
    if not is_remote(path):
        p = Path(path)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        return
    import pyarrow.fs as pafs

    fs, p = _resolve(str(path))
    kind = fs.get_file_info(p).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(p)
    elif kind == pafs.FileType.File:
        fs.delete_file(p)


def upload_dir(local: Path, uri: str, last: str | None = None) -> None:
    """Copy a local folder's files to `uri`; the file named `last` goes after all others."""
    fs, root = _resolve(uri)
    fs.create_dir(root, recursive=True)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == last)  # stable: `last` moves to the end
    for f in files:
        rel = f.relative_to(local).as_posix()
        if "/" in rel:
            fs.create_dir(f"{root}/{rel.rsplit('/', 1)[0]}", recursive=True)
        with fs.open_output_stream(f"{root}/{rel}") as out, f.open("rb") as src:
            shutil.copyfileobj(src, out, length=8 << 20)


def download_dir(uri: str, local: Path) -> Path:
    """Copy a remote folder into `local` (via a temp folder renamed at the end); returns `local`."""
    import pyarrow.fs as pafs

    fs, root = _resolve(uri)
    with atomic_dir(local, private=True) as tmp:
        for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
            if info.type != pafs.FileType.File:
                continue
            dest = tmp / info.path[len(root) :].lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, length=8 << 20)
    return local


class Uploader:
    """One background thread that uploads in submission order, so training never waits on the
    network; `wait()` blocks until everything submitted is stored and re-raises the first error."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raysweep-upload")
        self._pending: list[Future] = []

    def submit(self, fn, *args) -> Future:
        fut = self._pool.submit(fn, *args)
        self._pending.append(fut)
        return fut

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        for fut in pending:
            fut.result()


def upload_files(local: Path, uri: str, names: list[str]) -> None:
    """Copy some files of a local folder to `uri` (in the given order). A file gone by the time its
    upload runs is skipped: progress files are removed once their node is finished, and a queued
    progress upload of that node no longer matters."""
    fs, root = _resolve(uri)
    fs.create_dir(root, recursive=True)
    for name in names:
        try:
            src = (local / name).open("rb")
        except FileNotFoundError:
            continue
        with src, fs.open_output_stream(f"{root}/{name}") as out:
            shutil.copyfileobj(src, out, length=8 << 20)


def download_file(uri: str, dest: Path) -> bool:
    """Copy one remote file to `dest` (temp file, then renamed); False if it does not exist."""
    import pyarrow.fs as pafs

    fs, p = _resolve(uri)
    if fs.get_file_info(p).type != pafs.FileType.File:
        return False
    with atomic_file(dest, private=True) as tmp, fs.open_input_stream(p) as src, tmp.open("wb") as out:
        shutil.copyfileobj(src, out, length=8 << 20)
    return True
