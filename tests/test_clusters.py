"""The cluster configurations under clusters/: Ray's own schema, no Ray port open to the internet, ssl-ray
installed on every node, autoscaling limits, shared storage. Nothing here contacts a cloud."""
from __future__ import annotations

import copy
import ipaddress
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTERS = Path(__file__).resolve().parent.parent / "clusters"
LAUNCHER_FILES = ["aws-gpu.yaml", "gcp-gpu.yaml", "local.yaml"]
RAY_PORTS = (6379, 8265, 10001)
WORLD = ("0.0.0.0/0", "::/0")
INSTALL = re.compile(r"pip install (-e )?(\S+)")


def load(name: str) -> dict:
    with open(CLUSTERS / name, encoding="utf-8") as f:
        return yaml.safe_load(f)


def prepared(name: str) -> dict:
    """The config as `ray up` checks it: defaults filled in and setup commands merged (ray's
    commands._bootstrap_config), without the provider's bootstrap, which would contact the cloud."""
    return prepare_config(copy.deepcopy(load(name)))


def kuberay_docs() -> list[dict]:
    with open(CLUSTERS / "kuberay.yaml", encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def ray_cluster() -> dict:
    (rc,) = [d for d in kuberay_docs() if d.get("kind") == "RayCluster"]
    return rc


# ---------------------------------------------------------------------------------------------- schema
@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_yaml_validates_against_ray_schema(name):
    config = prepared(name)
    validate_config(config)  # raises on any schema violation
    assert config["provider"]["type"] == {"aws-gpu.yaml": "aws", "gcp-gpu.yaml": "gcp", "local.yaml": "local"}[name]


def _drop_worker_resources(c):
    worker = next(k for k in c["available_node_types"] if k != c["head_node_type"])
    del c["available_node_types"][worker]["resources"]


def _fractional_gpu(c):
    worker = next(k for k in c["available_node_types"] if k != c["head_node_type"])
    c["available_node_types"][worker]["resources"]["GPU"] = 0.5


def _unknown_key(c):
    c["max_worker"] = 3  # typo of max_workers


def _too_many_min_workers(c):
    c["available_node_types"]["gpu_spot"]["min_workers"] = c["max_workers"] + 1


@pytest.mark.parametrize("breakage, error", [
    (_drop_worker_resources, jsonschema.ValidationError),
    (_fractional_gpu, jsonschema.ValidationError),
    (_unknown_key, jsonschema.ValidationError),
    (_too_many_min_workers, ValueError),
])
@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-gpu.yaml"])
def test_broken_copy_fails_validation(name, breakage, error):
    config = prepared(name)
    breakage(config)
    with pytest.raises(error):
        validate_config(config)


def test_docker_images_match_installed_ray():
    """The cluster must run the Ray version of the machine that runs `ray up` / `ray job submit`."""
    for name in ["aws-gpu.yaml", "gcp-gpu.yaml"]:
        image = load(name)["docker"]["image"]
        assert image.startswith(f"rayproject/ray:{ray.__version__}-py311"), (name, image)
    rc = ray_cluster()
    assert rc["spec"]["rayVersion"] == ray.__version__
    for container in _containers(rc):
        assert container["image"].split(":")[1].startswith(ray.__version__ + "-"), container["image"]


# -------------------------------------------------------------------------------------------- security
def _rules_open_to_world(config: dict) -> list[dict]:
    """AWS security-group rules and GCP-style firewall rules anywhere in the config that admit any address."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            cidrs = [r.get("CidrIp") for r in node.get("IpRanges", [])] + \
                    [r.get("CidrIpv6") for r in node.get("Ipv6Ranges", [])] + list(node.get("sourceRanges", []))
            if any(c is not None and ipaddress.ip_network(c).prefixlen == 0 for c in cidrs):
                found.append(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(config)
    return found


def _opens_ray_port(rule: dict) -> bool:
    if str(rule.get("IpProtocol")) == "-1":  # AWS: all protocols, all ports
        return True
    if "FromPort" in rule:
        return any(rule["FromPort"] <= p <= rule["ToPort"] for p in RAY_PORTS)
    ports = [str(p) for a in rule.get("allowed", []) for p in a.get("ports", ["0-65535"])]  # GCP firewall
    lo_hi = [tuple(int(x) for x in (p.split("-") * 2)[:2]) for p in ports]
    return any(lo <= port <= hi for lo, hi in lo_hi for port in RAY_PORTS)


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_no_ray_port_open_to_the_internet(name):
    config = load(name)
    assert [r for r in _rules_open_to_world(config) if _opens_ray_port(r)] == []


def test_port_check_catches_open_rules():
    """The check above is not vacuous: it flags a dashboard rule, an all-traffic rule and a GCP rule."""
    aws = load("aws-gpu.yaml")
    aws["provider"]["security_group"]["IpPermissions"] = [
        {"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"FromPort": 8000, "ToPort": 9000, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"FromPort": 6379, "ToPort": 6379, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
        {"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
    ]
    flagged = [r for r in _rules_open_to_world(aws) if _opens_ray_port(r)]
    assert [r.get("FromPort") for r in flagged] == [8000, None]
    gcp_rule = {"sourceRanges": ["0.0.0.0/0"], "allowed": [{"IPProtocol": "tcp", "ports": ["10000-10002"]}]}
    assert _opens_ray_port(_rules_open_to_world({"firewall": gcp_rule})[0])
    ssh_only = {"sourceRanges": ["0.0.0.0/0"], "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}]}
    assert not _opens_ray_port(_rules_open_to_world({"firewall": ssh_only})[0])


def test_aws_security_group_adds_no_rule():
    """Ray's AWS bootstrap allows intra-group traffic and SSH; the shipped YAML adds nothing to that."""
    assert load("aws-gpu.yaml")["provider"]["security_group"]["IpPermissions"] == []


def test_kuberay_head_service_stays_inside_kubernetes():
    rc = ray_cluster()
    assert rc["spec"]["headGroupSpec"]["serviceType"] == "ClusterIP"
    assert all(d.get("kind") not in ("Service", "Ingress") for d in kuberay_docs())


# ------------------------------------------------------------------------------------------ installing
@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_every_node_installs_ssl_ray_from_the_synced_repository(name):
    config = prepared(name)
    (target, source), = config["file_mounts"].items()
    assert source == "."  # the repository root `ray up` runs from
    assert (CLUSTERS.parent / "setup.py").is_file()
    for key in ("head_setup_commands", "worker_setup_commands"):  # setup_commands are merged into both
        installs = [m.group(2) for cmd in config[key] for m in INSTALL.finditer(cmd)]
        assert target in installs, (key, config[key])
    assert ".gitignore" in config["rsync_filter"]


def _containers(rc: dict) -> list[dict]:
    groups = [rc["spec"]["headGroupSpec"]] + rc["spec"]["workerGroupSpecs"]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_kuberay_pods_install_ssl_ray_before_ray_start():
    rc = ray_cluster()
    assert rc["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    for c in _containers(rc):
        script = " ".join(c["args"])
        assert script.index('pip install "$SSL_RAY_PIP_SPEC"') < script.index("$KUBERAY_GEN_RAY_START_CMD")
        (spec,) = [e["value"] for e in c["env"] if e["name"] == "SSL_RAY_PIP_SPEC"]
        assert "ssl-ray @ git+" in spec


# ---------------------------------------------------------------------------------------- the manifest
def test_kuberay_manifest_has_head_workers_and_resources():
    rc = ray_cluster()
    assert rc["apiVersion"] == "ray.io/v1"
    head = rc["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    (head_container,) = head["template"]["spec"]["containers"]
    assert head_container["resources"]["limits"]["cpu"] and head_container["resources"]["limits"]["memory"]
    (gpu,) = rc["spec"]["workerGroupSpecs"]
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"] and gpu["maxReplicas"] > 0
    (worker,) = gpu["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert rc["spec"]["enableInTreeAutoscaling"] is True
    assert rc["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    (pvc,) = [d for d in kuberay_docs() if d["kind"] == "PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    claims = {v["persistentVolumeClaim"]["claimName"] for g in [head] + [gpu]
              for v in g["template"]["spec"]["volumes"]}
    assert claims == {pvc["metadata"]["name"]}


# ------------------------------------------------------------------------------- scaling and storage
@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-gpu.yaml"])
def test_cloud_autoscaling_limits_and_spot_switch(name):
    config = prepared(name)
    types = config["available_node_types"]
    assert 1 <= config["idle_timeout_minutes"] <= 60
    assert types[config["head_node_type"]]["max_workers"] == 0
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert set(workers) == {"gpu_spot", "gpu_ondemand"}
    for t in workers.values():
        assert t["min_workers"] == 0 and 0 < t["max_workers"] <= config["max_workers"]
        assert t["resources"]["GPU"] >= 1
    spot = workers["gpu_spot"]["node_config"]
    ondemand = workers["gpu_ondemand"]["node_config"]
    if name == "aws-gpu.yaml":
        assert spot["InstanceMarketOptions"]["MarketType"] == "spot" and "InstanceMarketOptions" not in ondemand
        assert all(w["node_config"]["IamInstanceProfile"] for w in workers.values())  # S3 access
    else:
        assert spot["scheduling"]["provisioningModel"] == "SPOT" and "provisioningModel" not in ondemand["scheduling"]
        for w in workers.values():
            (account,) = w["node_config"]["serviceAccounts"]  # Cloud Storage access
            assert "https://www.googleapis.com/auth/devstorage.read_write" in account["scopes"]


def test_local_cluster_mounts_nfs_and_keeps_its_workers():
    config = prepared("local.yaml")
    (node_type,) = config["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == len(config["provider"]["worker_ips"])
    assert any("mount -t nfs" in c and "/mnt/ssl-ray" in c for c in config["initialization_commands"])


def test_readme_walks_through_the_cluster_workflow():
    text = (CLUSTERS / "README.md").read_text(encoding="utf-8")
    for needle in ["ray up clusters/", "ray down clusters/", "ray dashboard clusters/", "ray attach", " -p ",
                   "ray job submit --address http://localhost:8265", "ray exec", "ssl-ray tensorboard",
                   "--address auto", "--storage s3://", "--storage gs://", "--gpus-per-trial", "--workers",
                   "--cpus-per-trial", *LAUNCHER_FILES, "kuberay.yaml"]:
        assert needle in text, needle
