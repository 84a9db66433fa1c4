"""`up` against fake transports: dry runs only read, secrets never show, preflight gates changes."""

import re

import pytest

from gpuk8s.errors import TransportError
from gpuk8s.inventory import ClusterSpec, HostSpec, Inventory, SSHSettings
from gpuk8s.phases.base import UpOptions
from gpuk8s.phases.cluster import kubeconfig_for_user
from gpuk8s.render import ClusterSecrets
from gpuk8s.runlog import RunLog
from gpuk8s.shell import Secret
from gpuk8s.transport.base import Result
from gpuk8s.up import FIXED_BY_UP, PreflightFailed, blocking_failures, run_up
from tests.unit.test_preflight import probe_output

SECRETS = ClusterSecrets(Secret("abcdef.0123456789abcdef"), Secret("f" * 64))
# The first word of every command a dry run may execute: reads only.
READ_ONLY = {"sh", "sha256sum", "cat", "cmp", "getent", "containerd", "kubectl"}


def bare_probe(name, i, address, swap=True):
    out = probe_output(name, f"uuid-{i}", f"52:54:00:00:01:{i:02x}", address)
    # a bare host: no containerd, no Kubernetes tools, swap on, ip_forward off
    out = out.replace("containerd=/usr/sbin/containerd\n", "").replace("helm=/usr/sbin/helm", "")
    out = re.sub(r"@@gpuk8s:containerd_version\n[^\n]*\n", "@@gpuk8s:containerd_version\n\n", out)
    out = re.sub(r"@@gpuk8s:containerd_config\n(.|\n)*?\n\n@@", "@@gpuk8s:containerd_config\n\n@@", out)
    out = out.replace("net/ipv4/ip_forward=1", "net/ipv4/ip_forward=0")
    out = out.replace("\n@@gpuk8s:binaries\n", "\n@@gpuk8s:binaries\napt-get=/usr/bin/apt-get\n")
    if swap:
        out = out.replace("Filename\tType\tSize\tUsed\tPriority",
                          "Filename\tType\tSize\tUsed\tPriority\n/swap.img file 2097148 0 -2")
    return out


class RecordingTransport:
    def __init__(self, host, probe, log):
        self.host_name, self.probe, self.log = host.name, probe, log
        self.privileged = True

    def run(self, cmd, *, stdin=None, timeout=None, sudo=True):
        rendered = cmd.render()
        self.log.append((self.host_name, rendered, stdin))
        if rendered.startswith("sh -s --"):
            return Result(cmd.masked(), 0, self.probe, "", 0.0)
        return Result(cmd.masked(), 1, "", "not found", 0.0)

    def close(self):
        pass


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
                    open_transport=lambda h, **kw: RecordingTransport(h, probes[h.name], calls),
                    secrets=SECRETS)
    log.close()
    return report, calls, (tmp_path / "up.log").read_text()


def test_dry_run_executes_only_read_only_commands(tmp_path):
    report, calls, _ = dry_run(inventory(n_cp=3), tmp_path)
    ran = {c.split()[0] for _, c, _ in calls}
    assert ran <= READ_ONLY, ran - READ_ONLY
    assert not [c for _, c, _ in calls if c.startswith("containerd") and "default" not in c]
    assert all(" get " in c for _, c, _ in calls if c.startswith("kubectl"))
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
    files = {p: mode for c in plan.changes for p, _, mode in c.files}
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
                     + [content for c in report.plan.changes for _, content, _ in c.files])
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
               open_transport=lambda h, **kw: RecordingTransport(h, probes[h.name], calls))
    assert e.value.blocking == {"w-1": ["cgroup-v2"]}
    assert {c.split()[0] for _, c, _ in calls} == {"sh"}  # only the probe ran


def test_ignore_lets_a_failed_check_through(tmp_path):
    inv = inventory(n_workers=1)
    probes = {h.name: bare_probe(h.name, i, h.address) for i, h in enumerate(inv.hosts)}
    probes["w-1"] = probes["w-1"].replace("cgroup2fs", "tmpfs")
    report = run_up(inv, UpOptions(dry_run=True, ignore_checks=("cgroup-v2",), kubeconfig_path=tmp_path / "kc"),
                    log=RunLog(None), secrets=SECRETS,
                    open_transport=lambda h, **kw: RecordingTransport(h, probes[h.name], []))
    assert report.ignored == {"w-1": ["cgroup-v2"]}


def test_unreachable_host_stops_up(tmp_path):
    inv = inventory(n_workers=1)

    def opener(h, **kw):
        if h.name == "w-1":
            raise TransportError("refused", "w-1: connection refused")
        return RecordingTransport(h, bare_probe(h.name, 0, h.address), [])

    with pytest.raises(TransportError) as e:
        run_up(inv, UpOptions(dry_run=True), log=RunLog(None), open_transport=opener)
    assert "w-1" in str(e.value)


def test_fixable_checks_do_not_block():
    class H:
        def __init__(self, ids):
            self.name, self.error, self.error_kind = "h", None, None
            self.failed = [type("C", (), {"id": i})() for i in ids]

    class R:
        hosts = [H(sorted(FIXED_BY_UP))]

    assert blocking_failures(R(), ()) == ({}, {})


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
           progress=Recorder(), open_transport=lambda h, **kw: RecordingTransport(h, probes[h.name], []))
    assert events[0] == ("start", "prepare hosts", 3)
    assert sorted(e[1] for e in events[1:4]) == ["cp-1", "w-1", "w-2"] and events[4] == ("stop",)
    assert ("start", "join workers", 2) in events
