"""The cluster configurations under clusters/: Ray's own schema, no Ray port open to the internet, ssl-ray
installed on every node, autoscaling limits, shared storage, the GPU driver against the torch build each file
installs, IAM. Nothing here contacts a cloud or starts a cluster: `bash clusters/smoke.sh` (root, several
minutes, not run by pytest or CI) brings clusters/smoke.yaml up with `ray up` on this machine, inside its own
namespaces, runs `ssl-ray tune i2gan` on it as a Ray job and takes it down (clusters/README.md, Checks)."""
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
              for v in g["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v}
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


# ---------------------------------------------------------------------------------- GPU driver vs torch
# Newest CUDA each NVIDIA driver branch runs: the minimum Linux x86_64 driver of each CUDA Toolkit GA release
# in NVIDIA's CUDA Toolkit release notes ("CUDA Toolkit and Corresponding Driver Versions"), e.g. CUDA 12.8
# needs >= 570.26, CUDA 13.0 needs >= 580.65.06. Deliberately stricter than CUDA's minor-version
# compatibility (12.x builds on any >= 525 driver, with caveats), which the cluster files do not rely on.
DRIVER_BRANCH_MAX_CUDA = {450: (11, 0), 520: (11, 8), 525: (12, 0), 530: (12, 1), 535: (12, 2), 545: (12, 3),
                          550: (12, 4), 555: (12, 5), 560: (12, 6), 570: (12, 8), 575: (12, 9), 580: (13, 0)}
# A plain `pip install torch` (or an install that pulls torch in, like ssl-ray's) gets the registry's default
# Linux build: torch 2.14 needs CUDA 13.0 (issue 17; this machine's torch says torch.version.cuda == "13.0").
REGISTRY_TORCH_CUDA = (13, 0)
TORCH_OR_SSL_RAY = re.compile(r"pip install (?:--\S+ )*(?:\"?torch\b|-e ~/ssl-ray|\"\$SSL_RAY_PIP_SPEC\"|/tmp/ssl_ray)")
TORCH_SPEC = re.compile(r"^\"?torch(==[\w.+]+)?\"?$")  # `torch` or `torch==2.14.1`
INDEX = re.compile(r"--index-url \"?(https://download\.pytorch\.org/whl/(cu(\d+)|cpu)|\$TORCH_INDEX)\"?")


def max_cuda(branch: int) -> tuple[int, int]:
    known = [b for b in DRIVER_BRANCH_MAX_CUDA if b <= branch]
    assert known, f"driver branch {branch} is older than any CUDA this table knows"
    return DRIVER_BRANCH_MAX_CUDA[max(known)]


def torch_cuda(commands: list[str], env: dict[str, str] | None = None) -> tuple[int, int] | None:
    """The CUDA version of the torch build these commands install (None: the CPU build). The first install
    of torch or of ssl-ray decides: an ssl-ray install without torch before it pulls the registry's torch."""
    steps = [step.strip() for cmd in commands for step in cmd.split("&&")]
    for step in steps:
        if TORCH_OR_SSL_RAY.search(step):
            if not any(TORCH_SPEC.match(tok) for tok in step.split("pip install", 1)[1].split()):
                return REGISTRY_TORCH_CUDA  # ssl-ray came first: its torch dependency comes from the registry
            m = INDEX.search(step)
            if m is None:
                return REGISTRY_TORCH_CUDA
            url = (env or {}).get("TORCH_INDEX", "") if m.group(1) == "$TORCH_INDEX" else m.group(1)
            cu = re.search(r"/whl/cu(\d+)$", url)
            if cu is None:
                assert url.endswith("/whl/cpu"), url
                return None
            return int(cu.group(1)[:-1]), int(cu.group(1)[-1])
    raise AssertionError(f"no torch or ssl-ray install in {commands}")


def launcher_driver_problems(config: dict) -> list[str]:
    """Every GPU node type: the torch its worker setup installs must run on its declared driver branch."""
    problems = []
    for name, t in config["available_node_types"].items():
        if not t["resources"].get("GPU"):
            continue
        branch = t.get("labels", {}).get("nvidia-driver-branch")
        if branch is None:
            problems.append(f"{name}: no nvidia-driver-branch label")
            continue
        image = t["node_config"].get("disks", [{}])[0].get("initializeParams", {}).get("sourceImage", "")
        family = re.search(r"-nvidia-(\d+)$", image)
        if family and family.group(1) != branch:  # GCP: the image family names its driver branch
            problems.append(f"{name}: label says R{branch}, image {image} ships R{family.group(1)}")
        cuda = torch_cuda(t.get("worker_setup_commands", config["worker_setup_commands"]))
        if cuda is not None and cuda > max_cuda(int(branch)):
            problems.append(f"{name}: torch for CUDA {cuda} needs a newer driver than R{branch} "
                            f"(runs CUDA <= {max_cuda(int(branch))})")
    return problems


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-gpu.yaml"])
def test_gpu_nodes_install_a_torch_their_driver_runs(name):
    config = prepared(name)
    assert launcher_driver_problems(config) == []
    assert torch_cuda(config["worker_setup_commands"]) == (12, 8)
    assert any("torch.cuda.is_available()" in c for c in config["worker_setup_commands"])  # loud at setup


def _drop_torch_line(c):
    for key in ("head_setup_commands", "worker_setup_commands", "setup_commands"):
        c[key] = [x for x in c.get(key, []) if "download.pytorch.org" not in x]


def _cuda13_index(c):
    c["worker_setup_commands"] = [x.replace("/whl/cu128", "/whl/cu130") for x in c["worker_setup_commands"]]


def _older_driver(c):
    for t in c["available_node_types"].values():
        if "labels" in t:
            t["labels"]["nvidia-driver-branch"] = "550"


def _image_family_disagrees(c):
    for t in c["available_node_types"].values():
        for d in t["node_config"].get("disks", []):
            d["initializeParams"]["sourceImage"] = d["initializeParams"]["sourceImage"].replace("nvidia-570", "nvidia-550")


@pytest.mark.parametrize("breakage", [_drop_torch_line, _cuda13_index, _older_driver, _image_family_disagrees])
@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-gpu.yaml"])
def test_driver_check_fails_on_a_mismatched_copy(name, breakage):
    config = prepared(name)
    if breakage is _image_family_disagrees and name == "aws-gpu.yaml":
        pytest.skip("AWS images are AMI ids: the label is the only record of the driver")
    breakage(config)
    assert launcher_driver_problems(config)


def test_driver_table_reads_install_lines():
    assert torch_cuda(["pip install -e ~/ssl-ray"]) == REGISTRY_TORCH_CUDA
    assert torch_cuda(["pip install torch torchvision --index-url https://download.pytorch.org/whl/cu124",
                       "pip install -e ~/ssl-ray"]) == (12, 4)
    assert torch_cuda(["pip install -e ~/ssl-ray", "pip install torch --index-url "
                       "https://download.pytorch.org/whl/cu124"]) == REGISTRY_TORCH_CUDA  # too late
    assert torch_cuda(['pip install torch --index-url "$TORCH_INDEX" && pip install "$SSL_RAY_PIP_SPEC"'],
                      {"TORCH_INDEX": "https://download.pytorch.org/whl/cpu"}) is None
    assert max_cuda(570) == (12, 8) and max_cuda(572) == (12, 8) and max_cuda(580) == (13, 0)
    assert max_cuda(535) < REGISTRY_TORCH_CUDA


def test_local_cluster_installs_the_cuda_12_8_torch_it_documents():
    config = prepared("local.yaml")
    assert torch_cuda(config["worker_setup_commands"]) == (12, 8)
    assert "GPU machines need NVIDIA driver >= 570" in (CLUSTERS / "local.yaml").read_text()
    assert max_cuda(570) >= (12, 8)


def _kuberay_gpu_driver_problems(workers: list[dict]) -> list[str]:
    problems = []
    for group in workers:
        branch = int(group["template"]["metadata"]["labels"]["nvidia-driver-branch"])
        for c in group["template"]["spec"]["containers"]:
            env = {e["name"]: e["value"] for e in c.get("env", [])}
            cuda = torch_cuda(c["args"], env) if "args" in c else _dockerfile_cuda()
            if cuda is not None and cuda > max_cuda(branch):
                problems.append(f"{group['groupName']}: CUDA {cuda} on R{branch}")
    return problems


def _dockerfile_cuda() -> tuple[int, int] | None:
    lines = [ln for ln in (CLUSTERS / "Dockerfile").read_text().splitlines() if ln.startswith("RUN ")]
    return torch_cuda([ln[4:].replace("--no-cache-dir ", "") for ln in lines])


def test_kuberay_gpu_pods_run_a_torch_their_driver_runs():
    rc = ray_cluster()
    assert _kuberay_gpu_driver_problems(rc["spec"]["workerGroupSpecs"]) == []
    (head,) = rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    assert torch_cuda(head["args"], {e["name"]: e["value"] for e in head["env"]}) is None  # CPU torch on the head
    (job,) = [d for d in yaml.safe_load_all((CLUSTERS / "kuberay-job.yaml").read_text()) if d and d["kind"] == "RayJob"]
    assert _kuberay_gpu_driver_problems(job["spec"]["rayClusterSpec"]["workerGroupSpecs"]) == []
    assert _dockerfile_cuda() == (12, 8)
    broken = copy.deepcopy(rc["spec"]["workerGroupSpecs"])
    broken[0]["template"]["spec"]["containers"][0]["env"][1]["value"] = "https://download.pytorch.org/whl/cu130"
    assert _kuberay_gpu_driver_problems(broken)


# --------------------------------------------------------------------------------- KubeRay: RayJob, image
def test_kuberay_rayjob_runs_one_experiment_and_shuts_down():
    docs = [d for d in yaml.safe_load_all((CLUSTERS / "kuberay-job.yaml").read_text()) if d]
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    (pvc,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    spec = job["spec"]
    assert job["apiVersion"] == "ray.io/v1" and spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec["entrypoint"].startswith("ssl-ray tune ") and "--address auto" in spec["entrypoint"]
    assert "--storage /mnt/ssl-ray/" in spec["entrypoint"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["headGroupSpec"]["serviceType"] == "ClusterIP"
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for p in (pvc, [d for d in kuberay_docs() if d["kind"] == "PersistentVolumeClaim"][0]):
        assert p["spec"]["accessModes"] == ["ReadWriteMany"] and p["spec"]["storageClassName"]  # never the default
    groups = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    assert {v["persistentVolumeClaim"]["claimName"] for g in groups for v in g["template"]["spec"]["volumes"]
            if "persistentVolumeClaim" in v} == {pvc["metadata"]["name"]}
    images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1 and images.pop().endswith("/ssl-ray:0.1.0")  # the baked image: no pip at start


def test_dockerfile_bakes_the_wheel_on_the_tested_ray():
    text = (CLUSTERS / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    assert base == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert "pip wheel --no-deps -w dist ." in text and re.search(r"pip install .*/tmp/ssl_ray-\*\.whl", text)


def test_ray_is_pinned_to_the_installed_minor_version():
    setup = (CLUSTERS.parent / "setup.py").read_text()
    (spec,) = re.findall(r'"ray\[[^\]]*\]([^"]*)"', setup)
    major, minor = (int(x) for x in ray.__version__.split(".")[:2])
    assert spec == f">={major}.{minor},<{major}.{minor + 1}", spec


# ------------------------------------------------------------------------------------------- AWS: IAM
def test_aws_profiles_let_the_head_pass_only_the_worker_role():
    import json

    config = load("aws-gpu.yaml")
    types = config["available_node_types"]
    assert types["head"]["node_config"]["IamInstanceProfile"] == {"Name": "ssl-ray-head"}
    assert {t["node_config"]["IamInstanceProfile"]["Name"] for k, t in types.items() if k != "head"} == {"ssl-ray-worker"}
    iam = CLUSTERS / "aws-iam"
    head = json.loads((iam / "head-policy.json").read_text())["Statement"]
    worker = json.loads((iam / "worker-policy.json").read_text())["Statement"]
    (pass_role,) = [s for s in head if "iam:PassRole" in s["Action"]]
    assert pass_role["Resource"] == "arn:aws:iam::ACCOUNT_ID:role/ssl-ray-worker"  # not "*"
    assert any("ec2:RunInstances" in s["Action"] for s in head)
    assert not [s for s in worker if any(a.startswith(("iam:", "ec2:")) for a in
                                         ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))]
    assert {s["Resource"] for s in worker} == {"arn:aws:s3:::BUCKET", "arn:aws:s3:::BUCKET/*"}
    trust = json.loads((iam / "ec2-trust.json").read_text())["Statement"][0]
    assert trust["Principal"] == {"Service": "ec2.amazonaws.com"}
    script = (iam / "create.sh").read_text()
    for needle in ["create-role", "put-role-policy", "create-instance-profile", "add-role-to-instance-profile"]:
        assert needle in script


def test_gcp_gpu_workers_wait_for_the_driver_before_ray():
    config = prepared("gcp-gpu.yaml")
    for name, t in config["available_node_types"].items():
        if t["resources"].get("GPU"):
            (wait,) = t["initialization_commands"]
            assert "until nvidia-smi" in wait and wait.startswith("timeout "), name


# ------------------------------------------------------------------------------ a GPU asked for, none seen
def test_trial_that_asked_for_a_gpu_and_sees_none_fails_with_one_line(monkeypatch):
    """tuning/tune.py and every Train worker call require_gpu: no silent fall-back to the CPU."""
    import torch

    from ssl_ray.errors import SSLRayError
    from ssl_ray.engine.worker import require_gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a node whose driver torch cannot use
    with pytest.raises(SSLRayError) as e:
        require_gpu(1)
    msg = str(e.value)
    assert "\n" not in msg and "asked for 1 GPU(s)" in msg and torch.__version__ in msg and "nvidia-smi" in msg
    require_gpu(0)  # a CPU trial never needs one
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    require_gpu(0.5)  # a GPU torch can use: no error


def test_smoke_cluster_is_loopback_only_and_valid():
    """clusters/smoke.yaml (run by `bash clusters/smoke.sh`, not by pytest) is a valid launcher file that can
    only reach this machine, and installs the wheel smoke.sh builds."""
    config = prepared("smoke.yaml")
    validate_config(config)
    provider = config["provider"]
    assert provider["type"] == "local"
    assert all(ipaddress.ip_address(ip).is_loopback for ip in [provider["head_ip"], *provider["worker_ips"]])
    assert config["file_mounts"]["~/ssl-ray-wheel"] == "./build/smoke-wheel"
    assert any("ssl_ray-*.whl" in c for c in config["worker_setup_commands"])
    script = (CLUSTERS / "smoke.sh").read_text()
    assert "unshare --fork --pid --mount-proc --net" in script and "ray down" in script


# ------------------------------------------------------------------------------------ torch pinned, /dev/shm
def _torch_installs() -> list[tuple[str, str]]:
    """(file, install command) for every command in clusters/ that installs torch from an index."""
    found = []
    for f in sorted(CLUSTERS.iterdir()):
        if f.suffix in (".yaml", "") and f.is_file():
            for line in f.read_text(encoding="utf-8").splitlines():
                for step in line.split("&&"):
                    if re.search(r"pip install .*--index-url", step) and "torch" in step:
                        found.append((f.name, step.strip()))
    return found


def _pinned(step: str) -> dict[str, str]:
    return dict(re.findall(r"\b(torch|torchvision)==([\w.]+)", step))


def test_every_torch_install_is_pinned_to_the_tested_versions():
    """An index URL with an unpinned torch takes whatever that index holds newest for its CUDA (possibly an
    older torch than the one tested): every cluster file and the Dockerfile pin torch and torchvision to the
    versions installed here (the local build tag, e.g. +cu130, is the index's business)."""
    import torch
    import torchvision

    installs = _torch_installs()
    assert {f for f, _ in installs} >= {"aws-gpu.yaml", "gcp-gpu.yaml", "local.yaml", "kuberay.yaml", "Dockerfile"}
    want = {"torch": torch.__version__.split("+")[0], "torchvision": torchvision.__version__.split("+")[0]}
    for f, step in installs:
        assert _pinned(step) == want, (f, step)


def test_pin_check_catches_an_unpinned_or_stale_line():
    assert _pinned("pip install torch torchvision --index-url https://download.pytorch.org/whl/cu128") == {}
    assert _pinned("pip install torch==2.4.0 torchvision==0.19.0 --index-url x") == {"torch": "2.4.0",
                                                                                      "torchvision": "0.19.0"}
    assert torch_cuda(["pip install torch==2.14.1 torchvision==0.29.1 --index-url "
                       "https://download.pytorch.org/whl/cu128", "pip install -e ~/ssl-ray"]) == (12, 8)


def _pod_templates() -> list[tuple[str, dict]]:
    rc = ray_cluster()
    (job,) = [d for d in yaml.safe_load_all((CLUSTERS / "kuberay-job.yaml").read_text()) if d and d["kind"] == "RayJob"]
    out = []
    for name, spec in (("kuberay.yaml", rc["spec"]), ("kuberay-job.yaml", job["spec"]["rayClusterSpec"])):
        for g in [spec["headGroupSpec"]] + spec["workerGroupSpecs"]:
            out.append((name, g["template"]["spec"]))
    return out


def _shm_problems(pod: dict) -> list[str]:
    memory = {v["name"] for v in pod.get("volumes", []) if (v.get("emptyDir") or {}).get("medium") == "Memory"}
    return [c["name"] for c in pod["containers"]
            if not any(m["mountPath"] == "/dev/shm" and m["name"] in memory for m in c.get("volumeMounts", []))]


def test_kuberay_pods_mount_a_memory_volume_on_dev_shm():
    """Ray's object store lives in /dev/shm; a container's default /dev/shm is 64 MB, so Ray falls back to disk
    (slow) or fails to put larger objects (a checkpoint, a dataset): every pod mounts a memory-backed emptyDir."""
    pods = _pod_templates()
    assert len(pods) == 4  # head and GPU workers, in both files
    for name, pod in pods:
        assert _shm_problems(pod) == [], name
    broken = copy.deepcopy(pods[0][1])
    broken["volumes"] = [v for v in broken["volumes"] if "emptyDir" not in v]
    assert _shm_problems(broken)
