"""`gpuk8s preflight` end to end against lab hosts (real sshd), run as a user runs it.

Most scenarios share one lab (module scope): a healthy cluster (cp-1, gpu-1, gpu-2), one host per
broken thing, and a few hosts whose SSH side tests break (rekey, down, hung). Every broken host
is checked in a single preflight run whose report the parametrized tests read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuk8s.checks import CHECK_IDS
from gpuk8s.errors import InventoryError
from gpuk8s.inventory import load_inventory
from gpuk8s.shell import Cmd
from gpuk8s.transport import open_transport
from tests.lab.fixture import (DEFAULT_BINARIES, DOCKER_CONTAINERD_CONFIG, GPU, HostFixture,
                               containerd_config)
from tests.lab.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
CTRD = "2.1.4"
KUBE = "1.36.2"
PAUSE = "registry.k8s.io/pause:3.10.1"          # what kubeadm 1.36 expects
GOOD_CONFIG = containerd_config(CTRD, systemd_cgroup=True, sandbox_image=PAUSE)
TWIN_MAC = "52:54:00:5e:ed:01"
SHARED_UUID = "8a2b4c6d-1111-4222-8333-944455556666"
RUN_TIMEOUT = 120
CONNECT_TIMEOUT = 15


def node(name: str, **kw: Any) -> HostFixture:
    """A worker that is healthy except for what the keyword arguments break."""
    base: dict[str, Any] = dict(containerd=CTRD, kube=KUBE, containerd_config=GOOD_CONFIG,
                                nouveau_blacklisted=True)
    base.update(kw)
    return HostFixture(name, **base)


# --------------------------------------------------------------------------- fixtures (hosts)

ALL_BINARIES = DEFAULT_BINARIES + ("ebtables",)       # kubeadm only warns without ebtables
HEALTHY = [
    HostFixture("cp-1", roles=("control-plane",), os="ubuntu-24.04", cpus=16, memory_mib=65536,
                containerd=CTRD, kube=KUBE, containerd_config=GOOD_CONFIG, helm="3.19.0",
                binaries=ALL_BINARIES),
    node("gpu-1", os="ubuntu-24.04", cpus=32, memory_mib=262144, gpus=[GPU("L4")] * 2,
         nvidia_driver="595.91.07", nvidia_ctk="1.18.0", binaries=ALL_BINARIES),
    node("gpu-2", os="ubuntu-22.04", cpus=64, memory_mib=524288, gpus=[GPU("H100")] * 4,
         binaries=ALL_BINARIES),
]
HEALTHY_NAMES = [f.name for f in HEALTHY]

# containerd 2.x file with SystemdCgroup appended under the 1.x table (a v3 config ignores it).
MISPLACED_CONFIG = containerd_config(CTRD, systemd_cgroup=None, sandbox_image=PAUSE) + (
    '\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
    "  SystemdCgroup = true\n")

BROKEN = [
    node("rhel8", os="rhel-8"),
    node("centos7", os="centos-7"),
    node("amzn", os="amzn-2023"),
    node("cg1", cgroup=1),
    node("swap-on", swap=True),
    node("swap-fstab", swap_in_fstab=True),
    node("dup-a", hostname="twin"),
    node("dup-b", hostname="twin"),
    node("uuid-a", product_uuid=SHARED_UUID),
    node("uuid-b", product_uuid=SHARED_UUID),
    node("mac-a", mac=TWIN_MAC),                            # its twin lives in another lab
    node("nofwd", ip_forward=False),
    node("cd-false", containerd_config=containerd_config(CTRD, systemd_cgroup=False,
                                                         sandbox_image=PAUSE)),
    node("cd-unset", containerd_config=containerd_config(CTRD, systemd_cgroup=None,
                                                         sandbox_image=PAUSE)),
    node("cd-misplaced", containerd_config=MISPLACED_CONFIG),
    node("cd-docker", containerd_config=DOCKER_CONTAINERD_CONFIG),
    node("nouveau", gpus=[GPU("L4")], nouveau=True, nouveau_blacklisted=False),
    node("secboot", gpus=[GPU("L4")], secure_boot=True),
    node("nogpu", gpu=True),
    node("unattended", gpus=[GPU("L4")], unattended_upgrades=True),
    node("ufw", ufw=True),
    node("firewalld", firewalld=True),
    node("hybrid", gpus=[GPU("L4", audio=True)] * 2, nvidia_driver="595.91.07"),
    node("nolspci", gpus=[GPU("A100")] * 2, lspci=False),
    node("smifail", gpus=[GPU("A100")], nvidia_smi=True),
    # driver upgraded to 595.91.07 without a reboot: 580.95.05 (proprietary module) still loaded
    node("nvml", gpus=[GPU("H100")], nvidia_driver="580.95.05", nvml_mismatch="595.91.07",
         nvidia_kernel_module="proprietary"),
    node("mig-on", gpus=[GPU("H100", mig="Enabled")] * 2, nvidia_driver="595.91.07"),
    node("busyport", listening_ports=(10250,)),
    # no iproute2 (no ip, no ss): links, addresses, routes and sockets come from /sys and /proc
    node("noiproute", binaries=tuple(b for b in DEFAULT_BINARIES if b != "ip"), listening_ports=(10250,)),
]
BROKEN_NAMES = [f.name for f in BROKEN]

ACCESS = [node("rekey"), node("down", sshd=False), node("hung")]

# (host, check id, status, text in the message, text in the fix)
EXPECTED = [
    ("rhel8", "os-supported", "fail", "RHEL 8 family", "RHEL/Rocky/AlmaLinux 9"),
    ("rhel8", "cgroup-v2", "fail", "cgroup v1", "grubby --update-kernel=ALL"),
    ("rhel8", "kernel-version", "fail", "older than 4.19", "reboot"),
    ("centos7", "os-supported", "fail", "CentOS Linux", "reinstall with a supported OS"),
    ("amzn", "os-supported", "fail", "Amazon Linux", "reinstall with a supported OS"),
    ("cg1", "cgroup-v2", "fail", "refuses cgroup v1", "systemd.unified_cgroup_hierarchy=1"),
    ("cg1", "os-supported", "pass", "Ubuntu 24.04", None),
    ("swap-on", "swap-off", "fail", "swap is active on /swap.img", "swapoff -a"),
    ("swap-fstab", "swap-off", "fail", "/etc/fstab mounts swap", "/etc/fstab"),
    ("dup-a", "hostname-unique", "fail", "also used by dup-b", "hostnamectl set-hostname dup-a"),
    ("dup-b", "hostname-unique", "fail", "also used by dup-a", "hostnamectl set-hostname dup-b"),
    ("dup-a", "hostname-valid", "warn", "differs from the inventory name", "hostnamectl"),
    ("uuid-a", "product-uuid-unique", "fail", "also reported by uuid-b", "SMBIOS UUID"),
    ("uuid-b", "product-uuid-unique", "fail", "also reported by uuid-a", "SMBIOS UUID"),
    ("mac-a", "mac-unique", "fail", f"eth0 {TWIN_MAC} is also on mac-b (eth0)", "ip link set dev"),
    ("mac-b", "mac-unique", "fail", f"eth0 {TWIN_MAC} is also on mac-a (eth0)", "ip link set dev"),
    ("nofwd", "ip-forward", "fail", "net.ipv4.ip_forward = 0", "net.ipv4.ip_forward = 1"),
    ("cd-false", "containerd-systemd-cgroup", "fail", "SystemdCgroup is false",
     "containerd config default > /etc/containerd/config.toml"),
    ("cd-unset", "containerd-systemd-cgroup", "fail", "SystemdCgroup is not set",
     "io.containerd.cri.v1.runtime"),
    ("cd-misplaced", "containerd-systemd-cgroup", "fail",
     "which a version 3 config ignores", "io.containerd.cri.v1.runtime"),
    ("cd-misplaced", "containerd-config-version", "pass", "config version 3", None),
    ("cd-docker", "containerd-cri-enabled", "fail", 'disabled_plugins = ["cri"]',
     "containerd config default"),
    ("nouveau", "nouveau-off", "fail", "nouveau module is loaded", "blacklist nouveau"),
    ("nouveau", "gpu-present", "pass", "1 x NVIDIA L4 (0x27b8)", None),
    ("secboot", "secure-boot", "fail", "Secure Boot is on", "mokutil --disable-validation"),
    ("secboot", "nvidia-driver", "pass", "driver container", None),
    ("nogpu", "gpu-present", "fail", "gpu: true in the inventory", "lspci -nn -d 10de:"),
    ("unattended", "unattended-upgrades", "warn", "unattended-upgrades is on",
     "APT::Periodic::Unattended-Upgrade"),
    ("ufw", "firewall", "warn", "ufw is enabled", "ufw disable"),
    ("firewalld", "firewall", "warn", "firewalld is active", "systemctl disable --now firewalld"),
    ("hybrid", "gpu-present", "pass", "2 x NVIDIA L4 (0x27b8)", None),
    ("hybrid", "nvidia-driver", "pass", "host driver 595.91.07", None),
    ("nolspci", "gpu-present", "pass", "2 x NVIDIA A100-SXM4-80GB (0x20b2)", None),
    ("smifail", "gpu-present", "pass", "1 x NVIDIA A100", None),
    ("smifail", "nvidia-driver", "pass", "GPU Operator deploys the driver container", None),
    ("nvml", "nvidia-driver", "fail",
     "'Failed to initialize NVML: Driver/library version mismatch': the loaded kernel module is "
     "580.95.05 but the installed user-space NVML 595.91 differs",
     "rmmod nvidia_drm nvidia_modeset nvidia_uvm nvidia && modprobe nvidia && nvidia-smi"),
    ("mig-on", "gpu-mig", "warn", "MIG mode is Enabled on 0000:01:00.0, 0000:02:00.0",
     "nvidia-smi -i 0000:01:00.0 -mig 0"),
    ("mig-on", "nvidia-driver", "pass", "host driver 595.91.07", None),
    ("hybrid", "gpu-mig", "pass", "MIG not configured", None),
    ("busyport", "ports-free", "fail", "10250 (kubelet)", "ss -ltnp '( sport = :10250 )'"),
    ("noiproute", "required-binaries", "fail", "missing ip (kubeadm FileExisting errors)", "iproute2"),
    ("noiproute", "ports-free", "fail", "10250 (kubelet)", "ss -ltnp"),
    ("noiproute", "mac-unique", "pass", "", None),
    ("noiproute", "cidr-overlap", "pass", "", None),
]


# --------------------------------------------------------------------------- helpers

def preflight(*args: str, json_out: bool = True, timeout: float = RUN_TIMEOUT,
              columns: int = 250) -> tuple[int, Any, str]:
    """`python -m gpuk8s preflight ARGS [--json]` -> (exit code, parsed JSON or stdout, stderr)."""
    argv = [sys.executable, "-m", "gpuk8s", "preflight", *args] + (["--json"] if json_out else [])
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1"}
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    if not json_out:
        return r.returncode, r.stdout, r.stderr
    try:
        doc = json.loads(r.stdout)          # exactly one JSON document, nothing else
    except json.JSONDecodeError as e:
        raise AssertionError(f"stdout is not one JSON document ({e}); rc={r.returncode}\n"
                             f"stdout: {r.stdout[:2000]}\nstderr: {r.stderr[-2000:]}") from None
    return r.returncode, doc, r.stderr


def hosts_of(doc: dict) -> dict[str, dict]:
    return {h["name"]: h for h in doc["hosts"]}


def checks_of(host: dict) -> dict[str, dict]:
    return {c["id"]: c for c in host["checks"]}


def failing(host: dict) -> list[str]:
    return [f"{c['id']}: {c['message']}" for c in host["checks"] if c["status"] == "fail"]


def inventory(lab: Lab, path: Path, hosts: list[str], extra_hosts: list[dict] | None = None,
              host_overrides: dict[str, dict] | None = None, **sections: Any) -> str:
    """lab.write_inventory (generous connect timeout: the test machine may be busy), plus host
    entries that live outside this lab."""
    sections["ssh"] = {"connect_timeout": CONNECT_TIMEOUT, **sections.get("ssh", {})}
    p = lab.write_inventory(path, hosts=hosts, host_overrides=host_overrides, **sections)
    if extra_hosts:
        data = yaml.safe_load(Path(p).read_text())
        data["hosts"].extend(extra_hosts)
        Path(p).write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def known_hosts_without(lab: Lab, path: Path, *names: str) -> str:
    """A copy of the lab's known_hosts lacking the given hosts' lines."""
    drop = tuple(f"{lab.address(n)} " for n in names)
    lines = Path(lab.known_hosts).read_text().splitlines(keepends=True)
    path.write_text("".join(ln for ln in lines if not ln.startswith(drop)))
    return str(path)


def host_key_line(lab: Lab, name: str) -> str:
    return f"{lab.address(name)} ssh-ed25519 {lab.host(name).host_key_pub}"


# --------------------------------------------------------------------------- lab fixtures

@pytest.fixture(scope="module")
def lab(lab_factory) -> Lab:
    return lab_factory(HEALTHY + BROKEN + ACCESS)


@pytest.fixture(scope="module")
def twin_lab(lab_factory, lab: Lab) -> Lab:
    """mac-b: a clone of mac-a's NIC on another L2 segment (on one bridge the two would steal
    each other's frames, as real cloned VMs do)."""
    return lab_factory([node("mac-b", mac=TWIN_MAC,
                             hosts_entries=((lab.address("cp-1"), "k8s-api.lab"),))])


@pytest.fixture(scope="module")
def broken_run(lab: Lab, twin_lab: Lab, tmp_path_factory) -> tuple[int, dict]:
    """One preflight run over cp-1 and every broken host (plus mac-b from the twin lab)."""
    path = tmp_path_factory.mktemp("broken") / "inventory.yaml"
    twin = {"name": "mac-b", "address": twin_lab.address("mac-b"), "roles": ["worker"],
            "ssh": {"identity_file": twin_lab.client_key, "known_hosts": twin_lab.known_hosts}}
    inv = inventory(lab, path, ["cp-1"] + BROKEN_NAMES, extra_hosts=[twin])
    rc, doc, _ = preflight("-i", inv)
    return rc, doc


# --------------------------------------------------------------------------- 1. healthy cluster

def test_healthy_cluster_is_ready(lab: Lab, tmp_path: Path) -> None:
    inv = inventory(lab, tmp_path / "inv.yaml", HEALTHY_NAMES)
    rc, doc, err = preflight("-i", inv)
    hosts = hosts_of(doc)
    assert {n: failing(h) for n, h in hosts.items()} == {n: [] for n in HEALTHY_NAMES}
    assert rc == 0, err
    assert doc["ok"] is True
    assert list(hosts) == HEALTHY_NAMES
    for name, h in hosts.items():
        assert h["reachable"] is True and h["error"] is None
        assert h["address"] == lab.address(name)
        assert [c["id"] for c in h["checks"]] == list(CHECK_IDS)
        for c in h["checks"]:
            assert c["status"] in ("pass", "skip", "warn"), c
            if c["status"] in ("pass", "skip"):
                assert c["fix"] is None, c
        f = h["facts"]
        assert f["uid"] == 0 and f["cgroup_version"] == 2
        assert f["product_uuid"] == lab.host(name).product_uuid
        assert f["hostname"] == name
        c = checks_of(h)
        for cid in ("privileged-access", "os-supported", "cgroup-v2", "swap-off", "ip-forward",
                    "time-sync", "required-binaries", "hostname-unique", "product-uuid-unique",
                    "mac-unique",
                    "containerd-version", "containerd-cri-enabled", "containerd-systemd-cgroup",
                    "containerd-config-version", "containerd-sandbox-image",
                    "kube-tools-version", "ports-free", "cidr-overlap"):
            assert c[cid]["status"] == "pass", c[cid]
        assert c["endpoint-resolves"]["status"] == "pass"
        assert c["endpoint-resolves"]["message"] == f"k8s-api.lab resolves to {lab.address('cp-1')}"

    cp, g1, g2 = (hosts[n] for n in HEALTHY_NAMES)
    assert cp["facts"]["os"]["id"] == "ubuntu" and cp["facts"]["os"]["version_id"] == "24.04"
    assert cp["facts"]["os"]["pretty_name"] == "Ubuntu 24.04.3 LTS"
    assert g2["facts"]["os"]["version_id"] == "22.04"
    assert g2["facts"]["os"]["pretty_name"] == "Ubuntu 22.04.5 LTS"
    assert checks_of(cp)["helm"]["status"] == "pass"
    assert checks_of(g1)["helm"]["status"] == "skip"
    assert cp["facts"]["gpus"] == [] and checks_of(cp)["gpu-present"]["status"] == "skip"

    assert [(g["vendor_id"], g["device_id"], g["class_id"]) for g in g1["facts"]["gpus"]] == \
        [("0x10de", "0x27b8", "0x030200")] * 2
    assert [(g["vendor_id"], g["device_id"]) for g in g2["facts"]["gpus"]] == [("0x10de", "0x2330")] * 4
    assert checks_of(g1)["gpu-present"]["message"] == "2 x NVIDIA L4 (0x27b8)"
    assert checks_of(g2)["gpu-present"]["message"].startswith("4 x NVIDIA H100")
    assert "driver.enabled=false" in checks_of(g1)["nvidia-driver"]["message"]
    assert "driver container" in checks_of(g2)["nvidia-driver"]["message"]
    assert g1["facts"]["nvidia_driver_version"] == "595.91.07"
    assert g2["facts"]["nvidia_driver_version"] is None
    for h in (g1, g2):
        for cid in ("gpu-present", "nouveau-off", "secure-boot", "nvidia-driver",
                    "gpu-os-consistent", "unattended-upgrades"):
            assert checks_of(h)[cid]["status"] == "pass", checks_of(h)[cid]
    # Unique identities really are different hosts' values.
    assert len({h["facts"]["product_uuid"] for h in hosts.values()}) == 3
    assert len({tuple(h["facts"]["macs"].values()) for h in hosts.values()}) == 3


# --------------------------------------------------------------------------- 2. broken hosts

def test_broken_fleet_report_shape(broken_run: tuple[int, dict]) -> None:
    rc, doc = broken_run
    assert rc == 1 and doc["ok"] is False
    hosts = hosts_of(doc)
    assert list(hosts) == ["cp-1"] + BROKEN_NAMES + ["mac-b"]
    for name, h in hosts.items():
        assert h["reachable"] is True and h["error"] is None, (name, h["error"])
        assert [c["id"] for c in h["checks"]] == list(CHECK_IDS), name
        for c in h["checks"]:
            if c["status"] == "fail":
                assert c["fix"] and c["fix"].strip() and c["message"], (name, c)
            if c["status"] in ("pass", "skip"):
                assert c["fix"] is None, (name, c)
    assert failing(hosts["cp-1"]) == []


@pytest.mark.parametrize("host,check_id,status,in_message,in_fix", EXPECTED,
                         ids=[f"{h}-{c}" for h, c, *_ in EXPECTED])
def test_broken_host_check(broken_run: tuple[int, dict], host: str, check_id: str, status: str,
                           in_message: str, in_fix: str | None) -> None:
    _, doc = broken_run
    c = checks_of(hosts_of(doc)[host])[check_id]
    assert c["status"] == status, c
    assert in_message in c["message"], c
    if in_fix is None:
        assert c["fix"] is None or status == "warn", c
    else:
        assert c["fix"] and in_fix in c["fix"], c


def test_each_broken_host_fails_only_for_its_reason(broken_run: tuple[int, dict]) -> None:
    """A host broken in one way must not drag unrelated checks into fail."""
    _, doc = broken_run
    allowed = {h: {c for hh, c, s, *_ in EXPECTED if hh == h and s == "fail"} for h in BROKEN_NAMES}
    # no `version =`: a version 1 file, which containerd 2.x migrates (config-version only warns);
    # its SystemdCgroup is unset in the migrated runc options
    allowed["cd-docker"] |= {"containerd-systemd-cgroup"}
    allowed["centos7"] |= {"kernel-version", "cgroup-v2"}      # 3.10 kernel, cgroup v1 by default
    hosts = hosts_of(doc)
    for name in BROKEN_NAMES + ["mac-b"]:
        fails = {c["id"] for c in hosts[name]["checks"] if c["status"] == "fail"}
        assert fails == allowed.get(name, {"mac-unique"}), (name, failing(hosts[name]))


def test_gpu_facts_from_sysfs_lspci_and_nvidia_smi(broken_run: tuple[int, dict]) -> None:
    hosts = hosts_of(broken_run[1])
    # Hybrid board: the HD audio functions (class 0x0403) are NVIDIA functions but not GPUs.
    hy = hosts["hybrid"]["facts"]
    assert [(g["pci_address"], g["class_id"], g["name"]) for g in hy["gpus"]] == [
        ("0000:01:00.0", "0x030200", "NVIDIA L4"), ("0000:02:00.0", "0x030200", "NVIDIA L4")]
    assert [(g["pci_address"], g["vendor_id"], g["class_id"]) for g in hy["nvidia_other_functions"]] \
        == [("0000:01:00.1", "0x10de", "0x040300"), ("0000:02:00.1", "0x10de", "0x040300")]
    assert hy["nvidia_smi_ok"] is True
    # No pciutils: GPUs come from /sys, names from the built-in device table.
    nl = hosts["nolspci"]["facts"]
    assert "lspci" not in nl["binaries"]
    assert [(g["vendor_id"], g["device_id"], g["name"]) for g in nl["gpus"]] == \
        [("0x10de", "0x20b2", "A100-SXM4-80GB")] * 2
    # nvidia-smi installed but no driver: GPUs still listed, named by the table (or lspci).
    sf = hosts["smifail"]["facts"]
    assert sf["nvidia_smi_ok"] is False and "couldn't communicate with the NVIDIA driver" in \
        sf["nvidia_smi_error"]
    assert sf["nvidia_driver_version"] is None
    assert [(g["vendor_id"], g["device_id"]) for g in sf["gpus"]] == [("0x10de", "0x20b2")]
    assert sf["gpus"][0]["name"] in ("A100-SXM4-80GB", "A100 SXM4 80GB")
    # A nouveau-bound GPU is still a GPU.
    assert [g["driver"] for g in hosts["nouveau"]["facts"]["gpus"]] == ["nouveau"]


def test_human_output_names_failures_and_fixes(lab: Lab, tmp_path: Path) -> None:
    inv = inventory(lab, tmp_path / "inv.yaml", ["cp-1", "swap-on", "nofwd", "cd-false", "down"])
    rc, out, err = preflight("-i", inv, json_out=False)
    assert rc == 4, (out, err)                  # "down" is unreachable: 4 wins over 1
    assert "swap-off" in out and "$ swapoff -a" in out
    assert "ip-forward" in out and "$ sysctl --system" in out
    assert "containerd-systemd-cgroup" in out and "$ containerd config default > /etc/containerd/config.toml" in out
    assert "swap-on (" + lab.address("swap-on") + ")" in out
    assert "unreachable (refused)" in out
    assert "not ready: 5 hosts, 1 ready, 3 with failed checks, 1 unreachable" in out
    assert not out.lstrip().startswith("{")


# --------------------------------------------------------------------------- 3. host keys

def test_unknown_host_key_is_refused_then_accepted_from_inventory(lab: Lab, tmp_path: Path) -> None:
    kh = known_hosts_without(lab, tmp_path / "known_hosts", "gpu-2")
    inv = inventory(lab, tmp_path / "inv.yaml", HEALTHY_NAMES, ssh={"known_hosts": kh})
    rc, doc, _ = preflight("-i", inv)
    assert rc == 4 and doc["ok"] is False
    hosts = hosts_of(doc)
    g2 = hosts["gpu-2"]
    assert g2["reachable"] is False and g2["checks"] == [] and g2["facts"] is None
    assert "accept_new_host_keys" in g2["error"] and "ssh-keyscan" in g2["error"], g2["error"]
    assert kh in g2["error"]
    for n in ("cp-1", "gpu-1"):                 # the others are still checked
        assert hosts[n]["reachable"] is True and len(hosts[n]["checks"]) == len(CHECK_IDS)
    assert host_key_line(lab, "gpu-2") not in Path(kh).read_text()

    inv = inventory(lab, tmp_path / "inv-accept.yaml", HEALTHY_NAMES,
                    ssh={"known_hosts": kh, "accept_new_host_keys": True})
    rc, doc, err = preflight("-i", inv)
    assert rc == 0, (err, [failing(h) for h in doc["hosts"]])
    assert all(h["reachable"] for h in doc["hosts"])
    lines = Path(kh).read_text().splitlines()
    assert lines.count(host_key_line(lab, "gpu-2")) == 1
    assert len(lines) == len([ln for ln in Path(lab.known_hosts).read_text().splitlines()
                              if ln.strip()])


def test_accept_new_host_keys_flag_records_key(lab: Lab, tmp_path: Path) -> None:
    kh = known_hosts_without(lab, tmp_path / "known_hosts", "gpu-1", "cp-1")
    before = Path(kh).read_text()
    inv = inventory(lab, tmp_path / "inv.yaml", ["cp-1", "gpu-1"], ssh={"known_hosts": kh})
    rc, doc, err = preflight("-i", inv, "--accept-new-host-keys")
    assert rc == 0, err
    text = Path(kh).read_text()
    assert text.startswith(before)              # appended, nothing rewritten
    assert sorted(text[len(before):].splitlines()) == sorted(
        [host_key_line(lab, "cp-1"), host_key_line(lab, "gpu-1")])
    # The recorded lines are valid known_hosts entries: strict checking now succeeds, no re-append.
    rc, doc, err = preflight("-i", inv)
    assert rc == 0, err
    assert Path(kh).read_text() == text


def test_changed_host_key_fails_even_with_accept_new(lab: Lab, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(Path(lab.known_hosts).read_text())
    before = kh.read_text()
    lab.rotate_host_key("rekey")
    try:
        inv = inventory(lab, tmp_path / "inv.yaml", ["cp-1", "rekey"],
                        ssh={"known_hosts": str(kh), "accept_new_host_keys": True})
        rc, doc, _ = preflight("-i", inv, "--accept-new-host-keys")
        assert rc == 4
        hosts = hosts_of(doc)
        assert hosts["rekey"]["reachable"] is False
        assert "HOST KEY CHANGED" in hosts["rekey"]["error"]
        assert "ssh-keygen -R" in hosts["rekey"]["error"]
        assert hosts["cp-1"]["reachable"] is True and failing(hosts["cp-1"]) == []
        assert kh.read_text() == before         # the changed key is never recorded
    finally:
        lab.refresh_known_hosts()


# --------------------------------------------------------------------------- 4. users and sudo

def test_sudo_user_and_password_sudo_user(lab: Lab, tmp_path: Path) -> None:
    inv = inventory(lab, tmp_path / "inv.yaml", HEALTHY_NAMES, host_overrides={
        "gpu-1": {"ssh": {"user": "ops"}}, "gpu-2": {"ssh": {"user": "alice"}}})
    rc, doc, err = preflight("-i", inv)
    assert rc == 1, err
    hosts = hosts_of(doc)
    # ops: passwordless sudo -> facts gathered as root, DMI product_uuid (0400) readable.
    ops = hosts["gpu-1"]
    assert ops["reachable"] is True and ops["error"] is None
    assert ops["facts"]["uid"] == 0
    assert ops["facts"]["product_uuid"] == lab.host("gpu-1").product_uuid
    assert checks_of(ops)["privileged-access"]["status"] == "pass"
    assert "via sudo" in checks_of(ops)["privileged-access"]["message"]
    assert failing(ops) == []
    # alice: sudo wants a password -> reachable, partial report, error explains.
    al = hosts["gpu-2"]
    assert al["reachable"] is True
    assert al["error"] and "sudo" in al["error"] and "password" in al["error"], al["error"]
    assert "NOPASSWD" in al["error"]
    assert al["facts"]["uid"] == 2002 and al["facts"]["product_uuid"] is None
    c = checks_of(al)
    assert [x["id"] for x in al["checks"]] == list(CHECK_IDS)
    assert c["privileged-access"]["status"] == "fail" and c["privileged-access"]["fix"]
    assert "alice" in c["privileged-access"]["message"]
    assert c["product-uuid-unique"]["status"] == "warn"
    assert c["os-supported"]["status"] == "pass" and c["gpu-present"]["status"] == "pass"
    assert hosts["cp-1"]["facts"]["uid"] == 0 and failing(hosts["cp-1"]) == []


# --------------------------------------------------------------------------- 5. down and hung hosts

def test_refused_and_hung_hosts_do_not_block_the_others(lab: Lab, tmp_path: Path) -> None:
    inv = inventory(lab, tmp_path / "inv.yaml", ["cp-1", "down", "hung", "gpu-1"],
                    host_overrides={"hung": {"ssh": {"connect_timeout": 2}}})
    lab.hang_sshd("hung")
    try:
        rc, doc, err = preflight("-i", inv, timeout=60)
    finally:
        lab.resume_sshd("hung")
    assert rc == 4, err
    assert doc["ok"] is False
    hosts = hosts_of(doc)
    down, hung = hosts["down"], hosts["hung"]
    assert down["reachable"] is False and "refused" in down["error"], down["error"]
    assert down["address"] == lab.address("down") and down["checks"] == []
    assert hung["reachable"] is False and hung["checks"] == [], hung
    for n in ("cp-1", "gpu-1"):
        assert hosts[n]["reachable"] is True and failing(hosts[n]) == []
    assert hung["error_kind"] == "timeout" and down["error_kind"] == "refused"
    assert "within 2s" in hung["error"] and "hung" in hung["error"], \
        hung["error"]


# --------------------------------------------------------------------------- 6. shell safety

NASTY = "x$(touch /tmp/pwned)'\";id `touch /tmp/pwned2` && touch /tmp/pwned3 | $HOME \\ * %s\n;id"
PWNED = ("/tmp/pwned", "/tmp/pwned2", "/tmp/pwned3")


@pytest.mark.parametrize("host,user", [("cp-1", "root"), ("gpu-1", "ops")])
def test_inventory_value_reaches_host_unchanged(lab: Lab, tmp_path: Path, host: str, user: str
                                                ) -> None:
    # A hostile value never gets into an inventory: it is refused at load, with file:line:field.
    bad = inventory(lab, tmp_path / "bad.yaml", sorted({"cp-1", host}), gpu={"driver_version": NASTY})
    with pytest.raises(InventoryError) as e:
        load_inventory(bad)
    assert any(p.path == "gpu.driver_version" and p.line for p in e.value.problems), e.value.problems
    # What does reach a host (a value from the inventory or from a host) is quoted by Cmd.
    path = inventory(lab, tmp_path / "inv.yaml", sorted({"cp-1", host}),
                     host_overrides={host: {"ssh": {"user": user}}})
    inv = load_inventory(path)
    spec = inv.host(host)
    assert spec.ssh.user == user
    target = "/tmp/gpuk8s value $(touch pwned4) `touch pwned5`;'\"*"
    t = open_transport(spec)
    try:
        assert t.privileged
        assert t.run(Cmd("id", "-u")).stdout.strip() == "0"      # via sudo for ops
        r = t.run(Cmd("printf", "%s", NASTY))
        assert r.exit_status == 0, r.stderr
        assert r.stdout == NASTY and "uid=" not in r.stdout
        r = t.run(Cmd("printf", "%s", NASTY).redirect(">", target))
        assert r.exit_status == 0, r.stderr
        r = t.run(Cmd("cat", target))
        assert r.stdout == NASTY
        # As root the file is root's even through sudo.
        assert t.run(Cmd("stat", "-c", "%u", target)).stdout.strip() == "0"
    finally:
        t.close()
    assert lab.read_file(host, target) == NASTY
    for p in PWNED:
        assert lab.exec(host, f"test -e {p}").returncode != 0, f"{p} exists on {host}"
    home = "/root" if user == "root" else f"/home/{user}"
    for p in (f"{home}/pwned4", f"{home}/pwned5", "/pwned4", "/pwned5"):
        assert lab.exec(host, f"test -e {p}").returncode != 0, f"{p} exists on {host}"
    lab.exec(host, "rm -f /tmp/gpuk8s\\ value*")


def test_endpoint_hostname_reaches_getent(lab: Lab, tmp_path: Path) -> None:
    name = "api-vip.gpuk8s-lab.internal"
    vip = lab.address("cp-1")
    for h in HEALTHY_NAMES:
        assert lab.exec(h, f"echo '{vip} {name}' >> /etc/hosts").returncode == 0
    inv = inventory(lab, tmp_path / "inv.yaml", HEALTHY_NAMES,
                    cluster={"control_plane_endpoint": f"{name}:6443"})
    rc, doc, err = preflight("-i", inv)
    assert rc == 0, err
    for h in doc["hosts"]:
        c = checks_of(h)["endpoint-resolves"]
        assert (c["status"], c["message"]) == ("pass", f"{name} resolves to {vip}")
        assert h["facts"]["endpoint_addresses"] == [vip]


# --------------------------------------------------------------------------- 7. bad inventory

def test_bad_inventory_exits_3_with_file_and_line(tmp_path: Path) -> None:
    deep = tmp_path / ("inventories-of-a-rather-long-project-name-" * 2)
    deep.mkdir()
    path = deep / "inv.yaml"                    # longer than the 80 columns of a CI log
    path.write_text("cluster:\n"
                    "  name: lab\n"
                    "  kubernetes_version: \"1.36\"\n"
                    "  contrl_plane_endpoint: k8s-api.lab:6443\n"
                    "hosts:\n"
                    "  - name: cp-1\n"
                    "    address: 198.18.250.10\n"
                    "    roles: [control-plane]\n"
                    "    gpu: ture\n")
    rc, out, err = preflight("-i", str(path), json_out=False, timeout=60, columns=80)
    assert rc == 3, (out, err)
    assert out == ""
    assert f"{path}:4: cluster.contrl_plane_endpoint: unknown key" in err
    assert "did you mean 'control_plane_endpoint'" in err
    assert f"{path}:9: hosts[0].gpu:" in err


# --------------------------------------------------------------------------- 8. --local

def test_local_preflight_on_this_machine() -> None:
    rc, doc, err = preflight("--local", timeout=120)
    assert rc in (0, 1), err
    assert doc["ok"] is (rc == 0)
    assert len(doc["hosts"]) == 1
    h = doc["hosts"][0]
    assert h["reachable"] is True and h["address"] == "localhost"
    assert [c["id"] for c in h["checks"]] == list(CHECK_IDS)
    assert isinstance(h["facts"]["uid"], int) and h["facts"]["os"]["id"]


# --------------------------------------------------------------------------- 9. NVIDIA facts (issue 11 item 6)

def test_nvml_mismatch_module_wording_and_mig_mode_facts(broken_run: tuple[int, dict]) -> None:
    hosts = hosts_of(broken_run[1])
    nv = hosts["nvml"]["facts"]
    assert nv["nvml_error"] == "Failed to initialize NVML: Driver/library version mismatch"
    assert nv["nvml_library_version"] == "595.91"
    assert nv["nvidia_smi_ok"] is False
    assert (nv["nvidia_driver_version"], nv["nvidia_kernel_module"]) == ("580.95.05", "proprietary")
    # no NVML: named from the device id table
    assert [(g["device_id"], g["name"], g["mig_mode"]) for g in nv["gpus"]] == [
        ("0x2330", "H100 SXM5 80GB", None)]
    mig = hosts["mig-on"]["facts"]
    assert [(g["pci_address"], g["mig_mode"], g["mig_mode_pending"]) for g in mig["gpus"]] == [
        ("0000:01:00.0", "enabled", "enabled"), ("0000:02:00.0", "enabled", "enabled")]
    assert mig["nvidia_kernel_module"] == "open" and mig["nvml_error"] is None
    # L4s have no MIG ("[N/A]"): no mode; nothing new for hosts without these conditions
    hy = hosts["hybrid"]["facts"]
    assert [(g["mig_mode"], g["mig_mode_pending"]) for g in hy["gpus"]] == [(None, None)] * 2
    assert (hy["nvml_error"], hy["nvml_library_version"]) == (None, None)
