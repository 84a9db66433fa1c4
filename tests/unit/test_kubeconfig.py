"""`gpuk8s kubeconfig` and the kubeconfig code `up` shares: server = endpoint, names, merge
keeping other contexts, mode 0600 from creation, atomic replace, secrets never in output."""

import base64
import os
import stat

import pytest
import yaml

from gpuk8s import kubeconfig as kc
from gpuk8s.actions.kubeconfig import run_kubeconfig
from gpuk8s.errors import ClusterStateError, UsageError
from gpuk8s.paths import ADMIN_CONF, CA_CERT, KUBELET_CONF
from gpuk8s.phases.base import RunOptions
from gpuk8s.phases.kubeconfig import KubeconfigRequest
from gpuk8s.runlog import RunLog
from tests.unit.fake import FakeCluster, opener, probe_output, user_kubeconfig
from tests.unit.test_up import inventory

SERVER = "https://k8s-api.example.com:6443"
OTHER = """apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster: {server: 'https://prod:6443'}
users:
- name: prod-admin
  user: {token: prod-token-0123456789}
contexts:
- name: prod
  context: {cluster: prod, user: prod-admin}
current-context: prod
"""


def cluster_up(n_cp=1, n_workers=1):
    """A running fake cluster: every host joined, the control planes with admin.conf."""
    inv = inventory(n_workers=n_workers, n_cp=n_cp)
    calls: list = []
    probes = {h.name: probe_output(h.name, f"u{i}", f"52:54:00:00:00:{i:02x}", h.address)
              for i, h in enumerate(inv.hosts)}
    cluster = FakeCluster(nodes=[h.name for h in inv.hosts])
    cluster.rbac = {"clusterrole/view": {"kind": "ClusterRole", "metadata": {"name": "view"}},
                    "clusterrole/edit": {"kind": "ClusterRole", "metadata": {"name": "edit"}}}
    op = opener(probes, calls, cluster=cluster)
    for h in inv.hosts:
        fh = op(h)
        fh.state_files += [KUBELET_CONF, CA_CERT] + ([ADMIN_CONF] if h.is_control_plane else [])
    return inv, op, calls


def fetch(inv, op, tmp_path, **kw):
    log = RunLog(tmp_path / "kc.log")
    dry = kw.pop("dry_run", False)
    req = KubeconfigRequest(**kw)
    report = run_kubeconfig(inv, req, RunOptions(dry_run=dry), log=log, open_transport=op)
    log.close()
    return report, (tmp_path / "kc.log").read_text()


def test_admin_kubeconfig_points_at_the_endpoint_under_the_cluster_name(tmp_path):
    inv, op, _ = cluster_up()
    report, _ = fetch(inv, op, tmp_path, output=tmp_path / "out")
    doc = yaml.safe_load((tmp_path / "out").read_text())
    assert doc["clusters"] == [{"name": "t", "cluster": {"server": SERVER, "certificate-authority-data": "QUJD"}}]
    assert doc["current-context"] == "t" and doc["contexts"][0]["context"] == {"cluster": "t", "user": "t-admin"}
    assert report.request.source == "cp-1"


def test_output_file_is_0600_from_creation_and_replaced_atomically(tmp_path, monkeypatch):
    target = tmp_path / "kc"
    modes = []
    real_replace = os.replace

    def spy(src, dst):   # the temporary file is already private when it takes the name
        modes.append(stat.S_IMODE(os.stat(src).st_mode))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    old = os.umask(0)   # a permissive umask must not matter
    try:
        kc.write_private(target, "secret: yes\n")
    finally:
        os.umask(old)
    assert modes == [0o600] and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == "secret: yes\n"
    assert [p.name for p in tmp_path.iterdir()] == ["kc"]   # no temporary left


def test_merge_keeps_other_contexts_and_the_files_mode(tmp_path):
    inv, op, _ = cluster_up()
    target = tmp_path / "config"
    target.write_text(OTHER)
    target.chmod(0o640)
    fetch(inv, op, tmp_path, merge=target)
    doc = yaml.safe_load(target.read_text())
    assert [c["name"] for c in doc["contexts"]] == ["prod", "t"]
    assert [c["name"] for c in doc["clusters"]] == ["prod", "t"]
    assert {u["name"] for u in doc["users"]} == {"prod-admin", "t-admin"}
    assert doc["users"][0]["user"]["token"] == "prod-token-0123456789"
    assert doc["current-context"] == "prod"   # not switched under the user's feet
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    # a second merge replaces the cluster's own entries in place: nothing is duplicated
    again = kc.merge(target.read_text(), kc.normalized(target.read_text(), SERVER, kc.Names.admin("t")))
    assert [c["name"] for c in yaml.safe_load(again)["contexts"]] == ["prod", "t"]


def test_merge_into_an_empty_or_missing_file_sets_the_context(tmp_path):
    new = kc.normalized(user_kubeconfig("bob"), SERVER, kc.Names.for_user("t", "bob"))
    doc = yaml.safe_load(kc.merge("", new))
    assert doc["current-context"] == "bob@t" and doc["clusters"][0]["cluster"]["server"] == SERVER


def test_merge_refuses_a_file_that_is_not_a_kubeconfig():
    with pytest.raises(UsageError, match="not a kubeconfig"):
        kc.merge("clusters: {a: b}\n", OTHER)
    with pytest.raises(UsageError, match="not YAML"):
        kc.merge("clusters: [\n", OTHER)


def test_user_kubeconfig_is_made_by_kubeadm_bound_and_never_logged(tmp_path, capsys):
    inv, op, calls = cluster_up()
    report, log = fetch(inv, op, tmp_path, user="alice", role="edit", expiry_s=3600, output=tmp_path / "a")
    text = (tmp_path / "a").read_text()
    doc = yaml.safe_load(text)
    assert doc["users"][0]["name"] == "alice@t" and doc["clusters"][0]["cluster"]["server"] == SERVER
    ran = [c for _, c, *_ in calls]
    made = [c for c in ran if "kubeadm kubeconfig user" in c]
    assert len(made) == 1 and "--client-name alice" in made[0] and "--validity-period 3600s" in made[0]
    assert any("apply --server-side --force-conflicts -f /etc/gpuk8s/rbac/user-alice.yaml" in c for c in ran)
    binding = next(s for _, c, s, _ in calls if s and "gpuk8s:user:alice" in s)
    assert "name: \"edit\"" in binding and "kind: User" in binding
    assert not any("kubernetes-admin" in c for c in ran)
    key = doc["users"][0]["user"]["client-key-data"]
    pem = base64.b64decode(key).decode()
    for secret in (key, pem.splitlines()[1]):
        assert secret not in log and secret not in capsys.readouterr().out
    assert report.request.expires is not None and report.request.expires.year == 2026


def test_user_binding_is_left_alone_when_current_and_replaced_when_bound_elsewhere(tmp_path):
    inv, op, calls = cluster_up()
    op.cluster.rbac["clusterrolebinding/gpuk8s:user:alice"] = {
        "kind": "ClusterRoleBinding", "roleRef": {"name": "view"}, "subjects": [{"kind": "User", "name": "alice"}]}
    fetch(inv, op, tmp_path, user="alice", role="view", output=tmp_path / "a")
    assert not any("apply" in c or "delete clusterrolebinding" in c for _, c, *_ in calls)
    calls.clear()
    fetch(inv, op, tmp_path, user="alice", role="edit", output=tmp_path / "a")
    ran = [c for _, c, *_ in calls]
    assert any("delete clusterrolebinding gpuk8s:user:alice" in c for c in ran)
    assert any("apply --server-side" in c for c in ran)


def test_unknown_cluster_role_is_refused_before_any_certificate(tmp_path):
    inv, op, calls = cluster_up()
    with pytest.raises(UsageError, match="no such ClusterRole"):
        fetch(inv, op, tmp_path, user="alice", role="nope", output=tmp_path / "a")
    assert not any("kubeadm kubeconfig" in c for _, c, *_ in calls)


def test_dry_run_writes_nothing_and_only_reads(tmp_path):
    inv, op, calls = cluster_up()
    report, _ = fetch(inv, op, tmp_path, user="alice", output=tmp_path / "a", dry_run=True)
    assert not (tmp_path / "a").exists()
    assert [c.description for c in report.plan.changes][-1].startswith("write the kubeconfig")
    assert not any("kubeadm" in c or " apply " in c for _, c, *_ in calls)


@pytest.mark.parametrize("kw, msg", [
    ({"user": "a/b"}, "a user name"), ({"user": "system:admin"}, "cluster's own identity"),
    ({"user": "kubernetes-admin"}, "cluster's own identity"), ({"role": "Bad Role"}, "not a ClusterRole")])
def test_bad_options_are_usage_errors(kw, msg):
    with pytest.raises(UsageError, match=msg):
        KubeconfigRequest(**kw).validate()


@pytest.mark.parametrize("text, seconds", [("24h", 86400), ("90m", 5400), ("30d", 30 * 86400), ("1h30m", 5400)])
def test_durations(text, seconds):
    assert kc.parse_duration(text) == seconds and kc.go_duration(seconds) == f"{seconds}s"


@pytest.mark.parametrize("text", ["", "1y", "24", "10s", "h"])
def test_bad_durations(text):
    with pytest.raises(UsageError):
        kc.parse_duration(text)


def test_no_control_plane_with_admin_conf_names_what_it_tried(tmp_path):
    inv, op, _ = cluster_up(n_cp=2)
    for name in ("cp-1", "cp-2"):
        op.hosts[name].state_files.remove(ADMIN_CONF)
    with pytest.raises(ClusterStateError, match="cp-1: no /etc/kubernetes/admin.conf") as e:
        fetch(inv, op, tmp_path)
    assert "cp-2" in str(e.value)


def test_first_reachable_control_plane_is_used(tmp_path):
    inv = inventory(n_workers=0, n_cp=2)
    probes = {h.name: probe_output(h.name, f"u{i}", f"52:54:00:00:00:{i:02x}", h.address)
              for i, h in enumerate(inv.hosts)}
    op = opener(probes, [], cluster=FakeCluster(nodes=["cp-1", "cp-2"]), refuse=("cp-1",))
    op(inv.hosts[1]).state_files += [ADMIN_CONF]
    report, _ = fetch(inv, op, tmp_path, output=tmp_path / "x")
    assert report.request.source == "cp-2"


def test_secret_values_cover_key_data_and_tokens():
    vals = kc.secret_values(OTHER + "")
    assert "prod-token-0123456789" in vals
    text = user_kubeconfig("bob")
    key = yaml.safe_load(text)["users"][0]["user"]["client-key-data"]
    assert key in kc.secret_values(text)


def test_every_control_plane_unreachable_is_exit_4(tmp_path):
    from gpuk8s.errors import TransportError

    inv = inventory(n_workers=1, n_cp=2)
    probes = {h.name: probe_output(h.name, f"u{i}", f"52:54:00:00:00:{i:02x}", h.address)
              for i, h in enumerate(inv.hosts)}
    op = opener(probes, [], refuse=("cp-1", "cp-2"))
    with pytest.raises(TransportError, match="no control plane answers") as e:
        fetch(inv, op, tmp_path)
    assert e.value.exit_code == 4 and "cp-1: unreachable" in str(e.value) and "cp-2: unreachable" in str(e.value)


def test_up_writes_the_same_kubeconfig_as_the_kubeconfig_command(tmp_path):
    from gpuk8s.actions.up import WriteKubeconfig as UpsPhase
    from gpuk8s.phases.kubeconfig import WriteKubeconfig

    assert UpsPhase is WriteKubeconfig   # `up` writes its kubeconfig with the same phase
    inv, op, _ = cluster_up()
    fetch(inv, op, tmp_path, output=tmp_path / "a")
    from gpuk8s.actions.base import new_context, run
    from gpuk8s.phases.preflight import Connect, GatherFacts

    ctx = new_context(inv, RunOptions(), RunLog(None), open_transport=op)
    run(ctx, [Connect(), GatherFacts(), WriteKubeconfig(tmp_path / "b")])
    assert (tmp_path / "a").read_text() == (tmp_path / "b").read_text()
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o600
