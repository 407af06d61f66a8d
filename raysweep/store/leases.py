"""One trainer per node: a lease beside the node (`<node>.lease`, a local file or an object) that
names its owner and is renewed by a heartbeat, so two studies sharing a node store never train the
same item at once. The second waits until the lease is released (then finds the nodes finished and
skips them) or until it expires (its owner was killed: the waiter takes it over and resumes from
the owner's last progress checkpoint).

    with hold(node_dir, label, on_wait=print): ...   # train the item

Taking a free lease is atomic on a local or shared filesystem (O_EXCL) and on S3 (a conditional
write, `If-None-Match: *`, through boto3: pyarrow has none). Elsewhere (GCS through pyarrow, an S3
store without conditional writes), and when taking over an expired lease, the taker writes, waits
`SETTLE_S` and reads back: the last writer wins and the others wait. Two takers that write within
the same instant there can both go on; they train the same bit-identical nodes, which the store
tolerates (the later rename wins), so the lease saves work and never guards correctness.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from raysweep.store import storage

SETTLE_S = 1.0


def ttl_s() -> float:
    """Seconds without a heartbeat after which a lease is taken as abandoned (clocks of the
    machines sharing a store must agree to well within it)."""
    return float(os.environ.get("RAYSWEEP_LEASE_TTL_S", "120"))


def lease_path(node_dir: str | Path) -> str:
    return storage.with_suffix(node_dir, ".lease")


def read(node_dir: str | Path) -> dict | None:
    """The lease on a node (owner, label, heartbeat), or None; an unreadable one counts as expired."""
    try:
        text = storage.read_text(lease_path(node_dir))
    except OSError:
        return None
    if text is None:
        return None
    try:
        lease = json.loads(text)
        return lease if isinstance(lease, dict) and "owner" in lease and "heartbeat" in lease else {"owner": "?", "heartbeat": 0}
    except ValueError:
        return {"owner": "?", "heartbeat": 0}


def expired(lease: dict, now: float | None = None) -> bool:
    """No heartbeat for ttl_s(), or an owner on this machine whose process is gone (a killed study
    run again at once takes its own leases back without waiting out the TTL)."""
    if (now if now is not None else time.time()) - float(lease.get("heartbeat", 0)) > ttl_s():
        return True
    host, _, rest = str(lease.get("owner", "")).partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _write(node_dir: str | Path, lease: dict, exclusive: bool) -> bool:
    """Write the lease; `exclusive` (local only): only if there is none. False if one was there."""
    path, text = lease_path(node_dir), json.dumps(lease)
    if storage.is_remote(path):
        storage.write_text(path, text)
        return True
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if exclusive:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True
    with storage.atomic_file(path, private=True) as tmp:  # replaced whole: a reader never sees half
        tmp.write_text(text)
    return True


def _create(node_dir: str | Path, lease: dict) -> bool | None:
    """Create the lease only if there is none: True (taken), False (another was there), None (an
    object store that cannot create exclusively: write, settle, read back)."""
    if storage.is_remote(node_dir):
        return storage.create_exclusive(lease_path(node_dir), json.dumps(lease))
    return _write(node_dir, lease, exclusive=True)


class Lease:
    def __init__(self, node_dir: str | Path, label: str, tag: str = ""):
        """`tag`: the study run that takes it (its workers' leases are cleared by `clear_tagged` once
        the run ends, however its workers ended)."""
        self.node_dir, self.label = node_dir, label
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}" + (f":{tag}" if tag else "")
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.lost = False  # another trainer took it over (this one was taken for dead)

    def _record(self) -> dict:
        return {"owner": self.owner, "label": self.label, "heartbeat": time.time()}

    def _mine(self) -> bool:
        held = read(self.node_dir)
        return held is not None and held.get("owner") == self.owner

    def acquire(self, on_wait: Callable[[dict], None] | None = None, poll_s: float | None = None) -> float:
        """Take the lease, waiting while another live trainer holds it; returns the seconds waited."""
        poll_s = poll_s if poll_s is not None else min(5.0, ttl_s() / 4)
        t0, told = time.time(), False
        while True:
            held = read(self.node_dir)
            created = _create(self.node_dir, self._record()) if held is None else False
            if created is True:  # made exclusively: on a filesystem (O_EXCL) or by S3's conditional write
                break
            elif created is None and _write(self.node_dir, self._record(), exclusive=False) and self._settled():
                break  # a store without create-if-absent: the last writer wins, the others wait
            elif held is not None and (expired(held) or held.get("owner") == self.owner):
                _write(self.node_dir, self._record(), exclusive=False)  # a takeover: the last writer wins
                if self._settled():
                    break
            elif held is not None and not told and on_wait is not None:
                on_wait(held)
                told = True
            time.sleep(poll_s)
        self._beat = threading.Thread(target=self._heartbeat, name=f"lease {self.label}", daemon=True)
        self._beat.start()
        return time.time() - t0

    def _settled(self) -> bool:
        time.sleep(SETTLE_S)
        return self._mine()

    def _heartbeat(self) -> None:
        while not self._stop.wait(ttl_s() / 4):
            try:
                if not self._mine():
                    self.lost = True
                    return
                _write(self.node_dir, self._record(), exclusive=False)
            except OSError:  # a store that is briefly unreachable: try again at the next beat
                continue

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=30)
        with contextlib.suppress(OSError):
            if self._mine():
                storage.delete(lease_path(self.node_dir))


def clear_tagged(node_dirs, tag: str) -> int:
    """Delete the leases on `node_dirs` that workers of the study run `tag` took: called once that
    run's workers are gone (the tree ended, failed or was stopped), so none is left behind for the
    next run to wait on or take over. Returns how many were deleted."""
    cleared = 0
    for node_dir in node_dirs:
        held = read(node_dir)
        if held is not None and str(held.get("owner", "")).endswith(f":{tag}"):
            with contextlib.suppress(OSError):
                storage.delete(lease_path(node_dir))
                cleared += 1
    return cleared
