"""`gpuk8s reset` against the shared fake: order of steps, refusals (last control plane, etcd
quorum, no confirmation), dry runs that only read, a second run that changes nothing."""

import shlex

import pytest
from typer.testing import CliRunner

from gpuk8s.actions.reset import run_reset
from gpuk8s.cli import app
from gpuk8s.errors import ActionFailed, ClusterStateError, TransportError, UsageError
from gpuk8s.paths import ADMIN_CONF, CA_CERT, KUBELET_CONF
from gpuk8s.phases.base import RunOptions
from gpuk8s.phases.reset import CLEANUP_SCRIPT, LEFTOVERS_SCRIPT, ResetRequest, blockers
from gpuk8s.runlog import RunLog
from tests.unit.fake import FakeCluster, opener, probe_output
from tests.unit.test_up import inventory

CP = {"node-role.kubernetes.io/control-plane": ""}


def cluster_up(n_cp=1, n_workers=2):
    inv = inventory(n_workers=n_workers, n_cp=n_cp)
    calls: list = []
    probes = {h.name: probe_output(h.name, f"u{i}", f"52:54:00:00:00:{i:02x}", h.address)
              for i, h in enumerate(inv.hosts)}
    cluster = FakeCluster(nodes=[h.name for h in inv.hosts],
                          labels={h.name: dict(CP) for h in inv.hosts if h.is_control_plane})
    op = opener(probes, calls, cluster=cluster)
    for h in inv.hosts:
        op(h).state_files += [KUBELET_CONF, CA_CERT] + ([ADMIN_CONF] if h.is_control_plane else [])
    return inv, op, calls


def reset(inv, op, *hosts, all=False, dry_run=False, confirm=None):
    req = ResetRequest(hosts=tuple(hosts), all=all, drain_timeout=30, confirm=confirm)
    return run_reset(inv, req, RunOptions(dry_run=dry_run), log=RunLog(None), open_transport=op)


def changes(calls):
    """The commands that are not reads (kubectl get, the probe, the leftovers read)."""
    reads = ("sh -s --", "sh -c " + shlex.quote(LEFTOVERS_SCRIPT))
    return [(h, c) for h, c, *_ in calls
            if not c.startswith(reads) and " get " not in c]


def test_worker_reset_drains_resets_cleans_then_deletes_the_node(tmp_path):
    inv, op, calls = cluster_up()
    report = reset(inv, op, "w-1")
    done = [c.description for c in report.plan.changes]
    assert done[0] == "cordon node w-1"
    assert done[1] == "kubeadm reset -f"
    assert done[-1] == "delete node w-1"
    assert done[2] == "remove what kubeadm reset leaves: cni, kubelet-state, link:cali0123456789a"
    # kubectl on cp-1; kubeadm reset and the cleanup on w-1
    assert [h for h, _ in changes(calls)] == ["cp-1", "w-1", "w-1", "cp-1"]
    assert op.hosts["w-1"].leftovers == []
    assert "w-1" not in op.cluster.nodes and "w-2" in op.cluster.nodes
    assert op.hosts["w-1"].state_files == [] and op.hosts["w-2"].state_files


def test_second_run_changes_nothing(tmp_path):
    inv, op, calls = cluster_up()
    reset(inv, op, "w-1")
    calls.clear()
    report = reset(inv, op, "w-1")
    assert report.plan.changes == [] and changes(calls) == []


def test_refuses_the_last_control_plane_without_all():
    inv, op, calls = cluster_up(n_cp=1)
    with pytest.raises(UsageError, match="the last control plane"):
        reset(inv, op, "cp-1")
    assert changes(calls) == []


def test_refuses_to_lose_etcd_quorum():
    inv, op, calls = cluster_up(n_cp=3, n_workers=0)
    op.cluster.not_ready = {"cp-3"}
    with pytest.raises(UsageError, match="quorum of 2"):
        reset(inv, op, "cp-2")   # leaves cp-1 (Ready) and cp-3 (NotReady): 1 < 2
    assert changes(calls) == []


def test_control_plane_of_three_healthy_goes_one_member_at_a_time():
    inv, op, calls = cluster_up(n_cp=3, n_workers=0)
    report = reset(inv, op, "cp-3")
    assert "kubeadm reset -f (removes its etcd member)" in [c.description for c in report.plan.changes]
    assert "cp-3" not in op.cluster.nodes
    assert {h for h, c in changes(calls) if c.startswith("kubectl")} == {"cp-1"}


def test_all_resets_every_host_workers_first_first_control_plane_last():
    inv, op, calls = cluster_up(n_cp=2, n_workers=2)
    reset(inv, op, all=True)
    order = [h for h, c in changes(calls) if c == "kubeadm reset -f"]
    assert set(order[:2]) == {"w-1", "w-2"} and order[2:] == ["cp-2", "cp-1"]
    assert not any(c.startswith("kubectl") for _, c in changes(calls))   # no drain: the cluster goes


def test_dry_run_executes_only_reads():
    inv, op, calls = cluster_up(n_cp=1)
    report = reset(inv, op, "w-1", "w-2", dry_run=True)
    assert changes(calls) == []
    assert "kubeadm reset -f" in [c.description for c in report.plan.changes]
    assert op.cluster.nodes == ["cp-1", "w-1", "w-2"]


def test_declined_confirmation_changes_nothing():
    inv, op, calls = cluster_up()
    seen = []
    with pytest.raises(UsageError, match="cancelled"):
        reset(inv, op, "w-1", confirm=lambda plan: seen.append(plan) or False)
    assert "w-1 (worker): drain" in seen[0] and changes(calls) == []


def test_cli_refuses_without_yes_when_stdin_is_not_a_terminal(tmp_path):
    inv = tmp_path / "inv.yaml"
    inv.write_text("cluster: {name: t}\nhosts: []\n")
    r = CliRunner().invoke(app, ["reset", "-i", str(inv), "--host", "w-1"], input="y\n")
    assert r.exit_code == 2 and "not a terminal" in r.output


def test_unreachable_target_is_refused_before_any_change():
    inv, op, calls = cluster_up()
    inv_op = opener({}, calls, cluster=op.cluster, refuse=("w-1",))
    op_hosts = op.hosts

    def both(host, accept_new_host_keys=False):
        return inv_op(host) if host.name == "w-1" else op_hosts[host.name]

    with pytest.raises(TransportError, match="cannot reset unreachable hosts"):
        run_reset(inv, ResetRequest(hosts=("w-1",)), RunOptions(), log=RunLog(None), open_transport=both)
    assert changes(calls) == []


def test_usage_errors():
    inv, op, _ = cluster_up()
    with pytest.raises(UsageError, match="no such host"):
        reset(inv, op, "nope")
    with pytest.raises(UsageError, match="--host NAME"):
        reset(inv, op)
    with pytest.raises(UsageError, match="do not combine"):
        reset(inv, op, "w-1", all=True)


def test_blockers_name_the_pods_and_their_budgets():
    pods = [{"metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"},
                          "ownerReferences": [{"kind": "ReplicaSet", "name": "web-6d8"}]},
             "spec": {"nodeName": "w-1"}}]
    pdbs = [{"metadata": {"name": "web", "namespace": "shop"},
             "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
             "status": {"disruptionsAllowed": 0}},
            {"metadata": {"name": "other", "namespace": "shop"},
             "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}}]
    assert blockers(pods, pdbs) == ["pod shop/web-1 (ReplicaSet/web-6d8): PodDisruptionBudget shop/web "
                                    "(minAvailable 1, 0 disruptions allowed)"]


def test_cleanup_scripts_take_paths_as_arguments():
    # no path or name is spliced into the scripts: they come as "$1"... (gpuk8s.shell.Cmd quotes them)
    for script in (LEFTOVERS_SCRIPT, CLEANUP_SCRIPT):
        assert "/etc/cni" not in script and "/var/lib/kubelet" not in script


def test_cli_asks_on_a_terminal_and_a_no_changes_nothing(tmp_path, monkeypatch):
    import gpuk8s.actions.reset as action

    inv = tmp_path / "inv.yaml"
    inv.write_text("cluster: {name: t}\nhosts:\n- {name: w-1, address: 10.0.0.21, roles: [control-plane]}\n")
    asked = []

    def fake_run_reset(inventory, request, options, **kw):   # the action's confirmation point
        asked.append(request.confirm is not None)
        if request.confirm is not None and not request.confirm("w-1 (worker): drain, kubeadm reset -f"):
            raise UsageError("reset cancelled; nothing was changed")
        raise AssertionError("confirmed?")

    monkeypatch.setattr(action, "run_reset", fake_run_reset)
    monkeypatch.setattr("gpuk8s.cli._stdin_is_terminal", lambda: True)
    r = CliRunner().invoke(app, ["reset", "-i", str(inv), "--host", "w-1", "--log-file", str(tmp_path / "l")],
                           input="n\n")
    assert asked == [True] and r.exit_code == 2, r.output
    assert "Reset these hosts?" in r.output and "cancelled" in r.output


def test_kubeadm_warning_that_the_etcd_member_stayed_fails_the_reset_with_the_etcdctl_way():
    inv, op, calls = cluster_up(n_cp=3, n_workers=0)
    # kubeadm's remove-etcd-member only warns and goes on (removeetcdmember.go)
    op.hosts["cp-3"]._reset = lambda r, s: (0, "[reset] Deleting contents of directories", (
        "W0101 [reset] Failed to remove etcd member: etcdserver: unhealthy cluster, please manually remove "
        "this etcd member using etcdctl"))
    with pytest.raises(ActionFailed, match="could not remove its etcd member") as e:
        reset(inv, op, "cp-3")
    assert isinstance(e.value.cause, ClusterStateError) and e.value.exit_code == 5
    assert "etcdctl" in str(e.value) and "member remove" in str(e.value)
    assert "cp-3" in op.cluster.nodes   # the Node stays until the member is gone
