"""`gpuk8s verify` in the lab: passing on a healthy GPU cluster that `up` built in this module,
then failing with the right check id and JUnit failure when a kubelet stops, a node advertises
fewer GPUs than its PCI bus has, the toolkit's drop-in is gone, a CUDA smoke Job fails, or a host
is unreachable. The JUnit files are read with junitparser, a real JUnit consumer.

One `up` for the whole module (module-scoped fixture); each scenario is a cheap toggle on the
finished cluster, undone in a `finally` before the next one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import junitparser
import pytest

from tests.lab.fixture import GPU, HostFixture
from tests.lab.test_up_lab import ADMIN, up

DROP_IN = "/etc/containerd/conf.d/99-nvidia.toml"
STATE_JSON = "/etc/gpuk8s-lab/state.json"


@pytest.fixture(scope="module")
def cluster(lab_factory, tmp_path_factory):
    lab = lab_factory([
        HostFixture.bare("cp-1", roles=("control-plane",), helm="4.2.3"),
        # L4 x2 with a host driver, time-sliced x2; H100 x2 on the driver container
        HostFixture.bare("gpu-1", gpus=[GPU("L4")] * 2, nvidia_driver="595.91.07"),
        HostFixture.bare("gpu-2", gpus=[GPU("H100")] * 2),
    ])
    tmp = tmp_path_factory.mktemp("verify")
    inv = lab.write_inventory(tmp / "inv.yaml", host_overrides={
        "gpu-1": {"gpu": {"time_slicing": {"replicas": 2}}, "labels": {"pool": "l4"}},
        "gpu-2": {"taints": [{"key": "dedicated", "value": "training", "effect": "NoSchedule"}]}})
    r = up(inv, tmp)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    return lab, inv, tmp


def verify(inv: str, tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict, junitparser.JUnitXml]:
    junit = tmp / f"verify-{len(list(tmp.glob('verify-*.xml')))}.xml"
    r = subprocess.run([sys.executable, "-m", "gpuk8s", "verify", "-i", inv, "--json", "--junit", str(junit),
                        *args], capture_output=True, text=True, timeout=240)
    doc = json.loads(r.stdout) if r.stdout.strip() else {}
    return r, doc, junitparser.JUnitXml.fromfile(str(junit))


def suites(xml: junitparser.JUnitXml) -> dict[str, junitparser.TestSuite]:
    return {s.name: s for s in xml}


def failures(xml: junitparser.JUnitXml) -> dict[tuple[str, str], str]:
    """(suite, check id) -> the failure's message, for every failing testcase."""
    out = {}
    for s in xml:
        for case in s:
            for res in case.result:
                if isinstance(res, junitparser.Failure):
                    out[(s.name, case.name)] = f"{res.message}\n{res.text}"
    return out


def cluster_check(doc: dict, check_id: str) -> dict:
    return next(c for c in doc["cluster"]["checks"] if c["id"] == check_id)


def host_check(doc: dict, host: str, check_id: str) -> dict:
    h = next(h for h in doc["hosts"] if h["name"] == host)
    return next(c for c in h["checks"] if c["id"] == check_id)


def jobs(lab) -> list[str]:
    r = lab.exec("cp-1", f"kubectl --kubeconfig {ADMIN} get jobs -n gpu-operator -o json")
    assert r.returncode == 0, r.stderr
    return [j["metadata"]["name"] for j in json.loads(r.stdout)["items"]]


def set_gpu_faults(lab, host: str, faults: list[str]) -> None:
    state = json.loads(lab.read_file(host, STATE_JSON))
    state["gpu_faults"] = faults
    lab.write_file(host, STATE_JSON, json.dumps(state))


def out_of(r) -> str:
    return r.stderr[-3000:] + "\n---stdout---\n" + r.stdout[-3000:]


def test_healthy_cluster_passes_with_smoke_jobs(cluster):
    lab, inv, tmp = cluster
    r, doc, xml = verify(inv, tmp)
    assert r.returncode == 0, out_of(r)
    assert doc["ok"] is True and failures(xml) == {}, failures(xml)
    assert set(suites(xml)) == {"cp-1", "gpu-1", "gpu-2", "cluster"}
    assert suites(xml)["cluster"].tests == len(doc["cluster"]["checks"])
    assert cluster_check(doc, "gpu-smoke-test")["status"] == "pass"
    assert cluster_check(doc, "gpu-smoke-test")["message"] == "passed on 2 GPU nodes"
    # time-slicing x2 on the 2-GPU L4 node: 4 allocatable, the -SHARED product
    assert cluster_check(doc, "gpu-allocatable")["status"] == "pass"
    assert cluster_check(doc, "gpu-node-labels")["status"] == "pass"
    assert cluster_check(doc, "node-labels")["status"] == "pass"
    assert cluster_check(doc, "node-taints")["status"] == "pass"
    assert jobs(lab) == []   # the smoke Jobs are gone again


def test_stopped_kubelet_on_a_worker(cluster):
    lab, inv, tmp = cluster
    lab.set_service("gpu-2", "kubelet", "inactive", "enabled")
    try:
        r, doc, xml = verify(inv, tmp, "--no-smoke")
    finally:
        lab.set_service("gpu-2", "kubelet", "active", "enabled")
    assert r.returncode == 1, out_of(r)
    fails = failures(xml)
    assert ("cluster", "nodes-ready") in fails, fails
    assert "gpu-2 (Unknown: Kubelet stopped posting node status.)" in fails[("cluster", "nodes-ready")]
    assert ("gpu-2", "kubelet-running") in fails, fails
    assert not [k for k in fails if k[0] in ("cp-1", "gpu-1")], fails
    assert cluster_check(doc, "gpu-smoke-test")["status"] == "skip"


def test_fewer_allocatable_gpus_than_on_the_pci_bus(cluster):
    lab, inv, tmp = cluster
    set_gpu_faults(lab, "gpu-2", ["unhealthy-gpu"])
    try:
        r, doc, xml = verify(inv, tmp, "--no-smoke")
    finally:
        set_gpu_faults(lab, "gpu-2", [])
    assert r.returncode == 1, out_of(r)
    fails = failures(xml)
    assert ("cluster", "gpu-allocatable") in fails, fails
    msg = cluster_check(doc, "gpu-allocatable")["message"]
    assert msg == "gpu-2: allocatable nvidia.com/gpu is 1, expected 2 (2 GPUs)", msg
    assert "fix: kubectl describe node gpu-2" in fails[("cluster", "gpu-allocatable")]


def test_toolkit_drop_in_gone_from_one_node(cluster):
    lab, inv, tmp = cluster
    before = lab.read_file("gpu-1", DROP_IN)
    lab.exec("gpu-1", f"rm -f {DROP_IN}")
    try:
        r, doc, xml = verify(inv, tmp, "--no-smoke")
    finally:
        lab.write_file("gpu-1", DROP_IN, before)
    assert r.returncode == 1, out_of(r)
    fails = failures(xml)
    assert ("gpu-1", "nvidia-runtime") in fails, fails
    assert host_check(doc, "gpu-2", "nvidia-runtime")["status"] == "pass"


def test_failing_smoke_job(cluster):
    lab, inv, tmp = cluster
    set_gpu_faults(lab, "gpu-1", ["cuda-fail"])
    try:
        r, doc, xml = verify(inv, tmp)
    finally:
        set_gpu_faults(lab, "gpu-1", [])
    assert r.returncode == 1, out_of(r)
    fails = failures(xml)
    assert ("cluster", "gpu-smoke-test") in fails, fails
    msg = cluster_check(doc, "gpu-smoke-test")["message"]
    assert msg.startswith("gpu-1: ") and "Failed to allocate device vector A" in msg and "gpu-2" not in msg, msg
    assert jobs(lab) == []   # deleted on the failure path too


def test_unreachable_host_is_a_failed_suite_and_hides_nothing(cluster):
    lab, inv, tmp = cluster
    lab.stop_sshd("gpu-2")
    try:
        r, doc, xml = verify(inv, tmp, "--no-smoke")
    finally:
        lab.start_sshd("gpu-2")
    assert r.returncode == 4, out_of(r)
    s = suites(xml)
    assert [c.name for c in s["gpu-2"]] == ["reachable"] and s["gpu-2"].failures == 1
    assert "refused" in failures(xml)[("gpu-2", "reachable")]
    # the others are checked in full, the cluster too (its node is still Ready: kubelet runs)
    assert s["cp-1"].tests > 1 and s["gpu-1"].tests > 1 and s["cluster"].tests > 1
    assert cluster_check(doc, "nodes-ready")["status"] == "pass"
    assert cluster_check(doc, "gpu-allocatable")["status"] in ("warn", "skip")   # gpu-2's GPUs unknown
