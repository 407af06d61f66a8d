"""One trainer per node (raysweep/leases.py), on a local folder and on a real S3 API: a free lease
is taken, a live one waited for, an expired one (or one whose owner's process is gone) taken over,
a released one gone. Two whole studies sharing one node store: tests/scenarios/test_reuse.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from raysweep import leases, storage


@pytest.fixture(params=["local", "s3"])
def node_dir(request, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_LEASE_TTL_S", "2")
    monkeypatch.setattr(leases, "SETTLE_S", 0.2)
    if request.param == "local":
        return str(tmp_path / "posttrain" / "k1")
    from tests.helpers import s3_uri

    port, _ = request.getfixturevalue("s3_server")
    return storage.join(s3_uri(port, "leases", tmp_path.name), "posttrain", "k1")


def test_a_free_lease_is_taken_and_released(node_dir):
    with leases.hold(node_dir, "posttrain a") as lease:
        held = leases.read(node_dir)
        assert held["owner"] == lease.owner and held["label"] == "posttrain a" and not leases.expired(held)
    assert leases.read(node_dir) is None


def test_a_live_lease_is_waited_for_until_released(node_dir):
    first = leases.Lease(node_dir, "first")
    first.acquire()
    told, took = [], []
    second = threading.Thread(target=lambda: took.append(leases.Lease(node_dir, "second").acquire(told.append, poll_s=0.1)))
    second.start()
    time.sleep(1.5)
    assert not took and [t["label"] for t in told] == ["first"]  # waiting, and said so once
    first.release()
    second.join(timeout=30)
    assert took and took[0] >= 1.5 and leases.read(node_dir)["label"] == "second"


def test_a_heartbeat_keeps_a_lease_past_its_ttl(node_dir):
    first = leases.Lease(node_dir, "first")
    first.acquire()
    time.sleep(3)  # longer than the 2 s TTL: the heartbeat (every TTL/4) renews it
    held = leases.read(node_dir)
    assert held["owner"] == first.owner and not leases.expired(held)
    first.release()


def test_an_abandoned_lease_is_taken_over(node_dir):
    stale = {"owner": "another-host:1:x", "label": "killed", "heartbeat": time.time() - 60}
    storage.write_text(leases.lease_path(node_dir), json.dumps(stale))
    lease = leases.Lease(node_dir, "taker")
    assert lease.acquire(poll_s=0.1) < 2  # at once: no heartbeat for longer than the TTL
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
    lease = leases.Lease(node_dir, "taker")
    assert lease.acquire(poll_s=0.1) < 2
    lease.release()
