"""GPU layer offline: per-node GPU settings, versions, the rendered GPU files (golden), labels.

GPUK8S_UPDATE_GOLDEN=1 rewrites tests/unit/golden/gpu/ from the current output.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from gpuk8s import gpu_models, versions
from gpuk8s.errors import InventoryError, UsageError
from gpuk8s.inventory import MIGSpec, TimeSlicing, parse_inventory
from gpuk8s.render import render_all, write_tree
from gpuk8s.render.gpu import (cuda_smoke_job, device_plugin_configs, gpu_files, gpu_node,
                               gpu_node_labels, gpu_operator_values, kernel_module_type,
                               offline_gpu_nodes, smoke_job_name)

GOLDEN = Path(__file__).parent / "golden" / "gpu"

GPU_INVENTORY = """
cluster: {name: gpu-lab}
gpu:
  time_slicing: {replicas: 4}
  mig: {strategy: single}
hosts:
  - {name: cp-1, address: 10.0.0.11, roles: [control-plane]}
  - name: gpu-h100
    address: 10.0.0.21
    roles: [worker]
    taints: ["nvidia.com/gpu=present:NoSchedule"]
    gpu: {driver: host, model: H100-SXM5-80GB, mig: {config: all-1g.10gb}}
  - name: gpu-l4
    address: 10.0.0.22
    roles: [worker]
    gpu: {model: L4, time_slicing: {replicas: 8}}
  - {name: gpu-plain, address: 10.0.0.23, roles: [worker], gpu: true}
  - {name: gpu-nosmoke, address: 10.0.0.24, roles: [worker], gpu: {smoke_test: false}}
  - {name: cpu-1, address: 10.0.0.31, roles: [worker], gpu: false}
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(InventoryError) as e:
        parse_inventory(text, "inv.yaml")
    return [str(p) for p in e.value.problems]


# ---- inventory -----------------------------------------------------------------------------

def test_host_gpu_mapping_overrides_the_cluster_settings():
    inv = parse_inventory(GPU_INVENTORY, "inv.yaml")
    h100 = inv.gpu_for("gpu-h100")
    assert h100.driver == "host" and h100.model == "H100-SXM5-80GB"
    assert h100.mig == MIGSpec("single", "all-1g.10gb")
    assert h100.time_slicing == TimeSlicing(4)
    assert inv.gpu_for("gpu-l4").time_slicing == TimeSlicing(8)
    assert inv.gpu_for("gpu-plain") == inv.gpu
    assert inv.gpu_for("gpu-nosmoke").smoke_test is False
    assert [h.name for h in inv.declared_gpu_hosts] == ["gpu-h100", "gpu-l4", "gpu-plain",
                                                        "gpu-nosmoke"]
    assert inv.host("gpu-h100").gpu is True and inv.host("cpu-1").gpu is False


@pytest.mark.parametrize("gpu, expected", [
    ("{model: L4, mig: {config: all-1g.10gb}}",
     "hosts[1].gpu.mig.config: the L4 cannot do MIG"),
    ("{model: H100-SXM5-80GB, mig: {config: all-1g.5gb}}",
     "hosts[1].gpu.mig.config: MIG profile 1g.5gb does not exist on the H100-SXM5-80GB"),
    ("{mig: {config: half-and-half}}",
     "hosts[1].gpu.mig.config: 'half-and-half' is not a MIG Manager configuration name"),
    ("{time_slicing: {replicas: 0}}",
     "hosts[1].gpu.time_slicing.replicas: 0 is out of range (must be at least 2)"),
    ("{time_slicing: {rename_by_default: true}}",
     "hosts[1].gpu.time_slicing.replicas: required (the cluster-level gpu.time_slicing"),
    ("{model: A300}", "hosts[1].gpu.model: 'A300' is not a GPU model gpuk8s knows (did you mean 'A30'?)"),
    ("{mig: {strategy: mixed}}", "hosts[1].gpu.mig.strategy: 'mixed' differs from the cluster's"),
    ('{driver_version: "580.105.08"}', "hosts[1].gpu.driver_version: one driver version per cluster"),
    ("{drivr: host}", "hosts[1].gpu.drivr: unknown key (did you mean 'driver'?)"),
    ("yes please", "hosts[1].gpu: expected true or false, got a string"),
])
def test_host_gpu_problems_have_file_and_line(gpu, expected):
    text = ("cluster: {name: c}\nhosts:\n  - {name: cp, address: 10.0.0.1, roles: [control-plane]}\n"
            f"  - name: g\n    address: 10.0.0.2\n    roles: [worker]\n    gpu: {gpu}\n")
    problems = _problems(text)
    assert any(p.startswith("inv.yaml:7: " + expected) for p in problems), problems


def test_cluster_level_mig_is_checked_against_the_model_hint():
    text = ("cluster: {name: c}\ngpu:\n  model: T4\n  mig: {config: all-1g.6gb}\n"
            "hosts: [{name: cp, address: 10.0.0.1, roles: [control-plane]}]\n")
    assert _problems(text) == ["inv.yaml:4: gpu.mig.config: the T4 cannot do MIG (only A100, A30, "
                               "H100 and H200 class GPUs can); use mig.config all-disabled or "
                               "time_slicing instead"]


def test_mig_profile_tables():
    a30 = gpu_models.model_by_name("a30")
    assert gpu_models.mig_config_error("all-1g.6gb.me", a30) is None
    assert gpu_models.mig_config_error("all-balanced", a30) is None
    assert "1g.10gb" in gpu_models.mig_config_error("all-1g.10gb", a30)
    assert gpu_models.model_by_device_id("0x2335").name == "H200"
    assert not gpu_models.model_by_name("L40S").mig_capable


# ---- versions ------------------------------------------------------------------------------

def _versions(block: str, kubernetes: str = "1.36") -> str:
    return (f"cluster:\n  name: c\n  kubernetes_version: \"{kubernetes}\"\nversions:\n{block}"
            "hosts: [{name: a, address: 10.0.0.1, roles: [control-plane]}]\n")


def test_helm_pin_and_checksums():
    r = parse_inventory(_versions("  containerd: null\n")).release
    assert r.helm == versions.HELM_VERSION == "4.2.3"
    assert versions.helm_checksum(r, "amd64").startswith("e9b88b4e")
    assert versions.helm_checksum(r, "arm64").startswith("21abd935")
    assert versions.helm_archive_url(r.helm, "arm64") == \
        "https://get.helm.sh/helm-v4.2.3-linux-arm64.tar.gz"
    assert versions.helm_arch("x86_64") == "amd64" and versions.helm_arch("ppc64le") is None


def test_air_gapped_helm_and_chart_archives():
    r = parse_inventory(_versions("  helm_archive: /srv/helm-v4.2.3-linux-amd64.tar.gz\n"
                                  "  gpu_operator_chart: /srv/gpu-operator-v26.7.0.tgz\n")).release
    assert r.helm_archive == "/srv/helm-v4.2.3-linux-amd64.tar.gz"
    assert r.gpu_operator_chart == "/srv/gpu-operator-v26.7.0.tgz"
    sha = "ab" * 32
    r = parse_inventory(_versions(f'  helm: "3.18.4"\n  helm_sha256: "{sha.upper()}"\n')).release
    assert (r.helm, r.helm_sha256) == ("3.18.4", sha)
    assert versions.helm_checksum(r, "amd64") == sha


@pytest.mark.parametrize("block, fragment", [
    ('  helm: "3.18.4"\n', "versions.helm: needs versions.helm_sha256"),
    ('  helm: "2.17.0"\n  helm_sha256: "' + "a" * 64 + '"\n', "Helm 2.17.0 is not supported"),
    ('  helm_sha256: "abc"\n', "versions.helm_sha256: 'abc' is not a sha256"),
    ("  gpu_operator_chart: /srv/chart\n", "versions.gpu_operator_chart: '/srv/chart' is not"),
    ("  gpu_operator: v23.9.1\n", "GPU Operator v23.9.1 is not a supported release"),
    ("  gpu_operator: v25.10.0\n", "GPU Operator v25.10.0 is not a supported release"),
    ("  gpu_operator: v26.3.1\n", "not validated on Kubernetes 1.36"),
])
def test_bad_gpu_versions_are_reported_at_load(block, fragment):
    problems = _problems(_versions(block))
    assert len(problems) == 1 and fragment in problems[0], problems


def test_every_matrix_row_uses_a_supported_operator():
    for release in versions.MATRIX.values():
        assert versions.override_error("gpu_operator", release.gpu_operator, release) is None


@pytest.mark.parametrize("cuda, driver, image_cuda", [
    ("12.8", None, "12.5.0"), ("12.4", None, "11.7.1"), (None, "595.91.07", "12.5.0"),
    (None, "550.163.01", "11.7.1"), (None, None, "12.5.0"), (None, "470.256.02", "10.2")])
def test_cuda_image_is_no_newer_than_the_driver(cuda, driver, image_cuda):
    release = versions.MATRIX["1.36"]
    image = versions.cuda_image_for(release, cuda_version=cuda, driver_version=driver)
    assert f"vectoradd-cuda{image_cuda}" in image


def test_pinned_cuda_image_wins():
    r = parse_inventory(_versions('  cuda_image: "registry.example.com/vadd:1"\n')).release
    assert versions.cuda_image_for(r, cuda_version="11.0") == "registry.example.com/vadd:1"


# ---- render --------------------------------------------------------------------------------

def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_golden_gpu_files(tmp_path):
    inv = parse_inventory(GPU_INVENTORY, "inv.yaml")
    files = gpu_files(inv, inv.release)
    out = tmp_path / "out"
    write_tree(files, out)
    if os.environ.get("GPUK8S_UPDATE_GOLDEN") == "1":
        shutil.rmtree(GOLDEN, ignore_errors=True)
        shutil.copytree(out, GOLDEN)
    assert _tree(out) == _tree(GOLDEN), "GPUK8S_UPDATE_GOLDEN=1 rewrites tests/unit/golden/gpu"
    for f in files:
        list(yaml.safe_load_all(f.content))
    names = sorted(f.path for f in files)
    assert names == ["cluster/cuda-smoke/gpu-h100.yaml", "cluster/cuda-smoke/gpu-l4.yaml",
                     "cluster/cuda-smoke/gpu-plain.yaml", "cluster/device-plugin-config.yaml",
                     "cluster/gpu-operator-namespace.yaml", "cluster/gpu-operator-values.yaml"]
    assert {f.path for f in files} <= {f.path for f in render_all(inv)}


def test_device_plugin_config_default_is_a_data_key():
    inv = parse_inventory(GPU_INVENTORY, "inv.yaml")
    cm = yaml.safe_load(next(f for f in gpu_files(inv, inv.release)
                             if f.path.endswith("device-plugin-config.yaml")).content)
    values = yaml.safe_load(gpu_operator_values(inv, inv.release, offline_gpu_nodes(inv)).content)
    assert values["devicePlugin"]["config"]["name"] == cm["metadata"]["name"]
    assert values["devicePlugin"]["config"]["default"] in cm["data"]
    assert cm["metadata"]["namespace"] == "gpu-operator"
    default = yaml.safe_load(cm["data"]["default"])
    assert default["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu",
                                                              "replicas": 4}]
    eight = yaml.safe_load(cm["data"]["time-slicing-8"])
    assert eight["sharing"]["timeSlicing"]["resources"][0]["replicas"] == 8
    _, per_node = device_plugin_configs(inv, offline_gpu_nodes(inv))
    assert per_node == {"gpu-l4": "time-slicing-8"}


def test_node_labels():
    inv = parse_inventory(GPU_INVENTORY, "inv.yaml")
    nodes = {n.name: n for n in offline_gpu_nodes(inv)}
    assert gpu_node_labels(inv, nodes["gpu-h100"]) == {
        "nvidia.com/gpu.deploy.driver": "false", "nvidia.com/device-plugin.config": None,
        "nvidia.com/mig.config": "all-1g.10gb"}
    assert gpu_node_labels(inv, nodes["gpu-l4"]) == {
        "nvidia.com/gpu.deploy.driver": None, "nvidia.com/device-plugin.config": "time-slicing-8",
        "nvidia.com/mig.config": "all-disabled"}


def test_driver_enabled_follows_the_nodes():
    inv = parse_inventory(GPU_INVENTORY, "inv.yaml")

    def values(*modes: str) -> dict:
        nodes = [gpu_node(inv, h, driver_mode=m) for h, m in zip(("gpu-h100", "gpu-l4"), modes)]
        return yaml.safe_load(gpu_operator_values(inv, inv.release, nodes, nfd_running=True).content)

    assert values("host", "host")["driver"] == {"enabled": False}
    assert values("host", "container")["driver"] == {"enabled": True, "kernelModuleType": "auto"}
    assert values("host", "host")["nfd"] == {"enabled": False}


def test_kernel_module_type_from_the_hardware():
    inv = parse_inventory(GPU_INVENTORY, "inv.yaml")
    volta = gpu_node(inv, "gpu-plain", driver_mode="container", models=["V100-SXM2-32GB"])
    l4 = gpu_node(inv, "gpu-l4", driver_mode="container", models=["L4"])
    assert kernel_module_type([l4]) == "auto"
    assert kernel_module_type([l4, volta]) == "proprietary"
    host_volta = gpu_node(inv, "gpu-plain", driver_mode="host", models=["V100-SXM2-32GB"])
    assert kernel_module_type([l4, host_volta]) == "auto"


def test_smoke_job_follows_the_node():
    inv = parse_inventory(GPU_INVENTORY, "inv.yaml")
    node = gpu_node(inv, "gpu-h100", driver_mode="host", gpu_count=8, cuda_version="12.4")
    job = yaml.safe_load(cuda_smoke_job(inv, inv.release, node).content)
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "gpu-h100",
                                   "nvidia.com/gpu.present": "true"}
    assert "feature.node.kubernetes.io/gpu" not in str(job)
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal",
                                   "value": "present", "effect": "NoSchedule"}]
    c = pod["containers"][0]
    assert c["resources"]["limits"] == {"nvidia.com/gpu": 8}
    assert "cuda11.7.1" in c["image"]                       # CUDA 12.4 driver: not the 12.5 image
    assert "nvidia-smi -L" in c["args"][0] and "Test PASSED" in c["args"][0]
    assert job["spec"]["backoffLimit"] >= 0 and job["spec"]["activeDeadlineSeconds"] > 0
    assert job["spec"]["ttlSecondsAfterFinished"] > 0 and pod["restartPolicy"] == "Never"
    old = gpu_node(inv, "gpu-h100", driver_mode="host", cuda_version="10.1")
    with pytest.raises(UsageError, match="older than every CUDA smoke image"):
        cuda_smoke_job(inv, inv.release, old)


def test_smoke_job_name_fits_63():
    assert smoke_job_name("gpu-1") == "gpuk8s-cuda-smoke-gpu-1"
    long = smoke_job_name("gpu-" + "x" * 80 + ".example.com")
    assert len(long) <= 63 and not long.endswith("-")
