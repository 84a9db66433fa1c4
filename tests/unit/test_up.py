"""`up` against fake transports: dry runs only read, secrets never show, preflight gates changes."""

import shlex

import pytest

from gpuk8s.actions.up import run_up
from gpuk8s.checks import PREFLIGHT
from gpuk8s.errors import PreflightFailed, TransportError
from gpuk8s.inventory import ClusterSpec, HostSpec, Inventory, SSHSettings
from gpuk8s.phases.base import RunOptions as UpOptions
from gpuk8s.kubeconfig import with_server as kubeconfig_for_user
from gpuk8s.phases.cluster import InstallCalico
from gpuk8s.phases.kubeconfig import _COMPARE_AND_READ
from gpuk8s.phases.preflight import blocking_failures
from gpuk8s.render import ClusterSecrets
from gpuk8s.runlog import RunLog
from gpuk8s.shell import Secret
from tests.unit.fake import bare_probe, opener

SECRETS = ClusterSecrets(Secret("abcdef.0123456789abcdef"), Secret("f" * 64))
# The first word of every command a dry run may execute: reads only. `sh` only as the probe
# (`sh -s`) or with a read-only script (`sh -c` comparing the kubeconfig).
READ_ONLY = {"sh", "sha256sum", "cat", "getent", "containerd", "kubectl"}
READ_ONLY_SCRIPTS = (shlex.quote(_COMPARE_AND_READ),)


def assert_only_reads(calls):
    """Every command ran is a read: a read-only binary, the probe, or a read-only sh script."""
    ran = {c.split()[0] for _, c, *_ in calls}
    assert ran <= READ_ONLY, ran - READ_ONLY
    for _, c, *_ in calls:
        if c.startswith("sh "):
            assert c.startswith("sh -s -- ") or c.startswith(tuple("sh -c " + s for s in READ_ONLY_SCRIPTS)), c
        if c.startswith("containerd "):
            assert c.split()[:3] in (["containerd", "config", "default"], ["containerd", "config", "dump"],
                                     ["containerd", "--version"]), c
        if c.startswith("kubectl "):
            assert " get " in c or " wait " in c, c


def inventory(n_workers=2, n_cp=1):
    ssh = SSHSettings(user="root")
    hosts = [HostSpec(name=f"cp-{i + 1}", address=f"10.0.0.{11 + i}", roles=("control-plane",), ssh=ssh)
             for i in range(n_cp)]
    hosts += [HostSpec(name=f"w-{i + 1}", address=f"10.0.0.{21 + i}", roles=("worker",), ssh=ssh)
              for i in range(n_workers)]
    return Inventory(path="inv.yaml", hosts=tuple(hosts),
                     cluster=ClusterSpec(name="t", control_plane_endpoint="k8s-api.example.com:6443"))


def dry_run(inv, tmp_path, **probe_kw):
    calls = []
    probes = {h.name: bare_probe(h.name, i, h.address, **probe_kw) for i, h in enumerate(inv.hosts)}
    log = RunLog(tmp_path / "up.log")
    report = run_up(inv, UpOptions(dry_run=True, kubeconfig_path=tmp_path / "kc"), log=log,
                    open_transport=opener(probes, calls, read_exit=1), secrets=SECRETS)
    log.close()
    return report, calls, (tmp_path / "up.log").read_text()


def test_dry_run_executes_only_read_only_commands(tmp_path):
    report, calls, _ = dry_run(inventory(n_cp=3), tmp_path)
    assert_only_reads(calls)
    assert not [c for _, c, *_ in calls if c.startswith("containerd") and "default" not in c]
    assert all(" get " in c for _, c, *_ in calls if c.startswith("kubectl"))
    assert not (tmp_path / "kc").exists()
    assert report.dry_run and report.plan.changes


def test_dry_run_plans_every_step_per_host(tmp_path):
    report, _, _ = dry_run(inventory(n_cp=3, n_workers=2), tmp_path)
    plan = report.plan
    w = [c.description for c in plan.for_host("w-1")]
    assert "turn swap off now and after reboot (fstab, swap units)" in w and "apply sysctls" in w
    assert "install containerd 2.1 and kubelet, kubeadm, kubectl 1.36.2 (held)" in w
    assert "enable and restart containerd" in w and "enable kubelet" in w
    assert "kubeadm join as worker" in w
    cp1 = [c.description for c in plan.for_host("cp-1")]
    assert "kubeadm init" in cp1 and "apply the Calico Installation" in cp1
    assert cp1.count("upload control-plane certificates (valid 2 h)") == 2  # one per extra control plane
    assert [c.description for c in plan.for_host("cp-2")][-1] == "kubeadm join as control plane"
    files = {f.path: f.mode for c in plan.changes for f in c.files}
    assert files["/etc/gpuk8s/kubeadm-init.yaml"] == 0o600
    assert files["/etc/gpuk8s/kubeadm-join.yaml"] == 0o600
    # joins of control planes come before workers, and control planes join one at a time
    order = [(c.host, c.description) for c in plan.changes if "join as" in c.description]
    assert [h for h, _ in order] == ["cp-2", "cp-3", "w-1", "w-2"] or \
        [h for h, _ in order][:2] == ["cp-2", "cp-3"]


def test_secrets_never_in_plan_or_log(tmp_path):
    report, _, logtext = dry_run(inventory(n_cp=2), tmp_path)
    text = "\n".join([c.description for c in report.plan.changes]
                     + [cmd for c in report.plan.changes for cmd in c.commands]
                     + [f.masked() for c in report.plan.changes for f in c.files])
    for secret in SECRETS.values():
        assert secret not in text and secret not in logtext
    assert "***" in text


def test_preflight_failure_stops_before_any_change(tmp_path):
    inv = inventory(n_workers=1)
    probes = {h.name: bare_probe(h.name, i, h.address) for i, h in enumerate(inv.hosts)}
    probes["w-1"] = probes["w-1"].replace("cgroup2fs", "tmpfs")  # cgroup v1: not fixable by up
    calls = []
    with pytest.raises(PreflightFailed) as e:
        run_up(inv, UpOptions(kubeconfig_path=tmp_path / "kc"), log=RunLog(None),
               open_transport=opener(probes, calls, read_exit=1))
    assert e.value.blocking == {"w-1": ["cgroup-v2"]}
    assert {c.split()[0] for _, c, *_ in calls} == {"sh"}  # only the probe ran


def test_ignore_lets_a_failed_check_through(tmp_path):
    inv = inventory(n_workers=1)
    probes = {h.name: bare_probe(h.name, i, h.address) for i, h in enumerate(inv.hosts)}
    probes["w-1"] = probes["w-1"].replace("cgroup2fs", "tmpfs")
    report = run_up(inv, UpOptions(dry_run=True, ignore_checks=("cgroup-v2",), kubeconfig_path=tmp_path / "kc"),
                    log=RunLog(None), secrets=SECRETS,
                    open_transport=opener(probes, [], read_exit=1))
    assert report.ignored == {"w-1": ["cgroup-v2"]}


def test_unreachable_host_stops_up(tmp_path):
    inv = inventory(n_workers=1)

    probes = {h.name: bare_probe(h.name, 0, h.address) for h in inv.hosts}
    with pytest.raises(TransportError) as e:
        run_up(inv, UpOptions(dry_run=True), log=RunLog(None),
               open_transport=opener(probes, [], refuse={"w-1"}, read_exit=1))
    assert "w-1" in str(e.value)


def test_only_checks_that_up_repairs_let_it_proceed():
    """The checks up repairs never block; any other failure does."""
    class H:
        def __init__(self, ids):
            self.name, self.error, self.error_kind = "h", None, None
            self.failed = [type("C", (), {"id": i})() for i in ids]

    class R:
        def __init__(self, ids):
            self.hosts = [H(ids)]

    repaired = PREFLIGHT.repaired_by_up
    assert repaired and "helm" in repaired and "swap-off" in repaired and "os-supported" not in repaired
    assert blocking_failures(R(sorted(repaired)), (), repaired) == ({}, {})
    assert blocking_failures(R(["swap-off", "os-supported", "cgroup-v2"]), ("cgroup-v2",), repaired) == \
        ({"h": ["os-supported"]}, {"h": ["cgroup-v2"]})


def test_runlog_redacts_known_and_kubeadm_printed_secrets(tmp_path):
    log = RunLog(tmp_path / "l")
    log.add_secret(SECRETS.certificate_key)
    text = ("kubeadm join k8s:6443 --token zyxwvu.0123456789abcdef --discovery-token-ca-cert-hash sha256:ab "
            "--control-plane --certificate-key " + "f" * 64 + "\nclient-key-data: LS0tLS1CRUdJTi\n")
    red = log.redact(text)
    assert "0123456789abcdef" not in red and "f" * 64 not in red and "LS0tLS1CRUdJTi" not in red
    assert "zyxwvu.***" in red


def test_kubeconfig_points_at_the_endpoint():
    admin = ("apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: https://10.0.0.11:6443\n"
             "    certificate-authority-data: QUJD\nusers: []\ncontexts: []\n")
    out = kubeconfig_for_user(admin, "https://k8s-api.example.com:6443")
    assert "server: https://k8s-api.example.com:6443" in out and "QUJD" in out


def test_version_patterns_never_overmatch():
    from gpuk8s.phases.prepare import version_pattern
    assert version_pattern("2.1", "-") == "2.1.*"
    assert version_pattern("2.1.4", "-") == "2.1.4-*"


def test_runlog_leaves_ordinary_text_alone():
    log = RunLog(None)
    assert log.redact("phase delete join token: 1 changes in 0.2s") == "phase delete join token: 1 changes in 0.2s"
    assert log.redact("users:\n- name: admin\n  user:\n    token: abc.def\n") .endswith("token: ***\n")


def test_progress_reports_every_host_of_a_parallel_phase(tmp_path):
    events = []

    class Recorder:
        def start(self, title, total):
            events.append(("start", title, total))

        def done(self, host, ok):
            events.append(("done", host, ok))

        def stop(self):
            events.append(("stop",))

    inv = inventory(n_workers=2)
    probes = {h.name: bare_probe(h.name, i, h.address) for i, h in enumerate(inv.hosts)}
    run_up(inv, UpOptions(dry_run=True, kubeconfig_path=tmp_path / "kc"), log=RunLog(None), secrets=SECRETS,
           progress=Recorder(), open_transport=opener(probes, [], read_exit=1))
    i = events.index(("start", "prepare hosts", 3))
    assert sorted(e[1] for e in events[i + 1:i + 4]) == ["cp-1", "w-1", "w-2"] and events[i + 4] == ("stop",)
    assert ("start", "join workers", 2) in events


def wet_up(inv, tmp_path, calls, fake=None, **kw):
    probes = {h.name: bare_probe(h.name, i, h.address) for i, h in enumerate(inv.hosts)}
    fake = fake or opener(probes, calls)
    opts = UpOptions(kubeconfig_path=tmp_path / "kc", poll_interval=0, wait_timeout=5, **kw)
    return run_up(inv, opts, log=RunLog(None), open_transport=fake, secrets=SECRETS), fake


def _executed_changes(report, calls):
    """(host, command, stdin) of every planned change, as the gate runs it."""
    out = []
    for c in report.plan.changes:
        if c.host == "local":
            continue
        cmd, stdin = c.remote()
        out.append((c.host, cmd.render(), stdin))
    return out


def test_wet_up_executes_exactly_the_planned_changes(tmp_path):
    calls = []
    report, fake = wet_up(inventory(n_cp=2, n_workers=2), tmp_path, calls)
    planned = _executed_changes(report, calls)
    assert planned and not report.failed_hosts
    changes = [(h, c, stdin) for h, c, stdin, _ in calls if (h, c, stdin) in planned]
    assert sorted(changes) == sorted(planned)          # each planned change ran exactly once
    for host in {h for h, *_ in planned}:              # ... in the plan's order on each host
        assert [c for c in changes if c[0] == host] == [c for c in planned if c[0] == host]
    others = [(h, c, stdin, sudo) for h, c, stdin, sudo in calls if (h, c, stdin) not in planned]
    assert_only_reads(others)                          # everything else was a read
    assert (tmp_path / "kc").exists() and any("token delete" in c for _, c, *_ in calls)
    assert sorted(fake.cluster.nodes) == ["cp-1", "cp-2", "w-1", "w-2"]


def test_dry_run_on_a_bootstrapped_cluster_reads_it_and_plans_no_kubeadm(tmp_path):
    calls = []
    inv = inventory(n_cp=1, n_workers=1)
    _, fake = wet_up(inv, tmp_path, calls)
    calls.clear()
    report = run_up(inv, UpOptions(dry_run=True, kubeconfig_path=tmp_path / "kc2"), log=RunLog(None),
                    open_transport=fake, secrets=SECRETS)
    assert_only_reads(calls)
    described = [c.description for c in report.plan.changes]
    assert not [d for d in described if d.startswith(("kubeadm", "upload", "create")) or "Calico" in d], described
    assert any(c.startswith("kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes,") for _, c, *_ in calls)


@pytest.mark.parametrize("failure", [RuntimeError("bug"), KeyboardInterrupt()])
def test_cleanups_run_after_an_internal_error_or_an_interrupt(tmp_path, monkeypatch, failure):
    def boom(self, ctx):
        raise failure

    monkeypatch.setattr(InstallCalico, "run", boom)
    calls = []
    from gpuk8s.errors import ActionFailed
    # an internal error propagates as itself; an interrupt is reported (exit 130) with the results so far
    with pytest.raises(RuntimeError if isinstance(failure, RuntimeError) else ActionFailed) as e:
        wet_up(inventory(n_cp=1, n_workers=1), tmp_path, calls)
    if isinstance(failure, KeyboardInterrupt):
        assert e.value.exit_code == 130
    deleted = [c for _, c, *_ in calls if c.startswith("kubeadm token delete")]
    assert deleted == [f"kubeadm token delete {SECRETS.token.reveal().split('.')[0]}"]


def test_a_failed_phase_reports_partial_results_and_still_cleans_up(tmp_path, monkeypatch):
    from gpuk8s.errors import ActionFailed, ClusterStateError

    def fail(self, ctx):
        raise ClusterStateError("calico refused")

    monkeypatch.setattr(InstallCalico, "run", fail)
    calls = []
    with pytest.raises(ActionFailed) as e:
        wet_up(inventory(n_cp=1, n_workers=1), tmp_path, calls)
    names = [p.name for p in e.value.report.phases]
    assert "install Calico" in names and "join workers" not in names
    assert names[-2:] == ["install Calico", "delete join token"]   # the no-op "disconnect" is not listed
    assert e.value.report.error == "calico refused" and e.value.exit_code == 5


def _prepare_fails_on(monkeypatch, name):
    import gpuk8s.phases.prepare as prepare

    real = prepare.prepare_host

    def prepare_host(ctx, host):
        if host.name == name:
            raise TransportError("lost", f"{name}: the host stopped answering during `swapoff -a`")
        return real(ctx, host)

    monkeypatch.setattr(prepare, "prepare_host", prepare_host)


def test_a_worker_failing_in_prepare_is_marked_and_the_others_join(tmp_path, monkeypatch):
    """One worker's failed preparation never stops the fleet: it is skipped from then on, the
    rest of the cluster comes up, and the report names the host and the phase."""
    _prepare_fails_on(monkeypatch, "w-2")
    calls = []
    report, fake = wet_up(inventory(n_cp=1, n_workers=3), tmp_path, calls)
    assert sorted(fake.cluster.nodes) == ["cp-1", "w-1", "w-3"]
    assert list(report.failed_hosts) == ["w-2"]
    assert report.failed_hosts["w-2"].startswith("prepare hosts: w-2: the host stopped answering")
    assert not [c for h, c, *_ in calls if h == "w-2" and "kubeadm" in c]
    prepare = next(p for p in report.phases if p.name == "prepare hosts")
    assert any(n.startswith("w-2: prepare hosts:") for n in prepare.notes), prepare.notes


def test_a_control_plane_failing_in_prepare_stops_up(tmp_path, monkeypatch):
    from gpuk8s.errors import ActionFailed

    _prepare_fails_on(monkeypatch, "cp-1")
    calls = []
    with pytest.raises(ActionFailed) as e:
        wet_up(inventory(n_cp=1, n_workers=2), tmp_path, calls)
    assert e.value.exit_code == 5 and "cp-1" in e.value.report.error
    assert not [c for _, c, *_ in calls if " kubeadm init " in c or " kubeadm join " in c]
