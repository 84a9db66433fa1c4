"""The GPU layer of `gpuk8s up` in the lab: Helm, the GPU Operator's rollout on simulated GPUs
(sim/gpuop.py), time-slicing, the toolkit's containerd drop-in, CUDA smoke Jobs, and failure
signatures diagnosed with their fix.

One lab per scenario group (each `up` from bare hosts costs most of the time).
"""

from __future__ import annotations

import json
import re
import tomllib

import pytest
import yaml

from tests.lab.fixture import GPU, HostFixture
from tests.lab.test_up_lab import ADMIN, clear_invocations, invocations, up

DROP_IN = "/etc/containerd/conf.d/99-nvidia.toml"


def node_docs(lab, cp: str = "cp-1") -> dict[str, dict]:
    r = lab.exec(cp, f"kubectl --kubeconfig {ADMIN} get nodes -o json")
    assert r.returncode == 0, r.stderr
    return {i["metadata"]["name"]: i for i in json.loads(r.stdout)["items"]}


def alloc(node: dict, res: str = "nvidia.com/gpu") -> int:
    return int(node["status"].get("allocatable", {}).get(res, 0))


def helm_calls(lab, cp: str = "cp-1") -> list[str]:
    return [ln for ln in invocations(lab, cp) if ln.split()[0].rsplit("/", 1)[-1] == "helm"]


def out_of(r) -> str:
    return r.stderr[-3000:] + "\n---stdout---\n" + r.stdout[-3000:]


# --------------------------------------------------------------------------- two GPU models


@pytest.fixture(scope="module")
def gpulab(lab_factory):
    return lab_factory([
        HostFixture.bare("cp-1", roles=("control-plane",), helm="4.2.3"),
        # L4 x2 with a loaded host driver; H100 x2 without a driver (the driver container's)
        HostFixture.bare("gpu-l4", gpus=[GPU("L4")] * 2, nvidia_driver="595.91.07"),
        HostFixture.bare("gpu-h100", gpus=[GPU("H100")] * 2),
    ])


def _inv(lab, tmp, replicas: int) -> str:
    return lab.write_inventory(tmp / f"inv-{replicas}.yaml", host_overrides={
        "gpu-l4": {"gpu": {"time_slicing": {"replicas": replicas}}}})


@pytest.fixture(scope="module")
def gpu_first_up(gpulab, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu")
    inv = _inv(gpulab, tmp, 4)
    r = up(inv, tmp)
    return r, tmp


def test_up_two_gpu_models(gpulab, gpu_first_up):
    r, tmp = gpu_first_up
    assert r.returncode == 0, out_of(r)
    got = node_docs(gpulab)
    l4, h100 = got["gpu-l4"]["metadata"]["labels"], got["gpu-h100"]["metadata"]["labels"]
    # the host-driver node is kept off the driver container; the other one gets it
    assert l4["nvidia.com/gpu.deploy.driver"] == "false" and "nvidia.com/gpu.deploy.driver" not in h100
    assert l4["nvidia.com/gpu.present"] == "true" and h100["nvidia.com/gpu.present"] == "true"
    assert l4["nvidia.com/gpu.product"] == "NVIDIA-L4-SHARED"
    assert h100["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert "nvidia.com/gpu.present" not in got["cp-1"]["metadata"]["labels"]
    # time-slicing 4 on the 2-GPU L4 node: 8 allocatable; the H100 node is not shared
    assert alloc(got["gpu-l4"]) == 8 and alloc(got["gpu-h100"]) == 2
    assert "CUDA smoke test passed on 2 GPU nodes" in r.stdout + r.stderr or "passed" in r.stdout
    # one helm install, from NVIDIA's repo at the pinned version, with gpuk8s's values file
    calls = [c for c in helm_calls(gpulab) if " upgrade " in f" {c} "]
    assert len(calls) == 1 and "--repo https://helm.ngc.nvidia.com/nvidia" in calls[0], calls
    res = gpulab.exec("cp-1", f"helm list -n gpu-operator -o json --kubeconfig {ADMIN}")
    rel = json.loads(res.stdout)[0]
    assert rel["status"] == "deployed" and rel["chart"].startswith("gpu-operator-v")
    values = json.loads(gpulab.exec("cp-1", f"helm get values gpu-operator -n gpu-operator -o json "
                                             f"--kubeconfig {ADMIN}").stdout)
    assert values["driver"]["enabled"] is True and values["devicePlugin"]["config"]["default"] == "default"
    # the toolkit's drop-in, imported by gpuk8s's root config: the nvidia runtime in config dump
    for n in ("gpu-l4", "gpu-h100"):
        dump = tomllib.loads(gpulab.exec(n, "containerd config dump").stdout)
        assert DROP_IN in dump["imports"]
        assert "nvidia" in dump["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]
    assert "nvidia" not in gpulab.exec("cp-1", "containerd config dump").stdout.split("runtimes")[-1][:200] \
        or gpulab.exec("cp-1", f"test -e {DROP_IN}").returncode != 0


def test_replicas_changed_restarts_plugin_then_nothing(gpulab, gpu_first_up):
    r0, tmp = gpu_first_up
    assert r0.returncode == 0, out_of(r0)
    before = gpulab.read_file("gpu-l4", DROP_IN)
    inv = _inv(gpulab, tmp, 8)
    clear_invocations(gpulab)
    r = up(inv, tmp)
    assert r.returncode == 0, out_of(r)
    kubectl = [ln for ln in invocations(gpulab, "cp-1") if "rollout restart" in ln]
    assert any("daemonset/nvidia-device-plugin-daemonset" in ln for ln in kubectl), kubectl
    got = node_docs(gpulab)
    assert alloc(got["gpu-l4"]) == 16 and alloc(got["gpu-h100"]) == 2
    # the values did not change: no helm upgrade
    assert not [c for c in helm_calls(gpulab) if " upgrade " in f" {c} "]
    # the toolkit's drop-in survives a second up, and is still loaded
    assert gpulab.read_file("gpu-l4", DROP_IN) == before
    dump = tomllib.loads(gpulab.exec("gpu-l4", "containerd config dump").stdout)
    assert "nvidia" in dump["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]

    # a further up on the finished cluster: no helm call that changes anything
    clear_invocations(gpulab)
    r = up(inv, tmp)
    assert r.returncode == 0, out_of(r)
    changing = [c for c in helm_calls(gpulab) if c.split()[1] not in ("version", "list", "get", "status")]
    assert changing == [], changing
    assert "nothing changed" in r.stdout + r.stderr
    # ... and reads the API server once: nodes, Calico and the operator's objects in one List
    # (facts/cluster.py GPU_TYPES), plus helm list / get values; containerd's running config is
    # not re-read when nothing changed and the facts show containerd active.
    gets = [ln for ln in invocations(gpulab, "cp-1") if ln.split()[0].rsplit("/", 1)[-1] == "kubectl"
            and "version --client" not in ln]   # the probe's own version query is not an API call
    assert len(gets) == 1 and "clusterpolicies.nvidia.com" in gets[0] and " -n gpu-operator" in gets[0], gets
    assert sorted(c.split()[1] for c in helm_calls(gpulab) if c.split()[1] != "version") == ["get", "list"]
    for node in ("gpu-l4", "gpu-h100"):
        assert not [ln for ln in invocations(gpulab, node) if "config dump" in ln]


def test_helm_simulator_refuses_what_helm_refuses(gpulab, gpu_first_up):
    def helm(args: str):
        return gpulab.exec("cp-1", f"helm {args} --kubeconfig {ADMIN}")
    r = helm("upgrade --install gpu-operator gpu-operator --repo https://helm.ngc.nvidia.com/nvidia "
             "--version v99.1.0 -n gpu-operator")
    assert r.returncode == 1
    assert r.stderr.strip() == ('Error: chart "gpu-operator" version "v99.1.0" not found in '
                                'https://helm.ngc.nvidia.com/nvidia repository')
    r = helm("upgrade --install gpu-operator gpu-operator --repo https://example.invalid/nvidia "
             "--version v26.7.0 -n gpu-operator")
    assert r.returncode == 1 and 'looks like "https://example.invalid/nvidia" is not a valid chart ' \
        "repository or cannot be reached" in r.stderr
    r = helm("status gpu-operator -n gpu-operator")
    assert r.returncode == 0 and "STATUS: deployed" in r.stdout
    assert helm("get values nope -n gpu-operator -o json").stderr.strip() == "Error: release: not found"
    assert gpulab.exec("cp-1", "helm version --short").stdout.strip() == "v4.2.3+g43e8b7f"


# --------------------------------------------------------------------------- failures


@pytest.fixture(scope="module")
def faultlab(lab_factory):
    return lab_factory([
        HostFixture.bare("cp-1", roles=("control-plane",), helm="4.2.3"),
        HostFixture.bare("gpu-bad", gpus=[GPU("H100")] * 2, gpu_faults=("unhealthy-gpu",)),
        HostFixture.bare("gpu-busy", gpus=[GPU("L4")], gpu_faults=("driver-in-use",)),
    ])


def test_gpu_failures_diagnosed(faultlab, tmp_path):
    # a node whose device plugin advertises fewer GPUs than its PCI bus has: the smoke test fails
    inv = faultlab.write_inventory(tmp_path / "inv.yaml", hosts=["cp-1", "gpu-bad"])
    r = up(inv, tmp_path, "--wait-timeout", "10")
    assert r.returncode != 0, out_of(r)
    assert "allocatable nvidia.com/gpu is 1, but 2 GPUs were found" in " ".join((r.stdout + r.stderr).split()), \
        out_of(r)
    assert alloc(node_docs(faultlab)["gpu-bad"]) == 1

    # a host driver loaded under the driver container: "driver in use", diagnosed with its fix
    inv = faultlab.write_inventory(tmp_path / "inv-all.yaml")
    r = up(inv, tmp_path, "--wait-timeout", "10")
    assert r.returncode != 0, out_of(r)
    text = " ".join((r.stdout + r.stderr).split())
    assert "driver-in-use" in text, out_of(r)
    assert "Could not unload NVIDIA driver kernel modules, driver is in use" in text, out_of(r)
    assert "gpu: {driver: host}" in text, out_of(r)


# --------------------------------------------------------------------------- MIG, and a node without the runtime
# On the finished gpulab cluster (after the tests above: time-slicing 8 on gpu-l4), so no
# further `up` from bare hosts is needed.

MIG_H100 = {"mig": {"strategy": "single", "config": "all-1g.10gb"}}


def _gpu_inv(lab, tmp, name: str, **host_gpu: dict) -> str:
    over = {"gpu-l4": {"gpu": {"time_slicing": {"replicas": 8}}}}
    for host, gpu in host_gpu.items():
        over[host.replace("_", "-")] = {"gpu": {**over.get(host.replace("_", "-"), {}).get("gpu", {}), **gpu}}
    return lab.write_inventory(tmp / f"{name}.yaml", hosts=["cp-1", "gpu-l4", "gpu-h100"], host_overrides=over)


def test_mig_single_on_h100(gpulab, gpu_first_up):
    r0, tmp = gpu_first_up
    assert r0.returncode == 0, out_of(r0)
    inv = _gpu_inv(gpulab, tmp, "inv-mig", gpu_h100=MIG_H100)
    clear_invocations(gpulab)
    r = up(inv, tmp)
    assert r.returncode == 0, out_of(r)
    got = node_docs(gpulab)
    h100 = got["gpu-h100"]
    labels = h100["metadata"]["labels"]
    assert labels["nvidia.com/mig.config"] == "all-1g.10gb"
    assert labels["nvidia.com/mig.config.state"] == "success" and labels["nvidia.com/mig.strategy"] == "single"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb"
    # single strategy: the 7 1g.10gb devices of each of the 2 GPUs, as nvidia.com/gpu
    assert alloc(h100) == 14 and alloc(h100, "nvidia.com/mig-1g.10gb") == 0
    # the L4 node is untouched: no MIG label, its time-slicing stays
    assert "nvidia.com/mig.config" not in got["gpu-l4"]["metadata"]["labels"] and alloc(got["gpu-l4"]) == 16
    # the cluster's strategy did not change (single is the default): no helm upgrade
    assert not [c for c in helm_calls(gpulab) if " upgrade " in f" {c} "]
    # the smoke Job asked for every MIG device and passed (nvidia-smi -L lines = MIG devices)
    job = yaml.safe_load(gpulab.read_file("cp-1", "/etc/gpuk8s/cuda-smoke/gpu-h100.yaml"))
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": 14}, limits
    table = r.stdout.split("GPU nodes", 1)[-1]
    h100_row = next(ln for ln in table.splitlines() if "gpu-h100" in ln)
    assert "passed" in h100_row and "14" in h100_row, out_of(r)


def test_mig_refused_on_l4_at_preflight(gpulab, gpu_first_up):
    r0, tmp = gpu_first_up
    assert r0.returncode == 0, out_of(r0)
    # no gpu.model in the inventory: the load cannot know it is an L4; preflight finds it on the bus
    inv = _gpu_inv(gpulab, tmp, "inv-mig-l4", gpu_h100=MIG_H100, gpu_l4={"mig": {"config": "all-1g.10gb"}})
    clear_invocations(gpulab)
    r = up(inv, tmp)
    assert r.returncode != 0, out_of(r)
    # the check's message, without the boxes' borders the terminal layout puts in it
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", r.stdout + r.stderr).split())
    assert "- gpu-l4: gpu-mig" in text, out_of(r)
    assert "fail gpu-mig mig.config all-1g.10gb: the L4 cannot do MIG (only A100, A30, H100 and H200 " \
        "class GPUs can); use mig.config all-disabled or time_slicing instead" in text, out_of(r)
    # refused before anything changed: no label, no helm or kubectl write
    assert "nvidia.com/mig.config" not in node_docs(gpulab)["gpu-l4"]["metadata"]["labels"]
    writes = [ln for ln in invocations(gpulab, "cp-1")
              if any(w in ln.split()[:4] for w in ("label", "apply", "upgrade", "restart"))]
    assert writes == [], writes


def test_no_nvidia_runtime_diagnosed(gpulab, gpu_first_up):
    r0, tmp = gpu_first_up
    assert r0.returncode == 0, out_of(r0)
    # a third GPU worker whose toolkit never gets the nvidia runtime into containerd
    gpulab.add([HostFixture.bare("gpu-nort", gpus=[GPU("L4")], nvidia_driver="595.91.07",
                                 gpu_faults=("no-runtime",))])
    # driver: auto (gpu: true) on purpose: it joins a cluster whose operator labels it
    # nvidia.com/gpu.present=true at once; its host driver must still be taken as a host driver
    # (decided from the facts at the start of the run), so only the runtime is wrong here
    over = {"gpu-l4": {"gpu": {"time_slicing": {"replicas": 8}}}, "gpu-h100": {"gpu": MIG_H100},
            "gpu-nort": {"gpu": True}}
    inv = gpulab.write_inventory(tmp / "inv-nort.yaml", host_overrides=over)
    r = up(inv, tmp, "--wait-timeout", "5")
    assert r.returncode != 0, out_of(r)
    text = " ".join((r.stdout + r.stderr).split())
    assert "wait for GPU Operator" in text, out_of(r)
    assert "no-nvidia-runtime" in text and "gpu-nort" in text, out_of(r)
    assert 'no runtime for "nvidia" is configured' in text, out_of(r)
    assert "imports /etc/containerd/conf.d/*.toml" in text and "restart containerd" in text, out_of(r)
    assert "timed out after 5s waiting for the GPU Operator" in text and "driver-in-use" not in text, out_of(r)
    # the healthy nodes are not blamed
    assert "[gpu-l4]" not in text and "[gpu-h100]" not in text, out_of(r)
    assert alloc(node_docs(gpulab)["gpu-nort"]) == 0
