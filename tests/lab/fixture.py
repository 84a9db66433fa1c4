"""Declarative description of one simulated lab host, and the realistic file contents it implies.

A test states its scenario as a `HostFixture`; `tests/lab/lab.py` turns it into a real sshd in its
own namespaces whose /etc, /proc, /sys and tool simulators show exactly what the fixture says.
Everything here is pure data and text rendering (no processes, no mounts).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

# --------------------------------------------------------------------------- OS presets

_OS_RELEASE = {
    "ubuntu-22.04": """PRETTY_NAME="Ubuntu 22.04.5 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.5 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=jammy
""",
    "ubuntu-24.04": """PRETTY_NAME="Ubuntu 24.04.3 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.3 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=noble
LOGO=ubuntu-logo
""",
    "ubuntu-26.04": """PRETTY_NAME="Ubuntu Resolute Raccoon (development branch)"
NAME="Ubuntu"
VERSION_ID="26.04"
VERSION="26.04 (Resolute Raccoon)"
VERSION_CODENAME=resolute
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=resolute
LOGO=ubuntu-logo
""",
    "debian-12": """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
""",
    "rocky-9": """NAME="Rocky Linux"
VERSION="9.6 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.6"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Rocky Linux 9.6 (Blue Onyx)"
ANSI_COLOR="0;32"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:rocky:rocky:9::baseos"
HOME_URL="https://rockylinux.org/"
VENDOR_NAME="RESF"
VENDOR_URL="https://resf.org/"
BUG_REPORT_URL="https://bugs.rockylinux.org/"
SUPPORT_END="2032-05-31"
ROCKY_SUPPORT_PRODUCT="Rocky-Linux-9"
ROCKY_SUPPORT_PRODUCT_VERSION="9.6"
REDHAT_SUPPORT_PRODUCT="Rocky Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="9.6"
""",
    "rhel-9": """NAME="Red Hat Enterprise Linux"
VERSION="9.6 (Plow)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="9.6"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Red Hat Enterprise Linux 9.6 (Plow)"
ANSI_COLOR="0;31"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:redhat:enterprise_linux:9::baseos"
HOME_URL="https://www.redhat.com/"
DOCUMENTATION_URL="https://access.redhat.com/documentation/en-us/red_hat_enterprise_linux/9"
BUG_REPORT_URL="https://issues.redhat.com/"
REDHAT_BUGZILLA_PRODUCT="Red Hat Enterprise Linux 9"
REDHAT_BUGZILLA_PRODUCT_VERSION=9.6
REDHAT_SUPPORT_PRODUCT="Red Hat Enterprise Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="9.6"
""",
    "rhel-8": """NAME="Red Hat Enterprise Linux"
VERSION="8.10 (Ootpa)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="8.10"
PLATFORM_ID="platform:el8"
PRETTY_NAME="Red Hat Enterprise Linux 8.10 (Ootpa)"
ANSI_COLOR="0;31"
CPE_NAME="cpe:/o:redhat:enterprise_linux:8::baseos"
HOME_URL="https://www.redhat.com/"
DOCUMENTATION_URL="https://access.redhat.com/documentation/en-us/red_hat_enterprise_linux/8"
BUG_REPORT_URL="https://bugzilla.redhat.com/"
REDHAT_BUGZILLA_PRODUCT="Red Hat Enterprise Linux 8"
REDHAT_BUGZILLA_PRODUCT_VERSION=8.10
REDHAT_SUPPORT_PRODUCT="Red Hat Enterprise Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="8.10"
""",
    "centos-7": """NAME="CentOS Linux"
VERSION="7 (Core)"
ID="centos"
ID_LIKE="rhel fedora"
VERSION_ID="7"
PRETTY_NAME="CentOS Linux 7 (Core)"
ANSI_COLOR="0;31"
CPE_NAME="cpe:/o:centos:centos:7"
HOME_URL="https://www.centos.org/"
BUG_REPORT_URL="https://bugs.centos.org/"

CENTOS_MANTISBT_PROJECT="CentOS-7"
CENTOS_MANTISBT_PROJECT_VERSION="7"
REDHAT_SUPPORT_PRODUCT="centos"
REDHAT_SUPPORT_PRODUCT_VERSION="7"

""",
    "amzn-2023": """NAME="Amazon Linux"
VERSION="2023"
ID="amzn"
ID_LIKE="fedora"
VERSION_ID="2023"
PLATFORM_ID="platform:al2023"
PRETTY_NAME="Amazon Linux 2023.8.20250808"
ANSI_COLOR="0;33"
CPE_NAME="cpe:2.3:o:amazon:amazon_linux:2023"
HOME_URL="https://aws.amazon.com/linux/amazon-linux-2023/"
DOCUMENTATION_URL="https://docs.aws.amazon.com/linux/"
SUPPORT_URL="https://aws.amazon.com/premiumsupport/"
BUG_REPORT_URL="https://github.com/amazonlinux/amazon-linux-2023"
VENDOR_NAME="AWS"
VENDOR_URL="https://aws.amazon.com/"
SUPPORT_END="2029-06-30"
""",
}

# preset -> (default kernel release, default cgroup version, package manager)
_OS_DEFAULTS = {
    "ubuntu-22.04": ("5.15.0-144-generic", 2, "apt-get"),
    "ubuntu-24.04": ("6.8.0-79-generic", 2, "apt-get"),
    "ubuntu-26.04": ("6.17.0-5-generic", 2, "apt-get"),
    "debian-12": ("6.1.0-37-amd64", 2, "apt-get"),
    "rocky-9": ("5.14.0-570.17.1.el9_6.x86_64", 2, "dnf"),
    "rhel-9": ("5.14.0-570.12.1.el9_6.x86_64", 2, "dnf"),
    "rhel-8": ("4.18.0-553.el8_10.x86_64", 1, "dnf"),
    "centos-7": ("3.10.0-1160.el7.x86_64", 1, "yum"),
    "amzn-2023": ("6.1.147-172.266.amzn2023.x86_64", 2, "dnf"),
}

OS_PRESETS = tuple(_OS_RELEASE)
OS_RELEASE_FILES = dict(_OS_RELEASE)   # preset -> /etc/os-release text (read-only use)


def _os_release_values(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip("\"'")
    return out


# --------------------------------------------------------------------------- GPUs

@dataclass(frozen=True)
class GPUModel:
    device_id: str          # PCI device id, "0x27b8"
    smi_name: str           # what nvidia-smi prints
    memory_mib: int         # nvidia-smi memory.total
    mig: str                # nvidia-smi mig.mode.current
    chip: str               # lspci chip name
    marketing: str          # lspci [bracketed] name
    audio_device: str | None = None   # device id of the HD audio function, when the board has one
    compute_cap: str = "8.9"


GPU_MODELS: dict[str, GPUModel] = {
    "L4": GPUModel("0x27b8", "NVIDIA L4", 23034, "[N/A]", "AD104GL", "L4", "0x22bc", "8.9"),
    "H100": GPUModel("0x2330", "NVIDIA H100 80GB HBM3", 81559, "Disabled", "GH100", "H100 SXM5 80GB",
                     None, "9.0"),
    "A100": GPUModel("0x20b2", "NVIDIA A100-SXM4-80GB", 81920, "Disabled", "GA100", "A100 SXM4 80GB",
                     None, "8.0"),
    "T4": GPUModel("0x1eb8", "Tesla T4", 15360, "[N/A]", "TU104GL", "Tesla T4", None, "7.5"),
}


@dataclass(frozen=True)
class GPU:
    """One NVIDIA GPU on the bus. `audio` adds the board's HD audio function (class 0x040300)."""

    model: str = "L4"
    audio: bool = False
    pci_address: str | None = None     # "0000:01:00.0"; default: one bus per GPU
    mig: str | None = None             # "Enabled" | "Disabled" (MIG-capable models); None: the model's
    mig_pending: str | None = None     # mig.mode.pending; None: same as the current mode

    def __post_init__(self) -> None:
        for value in (self.mig, self.mig_pending):
            if value is not None and (value not in ("Enabled", "Disabled")
                                      or self.spec.mig == "[N/A]"):
                raise ValueError(f"{self.model}: MIG mode {value!r} (only Enabled/Disabled, and "
                                 "only on a MIG-capable model)")

    @property
    def spec(self) -> GPUModel:
        if self.model not in GPU_MODELS:
            raise ValueError(f"unknown GPU model {self.model!r}; known: {sorted(GPU_MODELS)}")
        return GPU_MODELS[self.model]

    @property
    def mig_current(self) -> str:
        """nvidia-smi mig.mode.current: "[N/A]" on GPUs without MIG."""
        return self.mig or self.spec.mig

    @property
    def mig_pending_mode(self) -> str:
        return self.mig_pending or self.mig_current


# --------------------------------------------------------------------------- users

@dataclass(frozen=True)
class User:
    name: str
    uid: int
    sudo: str | None = None            # None | "nopasswd" | "password"
    password_hash: str = "*"           # "*": no password, but not locked (key auth still allowed)
    ssh_key: bool = True               # the lab client key may log in


ALICE_PASSWORD = "alice-lab-password"
ALICE_HASH = ("$6$gpuk8slab$xzKmaH09CAQ/Hm3.Ebs1ObEEguEfAFlNFXSOecC/3HsuUdoLS6orhLeXIjWHGo8uDf"
              "jglB1R3zQ/a7DwYaM.D1")

DEFAULT_USERS: tuple[User, ...] = (
    User("root", 0),
    User("ops", 2001, sudo="nopasswd"),
    User("alice", 2002, sudo="password", password_hash=ALICE_HASH),
)

# The binaries kubeadm's preflight wants, plus what every real server has.
DEFAULT_BINARIES: tuple[str, ...] = ("ip", "iptables", "mount", "nsenter", "ethtool", "socat", "tc",
                                     "conntrack", "touch", "modprobe", "sysctl")

# Every binary the probe looks for with `command -v` (kept in step with gpuk8s/probe.sh).
PROBED_BINARIES: tuple[str, ...] = (
    "ip", "iptables", "mount", "nsenter", "ethtool", "socat", "tc", "conntrack", "touch", "ebtables",
    "modprobe", "sysctl", "systemctl", "containerd", "runc", "crictl", "kubeadm", "kubelet",
    "kubectl", "helm", "nvidia-smi", "nvidia-ctk", "mokutil", "lspci", "apt-get", "dnf", "yum",
    "curl", "gpg",
)

DEFAULT = "default"   # sentinel: "derive from the OS preset / other fields"


# --------------------------------------------------------------------------- the fixture

@dataclass
class HostFixture:
    """One simulated server, as a test scenario reads it."""

    name: str
    roles: tuple[str, ...] = ("worker",)
    hostname: str | None = None                 # UTS hostname; default: name
    os: str = "ubuntu-24.04"                    # a preset in OS_PRESETS, or raw os-release text
    kernel: str | None = None                   # `uname -r`; None: the preset's; "real": this machine's
    cgroup: int | None = None                   # 2 or 1; None: the preset's default
    cpus: int = 8
    memory_mib: int = 32768
    swap: bool = False                          # an active entry in /proc/swaps
    swap_in_fstab: bool | None = None           # None: same as swap
    swap_unit: bool | str = False               # True: enabled .swap unit; "masked": masked unit
    product_uuid: str | None = None             # None: unique per host
    mac: str | None = None                      # eth0 MAC; None: unique per host
    modules: tuple[str, ...] = ("overlay", "br_netfilter")
    ip_forward: bool = True
    bridge_nf_call: bool = True                 # bridge-nf-call-ip{,6}tables (needs br_netfilter)
    binaries: tuple[str, ...] = DEFAULT_BINARIES
    package_manager: str | None = DEFAULT       # apt-get | dnf | yum | None; DEFAULT: the preset's
    containerd: str | None = None               # "2.1.4"; None: not installed
    containerd_config: str | None = DEFAULT     # file text; DEFAULT: generated, SystemdCgroup = true
    containerd_active: bool = True
    containerd_build: str = "docker"            # docker (containerd.io) | upstream | distro (containerd: "1.7.28-0ubuntu1~24.04.1")
    kube: str | None = None                     # shorthand for kubeadm = kubelet = kubectl
    kubeadm: str | None = DEFAULT
    kubelet: str | None = DEFAULT
    kubectl: str | None = DEFAULT
    helm: str | None = None                     # "3.19.0"
    crictl: str | None = DEFAULT                # DEFAULT: "1.36.0"-style when kubeadm is installed
    nvidia_ctk: str | None = None               # NVIDIA Container Toolkit version
    gpus: list[GPU] = field(default_factory=list)
    nvswitches: int = 0
    lspci: bool = True                          # pciutils installed
    nvidia_driver: str | None = None            # loaded driver version, e.g. "595.91.07"
    nvidia_smi: bool | None = None              # None: installed iff the driver is loaded
    nvidia_kernel_module: str = "open"          # /proc/driver/nvidia/version wording: open | proprietary
    nvml_mismatch: str | None = None            # user-space NVML after a driver upgrade without reboot,
                                                # "595.58": nvidia-smi fails (Driver/library version mismatch)
    nouveau: bool = False                       # nouveau module loaded (bound to GPUs without nvidia)
    nouveau_blacklisted: bool = False           # /etc/modprobe.d/blacklist-nouveau.conf
    nouveau_in_use: bool = False                # a process holds nouveau's DRM device (display manager,
                                                # console): its use count is not 0, so unloading it fails
    cmdline: str | None = None                  # /proc/cmdline; None: a plausible default
    secure_boot: bool | None = False            # None: legacy BIOS (no EFI)
    mokutil: bool = True
    selinux: str | None = None                  # None | "enforcing" | "permissive"
    time_sync: bool = True                      # NTPSynchronized
    ntp: bool = True                            # NTP service enabled
    firewalld: bool | None = None               # None: installed+inactive on RHEL-like, absent on Debian-like
    ufw: bool | None = DEFAULT                  # True/False: ENABLED=yes/no; None: not installed
    unattended_upgrades: bool = False
    docker: bool = False
    listening_ports: tuple[int, ...] = ()       # real TCP listeners in the host's netns
    hosts_entries: tuple[tuple[str, str], ...] = ()   # extra /etc/hosts lines (address, names)
    resolve_endpoint: bool = True               # /etc/hosts maps the lab endpoint to the first CP
    cni: dict[str, str] = field(default_factory=dict)               # /etc/cni/net.d/<file>
    kubernetes_files: dict[str, str] = field(default_factory=dict)  # /etc/kubernetes/<relpath>
    etcd_member: bool = False                   # /var/lib/etcd/member exists
    services: dict[str, tuple[str, str] | None] = field(default_factory=dict)  # unit -> (active, enabled)
    users: tuple[User, ...] = DEFAULT_USERS
    files: dict[str, str | bytes] = field(default_factory=dict)    # extra files by absolute path
    ssh_port: int = 22
    sshd: bool = True                           # False: the address answers, nothing listens (refused)
    gpu: bool | None = DEFAULT                  # inventory `gpu:`; DEFAULT: True when gpus
    apt_tools: bool = True                      # curl and gpg installed (simulated; no network)
    fail_join: bool | str = False               # kubeadm join fails preflight: True -> [ERROR Port-10250];
                                                # a string -> [ERROR KubeletVersion]: <string>
    kubelet_never_ready: bool = False           # the node registers but never turns Ready
    gpu_faults: tuple[str, ...] = ()            # GPU Operator faults (sim/gpuop.py): "no-runtime" (the toolkit's
                                                # drop-in never loads), "unhealthy-gpu" (the device plugin marks one GPU unhealthy),
                                                # "driver-in-use" (a host driver module loads after preflight)

    @classmethod
    def bare(cls, name: str, os: str = "ubuntu-24.04", roles: tuple[str, ...] = ("worker",),
             **changes: Any) -> "HostFixture":
        """A freshly installed server `gpuk8s up` must prepare: no containerd or Kubernetes tools
        (the package manager of its OS offers them), no curl/gpg, swap on (active and in fstab),
        overlay and br_netfilter not loaded, ip_forward 0."""
        base = dict(name=name, os=os, roles=tuple(roles), containerd=None, kube=None, crictl=None,
                    swap=True, swap_in_fstab=True, modules=(), ip_forward=False, bridge_nf_call=False,
                    apt_tools=False)
        base.update(changes)
        return cls(**base)

    # ------------------------------------------------------------------ derived values

    def __post_init__(self) -> None:
        if self.cgroup not in (None, 1, 2):
            raise ValueError("cgroup must be 1 or 2")
        if self.nvidia_kernel_module not in ("open", "proprietary"):
            raise ValueError("nvidia_kernel_module must be 'open' or 'proprietary'")
        if self.nvml_mismatch and not self.nvidia_driver:
            raise ValueError("nvml_mismatch needs a loaded driver (nvidia_driver)")
        if self.kube is not None:
            for tool in ("kubeadm", "kubelet", "kubectl"):
                if getattr(self, tool) == DEFAULT:
                    setattr(self, tool, self.kube)
        for tool in ("kubeadm", "kubelet", "kubectl"):
            if getattr(self, tool) == DEFAULT:
                setattr(self, tool, None)

    @property
    def host_name(self) -> str:
        return self.hostname or self.name

    @property
    def preset(self) -> str | None:
        return self.os if self.os in _OS_RELEASE else None

    @property
    def os_release(self) -> str:
        if self.preset:
            return _OS_RELEASE[self.preset]
        if "=" not in self.os:
            raise ValueError(f"unknown OS preset {self.os!r}; presets: {', '.join(OS_PRESETS)}")
        return self.os if self.os.endswith("\n") else self.os + "\n"

    @property
    def os_values(self) -> dict[str, str]:
        return _os_release_values(self.os_release)

    @property
    def family(self) -> str:
        """'debian' or 'rhel' (from ID / ID_LIKE)."""
        v = self.os_values
        words = [v.get("ID", "").lower()] + v.get("ID_LIKE", "").lower().split()
        return "debian" if any(w in ("debian", "ubuntu") for w in words) else "rhel"

    @property
    def kernel_release(self) -> str | None:
        """None means: show this machine's real kernel."""
        if self.kernel == "real":
            return None
        if self.kernel:
            return self.kernel
        return _OS_DEFAULTS.get(self.preset or "", (None,))[0]

    @property
    def cgroup_version(self) -> int:
        if self.cgroup:
            return self.cgroup
        return _OS_DEFAULTS.get(self.preset or "", (None, 2))[1]

    @property
    def pkg_manager(self) -> str | None:
        if self.package_manager != DEFAULT:
            return self.package_manager
        if self.preset:
            return _OS_DEFAULTS[self.preset][2]
        return "apt-get" if self.family == "debian" else "dnf"

    @property
    def fstab_swap(self) -> bool:
        return self.swap if self.swap_in_fstab is None else self.swap_in_fstab

    @property
    def smi_installed(self) -> bool:
        return bool(self.nvidia_driver) if self.nvidia_smi is None else self.nvidia_smi

    @property
    def crictl_version(self) -> str | None:
        if self.crictl != DEFAULT:
            return self.crictl
        if self.kubeadm:
            major, minor = self.kubeadm.lstrip("v").split(".")[:2]
            return f"{major}.{minor}.0"
        return None

    @property
    def ufw_state(self) -> bool | None:
        if self.ufw != DEFAULT:
            return self.ufw
        return False if self.os_values.get("ID") == "ubuntu" else None

    @property
    def gpu_flag(self) -> bool | None:
        return bool(self.gpus) if self.gpu == DEFAULT else self.gpu

    @property
    def effective_containerd_config(self) -> str | None:
        if self.containerd_config != DEFAULT:
            return self.containerd_config
        if not self.containerd:
            return None
        return containerd_config(self.containerd, systemd_cgroup=True)

    @property
    def pci_driver(self) -> str | None:
        """Kernel driver bound to the GPUs."""
        if self.nvidia_driver:
            return "nvidia"
        if self.nouveau:
            return "nouveau"
        return None

    def pci_devices(self) -> list[dict[str, Any]]:
        """Every NVIDIA PCI function: address, vendor, device, class, driver, lspci line."""
        out = []
        for i, gpu in enumerate(self.gpus):
            m = gpu.spec
            addr = gpu.pci_address or f"0000:{0x01 + i:02x}:00.0"
            cls = "0x030200"
            lspci = (f"{addr} 3D controller [0302]: NVIDIA Corporation {m.chip} [{m.marketing}] "
                     f"[10de:{m.device_id[2:]}] (rev a1)")
            out.append({"address": addr, "vendor": "0x10de", "device": m.device_id, "class": cls,
                        "driver": self.pci_driver, "lspci": lspci, "gpu": gpu, "index": i})
            if gpu.audio and m.audio_device:
                a_addr = addr[:-1] + "1"
                out.append({"address": a_addr, "vendor": "0x10de", "device": m.audio_device,
                            "class": "0x040300",
                            "driver": "snd_hda_intel" if self.nvidia_driver else None,
                            "lspci": (f"{a_addr} Audio device [0403]: NVIDIA Corporation "
                                      f"{m.chip[:5]} High Definition Audio Controller "
                                      f"[10de:{m.audio_device[2:]}] (rev a1)"),
                            "gpu": None})
        for j in range(self.nvswitches):
            addr = f"0000:{0xc0 + j:02x}:00.0"
            out.append({"address": addr, "vendor": "0x10de", "device": "0x22a3", "class": "0x068000",
                        "driver": "nvidia-nvswitch" if self.nvidia_driver else None,
                        "lspci": (f"{addr} Bridge [0680]: NVIDIA Corporation GH100 [H100 NVSwitch] "
                                  f"[10de:22a3] (rev a1)"),
                        "gpu": None})
        return out

    def with_(self, **changes: Any) -> "HostFixture":
        """A copy with some fields changed (handy for lists of similar hosts)."""
        return replace(self, **changes)


# --------------------------------------------------------------------------- tool output formats

_CONTAINERD_COMMITS = {
    "1.7.27": "05044ec0a9a75232cad458027ca83437aae3f4da",
    "2.1.4": "75cb2b7193e4e490e9fbdc236c0e811ccaba3376",
}


def _fake_commit(version: str) -> str:
    return hashlib.sha1(f"containerd {version}".encode()).hexdigest()


def containerd_version_line(version: str, build: str = "docker") -> str:
    """`containerd --version` as each build prints it:

    - "docker", the containerd.io package of download.docker.com: `containerd containerd.io 1.7.27
      <sha>`, and from 2.0 `containerd containerd.io v2.2.1 dea7da59...` (the v appears with 2.x;
      outputs quoted in public install logs of containerd.io 2.1.5, 2.2.1 and 2.2.3);
    - "upstream", the release tarballs of github.com/containerd/containerd: `containerd
      github.com/containerd/containerd v1.7.15 926c9586...` (containerd/containerd#10144),
      `containerd github.com/containerd/containerd/v2 v2.0.0 <sha>` for 2.x;
    - "distro", Debian/Ubuntu's own containerd package: the package version and no commit,
      `containerd github.com/containerd/containerd 1.3.3-0ubuntu2` (as containerd's own
      version-parsing tests list `1.5.2-0ubuntu1~21.04.2`); `version` is then the package version.
    """
    v = version.lstrip("v")
    commit = _CONTAINERD_COMMITS.get(v, _fake_commit(v))
    major = int(v.split(".")[0])
    if build == "distro":
        return f"containerd github.com/containerd/containerd {v}"
    if build == "upstream":
        module = "github.com/containerd/containerd/v2" if major >= 2 else "github.com/containerd/containerd"
        return f"containerd {module} v{v} {commit}"
    if build != "docker":
        raise ValueError(f"containerd build {build!r}: docker, upstream or distro")
    return f"containerd containerd.io {'v' if major >= 2 else ''}{v} {commit}"


def kubectl_version_text(version: str) -> str:
    return f"Client Version: v{version.lstrip('v')}\nKustomize Version: v5.7.1"


def helm_version_text(version: str) -> str:
    return f"v{version.lstrip('v')}+g3d8990f"


def containerd_config(version: str, systemd_cgroup: bool | None = True,
                      sandbox_image: str | None = None) -> str:
    """A `containerd config default` file for the installed major, with SystemdCgroup set.

    containerd 1.x writes config version 2; 2.x writes version 3 (2.3 reads it and migrates it
    to 4). systemd_cgroup=None leaves the key out, like the defaults of 2.0.0-2.0.6 and
    2.1.0-2.1.4 (containerd_default_config is what each release really prints).
    """
    major = int(version.lstrip("v").split(".")[0])
    if major >= 2:
        return _containerd_v3(systemd_cgroup, sandbox_image or "registry.k8s.io/pause:3.10")
    return _containerd_v2(systemd_cgroup, sandbox_image or "registry.k8s.io/pause:3.8")


def _containerd_default_dirs() -> list:
    from pathlib import Path
    here = Path(__file__).resolve().parent
    # In the checkout: tests/unit/data; inside a lab host: the copy lab.py puts beside this file.
    return [here / "containerd-defaults", here.parent / "unit" / "data"]


def containerd_default_release(version: str) -> str:
    """The release whose real `containerd config default` output stands for `version`.

    tests/unit/data/containerd-default-<release>.toml hold the output of containerd built from
    each release tag (see their headers). Inside one minor the output changes only where a
    backport changed it, and a file is kept at each such boundary: commit 56cde7d2c "add
    SystemdCgroup to default runtime options" (internal/cri/config/config_unix.go) is in v2.0.7
    and v2.1.5, so 2.0.0-2.0.6 and 2.1.0-2.1.4 print runc's options without SystemdCgroup
    (files 2.0.6, 2.1.4), later patches and 2.2/2.3 with `SystemdCgroup = false`. A version
    takes the oldest file of its minor at or after it, else the newest of that minor (a minor
    without a file: the newest older release)."""
    import re
    want = tuple(int(x) for x in re.findall(r"\d+", version)[:3])
    want = (want + (0, 0, 0))[:3]
    have = sorted({tuple(int(x) for x in p.name[len("containerd-default-"):-len(".toml")].split("."))
                   for d in _containerd_default_dirs() if d.is_dir()
                   for p in d.glob("containerd-default-*.toml")})
    if not have:
        raise FileNotFoundError("no containerd-default-*.toml (tests/unit/data)")
    same = [v for v in have if v[:2] == want[:2]]
    pick = (min([v for v in same if v >= want], default=None) or same[-1]) if same else \
        max([v for v in have if v < want], default=have[0])
    return ".".join(map(str, pick))


def containerd_default_config(version: str) -> str:
    """What `containerd config default` of this release prints: the real output of the release
    `containerd_default_release` picks, its header comment (where it came from) left out."""
    name = f"containerd-default-{containerd_default_release(version)}.toml"
    for d in _containerd_default_dirs():
        if (d / name).is_file():
            text = (d / name).read_text()
            return "".join(ln for ln in text.splitlines(keepends=True)
                           if not ln.startswith("#")).lstrip("\n")
    raise FileNotFoundError(name)


DOCKER_CONTAINERD_CONFIG = """#   Copyright 2018-2022 Docker Inc.

#   Licensed under the Apache License, Version 2.0 (the "License");
#   you may not use this file except in compliance with the License.
#   You may obtain a copy of the License at

#       http://www.apache.org/licenses/LICENSE-2.0

#   Unless required by applicable law or agreed to in writing, software
#   distributed under the License is distributed on an "AS IS" BASIS,
#   WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
#   See the License for the specific language governing permissions and
#   limitations under the License.

disabled_plugins = ["cri"]

#root = "/var/lib/containerd"
#state = "/run/containerd"
#subreaper = true
#oom_score = 0

#[grpc]
#  address = "/run/containerd/containerd.sock"
#  uid = 0
#  gid = 0

#[debug]
#  address = "/run/containerd/debug.sock"
#  uid = 0
#  gid = 0
#  level = "info"
"""


def _systemd_line(value: bool | None, indent: str) -> str:
    if value is None:
        return ""
    return f"{indent}SystemdCgroup = {'true' if value else 'false'}\n"


def _containerd_v2(systemd_cgroup: bool | None, sandbox: str) -> str:
    p = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""disabled_plugins = []
imports = []
oom_score = 0
plugin_dir = ""
required_plugins = []
root = "/var/lib/containerd"
state = "/run/containerd"
temp = ""
version = 2

[cgroup]
  path = ""

[debug]
  address = ""
  format = ""
  gid = 0
  level = ""
  uid = 0

[grpc]
  address = "/run/containerd/containerd.sock"
  gid = 0
  max_recv_message_size = 16777216
  max_send_message_size = 16777216
  tcp_address = ""
  tcp_tls_ca = ""
  tcp_tls_cert = ""
  tcp_tls_key = ""
  uid = 0

[metrics]
  address = ""
  grpc_histogram = false

[plugins]

  [plugins."io.containerd.gc.v1.scheduler"]
    deletion_threshold = 0
    mutation_threshold = 100
    pause_threshold = 0.02
    schedule_delay = "0s"
    startup_delay = "100ms"

  [{p}]
    cdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"]
    device_ownership_from_security_context = false
    disable_apparmor = false
    disable_cgroup = false
    disable_hugetlb_controller = true
    disable_proc_mount = false
    disable_tcp_service = true
    drain_exec_sync_io_timeout = "0s"
    enable_cdi = false
    enable_selinux = false
    enable_tls_streaming = false
    enable_unprivileged_icmp = false
    enable_unprivileged_ports = false
    ignore_deprecation_warnings = []
    ignore_image_defined_volumes = false
    image_pull_progress_timeout = "5m0s"
    image_pull_with_sync_fs = false
    max_concurrent_downloads = 3
    max_container_log_line_size = 16384
    netns_mounts_under_state_dir = false
    restrict_oom_score_adj = false
    sandbox_image = "{sandbox}"
    selinux_category_range = 1024
    stats_collect_period = 10
    stream_idle_timeout = "4h0m0s"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    systemd_cgroup = false
    tolerate_missing_hugetlb_controller = true
    unset_seccomp_profile = ""

    [{p}.cni]
      bin_dir = "/opt/cni/bin"
      conf_dir = "/etc/cni/net.d"
      conf_template = ""
      ip_pref = ""
      max_conf_num = 1
      setup_serially = false

    [{p}.containerd]
      default_runtime_name = "runc"
      disable_snapshot_annotations = true
      discard_unpacked_layers = false
      ignore_blockio_not_enabled_errors = false
      ignore_rdt_not_enabled_errors = false
      no_pivot = false
      snapshotter = "overlayfs"

      [{p}.containerd.default_runtime]
        base_runtime_spec = ""
        cni_conf_dir = ""
        cni_max_conf_num = 0
        container_annotations = []
        pod_annotations = []
        privileged_without_host_devices = false
        privileged_without_host_devices_all_devices_allowed = false
        runtime_engine = ""
        runtime_path = ""
        runtime_root = ""
        runtime_type = ""
        sandbox_mode = ""
        snapshotter = ""

        [{p}.containerd.default_runtime.options]

      [{p}.containerd.runtimes]

        [{p}.containerd.runtimes.runc]
          base_runtime_spec = ""
          cni_conf_dir = ""
          cni_max_conf_num = 0
          container_annotations = []
          pod_annotations = []
          privileged_without_host_devices = false
          privileged_without_host_devices_all_devices_allowed = false
          runtime_engine = ""
          runtime_path = ""
          runtime_root = ""
          runtime_type = "io.containerd.runc.v2"
          sandbox_mode = "podsandbox"
          snapshotter = ""

          [{p}.containerd.runtimes.runc.options]
            BinaryName = ""
            CriuImagePath = ""
            CriuPath = ""
            CriuWorkPath = ""
            IoGid = 0
            IoUid = 0
            NoNewKeyring = false
            NoPivotRoot = false
            Root = ""
            ShimCgroup = ""
{_systemd_line(systemd_cgroup, "            ")}
      [{p}.containerd.untrusted_workload_runtime]
        base_runtime_spec = ""
        runtime_type = ""

    [{p}.image_decryption]
      key_model = "node"

    [{p}.registry]
      config_path = ""

      [{p}.registry.auths]

      [{p}.registry.configs]

      [{p}.registry.headers]

      [{p}.registry.mirrors]

    [{p}.x509_key_pair_streaming]
      tls_cert_file = ""
      tls_key_file = ""

  [plugins."io.containerd.internal.v1.opt"]
    path = "/opt/containerd"

  [plugins."io.containerd.internal.v1.restart"]
    interval = "10s"

  [plugins."io.containerd.internal.v1.tracing"]

  [plugins."io.containerd.metadata.v1.bolt"]
    content_sharing_policy = "shared"

  [plugins."io.containerd.monitor.v1.cgroups"]
    no_prometheus = false

  [plugins."io.containerd.runtime.v2.task"]
    platforms = ["linux/amd64"]

  [plugins."io.containerd.service.v1.diff-service"]
    default = ["walking"]

  [plugins."io.containerd.snapshotter.v1.overlayfs"]
    mount_options = []
    root_path = ""
    sync_remove = false
    upperdir_label = false

[proxy_plugins]

[stream_processors]

[timeouts]
  "io.containerd.timeout.bolt.open" = "0s"
  "io.containerd.timeout.metrics.shimstats" = "2s"
  "io.containerd.timeout.shim.cleanup" = "5s"
  "io.containerd.timeout.shim.load" = "5s"
  "io.containerd.timeout.shim.shutdown" = "3s"
  "io.containerd.timeout.task.state" = "2s"

[ttrpc]
  address = ""
  gid = 0
  uid = 0
"""


def _containerd_v3(systemd_cgroup: bool | None, sandbox: str) -> str:
    return f"""version = 3
root = '/var/lib/containerd'
state = '/run/containerd'
temp = ''
disabled_plugins = []
required_plugins = []
oom_score = 0
imports = []

[grpc]
  address = '/run/containerd/containerd.sock'
  tcp_address = ''
  tcp_tls_ca = ''
  tcp_tls_cert = ''
  tcp_tls_key = ''
  uid = 0
  gid = 0
  max_recv_message_size = 16777216
  max_send_message_size = 16777216

[ttrpc]
  address = ''
  uid = 0
  gid = 0

[debug]
  address = ''
  uid = 0
  gid = 0
  level = ''
  format = ''

[metrics]
  address = ''
  grpc_histogram = false

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    disable_snapshot_annotations = true
    discard_unpacked_layers = false
    max_concurrent_downloads = 3
    concurrent_layer_fetch_buffer = 0
    image_pull_progress_timeout = '5m0s'
    image_pull_with_sync_fs = false
    stats_collect_period = 10
    use_local_image_pull = false

    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{sandbox}'

    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = ''

    [plugins.'io.containerd.cri.v1.images'.image_decryption]
      key_model = 'node'

  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    selinux_category_range = 1024
    max_container_log_line_size = 16384
    disable_apparmor = false
    restrict_oom_score_adj = false
    disable_proc_mount = false
    unset_seccomp_profile = ''
    tolerate_missing_hugetlb_controller = true
    disable_hugetlb_controller = true
    device_ownership_from_security_context = false
    ignore_image_defined_volumes = false
    netns_mounts_under_state_dir = false
    enable_unprivileged_ports = true
    enable_unprivileged_icmp = true
    enable_cdi = true
    cdi_spec_dirs = ['/etc/cdi', '/var/run/cdi']
    drain_exec_sync_io_timeout = '0s'
    ignore_deprecation_warnings = []

    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      ignore_blockio_not_enabled_errors = false
      ignore_rdt_not_enabled_errors = false

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes]
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
          runtime_type = 'io.containerd.runc.v2'
          runtime_path = ''
          pod_annotations = []
          container_annotations = []
          privileged_without_host_devices = false
          privileged_without_host_devices_all_devices_allowed = false
          cgroup_writable = false
          base_runtime_spec = ''
          cni_conf_dir = ''
          cni_max_conf_num = 0
          snapshotter = ''
          sandboxer = 'podsandbox'
          io_type = ''

          [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
            BinaryName = ''
            CriuImagePath = ''
            CriuWorkPath = ''
            IoGid = 0
            IoUid = 0
            NoNewKeyring = false
            Root = ''
            ShimCgroup = ''
{_systemd_line(systemd_cgroup, "            ")}
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dir = ''
      bin_dirs = ['/opt/cni/bin']
      conf_dir = '/etc/cni/net.d'
      max_conf_num = 1
      setup_serially = false
      conf_template = ''
      ip_pref = ''
      use_internal_loopback = false

  [plugins.'io.containerd.gc.v1.scheduler']
    pause_threshold = 0.02
    deletion_threshold = 0
    mutation_threshold = 100
    schedule_delay = '0s'
    startup_delay = '100ms'

  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
    stream_idle_timeout = '4h0m0s'
    enable_tls_streaming = false

    [plugins.'io.containerd.grpc.v1.cri'.x509_key_pair_streaming]
      tls_cert_file = ''
      tls_key_file = ''

  [plugins.'io.containerd.internal.v1.opt']
    path = '/opt/containerd'

  [plugins.'io.containerd.internal.v1.tracing']

  [plugins.'io.containerd.metadata.v1.bolt']
    content_sharing_policy = 'shared'
    no_sync = false

  [plugins.'io.containerd.monitor.container.v1.restart']
    interval = '10s'

  [plugins.'io.containerd.monitor.task.v1.cgroups']
    no_prometheus = false

  [plugins.'io.containerd.runtime.v2.task']
    platforms = ['linux/amd64']

  [plugins.'io.containerd.service.v1.diff-service']
    default = ['walking']
    sync_fs = false

  [plugins.'io.containerd.shim.v1.manager']
    env = []

  [plugins.'io.containerd.snapshotter.v1.overlayfs']
    root_path = ''
    upperdir_label = false
    sync_remove = false
    slow_chown = false
    mount_options = []

[cgroup]
  path = ''

[timeouts]
  'io.containerd.timeout.bolt.open' = '0s'
  'io.containerd.timeout.cri.defercleanup' = '1m0s'
  'io.containerd.timeout.metrics.shimstats' = '2s'
  'io.containerd.timeout.shim.cleanup' = '5s'
  'io.containerd.timeout.shim.load' = '5s'
  'io.containerd.timeout.shim.shutdown' = '3s'
  'io.containerd.timeout.task.state' = '2s'

[stream_processors]
  [stream_processors.'io.containerd.ocicrypt.decoder.v1.tar']
    accepts = ['application/vnd.oci.image.layer.v1.tar+encrypted']
    returns = 'application/vnd.oci.image.layer.v1.tar'
    path = 'ctd-decoder'
    args = ['--decryption-keys-path', '/etc/containerd/ocicrypt/keys']
    env = ['OCICRYPT_KEYPROVIDER_CONFIG=/etc/containerd/ocicrypt/ocicrypt_keyprovider.conf']

  [stream_processors.'io.containerd.ocicrypt.decoder.v1.tar.gzip']
    accepts = ['application/vnd.oci.image.layer.v1.tar+gzip+encrypted']
    returns = 'application/vnd.oci.image.layer.v1.tar+gzip'
    path = 'ctd-decoder'
    args = ['--decryption-keys-path', '/etc/containerd/ocicrypt/keys']
    env = ['OCICRYPT_KEYPROVIDER_CONFIG=/etc/containerd/ocicrypt/ocicrypt_keyprovider.conf']
"""
