"""Every file in clusters/ is checked: the autoscaler configs against Ray's own schema (shipped in
the ray package), the KubeRay manifests by their required fields, and none holds a credential."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTERS = ROOT / "clusters"
AUTOSCALER = sorted(CLUSTERS.glob("*.yaml"))
KUBERAY = sorted((CLUSTERS / "kuberay").glob("*.yaml"))


def test_there_are_configs_for_aws_gcp_and_kuberay():
    assert {p.name for p in AUTOSCALER} == {"aws.yaml", "gcp.yaml"}
    assert {p.name for p in KUBERAY} == {"raycluster.yaml", "rayjob.yaml"}


@pytest.mark.parametrize("path", AUTOSCALER, ids=lambda p: p.name)
def test_autoscaler_config_matches_rays_schema(path):
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cfg = yaml.safe_load(path.read_text())
    jsonschema.validate(cfg, schema)
    # and the checks `ray up` itself runs: provider defaults merged in, then validated
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(yaml.safe_load(path.read_text())))
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types and types[cfg["head_node_type"]]["resources"].get("CPU") == 0  # no training on the head
    gpu_types = {k: t for k, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert gpu_types, "a GPU worker type"
    for t in gpu_types.values():
        assert 0 <= t["min_workers"] <= t["max_workers"]
    assert sum(t["max_workers"] for t in types.values()) <= cfg["max_workers"]
    setup = " ".join(cfg["setup_commands"])
    assert "download.pytorch.org/whl/cu" in setup and "-e /home/ubuntu/raysweep" in setup  # CUDA torch, then the project
    assert any("--dashboard-host=127.0.0.1" in c for c in cfg["head_start_ray_commands"])  # dashboard not on the internet


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def _check_cluster_spec(spec: dict) -> None:
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"].get("num-cpus") == "0"
    groups = spec["workerGroupSpecs"]
    assert groups
    for g in groups:
        assert g["groupName"] and 0 <= g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"]
        for c in _containers(g["template"]):
            assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    for template in [head["template"], *(g["template"] for g in groups)]:
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        for c in _containers(template):
            assert c["image"].startswith("rayproject/ray:") and spec["rayVersion"] in c["image"]
            assert any(m["mountPath"] == "/shared" and m["name"] in volumes for m in c["volumeMounts"])


def test_kuberay_raycluster():
    doc = yaml.safe_load((CLUSTERS / "kuberay" / "raycluster.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster" and doc["metadata"]["name"]
    _check_cluster_spec(doc["spec"])


def test_kuberay_rayjob_runs_a_valid_study():
    from raysweep.config import load_study

    doc = yaml.safe_load((CLUSTERS / "kuberay" / "rayjob.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob" and doc["spec"]["shutdownAfterJobFinishes"] is True
    _check_cluster_spec(doc["spec"]["rayClusterSpec"])
    runtime_env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"] and any(p.startswith("torch") for p in runtime_env["pip"])
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "raysweep.main"]
    config = argv[argv.index("--config") + 1]
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    study = load_study(ROOT / config, overrides)  # the job's study is valid before anything is deployed
    assert study.output_dir.startswith("/shared/")


@pytest.mark.parametrize("path", [*AUTOSCALER, *KUBERAY], ids=lambda p: p.name)
def test_no_credentials_in_cluster_files(path):
    text = path.read_text()
    for pattern in (
        r"AKIA[0-9A-Z]{16}",
        r"(?i)aws_secret_access_key",
        r"(?i)BEGIN [A-Z ]*PRIVATE KEY",
        r"(?i)password\s*:",
        r"(?i)private_key",
        r"(?i)token\s*:",
    ):
        assert not re.search(pattern, text), f"{path.name}: looks like a credential ({pattern})"
