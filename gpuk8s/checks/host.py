"""Host checks: privileges, OS, kernel, cgroups, CPU/memory, swap, hostname, modules, clock."""

from __future__ import annotations

import re

from gpuk8s.checks.base import FAIL, PASS, WARN, CheckContext, CheckResult, not_supported
from gpuk8s.checks.fixes import kernel_arg, words
from gpuk8s.checks.preflight import PREFLIGHT
from gpuk8s.shell import quote
from gpuk8s.versions import (CONTROL_PLANE_MIN_CPUS, CONTROL_PLANE_MIN_MEMORY_MIB, REJECTED_OS,
                             SUPPORTED_OS, parse_version)

WORKER_MIN_CPUS = 2
WORKER_MIN_MEMORY_MIB = 1024
KERNEL_SYSTEM_VERIFICATION_MIN = (4, 19)   # kubeadm SystemVerification (DOMAIN 6 #6)
KERNEL_CGROUP_V2_MIN = (5, 8)              # cgroup v2 needs >= 5.8 (DOMAIN 2.5)
TIME_SERVICES = ("chronyd", "chrony", "systemd-timesyncd", "ntpd", "ntp", "ntpsec")

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _major(version_id: str | None) -> str | None:
    """'9.4' -> '9'."""
    return version_id.split(".")[0] if version_id else None


@PREFLIGHT.check("privileged-access", "Root or sudo access",
                 "kubeadm's IsPrivilegedUser check needs root, and several facts (product_uuid) "
                 "need it too.")
def check_privileged_access(ctx: CheckContext) -> CheckResult:
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
        f"echo {quote(f'{user} ALL=(ALL) NOPASSWD: ALL')} | sudo tee /etc/sudoers.d/gpuk8s "
        "&& sudo chmod 0440 /etc/sudoers.d/gpuk8s\n"
        f"# then set ssh.sudo: true for {ctx.host.name} in {ctx.inventory.path} "
        "(or connect as ssh.user: root)")


@PREFLIGHT.check("os-supported", "Operating system in the support matrix",
                 "kubeadm packages, cgroup v2 defaults and GPU Operator driver images exist only "
                 "for some distributions; RHEL 8 means cgroup v1 and kernel 4.18.")
def check_os_supported(ctx: CheckContext) -> CheckResult:
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


def _os_version_result(ctx: CheckContext, os_id: str, name: str, fix: str) -> CheckResult:
    """os-supported for a distribution in SUPPORTED_OS: its version against the matrix."""
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


@PREFLIGHT.check("kernel-version", "Kernel version",
                 "kubeadm's SystemVerification rejects kernels older than 4.19 (RHEL 8's 4.18); "
                 "cgroup v2 needs 5.8+; Calico recommends 5.10+.")
def check_kernel_version(ctx: CheckContext) -> CheckResult:
    kernel = ctx.facts.kernel
    v = parse_version(kernel)
    if not v:
        return CheckResult("kernel-version", WARN, "could not read the kernel version (uname -r)",
                           "uname -r")
    if ctx.family == "debian" and ctx.facts.os.id == "ubuntu" and ctx.facts.os.version_id:
        hwe = quote(f"linux-generic-hwe-{ctx.facts.os.version_id}")
        fix = f"apt-get update && apt-get install -y --install-recommends {hwe}\nreboot"
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


@PREFLIGHT.check("cgroup-v2", "cgroup v2 (unified hierarchy)",
                 "The kubelet refuses cgroup v1 by default from Kubernetes 1.35 (failCgroupV1).")
def check_cgroup_v2(ctx: CheckContext) -> CheckResult:
    cg = ctx.facts.cgroup_version
    fix = kernel_arg(ctx, "systemd.unified_cgroup_hierarchy=1")
    if cg == 2:
        return CheckResult("cgroup-v2", PASS, "/sys/fs/cgroup is cgroup2fs (cgroup v2)")
    if cg is None:
        return CheckResult("cgroup-v2", WARN,
                           f"could not determine the cgroup version (stat -fc %T /sys/fs/cgroup "
                           f"printed {ctx.facts.cgroup_fs or 'nothing'!r})",
                           "stat -fc %T /sys/fs/cgroup   # expect cgroup2fs")
    if ctx.release is None:
        return not_supported(ctx, "cgroup-v2")
    msg = f"/sys/fs/cgroup is {ctx.facts.cgroup_fs or 'tmpfs'} (cgroup v1)"
    if ctx.release.cgroup_v1_allowed:
        return CheckResult("cgroup-v2", WARN,
                           f"{msg}: Kubernetes {ctx.release.minor} still starts on it, "
                           "1.35+ refuses it", fix)
    return CheckResult("cgroup-v2", FAIL,
                       f"{msg}: the kubelet of Kubernetes {ctx.release.minor} refuses cgroup v1 "
                       "(failCgroupV1)", fix)


@PREFLIGHT.check("cpu-memory", "CPU and memory",
                 "kubeadm init/join --control-plane fails below 2 CPUs or 1700 MB "
                 "(NumCPU, Mem checks).")
def check_cpu_memory(ctx: CheckContext) -> CheckResult:
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


@PREFLIGHT.check("swap-off", "Swap disabled now and after reboot",
                 "The kubelet fails to start with swap on; kubeadm only warns (DOMAIN 6 #4).",
                 repaired_by_up=True)
def check_swap_off(ctx: CheckContext) -> CheckResult:
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
        fixes.append(f"systemctl mask {words(units)}")
    if problems:
        return CheckResult("swap-off", FAIL, "; ".join(problems), "\n".join(fixes))
    if f.swap_enabled is None:
        return CheckResult("swap-off", WARN, "could not read /proc/swaps",
                           "cat /proc/swaps   # must list no devices")
    return CheckResult("swap-off", PASS, "no active swap, none in /etc/fstab or systemd units")


@PREFLIGHT.check("hostname-valid", "Hostname is a valid node name",
                 "The node registers under its hostname, which must be a lowercase DNS-1123 name.")
def check_hostname_valid(ctx: CheckContext) -> CheckResult:
    hn = ctx.facts.hostname
    want = ctx.host.name
    if not hn:
        return CheckResult("hostname-valid", WARN, "could not read /proc/sys/kernel/hostname",
                           f"hostnamectl set-hostname {quote(want)}")
    target = want if _valid_node_name(want) else to_dns1123(want)
    fix = f"hostnamectl set-hostname {quote(target)}"
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
                           f"{fix}   # or rename the host to {quote(hn)} in {ctx.inventory.path}")
    return CheckResult("hostname-valid", PASS, f"hostname {hn!r} is a valid node name")


def _valid_node_name(name: str) -> bool:
    """A lowercase DNS-1123 subdomain: labels of at most 63, 253 in all."""
    return (0 < len(name) <= 253
            and all(len(label) <= 63 and _DNS1123_LABEL.match(label) for label in name.split(".")))


def to_dns1123(name: str) -> str:
    """The closest valid node name: lowercase, runs of other characters as '-'."""
    return re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.") or "node"


@PREFLIGHT.check("kernel-modules", "overlay and br_netfilter modules",
                 "containerd's overlayfs snapshotter needs overlay; bridge sysctls exist only with "
                 "br_netfilter.", repaired_by_up=True)
def check_kernel_modules(ctx: CheckContext) -> CheckResult:
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


@PREFLIGHT.check("time-sync", "Clock synchronized",
                 "Skewed clocks make certificates 'not yet valid' and break etcd and token expiry.")
def check_time_sync(ctx: CheckContext) -> CheckResult:
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
