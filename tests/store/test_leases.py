"""One trainer per node (raysweep/store/leases.py), on a local folder and on a real S3 API: a free lease
is taken, a live one waited for, an expired one (or one whose owner's process is gone) taken over,
a released one gone. Two whole studies sharing one node store: tests/scenarios/test_reuse.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from raysweep.store import leases, storage


@pytest.fixture(params=["local", "s3"])
def node_dir(request, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_LEASE_TTL_S", "2")
    monkeypatch.setattr(leases, "SETTLE_S", 0.2)
    if request.param == "local":
        return str(tmp_path / "posttrain" / "k1")
    from tests.helpers import s3_uri

    port, _ = request.getfixturevalue("s3_server")
    root = s3_uri(port, "leases", tmp_path.name)
    # the bucket made now (pyarrow makes it on a first write; boto3's conditional write does not, and
    # answered NoSuchBucket when this test happened to be the first on its worker to use it)
    storage.write_text(storage.join(root, "bucket-made"), "")
    return storage.join(root, "posttrain", "k1")


def test_a_free_lease_is_taken_and_released(node_dir):
    lease = leases.Lease(node_dir, "posttrain a")
    lease.acquire()
    held = leases.read(node_dir)
    assert held["owner"] == lease.owner and held["label"] == "posttrain a" and not leases.expired(held)
    lease.release()
    assert leases.read(node_dir) is None


def test_a_live_lease_is_waited_for_until_released(node_dir, monkeypatch):
    # a TTL no load can outlast: the first holder stays alive in the second's eyes whatever the machine's speed
    monkeypatch.setenv("RAYSWEEP_LEASE_TTL_S", "600")
    first = leases.Lease(node_dir, "first")
    first.acquire()
    told, took = [], []
    second = threading.Thread(target=lambda: took.append(leases.Lease(node_dir, "second").acquire(told.append, poll_s=0.1)))
    second.start()
    _until(lambda: told)  # the second has found the lease held and said it waits
    assert not took and [t["label"] for t in told] == ["first"]  # waiting, and said so once
    first.release()
    second.join(timeout=60)
    assert took and leases.read(node_dir)["label"] == "second"


def test_a_heartbeat_keeps_a_lease_past_its_ttl(node_dir):
    first = leases.Lease(node_dir, "first")
    first.acquire()
    taken = leases.read(node_dir)["heartbeat"]
    # the event: a heartbeat written later than the 2 s TTL after taking it (renewed every TTL/4)
    _until(lambda: leases.read(node_dir)["heartbeat"] > taken + 2)
    held = leases.read(node_dir)
    assert held["owner"] == first.owner and not first.lost
    first.release()


def _until(condition, deadline_s: float = 120) -> None:
    """Wait for an event (a bound against a hang, not a verdict)."""
    deadline = time.time() + deadline_s
    while not condition():
        assert time.time() < deadline, "the event never came"
        time.sleep(0.02)


def test_an_abandoned_lease_is_taken_over(node_dir):
    stale = {"owner": "another-host:1:x", "label": "killed", "heartbeat": time.time() - 60}
    storage.write_text(leases.lease_path(node_dir), json.dumps(stale))
    lease, told = leases.Lease(node_dir, "taker"), []
    lease.acquire(told.append, poll_s=0.1)
    assert not told  # taken over at once, never waited for: no heartbeat for longer than the TTL
    assert leases.read(node_dir)["owner"] == lease.owner
    lease.release()


def test_a_lease_whose_owner_process_is_gone_is_taken_over_at_once(node_dir):
    """A study killed and run again at once does not wait out the TTL for its own dead workers."""
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fresh = {"owner": f"{socket.gethostname()}:{dead.pid}:x", "label": "killed", "heartbeat": time.time()}
    storage.write_text(leases.lease_path(node_dir), json.dumps(fresh))
    assert leases.expired(fresh)
    assert not leases.expired({**fresh, "owner": f"{socket.gethostname()}:{__import__('os').getpid()}:x"})  # alive
    lease, told = leases.Lease(node_dir, "taker"), []
    lease.acquire(told.append, poll_s=0.1)
    assert not told  # never waited for
    lease.release()


def test_a_tree_runs_leases_are_cleared_once_its_workers_are_gone(node_dir):
    """Workers stopped with Ray (Ctrl-C, SIGTERM) or killed never release their leases; the study
    clears those its own run took, and no other's."""
    mine = leases.Lease(node_dir, "mine", tag="run-a")
    mine.acquire()
    mine._stop.set()  # its worker is gone: no release, no more heartbeats
    other_dir = node_dir.replace("/k1", "/k2")  # a local path or an S3 URI with its query
    other = leases.Lease(other_dir, "another study's", tag="run-b")
    other.acquire()
    assert leases.clear_tagged([node_dir, other_dir], "run-a") == 1
    assert leases.read(node_dir) is None and leases.read(other_dir)["owner"] == other.owner
    other.release()


def test_on_s3_a_free_lease_is_taken_by_a_conditional_write(node_dir, monkeypatch):
    """S3 creates an object only if none is there (If-None-Match: *): one of two takers wins, with
    no write-settle-read, and the loser sees the winner's lease."""
    if not node_dir.startswith("s3://"):
        pytest.skip("a folder takes leases with O_EXCL")
    path = leases.lease_path(node_dir)
    assert storage.create_exclusive(path, "first") is True
    assert storage.create_exclusive(path, "second") is False
    assert storage.read_text(path) == "first"
    storage.delete(path)
    monkeypatch.setattr(leases.Lease, "_settled", lambda self: pytest.fail("a conditional write needs no settling"))
    lease = leases.Lease(node_dir, "taker")
    lease.acquire()
    assert leases.read(node_dir)["owner"] == lease.owner
    lease.release()
