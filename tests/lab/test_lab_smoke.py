"""Proves the lab itself: real sshd hosts whose probe output matches their fixtures."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gpuk8s.facts import parse_probe
from gpuk8s.facts.probe import probe_args
from gpuk8s.shell import Cmd
from gpuk8s.inventory import load_inventory
from tests.lab.fixture import ALICE_PASSWORD, GPU, HostFixture, containerd_config, DOCKER_CONTAINERD_CONFIG
from tests.lab.lab import IFACE_PREFIX, LAB_DIR_PREFIX, PROBE_SCRIPT, Lab

pytestmark = pytest.mark.lab

CP = HostFixture(
    "cp-1", roles=("control-plane",), os="ubuntu-24.04", cpus=16, memory_mib=65536,
    containerd="2.1.4", kube="1.36.2", helm="3.19.0", listening_ports=(6443,),
)
GPU1 = HostFixture(
    "gpu-1", os="ubuntu-22.04", cpus=32, memory_mib=262144, swap=True,
    gpus=[GPU("L4", audio=True)] * 2, nvidia_driver="595.91.07", secure_boot=True,
    containerd="1.7.27", containerd_config=containerd_config("1.7.27", systemd_cgroup=False),
    nouveau_blacklisted=True, unattended_upgrades=True,
)
GPU2 = HostFixture(
    "gpu-2", hostname="node-b.example", os="rocky-9", cgroup=1, cpus=96, memory_mib=1048576,
    product_uuid="4C4C4544-0042-3510-8052-B7C04F4E3732",
    gpus=[GPU("H100")] * 4, nvswitches=2, nvidia_smi=True, nouveau=True, lspci=False,
    secure_boot=None, time_sync=False, ip_forward=False, modules=("overlay",), firewalld=True,
    containerd="1.7.27", containerd_config=DOCKER_CONTAINERD_CONFIG, resolve_endpoint=False,
    selinux="enforcing", swap_in_fstab=True, swap_unit=True,
)


@pytest.fixture(scope="module")
def lab3(lab_factory):
    t0 = time.monotonic()
    lab = lab_factory([CP, GPU1, GPU2])
    print(f"\n[lab] 3 hosts up in {time.monotonic() - t0:.2f}s {lab.timings}")
    yield lab
    lab.close()


def openssh(lab: Lab, name: str, command: str, user: str = "root", stdin: str | None = None,
            timeout: float = 60, connect_timeout: float = 5) -> subprocess.CompletedProcess:
    """Plain OpenSSH client, exactly as a person would run it."""
    argv = ["ssh", "-F", "/dev/null", "-i", lab.client_key, "-o", f"UserKnownHostsFile={lab.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
            f"{user}@{lab.address(name)}", command]
    return subprocess.run(argv, input=stdin, text=True, capture_output=True, timeout=timeout)


def probe_facts(lab: Lab, name: str, user: str = "root", sudo: bool = False):
    script = PROBE_SCRIPT.read_text()      # gpuk8s/facts/probe.sh, with the tool's arguments
    cmd = Cmd("sh", "-s", "--", *probe_args("k8s-api.lab")).render()
    if sudo:
        cmd = "sudo -n -- " + cmd
    r = openssh(lab, name, cmd, user=user, stdin=script)
    assert r.returncode == 0, r.stderr
    return parse_probe(r.stdout)


def test_facts_match_fixtures(lab3: Lab) -> None:
    cp = probe_facts(lab3, "cp-1")
    assert (cp.os.id, cp.os.version_id) == ("ubuntu", "24.04")
    assert cp.hostname == "cp-1"
    assert cp.kernel == "6.8.0-79-generic"
    assert cp.cgroup_version == 2
    assert cp.cpus == 16 and cp.memory_mib == 65536
    assert cp.swap_enabled is False and cp.swap_fstab_entries == [] and cp.swap_units == []
    assert cp.addresses == [f"{lab3.address('cp-1')}/24", f"{lab3.address6('cp-1')}/64"]
    assert cp.product_uuid == lab3.host("cp-1").product_uuid
    assert cp.overlay_available and cp.br_netfilter_loaded
    assert cp.sysctls["net.ipv4.ip_forward"] == "1"
    assert cp.sysctls["net.bridge.bridge-nf-call-iptables"] == "1"
    assert cp.containerd_version == "2.1.4"
    assert cp.containerd.version == 3 and cp.containerd.systemd_cgroup is True
    assert (cp.kubeadm_version, cp.kubelet_version, cp.kubectl_version) == ("1.36.2",) * 3
    assert cp.helm_version == "3.19.0"
    assert 6443 in cp.listening_ports and 22 in cp.listening_ports
    assert cp.endpoint_addresses == [lab3.address("cp-1")]
    assert cp.gpus == [] and cp.nvidia_smi_ok is None
    assert cp.binaries["kubectl"] == "/usr/local/bin/kubectl"
    assert cp.service_active("containerd")
    assert cp.services["kubelet"]["active"] == "activating"
    assert cp.time_synchronized is True and cp.ntp_enabled is True
    assert cp.ufw_enabled is False
    assert cp.unattended_upgrades is False
    assert cp.secure_boot is False and cp.uefi is True

    g1 = probe_facts(lab3, "gpu-1")
    assert (g1.os.id, g1.os.version_id, g1.hostname) == ("ubuntu", "22.04", "gpu-1")
    assert g1.cpus == 32 and g1.memory_mib == 262144
    assert g1.swap_enabled is True and g1.swap_devices == ["/swap.img"] and len(g1.swap_fstab_entries) == 1
    assert [(g.pci_address, g.device_id, g.name, g.driver) for g in g1.gpus] == [
        ("0000:01:00.0", "0x27b8", "NVIDIA L4", "nvidia"), ("0000:02:00.0", "0x27b8", "NVIDIA L4", "nvidia")]
    assert [(f.pci_address, f.class_id) for f in g1.nvidia_other_functions] == [
        ("0000:01:00.1", "0x040300"), ("0000:02:00.1", "0x040300")]
    assert g1.nvidia_smi_ok is True and g1.nvidia_driver_version == "595.91.07"
    assert g1.nouveau_loaded is False and g1.nouveau_blacklisted is True
    assert g1.secure_boot is True
    assert g1.containerd_version == "1.7.27"
    assert g1.containerd.version == 2 and g1.containerd.systemd_cgroup is False
    assert g1.kubeadm_version is None and g1.kubectl_version is None and g1.helm_version is None
    assert "kubectl" not in g1.binaries and "kubeadm" not in g1.binaries   # /usr/bin/kubectl is hidden
    assert g1.unattended_upgrades is True
    assert g1.endpoint_addresses == [lab3.address("cp-1")]

    g2 = probe_facts(lab3, "gpu-2")
    assert (g2.os.id, g2.os.version_id) == ("rocky", "9.6")
    assert g2.hostname == "node-b.example"
    assert g2.cgroup_version == 1
    assert g2.cpus == 96 and g2.memory_mib == 1048576
    assert g2.swap_enabled is False and len(g2.swap_fstab_entries) == 1
    assert g2.swap_units == ["dev-mapper-rl\\x2dswap.swap"]
    assert g2.product_uuid == "4c4c4544-0042-3510-8052-b7c04f4e3732"
    assert [(g.device_id, g.name, g.driver) for g in g2.gpus] == [("0x2330", "H100 SXM5 80GB", "nouveau")] * 4
    assert g2.nvswitch_count == 2
    assert g2.nvidia_smi_ok is False
    assert "couldn't communicate with the NVIDIA driver" in (g2.nvidia_smi_error or "")
    assert g2.nvidia_driver_version is None
    assert g2.nouveau_loaded is True and g2.nouveau_blacklisted is False
    assert "lspci" not in g2.binaries and "apt-get" not in g2.binaries and g2.binaries["dnf"]
    assert g2.secure_boot is False and g2.uefi is False
    assert g2.time_synchronized is False
    assert g2.sysctls["net.ipv4.ip_forward"] == "0"
    assert "net.bridge.bridge-nf-call-iptables" not in g2.sysctls and g2.br_netfilter_loaded is False
    assert g2.service_active("firewalld")
    assert g2.containerd.cri_disabled is True
    assert g2.endpoint_addresses == []
    assert g2.selinux_enforcing is True
    assert g2.ufw_enabled is None


def test_nvidia_smi_real_formats(lab3: Lab) -> None:
    r = openssh(lab3, "gpu-1", "nvidia-smi -L")
    assert r.returncode == 0
    assert re.fullmatch(r"(GPU \d: NVIDIA L4 \(UUID: GPU-[0-9a-f-]{36}\)\n){2}", r.stdout)
    r = openssh(lab3, "gpu-2", "nvidia-smi; echo rc=$?")
    assert r.stdout.startswith("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
                               "Make sure that the latest NVIDIA driver is installed and running.")
    assert r.stdout.rstrip().endswith("rc=9")
    r = openssh(lab3, "gpu-1", "lspci -Dnn -d 10de: | head -n 1; containerd --version")
    assert r.stdout.splitlines() == [
        "0000:01:00.0 3D controller [0302]: NVIDIA Corporation AD104GL [L4] [10de:27b8] (rev a1)",
        "containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da"]
    r = openssh(lab3, "cp-1", "containerd --version; kubectl version --client; kubelet --version; "
                              "kubeadm version -o short; helm version --short; mokutil --sb-state")
    assert r.stdout.splitlines() == [
        "containerd containerd.io v2.1.4 75cb2b7193e4e490e9fbdc236c0e811ccaba3376",
        "Client Version: v1.36.2", "Kustomize Version: v5.7.1", "Kubernetes v1.36.2", "v1.36.2",
        "v3.19.0+g3d8990f", "SecureBoot disabled"]
    r = openssh(lab3, "gpu-2", "mokutil --sb-state; echo rc=$?")
    assert "EFI variables are not supported on this system" in r.stderr
    # the query form the probe uses, GPU count field, vendor filter in either case, no filter
    r = openssh(lab3, "gpu-1", "nvidia-smi --query-gpu=index,name,count --format=csv,noheader; "
                               "lspci -d 10DE: | wc -l; lspci | wc -l; uname -rm; uname -m -r; uname -m")
    arch = os.uname().machine
    kernel = r.stdout.splitlines()[5].split()[0]
    assert r.stdout.splitlines() == ["0, NVIDIA L4, 2", "1, NVIDIA L4, 2", "4", "6",
                                     f"{kernel} {arch}", f"{kernel} {arch}", arch]
    r = openssh(lab3, "gpu-1", "nvidia-smi --query-gpu=index,bogus --format=csv; echo rc=$?")
    assert r.stdout.splitlines() == ['Field "bogus" is not a valid field to query.', "", "rc=2"]
    # real sysfs links a bound device from both sides
    r = openssh(lab3, "gpu-1", "ls /sys/bus/pci/drivers/nvidia; readlink -f /sys/bus/pci/drivers/nvidia/0000:01:00.0")
    assert r.stdout.split()[:2] == ["0000:01:00.0", "0000:02:00.0"]
    assert r.stdout.split()[-1] == "/sys/devices/pci0000:00/0000:01:00.0"


def test_systemctl_simulator(lab3: Lab) -> None:
    r = openssh(lab3, "cp-1", "systemctl is-active containerd; echo rc=$?; systemctl is-enabled nope; echo rc=$?; "
                              "systemctl stop containerd; systemctl is-active containerd; echo rc=$?")
    assert r.stdout.split() == ["active", "rc=0", "rc=1", "inactive", "rc=3"]
    assert "Failed to get unit file state for nope.service: No such file or directory" in r.stderr
    openssh(lab3, "cp-1", "systemctl start containerd")
    assert lab3.exec("cp-1", "systemctl is-active containerd").stdout.strip() == "active"
    r = openssh(lab3, "cp-1", "systemctl show -p Id,ActiveState,UnitFileState containerd kubelet.service nope")
    assert r.stdout.split("\n\n") == [
        "Id=containerd.service\nActiveState=active\nUnitFileState=enabled",
        "Id=kubelet.service\nActiveState=activating\nUnitFileState=enabled",  # no kubeadm config yet
        "Id=nope.service\nActiveState=inactive\nUnitFileState=\n"]


def test_sudo_users(lab3: Lab) -> None:
    r = openssh(lab3, "cp-1", "sudo -n true && echo ok", user="ops")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    r = openssh(lab3, "cp-1", "sudo -n true", user="alice")
    assert r.returncode != 0 and "sudo: a password is required" in r.stderr
    r = openssh(lab3, "cp-1", "sudo -S -p '' id -u", user="alice", stdin=ALICE_PASSWORD + "\n")
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stderr
    # Without sudo, the probe cannot read root-only DMI; with sudo it can.
    as_ops = probe_facts(lab3, "gpu-1", user="ops")
    assert as_ops.uid == 2001 and as_ops.product_uuid is None
    via_sudo = probe_facts(lab3, "gpu-1", user="ops", sudo=True)
    assert via_sudo.uid == 0 and via_sudo.product_uuid == lab3.host("gpu-1").product_uuid


def test_host_changes_stay_in_the_lab(lab3: Lab) -> None:
    marker = f"/etc/gpuk8s-lab-marker-{os.getpid()}"
    r = openssh(lab3, "cp-1", f"touch {marker} /usr/bin/gpuk8s-marker /root/marker /tmp/marker && "
                              "sysctl -w net.ipv4.ip_forward=0 >/dev/null && echo done")
    assert r.stdout.strip() == "done", r.stderr
    assert lab3.exec("cp-1", f"ls {marker}").returncode == 0
    assert not os.path.exists(marker) and not os.path.exists("/usr/bin/gpuk8s-marker")
    assert not os.path.exists("/root/marker")
    # Every other top-level tree is a per-host copy too, and "/" itself is read-only.
    cwd_marker = f"{os.getcwd()}/gpuk8s-lab-marker-{os.getpid()}"
    # (Under /tmp the checkout is not even visible in a host: each host has its own /tmp.)
    lab3.exec("cp-1", f"touch {cwd_marker}")
    assert not os.path.exists(cwd_marker)
    r = lab3.exec("cp-1", "touch /gpuk8s-lab-marker")
    assert r.returncode != 0 and "Read-only file system" in r.stderr and not os.path.exists("/gpuk8s-lab-marker")
    assert lab3.exec("gpu-1", f"ls {marker}").returncode != 0
    if os.path.exists("/usr/bin/kubectl"):   # this machine's binary is hidden in the lab, not removed
        assert lab3.exec("cp-1", "ls /usr/bin/kubectl").returncode != 0
    assert socket.gethostname() not in {"cp-1", "gpu-1", "node-b.example"}
    lab3.exec("cp-1", "sysctl -w net.ipv4.ip_forward=1")


def test_ssh_failure_modes(lab3: Lab) -> None:
    # Connection refused.
    lab3.stop_sshd("gpu-1")
    r = openssh(lab3, "gpu-1", "true")
    assert r.returncode == 255 and "Connection refused" in r.stderr
    lab3.start_sshd("gpu-1")
    assert openssh(lab3, "gpu-1", "echo back").stdout.strip() == "back"
    # Banner never comes.
    lab3.hang_sshd("gpu-1")
    t0 = time.monotonic()
    r = openssh(lab3, "gpu-1", "true", connect_timeout=2, timeout=30)
    assert r.returncode == 255 and "timed out" in r.stderr and time.monotonic() - t0 < 20
    lab3.resume_sshd("gpu-1")
    assert openssh(lab3, "gpu-1", "echo back").stdout.strip() == "back"
    # Changed host key.
    lab3.rotate_host_key("gpu-1")
    r = openssh(lab3, "gpu-1", "true")
    assert r.returncode == 255 and "Host key verification failed" in r.stderr
    lab3.refresh_known_hosts()
    assert openssh(lab3, "gpu-1", "echo back").stdout.strip() == "back"
    # Nothing at the address.
    with pytest.raises(OSError):
        socket.create_connection((lab3.unused_address(), 22), timeout=2).close()


def test_inventory(lab3: Lab, tmp_path: Path) -> None:
    path = lab3.write_inventory(tmp_path / "inv.yaml", hosts=["cp-1", "gpu-1"], ssh={"user": "ops"})
    inv = load_inventory(path)
    assert [h.name for h in inv.hosts] == ["cp-1", "gpu-1"]
    assert [h.address for h in inv.hosts] == [lab3.address("cp-1"), lab3.address("gpu-1")]
    assert inv.hosts[0].ssh.user == "ops" and inv.hosts[0].ssh.identity_file == lab3.client_key
    assert inv.hosts[1].gpu is True and inv.cluster.control_plane_endpoint == "k8s-api.lab:6443"
    text = Path(lab3.known_hosts).read_text()
    assert f"{lab3.address('cp-1')} ssh-ed25519 " in text


def _lab_traces(lab: Lab) -> dict[str, list[str]]:
    """What of this lab is visible on the machine: links, mounts, dirs, holder processes."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    mounts = Path("/proc/self/mountinfo").read_text()
    procs = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if f"gpuk8s-lab-holder:{lab.tag}:".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    procs.append(pid)
            except OSError:
                pass
    return {
        "links": [m for m in re.findall(r"^\d+:\s+([^:@\s]+)", links, re.M)
                  if m.startswith(IFACE_PREFIX + lab.tag)],
        "mounts": [ln for ln in mounts.splitlines() if str(lab.dir) in ln],
        "dirs": [str(lab.dir)] if lab.dir.exists() else [],
        "holders": procs,
    }


def _netns() -> list[str]:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()


def test_fifty_hosts(lab_factory) -> None:
    netns_before = _netns()
    oses = ["ubuntu-22.04", "ubuntu-24.04", "rocky-9", "rhel-9", "debian-12"]
    fixtures = [HostFixture("cp-1", roles=("control-plane",), containerd="2.1.4", kube="1.36.2")]
    fixtures += [HostFixture(f"node-{i:02d}", os=oses[i % len(oses)], cpus=4 + i,
                             gpus=[GPU(["L4", "H100", "A100", "T4"][i % 4])] * (i % 3),
                             nvidia_driver="595.91.07" if i % 2 else None, containerd="2.1.4")
                 for i in range(1, 50)]
    t0 = time.monotonic()
    lab = lab_factory(fixtures)
    up = time.monotonic() - t0
    print(f"\n[lab] 50 hosts up in {up:.2f}s {lab.timings}")

    def one(name: str):
        return name, probe_facts(lab, name)

    t1 = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = dict(pool.map(one, lab.names(), timeout=300))
    print(f"[lab] 50 probes over ssh in {time.monotonic() - t1:.2f}s")
    assert len(results) == 50
    for fx in fixtures:
        f = results[fx.name]
        assert f.hostname == fx.name and f.cpus == fx.cpus
        assert len(f.gpus) == len(fx.gpus)
        if fx.nvidia_driver:
            assert f.nvidia_smi_ok is bool(fx.gpus), f.nvidia_smi_error
            assert fx.gpus or f.nvidia_smi_error == "No devices were found"
        else:
            assert f.nvidia_smi_ok is None
    assert len({f.product_uuid for f in results.values()}) == 50
    assert len({tuple(f.macs.values()) for f in results.values()}) == 50

    t2 = time.monotonic()
    lab.close()
    print(f"[lab] 50 hosts torn down in {time.monotonic() - t2:.2f}s")
    assert _lab_traces(lab) == {"links": [], "mounts": [], "dirs": [], "holders": []}
    assert _netns() == netns_before


def test_teardown_leaves_nothing(lab_factory) -> None:
    netns_before = _netns()
    lab = lab_factory([HostFixture("solo", listening_ports=(8080,))])
    assert openssh(lab, "solo", "hostname").stdout.strip() == "solo"
    assert _lab_traces(lab)["holders"] and _lab_traces(lab)["links"]
    lab.close()
    assert _lab_traces(lab) == {"links": [], "mounts": [], "dirs": [], "holders": []}
    assert _netns() == netns_before


def test_added_hosts_other_port_and_no_sshd(lab3: Lab) -> None:
    lab3.add([HostFixture("alt-port", ssh_port=2222), HostFixture("dark", sshd=False)])
    assert f"[{lab3.address('alt-port')}]:2222 ssh-ed25519 " in Path(lab3.known_hosts).read_text()
    r = subprocess.run(lab3.ssh_argv("alt-port") + ["hostname"], capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "alt-port", r.stderr
    r = openssh(lab3, "dark", "true")
    assert r.returncode == 255 and "Connection refused" in r.stderr
    assert lab3.exec("dark", "hostname").stdout.strip() == "dark"


def test_leftovers_of_crashed_runs_are_removed(lab_factory) -> None:
    dead = 0xFFFFF0                     # above any pid_max: an owner that is surely gone
    bridge = f"{IFACE_PREFIX}{dead:06x}00b"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    stale = Path(f"/tmp/{LAB_DIR_PREFIX}{dead}-0-stale")
    stale.mkdir()
    lab = lab_factory([HostFixture("fresh")])
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert bridge not in links and not stale.exists()
    lab.close()


def test_containerd_config_dump_merges_defaults_and_migrates(lab3: Lab) -> None:
    """`containerd config dump` is the configuration the daemon runs with, not the file."""
    path = "/etc/containerd/config.toml"
    saved = lab3.read_file("cp-1", path) if lab3.exec("cp-1", f"test -f {path}").returncode == 0 else None

    def dump(content: str) -> subprocess.CompletedProcess:
        lab3.write_file("cp-1", path, content)
        return lab3.exec("cp-1", "containerd config dump")

    try:
        # containerd 2.x reading a version 2 file (1.7's format) migrates it to version 3
        r = dump(containerd_config("1.7.27", systemd_cgroup=True, sandbox_image="registry.k8s.io/pause:3.10.1"))
        assert r.returncode == 0, r.stderr
        got = tomllib.loads(r.stdout)
        plugins = got["plugins"]
        assert got["version"] == 3
        runc = plugins["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]["options"]
        assert runc["SystemdCgroup"] is True
        assert plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.10.1"
        assert "sandbox_image" not in plugins["io.containerd.grpc.v1.cri"]
        # a short version 3 file: the defaults fill in everything it does not say
        r = dump("version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n"
                 "  SystemdCgroup = true\n")
        got = tomllib.loads(r.stdout)
        assert got["root"] == "/var/lib/containerd"
        assert got["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]["options"][
            "SystemdCgroup"] is True
        assert got["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"]
        # version 1 (and a file without `version`): containerd 2.x migrates it, short names and all
        r = dump("[plugins.cri]\n  sandbox_image = \"registry.k8s.io/pause:3.8\"\n")
        assert r.returncode == 0, r.stderr
        got = tomllib.loads(r.stdout)
        assert got["version"] == 3
        assert got["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.8"
    finally:
        if saved is None:
            lab3.exec("cp-1", f"rm -f {path}")
        else:
            lab3.write_file("cp-1", path, saved)
