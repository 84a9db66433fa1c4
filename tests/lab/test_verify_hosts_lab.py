"""verify's host checks (VerifyHosts) over the real SSH transport against lab hosts.

Three prepared nodes (no `up`: the fixtures describe containerd and the kubelet installed and
running), checked by Connect, GatherFacts and VerifyHosts under the phase manager:
- cp-1 (Ubuntu 24.04, root login): healthy;
- gpu-1 (Ubuntu 22.04, login `ops` with sudo): healthy GPU node with a host driver and the
  toolkit's containerd drop-in;
- gpu-2 (Rocky 9, login `ops`): broken: kubelet stopped, swap on, the drop-in gone, the
  packages not held, nvidia-smi missing a GPU, an Xid in its kernel log.
"""

from __future__ import annotations

from typing import Any

import pytest

from gpuk8s.actions.base import new_context, run
from gpuk8s.checks.verify_host import VERIFY_HOSTS
from gpuk8s.inventory import load_inventory
from gpuk8s.phases.base import RunOptions
from gpuk8s.phases.preflight import Connect, GatherFacts
from gpuk8s.phases.verify import VerifyHosts
from gpuk8s.runlog import RunLog
from tests.lab.fixture import GPU, HostFixture, containerd_config

pytestmark = pytest.mark.lab

CTRD = "2.1.4"
KUBE = "1.36.2"
DROP_IN = "/etc/containerd/conf.d/99-nvidia.toml"
# What the NVIDIA Container Toolkit writes for containerd 2.x (config version 3): the nvidia
# runtime with runc's options (nvidia-container-toolkit pkg/config/engine/containerd, v1.18).
NVIDIA_DROP_IN = """version = 3
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia.options]
  BinaryName = "/usr/local/nvidia/toolkit/nvidia-container-runtime"
  SystemdCgroup = true
"""
HELD = "kubelet\nkubeadm\nkubectl\n"


def _gpu_config() -> str:
    cfg = containerd_config(CTRD, systemd_cgroup=True)
    assert cfg.count("\nimports = []\n") == 1
    return cfg.replace("\nimports = []\n", '\nimports = ["/etc/containerd/conf.d/*.toml"]\n')


def _node(name: str, **kw: Any) -> HostFixture:
    base: dict[str, Any] = dict(containerd=CTRD, kube=KUBE, kubernetes_files={"kubelet.conf": "x\n"},
                                containerd_config=containerd_config(CTRD, systemd_cgroup=True))
    base.update(kw)
    return HostFixture(name, **base)


FIXTURES = [
    _node("cp-1", roles=("control-plane",), os="ubuntu-24.04",
          files={"/etc/gpuk8s-lab/apt/held": HELD}),
    _node("gpu-1", os="ubuntu-22.04", gpus=[GPU("L4")] * 2, nvidia_driver="595.91.07",
          containerd_config=_gpu_config(), files={DROP_IN: NVIDIA_DROP_IN, "/etc/gpuk8s-lab/apt/held": HELD}),
    _node("gpu-2", os="rocky-9", gpus=[GPU("L4")] * 2, nvidia_driver="595.91.07", swap=True,
          containerd_config=_gpu_config(), services={"kubelet": ("inactive", "enabled")}),
    # `containerd config dump` hangs here (the rest of containerd answers)
    _node("w-hang", files={"/etc/gpuk8s-lab/apt/held": HELD}),
]
HANG_WRAPPER = """#!/bin/sh
[ "$1" = config ] && exec sleep 60
exec /run/gpuk8s-lab/sim/containerd "$@"
"""


@pytest.fixture(scope="module")
def verified(lab_factory, tmp_path_factory) -> dict[str, dict[str, Any]]:
    lab = lab_factory(FIXTURES)
    # gpu-2: one GPU lost by the driver (still on the PCI bus), and its Xid in the kernel log.
    lab.exec("gpu-2", "sed -i '2d' /etc/gpuk8s-lab/nvidia/gpus")
    xid = lab.add_xid("gpu-2", 79, gpu=1)
    lab.exec("w-hang", "rm -f /usr/local/bin/containerd")
    lab.write_file("w-hang", "/usr/local/bin/containerd", HANG_WRAPPER, 0o755)
    path = lab.write_inventory(tmp_path_factory.mktemp("verify") / "inv.yaml",
                               host_overrides={"gpu-1": {"ssh": {"user": "ops"}},
                                               "gpu-2": {"ssh": {"user": "ops"}},
                                               "w-hang": {"ssh": {"command_timeout": 4}}})
    inv = load_inventory(path)
    ctx = new_context(inv, RunOptions(), RunLog(None))
    run(ctx, [Connect(), GatherFacts(), VerifyHosts()])
    out = {name: {r.id: r for r in results} for name, results in ctx.state.verify_hosts.items()}
    out["_xid"] = {"line": xid}
    out["_order"] = {n: [r.id for r in rs] for n, rs in ctx.state.verify_hosts.items()}
    return out


def test_every_host_reports_every_check_in_order(verified):
    for name in ("cp-1", "gpu-1", "gpu-2", "w-hang"):
        assert verified["_order"][name] == list(VERIFY_HOSTS.ids)


@pytest.mark.parametrize("name", ["cp-1", "gpu-1"])
def test_healthy_hosts_pass(verified, name):
    bad = {i: (r.status, r.message) for i, r in verified[name].items() if r.status not in ("pass", "skip")}
    assert not bad


def test_cpu_node_skips_gpu_checks_and_gpu_node_runs_them(verified):
    assert {i for i, r in verified["cp-1"].items() if r.status == "skip"} == {
        "nvidia-runtime", "nvidia-smi", "xid-errors"}
    assert all(verified["gpu-1"][i].status == "pass" for i in ("nvidia-runtime", "nvidia-smi", "xid-errors"))


def test_broken_host_fails_the_right_checks(verified):
    r = verified["gpu-2"]
    assert r["kubelet-running"].status == "fail" and "inactive" in r["kubelet-running"].message
    assert "systemctl enable --now kubelet" in r["kubelet-running"].fix
    assert r["swap-off"].status == "fail"
    assert r["nvidia-runtime"].status == "fail" and DROP_IN in r["nvidia-runtime"].message
    assert r["kube-packages"].status == "fail" and "not held" in r["kube-packages"].message
    assert r["nvidia-smi"].status == "fail" and "1 GPU(s), 2 are on the PCI bus" in r["nvidia-smi"].message
    assert r["xid-errors"].status == "fail" and verified["_xid"]["line"] in r["xid-errors"].message
    # what is healthy there still passes (the rpm query and the repository-less hold check ran)
    assert r["containerd-running"].status == "pass"
    assert r["containerd-cgroup-driver"].status == "pass"
    assert "not at" not in r["kube-packages"].message and "not installed" not in r["kube-packages"].message


def test_a_hanging_command_fails_only_its_checks(verified):
    """The batch times out (ssh.command_timeout 4 s); each command then runs on its own: the
    dump times out again and fails the containerd config check, everything else answers."""
    r = verified["w-hang"]
    assert r["containerd-cgroup-driver"].status == "fail"
    assert "did not finish within 4s" in r["containerd-cgroup-driver"].message
    assert {i for i, c in r.items() if c.status == "fail"} == {"containerd-cgroup-driver"}
    assert r["containerd-running"].status == "pass" and r["kube-packages"].status == "pass"
