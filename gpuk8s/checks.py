"""Preflight checks: pure functions from (inventory, host, facts, fleet) to CheckResults.

Every check always reports, in the same order, so `preflight --json` is stable: a check that does
not apply to a host says `skip` and why. Messages name what was found; fixes are the exact shell
commands to paste on the host (apt vs dnf, update-initramfs vs dracut chosen from the OS family).
Background for each check: docs/checks.md and ../shared/docs/DOMAIN.md sections 2, 3, 5, 6 and 8.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

from gpuk8s.facts import Facts
from gpuk8s.inventory import HostSpec, Inventory
from gpuk8s.versions import (
    CONTROL_PLANE_MIN_CPUS,
    CONTROL_PLANE_MIN_MEMORY_MIB,
    HELM_MIN,
    OS_FAMILIES,
    REJECTED_OS,
    SUPPORTED_OS,
    Release,
    parse_version,
    release_for,
    supported_minors,
)

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
STATUSES = (PASS, WARN, FAIL, SKIP)

WORKER_MIN_CPUS = 2
WORKER_MIN_MEMORY_MIB = 1024
KERNEL_SYSTEM_VERIFICATION_MIN = (4, 19)   # kubeadm SystemVerification (DOMAIN 6 #6)
KERNEL_CGROUP_V2_MIN = (5, 8)              # cgroup v2 needs >= 5.8 (DOMAIN 2.5)
CONTAINERD_OLDEST = (1, 7)                 # 1.6 is EOL; anything older has no CRI v1

KUBELET_CONF = "/etc/kubernetes/kubelet.conf"

PORT_NAMES = {
    6443: "kube-apiserver",
    2379: "etcd client",
    2380: "etcd peer",
    10250: "kubelet",
    10256: "kube-proxy",
    10257: "kube-controller-manager",
    10259: "kube-scheduler",
}
CONTROL_PLANE_PORTS = (6443, 2379, 2380, 10250, 10256, 10257, 10259)
WORKER_PORTS = (10250, 10256)

REQUIRED_BINARIES = ("ip", "iptables", "mount", "nsenter")
RECOMMENDED_BINARIES = ("ethtool", "socat", "tc", "conntrack", "touch", "ebtables")
_PACKAGES = {
    "debian": {"ip": "iproute2", "iptables": "iptables", "mount": "mount", "nsenter": "util-linux",
               "ethtool": "ethtool", "socat": "socat", "tc": "iproute2", "conntrack": "conntrack",
               "touch": "coreutils", "ebtables": "ebtables"},
    "rhel": {"ip": "iproute", "iptables": "iptables-nft", "mount": "util-linux",
             "nsenter": "util-linux", "ethtool": "ethtool", "socat": "socat", "tc": "iproute-tc",
             "conntrack": "conntrack-tools", "touch": "coreutils", "ebtables": "/usr/sbin/ebtables"},
}

TIME_SERVICES = ("chronyd", "chrony", "systemd-timesyncd", "ntpd", "ntp", "ntpsec")
CALICO_CNI_FILES = ("10-calico.conflist", "calico-kubeconfig")
PLACEHOLDER_UUIDS = frozenset({
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "03000200-0400-0500-0006-000700080009",   # common unset-DMI value on whitebox boards
})
# Tried in order when suggesting a pod/service CIDR that overlaps nothing on the host.
CIDR_CANDIDATES = ("10.244.0.0/16", "10.96.0.0/12", "172.20.0.0/16", "10.200.0.0/16",
                   "100.64.0.0/16", "172.31.0.0/16")

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# --------------------------------------------------------------------------- results

class CheckInfo(NamedTuple):
    id: str
    title: str
    why: str


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one host."""

    id: str
    status: str
    message: str
    fix: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"invalid check status {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "message": self.message, "fix": self.fix}


def overall_status(results: list[CheckResult]) -> str:
    """The worst status among results: fail > warn > pass (skip alone counts as pass)."""
    statuses = {r.status for r in results}
    if FAIL in statuses:
        return FAIL
    if WARN in statuses:
        return WARN
    return PASS


# --------------------------------------------------------------------------- context

@dataclass(frozen=True)
class _Ctx:
    inventory: Inventory
    host: HostSpec
    facts: Facts
    fleet: Mapping[str, Facts]
    release: Release | None
    family: str | None          # "debian" | "rhel" | None
    gpu: bool

    @property
    def k8s_version(self) -> str:
        return self.inventory.cluster.kubernetes_version

    @property
    def is_k8s_node(self) -> bool:
        return KUBELET_CONF in self.facts.kubernetes_files

    def others(self) -> list[tuple[str, Facts]]:
        return [(n, f) for n, f in sorted(self.fleet.items()) if n != self.host.name]


def os_family(facts: Facts) -> str | None:
    """'debian' (apt) or 'rhel' (dnf) from os-release ID / ID_LIKE, else from the binaries found."""
    for i in [facts.os.id or ""] + list(facts.os.id_like):
        if i in OS_FAMILIES:
            return OS_FAMILIES[i]
    if "apt-get" in facts.binaries:
        return "debian"
    if "dnf" in facts.binaries or "yum" in facts.binaries:
        return "rhel"
    return None


def is_gpu_host(host: HostSpec, facts: Facts | None) -> bool:
    """True when the host is (or is detected as) a GPU node: inventory `gpu:` wins over detection."""
    if host.gpu is not None:
        return bool(host.gpu)
    return bool(facts is not None and facts.gpus)


def _host_driver_loaded(facts: Facts) -> bool:
    return facts.nvidia_driver_version is not None or "nvidia" in facts.modules


def driver_mode(inventory: Inventory, facts: Facts) -> str:
    """'host' (pre-installed driver, driver.enabled=false) or 'container' (GPU Operator's driver)."""
    wanted = inventory.gpu.driver
    if wanted in ("host", "container"):
        return wanted
    return "host" if _host_driver_loaded(facts) else "container"


def _major(version_id: str | None) -> str | None:
    return version_id.split(".")[0] if version_id else None


# --------------------------------------------------------------------------- fix helpers

def packages_for(family: str, binaries: list[str]) -> list[str]:
    """The distribution packages that provide `binaries` ("debian" or "rhel" family)."""
    return list(dict.fromkeys(_PACKAGES[family].get(b, b) for b in binaries))


def missing_binaries(facts: Facts) -> list[str]:
    """Binaries kubeadm needs or warns about that the host lacks."""
    return [b for b in REQUIRED_BINARIES + RECOMMENDED_BINARIES if b not in facts.binaries]


def _install(ctx: _Ctx, binaries: list[str]) -> str:
    """Command(s) installing the packages that provide `binaries`, for the host's OS family."""
    def pkgs(family: str) -> str:
        return " ".join(packages_for(family, binaries))

    if ctx.family == "debian":
        return f"apt-get update && apt-get install -y {pkgs('debian')}"
    if ctx.family == "rhel":
        tool = "yum" if "dnf" not in ctx.facts.binaries and "yum" in ctx.facts.binaries else "dnf"
        return f"{tool} install -y {pkgs('rhel')}"
    return (f"apt-get update && apt-get install -y {pkgs('debian')}   # Debian/Ubuntu\n"
            f"dnf install -y {pkgs('rhel')}   # RHEL family")


def _initramfs(ctx: _Ctx) -> str:
    if ctx.family == "debian":
        return "update-initramfs -u"
    if ctx.family == "rhel":
        return "dracut -f"
    return "update-initramfs -u || dracut -f"


def _kernel_arg(ctx: _Ctx, arg: str) -> str:
    """Commands that add a kernel command-line argument persistently, then reboot."""
    if ctx.family == "rhel":
        return f'grubby --update-kernel=ALL --args="{arg}"\nreboot'
    grub = (f"sed -i 's/^GRUB_CMDLINE_LINUX=\"/GRUB_CMDLINE_LINUX=\"{arg} /' /etc/default/grub")
    if ctx.family == "debian":
        return f"{grub}\nupdate-grub\nreboot"
    return (f'grubby --update-kernel=ALL --args="{arg}" && reboot   # RHEL family\n'
            f"{grub} && update-grub && reboot   # Debian/Ubuntu")


SYSCTL_FIX = (
    "modprobe br_netfilter\n"
    "printf 'overlay\\nbr_netfilter\\n' > /etc/modules-load.d/k8s.conf\n"
    "printf 'net.ipv4.ip_forward = 1\\nnet.bridge.bridge-nf-call-iptables = 1\\n"
    "net.bridge.bridge-nf-call-ip6tables = 1\\n' > /etc/sysctl.d/k8s.conf\n"
    "sysctl --system"
)


def _containerd_table(version: int | None) -> str:
    """The runc options table that holds SystemdCgroup for a config file version."""
    if version is not None and version >= 3:
        return "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]"
    if version == 1:
        return "[plugins.cri.containerd.runtimes.runc.options]"
    return '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]'


def _containerd_regen_fix(ctx: _Ctx) -> str:
    """Regenerate a full native config from the installed binary, set SystemdCgroup, verify."""
    v = parse_version(ctx.facts.containerd_version)
    native = 3 if (v and v[0] >= 2) else 2
    return ("cp -a /etc/containerd/config.toml /etc/containerd/config.toml.bak 2>/dev/null; "
            "mkdir -p /etc/containerd\n"
            "containerd config default > /etc/containerd/config.toml\n"
            f"# in {_containerd_table(native)} set: SystemdCgroup = true "
            "(add the key if the generated file lacks it)\n"
            "systemctl restart containerd\n"
            "containerd config dump | grep -n SystemdCgroup")


def _k8s_packages_fix(ctx: _Ctx, release: Release) -> str:
    """Install/pin kubeadm, kubelet and kubectl at the release's patch from pkgs.k8s.io."""
    patch = ctx.k8s_version if len(parse_version(ctx.k8s_version) or ()) == 3 else release.patch
    patch = patch.lstrip("v")
    minor = release.minor
    deb = (f"sed -i 's#/v1\\.[0-9]*/#/v{minor}/#' /etc/apt/sources.list.d/kubernetes.list\n"
           "apt-mark unhold kubelet kubeadm kubectl\n"
           f"apt-get update && apt-get install -y --allow-downgrades kubelet={patch}-1.1 "
           f"kubeadm={patch}-1.1 kubectl={patch}-1.1\n"
           "apt-mark hold kubelet kubeadm kubectl")
    rpm = (f"sed -i 's#/v1\\.[0-9]*/#/v{minor}/#g' /etc/yum.repos.d/kubernetes.repo\n"
           f"dnf install -y kubelet-{patch} kubeadm-{patch} kubectl-{patch} "
           "--disableexcludes=kubernetes")
    if ctx.family == "debian":
        return deb
    if ctx.family == "rhel":
        return rpm
    return f"# Debian/Ubuntu:\n{deb}\n# RHEL family:\n{rpm}"


def _not_supported(ctx: _Ctx, check_id: str) -> CheckResult:
    return CheckResult(
        check_id, FAIL,
        f"kubernetes_version {ctx.k8s_version} is not supported "
        f"(supported minors: {', '.join(supported_minors())})",
        f"set cluster.kubernetes_version in {ctx.inventory.path} to one of: "
        f"{', '.join(supported_minors())}")


# --------------------------------------------------------------------------- registry

_Check = Callable[[_Ctx], CheckResult]
_REGISTRY: list[tuple[CheckInfo, _Check]] = []


def _check(check_id: str, title: str, why: str) -> Callable[[_Check], _Check]:
    def register(fn: _Check) -> _Check:
        _REGISTRY.append((CheckInfo(check_id, title, why), fn))
        return fn
    return register


def _skip_non_gpu(ctx: _Ctx, check_id: str) -> CheckResult | None:
    if ctx.gpu:
        return None
    if ctx.host.gpu is False:
        return CheckResult(check_id, SKIP, f"{ctx.host.name} is not a GPU node (gpu: false)")
    return CheckResult(check_id, SKIP, f"{ctx.host.name} has no NVIDIA GPU: not a GPU node")


# --------------------------------------------------------------------------- host basics

@_check("privileged-access", "Root or sudo access",
        "kubeadm's IsPrivilegedUser check needs root, and several facts (product_uuid) need it too.")
def check_privileged_access(ctx: _Ctx) -> CheckResult:
    uid = ctx.facts.uid
    if uid == 0:
        how = "via sudo" if ctx.host.ssh.sudo and ctx.host.ssh.user != "root" else "as root"
        return CheckResult("privileged-access", PASS, f"probe ran {how} (uid 0)")
    if uid is None:
        return CheckResult("privileged-access", WARN,
                           "could not determine the probe's uid (`id -u` printed nothing)",
                           "id -u   # must print 0 under the inventory's ssh user/sudo settings")
    user = ctx.host.ssh.user
    return CheckResult(
        "privileged-access", FAIL,
        f"probe ran unprivileged as {user} (uid {uid}): kubeadm needs root and "
        "/sys/class/dmi/id/product_uuid is unreadable",
        f"echo '{user} ALL=(ALL) NOPASSWD: ALL' | sudo tee /etc/sudoers.d/gpuk8s "
        "&& sudo chmod 0440 /etc/sudoers.d/gpuk8s\n"
        f"# then set ssh.sudo: true for {ctx.host.name} in {ctx.inventory.path} "
        "(or connect as ssh.user: root)")


@_check("os-supported", "Operating system in the support matrix",
        "kubeadm packages, cgroup v2 defaults and GPU Operator driver images exist only for "
        "some distributions; RHEL 8 means cgroup v1 and kernel 4.18.")
def check_os_supported(ctx: _Ctx) -> CheckResult:
    os = ctx.facts.os
    name = os.pretty_name or f"{os.id} {os.version_id or ''}".strip()
    supported_fix = ("reinstall with a supported OS: Ubuntu 22.04/24.04 or "
                     "RHEL/Rocky/AlmaLinux 9")
    if not os.id:
        return CheckResult("os-supported", FAIL,
                           "could not read /etc/os-release (no ID=): OS unknown",
                           "cat /etc/os-release /usr/lib/os-release   # " + supported_fix)
    major = _major(os.version_id)
    cgroup_v1_ok = bool(ctx.release and ctx.release.cgroup_v1_allowed)
    rhel_like = os.id in ("rhel", "rocky", "almalinux", "centos", "ol") or "rhel" in os.id_like
    if rhel_like and major == "8":
        msg = (f"{name}: RHEL 8 family defaults to cgroup v1 and kernel 4.18 "
               "(kubeadm SystemVerification)")
        if cgroup_v1_ok:
            return CheckResult("os-supported", WARN,
                               f"{msg}; Kubernetes {ctx.k8s_version} still tolerates cgroup v1",
                               "upgrade to RHEL/Rocky/AlmaLinux 9 (cgroup v2, kernel 5.14)")
        return CheckResult("os-supported", FAIL,
                           f"{msg}; the kubelet of Kubernetes {ctx.k8s_version} refuses cgroup v1",
                           "upgrade to RHEL/Rocky/AlmaLinux 9 (cgroup v2, kernel 5.14)")
    if os.id == "centos" and major and major.isdigit() and int(major) >= 9:
        return CheckResult("os-supported", WARN,
                           f"{name}: CentOS Stream is best effort (treated as RHEL {major})",
                           supported_fix)
    if os.id in REJECTED_OS:
        return CheckResult("os-supported", FAIL, f"{name}: {REJECTED_OS[os.id]}", supported_fix)
    if os.id in SUPPORTED_OS:
        return _os_version_result(ctx, os.id, name, supported_fix)
    base = next((i for i in os.id_like if i in SUPPORTED_OS), None)
    if base:
        return CheckResult("os-supported", WARN,
                           f"{name} (ID={os.id}) is a derivative of {base} (ID_LIKE): best effort, "
                           "not tested by gpuk8s or the GPU Operator", supported_fix)
    return CheckResult("os-supported", FAIL,
                       f"{name} (ID={os.id}) is not supported by gpuk8s", supported_fix)


def _os_version_result(ctx: _Ctx, os_id: str, name: str, fix: str) -> CheckResult:
    supported, best_effort = SUPPORTED_OS[os_id]
    version = ctx.facts.os.version_id
    if not version:
        return CheckResult("os-supported", WARN,
                           f"{name}: /etc/os-release has no VERSION_ID (testing/rolling release?); "
                           "the version cannot be checked against the support matrix", fix)
    key = version if os_id in ("ubuntu",) else _major(version)
    dev = "development branch" in (ctx.facts.os.pretty_name or "").lower()
    if key in supported and not dev:
        return CheckResult("os-supported", PASS, f"{name} is supported")
    if key in best_effort or (key in supported and dev):
        extra = " (development release)" if dev else ""
        return CheckResult("os-supported", WARN, f"{name}{extra} is best effort in gpuk8s", fix)
    listed = [parse_version(v) for v in supported + best_effort if parse_version(v)]
    mine = parse_version(version)
    if listed and mine and mine > max(listed):
        extra = " (development release)" if dev else ""
        return CheckResult("os-supported", WARN,
                           f"{name}{extra} is newer than the tested versions "
                           f"({', '.join(supported + best_effort)}): best effort", fix)
    return CheckResult("os-supported", FAIL,
                       f"{name} is not supported (supported {os_id} versions: "
                       f"{', '.join(supported + best_effort) or 'none'})", fix)


@_check("kernel-version", "Kernel version",
        "kubeadm's SystemVerification rejects kernels older than 4.19 (RHEL 8's 4.18); "
        "cgroup v2 needs 5.8+; Calico recommends 5.10+.")
def check_kernel_version(ctx: _Ctx) -> CheckResult:
    kernel = ctx.facts.kernel
    v = parse_version(kernel)
    if not v:
        return CheckResult("kernel-version", WARN, "could not read the kernel version (uname -r)",
                           "uname -r")
    if ctx.family == "debian" and ctx.facts.os.id == "ubuntu" and ctx.facts.os.version_id:
        fix = (f"apt-get update && apt-get install -y --install-recommends "
               f"linux-generic-hwe-{ctx.facts.os.version_id}\nreboot")
    elif ctx.family == "rhel":
        fix = "dnf upgrade -y kernel\nreboot   # RHEL 8 stays on 4.18: move to RHEL 9 (5.14)"
    else:
        fix = "install a kernel >= 5.8 from the distribution, then reboot"
    if v[:2] < KERNEL_SYSTEM_VERIFICATION_MIN:
        return CheckResult("kernel-version", FAIL,
                           f"kernel {kernel} is older than 4.19: kubeadm's SystemVerification "
                           "preflight rejects it and cgroup v2 needs 5.8+", fix)
    if v[:2] < KERNEL_CGROUP_V2_MIN:
        return CheckResult("kernel-version", WARN,
                           f"kernel {kernel} is older than 5.8: cgroup v2 support is incomplete "
                           "(Calico recommends 5.10+)", fix)
    return CheckResult("kernel-version", PASS, f"kernel {kernel}")


@_check("cgroup-v2", "cgroup v2 (unified hierarchy)",
        "The kubelet refuses cgroup v1 by default from Kubernetes 1.35 (failCgroupV1).")
def check_cgroup_v2(ctx: _Ctx) -> CheckResult:
    cg = ctx.facts.cgroup_version
    fix = _kernel_arg(ctx, "systemd.unified_cgroup_hierarchy=1")
    if cg == 2:
        return CheckResult("cgroup-v2", PASS, "/sys/fs/cgroup is cgroup2fs (cgroup v2)")
    if cg is None:
        return CheckResult("cgroup-v2", WARN,
                           f"could not determine the cgroup version (stat -fc %T /sys/fs/cgroup "
                           f"printed {ctx.facts.cgroup_fs or 'nothing'!r})",
                           "stat -fc %T /sys/fs/cgroup   # expect cgroup2fs")
    if ctx.release is None:
        return _not_supported(ctx, "cgroup-v2")
    msg = f"/sys/fs/cgroup is {ctx.facts.cgroup_fs or 'tmpfs'} (cgroup v1)"
    if ctx.release.cgroup_v1_allowed:
        return CheckResult("cgroup-v2", WARN,
                           f"{msg}: Kubernetes {ctx.release.minor} still starts on it, "
                           "1.35+ refuses it", fix)
    return CheckResult("cgroup-v2", FAIL,
                       f"{msg}: the kubelet of Kubernetes {ctx.release.minor} refuses cgroup v1 "
                       "(failCgroupV1)", fix)


@_check("cpu-memory", "CPU and memory",
        "kubeadm init/join --control-plane fails below 2 CPUs or 1700 MB (NumCPU, Mem checks).")
def check_cpu_memory(ctx: _Ctx) -> CheckResult:
    cpus, mem = ctx.facts.cpus, ctx.facts.memory_mib
    if cpus is None or mem is None:
        return CheckResult("cpu-memory", WARN,
                           f"could not read CPU count ({cpus}) or memory ({mem} MiB)",
                           "nproc; grep MemTotal /proc/meminfo")
    found = f"{cpus} CPUs, {mem} MiB RAM"
    if ctx.host.is_control_plane:
        short = []
        if cpus < CONTROL_PLANE_MIN_CPUS:
            short.append(f"{CONTROL_PLANE_MIN_CPUS} CPUs")
        if mem < CONTROL_PLANE_MIN_MEMORY_MIB:
            short.append(f"{CONTROL_PLANE_MIN_MEMORY_MIB} MiB RAM")
        if short:
            return CheckResult("cpu-memory", FAIL,
                               f"{found}: a control plane needs at least {' and '.join(short)} "
                               "(kubeadm NumCPU/Mem preflight errors)",
                               f"give {ctx.host.name} at least {CONTROL_PLANE_MIN_CPUS} CPUs and "
                               f"{CONTROL_PLANE_MIN_MEMORY_MIB} MiB RAM, or make it a worker")
        return CheckResult("cpu-memory", PASS, found)
    if cpus < WORKER_MIN_CPUS or mem < WORKER_MIN_MEMORY_MIB:
        return CheckResult("cpu-memory", WARN,
                           f"{found}: below {WORKER_MIN_CPUS} CPUs / {WORKER_MIN_MEMORY_MIB} MiB, "
                           "little is left for pods after kubelet, Calico and GPU operands",
                           f"give {ctx.host.name} at least {WORKER_MIN_CPUS} CPUs and "
                           f"{WORKER_MIN_MEMORY_MIB} MiB RAM")
    return CheckResult("cpu-memory", PASS, found)


@_check("swap-off", "Swap disabled now and after reboot",
        "The kubelet fails to start with swap on; kubeadm only warns (DOMAIN 6 #4).")
def check_swap_off(ctx: _Ctx) -> CheckResult:
    f = ctx.facts
    problems, fixes = [], []
    if f.swap_enabled:
        problems.append(f"swap is active on {', '.join(f.swap_devices)}")
        fixes.append("swapoff -a")
    if f.swap_fstab_entries:
        problems.append(f"/etc/fstab mounts swap ({'; '.join(f.swap_fstab_entries)}) so it "
                        "would come back after reboot")
        fixes.append("sed -i '/\\sswap\\s/s/^/#/' /etc/fstab")
    units = list(f.swap_units)
    for dev in f.swap_devices:
        if dev.startswith("/dev/zram"):
            units.append(f"dev-{dev[len('/dev/'):]}.swap")
    if f.swap_units:
        problems.append(f"systemd swap units {', '.join(f.swap_units)} would enable swap "
                        "after reboot")
    units = list(dict.fromkeys(units))
    if units and (f.swap_units or f.swap_enabled):
        fixes.append(f"systemctl mask {' '.join(units)}")
    if problems:
        return CheckResult("swap-off", FAIL, "; ".join(problems), "\n".join(fixes))
    if f.swap_enabled is None:
        return CheckResult("swap-off", WARN, "could not read /proc/swaps",
                           "cat /proc/swaps   # must list no devices")
    return CheckResult("swap-off", PASS, "no active swap, none in /etc/fstab or systemd units")


# --------------------------------------------------------------------------- identity

@_check("hostname-valid", "Hostname is a valid node name",
        "The node registers under its hostname, which must be a lowercase DNS-1123 name.")
def check_hostname_valid(ctx: _Ctx) -> CheckResult:
    hn = ctx.facts.hostname
    want = ctx.host.name
    if not hn:
        return CheckResult("hostname-valid", WARN, "could not read /proc/sys/kernel/hostname",
                           f"hostnamectl set-hostname {want}")
    target = want if _valid_node_name(want) else _to_dns1123(want)
    fix = f"hostnamectl set-hostname {target}"
    if not _valid_node_name(hn.lower()):
        return CheckResult("hostname-valid", FAIL,
                           f"hostname {hn!r} is not a valid DNS-1123 name (lowercase letters, "
                           "digits, '-' and '.', max 63 per label): the node cannot register",
                           fix)
    if hn != hn.lower():
        return CheckResult("hostname-valid", WARN,
                           f"hostname {hn!r} has uppercase letters: the node will register as "
                           f"{hn.lower()!r}", fix)
    if hn != want:
        return CheckResult("hostname-valid", WARN,
                           f"hostname {hn!r} differs from the inventory name {want!r}: the node "
                           f"will be named {hn!r} in Kubernetes",
                           f"{fix}   # or rename the host to {hn} in {ctx.inventory.path}")
    return CheckResult("hostname-valid", PASS, f"hostname {hn!r} is a valid node name")


def _valid_node_name(name: str) -> bool:
    return (0 < len(name) <= 253
            and all(len(label) <= 63 and _DNS1123_LABEL.match(label) for label in name.split(".")))


def _to_dns1123(name: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.") or "node"


def _shared(ctx: _Ctx, value_of: Callable[[Facts], Any]) -> list[str]:
    mine = value_of(ctx.facts)
    return [n for n, f in ctx.others() if mine is not None and value_of(f) == mine]


@_check("hostname-unique", "Hostname unique across hosts",
        "Two nodes with one hostname collide on the same Node object; kubeadm does not "
        "compare nodes.")
def check_hostname_unique(ctx: _Ctx) -> CheckResult:
    hn = ctx.facts.hostname
    if not hn:
        return CheckResult("hostname-unique", WARN, "could not read the hostname",
                           f"hostnamectl set-hostname {ctx.host.name}")
    dupes = _shared(ctx, lambda f: f.hostname.lower() if f.hostname else None)
    if dupes:
        return CheckResult("hostname-unique", FAIL,
                           f"hostname {hn!r} is also used by {', '.join(dupes)}",
                           f"hostnamectl set-hostname {_to_dns1123(ctx.host.name)}")
    return CheckResult("hostname-unique", PASS,
                       f"hostname {hn!r} is unique among {len(ctx.fleet)} reachable hosts")


@_check("product-uuid-unique", "product_uuid unique across hosts",
        "kubeadm requires a unique /sys/class/dmi/id/product_uuid per node (cloned VMs share it).")
def check_product_uuid_unique(ctx: _Ctx) -> CheckResult:
    uuid = ctx.facts.product_uuid
    if not uuid:
        if ctx.facts.uid == 0:
            return CheckResult("product-uuid-unique", WARN,
                               "/sys/class/dmi/id/product_uuid does not exist (no SMBIOS/DMI "
                               "tables: a VM or micro-VM without them); uniqueness cannot be checked",
                               "give the machine SMBIOS data (hypervisor setting), or check by hand "
                               "that no two nodes are clones")
        return CheckResult("product-uuid-unique", WARN,
                           "could not read /sys/class/dmi/id/product_uuid (needs root)",
                           "sudo cat /sys/class/dmi/id/product_uuid")
    dupes = _shared(ctx, lambda f: f.product_uuid)
    fix = ("cloned VM: give it a new SMBIOS UUID in the hypervisor (libvirt: `virsh edit "
           "<domain>` <uuid>; VMware: uuid.bios) and reboot; bare metal: set a unique system "
           "UUID with the board vendor's DMI tool")
    if dupes:
        return CheckResult("product-uuid-unique", FAIL,
                           f"product_uuid {uuid} is also reported by {', '.join(dupes)}", fix)
    if uuid in PLACEHOLDER_UUIDS:
        return CheckResult("product-uuid-unique", WARN,
                           f"product_uuid {uuid} is a firmware placeholder; unique in this fleet "
                           "but not per machine", fix)
    return CheckResult("product-uuid-unique", PASS,
                       f"product_uuid {uuid} is unique among {len(ctx.fleet)} reachable hosts")


@_check("mac-unique", "MAC addresses unique across hosts",
        "kubeadm requires unique MAC addresses per node; cloned VMs often share them.")
def check_mac_unique(ctx: _Ctx) -> CheckResult:
    macs = ctx.facts.macs
    if not macs:
        return CheckResult("mac-unique", WARN,
                           "no physical network interface found in `ip -o link show`",
                           "ip -o link show")
    clashes = []
    for iface, mac in sorted(macs.items()):
        owners = [f"{n} ({i})" for n, f in ctx.others() for i, m in sorted(f.macs.items())
                  if m == mac]
        if owners:
            clashes.append(f"{iface} {mac} is also on {', '.join(owners)}")
    if clashes:
        ifaces = ", ".join(c.split()[0] for c in clashes)
        return CheckResult("mac-unique", FAIL, "; ".join(clashes),
                           f"cloned VM: regenerate the MAC of {ifaces} in the hypervisor; or set "
                           "one: ip link set dev <iface> address <new-mac> (persist it with "
                           "netplan `macaddress:` or nmcli `ethernet.cloned-mac-address`)")
    return CheckResult("mac-unique", PASS,
                       f"{len(macs)} MAC address(es) unique among {len(ctx.fleet)} reachable hosts")


# --------------------------------------------------------------------------- kernel & network

@_check("kernel-modules", "overlay and br_netfilter modules",
        "containerd's overlayfs snapshotter needs overlay; bridge sysctls exist only with "
        "br_netfilter.")
def check_kernel_modules(ctx: _Ctx) -> CheckResult:
    f = ctx.facts
    missing = []
    if f.overlay_available is False:
        missing.append("overlay")
    if f.br_netfilter_loaded is False:
        missing.append("br_netfilter")
    fix = ("printf 'overlay\\nbr_netfilter\\n' > /etc/modules-load.d/k8s.conf\n"
           "modprobe overlay && modprobe br_netfilter")
    if missing:
        return CheckResult("kernel-modules", WARN,
                           f"kernel module(s) not loaded: {', '.join(missing)}", fix)
    if f.overlay_available is None:
        return CheckResult("kernel-modules", WARN,
                           "could not read /proc/modules or /proc/filesystems", fix)
    return CheckResult("kernel-modules", PASS, "overlay and br_netfilter are loaded")


@_check("ip-forward", "IPv4 forwarding",
        "kubeadm's FileContent--proc-sys-net-ipv4-ip_forward check fails unless it is 1.")
def check_ip_forward(ctx: _Ctx) -> CheckResult:
    keys = ["net.ipv4.ip_forward"]
    if _is_ipv6(ctx.inventory.cluster.pod_cidr):
        keys.append("net.ipv6.conf.all.forwarding")
    fix = SYSCTL_FIX
    if len(keys) > 1:
        fix += ("\nprintf 'net.ipv6.conf.all.forwarding = 1\\n' > /etc/sysctl.d/k8s-ipv6.conf "
                "&& sysctl --system")
    bad = {k: ctx.facts.sysctls.get(k) for k in keys if ctx.facts.sysctls.get(k) != "1"}
    if not bad:
        return CheckResult("ip-forward", PASS, " and ".join(f"{k} = 1" for k in keys))
    desc = ", ".join(f"{k} = {v}" if v is not None else f"{k} unreadable" for k, v in bad.items())
    return CheckResult("ip-forward", FAIL, f"{desc}: kubeadm's preflight requires 1", fix)


def _is_ipv6(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(cidr, strict=False).version == 6
    except ValueError:
        return False


@_check("bridge-netfilter", "Bridged traffic passes iptables",
        "kubeadm stopped checking it in 1.30, but Calico NetworkPolicy and many CNIs assume it.")
def check_bridge_netfilter(ctx: _Ctx) -> CheckResult:
    keys = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables")
    values = {k: ctx.facts.sysctls.get(k) for k in keys}
    if all(v == "1" for v in values.values()):
        return CheckResult("bridge-netfilter", PASS, " and ".join(f"{k} = 1" for k in keys))
    if all(v is None for v in values.values()):
        return CheckResult("bridge-netfilter", WARN,
                           "net.bridge.* sysctls do not exist (br_netfilter not loaded)",
                           SYSCTL_FIX)
    desc = ", ".join(f"{k} = {v if v is not None else 'missing'}" for k, v in values.items()
                     if v != "1")
    return CheckResult("bridge-netfilter", WARN, desc, SYSCTL_FIX)


@_check("required-binaries", "Binaries kubeadm looks for",
        "kubeadm errors without ip, iptables, mount, nsenter and warns without ethtool, socat, "
        "tc, conntrack, touch, ebtables.")
def check_required_binaries(ctx: _Ctx) -> CheckResult:
    have = ctx.facts.binaries
    if not have:
        return CheckResult("required-binaries", WARN, "the probe found no binaries in PATH",
                           "command -v " + " ".join(REQUIRED_BINARIES + RECOMMENDED_BINARIES))
    missing_req = [b for b in REQUIRED_BINARIES if b not in have]
    missing_rec = [b for b in RECOMMENDED_BINARIES if b not in have]
    if missing_req:
        return CheckResult("required-binaries", FAIL,
                           f"missing {', '.join(missing_req)} (kubeadm FileExisting errors)"
                           + (f"; also missing {', '.join(missing_rec)}" if missing_rec else ""),
                           _install(ctx, missing_req + missing_rec))
    if missing_rec:
        return CheckResult("required-binaries", WARN,
                           f"missing {', '.join(missing_rec)} (kubeadm warns)",
                           _install(ctx, missing_rec))
    return CheckResult("required-binaries", PASS,
                       f"found {', '.join(REQUIRED_BINARIES + RECOMMENDED_BINARIES)}")


@_check("time-sync", "Clock synchronized",
        "Skewed clocks make certificates 'not yet valid' and break etcd and token expiry.")
def check_time_sync(ctx: _Ctx) -> CheckResult:
    f = ctx.facts
    if ctx.family == "rhel":
        fix = "dnf install -y chrony && systemctl enable --now chronyd"
    elif ctx.family == "debian":
        fix = "apt-get update && apt-get install -y chrony && systemctl enable --now chrony"
    else:
        fix = "timedatectl set-ntp true"
    active = [s for s in TIME_SERVICES if f.service_active(s)]
    if f.time_synchronized:
        return CheckResult("time-sync", PASS,
                           "clock is NTP-synchronized" + (f" ({active[0]})" if active else ""))
    if f.time_synchronized is False:
        if f.ntp_enabled or active:
            return CheckResult("time-sync", WARN,
                               f"NTP is on ({', '.join(active) or 'timedatectl NTP=yes'}) but the "
                               "clock is not synchronized yet",
                               "chronyc tracking || timedatectl timesync-status")
        return CheckResult("time-sync", FAIL,
                           "clock is not synchronized and no NTP service is active", fix)
    if active:
        return CheckResult("time-sync", PASS,
                           f"{active[0]} is active (timedatectl unavailable to confirm sync)")
    return CheckResult("time-sync", WARN,
                       "could not determine time synchronization (no timedatectl, no active "
                       "chronyd/systemd-timesyncd/ntpd)", fix)


@_check("ports-free", "Kubernetes ports free",
        "kubeadm fails when 6443, 2379-2380, 10250, 10257 or 10259 is already in use.")
def check_ports_free(ctx: _Ctx) -> CheckResult:
    if ctx.is_k8s_node:
        return CheckResult("ports-free", SKIP,
                           f"already a Kubernetes node ({KUBELET_CONF} exists): its ports are in "
                           "use by its own components")
    wanted = set(WORKER_PORTS)
    if ctx.host.is_control_plane:
        wanted |= set(CONTROL_PLANE_PORTS)
    busy = sorted(p for p in wanted if p in ctx.facts.listening_ports)
    if not busy:
        return CheckResult("ports-free", PASS,
                           f"TCP {', '.join(str(p) for p in sorted(wanted))} are free")
    desc = ", ".join(f"{p} ({PORT_NAMES[p]})" for p in busy)
    sport = " or ".join(f"sport = :{p}" for p in busy)
    fix = f"ss -ltnp '( {sport} )'   # find the owner, then stop it: systemctl disable --now <unit>"
    if ctx.facts.kubernetes_files:
        fix = ("kubeadm reset -f   # leftovers of an earlier init/join: "
               f"{', '.join(ctx.facts.kubernetes_files)}\n" + fix)
    return CheckResult("ports-free", FAIL, f"TCP port(s) already in use: {desc}", fix)


@_check("firewall", "Host firewall",
        "firewalld/ufw drop forwarded pod traffic, VXLAN and BGP; Calico recommends disabling "
        "them (DOMAIN 6 #12).")
def check_firewall(ctx: _Ctx) -> CheckResult:
    f = ctx.facts
    firewalld = f.service_active("firewalld")
    ufw = bool(f.ufw_enabled)
    if not firewalld and not ufw:
        return CheckResult("firewall", PASS, "firewalld is not active and ufw is not enabled")
    tcp, udp = _firewall_ports(ctx)
    cidrs = [ctx.inventory.cluster.pod_cidr, ctx.inventory.cluster.service_cidr]
    ipip = ctx.inventory.network.encapsulation.startswith("IPIP")
    if firewalld:
        lines = ["systemctl disable --now firewalld",
                 "# or keep firewalld and open the ports:"]
        lines += [f"firewall-cmd --permanent --add-port={p}/tcp" for p in tcp]
        lines += [f"firewall-cmd --permanent --add-port={p}/udp" for p in udp]
        if ipip:
            lines.append("firewall-cmd --permanent --add-protocol=ipencap   # IP-in-IP (proto 4)")
        lines += [f"firewall-cmd --permanent --zone=trusted --add-source={c}" for c in cidrs]
        lines.append("firewall-cmd --reload")
        return CheckResult("firewall", WARN,
                           "firewalld is active: it drops pod, VXLAN and BGP traffic unless ports "
                           "and the pod/service CIDRs are opened", "\n".join(lines))
    lines = ["ufw disable", "# or keep ufw and open the ports:"]
    lines += [f"ufw allow {p.replace('-', ':')}/tcp" for p in tcp]
    lines += [f"ufw allow {p.replace('-', ':')}/udp" for p in udp]
    if ipip:
        lines.append("# ufw cannot allow IP-in-IP (protocol 4): with IPIP encapsulation use "
                     "`ufw disable`")
    lines += [f"ufw allow from {c}" for c in cidrs]
    lines.append("sed -i 's/^DEFAULT_FORWARD_POLICY=.*/DEFAULT_FORWARD_POLICY=\"ACCEPT\"/' "
                 "/etc/default/ufw && ufw reload")
    return CheckResult("firewall", WARN,
                       "ufw is enabled: it drops forwarded pod traffic and Calico's VXLAN/BGP "
                       "unless opened", "\n".join(lines))


def _firewall_ports(ctx: _Ctx) -> tuple[list[str], list[str]]:
    tcp = ["10250", "10256", "179", "5473"]
    if ctx.host.is_control_plane:
        tcp = ["6443", "2379-2380", "10257", "10259"] + tcp
    if ctx.host.is_worker:
        tcp.append("30000-32767")
    udp = ["4789"] + (["30000-32767"] if ctx.host.is_worker else [])
    return tcp, udp


@_check("cidr-overlap", "Pod/service CIDRs do not overlap host networks",
        "A pod CIDR overlapping a LAN makes pods unable to reach those hosts (DOMAIN 6 #10).")
def check_cidr_overlap(ctx: _Ctx) -> CheckResult:
    cluster = ctx.inventory.cluster
    nets: dict[str, Any] = {}
    for label, value in (("pod_cidr", cluster.pod_cidr), ("service_cidr", cluster.service_cidr)):
        try:
            nets[label] = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return CheckResult("cidr-overlap", FAIL, f"{label} {value!r} is not a valid CIDR",
                               f"set cluster.{label} in {ctx.inventory.path} to a CIDR such as "
                               f"{'10.244.0.0/16' if label == 'pod_cidr' else '10.96.0.0/12'}")
    host_nets = _host_networks(ctx)
    problems = []
    pod, svc = nets["pod_cidr"], nets["service_cidr"]
    if pod.version == svc.version and pod.overlaps(svc):
        problems.append(f"pod_cidr {pod} overlaps service_cidr {svc}")
    bad_labels = set()
    for label, net in nets.items():
        hits = [desc for desc, hnet in host_nets
                if hnet.version == net.version and hnet.overlaps(net)
                and not (ctx.is_k8s_node and hnet.subnet_of(net))]   # the cluster's own routes
        if hits:
            bad_labels.add(label)
            problems.append(f"{label} {net} overlaps {', '.join(hits)}")
    if not problems:
        return CheckResult("cidr-overlap", PASS,
                           f"pod_cidr {pod} and service_cidr {svc} overlap no host address or "
                           f"route ({len(host_nets)} checked)")
    fixes = []
    for label in sorted(bad_labels) or ["pod_cidr"]:
        taken = [n for _, n in host_nets] + [n for lab, n in nets.items() if lab != label]
        free = _free_cidr(taken, exclude=nets[label])
        fixes.append(f"set cluster.{label}: {free or '<a private range unused on your network>'}"
                     f" in {ctx.inventory.path}")
    return CheckResult("cidr-overlap", FAIL, "; ".join(problems), "\n".join(fixes))


def _host_networks(ctx: _Ctx) -> list[tuple[str, Any]]:
    out = []
    for addr in ctx.facts.addresses:
        try:
            out.append((f"host address {addr}", ipaddress.ip_interface(addr).network))
        except ValueError:
            continue
    for route in ctx.facts.routes:
        try:
            out.append((f"route {route}", ipaddress.ip_network(route, strict=False)))
        except ValueError:
            continue
    return out


def _free_cidr(taken: list[Any], exclude: Any) -> str | None:
    for cand in CIDR_CANDIDATES:
        net = ipaddress.ip_network(cand)
        if net == exclude:
            continue
        if not any(t.version == net.version and t.overlaps(net) for t in taken):
            return cand
    return None


@_check("node-ip", "Node IP present on the host",
        "On multi-NIC servers the kubelet node-ip and Calico autodetection must use the cluster "
        "network (DOMAIN 2.1, 6 #11).")
def check_node_ip(ctx: _Ctx) -> CheckResult:
    mine = {a.split("/")[0]: a for a in ctx.facts.addresses}
    wanted = ctx.host.node_ip
    if wanted:
        if wanted in mine:
            return CheckResult("node-ip", PASS, f"node_ip {wanted} is configured ({mine[wanted]})")
        return CheckResult("node-ip", FAIL,
                           f"node_ip {wanted} is not an address of {ctx.host.name} "
                           f"(found {', '.join(ctx.facts.addresses) or 'none'})",
                           f"set node_ip for {ctx.host.name} in {ctx.inventory.path} to one of: "
                           f"{', '.join(mine) or '<an address of the host>'}")
    if ctx.host.address in mine:
        return CheckResult("node-ip", PASS,
                           f"node IP defaults to the inventory address {ctx.host.address}")
    v4 = [a for a in mine if ipaddress.ip_address(a).version == 4
          and not ipaddress.ip_address(a) in ipaddress.ip_network("172.17.0.0/16")]  # docker0
    if len(v4) <= 1:
        return CheckResult("node-ip", PASS,
                           f"one IPv4 address ({v4[0]})" if v4 else "no global IPv4 address: "
                           "the kubelet picks the default-route address")
    return CheckResult("node-ip", WARN,
                       f"{len(v4)} IPv4 addresses ({', '.join(v4)}) and no node_ip: the kubelet and "
                       "Calico may pick the wrong network",
                       f"set node_ip: <one of {', '.join(v4)}> for {ctx.host.name} in "
                       f"{ctx.inventory.path}")


@_check("endpoint-resolves", "controlPlaneEndpoint resolves",
        "Every node must resolve the controlPlaneEndpoint name to the VIP/load balancer; "
        "kubeadm never checks it.")
def check_endpoint_resolves(ctx: _Ctx) -> CheckResult:
    name = ctx.inventory.cluster.endpoint_host
    if not name:
        return CheckResult("endpoint-resolves", SKIP,
                           "no control_plane_endpoint set: nodes join the first control plane's "
                           "address")
    try:
        ipaddress.ip_address(name)
        return CheckResult("endpoint-resolves", PASS,
                           f"control_plane_endpoint {name} is an IP address")
    except ValueError:
        pass
    addrs = ctx.facts.endpoint_addresses
    if addrs is None:
        return CheckResult("endpoint-resolves", SKIP, f"the probe did not resolve {name}")
    if not addrs:
        return CheckResult("endpoint-resolves", FAIL,
                           f"{name} does not resolve on {ctx.host.name} (getent ahosts found "
                           "nothing)",
                           f"add {name} to DNS, or: echo '<vip-or-load-balancer-ip> {name}' "
                           ">> /etc/hosts")
    loop = [a for a in addrs if ipaddress.ip_address(a).is_loopback]
    if loop and not ctx.host.is_control_plane:
        return CheckResult("endpoint-resolves", FAIL,
                           f"{name} resolves to loopback {', '.join(loop)} on a worker: it cannot "
                           "reach the API server there",
                           f"sed -i '/\\s{re.escape(name)}\\b/d' /etc/hosts && "
                           f"echo '<vip-or-load-balancer-ip> {name}' >> /etc/hosts")
    differ = [n for n, f in ctx.others()
              if f.endpoint_addresses and not set(f.endpoint_addresses) & set(addrs)]
    if differ:
        return CheckResult("endpoint-resolves", WARN,
                           f"{name} resolves to {', '.join(addrs)} here but to other addresses on "
                           f"{', '.join(differ)}",
                           f"getent ahosts {name}   # on every host; make DNS or /etc/hosts agree")
    return CheckResult("endpoint-resolves", PASS, f"{name} resolves to {', '.join(addrs)}")


# --------------------------------------------------------------------------- containerd

@_check("containerd-version", "containerd version",
        "Kubernetes 1.36+ needs containerd 2.x; 1.6 is EOL; older versions lack CRI v1.")
def check_containerd_version(ctx: _Ctx) -> CheckResult:
    if ctx.release is None:
        return _not_supported(ctx, "containerd-version")
    rel = ctx.release
    raw = ctx.facts.containerd_version
    remove = ("apt-get remove -y containerd containerd.io" if ctx.family == "debian"
              else "dnf remove -y containerd containerd.io" if ctx.family == "rhel"
              else "apt-get remove -y containerd containerd.io || dnf remove -y containerd.io")
    fix = f"{remove}   # then `gpuk8s up` installs containerd {rel.containerd_default}"
    if raw is None:
        if "containerd" in ctx.facts.binaries:
            return CheckResult("containerd-version", WARN,
                               f"containerd at {ctx.facts.binaries['containerd']} did not report "
                               "a version", "containerd --version")
        return CheckResult("containerd-version", WARN,
                           f"containerd is not installed: gpuk8s up installs containerd "
                           f"{rel.containerd_default}", None)
    v = parse_version(raw) or (0,)
    need = parse_version(rel.containerd_min) or (0,)
    if v[:2] < CONTAINERD_OLDEST:
        return CheckResult("containerd-version", FAIL,
                           f"containerd {raw} is end of life (1.6 and older are unsupported)", fix)
    if v[:2] < need[:2]:
        return CheckResult("containerd-version", FAIL,
                           f"containerd {raw} is too old: Kubernetes {rel.minor} needs containerd "
                           f">= {rel.containerd_min}", fix)
    if v[0] < 2:
        return CheckResult("containerd-version", PASS,
                           f"containerd {raw} (Kubernetes {rel.minor} is the last to accept 1.x)"
                           if rel.minor == "1.35" else f"containerd {raw}")
    return CheckResult("containerd-version", PASS, f"containerd {raw}")


@_check("containerd-cri-enabled", "containerd CRI plugin enabled",
        "Docker's containerd.io package ships disabled_plugins = [\"cri\"], so kubeadm fails "
        "with 'unknown service runtime.v1.RuntimeService' (DOMAIN 6 #1).")
def check_containerd_cri_enabled(ctx: _Ctx) -> CheckResult:
    cfg = ctx.facts.containerd
    if not cfg.present:
        return CheckResult("containerd-cri-enabled", SKIP,
                           "no /etc/containerd/config.toml: gpuk8s up generates one with CRI on")
    if cfg.parse_error:
        return CheckResult("containerd-cri-enabled", FAIL,
                           f"/etc/containerd/config.toml is not valid TOML: {cfg.parse_error}",
                           _containerd_regen_fix(ctx))
    if cfg.cri_disabled:
        return CheckResult("containerd-cri-enabled", FAIL,
                           "/etc/containerd/config.toml disables the CRI plugin "
                           "(disabled_plugins = [\"cri\"], as shipped by containerd.io)",
                           _containerd_regen_fix(ctx))
    return CheckResult("containerd-cri-enabled", PASS, "the CRI plugin is not disabled")


@_check("containerd-systemd-cgroup", "containerd uses the systemd cgroup driver",
        "kubeadm configures the kubelet for systemd; containerd defaults to cgroupfs, and a "
        "mismatch makes control-plane pods restart (DOMAIN 6 #2, #3).")
def check_containerd_systemd_cgroup(ctx: _Ctx) -> CheckResult:
    cfg = ctx.facts.containerd
    if not cfg.present:
        return CheckResult("containerd-systemd-cgroup", WARN,
                           "no /etc/containerd/config.toml: gpuk8s up will generate one with "
                           "SystemdCgroup = true", None)
    if cfg.parse_error:
        return CheckResult("containerd-systemd-cgroup", FAIL,
                           f"/etc/containerd/config.toml is not valid TOML: {cfg.parse_error}",
                           _containerd_regen_fix(ctx))
    table = _containerd_table(cfg.version)
    if cfg.systemd_cgroup:
        return CheckResult("containerd-systemd-cgroup", PASS,
                           f"SystemdCgroup = true in {table} (config version {cfg.version})")
    if cfg.systemd_cgroup_misplaced:
        other = _containerd_table(2 if (cfg.version or 1) >= 3 else 3)
        return CheckResult("containerd-systemd-cgroup", FAIL,
                           f"SystemdCgroup is set under {other}, which a version {cfg.version} "
                           f"config ignores: it belongs in {table}; containerd runs with cgroupfs",
                           _containerd_regen_fix(ctx))
    state = "false" if cfg.systemd_cgroup is False else "not set"
    return CheckResult("containerd-systemd-cgroup", FAIL,
                       f"SystemdCgroup is {state} in {table}, so containerd uses cgroupfs while "
                       "the kubelet uses systemd", _containerd_regen_fix(ctx))


@_check("containerd-config-version", "containerd config in the binary's native version",
        "containerd 2.x wants version = 3, 1.x version = 2; a migrated config makes the NVIDIA "
        "toolkit write a drop-in newer than the root file (DOMAIN 6 #19).")
def check_containerd_config_version(ctx: _Ctx) -> CheckResult:
    cfg = ctx.facts.containerd
    if not cfg.present or cfg.parse_error or cfg.version is None:
        return CheckResult("containerd-config-version", SKIP,
                           "no parsable /etc/containerd/config.toml")
    v = parse_version(ctx.facts.containerd_version)
    if v is None:
        if ctx.release is None:
            return _not_supported(ctx, "containerd-config-version")
        v = parse_version(ctx.release.containerd_default)
        who = f"containerd {ctx.release.containerd_default} (installed by gpuk8s up)"
    else:
        who = f"containerd {ctx.facts.containerd_version}"
    native = 3 if v and v[0] >= 2 else 2
    fix = _containerd_regen_fix(ctx)
    if cfg.version == native:
        return CheckResult("containerd-config-version", PASS,
                           f"config version {cfg.version} is native for {who}")
    if cfg.version > native:
        return CheckResult("containerd-config-version", FAIL,
                           f"config version {cfg.version} cannot be read by {who} "
                           f"(expects version {native})", fix)
    if cfg.version == 1 and native == 3:
        return CheckResult("containerd-config-version", FAIL,
                           f"config version 1 was removed in containerd 2.0 ({who})", fix)
    return CheckResult("containerd-config-version", WARN,
                       f"config version {cfg.version} is not native for {who} (expects "
                       f"{native}): it is migrated at startup, and the NVIDIA toolkit's drop-in "
                       "may then carry a higher version than the root file", fix)


@_check("containerd-sandbox-image", "containerd sandbox (pause) image",
        "kubeadm warns when the runtime's sandbox image differs from the one it expects.")
def check_containerd_sandbox_image(ctx: _Ctx) -> CheckResult:
    cfg = ctx.facts.containerd
    if not cfg.present or cfg.parse_error:
        return CheckResult("containerd-sandbox-image", SKIP,
                           "no parsable /etc/containerd/config.toml: gpuk8s up sets the image")
    if ctx.release is None:
        return _not_supported(ctx, "containerd-sandbox-image")
    want = ctx.inventory.versions.pause_image or ctx.release.pause_image
    if (cfg.version or 1) >= 3:
        where = "[plugins.'io.containerd.cri.v1.images'.pinned_images] sandbox"
    else:
        where = '[plugins."io.containerd.grpc.v1.cri"] sandbox_image'
    fix = f"# set in /etc/containerd/config.toml: {where} = '{want}'\nsystemctl restart containerd"
    if cfg.sandbox_image == want:
        return CheckResult("containerd-sandbox-image", PASS, f"sandbox image {want}")
    if cfg.sandbox_image is None:
        return CheckResult("containerd-sandbox-image", WARN,
                           f"sandbox image not pinned in {where}: containerd's built-in default "
                           f"may differ from {want}", fix)
    return CheckResult("containerd-sandbox-image", WARN,
                       f"sandbox image {cfg.sandbox_image} differs from {want} "
                       f"(Kubernetes {ctx.release.minor})", fix)


# --------------------------------------------------------------------------- Kubernetes tools

@_check("kube-tools-version", "kubeadm, kubelet, kubectl versions",
        "The kubelet may never be newer than the control plane or kubeadm; one pinned patch "
        "everywhere avoids skew (DOMAIN 2.9).")
def check_kube_tools_version(ctx: _Ctx) -> CheckResult:
    if ctx.release is None:
        return _not_supported(ctx, "kube-tools-version")
    rel = ctx.release
    f = ctx.facts
    tools = {"kubeadm": f.kubeadm_version, "kubelet": f.kubelet_version,
             "kubectl": f.kubectl_version}
    present = {k: v for k, v in tools.items() if v}
    if not present:
        return CheckResult("kube-tools-version", WARN,
                           f"kubeadm, kubelet and kubectl are not installed: gpuk8s up installs "
                           f"{rel.patch}", None)
    fix = _k8s_packages_fix(ctx, rel)
    want = parse_version(rel.minor) or (0, 0)
    pv = {k: parse_version(v) or (0, 0, 0) for k, v in present.items()}
    fails = [f"{k} {present[k]} is not Kubernetes {rel.minor}"
             for k in ("kubeadm", "kubelet") if k in pv and pv[k][:2] != want[:2]]
    if "kubeadm" in pv and "kubelet" in pv and pv["kubelet"] > pv["kubeadm"]:
        fails.append(f"kubelet {present['kubelet']} is newer than kubeadm {present['kubeadm']}")
    if fails:
        return CheckResult("kube-tools-version", FAIL, "; ".join(fails), fix)
    warns = []
    if "kubectl" in pv and abs(pv["kubectl"][1] - want[1]) > 1:
        warns.append(f"kubectl {present['kubectl']} is more than one minor away from "
                     f"{rel.minor}")
    same_minor = {k: v for k, v in present.items() if pv[k][:2] == want[:2]}
    if len(set(same_minor.values())) > 1:
        warns.append("patch versions differ: " + ", ".join(f"{k} {v}" for k, v in present.items()))
    missing = [k for k in tools if k not in present]
    if missing:
        warns.append(f"{', '.join(missing)} not installed (gpuk8s up installs {rel.patch})")
    desc = ", ".join(f"{k} {v}" for k, v in present.items())
    if warns:
        return CheckResult("kube-tools-version", WARN, f"{desc}: {'; '.join(warns)}", fix)
    return CheckResult("kube-tools-version", PASS, f"{desc} match Kubernetes {rel.minor}")


@_check("helm", "Helm on the first control plane",
        "gpuk8s installs the GPU Operator chart with Helm from the first control plane only.")
def check_helm(ctx: _Ctx) -> CheckResult:
    cps = ctx.inventory.control_planes
    if not cps or cps[0].name != ctx.host.name:
        first = cps[0].name if cps else "none"
        return CheckResult("helm", SKIP,
                           f"Helm is only needed on the first control plane ({first})")
    raw = ctx.facts.helm_version
    fix = "curl -fsSL https://raw.githubusercontent.com/helm/helm/main/scripts/get-helm-3 | bash"
    if not raw:
        return CheckResult("helm", WARN, "helm is not installed; the GPU Operator is installed with "
                           f"Helm >= {HELM_MIN} from this host", fix)
    v = parse_version(raw) or (0,)
    if v < (parse_version(HELM_MIN) or (0,)):
        return CheckResult("helm", FAIL, f"helm {raw} is older than {HELM_MIN}", fix)
    return CheckResult("helm", PASS, f"helm {raw}")


@_check("cni-config-clean", "No other CNI configuration",
        "The container runtime uses the first file in /etc/cni/net.d; a leftover flannel/podman "
        "config hijacks pod networking, and kubeadm reset does not remove it.")
def check_cni_config_clean(ctx: _Ctx) -> CheckResult:
    files = ctx.facts.cni_configs
    if not files:
        return CheckResult("cni-config-clean", PASS, "/etc/cni/net.d is empty")
    calico = [f for f in files if f in CALICO_CNI_FILES or "calico" in f]
    foreign = [f for f in files if f not in calico]
    if not foreign and ctx.is_k8s_node:
        return CheckResult("cni-config-clean", PASS,
                           f"/etc/cni/net.d holds this cluster's Calico files: {', '.join(files)}")
    stale = foreign or calico
    fix = ("mkdir -p /root/cni-net.d.bak && "
           + " && ".join(f"mv /etc/cni/net.d/{f} /root/cni-net.d.bak/" for f in stale))
    if foreign:
        return CheckResult("cni-config-clean", WARN,
                           f"/etc/cni/net.d has another CNI's config: {', '.join(foreign)}", fix)
    return CheckResult("cni-config-clean", WARN,
                       f"/etc/cni/net.d has Calico files from an earlier cluster "
                       f"({', '.join(calico)}) but this host is not a node", fix)


# --------------------------------------------------------------------------- GPU

@_check("gpu-present", "NVIDIA GPUs present",
        "A host declared `gpu: true` without a visible GPU would never get nvidia.com/gpu.")
def check_gpu_present(ctx: _Ctx) -> CheckResult:
    f = ctx.facts
    if ctx.host.gpu is False:
        extra = f" ({len(f.gpus)} NVIDIA GPU(s) found will not be used)" if f.gpus else ""
        return CheckResult("gpu-present", SKIP, f"gpu: false in the inventory{extra}")
    if not f.gpus:
        if ctx.host.gpu:
            others = (f"; only non-GPU NVIDIA functions: "
                      f"{', '.join(g.class_id or '?' for g in f.nvidia_other_functions)}"
                      if f.nvidia_other_functions else "")
            return CheckResult("gpu-present", FAIL,
                               "gpu: true in the inventory but no NVIDIA display controller "
                               f"(PCI class 0x03xx, vendor 0x10de) is on the bus{others}",
                               "lspci -nn -d 10de:   # reseat the card / pass the GPU through, "
                               f"or set gpu: false for {ctx.host.name}")
        return CheckResult("gpu-present", SKIP, "no NVIDIA GPU found: CPU-only node")
    counts: dict[str, int] = {}
    for g in f.gpus:
        name = g.name or "GPU"
        if not name.startswith(("NVIDIA", "Tesla", "Quadro")):
            name = f"NVIDIA {name}"
        label = f"{name} ({g.device_id})"
        counts[label] = counts.get(label, 0) + 1
    desc = ", ".join(f"{n} x {label}" for label, n in counts.items())
    vfio = [g.pci_address for g in f.gpus if g.driver == "vfio-pci"]
    if vfio:
        return CheckResult("gpu-present", WARN,
                           f"{desc}; {', '.join(vfio)} bound to vfio-pci (reserved for VM "
                           "passthrough), not usable by the node",
                           "remove the 10de device ids from vfio-pci.ids= on the kernel command "
                           "line and /etc/modprobe.d, rebuild the initramfs, then reboot")
    if f.nvswitch_count:
        desc += (f"; {f.nvswitch_count} NVSwitch: Fabric Manager is required (the driver "
                 "container installs it; with a host driver install nvidia-fabricmanager)")
    return CheckResult("gpu-present", PASS, desc)


@_check("nouveau-off", "nouveau driver not loaded",
        "With nouveau loaded the NVIDIA driver cannot load and GPU Operator pods stay in Init "
        "(DOMAIN 6 #13).")
def check_nouveau_off(ctx: _Ctx) -> CheckResult:
    skip = _skip_non_gpu(ctx, "nouveau-off")
    if skip:
        return skip
    f = ctx.facts
    blacklist = ("printf 'blacklist nouveau\\noptions nouveau modeset=0\\n' > "
                 f"/etc/modprobe.d/blacklist-nouveau.conf\n{_initramfs(ctx)}")
    if f.nouveau_loaded:
        return CheckResult("nouveau-off", FAIL,
                           "the nouveau module is loaded: the NVIDIA driver cannot bind the GPU",
                           f"{blacklist}\nreboot")
    if not f.nouveau_blacklisted and any(g.driver == "nvidia" for g in f.gpus):
        return CheckResult("nouveau-off", PASS,
                           "nouveau is not loaded; the NVIDIA host driver is bound to the GPUs")
    if not f.nouveau_blacklisted:
        return CheckResult("nouveau-off", WARN,
                           "nouveau is not loaded but not blacklisted either: it may load on "
                           "the next boot", blacklist)
    return CheckResult("nouveau-off", PASS, "nouveau is not loaded and is blacklisted")


@_check("secure-boot", "Secure Boot vs. driver container",
        "With Secure Boot on, the kernel rejects the unsigned modules the driver container builds "
        "(DOMAIN 6 #14).")
def check_secure_boot(ctx: _Ctx) -> CheckResult:
    skip = _skip_non_gpu(ctx, "secure-boot")
    if skip:
        return skip
    f = ctx.facts
    mode = driver_mode(ctx.inventory, f)
    if f.secure_boot is None:
        return CheckResult("secure-boot", WARN,
                           "Secure Boot state unknown (no SecureBoot EFI variable readable and "
                           "no mokutil)", "mokutil --sb-state")
    if not f.secure_boot:
        why = "legacy BIOS boot" if f.uefi is False else "UEFI, Secure Boot disabled"
        return CheckResult("secure-boot", PASS, f"Secure Boot is off ({why})")
    if mode == "host":
        if _host_driver_loaded(f):
            ver = f" {f.nvidia_driver_version}" if f.nvidia_driver_version else ""
            return CheckResult("secure-boot", PASS,
                               f"Secure Boot is on; the host driver{ver} is loaded, so its "
                               "modules are signed")
        return CheckResult("secure-boot", WARN,
                           "Secure Boot is on and gpu.driver is host, but no NVIDIA module is "
                           "loaded: the host driver must be signed (or its key enrolled)",
                           "mokutil --sb-state; modinfo -F signer nvidia")
    ubuntu = ("\n# or install a signed host driver: ubuntu-drivers install --gpgpu "
              "nvidia:580-server && reboot   (then gpu.driver: host)"
              if ctx.facts.os.id == "ubuntu" else
              "\n# or pre-install a signed NVIDIA driver and set gpu.driver: host")
    return CheckResult("secure-boot", FAIL,
                       "Secure Boot is on and the GPU Operator would build the driver in a "
                       "container: the kernel rejects its unsigned modules "
                       "(\"Operation not permitted\")",
                       "mokutil --disable-validation && reboot   # confirm in MokManager, or "
                       f"disable Secure Boot in the UEFI setup{ubuntu}")


@_check("nvidia-driver", "Host NVIDIA driver",
        "A pre-installed driver requires driver.enabled=false; otherwise the driver pod fails "
        "'module already loaded' (DOMAIN 6 #16).")
def check_nvidia_driver(ctx: _Ctx) -> CheckResult:
    skip = _skip_non_gpu(ctx, "nvidia-driver")
    if skip:
        return skip
    f = ctx.facts
    wanted = ctx.inventory.gpu.driver
    loaded = _host_driver_loaded(f)
    ver = f.nvidia_driver_version or "(unknown version)"
    purge = ("apt-get purge -y '*nvidia*' && apt-get autoremove -y" if ctx.family == "debian"
             else "dnf remove -y '*nvidia*'" if ctx.family == "rhel"
             else "apt-get purge -y '*nvidia*' || dnf remove -y '*nvidia*'")
    if loaded and wanted == "container":
        return CheckResult("nvidia-driver", FAIL,
                           f"host driver {ver} is loaded but gpu.driver is container: the driver "
                           "pod would fail with 'module already loaded'",
                           f"{purge}\nreboot   # or set gpu.driver: host (or auto) in "
                           f"{ctx.inventory.path}")
    if loaded:
        if f.nvidia_smi_ok:
            return CheckResult("nvidia-driver", PASS,
                               f"host driver {ver}: GPU Operator will use driver.enabled=false")
        err = f.nvidia_smi_error or "nvidia-smi is not installed"
        return CheckResult("nvidia-driver", WARN,
                           f"nvidia module {ver} is loaded but nvidia-smi fails: {err}",
                           "nvidia-smi; dmesg | grep -i -e NVRM -e Xid   # repair or reinstall "
                           "the host driver, then reboot")
    if wanted == "host":
        return CheckResult("nvidia-driver", FAIL,
                           "gpu.driver is host but no NVIDIA kernel module is loaded",
                           ("ubuntu-drivers install --gpgpu nvidia:580-server && reboot"
                            if ctx.facts.os.id == "ubuntu" else
                            "install the NVIDIA driver on the host and reboot")
                           + f"\n# or set gpu.driver: container in {ctx.inventory.path}")
    if f.nvidia_smi_ok is False:
        return CheckResult("nvidia-driver", PASS,
                           "no host driver (nvidia-smi is installed but reaches no driver): "
                           "GPU Operator deploys the driver container")
    return CheckResult("nvidia-driver", PASS,
                       "no host driver: GPU Operator deploys the driver container "
                       "(driver.enabled=true)")


@_check("gpu-os-consistent", "Same OS on all driver-container GPU nodes",
        "The GPU Operator requires one OS version on all GPU nodes using its driver container "
        "(DOMAIN 5.1).")
def check_gpu_os_consistent(ctx: _Ctx) -> CheckResult:
    skip = _skip_non_gpu(ctx, "gpu-os-consistent")
    if skip:
        return skip
    f = ctx.facts
    if driver_mode(ctx.inventory, f) == "host":
        return CheckResult("gpu-os-consistent", PASS,
                           "uses the host driver: the OS need not match other GPU nodes")
    mine = (f.os.id, f.os.version_id)
    differ = []
    peers = 0
    for name, other in ctx.others():
        try:
            spec = ctx.inventory.host(name)
        except KeyError:
            continue
        if not is_gpu_host(spec, other) or driver_mode(ctx.inventory, other) == "host":
            continue
        peers += 1
        if (other.os.id, other.os.version_id) != mine:
            differ.append(f"{name} ({other.os.id} {other.os.version_id})")
    label = f"{mine[0]} {mine[1]}"
    if differ:
        return CheckResult("gpu-os-consistent", FAIL,
                           f"this host runs {label} but driver-container GPU nodes "
                           f"{', '.join(differ)} differ",
                           "reinstall the GPU nodes with one OS version, or pre-install the "
                           "driver on the odd ones and set gpu.driver: host")
    return CheckResult("gpu-os-consistent", PASS,
                       f"{label}, same as {peers} other GPU node(s)" if peers
                       else f"{label} (the only driver-container GPU node reachable)")


@_check("unattended-upgrades", "Automatic kernel upgrades off",
        "An unattended kernel upgrade can land on a kernel the driver container cannot build for "
        "(DOMAIN 5.8, 6 #15).")
def check_unattended_upgrades(ctx: _Ctx) -> CheckResult:
    skip = _skip_non_gpu(ctx, "unattended-upgrades")
    if skip:
        return skip
    f = ctx.facts
    if f.unattended_upgrades:
        if any(v.get("enabled") == "enabled" for k, v in f.services.items()
               if k.startswith("dnf-automatic")):
            return CheckResult("unattended-upgrades", WARN,
                               "dnf-automatic timers are enabled: a kernel update may outrun "
                               "the GPU driver",
                               "systemctl disable --now dnf-automatic.timer "
                               "dnf-automatic-install.timer")
        return CheckResult("unattended-upgrades", WARN,
                           "unattended-upgrades is on (APT::Periodic::Unattended-Upgrade \"1\"): "
                           "a kernel upgrade may outrun the GPU driver",
                           "apt-get remove -y unattended-upgrades   # or keep it and turn it off:\n"
                           "printf 'APT::Periodic::Update-Package-Lists \"1\";\\n"
                           "APT::Periodic::Unattended-Upgrade \"0\";\\n' > "
                           "/etc/apt/apt.conf.d/20auto-upgrades")
    if f.unattended_upgrades is None:
        if f.services.get("unattended-upgrades", {}).get("enabled") == "enabled":
            return CheckResult("unattended-upgrades", PASS,
                               "unattended-upgrades is installed but 20auto-upgrades is missing, "
                               "so it never runs")
        return CheckResult("unattended-upgrades", WARN,
                           "could not determine whether automatic upgrades are on",
                           "cat /etc/apt/apt.conf.d/20auto-upgrades; "
                           "systemctl is-enabled dnf-automatic.timer")
    return CheckResult("unattended-upgrades", PASS, "automatic upgrades are off")


# --------------------------------------------------------------------------- public API

CHECKS: list[CheckInfo] = [info for info, _ in _REGISTRY]
CHECK_IDS: tuple[str, ...] = tuple(info.id for info in CHECKS)


def run_checks(inventory: Inventory, host: HostSpec, facts: Facts,
               fleet: Mapping[str, Facts]) -> list[CheckResult]:
    """Every check for one host, in CHECKS order; `fleet` maps host name -> Facts (incl. this)."""
    ctx = _Ctx(inventory=inventory, host=host, facts=facts, fleet=fleet,
               release=release_for(inventory.cluster.kubernetes_version),
               family=os_family(facts), gpu=is_gpu_host(host, facts))
    return [fn(ctx) for _, fn in _REGISTRY]
