"""verify's host checks (VERIFY_HOSTS, VerifyHosts) against the shared fake, through testinfra.

Each check's pass / fail / warn / skip; odd output; a lost host and a hanging command; and the
round trips: one batch per host, every command the checks send answered from it.
"""

from __future__ import annotations

import dataclasses
import shlex

import pytest

from gpuk8s.actions.base import new_context, run
from gpuk8s.checks.verify_host import VERIFY_HOSTS, _yum_excludes
from gpuk8s.facts.runtime import has_nvidia_runtime, parse_containerd_dump
from gpuk8s.inventory import GPUSpec
from gpuk8s.phases.base import RunOptions
from gpuk8s.phases.preflight import Connect, GatherFacts
from gpuk8s.phases.verify import VerifyHosts
from gpuk8s.runlog import RunLog
from gpuk8s.testinfra_backend import _BATCH, parse_batch
from tests.unit.fake import CONTAINERD_V3, OS_UBUNTU, FakeNode, opener
from tests.unit.test_preflight import make_inventory, outputs_for

DROP_IN = "/etc/containerd/conf.d/99-nvidia.toml"
XID = ("Aug 20 10:00:00 gpu-1 kernel: NVRM: Xid (PCI:0000:18:00): 79, pid='<unknown>', "
       "name=<unknown>, GPU has fallen off the bus.")
ROCKY = ('NAME="Rocky Linux"\nVERSION_ID="9.4"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
         'PRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"\n')
K8S_REPO = ("[kubernetes]\nname=Kubernetes\nbaseurl=https://pkgs.k8s.io/core:/stable:/v1.36/rpm/\n"
            "enabled=1\nexclude=kubelet kubeadm kubectl cri-tools kubernetes-cni\n")


def _nvidia_dump() -> str:
    # TOML: `imports` must come before the tables; CONTAINERD_V3 starts with `version = 3`.
    head, rest = CONTAINERD_V3.split("\n", 1)
    return (f'{head}\nimports = ["/etc/containerd/config.toml", "{DROP_IN}"]\n{rest}'
            "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.nvidia]\n"
            "  runtime_type = 'io.containerd.runc.v2'\n"
            "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.nvidia.options]\n"
            "  SystemdCgroup = true\n")


def verify(names=("cp-1", "gpu-1"), gpu_hosts=("gpu-1",), *, driver="host", setup=None, probes=None,
           refuse=(), **kw):
    """Connect, GatherFacts, VerifyHosts on fake hosts; setup(name, FakeNode) prepares each one.
    Returns ({host: {id: CheckResult}}, the context, the opener)."""
    inv = make_inventory(*names)
    inv = dataclasses.replace(inv, gpu=GPUSpec(driver=driver))
    outs = probes or outputs_for(inv, set(gpu_hosts))
    op = opener(outs, [], refuse=refuse, **kw)
    real_open = op

    def open_transport(host, accept_new_host_keys=False):
        t = real_open(host, accept_new_host_keys)
        if not getattr(t, "_prepared", False):
            t._prepared = True
            if host.name in gpu_hosts:
                t.node.smi_gpus = 2
                t.node.containerd_dump = _nvidia_dump()
            if setup is not None:
                setup(host.name, t.node)
        return t

    open_transport.hosts = op.hosts  # type: ignore[attr-defined]
    ctx = new_context(inv, RunOptions(), RunLog(None), open_transport=open_transport)
    run(ctx, [Connect(), GatherFacts(), VerifyHosts()])
    out = {h: {r.id: r for r in rs} for h, rs in ctx.state.verify_hosts.items()}
    return out, ctx, op


def one(setup, host="gpu-1", **kw):
    return verify(setup=lambda n, node: setup(node) if n == host else None, **kw)[0][host]


# --------------------------------------------------------------------------- healthy, round trips

def test_healthy_nodes_pass_in_one_batch_each():
    out, ctx, op = verify()
    assert list(out) == ["cp-1", "gpu-1"]
    for name, results in out.items():
        assert list(results) == list(VERIFY_HOSTS.ids)
        assert {i: r.status for i, r in results.items() if r.status not in ("pass", "skip")} == {}
    assert [i for i, r in out["cp-1"].items() if r.status == "skip"] == ["nvidia-runtime", "nvidia-smi", "xid-errors"]
    assert all(r.status == "pass" for r in out["gpu-1"].values())
    for name, host in op.hosts.items():
        assert len(host.node.batches) == 1          # one round trip for the checks...
        batched = host.node.batches[0]
        assert host.node.seen == batched            # ...and nothing sent on its own
    # the probe and the batch: two commands per host in all
    assert [h for h, *_ in op.hosts["gpu-1"].calls].count("gpu-1") == 2


def test_batch_is_a_fixed_script_with_the_commands_as_arguments():
    out, ctx, op = verify(names=("cp-1",), gpu_hosts=())
    rendered = [c for _, c, _, _ in op.hosts["cp-1"].calls if "gpuk8s-testinfra" in c][0]
    words = shlex.split(rendered)
    assert words[:3] == ["sh", "-c", _BATCH] and words[3] == "gpuk8s-testinfra"
    assert "systemctl show containerd" in words[4:]


# --------------------------------------------------------------------------- services

@pytest.mark.parametrize("unit,state,words", [
    ("kubelet", ("inactive", "dead", "enabled"), ["kubelet is inactive (dead)"]),
    ("kubelet", ("activating", "auto-restart", "enabled"), ["kubelet is activating (auto-restart)"]),
    ("containerd", ("active", "running", "disabled"), ["not enabled at boot"]),
    ("containerd", ("inactive", "dead", "masked"), ["masked"]),
])
def test_service_not_running_or_not_enabled_fails(unit, state, words):
    r = one(lambda n: n.units.__setitem__(unit, state))[f"{unit}-running"]
    assert r.status == "fail" and all(w in r.message for w in words)
    assert f"systemctl enable --now {unit}" in r.fix
    if state[2] == "masked":
        assert "systemctl unmask containerd" in r.fix


def test_service_not_installed_fails():
    r = one(lambda n: n.units.pop("kubelet"))["kubelet-running"]
    assert r.status == "fail" and "not installed" in r.message


# --------------------------------------------------------------------------- kernel

def test_active_swap_fails_and_swap_in_fstab_warns():
    r = one(lambda n: n.swaps.append("/dev/dm-1"))["swap-off"]
    assert r.status == "fail" and "/dev/dm-1" in r.message and "swapoff -a" in r.fix
    r = one(lambda n: setattr(n, "fstab", "UUID=a / ext4 defaults 0 1\n/swap.img none swap sw 0 0\n"))["swap-off"]
    assert r.status == "warn" and "/swap.img" in r.message
    r = one(lambda n: setattr(n, "fstab", "#/swap.img none swap sw 0 0\n"))["swap-off"]
    assert r.status == "pass"


def test_missing_kernel_module_fails():
    r = one(lambda n: n.modules.discard("br_netfilter"))["kernel-modules"]
    assert r.status == "fail" and r.message == "not loaded: br_netfilter" and "modprobe br_netfilter" in r.fix


def test_sysctl_off_or_absent_fails():
    r = one(lambda n: n.sysctls.__setitem__("net.ipv4.ip_forward", "0"))["sysctls"]
    assert r.status == "fail" and "net.ipv4.ip_forward = 0 (want 1)" in r.message
    assert "sysctl --system" in r.fix
    r = one(lambda n: n.sysctls.pop("net.bridge.bridge-nf-call-iptables"))["sysctls"]
    assert r.status == "fail" and "(absent)" in r.message and "modprobe br_netfilter" in r.fix


# --------------------------------------------------------------------------- containerd

def test_cgroupfs_in_running_config_fails():
    dump = CONTAINERD_V3.replace("SystemdCgroup = true", "SystemdCgroup = false")
    r = one(lambda n: setattr(n, "containerd_dump", dump), host="cp-1")["containerd-cgroup-driver"]
    assert r.status == "fail" and "runc" in r.message and "io.containerd.cri.v1.runtime" in r.fix


def test_nvidia_runtime_without_systemd_cgroup_fails_the_cgroup_check():
    r = one(lambda n: setattr(n, "containerd_dump", _nvidia_dump().replace(
        "  SystemdCgroup = true\n", "", 2)))["containerd-cgroup-driver"]
    assert r.status == "fail"


def test_containerd_refusing_its_config_fails_both_containerd_checks():
    out = one(lambda n: setattr(n, "containerd_dump_rc", 1))
    for i in ("containerd-cgroup-driver", "nvidia-runtime"):
        assert out[i].status == "fail" and "exited 1" in out[i].message


def test_dump_that_is_not_toml_fails_with_the_reason():
    r = one(lambda n: setattr(n, "containerd_dump", "[[[ nonsense"))["containerd-cgroup-driver"]
    assert r.status == "fail" and "not TOML" in r.message


def test_nvidia_runtime_missing_from_gpu_node_fails():
    r = one(lambda n: setattr(n, "containerd_dump", CONTAINERD_V3))["nvidia-runtime"]
    assert r.status == "fail" and DROP_IN in r.message and "nvidia-container-toolkit" in r.fix


def test_nvidia_runtime_not_from_the_drop_in_warns():
    dump = _nvidia_dump().replace(f', "{DROP_IN}"', "")
    r = one(lambda n: setattr(n, "containerd_dump", dump))["nvidia-runtime"]
    assert r.status == "warn"


def test_running_config_parser_finds_runtimes_per_version():
    v2 = ("version = 2\n[plugins.'io.containerd.grpc.v1.cri'.containerd]\ndefault_runtime_name = 'nvidia'\n"
          "[plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.nvidia.options]\nSystemdCgroup = true\n")
    d = parse_containerd_dump(v2)
    assert d.runtime_plugin == "io.containerd.grpc.v1.cri" and d.default_runtime == "nvidia"
    assert d.systemd_cgroup("nvidia") is True and d.systemd_cgroup("runc") is None
    assert has_nvidia_runtime(v2) and not has_nvidia_runtime(CONTAINERD_V3)
    assert parse_containerd_dump("").parse_error and parse_containerd_dump("version = 'x'").parse_error


# --------------------------------------------------------------------------- packages

def test_kube_packages_wrong_version_or_unheld_fail():
    def setup(n):
        n.packages["kubelet"] = ("install", "1.35.6-1.1")
        n.packages["kubectl"] = ("install", "1.36.2-1.1")
    r = one(setup)["kube-packages"]
    assert r.status == "fail"
    assert "not at 1.36.2: kubelet 1.35.6-1.1" in r.message and "not held: kubelet, kubectl" in r.message
    assert "kubelet=1.36.2-1.1" in r.fix and "apt-mark hold kubelet kubeadm kubectl" in r.fix


def test_kube_package_missing_fails():
    r = one(lambda n: n.packages.pop("kubeadm"))["kube-packages"]
    assert r.status == "fail" and "not installed: kubeadm" in r.message


def _rocky(probes):
    return {n: p.replace(OS_UBUNTU, ROCKY) for n, p in probes.items()}


def test_rhel_packages_from_rpm_and_holds_from_the_repository_excludes():
    inv = make_inventory("cp-1")
    probes = _rocky(outputs_for(inv))

    class RPM(FakeNode):
        def answer(self, cmd, host):
            if cmd.startswith("rpm -q --queryformat"):
                self.seen.append(cmd)
                fmt, names = shlex.split(cmd)[3], shlex.split(cmd)[4:]
                return 0, "".join(fmt.replace("%{NAME}", p).replace("%{VERSION}", "1.36.2")
                                  .replace("\\n", "\n") for p in names), ""
            return super().answer(cmd, host)

    def setup(name, node):
        node.__class__ = RPM
        node.files["/etc/yum.repos.d/kubernetes.repo"] = K8S_REPO

    res, _, op = verify(names=("cp-1",), gpu_hosts=(), probes=probes, setup=setup)
    out = res["cp-1"]
    assert out["kube-packages"].status == "pass", out["kube-packages"].message
    node = op.hosts["cp-1"].node
    assert any(c.startswith("rpm -q") for c in node.batches[0]) and node.seen == node.batches[0]
    out = verify(names=("cp-1",), gpu_hosts=(), probes=probes,
                 setup=lambda n, node: (setattr(node, "__class__", RPM)))[0]["cp-1"]
    r = out["kube-packages"]
    assert r.status == "fail" and "not held" in r.message and "exclude=" in r.fix


def test_yum_excludes_read_from_the_kubernetes_section_only():
    text = "[other]\nexclude=kubelet\n[kubernetes]\nexclude = kubeadm, kubectl\n"
    assert _yum_excludes(text) == ["kubeadm", "kubectl"]


# --------------------------------------------------------------------------- GPUs

def test_nvidia_smi_missing_gpus_fails():
    r = one(lambda n: setattr(n, "smi_gpus", 1))["nvidia-smi"]
    assert r.status == "fail" and "lists 1 GPU(s), 2 are on the PCI bus" in r.message


def test_nvidia_smi_error_fails_with_its_output():
    r = one(lambda n: setattr(n, "smi_failure", (18, "Failed to initialize NVML: Driver/library version mismatch\n")))
    assert r["nvidia-smi"].status == "fail" and "exited 18: Failed to initialize NVML" in r["nvidia-smi"].message


def test_nvidia_smi_skipped_where_the_operator_runs_the_driver():
    out, _, op = verify(driver="container")
    assert out["gpu-1"]["nvidia-smi"].status == "skip"
    assert not any(c.startswith("nvidia-smi") for c in op.hosts["gpu-1"].node.seen)


def test_xid_lines_fail_with_codes_and_escaped_lines():
    lines = [XID, XID.replace("): 79,", "): 48,") + "\x1b[2J", "kernel: unrelated"] + [XID] * 6
    r = one(lambda n: setattr(n, "kernel_log", lines))["xid-errors"]
    assert r.status == "fail" and r.message.startswith("8 NVIDIA Xid error(s) since boot (Xid 48, 79)")
    assert "\x1b" not in r.message and "\\x1b[2J" in r.message
    assert XID in r.message and "... 3 more" in r.message
    assert "kubectl drain gpu-1" in r.fix


def test_unreadable_kernel_log_warns():
    r = one(lambda n: setattr(n, "kernel_log_readable", False))["xid-errors"]
    assert r.status == "warn"


# --------------------------------------------------------------------------- failures of the host

def test_lost_host_fails_every_check_and_never_the_others():
    out, ctx, op = verify(setup=lambda n, node: setattr(node, "lose", ("test -d",)) if n == "gpu-1" else None)
    assert all(r.status == "fail" and "could not run on the host" in r.message for r in out["gpu-1"].values())
    assert "gpuk8s preflight --host gpu-1" in out["gpu-1"]["kubelet-running"].fix
    assert all(r.status in ("pass", "skip") for r in out["cp-1"].values())
    # once lost, nothing more was sent there
    assert len(op.hosts["gpu-1"].node.seen) == 1


def test_hanging_command_fails_its_check_only():
    out, ctx, op = verify(setup=lambda n, node: setattr(node, "hang", ("nvidia-smi",)) if n == "gpu-1" else None)
    g = out["gpu-1"]
    assert g["nvidia-smi"].status == "fail" and "did not finish" in g["nvidia-smi"].message
    assert all(r.status == "pass" for i, r in g.items() if i != "nvidia-smi")
    # the batch timed out, then each command ran on its own
    assert op.hosts["gpu-1"].node.seen.count("containerd config dump") == 2


def test_unreachable_host_is_absent_and_the_others_checked():
    out, ctx, op = verify(refuse={"gpu-1"})
    assert list(out) == ["cp-1"] and ctx.host("gpu-1").error is not None


def test_odd_systemctl_output_is_a_failure_not_a_crash():
    class Odd(FakeNode):
        def answer(self, cmd, host):
            if cmd.startswith("systemctl show"):
                self.seen.append(cmd)
                return 0, "garbage without equals\n", ""
            return super().answer(cmd, host)

    r = verify(setup=lambda n, node: setattr(node, "__class__", Odd))[0]["cp-1"]
    assert r["containerd-running"].status == "fail" and r["kubelet-running"].status == "fail"
    assert r["swap-off"].status == "pass"


def test_batch_parser_refuses_partial_or_odd_answers():
    m = "@@gpuk8s-0123"
    good = f"{m} 1 0\nhi\n\n{m} stderr\n\n{m} 2 3\nno newline\n{m} stderr\noops\n\n{m} end 2\n"
    assert parse_batch(good, m, 2) == [(0, "hi\n", ""), (3, "no newline", "oops\n")]
    assert parse_batch(good, m, 3) is None                                    # one missing
    assert parse_batch(good.replace(f"{m} end 2\n", ""), m, 2) is None        # cut short
    assert parse_batch(good.replace(f"{m} 2 3", f"{m} 2 x"), m, 2) is None     # odd status
    assert parse_batch(good.replace("hi", f"hi {m} 9 0"), m, 2) is None        # the marker echoed
    assert parse_batch(good + "trailing", m, 2) is None
    assert parse_batch(f"{m} end 0\n", m, 0) == []


def test_odd_batch_answer_falls_back_to_one_command_at_a_time():
    out, ctx, op = verify(setup=lambda n, node: setattr(node, "batch_reply", "hello\n") if n == "cp-1" else None)
    node = op.hosts["cp-1"].node
    assert len(node.batches) == 1 and node.seen == node.batches[0]   # each sent again, one by one
    assert all(r.status in ("pass", "skip") for r in out["cp-1"].values())


def test_command_failing_where_testinfra_wants_success_is_a_readable_failure():
    class NoBus(FakeNode):
        def answer(self, cmd, host):
            if cmd.startswith("systemctl show"):
                self.seen.append(cmd)
                return 1, "", "Failed to connect to bus: No such file or directory\n"
            return super().answer(cmd, host)

    r = verify(setup=lambda n, node: setattr(node, "__class__", NoBus))[0]["cp-1"]["kubelet-running"]
    assert r.status == "fail" and r.message.startswith("unexpected answer from the host: Unexpected exit code 1")
    assert "systemctl show kubelet" in r.message and "backend=" not in r.message


def test_batch_script_frames_real_shell_output():
    """The batch script itself, in a real POSIX shell: concurrent commands, each answer intact
    (no trailing newline, empty output, exit codes, an `exit` inside a command, stderr)."""
    import subprocess

    cmds = ["echo hi; echo err >&2; exit 3", "printf 'no newline'", "cat -- /nonexistent-gpuk8s",
            "exit 0", "printf '\\n\\n'", "sleep 0; echo late"]
    marker = "@@gpuk8s-cafe"
    r = subprocess.run(["sh", "-c", _BATCH, "gpuk8s-testinfra", marker, *cmds],
                       input="", capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    got = parse_batch(r.stdout, marker, len(cmds))
    assert got is not None
    assert got[0] == (3, "hi\n", "err\n") and got[1] == (0, "no newline", "")
    assert got[2][0] == 1 and "nonexistent-gpuk8s" in got[2][2]
    assert got[3] == (0, "", "") and got[4] == (0, "\n\n", "") and got[5] == (0, "late\n", "")


def test_the_drop_in_verify_checks_is_the_one_up_configures():
    from gpuk8s import paths
    from gpuk8s.render import gpu

    assert paths.CONTAINERD_DROP_IN == gpu.CONTAINERD_DROP_IN
    assert paths.CONTAINERD_DROP_IN.startswith(gpu.CONTAINERD_DROP_IN_DIR + "/")


def test_auto_driver_mode_is_host_only_with_a_loaded_driver_and_nvidia_smi_on_the_host():
    out = verify(driver="auto")[0]
    assert out["gpu-1"]["nvidia-smi"].status == "skip"   # the fake's probe: no driver loaded
    inv = make_inventory("cp-1", "gpu-1")
    probes = outputs_for(inv, {"gpu-1"})
    probes["gpu-1"] = probes["gpu-1"].replace(
        "\n@@gpuk8s:end\n", "\n@@gpuk8s:nvidia_version\nNVRM version: NVIDIA UNIX Open Kernel Module for x86_64"
        "  595.91.07  Release Build\n\n@@gpuk8s:nvidia_smi\n0, 00000000:18:00.0, NVIDIA L4, 595.91.07, "
        "23034 MiB, [N/A], 0x27B810DE, [N/A]\n1, 00000000:19:00.0, NVIDIA L4, 595.91.07, 23034 MiB, "
        "[N/A], 0x27B810DE, [N/A]\nrc=0\n\n@@gpuk8s:end\n")
    res, ctx, _ = verify(driver="auto", probes=probes)
    assert ctx.host("gpu-1").facts.nvidia_smi_ok is True
    assert res["gpu-1"]["nvidia-smi"].status == "pass"


def test_sudo_wanting_a_password_fails_every_check_with_the_reason_in_one_round_trip():
    out, ctx, op = verify(sudo_pw={"gpu-1"})
    g = out["gpu-1"]
    assert all(r.status == "fail" and "sudo asks for a password" in r.message for r in g.values())
    assert ctx.host("gpu-1").warning   # the probe ran unprivileged
    assert len([c for h, c, _, _ in op.hosts["gpu-1"].calls if h == "gpu-1" and "gpuk8s-testinfra" in c]) == 1
    assert all(r.status in ("pass", "skip") for r in out["cp-1"].values())


def test_package_database_that_cannot_be_queried_fails_with_a_fix():
    class NoDpkg(FakeNode):
        def answer(self, cmd, host):
            if cmd.startswith("dpkg-query"):
                self.seen.append(cmd)
                return 2, "", "dpkg-query: error: parsing file '/var/lib/dpkg/status' near line 7\n"
            return super().answer(cmd, host)

    r = verify(setup=lambda n, node: setattr(node, "__class__", NoDpkg))[0]["cp-1"]["kube-packages"]
    assert r.status == "fail" and "parsing file '/var/lib/dpkg/status'" in r.message
    assert r.fix.startswith("dpkg-query -W kubelet kubeadm kubectl")
