"""A fake autoscaling Ray cluster on this machine, for bench/cluster_sim.py and its test.

Ray's own fake multi-node provider (`provider: fake_multinode`, what `ray.cluster_utils.
AutoscalingCluster` starts; that class itself cannot be used: it runs `ray stop --force`, which
stops every Ray on the machine, and reads an example file Ray's wheel does not ship). The head is a
`ray start --head --block` with an autoscaling config; the autoscaler starts each worker node as a
raylet on this machine that declares the node type's CPUs and GPUs, and stops it once idle. The
whole cluster lives in one process tree, so stopping it stops nothing else of Ray.

Ray's fake provider never notices a node whose processes died: the autoscaler keeps it as
"pending, uninitialized" forever and launches no replacement (a simulation of a lost node hung so).
`LossyFakeProvider` (loaded by the autoscaler in the head) forgets such a node, as a cloud forgets a
preempted instance, so the autoscaler replaces it when work is waiting.

Worker nodes take the address Ray picks for this machine (the fake provider passes no address);
nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
ROOT = Path(__file__).resolve().parents[1]
NODE_ID_ENV = "RAY_OVERRIDE_NODE_ID_FOR_TESTING"  # the fake provider names each node's processes with it
HEAD_IP = "127.0.0.2"  # Ray rewrites 127.0.0.1 to the machine's outward address once nodes join (tests/scenarios/test_cluster.py)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def autoscaling_config(node_type: dict, max_nodes: int, head_cpus: int, idle_timeout_s: float, gcs_address: str) -> dict:
    """The autoscaler's config: a CPU head, one GPU worker type scaling from 0 to `max_nodes`."""
    return {
        "cluster_name": "raysweep-sim",
        "max_workers": max_nodes,
        "provider": {
            "type": "external",
            "module": "bench.fake_cluster.LossyFakeProvider",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0},
            "gpu": {
                "resources": {**node_type, "object_store_memory": 80 * 2**20},
                "node_config": {},
                "min_workers": 0,
                "max_workers": max_nodes,
            },
        },
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60,
        **{k: [] for k in ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands")},
        **{
            k: [] for k in ("head_start_ray_commands", "worker_start_ray_commands", "cluster_synced_files", "rsync_exclude", "rsync_filter")
        },
        "auth": {},
        "docker": {},
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
    }


def client_env() -> dict:
    """A client's environment: a multi-node Ray wants its token (made by the head in ~/.ray)."""
    return {**os.environ, "RAY_AUTH_MODE": "token"}


class FakeCluster:
    """`with FakeCluster(...) as c:` a running head; c.address for RAY_ADDRESS."""

    def __init__(self, node_type: dict, max_nodes: int, head_cpus: int = 8, idle_timeout_s: float = 6.0):
        self.node_type, self.max_nodes, self.head_cpus, self.idle_timeout_s = node_type, max_nodes, head_cpus, idle_timeout_s
        self.root = Path(tempfile.mkdtemp(prefix="rsc-"))  # short: Ray's socket paths must stay under 108 bytes
        self.address = f"{HEAD_IP}:{free_port()}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> FakeCluster:
        config = self.root / "autoscaler.json"
        config.write_text(json.dumps(autoscaling_config(self.node_type, self.max_nodes, self.head_cpus, self.idle_timeout_s, self.address)))
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update({"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_USAGE_STATS_ENABLED": "0"})
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])  # the autoscaler imports LossyFakeProvider
        ports = {n: free_port() for n in ("agent", "agent_grpc", "env_agent", "metrics", "node_mgr", "obj_mgr", "client")}
        self.proc = subprocess.Popen(
            [
                RAY,
                "start",
                "--head",
                "--block",
                f"--autoscaling-config={config}",
                f"--node-ip-address={HEAD_IP}",
                f"--port={self.address.rsplit(':', 1)[1]}",
                f"--num-cpus={self.head_cpus}",
                "--num-gpus=0",
                "--include-dashboard=false",
                f"--dashboard-agent-listen-port={ports['agent']}",
                f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
                f"--runtime-env-agent-port={ports['env_agent']}",
                f"--metrics-export-port={ports['metrics']}",
                f"--node-manager-port={ports['node_mgr']}",
                f"--object-manager-port={ports['obj_mgr']}",
                f"--ray-client-server-port={ports['client']}",
                f"--temp-dir={self.root / 'ray'}",
                "--disable-usage-stats",
                # a lost node is noticed within ~2 s, not Ray's ~15 s: in simulated time a cloud's
                # seconds of detection shrink with the time scale too
                "--system-config="
                + json.dumps({"health_check_period_ms": 500, "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}),
            ],
            env=env,
            stdout=(self.root / "head.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_up()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_up(self, timeout_s: float = 60.0) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the fake cluster's head exited: {(self.root / 'head.log').read_text()[-2000:]}")
            ok = subprocess.run([RAY, "status", f"--address={self.address}"], capture_output=True, text=True, timeout=30, env=client_env())
            if ok.returncode == 0:
                return
            time.sleep(1.0)
        raise RuntimeError(f"the fake cluster's head did not come up in {timeout_s:.0f} s: see {self.root / 'head.log'}")

    def __exit__(self, *exc) -> None:
        self.stop()

    def processes(self):
        """Every process of the cluster: the head's tree (its fake worker nodes are the autoscaler's children)."""
        import psutil

        try:
            head = psutil.Process(self.proc.pid)
            return [head, *head.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        import psutil

        procs = self.processes()
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)
        # Ray's workers can outlive their raylet's death by a moment; anything still naming this cluster goes
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(str(self.root) in part for part in p.info["cmdline"] or []):
                    p.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass

    def kill_node(self, node_id: str) -> int:
        """SIGKILL every process of one fake worker node (a machine lost); returns how many."""
        import psutil

        victims = []
        for p in self.processes():
            try:
                if p.environ().get(NODE_ID_ENV) == node_id:
                    victims.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        for p in victims:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        return len(victims)


def _provider_base():
    from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

    return FakeMultiNodeProvider


def _raylet_dead(node) -> bool:
    from ray._private import ray_constants

    infos = getattr(node, "all_processes", {}).get(ray_constants.PROCESS_TYPE_RAYLET, [])
    return bool(infos) and all(i.process.poll() is not None for i in infos)


def __getattr__(name: str):
    if name != "LossyFakeProvider":
        raise AttributeError(name)

    class LossyFakeProvider(_provider_base()):
        """Ray's fake multi-node provider, but a node whose raylet died is gone (see the module docstring)."""

        def non_terminated_nodes(self, tag_filters):
            with self.lock:
                for node_id, entry in list(self._nodes.items()):
                    node = entry.get("node")
                    if node is not None and _raylet_dead(node):
                        self._nodes.pop(node_id)
                        node.kill_all_processes(check_alive=False, allow_graceful=False)
            return super().non_terminated_nodes(tag_filters)

    globals()["LossyFakeProvider"] = LossyFakeProvider
    return LossyFakeProvider
