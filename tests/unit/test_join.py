"""`join` against the shared fake: nodes are left alone, the token never outlives the run, the
certificate key is fresh per control-plane join and never on a command line, refusals name
what was tried, a dry run only reads."""

import re
import shlex

import pytest

from gpuk8s.actions.join import JOIN_TOKEN_TTL, run_join
from gpuk8s.errors import ActionFailed, ClusterStateError, PreflightFailed, TransportError, UsageError
from gpuk8s.phases.base import RunOptions
from gpuk8s.phases.cluster import WaitNodesReady
from gpuk8s.phases.join import ENDPOINT_CHECK_ID, _TCP_CONNECT
from gpuk8s.runlog import RunLog
from tests.unit.fake import bare_probe, opener
from tests.unit.test_up import READ_ONLY, SECRETS, inventory, wet_up

TOKEN_ID = SECRETS.token.reveal().split(".")[0]
HEX64 = re.compile(r"\b[0-9a-f]{64}\b")


def _cluster(tmp_path, n_cp=1, n_workers=1, **fake_kw):
    """A fake cluster made by `up` of the first hosts; the opener knows every host of `big`."""
    big = inventory(n_cp=3, n_workers=3)
    probes = {h.name: bare_probe(h.name, i, h.address) for i, h in enumerate(big.hosts)}
    calls: list = []
    fake = opener(probes, calls, **fake_kw)
    wet_up(inventory(n_cp=n_cp, n_workers=n_workers), tmp_path, calls, fake=fake)
    calls.clear()
    return big, fake, calls


def _join(inv, fake, tmp_path, **kw):
    opts = RunOptions(poll_interval=0, wait_timeout=5, **{k: kw.pop(k) for k in ("dry_run",) if k in kw})
    return run_join(inv, opts, log=RunLog(tmp_path / "join.log"), open_transport=fake, secrets=SECRETS, **kw)


def _subset(inv, names):
    from dataclasses import replace

    return replace(inv, hosts=tuple(h for h in inv.hosts if h.name in names))


def test_hosts_already_nodes_are_left_alone_and_reported(tmp_path):
    big, fake, calls = _cluster(tmp_path, n_workers=1)
    inv = _subset(big, {"cp-1", "w-1"})
    report = _join(inv, fake, tmp_path)
    assert report.already_nodes == ["w-1"] and report.joining == [] and not report.plan.changes
    assert not [c for h, c, *_ in calls if h == "w-1"]              # never even connected to
    assert {c.split()[0] for h, c, *_ in calls} <= READ_ONLY         # only reads on cp-1
    assert "w-1: already a node (left alone)" in report.phases[0].notes


def test_join_adds_only_the_missing_hosts_with_a_short_lived_token(tmp_path):
    big, fake, calls = _cluster(tmp_path, n_workers=1)
    report = _join(big, fake, tmp_path)
    assert report.already_nodes == ["w-1"] and sorted(report.joined) == ["cp-2", "cp-3", "w-2", "w-3"]
    assert sorted(fake.cluster.nodes) == ["cp-1", "cp-2", "cp-3", "w-1", "w-2", "w-3"]
    assert not [c for h, c, *_ in calls if h == "w-1"]
    # cp-1 is only a place to run kubeadm/kubectl: nothing is prepared there
    assert not [c for c in report.plan.for_host("cp-1") if not c.description.startswith(
        ("create a short-lived", "upload control-plane", "label node", "taint node", "delete bootstrap"))]
    create = next(stdin for h, c, stdin, _ in calls if "kubeadm token create" in c)
    assert f"ttl: \"{JOIN_TOKEN_TTL}\"" in create and "description: \"gpuk8s join t " in create
    assert [c for _, c, *_ in calls if c.startswith("kubeadm token delete")] == [f"kubeadm token delete {TOKEN_ID}"]


def test_a_fresh_certificate_key_is_uploaded_right_before_each_control_plane_join(tmp_path):
    big, fake, calls = _cluster(tmp_path)
    _join(big, fake, tmp_path)
    steps = [(h, c, stdin) for h, c, stdin, _ in calls
             if "upload-certs --upload-certs" in c or " kubeadm join " in c]
    kinds = [("upload" if "upload-certs" in c else f"join {h}") for h, c, _ in steps]
    assert kinds[:4] == ["upload", "join cp-2", "upload", "join cp-3"]
    keys = []
    for (_, _, up_stdin), (_, _, join_stdin) in ((steps[0], steps[1]), (steps[2], steps[3])):
        key = re.search(r'certificateKey: "([0-9a-f]{64})"', up_stdin).group(1)
        assert f'certificateKey: "{key}"' in join_stdin          # the join uses the key just uploaded
        keys.append(key)
    assert keys[0] != keys[1] and SECRETS.certificate_key.reveal() not in keys
    for _, c, *_ in calls:                                        # never on a command line
        assert not HEX64.search(c) and "--certificate-key" not in c
    log = (tmp_path / "join.log").read_text()
    assert not any(k in log for k in keys)


@pytest.mark.parametrize("failure", ["phase", "internal", "interrupt"])
def test_the_token_is_deleted_on_every_exit_path(tmp_path, monkeypatch, failure):
    big, fake, calls = _cluster(tmp_path)

    def boom(self, ctx):
        if failure == "phase":
            raise ClusterStateError("nodes never Ready")
        raise RuntimeError("bug") if failure == "internal" else KeyboardInterrupt()

    monkeypatch.setattr(WaitNodesReady, "run", boom)
    with pytest.raises(RuntimeError if failure == "internal" else ActionFailed) as e:
        _join(big, fake, tmp_path)
    if failure == "interrupt":
        assert e.value.exit_code == 130
    assert any("kubeadm token create" in c for _, c, *_ in calls)
    assert [c for _, c, *_ in calls if c.startswith("kubeadm token delete")] == [f"kubeadm token delete {TOKEN_ID}"]


def test_an_unreachable_first_control_plane_is_refused_with_what_was_tried(tmp_path):
    big, fake, calls = _cluster(tmp_path)
    probes = {h.name: bare_probe(h.name, i, h.address) for i, h in enumerate(big.hosts)}
    refusing = opener(probes, calls, refuse={"cp-1"})
    with pytest.raises(TransportError) as e:
        _join(big, refusing, tmp_path)
    msg = str(e.value)
    assert "first control plane cp-1" in msg and "root@10.0.0.11:22" in msg and "connection refused" in msg
    assert not [c for h, c, *_ in calls if h != "cp-1"]


def test_an_api_server_that_does_not_answer_is_refused_naming_the_endpoint(tmp_path):
    big, fake, calls = _cluster(tmp_path)
    fake.hosts["cp-1"].read_exit = 1        # kubectl (every command but the probe) fails
    with pytest.raises(ClusterStateError) as e:
        _join(big, fake, tmp_path)
    assert "k8s-api.example.com:6443" in str(e.value) and "cp-1 (10.0.0.11)" in str(e.value)


def test_no_cluster_on_the_first_control_plane_is_refused(tmp_path):
    big = inventory(n_cp=1, n_workers=1)
    probes = {h.name: bare_probe(h.name, i, h.address) for i, h in enumerate(big.hosts)}
    with pytest.raises(ClusterStateError, match="no /etc/kubernetes/admin.conf"):
        _join(big, opener(probes, []), tmp_path)


def test_a_host_that_cannot_reach_the_endpoint_fails_preflight_before_any_change(tmp_path):
    big, fake, calls = _cluster(tmp_path)
    fake.cluster.endpoint_refused_from.add("w-2")
    with pytest.raises(PreflightFailed) as e:
        _join(big, fake, tmp_path)
    assert e.value.blocking == {"w-2": [ENDPOINT_CHECK_ID]}
    w2 = next(h for h in e.value.report.hosts if h.name == "w-2")
    check = next(c for c in w2.checks if c.id == ENDPOINT_CHECK_ID)
    assert "k8s-api.example.com:6443" in check.message and "Connection refused" in check.message
    assert "bash /dev/tcp/k8s-api.example.com/6443" in check.message
    assert {c.split()[0] for _, c, *_ in calls} <= READ_ONLY


def test_a_dry_run_only_reads(tmp_path):
    big, fake, calls = _cluster(tmp_path)
    report = _join(big, fake, tmp_path, dry_run=True)
    assert report.plan.changes and report.joined == []
    for _, c, *_ in calls:
        assert c.split()[0] in READ_ONLY, c
        if c.startswith("sh "):
            assert c.startswith("sh -s -- ") or c.startswith("sh -c " + shlex.quote(_TCP_CONNECT)), c
        if c.startswith("kubectl "):
            assert " get " in c, c
    assert sorted(fake.cluster.nodes) == ["cp-1", "w-1"]
    described = [c.description for c in report.plan.changes]
    assert described.count("upload control-plane certificates (valid 2 h)") == 2


def test_host_selection(tmp_path):
    big, fake, calls = _cluster(tmp_path)
    report = _join(big, fake, tmp_path, hosts=["w-2"])
    assert report.joined == ["w-2"] and "w-3" not in fake.cluster.nodes
    with pytest.raises(UsageError, match="first control plane"):
        _join(big, fake, tmp_path, hosts=["cp-1"])
    with pytest.raises(UsageError, match="no such host"):
        _join(big, fake, tmp_path, hosts=["nope"])


def _gpu_cluster(tmp_path):
    """`up` of cp-1 + gpu-1 with the GPU layer (tests/unit/test_gpu_up.py's fake), Helm installed."""
    from dataclasses import replace

    from gpuk8s.actions.up import run_up
    from gpuk8s.inventory import parse_inventory
    from tests.unit import test_gpu_up as g

    inv = parse_inventory(g.GPU_INVENTORY.format(replicas=2))
    cluster = g.GPUCluster({"gpu-1": 2, "gpu-2": 2}, replicas=2)
    calls, hosts, probes = [], {}, g._probes(inv)

    def open_transport(host, accept_new_host_keys=False):
        if host.name not in hosts:
            hosts[host.name] = g.GPUHost(host.name, probes[host.name], calls, cluster)
        return hosts[host.name]

    opts = dict(poll_interval=0.01, ignore_checks=g.IGNORE, wait_timeout=5)
    run_up(replace(inv, hosts=inv.hosts[:2]), RunOptions(kubeconfig_path=tmp_path / "kc", **opts),
           log=RunLog(None), open_transport=open_transport, secrets=SECRETS)
    hosts["cp-1"].probe = hosts["cp-1"].probe.replace("@@gpuk8s:helm_version\n\n", "@@gpuk8s:helm_version\nv4.2.3+g1\n")
    calls.clear()
    return inv, cluster, calls, open_transport, opts


def test_a_gpu_node_joins_with_labels_the_operands_wait_and_a_smoke_test_there_only(tmp_path):
    inv, cluster, calls, open_transport, opts = _gpu_cluster(tmp_path)
    helm_before = len(cluster.helm_calls)
    report = run_join(inv, RunOptions(**opts), log=RunLog(None), open_transport=open_transport, secrets=SECRETS)
    assert report.already_nodes == ["gpu-1"] and report.joined == ["gpu-2"]
    assert len(cluster.helm_calls) == helm_before                    # the operator is not touched
    assert [r["node"] for r in report.gpu_nodes] == ["gpu-2"] and report.gpu_nodes[0]["smoke"] == "passed"
    smoke = [c for _, c, *_ in calls if "gpuk8s-cuda-smoke-" in c]
    assert smoke and all("gpuk8s-cuda-smoke-gpu-2" in c and "gpu-1" not in c for c in smoke)
    labelled = [c for _, c, *_ in calls if " label node " in c]
    assert labelled and all(" label node gpu-2 " in c for c in labelled)
    assert cluster.labels["gpu-2"]["nvidia.com/gpu.deploy.driver"] == "false"   # its host driver kept
    titles = [p.name for p in report.phases]
    assert "wait for GPU Operator" in titles and "CUDA smoke test" in titles


def test_a_gpu_node_is_refused_where_no_gpu_operator_runs(tmp_path):
    inv, cluster, calls, open_transport, opts = _gpu_cluster(tmp_path)
    cluster.release = None
    with pytest.raises(UsageError, match="no GPU Operator release"):
        run_join(inv, RunOptions(**opts), log=RunLog(None), open_transport=open_transport, secrets=SECRETS)
    assert {c.split()[0] for _, c, *_ in calls} <= READ_ONLY | {"helm", "/usr/local/bin/helm"}


def test_a_host_with_its_own_kubelet_conf_that_is_no_node_is_refused(tmp_path):
    from gpuk8s.paths import KUBELET_CONF
    from tests.unit.fake import FakeHost

    big, fake, calls = _cluster(tmp_path)
    spec = next(h for h in big.hosts if h.name == "w-2")
    stale = FakeHost("w-2", bare_probe("w-2", 4, spec.address), calls, fake.cluster)
    stale.state_files.append(KUBELET_CONF)          # a node of some other cluster
    fake.hosts["w-2"] = stale
    with pytest.raises(PreflightFailed) as e:
        _join(big, fake, tmp_path)
    assert e.value.blocking == {"w-2": ["join-not-a-node"]}
    w2 = next(h for h in e.value.report.hosts if h.name == "w-2")
    check = next(c for c in w2.checks if c.id == "join-not-a-node")
    assert "kubeadm reset -f" in check.fix and "w-2" in check.message
