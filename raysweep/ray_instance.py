"""The Ray instance a study runs on: the cluster named by RAY_ADDRESS, or a private local one that
listens on 127.0.0.1 only, is retried once if it fails to start, and dies with its driver.

    init_ray: connect (RAY_ADDRESS) or start the local instance -> the reaper watches it
    stop_own_ray: shut down the local instance this process started (after Ctrl-C), nothing else
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time

from raysweep.signals import keeping_handlers, stop_file_env

# Train V2 polls worker health every 2 s by default, which adds ~5 s to the end of every fit.
_RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}

_OWN_RAY: list[bool] = []  # set when this process started or joined Ray itself (so may shut it down)
_SESSIONS: list[str] = []  # the session folders (logs, sockets) of the local instances this process started

# Ray binds its servers (GCS, raylet, object manager, workers, agents, metrics) to the node's address,
# and takes the machine's outward address as the node's on Linux, even when told 127.0.0.1
# (services.resolve_ip_for_localhost). Its macOS behaviour, switched on by this variable, uses the
# loopback address instead, so a private local instance listens on 127.0.0.1 only
# (tests/test_safety.py lists the sockets).
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

# Ray ties its head processes (GCS, raylet, dashboard) to the driver with the kernel's parent-death
# signal, but the processes *they* start (the dashboard and runtime-env agents, idle workers) only
# notice their parent's death by polling, and were seen alive 20 s after a driver SIGKILL (an OOM
# kill). This watcher, in its own session so a terminal's Ctrl-C does not reach it, lists the
# driver's process tree every second; when its stdin (a pipe from the driver) closes, however the
# driver ended, it stops every process of the last listing still running (the same pid *and* start
# time, so a reused pid is never touched): SIGTERM, then SIGKILL after 3 s.
_REAPER = """
import os, select, signal, sys
import psutil

signal.signal(signal.SIGINT, signal.SIG_IGN)
driver, me, seen = psutil.Process(int(sys.argv[1])), os.getpid(), {}
while not (select.select([sys.stdin], [], [], 1.0)[0] and not os.read(sys.stdin.fileno(), 1)):
    try:
        seen.update({p.pid: p.create_time() for p in driver.children(recursive=True) if p.pid != me})
    except psutil.NoSuchProcess:
        break
    except psutil.Error:
        pass
left = []
for pid, started in seen.items():
    try:
        p = psutil.Process(pid)
        if p.create_time() == started:
            p.terminate()
            left.append(p)
    except psutil.Error:
        pass
for p in psutil.wait_procs(left, timeout=3)[1]:
    try:
        p.kill()
    except psutil.Error:
        pass
"""

_REAPERS: list[subprocess.Popen] = []


class RayStartError(RuntimeError):
    """The local Ray instance did not start, twice: said in one line, with what to check."""


def loopback_only() -> None:
    """Make the next local Ray instance of this process (and its workers) bind 127.0.0.1 only."""
    os.environ.update(LOOPBACK_ENV)
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # read once at Ray's import, which may have happened already


def start_reaper() -> subprocess.Popen:
    """Start the watcher that stops this process's tree when this process ends (see _REAPER)."""
    reaper = subprocess.Popen(
        [sys.executable, "-c", _REAPER, str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _REAPERS.append(reaper)  # its pipe stays open as long as this process lives
    return reaper


def init_ray(retry_after_s: float = 2.0) -> None:
    """Connect to RAY_ADDRESS's cluster or start the private local instance. The caller's signal
    handlers survive it."""
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) already connected
        return
    keeping_handlers(lambda: _init_ray(ray, retry_after_s))
    route_worker_noise()


# A Ray worker stopped by SIGTERM while Python runs a finalizer or another thread's code cannot raise
# Ray's SystemExit there, so Python prints "Exception ignored in: <function ...sigterm_handler ...>",
# a traceback and "SystemExit: 1" to the worker's stderr, which Ray echoes on the driver's terminal
# (seen in 2 of 37 smoke trees, at their end). It means nothing to the study: it goes to the
# libraries' log with the other libraries' messages.
_NOISE_START = re.compile(r"Exception ignored in: <function [\w.<>]*sigterm_handler")
_NOISE_MAX_LINES = 40  # a block longer than any such traceback is not one: the rest is shown


class WorkerNoiseFilter:
    """Wraps Ray's printer of worker lines (a handler of its stdstream dispatcher): the lines of a
    SIGTERM-handler traceback go to the "ray" logger (so libraries.log), everything else is printed
    as Ray would. A block split over two batches of one worker's stream is followed across them."""

    def __init__(self, emit):
        self.emit, self.open = emit, {}  # (pid, stderr?) -> lines of a block not yet ended

    def __call__(self, data: dict) -> None:
        stream, kept = (data.get("pid"), data.get("is_err")), []
        for line in data.get("lines") or []:
            block = self.open.get(stream)
            if block is None and _NOISE_START.match(line):
                self.open[stream] = block = []
            if block is None:
                kept.append(line)
                continue
            block.append(line)
            if line.startswith("SystemExit") or len(block) >= _NOISE_MAX_LINES:
                del self.open[stream]
                if line.startswith("SystemExit"):
                    logging.getLogger("ray").warning("a worker (pid %s) stopping on SIGTERM printed:\n%s", stream[0], "\n".join(block))
                else:
                    kept.extend(block)
        if kept or not data.get("lines"):
            self.emit({**data, "lines": kept})


def route_worker_noise(dispatcher=None) -> bool:
    """Put WorkerNoiseFilter in front of Ray's printer of worker lines; False where Ray prints
    none (log_to_driver off) or its printer is not found (another Ray version)."""
    if dispatcher is None:
        try:
            from ray._private.worker import global_worker_stdstream_dispatcher as dispatcher
        except ImportError:
            return False
    found = [(name, h) for name, h in getattr(dispatcher, "handlers", []) if name == "ray_print_logs"]
    if not found or isinstance(found[0][1], WorkerNoiseFilter):
        return bool(found)
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", WorkerNoiseFilter(found[0][1]))
    return True


def _init_ray(ray, retry_after_s: float) -> None:
    from raysweep.tracking.store import http_env

    env = {**_RAY_ENV, **http_env(), **stop_file_env(), "PYTHONUNBUFFERED": "1"}
    os.environ.update(env)
    address = os.environ.get("RAY_ADDRESS")
    if address:
        _join_cluster(ray, address, env, retry_after_s)
        return
    # Always a private local instance (never silently joining a `ray start` cluster that happens to
    # run here; set RAY_ADDRESS for that), dashboard off, loopback only. Under heavy load its raylet
    # has failed to start (a `Check failed` abort): one more try, then one line saying what to check.
    limited = address_space_problem()
    if limited:
        raise RayStartError(limited)
    loopback_only()
    env.update(LOOPBACK_ENV)
    for attempt in (1, 2):
        try:
            ray.init(
                address="local", include_dashboard=False, runtime_env={"env_vars": env}, configure_logging=True, logging_level="WARNING"
            )
            _OWN_RAY.append(True)
            _SESSIONS.append(_session_dir())
            if sys.platform != "win32":  # select() on a pipe is POSIX
                start_reaper()
            return
        except Exception as e:  # noqa: BLE001 - whatever Ray raises, the user needs the same advice
            ray.shutdown()  # whatever half started goes, so the retry starts clean
            if attempt == 2:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                raise RayStartError(
                    f"the local Ray instance failed to start twice ({type(e).__name__}: {first}); check free memory, "
                    "a memory or process limit (ulimit -a), the size of /dev/shm and space in /tmp (Ray's object store and logs), "
                    "ports in use or blocked on 127.0.0.1, leftover Ray processes of an earlier run (`ray stop`), "
                    "and the raylet's log under /tmp/ray/session_latest/logs/"
                ) from None
            time.sleep(retry_after_s)


def _session_dir() -> str:
    from ray._private import worker

    return worker._global_node.get_session_dir_path()


def session_dir() -> str | None:
    """Where the local Ray instance this process started keeps its logs (under /tmp/ray, Ray's
    default: a study's own folder can be too long a path for the sockets beside them), or None."""
    return _SESSIONS[-1] if _SESSIONS else None


def address_space_problem(minimum_gib: float = 64.0) -> str | None:
    """Why a local Ray instance cannot start under this process's address-space limit (`ulimit -v`),
    or None. Ray's processes map far more virtual memory than they use (the object store is mapped
    whole; a worker that imports torch maps ≈ 10 GiB), and under a limit of 8 GB `ray.init` hung
    in a C++ abort for minutes instead of failing."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft >= minimum_gib * 2**30:
        return None
    return (
        f"the address-space limit (ulimit -v) is {soft / 2**30:.1f} GiB, too small for a local Ray instance: its processes "
        f"map far more virtual memory than they use (the object store whole, ≈ 10 GiB a worker with torch); run the study "
        f"with `ulimit -v unlimited` (or at least {minimum_gib:.0f} GiB), and limit real memory with a cgroup instead"
    )


def stop_own_ray() -> None:
    """Shut down the Ray this process started or joined, so nothing trains or logs behind a summary;
    a caller's own Ray (a test, a notebook) is left alone."""
    if _OWN_RAY:
        import ray

        ray.shutdown()


def _join_cluster(ray, address: str, env: dict[str, str], retry_after_s: float) -> None:
    """Connect to the cluster at `address`. A head busy enough that its GCS answers late (seen on a
    loaded 2-core machine: "Timed out while waiting for GCS to become available") gets a second
    try; then one line saying what to check, not Ray's stack."""
    for attempt in (1, 2):
        try:
            ray.init(address=address, runtime_env={"env_vars": env})
            _OWN_RAY.append(True)
            return
        except ConnectionError as e:
            ray.shutdown()
            if attempt == 2:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                raise RayStartError(
                    f"could not join the Ray cluster at RAY_ADDRESS={address} twice ({first}); check that its head runs "
                    "(`ray status` there), the address and port, and that this machine can reach it"
                ) from None
            time.sleep(retry_after_s)
