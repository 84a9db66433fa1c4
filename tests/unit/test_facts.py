"""Probe-output parsers against real-world command output (gpuk8s/facts/)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shlex
import shutil
import subprocess
from types import SimpleNamespace

import pytest

from gpuk8s import facts as F
from gpuk8s import paths
from gpuk8s.facts import Facts, parse_probe
from gpuk8s.facts.gpu import _lspci_name
from gpuk8s.facts.probe import SECTION_PARSERS
from gpuk8s.versions import PROBE_TIMEOUT
from tests.lab.fixture import OS_RELEASE_FILES
from tests.unit.fake import FakeHost


def probe(**sections: str) -> str:
    """Probe output as probe.sh prints it: '@@gpuk8s:NAME' then the raw content."""
    return "".join(f"\n@@gpuk8s:{name}\n{content}\n" for name, content in sections.items()) \
        + "\n@@gpuk8s:end\n"


# --------------------------------------------------------------------------- os-release

# The lab's os-release files (what the simulated hosts carry), plus odd ones only tests need.
UBUNTU_2404 = OS_RELEASE_FILES["ubuntu-24.04"]
UBUNTU_2604_DEV = OS_RELEASE_FILES["ubuntu-26.04"]
DEBIAN_12 = OS_RELEASE_FILES["debian-12"]
ROCKY_94 = """NAME="Rocky Linux"
VERSION="9.4 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.4"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"
ANSI_COLOR="0;32"
CPE_NAME="cpe:/o:rocky:rocky:9::baseos"
"""
RHEL_810 = """NAME="Red Hat Enterprise Linux"
VERSION="8.10 (Ootpa)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="8.10"
PLATFORM_ID="platform:el8"
PRETTY_NAME="Red Hat Enterprise Linux 8.10 (Ootpa)"
"""
DEBIAN_SID = """PRETTY_NAME="Debian GNU/Linux trixie/sid"
NAME="Debian GNU/Linux"
VERSION_CODENAME=trixie
ID=debian
HOME_URL="https://www.debian.org/"
"""
CENTOS_7 = """NAME="CentOS Linux"
VERSION="7 (Core)"
ID="centos"
ID_LIKE="rhel fedora"
VERSION_ID="7"
PRETTY_NAME="CentOS Linux 7 (Core)"
ANSI_COLOR="0;31"
CPE_NAME="cpe:/o:centos:centos:7"
"""
AMAZON_2023 = """NAME="Amazon Linux"
VERSION="2023"
ID="amzn"
ID_LIKE="fedora"
VERSION_ID="2023"
PLATFORM_ID="platform:al2023"
PRETTY_NAME="Amazon Linux 2023.5.20240805"
"""
POP_2204 = """NAME="Pop!_OS"
VERSION="22.04 LTS"
ID=pop
ID_LIKE="ubuntu debian"
PRETTY_NAME="Pop!_OS 22.04 LTS"
VERSION_ID="22.04"
VERSION_CODENAME=jammy
UBUNTU_CODENAME=jammy
LOGO=distributor-logo-pop-os
"""
MINT_213 = """NAME="Linux Mint"
VERSION="21.3 (Virginia)"
ID=linuxmint
ID_LIKE="ubuntu debian"
PRETTY_NAME="Linux Mint 21.3"
VERSION_ID="21.3"
VERSION_CODENAME=virginia
UBUNTU_CODENAME=jammy
"""
VERSION_ONLY = """NAME="Rocky Linux"
VERSION="9.2 (Blue Onyx)"
ID="rocky"
"""


@pytest.mark.parametrize("text,os_id,version,like,pretty", [
    (UBUNTU_2404, "ubuntu", "24.04", ["debian"], "Ubuntu 24.04.3 LTS"),
    (UBUNTU_2604_DEV, "ubuntu", "26.04", ["debian"], "Ubuntu Resolute Raccoon (development branch)"),
    (ROCKY_94, "rocky", "9.4", ["rhel", "centos", "fedora"], "Rocky Linux 9.4 (Blue Onyx)"),
    (RHEL_810, "rhel", "8.10", ["fedora"], "Red Hat Enterprise Linux 8.10 (Ootpa)"),
    (DEBIAN_12, "debian", "12", [], "Debian GNU/Linux 12 (bookworm)"),
    (DEBIAN_SID, "debian", None, [], "Debian GNU/Linux trixie/sid"),
    (CENTOS_7, "centos", "7", ["rhel", "fedora"], "CentOS Linux 7 (Core)"),
    (AMAZON_2023, "amzn", "2023", ["fedora"], "Amazon Linux 2023.5.20240805"),
    (POP_2204, "pop", "22.04", ["ubuntu", "debian"], "Pop!_OS 22.04 LTS"),
    (MINT_213, "linuxmint", "21.3", ["ubuntu", "debian"], "Linux Mint 21.3"),
    (VERSION_ONLY, "rocky", "9.2", [], "Rocky Linux"),
    ("", None, None, [], None),
])
def test_os_release(text, os_id, version, like, pretty):
    os = F.parse_os_release(text)
    assert (os.id, os.version_id, os.id_like, os.pretty_name) == (os_id, version, like, pretty)


def test_os_release_codename_and_comments():
    os = F.parse_os_release("# comment\n" + UBUNTU_2404)
    assert os.version_codename == "noble"


# --------------------------------------------------------------------------- versions

@pytest.mark.parametrize("text,expected", [
    ("containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da", "1.7.27"),
    ("containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7193e4e490e9fbdc236c0e811ccaba3376",
     "2.1.4"),
    ("containerd github.com/containerd/containerd 1.7.12-0ubuntu4.1", "1.7.12-0ubuntu4.1"),
    ("containerd containerd.io v2.0.5 fb4c30d4ede3531652d86197bf3fc9515e5276d9", "2.0.5"),
    ("", None),
    ("sh: 1: containerd: not found", None),
])
def test_containerd_version(text, expected):
    assert F.parse_containerd_version(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("Kubernetes v1.36.2", "1.36.2"),                                   # kubelet --version
    ("v1.36.2", "1.36.2"),                                              # kubeadm version -o short
    ("Client Version: v1.36.2\nKustomize Version: v5.7.1", "1.36.2"),   # kubectl version --client
    ("Kustomize Version: v5.7.1\nClient Version: v1.35.6", "1.35.6"),
    ("v3.19.0+g3d8990f", "3.19.0"),                                     # helm version --short
    ("v4.0.1+g12500dd", "4.0.1"),
    ("error: unknown flag: --short\nv3.2.0", "3.2.0"),
    ("/usr/bin/kubelet: error while loading shared libraries: libfoo.so.1", None),
    ("", None),
    (None, None),
])
def test_kube_version(text, expected):
    assert F.parse_kube_version(text) == expected


# --------------------------------------------------------------------------- nvidia-smi

SMI_FAIL = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure "
            "that the latest NVIDIA driver is installed and running.\n\nrc=9")
SMI_OK = ("0, 00000000:01:00.0, NVIDIA L4, 595.91.07, 23034 MiB, [N/A]\n"
          "1, 00000000:02:00.0, NVIDIA L4, 595.91.07, 23034 MiB, [N/A]\nrc=0")


def test_nvidia_smi_failing_without_driver():
    ok, err, gpus = F.parse_nvidia_smi(SMI_FAIL)
    assert ok is False and gpus == {}
    assert err.startswith("NVIDIA-SMI has failed because it couldn't communicate")


def test_nvidia_smi_version_mismatch():
    ok, err, gpus = F.parse_nvidia_smi("Failed to initialize NVML: Driver/library version mismatch\n"
                                       "NVML library version: 580.95\nrc=18")
    assert ok is False and "version mismatch" in err and gpus == {}


def test_nvidia_smi_ok():
    ok, err, gpus = F.parse_nvidia_smi(SMI_OK)
    assert ok is True and err is None
    assert gpus["0000:01:00.0"] == {"name": "NVIDIA L4", "driver_version": "595.91.07"}
    assert set(gpus) == {"0000:01:00.0", "0000:02:00.0"}


def test_nvidia_smi_with_pci_device_id_column():
    ok, _, gpus = F.parse_nvidia_smi("0, 00000000:18:00.0, NVIDIA H100 80GB HBM3, 580.82.07, "
                                     "81559 MiB, Disabled, 0x233010DE\nrc=0")
    assert ok is True
    assert gpus["0000:18:00.0"]["name"] == "NVIDIA H100 80GB HBM3"
    assert gpus["0000:18:00.0"]["device_id"] == "0x2330"


def test_nvidia_smi_absent():
    assert F.parse_nvidia_smi(None) == (None, None, {})
    assert F.parse_nvidia_smi("") == (None, None, {})


def test_nvidia_version_proc():
    text = ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  595.91.07  Release Build  "
            "(dvs-builder@U22-I3-AF03-09-1)  Mon Jul 14 20:31:12 UTC 2025\n"
            "GCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04)")
    assert F.parse_nvidia_version(text) == "595.91.07"
    assert F.parse_nvidia_version("580.82.07\n") == "580.82.07"
    assert F.parse_nvidia_version("") is None


# --------------------------------------------------------------------------- PCI

PCI_L4_HYBRID = """/sys/bus/pci/devices/0000:00:00.0/vendor:0x8086
/sys/bus/pci/devices/0000:01:00.0/vendor:0x10de
/sys/bus/pci/devices/0000:01:00.1/vendor:0x10de
/sys/bus/pci/devices/0000:01:00.2/vendor:0x10de
/sys/bus/pci/devices/0000:02:00.0/vendor:0x10de
/sys/bus/pci/devices/0000:00:00.0/device:0x09a2
/sys/bus/pci/devices/0000:01:00.0/device:0x27b8
/sys/bus/pci/devices/0000:01:00.1/device:0x22bc
/sys/bus/pci/devices/0000:01:00.2/device:0x1ada
/sys/bus/pci/devices/0000:02:00.0/device:0x27b8
/sys/bus/pci/devices/0000:00:00.0/class:0x060000
/sys/bus/pci/devices/0000:01:00.0/class:0x030200
/sys/bus/pci/devices/0000:01:00.1/class:0x040300
/sys/bus/pci/devices/0000:01:00.2/class:0x0c0330
/sys/bus/pci/devices/0000:02:00.0/class:0x030200"""


def test_pci_without_lspci_gpu_and_non_gpu_functions():
    f = parse_probe(probe(pci=PCI_L4_HYBRID, pci_driver="0000:01:00.0 nouveau\n"
                          "0000:01:00.1 snd_hda_intel\n0000:01:00.2 xhci_hcd", lspci=""))
    assert [g.pci_address for g in f.gpus] == ["0000:01:00.0", "0000:02:00.0"]
    assert all(g.name == "L4" and g.device_id == "0x27b8" for g in f.gpus)
    assert f.gpus[0].driver == "nouveau" and f.gpus[1].driver is None
    assert {g.class_id for g in f.nvidia_other_functions} == {"0x040300", "0x0c0330"}
    assert f.nvswitch_count == 0
    assert f.nouveau_loaded is True          # bound to the GPU even if /proc/modules is missing


def test_pci_nvswitch_and_lspci_names():
    pci = """/sys/bus/pci/devices/0000:18:00.0/vendor:0x10de
/sys/bus/pci/devices/0000:18:00.0/device:0x2330
/sys/bus/pci/devices/0000:18:00.0/class:0x030200
/sys/bus/pci/devices/0000:05:00.0/vendor:0x10de
/sys/bus/pci/devices/0000:05:00.0/device:0x22a3
/sys/bus/pci/devices/0000:05:00.0/class:0x068000
/sys/bus/pci/devices/0000:06:00.0/vendor:0x10de
/sys/bus/pci/devices/0000:06:00.0/device:0x22a3
/sys/bus/pci/devices/0000:06:00.0/class:0x068000
/sys/bus/pci/devices/0000:0b:00.0/vendor:0x10de
/sys/bus/pci/devices/0000:0b:00.0/device:0x2204
/sys/bus/pci/devices/0000:0b:00.0/class:0x030000"""
    lspci = ("0000:05:00.0 Bridge [0680]: NVIDIA Corporation GH100 [H100 NVSwitch] [10de:22a3] (rev a1)\n"
             "0000:06:00.0 Bridge [0680]: NVIDIA Corporation GH100 [H100 NVSwitch] [10de:22a3] (rev a1)\n"
             "0000:0b:00.0 VGA compatible controller [0300]: NVIDIA Corporation GA102 "
             "[GeForce RTX 3090] [10de:2204] (rev a1)\n"
             "0000:18:00.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 SXM5 80GB] "
             "[10de:2330] (rev a1)")
    f = parse_probe(probe(pci=pci, lspci=lspci))
    assert f.nvswitch_count == 2
    names = {g.pci_address: g.name for g in f.gpus}
    assert names == {"0000:0b:00.0": "GeForce RTX 3090", "0000:18:00.0": "H100 SXM5 80GB"}
    assert [g.name for g in f.nvidia_other_functions] == ["H100 NVSwitch", "H100 NVSwitch"]


def test_smi_name_wins_and_driver_version_from_smi():
    f = parse_probe(probe(pci=PCI_L4_HYBRID, nvidia_smi=SMI_OK))
    assert [g.name for g in f.gpus] == ["NVIDIA L4", "NVIDIA L4"]
    assert f.nvidia_smi_ok is True and f.nvidia_driver_version == "595.91.07"


def test_no_nvidia_devices():
    f = parse_probe(probe(pci="/sys/bus/pci/devices/0000:00:00.0/vendor:0x8086\n"
                              "/sys/bus/pci/devices/0000:00:00.0/class:0x060000"))
    assert f.gpus == [] and f.nvidia_other_functions == [] and f.nouveau_loaded is False


def test_lspci_name_helper():
    assert _lspci_name("3D controller [0302]: NVIDIA Corporation AD104GL [L4] [10de:27b8] (rev a1)") == "L4"
    assert _lspci_name("3D controller [0302]: NVIDIA Corporation Device [10de:2901] (rev a1)") == "Device"


# --------------------------------------------------------------------------- containerd config

CTD17_V2_OK = """disabled_plugins = []
imports = []
oom_score = 0
root = "/var/lib/containerd"
state = "/run/containerd"
version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.8"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            BinaryName = ""
            SystemdCgroup = true
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
            BinaryName = "/usr/bin/nvidia-container-runtime"
            SystemdCgroup = true
"""
CTD2_V3_OK = """version = 3
root = '/var/lib/containerd'
state = '/run/containerd'
disabled_plugins = []
required_plugins = []
imports = []

[grpc]
  address = '/run/containerd/containerd.sock'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'registry.k8s.io/pause:3.10.1'

  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes]
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
          runtime_type = 'io.containerd.runc.v2'
          [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
            BinaryName = ''
            SystemdCgroup = true
"""
# containerd 2.0/2.1 default config that omits the key (containers/nri-plugins#576).
CTD2_V3_NO_KEY = CTD2_V3_OK.replace("            SystemdCgroup = true\n", "")
# Key appended under the 1.x table of a version 3 file (geerlingguy/ansible-role-containerd#24).
CTD2_V3_MISPLACED = CTD2_V3_NO_KEY + """
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
"""
# A version 2 file with the key under the 2.x table.
CTD17_V2_MISPLACED = """version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = true
"""
# What Docker's containerd.io package installs.
CTD_IO_DEFAULT = """#   Copyright 2018-2022 Docker Inc.

#   Licensed under the Apache License, Version 2.0 (the "License");

disabled_plugins = ["cri"]

#root = "/var/lib/containerd"
#state = "/run/containerd"
#subreaper = true
#oom_score = 0

#[grpc]
#  address = "/run/containerd/containerd.sock"
#  uid = 0
#  gid = 0
"""
CTD_V1 = """[plugins.cri]
  sandbox_image = "registry.k8s.io/pause:3.6"
  [plugins.cri.containerd.runtimes.runc.options]
    SystemdCgroup = true
"""


@pytest.mark.parametrize("text,version,cri_disabled,systemd,misplaced,sandbox", [
    (CTD17_V2_OK, 2, False, True, False, "registry.k8s.io/pause:3.8"),
    (CTD2_V3_OK, 3, False, True, False, "registry.k8s.io/pause:3.10.1"),
    (CTD2_V3_NO_KEY, 3, False, None, False, "registry.k8s.io/pause:3.10.1"),
    (CTD2_V3_MISPLACED, 3, False, None, True, "registry.k8s.io/pause:3.10.1"),
    (CTD17_V2_MISPLACED, 2, False, None, True, "registry.k8s.io/pause:3.10"),
    (CTD17_V2_OK.replace("SystemdCgroup = true", "SystemdCgroup = false"), 2, False, False, False,
     "registry.k8s.io/pause:3.8"),
    (CTD_IO_DEFAULT, 1, True, None, False, None),
    (CTD_V1, 1, False, True, False, "registry.k8s.io/pause:3.6"),
    ('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n', 2, True, None, False, None),
])
def test_containerd_config(text, version, cri_disabled, systemd, misplaced, sandbox):
    cfg = F.parse_containerd_config(text)
    assert cfg.present and cfg.parse_error is None
    assert (cfg.version, cfg.cri_disabled, cfg.systemd_cgroup, cfg.systemd_cgroup_misplaced,
            cfg.sandbox_image) == (version, cri_disabled, systemd, misplaced, sandbox)


def test_containerd_config_invalid_toml():
    cfg = F.parse_containerd_config(CTD17_V2_OK.replace("SystemdCgroup = true", "SystemdCgroup = True"))
    assert cfg.present and cfg.parse_error and cfg.version is None


def test_containerd_config_absent():
    assert F.parse_containerd_config(None).present is False
    f = parse_probe(probe(containerd_config=""))
    assert f.containerd.present is False


def test_containerd_config_through_probe():
    f = parse_probe(probe(containerd_version="containerd github.com/containerd/containerd/v2 v2.1.4 "
                                             "75cb2b7193e4e490e9fbdc236c0e811ccaba3376",
                          containerd_config=CTD2_V3_OK))
    assert f.containerd_version == "2.1.4"
    assert f.containerd.version == 3 and f.containerd.systemd_cgroup is True


# --------------------------------------------------------------------------- swap

FSTAB = """# /etc/fstab: static file system information.
#
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
/dev/disk/by-uuid/4f1c7a2e-1111-2222-3333-444455556666 / ext4 defaults 0 1
UUID=8A1B-2C3D  /boot/efi       vfat    umask=0077      0       1
#/swap.img	none	swap	sw	0	0
  # /dev/sdb2 none swap sw 0 0
/dev/mapper/rl-swap     none                    swap    defaults        0 0
/dev/sdc1 none swap sw,noauto 0 0
"""


def test_fstab_swap_ignores_comments_and_noauto():
    assert F.parse_fstab_swap(FSTAB) == ["/dev/mapper/rl-swap     none                    swap    "
                                         "defaults        0 0"]
    assert F.parse_fstab_swap("#/swap.img\tnone\tswap\tsw\t0\t0\n") == []


def test_swaps():
    text = ("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
            "/swap.img                               file\t\t2097148\t\t0\t\t-2\n"
            "/dev/zram0                              partition\t8388604\t\t0\t\t100")
    assert F.parse_swaps(text) == ["/swap.img", "/dev/zram0"]
    f = parse_probe(probe(swaps="Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority"))
    assert f.swap_enabled is False and f.swap_devices == []
    assert parse_probe(probe(uid="0")).swap_enabled is None


def test_swap_units_masked_and_live():
    text = ("/etc/systemd/system/swap.img.swap -> /dev/null\n"
            "/usr/lib/systemd/system/swap.img.swap\n"
            "/etc/systemd/system/dev-sdb2.swap\n"
            "/etc/systemd/system/swap.target.wants/dev-sdb2.swap -> /etc/systemd/system/dev-sdb2.swap")
    assert F.parse_swap_units(text) == ["dev-sdb2.swap"]


# --------------------------------------------------------------------------- network

LINKS = """1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
2: eno1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc mq state UP mode DEFAULT group default qlen 1000\\    link/ether 3C:EC:EF:12:34:56 brd ff:ff:ff:ff:ff:ff\\    altname enp24s0f0
3: docker0: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state DOWN mode DEFAULT group default \\    link/ether 02:42:8e:1a:2b:3c brd ff:ff:ff:ff:ff:ff
4: ib0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 4092 qdisc mq state UP mode DEFAULT group default qlen 256\\    link/infiniband 00:00:10:29:fe:80:00:00:00:00:00:00:b8:3f:d2:03:00:aa:bb:cc brd 00:ff:ff:ff:ff:12:40:1b:ff:ff:00:00:00:00:00:00:ff:ff:ff:ff
5: cali1234abcd@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UP mode DEFAULT group default \\    link/ether ee:ee:ee:ee:ee:ee brd ff:ff:ff:ff:ff:ff link-netns cni-1234
6: eno1.100@eno1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 3c:ec:ef:12:34:56 brd ff:ff:ff:ff:ff:ff
7: vxlan.calico: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UNKNOWN mode DEFAULT group default \\    link/ether 66:1f:2a:3b:4c:5d brd ff:ff:ff:ff:ff:ff"""

ADDRS = """1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: eno1    inet 10.0.0.11/24 metric 100 brd 10.0.0.255 scope global dynamic eno1\\       valid_lft 85945sec preferred_lft 85945sec
3: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\       valid_lft forever preferred_lft forever
1: lo    inet6 ::1/128 scope host noprefixroute \\       valid_lft forever preferred_lft forever
2: eno1    inet6 2001:db8::11/64 scope global dynamic mngtmpaddr noprefixroute \\       valid_lft 2591975sec preferred_lft 604775sec
2: eno1    inet6 fe80::3eec:efff:fe12:3456/64 scope link \\       valid_lft forever preferred_lft forever"""

ROUTES = """default via 10.0.0.1 dev eno1 proto dhcp src 10.0.0.11 metric 100
10.0.0.0/24 dev eno1 proto kernel scope link src 10.0.0.11 metric 100
172.17.0.0/16 dev docker0 proto kernel scope link src 172.17.0.1 linkdown
192.168.50.0/24 via 10.0.0.254 dev eno1
10.0.0.53 via 10.0.0.1 dev eno1
blackhole 10.244.1.0/26 proto 80
2001:db8::/64 dev eno1 proto ra metric 100 pref medium
fe80::/64 dev eno1 proto kernel metric 256 pref medium
default via fe80::1 dev eno1 proto ra metric 100 pref medium"""


def test_links_skip_virtual_and_non_ethernet():
    assert F.parse_links(LINKS) == {"eno1": "3c:ec:ef:12:34:56", "eno1.100": "3c:ec:ef:12:34:56"}


def test_addrs_global_only():
    assert F.parse_addrs(ADDRS) == ["10.0.0.11/24", "172.17.0.1/16", "2001:db8::11/64"]


def test_routes():
    routes, default = F.parse_routes(ROUTES)
    assert default is True
    assert routes == ["10.0.0.0/24", "172.17.0.0/16", "192.168.50.0/24", "10.0.0.53/32",
                      "2001:db8::/64", "fe80::/64"]
    assert F.parse_routes("10.0.0.0/24 dev eno1 proto kernel scope link") == (["10.0.0.0/24"], False)


PROC_NET_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 3500007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 19393 1 0000000000000000 100 0 0 10 5
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 22468 1 0000000000000000 100 0 0 10 0
   2: 0B00000A:0016 6400000A:C1A2 01 00000000:00000000 02:0009B9D4 00000000     0        0 48012 4 0000000000000000 20 4 31 10 -1
   3: 0B00000A:9C40 0B00000A:0CEB 06 00000000:00000000 03:00001767 00000000     0        0 0 3 0000000000000000
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:280A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 30556 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 22470 1 0000000000000000 100 0 0 10 0"""


def test_listen_ports_from_proc_net_tcp():
    assert F.parse_listen(PROC_NET_TCP) == [22, 53, 10250]


SS_LISTEN = """LISTEN 0      4096   127.0.0.53%lo:53         0.0.0.0:*
LISTEN 0      128          0.0.0.0:22         0.0.0.0:*
LISTEN 0      4096       127.0.0.1:10248      0.0.0.0:*
LISTEN 0      4096               *:10250            *:*
LISTEN 0      128             [::]:22            [::]:*
LISTEN 0      4096  [fe80::1%eth0]:2379          [::]:*"""


def test_listen_ports_from_ss():
    assert F.parse_listen(SS_LISTEN) == [22, 53, 2379, 10248, 10250]


# --------------------------------------------------------------------------- time, firewall, services

def test_timedatectl():
    text = ("Timezone=Etc/UTC\nLocalRTC=no\nCanNTP=yes\nNTP=yes\nNTPSynchronized=yes\n"
            "TimeUSec=Tue 2026-08-25 10:00:00 UTC\nRTCTimeUSec=Tue 2026-08-25 10:00:00 UTC")
    assert F.parse_timedatectl(text) == (True, True)
    assert F.parse_timedatectl("NTP=no\nNTPSynchronized=no") == (False, False)
    assert F.parse_timedatectl("") == (None, None)


def test_ufw_conf():
    text = ("# /etc/ufw/ufw.conf\n#\n\n# Set to yes to start on boot. If setting this remotely, be "
            "sure to add a rule\n# to allow your remote connection before starting ufw. Eg: 'ufw "
            "allow 22/tcp'\nENABLED=no\n\n# Please use the 'ufw' command to set the loglevel.\n"
            "LOGLEVEL=low\n")
    assert F.parse_ufw_conf(text) is False
    assert F.parse_ufw_conf("ENABLED=yes\n") is True
    assert F.parse_ufw_conf(None) is None


SYSTEMCTL_SHOW = """Id=containerd.service
LoadState=loaded
ActiveState=active
UnitFileState=enabled

Id=kubelet.service
LoadState=not-found
ActiveState=inactive
UnitFileState=

Id=firewalld.service
LoadState=loaded
ActiveState=active
UnitFileState=enabled

Id=chronyd.service
LoadState=loaded
ActiveState=active
UnitFileState=enabled

Id=dnf-automatic.timer
LoadState=loaded
ActiveState=inactive
UnitFileState=disabled"""


def test_services_and_firewalld():
    f = parse_probe(probe(services=SYSTEMCTL_SHOW))
    assert f.service_active("firewalld") and f.service_active("chronyd")
    assert f.service_active("containerd")
    assert "kubelet" not in f.services          # not-found units are left out
    assert not f.service_active("ufw")
    assert f.services["dnf-automatic.timer"]["enabled"] == "disabled"
    assert f.unattended_upgrades is False


def test_auto_upgrades():
    on = 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n'
    off = 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "0";\n'
    assert F.parse_auto_upgrades(on, {}) is True
    assert F.parse_auto_upgrades(off, {}) is False
    dnf = {"dnf-automatic.timer": {"active": "active", "enabled": "enabled"}}
    assert F.parse_auto_upgrades(None, dnf) is True
    assert F.parse_auto_upgrades(None, {}) is None
    # as the probe prints it: apt present, settings with their files; the last file wins
    assert F.parse_auto_upgrades("apt=yes", {}) is False
    both = ('apt=yes\n/etc/apt/apt.conf.d/20auto-upgrades:APT::Periodic::Unattended-Upgrade "1";\n'
            '/etc/apt/apt.conf.d/99gpuk8s:APT::Periodic::Unattended-Upgrade "0";')
    assert F.parse_auto_upgrades(both, {}) is False
    assert F.parse_auto_upgrades(both.replace('"0"', '"2"'), {}) is True


# --------------------------------------------------------------------------- Secure Boot, nouveau

@pytest.mark.parametrize("text,secure,uefi", [
    ("efivar= 6 0 0 0 1", True, True),
    ("efivar= 6 0 0 0 0", False, True),
    ("efivar= 6 0 0 0 1\nSecureBoot disabled", True, True),        # the EFI variable wins
    ("efi=yes\nSecureBoot enabled", True, True),
    ("efi=yes\nSecureBoot disabled\nPlatform is in Setup Mode", False, True),
    ("efi=yes\nSecureBoot validation is disabled in shim\nSecureBoot enabled", True, True),
    ("efi=yes", None, True),
    ("efi=no\nEFI variables are not supported on this system", False, False),
    ("", None, None),
])
def test_secure_boot(text, secure, uefi):
    assert F.parse_secure_boot(text) == (secure, uefi)


@pytest.mark.parametrize("modprobe,cmdline,expected", [
    ("blacklist nouveau\noptions nouveau modeset=0", "", True),
    ("options nouveau modeset=0", "", False),
    ("install nouveau /bin/false", "", True),
    ("", "BOOT_IMAGE=/vmlinuz-6.8.0-79-generic root=/dev/mapper/ubuntu--vg-ubuntu--lv ro "
         "modprobe.blacklist=nouveau quiet splash", True),
    ("", "BOOT_IMAGE=(hd0,gpt2)/vmlinuz-5.14.0 ro rd.driver.blacklist=nouveau", True),
    ("", "module_blacklist=radeon,nouveau", True),
    ("", "BOOT_IMAGE=/vmlinuz ro quiet", False),
])
def test_nouveau_blacklist(modprobe, cmdline, expected):
    assert F.parse_nouveau_blacklist(modprobe, cmdline) is expected


# --------------------------------------------------------------------------- whole probe

def test_full_probe_ubuntu_gpu_node():
    text = probe(
        probe="1", uid="0", os_release=UBUNTU_2404, uname="6.8.0-79-generic\nx86_64",
        hostname="gpu1", cgroup="cgroup2fs", cpus="64",
        meminfo="MemTotal:       527999148 kB\nSwapTotal:       8388604 kB",
        swaps="Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/swap.img  file\t\t8388604\t\t0\t\t-2",
        fstab="/swap.img\tnone\tswap\tsw\t0\t0",
        swap_units="",
        links=LINKS, addrs=ADDRS, routes=ROUTES,
        product_uuid="4C4C4544-0031-3010-8000-B1C04F000001",
        modules="nvidia_uvm\nnvidia_drm\nnvidia_modeset\nnvidia\noverlay\nbr_netfilter",
        filesystems="nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay",
        sysctl="net/ipv4/ip_forward=1\nnet/ipv6/conf/all/forwarding=0\n"
               "net/bridge/bridge-nf-call-iptables=1\nnet/bridge/bridge-nf-call-ip6tables=1",
        binaries="ip=/usr/sbin/ip\niptables=/usr/sbin/iptables\nnvidia-smi=/usr/bin/nvidia-smi",
        services="Id=ufw.service\nLoadState=loaded\nActiveState=active\nUnitFileState=enabled\n\n"
                 "Id=chrony.service\nLoadState=loaded\nActiveState=active\nUnitFileState=enabled",
        timedatectl="NTP=yes\nNTPSynchronized=yes",
        ufw_conf="ENABLED=yes",
        listen=PROC_NET_TCP,
        endpoint="10.0.0.100      STREAM k8s-api.lab\n10.0.0.100      DGRAM  \n10.0.0.100      RAW    ",
        containerd_version="containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da",
        containerd_config=CTD_IO_DEFAULT,
        kubeadm_version="v1.36.2", kubelet_version="Kubernetes v1.36.2",
        kubectl_version="Client Version: v1.36.2\nKustomize Version: v5.7.1",
        helm_version="v3.19.0+g3d8990f",
        pci=PCI_L4_HYBRID, pci_driver="0000:01:00.0 nvidia\n0000:02:00.0 nvidia", lspci="",
        nvidia_smi=SMI_OK,
        nvidia_version="NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  595.91.07  "
                       "Release Build  (dvs-builder@U22)  Mon Jul 14 2025",
        modprobe_nouveau="blacklist nouveau", cmdline="BOOT_IMAGE=/vmlinuz ro quiet",
        secure_boot="efivar= 6 0 0 0 1\nSecureBoot enabled",
        auto_upgrades='APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";',
        cni="10-calico.conflist\ncalico-kubeconfig",
        k8s_state="/etc/kubernetes/kubelet.conf\n/etc/kubernetes/pki/ca.crt",
        selinux="",
    )
    f = parse_probe(text)
    assert f.probe_version == 1 and f.uid == 0
    assert (f.os.id, f.os.version_id) == ("ubuntu", "24.04")
    assert (f.kernel, f.arch, f.hostname) == ("6.8.0-79-generic", "x86_64", "gpu1")
    assert (f.cgroup_version, f.cpus, f.memory_mib) == (2, 64, 515624)
    assert f.swap_enabled is True and f.swap_devices == ["/swap.img"]
    assert f.swap_fstab_entries == ["/swap.img\tnone\tswap\tsw\t0\t0"]
    assert f.product_uuid == "4c4c4544-0031-3010-8000-b1c04f000001"
    assert f.overlay_available is True and f.br_netfilter_loaded is True
    assert f.sysctls["net.ipv4.ip_forward"] == "1"
    assert f.binaries["nvidia-smi"] == "/usr/bin/nvidia-smi"
    assert f.ufw_enabled is True and f.time_synchronized is True
    assert f.listening_ports == [22, 53, 10250]
    assert f.endpoint_addresses == ["10.0.0.100"]
    assert f.containerd_version == "1.7.27"
    assert f.containerd.cri_disabled is True and f.containerd.version == 1
    assert (f.kubeadm_version, f.kubelet_version, f.kubectl_version, f.helm_version) == \
        ("1.36.2", "1.36.2", "1.36.2", "3.19.0")
    assert f.gpu_count == 2 and all(g.driver == "nvidia" for g in f.gpus)
    assert f.nvidia_driver_version == "595.91.07" and f.nvidia_smi_ok is True
    assert f.nouveau_loaded is False and f.nouveau_blacklisted is True
    assert f.secure_boot is True and f.uefi is True
    assert f.unattended_upgrades is True
    assert f.cni_configs == ["10-calico.conflist", "calico-kubeconfig"]
    assert "/etc/kubernetes/kubelet.conf" in f.kubernetes_files
    assert f.selinux_enforcing is None
    assert f.to_dict()["gpus"][0]["device_id"] == "0x27b8"


def test_full_probe_rocky_no_driver_nvidia_smi_failing():
    f = parse_probe(probe(uid="0", os_release=ROCKY_94, uname="5.14.0-427.13.1.el9_4.x86_64\nx86_64",
                          cgroup="cgroup2fs", pci=PCI_L4_HYBRID, nvidia_smi=SMI_FAIL,
                          nvidia_version="", modules="overlay\nnouveau", selinux="1",
                          secure_boot="efi=no"))
    assert f.nvidia_smi_ok is False and "couldn't communicate" in f.nvidia_smi_error
    assert f.nvidia_driver_version is None
    assert f.gpu_count == 2 and f.gpus[0].name == "L4"
    assert f.nouveau_loaded is True and f.nouveau_blacklisted is False
    assert f.selinux_enforcing is True and f.secure_boot is False


def test_empty_and_partial_probe_output():
    f = parse_probe("")
    assert f.uid is None and f.os.id is None and f.gpus == [] and f.swap_enabled is None
    f = parse_probe("garbage before sections\n" + probe(uid="1000"))
    assert f.uid == 1000


def test_split_sections_keeps_order_and_strips():
    sec = F.split_sections(probe(a="1\n", b="x\ny"))
    assert sec["a"] == "1" and sec["b"] == "x\ny" and sec["end"] == ""


def test_sysctl_and_kv():
    assert F.parse_sysctls("net/ipv4/ip_forward=0") == {"net.ipv4.ip_forward": "0"}
    assert F.parse_kv("a=b\nnoequals\nc = d") == {"a": "b", "c": "d"}


def test_getent_dedup():
    assert F.parse_getent("10.0.0.100 STREAM k8s\n10.0.0.100 DGRAM\n10.0.0.101 STREAM") == \
        ["10.0.0.100", "10.0.0.101"]
    assert F.parse_getent("") == []


def test_probe_script_is_packaged():
    text = F.probe_script()
    assert "@@gpuk8s:%s" in text and "product_uuid" in text


@pytest.mark.parametrize("text, expected", [
    ("6.8.0-79-generic x86_64", ("6.8.0-79-generic", "x86_64")),      # uname -rm
    ("6.8.0-79-generic\naarch64", ("6.8.0-79-generic", "aarch64")),   # uname -r; uname -m
    ("6.8.0-79-generic", ("6.8.0-79-generic", None)),
    ("", (None, None)),
    (None, (None, None)),
])
def test_uname(text, expected):
    assert F.parse_uname(text) == expected


def test_binaries_from_command_v_paths_and_legacy_lines():
    assert F.parse_binaries("/usr/sbin/ip\n/usr/bin/kubeadm\n/usr/local/bin/helm\n") == {
        "ip": "/usr/sbin/ip", "kubeadm": "/usr/bin/kubeadm", "helm": "/usr/local/bin/helm"}
    assert F.parse_binaries("ip=/usr/sbin/ip\nnvidia-smi=/usr/bin/nvidia-smi") == {
        "ip": "/usr/sbin/ip", "nvidia-smi": "/usr/bin/nvidia-smi"}
    assert F.parse_binaries("") == {} and F.parse_binaries(None) == {}


CONF_GREP = """/etc/modprobe.d/blacklist-nvidia-nouveau.conf:blacklist nouveau
/etc/modprobe.d/blacklist-nvidia-nouveau.conf:options nouveau modeset=0
/etc/apt/apt.conf.d/20auto-upgrades:APT::Periodic::Unattended-Upgrade "1";
/etc/apt/apt.conf.d/99-off:APT::Periodic::Unattended-Upgrade "0";"""


def test_conf_grep_feeds_nouveau_and_unattended_upgrades():
    modprobe, apt = F.split_conf_grep(CONF_GREP)
    assert modprobe == "blacklist nouveau\noptions nouveau modeset=0"
    assert apt.splitlines() == CONF_GREP.splitlines()[2:]
    f = parse_probe(probe(conf_grep=CONF_GREP, auto_upgrades="apt=yes", cmdline="ro quiet"))
    assert f.nouveau_blacklisted is True
    assert f.unattended_upgrades is False  # 99-off is read last and wins
    f = parse_probe(probe(conf_grep=CONF_GREP.rsplit("\n", 1)[0], auto_upgrades="apt=yes"))
    assert f.unattended_upgrades is True
    f = parse_probe(probe(conf_grep="", auto_upgrades="apt=yes", cmdline="ro quiet"))
    assert f.nouveau_blacklisted is False and f.unattended_upgrades is False


def test_secure_boot_from_od_output_as_printed():
    # `printf 'efivar='; od -An -t u1 FILE`: od pads every byte to 4 columns
    f = parse_probe(probe(secure_boot="efivar=   6   0   0   0   1"))
    assert f.secure_boot is True and f.uefi is True


def test_to_dict_matches_dataclasses_asdict():
    import dataclasses
    import json
    f = parse_probe(probe(uname="6.8.0-79-generic x86_64", secure_boot="efivar= 6 0 0 0 1",
                          pci=PCI_L4_HYBRID, pci_driver="0000:01:00.0 nvidia", nvidia_smi=SMI_OK,
                          containerd_config=CTD_IO_DEFAULT, conf_grep=CONF_GREP, listen=SS_LISTEN))
    assert f.gpus and f.containerd is not None
    d = f.to_dict()
    assert json.dumps(d, sort_keys=True) == json.dumps(dataclasses.asdict(f), sort_keys=True)
    d["gpus"][0]["name"] = "changed"          # a copy, not a view of the facts
    assert f.gpus[0].name != "changed"


# --------------------------------------------------------------------------- section table, probe command

def _printed_sections() -> set[str]:
    """Every section name probe.sh prints (`s NAME` at the start of a command)."""
    return set(re.findall(r"(?:^|;)\s*s ([a-z0-9_]+)", F.probe_script(), re.M))


def test_every_printed_section_has_a_table_row():
    read = {s for row in SECTION_PARSERS for s in row.reads}
    printed = _printed_sections()
    assert len(printed) > 40
    assert printed - read == {"end"}            # the end marker only says the probe finished
    # modprobe_nouveau: what probes printed before conf_grep; still read from recorded output
    assert read - printed == {"modprobe_nouveau"}


def test_every_fact_is_filled_by_exactly_one_row_after_what_it_uses():
    filled: list[str] = []
    for row in SECTION_PARSERS:
        assert set(row.uses) <= set(filled), row
        filled += row.fills
    # parse_errors is the parse's own record of the rows that failed (test_fuzz.py)
    assert sorted(filled) == sorted(f.name for f in dataclasses.fields(Facts) if f.name != "parse_errors")


def test_unknown_section_is_ignored():
    assert parse_probe(probe(uid="0", some_future_section="x\ny")) == parse_probe(probe(uid="0"))


def test_missing_sections_leave_the_defaults():
    assert parse_probe(probe(uid="0")) == Facts(uid=0, overlay_available=None, nouveau_loaded=False,
                                                br_netfilter_loaded=False, nouveau_blacklisted=False)


def test_probe_command_passes_the_lists_of_paths_py():
    inv = SimpleNamespace(cluster=SimpleNamespace(endpoint_host="k8s-api.example.com"))
    words = shlex.split(F.probe_command(inv).render())
    assert words == ["sh", "-s", "--", "k8s-api.example.com", "tcp:6443",
                     *paths.KUBERNETES_STATE_FILES, "--", *paths.MANAGED_FILES]
    no_endpoint = SimpleNamespace(cluster=SimpleNamespace(endpoint_host=None))
    assert shlex.split(F.probe_command(no_endpoint).render())[3] == ""
    assert F.MANAGED_FILES is paths.MANAGED_FILES


def _section(output: str, name: str) -> list[str]:
    return F.split_sections(output)[name].splitlines()


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
def test_probe_script_reads_its_lists_from_the_arguments(tmp_path):
    state, managed = tmp_path / "admin.conf", tmp_path / "with space.conf"
    state.write_text("x")
    managed.write_text("gpuk8s\n")
    digest = hashlib.sha256(managed.read_bytes()).hexdigest()
    args = ["", str(state), str(tmp_path / "absent"), "--",
            str(tmp_path / "missing"), str(managed), str(tmp_path)]   # a directory is not hashed
    out = subprocess.run(["sh", "-s", "--", *args], input=F.probe_script(), text=True,
                         capture_output=True, timeout=60).stdout
    assert _section(out, "k8s_state") == [str(state)]
    assert _section(out, "managed_files") == [f"{digest}  {managed}"]
    assert "end" in F.split_sections(out)


@pytest.mark.parametrize("timeout, expected", [(None, PROBE_TIMEOUT), (7.5, 7.5)])
def test_gather_facts_timeout_follows_the_caller(timeout, expected):
    inv = SimpleNamespace(cluster=SimpleNamespace(endpoint_host="k8s-api.lab"))
    t = FakeHost("h", probe(uid="0"), [], sudo_needs_password=True)
    facts, warning = F.gather_facts(t, inv, timeout=timeout)
    assert facts.uid == 1000 and "password" in warning
    assert [(limit, sudo) for limit, (*_, sudo) in zip(t.timeouts, t.calls)] == \
        [(expected, True), (expected, False)]
    assert {cmd for _, cmd, _, _ in t.calls} == {F.probe_command(inv).render()}
    t = FakeHost("h", probe(uid="0"), [])
    assert F.gather_facts(t, inv, timeout) == (parse_probe(probe(uid="0")), None)


# --------------------------------------------------------------------------- NVIDIA: NVML errors, module wording, MIG

# Recorded: anderskm/gputil#55 and mozilla/translations#1167 (both lines on stdout, exit 18);
# drivers before about R535 print only the first line (lyulyul/shine-cluster#30).
SMI_MISMATCH = ("Failed to initialize NVML: Driver/library version mismatch\n"
                "NVML library version: 535.161\nrc=18")
SMI_MISMATCH_OLD = "Failed to initialize NVML: Driver/library version mismatch\nrc=18"
# zzzhouuu/truenas-nvidia-drivers#19 (proprietary) and cpnr/computing#109 (open)
NVRM_PROPRIETARY = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.173.02  Tue Jun 23 08:38:17 "
                    "UTC 2026\nGCC version:  gcc version 14.2.0 (Ubuntu 14.2.0-4ubuntu2~24.04.1)\n")
NVRM_OPEN = ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.126.09  Release Build  "
             "(dvs-builder@U22-I3-AM02-24-3)  Wed Jan  7 22:51:36 UTC 2026\n"
             "GCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04.1)\n")


def test_nvml_mismatch_fact_from_recorded_output():
    from gpuk8s.facts.gpu import parse_nvml_error
    assert parse_nvml_error(SMI_MISMATCH) == (
        "Failed to initialize NVML: Driver/library version mismatch", "535.161")
    assert parse_nvml_error(SMI_MISMATCH_OLD) == (
        "Failed to initialize NVML: Driver/library version mismatch", None)
    assert parse_nvml_error(SMI_OK) == (None, None)
    assert parse_nvml_error(None) == (None, None)
    f = parse_probe(probe(nvidia_smi=SMI_MISMATCH, nvidia_version=NVRM_PROPRIETARY))
    assert f.nvml_error == "Failed to initialize NVML: Driver/library version mismatch"
    assert f.nvml_library_version == "535.161"
    assert f.nvidia_smi_ok is False and f.nvidia_driver_version == "580.173.02"
    assert f.nvidia_kernel_module == "proprietary"
    # a host without the condition: the new facts are None
    f = parse_probe(probe(nvidia_smi=SMI_OK))
    assert f.nvml_error is None and f.nvml_library_version is None


def test_nvidia_version_in_both_module_wordings():
    assert F.parse_nvidia_version(NVRM_PROPRIETARY) == "580.173.02"
    assert F.parse_nvidia_version(NVRM_OPEN) == "580.126.09"
    assert F.parse_nvidia_module_type(NVRM_PROPRIETARY) == "proprietary"
    assert F.parse_nvidia_module_type(NVRM_OPEN) == "open"
    arm = NVRM_PROPRIETARY.replace("x86_64", "aarch64")
    assert F.parse_nvidia_version(arm) == "580.173.02"
    # the GCC line never gives the version
    assert F.parse_nvidia_version("GCC version:  gcc version 123.4.5\n") is None


def test_nvidia_smi_mig_modes_per_gpu():
    # the probe's query: ...,mig.mode.current,pci.device_id,mig.mode.pending
    # (values as in kubernetes-sigs/dra-driver-nvidia-gpu#852; [N/A] on L4/T4, Syllo/nvtop#470)
    text = ("0, 00000000:18:00.0, NVIDIA H100 80GB HBM3, 595.91.07, 81559 MiB, Enabled, 0x233010DE, Enabled\n"
            "1, 00000000:2A:00.0, NVIDIA H100 80GB HBM3, 595.91.07, 81559 MiB, Disabled, 0x233010DE, Enabled\n"
            "2, 00000000:3A:00.0, NVIDIA L4, 595.91.07, 23034 MiB, [N/A], 0x27B810DE, [N/A]\nrc=0")
    ok, _, gpus = F.parse_nvidia_smi(text)
    assert ok is True
    assert (gpus["0000:18:00.0"]["mig_mode"], gpus["0000:18:00.0"]["mig_mode_pending"]) == ("enabled", "enabled")
    assert (gpus["0000:2a:00.0"]["mig_mode"], gpus["0000:2a:00.0"]["mig_mode_pending"]) == ("disabled", "enabled")
    assert "mig_mode" not in gpus["0000:3a:00.0"] and "mig_mode_pending" not in gpus["0000:3a:00.0"]
    # an older probe's output (no pending column) still gives the current mode
    ok, _, gpus = F.parse_nvidia_smi("0, 00000000:18:00.0, NVIDIA H100 80GB HBM3, 580.82.07, "
                                     "81559 MiB, Enabled, 0x233010DE\nrc=0")
    assert gpus["0000:18:00.0"]["mig_mode"] == "enabled" and "mig_mode_pending" not in gpus["0000:18:00.0"]
    # GPUs built from PCI carry the modes; without nvidia-smi they are unknown
    f = parse_probe(probe(nvidia_smi=text))
    assert [(g.pci_address, g.mig_mode, g.mig_mode_pending) for g in f.gpus] == [
        ("0000:18:00.0", "enabled", "enabled"), ("0000:2a:00.0", "disabled", "enabled"),
        ("0000:3a:00.0", None, None)]


def test_probe_asks_nvidia_smi_for_mig_pending_in_the_same_call():
    from pathlib import Path
    script = (Path(F.__file__).parent / "probe.sh").read_text()
    calls = [ln for ln in script.splitlines() if "nvidia-smi --query-gpu" in ln]
    assert len(calls) == 1
    assert ("--query-gpu=index,pci.bus_id,name,driver_version,memory.total,mig.mode.current,"
            "pci.device_id,mig.mode.pending --format=csv,noheader") in calls[0]
