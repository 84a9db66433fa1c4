"""`gpuk8s verify`, cluster side: the cluster checks on constructed kubectl JSON, the one batched
read, the report (exit codes, JSON shape), JUnit (junitparser + the Jenkins xUnit schema), the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import junitparser
import pytest
import xmlschema
from typer.testing import CliRunner

from gpuk8s import cli
from gpuk8s.actions.verify import ClusterReport, VerifyReport
from gpuk8s.checks.base import CheckResult
from gpuk8s.checks.verify_cluster import (VERIFY_CLUSTER, ClusterCheckContext, GPUExpectation,
                                          run_cluster_checks)
from gpuk8s.errors import EXIT_CHECKS_FAILED, EXIT_OK, EXIT_UNREACHABLE
from gpuk8s.gate import Gate
from gpuk8s.host import Host
from gpuk8s.inventory import ClusterSpec, HostSpec, Inventory, SSHSettings, Taint
from gpuk8s.junit import to_junit
from gpuk8s.phases.preflight import HostReport
from gpuk8s.phases.verify_cluster import KubeconfigTransport, read_cluster
from gpuk8s.runlog import RunLog
from gpuk8s.shell import Cmd
from tests.unit.fake import FakeCluster, FakeHost, probe_output

XSD = Path(__file__).parent / "data" / "junit-10.xsd"


def inventory(*names, labels=None, taints=None) -> Inventory:
    ssh = SSHSettings(user="root")
    hosts = []
    for i, n in enumerate(names):
        roles = ("control-plane",) if i == 0 else ("worker",)
        hosts.append(HostSpec(name=n, address=f"10.0.0.{11 + i}", roles=roles, ssh=ssh,
                              gpu=True if n.startswith("gpu") else None,
                              labels=(labels or {}).get(n, {}), taints=(taints or {}).get(n, ())))
    return Inventory(path="inv.yaml", cluster=ClusterSpec(name="t", control_plane_endpoint="10.0.0.11:6443"),
                     hosts=tuple(hosts))


def node(name, *, ready=True, version=None, labels=None, taints=(), alloc=None):
    v = version or "v" + inventory("x").release.patch
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "Unknown",
                              "reason": "KubeletReady" if ready else "NodeStatusUnknown",
                              "message": "kubelet is posting ready status" if ready else
                              "Kubelet stopped posting node status."}],
              "nodeInfo": {"kubeletVersion": v}, "allocatable": dict(alloc or {})}
    return {"kind": "Node", "metadata": {"name": name, "labels": dict(labels or {})},
            "spec": {"taints": list(taints)}, "status": status}


def pod(ns, name, node_name, phase="Running", ready=True, waiting=None):
    cs = {"name": "c", "ready": ready, "state": {"running": {}} if not waiting else {"waiting": {"reason": waiting}}}
    return {"kind": "Pod", "metadata": {"name": name, "namespace": ns}, "spec": {"nodeName": node_name},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [cs]}}


def tigera(available=True):
    return {"kind": "TigeraStatus", "metadata": {"name": "calico"},
            "status": {"conditions": [{"type": "Available", "status": "True" if available else "False"},
                                      {"type": "Degraded", "status": "False" if available else "True",
                                       "message": "" if available else "calico-node not ready"}]}}


def policy(state="ready"):
    return {"kind": "ClusterPolicy", "metadata": {"name": "cluster-policy"}, "status": {"state": state}}


GPU_LABELS = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def healthy_objects(inv, *, gpu=("gpu-1",), alloc=2, product="NVIDIA-H100-80GB-HBM3"):
    nodes = []
    for h in inv.hosts:
        if h.name in gpu:
            nodes.append(node(h.name, labels={**h.labels, **GPU_LABELS, "nvidia.com/gpu.product": product},
                              taints=[{"key": t.key, "value": t.value, "effect": t.effect} for t in h.taints],
                              alloc={"nvidia.com/gpu": str(alloc)}))
        else:
            nodes.append(node(h.name, labels=h.labels,
                              taints=[{"key": t.key, "value": t.value, "effect": t.effect} for t in h.taints]))
    pods = [pod("kube-system", f"kube-apiserver-{inv.hosts[0].name}", inv.hosts[0].name),
            pod("kube-system", "coredns-1", inv.hosts[0].name)] + \
        [pod("calico-system", f"calico-node-{h.name}", h.name) for h in inv.hosts]
    return {"Node": nodes, "Pod": pods, "TigeraStatus": [tigera()], "ClusterPolicy": [policy()]}


def context(inv, objects, *, gpu=None, smoke=None, known=None, note=""):
    gpu = {"gpu-1": GPUExpectation("gpu-1", "nvidia.com/gpu", 2)} if gpu is None else gpu
    return ClusterCheckContext(inventory=inv, hosts=inv.hosts,
                               known=frozenset(known or (h.name for h in inv.hosts)), objects=objects,
                               where="cp-1", gpu=gpu, smoke=smoke, smoke_note=note)


def by_id(results):
    return {r.id: r for r in results}


# --------------------------------------------------------------------------- the checks


def test_healthy_cluster_passes_every_check():
    inv = inventory("cp-1", "gpu-1", labels={"gpu-1": {"pool": "a100"}},
                    taints={"gpu-1": (Taint("nvidia.com/gpu", "present", "NoSchedule"),)})
    res = run_cluster_checks(context(inv, healthy_objects(inv), smoke={"gpu-1": ("pass", "passed")}))
    assert [r.id for r in res] == list(VERIFY_CLUSTER.ids)
    assert {r.id: r.status for r in res} == {i: "pass" for i in VERIFY_CLUSTER.ids}, res


def test_stopped_kubelet_fails_nodes_ready_and_names_the_node():
    inv = inventory("cp-1", "gpu-1", "w-2")
    objs = healthy_objects(inv)
    objs["Node"][2] = node("w-2", ready=False)
    r = by_id(run_cluster_checks(context(inv, objs)))["nodes-ready"]
    assert r.status == "fail" and "w-2 (Unknown: Kubelet stopped posting node status.)" in r.message
    assert "on w-2: systemctl status kubelet" in r.fix


def test_missing_node_wrong_version_labels_taints_and_unknown_node():
    inv = inventory("cp-1", "gpu-1", "w-2", "w-3'x", labels={"w-2": {"zone": "b"}},
                    taints={"w-2": (Taint("dedicated", "infra", "NoSchedule"),)})
    objs = healthy_objects(inv)
    objs["Node"] = [n for n in objs["Node"] if n["metadata"]["name"] != "w-3'x"]
    w2 = next(n for n in objs["Node"] if n["metadata"]["name"] == "w-2")
    w2["metadata"]["labels"] = {}
    w2["spec"]["taints"] = []
    w2["status"]["nodeInfo"]["kubeletVersion"] = "v1.30.0"
    objs["Node"].append(node("stray"))
    res = by_id(run_cluster_checks(context(inv, objs)))
    assert res["nodes-registered"].status == "fail" and "w-3'x" in res["nodes-registered"].message
    assert res["kubelet-version"].status == "fail" and "w-2 (v1.30.0)" in res["kubelet-version"].message
    assert res["node-labels"].status == "fail" and "zone=b (has none)" in res["node-labels"].message
    assert res["node-labels"].fix == "kubectl label node w-2 zone=b --overwrite"
    assert res["node-taints"].fix == "kubectl taint node w-2 dedicated=infra:NoSchedule --overwrite"
    assert res["unknown-nodes"].status == "warn" and "stray" in res["unknown-nodes"].message
    assert "'stray'" not in res["unknown-nodes"].fix and "kubectl delete node stray" in res["unknown-nodes"].fix


def test_unknown_nodes_judged_against_the_whole_inventory():
    """--host limits the hosts checked, never which nodes count as unknown."""
    inv = inventory("cp-1", "gpu-1")
    objs = healthy_objects(inv)
    objs["Node"].append(node("w-9"))
    r = by_id(run_cluster_checks(context(inv, objs, known={"cp-1", "gpu-1", "w-9"})))["unknown-nodes"]
    assert r.status == "pass"


def test_system_pods_calico_and_clusterpolicy_failures():
    inv = inventory("cp-1", "gpu-1")
    objs = healthy_objects(inv)
    objs["Pod"].append(pod("kube-system", "coredns-2", "gpu-1", ready=False, waiting="CrashLoopBackOff"))
    objs["Pod"].append(pod("gpu-operator", "nvidia-dcgm-x", "gpu-1", ready=False, waiting="CrashLoopBackOff"))
    objs["TigeraStatus"] = [tigera(available=False)]
    objs["ClusterPolicy"] = [policy("notReady")]
    res = by_id(run_cluster_checks(context(inv, objs)))
    sp = res["system-pods"]
    assert sp.status == "fail" and "kube-system/coredns-2 on gpu-1: Running, not Ready (c: CrashLoopBackOff)" \
        in sp.message and "nvidia-dcgm" not in sp.message
    assert "kubectl describe pod -n kube-system coredns-2" in sp.fix
    assert res["calico-available"].status == "fail" and "calico-node not ready" in res["calico-available"].message
    assert res["gpu-operator-ready"].status == "fail" and "ClusterPolicy notReady" in res["gpu-operator-ready"].message


def test_fewer_allocatable_than_pci_gpus_times_replicas():
    inv = inventory("cp-1", "gpu-1")
    objs = healthy_objects(inv, alloc=6, product="NVIDIA-L4-SHARED")
    gpu = {"gpu-1": GPUExpectation("gpu-1", "nvidia.com/gpu", 2, replicas=4, shared_product=True)}
    res = by_id(run_cluster_checks(context(inv, objs, gpu=gpu)))
    assert res["gpu-allocatable"].status == "fail"
    assert "allocatable nvidia.com/gpu is 6, expected 8 (2 GPUs x 4 replicas)" in res["gpu-allocatable"].message
    assert res["gpu-node-labels"].status == "pass"


def test_mig_devices_and_product_labels():
    inv = inventory("cp-1", "gpu-1")
    objs = healthy_objects(inv, alloc=14, product="NVIDIA-H100-80GB-HBM3")
    gpu = {"gpu-1": GPUExpectation("gpu-1", "nvidia.com/gpu", 14, mig=True)}
    res = by_id(run_cluster_checks(context(inv, objs, gpu=gpu)))
    assert res["gpu-allocatable"].status == "pass"
    assert res["gpu-node-labels"].status == "fail" and "no -MIG- part" in res["gpu-node-labels"].message
    # time-slicing without the -SHARED product: the config is not in effect
    shared = {"gpu-1": GPUExpectation("gpu-1", "nvidia.com/gpu", 1, replicas=2, shared_product=True)}
    r = by_id(run_cluster_checks(context(inv, healthy_objects(inv, alloc=2), gpu=shared)))["gpu-node-labels"]
    assert r.status == "fail" and "lacks -SHARED" in r.message
    objs = healthy_objects(inv)
    del objs["Node"][1]["metadata"]["labels"]["nvidia.com/gpu.present"]
    r = by_id(run_cluster_checks(context(inv, objs)))["gpu-node-labels"]
    assert r.status == "fail" and "no nvidia.com/gpu.present=true" in r.message


def test_unknown_gpu_count_is_not_judged_and_no_gpu_nodes_skip():
    inv = inventory("cp-1", "gpu-1")
    gpu = {"gpu-1": GPUExpectation("gpu-1", "nvidia.com/gpu", None, unknown_why="no facts: the host was not reachable")}
    r = by_id(run_cluster_checks(context(inv, healthy_objects(inv), gpu=gpu)))["gpu-allocatable"]
    assert r.status == "skip" and "not reachable" in r.message
    res = by_id(run_cluster_checks(context(inv, healthy_objects(inv, gpu=()), gpu={})))
    assert all(res[i].status == "skip" for i in ("gpu-operator-ready", "gpu-allocatable", "gpu-node-labels",
                                                  "gpu-smoke-test"))


def test_smoke_results_and_no_smoke():
    inv = inventory("cp-1", "gpu-1")
    failed = {"gpu-1": ("fail", "vectorAdd did not print 'Test PASSED' (Failed to allocate device vector A)")}
    r = by_id(run_cluster_checks(context(inv, healthy_objects(inv), smoke=failed)))["gpu-smoke-test"]
    assert r.status == "fail" and r.message.startswith("gpu-1: vectorAdd did not print")
    r = by_id(run_cluster_checks(context(inv, healthy_objects(inv), note="--no-smoke")))["gpu-smoke-test"]
    assert r.status == "skip" and r.message == "--no-smoke"


def test_api_down_fails_one_check_and_skips_the_rest():
    inv = inventory("cp-1", "gpu-1")
    ctx = context(inv, None)
    ctx.api_error = "The connection to the server 10.0.0.11:6443 was refused"
    res = run_cluster_checks(ctx)
    assert res[0].id == "cluster-api" and res[0].status == "fail" and "refused" in res[0].message
    assert all(r.status == "skip" for r in res[1:])


def test_a_check_that_raises_fails_alone():
    inv = inventory("cp-1", "gpu-1")
    objs = healthy_objects(inv)
    objs["Node"][0]["spec"] = {"taints": "not-a-list"}   # odd objects from an odd API server
    res = by_id(run_cluster_checks(context(inv, objs)))
    assert res["node-taints"].status == "fail" and "could not run" in res["node-taints"].message
    assert res["nodes-ready"].status == "pass" and res["calico-available"].status == "pass"


def test_every_cluster_check_is_documented():
    text = (Path(__file__).parents[2] / "docs" / "checks.md").read_text()
    section = text.split("## verify: cluster checks", 1)[1].split("\n## ", 1)[0]
    for cid in VERIFY_CLUSTER.ids:
        assert re.search(rf"^### `{re.escape(cid)}`", section, re.M), cid


# --------------------------------------------------------------------------- the read


class GPUClusterHost(FakeHost):
    """The shared fake with a GPU cluster's objects behind its `kubectl get A,B,C`."""

    objects: dict = {}
    crd = True

    def has_clusterpolicy_crd(self) -> bool:
        return self.crd

    def more_items(self, types):
        want = {"pods": "Pod", "tigerastatuses.operator.tigera.io": "TigeraStatus",
                "clusterpolicies.nvidia.com": "ClusterPolicy"}
        return [o for t in types if t in want for o in self.objects.get(want[t], [])]


def _fake_host(inv, crd=True):
    cluster = FakeCluster(nodes=[h.name for h in inv.hosts])
    calls: list = []
    t = GPUClusterHost("cp-1", probe_output("cp-1", "u", "52:54:00:00:00:01", "10.0.0.11"), calls, cluster)
    t.objects = healthy_objects(inv)
    t.crd = crd
    t.state_files = ["/etc/kubernetes/admin.conf"]
    host = Host(inv.hosts[0], Gate(False, RunLog(None)), RunLog(None))
    host.transport = t
    return host, calls


def test_cluster_read_in_one_kubectl_call():
    inv = inventory("cp-1", "gpu-1")
    host, calls = _fake_host(inv)
    objects, error, missing = read_cluster(host, gpu=True)
    assert error == "" and missing == ()
    assert len(calls) == 1
    assert calls[0][1] == ("kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes,pods,"
                           "tigerastatuses.operator.tigera.io,clusterpolicies.nvidia.com -A -o json")
    assert {k: len(v) for k, v in objects.items()} == {"Node": 2, "Pod": 4, "TigeraStatus": 1, "ClusterPolicy": 1}


def test_cluster_read_without_the_operator_crd_reads_the_types_alone():
    inv = inventory("cp-1", "gpu-1")
    host, calls = _fake_host(inv, crd=False)
    objects, error, missing = read_cluster(host, gpu=True)
    assert missing == ("clusterpolicies.nvidia.com",) and "ClusterPolicy" not in objects
    assert objects["TigeraStatus"] and len(calls) == 4
    res = by_id(run_cluster_checks(context(inv, objects)))
    assert res["gpu-operator-ready"].status == "fail" and "not installed" in res["gpu-operator-ready"].message


def test_cluster_read_reports_an_api_that_does_not_answer():
    inv = inventory("cp-1", "gpu-1")
    host, calls = _fake_host(inv)
    host.transport.state_files = []
    objects, error, _ = read_cluster(host, gpu=True)
    assert objects is None and "exited 1" in error and "refused" in error and len(calls) == 1


def test_local_kubectl_uses_the_kubeconfig_and_a_private_smoke_dir(tmp_path):
    spec = HostSpec(name="kubectl (local)", address="localhost", roles=("control-plane",),
                    ssh=SSHSettings(sudo=False), connection="local")
    t = KubeconfigTransport(spec, str(tmp_path / "kc"))
    try:
        cmd = Cmd("kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "apply", "-f",
                  "/etc/gpuk8s/cuda-smoke/gpu-1.yaml").rewrite(t._word)
        assert cmd.render() == f"kubectl --kubeconfig {tmp_path / 'kc'} apply -f {t.tmp}/gpu-1.yaml"
        res = t.run(Cmd("echo", "/etc/kubernetes/admin.conf"))
        assert res.stdout.strip() == str(tmp_path / "kc")
    finally:
        t.close()
    assert not Path(t.tmp).exists()


# --------------------------------------------------------------------------- report, JSON, JUnit


def _report(*, unreachable=False, host_fail=False, cluster_fail=False) -> VerifyReport:
    checks = [CheckResult("containerd-running", "pass", "active"),
              CheckResult("swap-off", "fail" if host_fail else "pass", "swap on /swap.img" if host_fail else "off",
                          "swapoff -a" if host_fail else None),
              CheckResult("nvidia-smi", "skip", "not a host-driver node")]
    hosts = [HostReport("cp-1", "10.0.0.11", True, checks=list(checks)),
             HostReport("gpu-1", "10.0.0.12", not unreachable,
                        error="gpu-1: connection refused" if unreachable else None,
                        error_kind="refused" if unreachable else None,
                        checks=[] if unreachable else list(checks))]
    cluster = [CheckResult("cluster-api", "pass", "answers"),
               CheckResult("unknown-nodes", "warn", "nodes not in the inventory: stray", "kubectl delete node stray"),
               CheckResult("gpu-allocatable", "fail" if cluster_fail else "pass",
                           'gpu-1: allocatable nvidia.com/gpu is 1, expected 2 <"&\x1b>' if cluster_fail else "ok",
                           "kubectl describe node gpu-1" if cluster_fail else None),
               CheckResult("gpu-smoke-test", "skip", "--no-smoke")]
    return VerifyReport(hosts, ClusterReport("cp-1", cluster))


@pytest.mark.parametrize("kw,code", [({}, EXIT_OK), ({"host_fail": True}, EXIT_CHECKS_FAILED),
                                     ({"cluster_fail": True}, EXIT_CHECKS_FAILED),
                                     ({"unreachable": True, "cluster_fail": True}, EXIT_UNREACHABLE)])
def test_exit_codes(kw, code):
    r = _report(**kw)
    assert r.exit_code == code and r.ok is (code == EXIT_OK)


def test_json_document_shape():
    doc = json.loads(json.dumps(_report(unreachable=True).to_dict()))
    assert set(doc) == {"ok", "hosts", "cluster"} and doc["ok"] is False
    assert [h["name"] for h in doc["hosts"]] == ["cp-1", "gpu-1"]
    assert set(doc["hosts"][0]) == {"name", "address", "reachable", "error", "error_kind", "facts", "checks"}
    assert doc["hosts"][1]["reachable"] is False and doc["hosts"][1]["error_kind"] == "refused"
    assert doc["cluster"]["kubectl"] == "cp-1"
    assert doc["cluster"]["checks"][1] == {"id": "unknown-nodes", "status": "warn",
                                           "message": "nodes not in the inventory: stray",
                                           "fix": "kubectl delete node stray"}


def _parse(xml: str, tmp_path: Path) -> junitparser.JUnitXml:
    p = tmp_path / "verify.xml"
    p.write_text(xml)
    xmlschema.XMLSchema(str(XSD)).validate(str(p))    # raises on anything the schema refuses
    return junitparser.JUnitXml.fromfile(str(p))


def test_junit_suites_cases_failures_and_counts(tmp_path):
    xml = _parse(to_junit(_report(host_fail=True, cluster_fail=True)), tmp_path)
    suites = {s.name: s for s in xml}
    assert list(suites) == ["cp-1", "gpu-1", "cluster"]
    for s in suites.values():
        cases = list(s)
        assert s.tests == len(cases)
        assert s.failures == sum(1 for c in cases if any(isinstance(r, junitparser.Failure) for r in c.result))
        assert s.skipped == sum(1 for c in cases if any(isinstance(r, junitparser.Skipped) for r in c.result))
        assert s.errors == 0
    assert (suites["cp-1"].tests, suites["cp-1"].failures, suites["cp-1"].skipped) == (3, 1, 1)
    cluster = {c.name: c for c in suites["cluster"]}
    fail = cluster["gpu-allocatable"].result[0]
    assert isinstance(fail, junitparser.Failure)
    assert fail.message == 'gpu-1: allocatable nvidia.com/gpu is 1, expected 2 <"&\\x1b>'
    assert "fix: kubectl describe node gpu-1" in fail.text
    assert cluster["unknown-nodes"].is_passed and "warn: nodes not in the inventory" in cluster["unknown-nodes"].system_out
    assert isinstance(cluster["gpu-smoke-test"].result[0], junitparser.Skipped)
    assert cluster["gpu-smoke-test"].result[0].message == "--no-smoke"
    assert xml.tests == 10 and xml.failures == 3 and xml.errors == 0


def test_junit_unreachable_host_is_a_failed_suite_and_hides_nothing(tmp_path):
    xml = _parse(to_junit(_report(unreachable=True)), tmp_path)
    suites = {s.name: s for s in xml}
    gpu = list(suites["gpu-1"])
    assert [c.name for c in gpu] == ["reachable"] and suites["gpu-1"].failures == 1
    assert "connection refused" in gpu[0].result[0].message
    assert suites["cp-1"].tests == 3 and suites["cluster"].tests == 4


def test_junit_schema_refuses_a_broken_document(tmp_path):
    """The schema check can fail: a testsuite without its required `tests` count is refused."""
    bad = to_junit(_report()).replace(' tests="3"', "", 1)
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        _parse(bad, tmp_path)


# --------------------------------------------------------------------------- CLI


def test_cli_verify_json_junit_and_exit_code(monkeypatch, tmp_path):
    inv = inventory("cp-1", "gpu-1")
    seen = {}

    def fake_run(inventory, options, **kw):
        seen.update(kw, inventory=inventory)
        return _report(cluster_fail=True)

    monkeypatch.setattr("gpuk8s.cli._load", lambda *a: inv)
    monkeypatch.setattr("gpuk8s.actions.verify.run_verify", fake_run)
    junit = tmp_path / "out" / "verify.xml"
    res = CliRunner().invoke(cli.app, ["verify", "-i", "x.yaml", "--json", "--junit", str(junit),
                                       "--no-smoke", "--host", "gpu-1"])
    assert res.exit_code == EXIT_CHECKS_FAILED, res.output
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["cluster"]["checks"][2]["status"] == "fail"
    assert seen["smoke"] is False and [h.name for h in seen["full"].hosts] == ["cp-1", "gpu-1"]
    assert [h.name for h in seen["inventory"].hosts] == ["gpu-1"]
    assert _parse(junit.read_text(), tmp_path).failures == 1


def test_cli_verify_human_output_failures_first_with_fix(monkeypatch):
    inv = inventory("cp-1", "gpu-1")
    monkeypatch.setattr("gpuk8s.cli._load", lambda *a: inv)
    monkeypatch.setattr("gpuk8s.actions.verify.run_verify", lambda *a, **k: _report(unreachable=True))
    res = CliRunner().invoke(cli.app, ["verify", "-i", "x.yaml"], terminal_width=220)
    assert res.exit_code == EXIT_UNREACHABLE
    out = res.stdout
    assert out.index("gpu-1") < out.index("cp-1")            # the unreachable host first
    assert "unreachable (refused)" in out and "not healthy" in out
    monkeypatch.setattr("gpuk8s.actions.verify.run_verify", lambda *a, **k: _report(host_fail=True))
    out = CliRunner().invoke(cli.app, ["verify", "-i", "x.yaml"], terminal_width=220).stdout
    assert out.index("swap-off") < out.index("containerd-running")   # failures first within a host
    assert "$ swapoff -a" in out
    # the cluster group comes after the hosts, its failure before its passes
    assert out.index("cluster (cp-1)") > out.index("gpu-1")


def test_cli_verify_missing_kubeconfig_is_a_usage_error(monkeypatch, tmp_path):
    monkeypatch.setattr("gpuk8s.cli._load", lambda *a: inventory("cp-1"))
    res = CliRunner().invoke(cli.app, ["verify", "-i", "x.yaml", "--kubeconfig", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "--kubeconfig: no such file" in res.stderr


# --------------------------------------------------------------------------- the action on the shared fake


def _fake_fleet(inv, **kw):
    from tests.unit.fake import opener

    calls: list = []
    probes = {h.name: probe_output(h.name, f"uuid-{i}", f"52:54:00:00:00:{i:02x}", h.address,
                                   gpus=2 if h.name.startswith("gpu") else 0) for i, h in enumerate(inv.hosts)}
    cluster = FakeCluster(nodes=[h.name for h in inv.hosts])
    for n in healthy_objects(inv, gpu=[h.name for h in inv.hosts if h.name.startswith("gpu")])["Node"]:
        name = n["metadata"]["name"]
        cluster.labels[name] = n["metadata"]["labels"]
        cluster.node_status[name] = {k: v for k, v in n["status"].items() if k != "conditions"}
    op = opener(probes, calls, cluster=cluster, **kw)
    for h in inv.hosts:
        t = GPUClusterHost(h.name, probes[h.name], calls, op.cluster)
        t.objects = {k: v for k, v in healthy_objects(inv).items() if k != "Node"}   # nodes: FakeCluster's
        t.state_files = ["/etc/kubernetes/admin.conf"] if h.is_control_plane else []
        t.state_files.append("/etc/kubernetes/kubelet.conf")
        op.hosts[h.name] = t
    return op, calls


def test_run_verify_reads_the_cluster_once_and_changes_nothing():
    from gpuk8s.actions.verify import run_verify

    inv = inventory("cp-1", "gpu-1")
    op, calls = _fake_fleet(inv)
    report = run_verify(inv, smoke=False, open_transport=op)
    kubectl = [(h, c) for h, c, _, _ in calls if c.startswith("kubectl ")]
    assert kubectl == [("cp-1", "kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes,pods,"
                                "tigerastatuses.operator.tigera.io,clusterpolicies.nvidia.com -A -o json")]
    assert not [c for _, c, _, _ in calls if any(f" {w} " in f" {c} " for w in ("apply", "delete", "label", "taint"))]
    res = by_id(report.cluster.checks)
    assert list(res) == list(VERIFY_CLUSTER.ids) and report.cluster.where == "cp-1"
    assert all(res[i].status == "pass" for i in VERIFY_CLUSTER.ids if i != "gpu-smoke-test"), res
    assert res["gpu-smoke-test"].status == "skip" and res["gpu-smoke-test"].message == "--no-smoke"
    assert "2 GPUs" not in res["gpu-allocatable"].message and res["gpu-allocatable"].message == \
        "1 GPU nodes advertise every GPU"
    assert [h.name for h in report.hosts] == ["cp-1", "gpu-1"] and all(h.reachable and h.checks for h in report.hosts)
    doc = report.to_dict()
    assert set(doc) == {"ok", "hosts", "cluster"}


def test_run_verify_unreachable_host_hides_nothing_and_exits_4(tmp_path):
    from gpuk8s.actions.verify import run_verify

    inv = inventory("cp-1", "gpu-1", "gpu-2")
    op, calls = _fake_fleet(inv, refuse={"gpu-2"})
    report = run_verify(inv, smoke=False, open_transport=op)
    by = {h.name: h for h in report.hosts}
    assert not by["gpu-2"].reachable and "refused" in by["gpu-2"].error
    assert by["cp-1"].checks and by["gpu-1"].checks
    res = by_id(report.cluster.checks)
    assert res["nodes-ready"].status == "pass"             # the API still knows gpu-2's node
    assert res["gpu-allocatable"].status == "warn" and "gpu-2 (no facts: the host was not reachable)" in \
        res["gpu-allocatable"].message
    assert report.exit_code == EXIT_UNREACHABLE
    xml = _parse(to_junit(report), tmp_path)
    assert [c.name for c in {s.name: s for s in xml}["gpu-2"]] == ["reachable"]


def test_run_verify_first_control_plane_down_uses_the_next():
    from gpuk8s.actions.verify import run_verify

    inv = inventory("cp-1", "cp-2", "gpu-1")
    inv = Inventory(path=inv.path, cluster=inv.cluster, hosts=tuple(
        HostSpec(name=h.name, address=h.address, roles=("control-plane",) if h.name.startswith("cp") else h.roles,
                 ssh=h.ssh, gpu=h.gpu) for h in inv.hosts))
    op, calls = _fake_fleet(inv, refuse={"cp-1"})
    report = run_verify(inv, smoke=False, open_transport=op)
    assert report.cluster.where == "cp-2"
    assert [h for h, c, _, _ in calls if c.startswith("kubectl ")] == ["cp-2"]
    assert by_id(report.cluster.checks)["cluster-api"].status == "pass"


def test_run_verify_no_control_plane_reachable():
    from gpuk8s.actions.verify import run_verify

    inv = inventory("cp-1", "gpu-1")
    op, _ = _fake_fleet(inv, refuse={"cp-1"})
    report = run_verify(inv, smoke=False, open_transport=op)
    api = by_id(report.cluster.checks)["cluster-api"]
    assert api.status == "fail" and "no control plane is reachable" in api.message and "--kubeconfig" in api.message
    assert report.exit_code == EXIT_UNREACHABLE


def test_run_verify_host_subset_still_reads_the_cluster_on_a_control_plane():
    """--host gpu-1: host checks on gpu-1 only; kubectl on the inventory's control plane anyway,
    and the other inventory hosts' nodes are not 'unknown'."""
    from gpuk8s.actions.base import only_hosts
    from gpuk8s.actions.verify import run_verify

    full = inventory("cp-1", "gpu-1", "w-2")
    op, calls = _fake_fleet(full)
    report = run_verify(only_hosts(full, ["gpu-1"]), full=full, smoke=False, open_transport=op)
    assert [h.name for h in report.hosts] == ["gpu-1"] and report.cluster.where == "cp-1"
    assert [h for h, c, _, _ in calls if c.startswith("kubectl ")] == ["cp-1"]
    res = by_id(report.cluster.checks)
    assert res["unknown-nodes"].status == "pass" and res["nodes-ready"].message == "1 nodes Ready"


def test_smoke_jobs_only_where_they_can_pass_and_nothing_applied_otherwise():
    """A GPU node that advertises the wrong count is not given a smoke Job (it would sit Pending
    until the timeout): the smoke check names it as not run; gpu-allocatable fails it already."""
    from gpuk8s.actions.verify import run_verify

    inv = inventory("cp-1", "gpu-1")
    op, calls = _fake_fleet(inv)
    op.cluster.node_status["gpu-1"]["allocatable"] = {"nvidia.com/gpu": "1"}
    report = run_verify(inv, smoke=True, open_transport=op)
    res = by_id(report.cluster.checks)
    assert res["gpu-allocatable"].status == "fail"
    assert res["gpu-smoke-test"].status == "skip"
    assert res["gpu-smoke-test"].message == "gpu-1: allocatable GPUs are wrong (gpu-allocatable)"
    assert [c for h, c, _, _ in calls if c.startswith("kubectl ")] == [
        "kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes,pods,tigerastatuses.operator.tigera.io,"
        "clusterpolicies.nvidia.com -A -o json"]


def test_cli_verify_writes_its_run_log_where_asked(monkeypatch, tmp_path):
    """`verify --log-file FILE`, as up, join and reset: the action logs into that file."""
    inv = inventory("cp-1", "gpu-1")
    seen = {}

    def fake_run(inventory, options, **kw):
        kw["log"].write("cp-1", "$ kubectl get nodes -> 0")
        seen["path"] = kw["log"].path
        return _report()

    monkeypatch.setattr("gpuk8s.cli._load", lambda *a: inv)
    monkeypatch.setattr("gpuk8s.actions.verify.run_verify", fake_run)
    log = tmp_path / "verify.log"
    res = CliRunner().invoke(cli.app, ["verify", "-i", "x.yaml", "--json", "--log-file", str(log)])
    assert res.exit_code == EXIT_OK, res.output
    assert seen["path"] == log and "kubectl get nodes" in log.read_text()
