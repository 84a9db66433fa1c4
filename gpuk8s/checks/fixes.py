"""Fix texts shared by several checks: package installs, initramfs, kernel arguments, sysctls.

Fixes are pasted by people into a root shell on the host, so any value that comes from the
host's facts or the inventory is quoted with gpuk8s.shell.quote; the rest is fixed text.
"""

from __future__ import annotations

from typing import Iterable

from gpuk8s.checks.base import CheckContext
from gpuk8s.packages import packages_for
from gpuk8s.shell import quote
from gpuk8s.versions import CRI_V1, CRI_V2, CRI_V3, Release, native_config_version, parse_version

KUBE_TOOLS = ("kubelet", "kubeadm", "kubectl")   # in the order the fixes install them


def words(values: Iterable[str]) -> str:
    """Values as shell words, each quoted, separated by spaces."""
    return " ".join(quote(v) for v in values)


def install(ctx: CheckContext, binaries: list[str]) -> str:
    """Command(s) installing the packages that provide `binaries`, for the host's OS family."""
    def pkgs(family: str) -> str:
        return words(packages_for(family, binaries))

    if ctx.family == "debian":
        return f"apt-get update && apt-get install -y {pkgs('debian')}"
    if ctx.family == "rhel":
        tool = "yum" if "dnf" not in ctx.facts.binaries and "yum" in ctx.facts.binaries else "dnf"
        return f"{tool} install -y {pkgs('rhel')}"
    return (f"apt-get update && apt-get install -y {pkgs('debian')}   # Debian/Ubuntu\n"
            f"dnf install -y {pkgs('rhel')}   # RHEL family")


def initramfs(ctx: CheckContext) -> str:
    """The command that rebuilds the initramfs on the host's OS family."""
    if ctx.family == "debian":
        return "update-initramfs -u"
    if ctx.family == "rhel":
        return "dracut -f"
    return "update-initramfs -u || dracut -f"


def kernel_arg(ctx: CheckContext, arg: str) -> str:
    """Commands that add a kernel command-line argument persistently, then reboot.

    `arg` is spliced into a sed expression and a double-quoted word: pass constants only.
    """
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


def containerd_table(version: int | None) -> str:
    """The runc options table that holds SystemdCgroup for a config file version."""
    if version is not None and version >= 3:
        return f"[plugins.'{CRI_V3.runtime}'.containerd.runtimes.runc.options]"
    if version == 1:
        return f"[plugins.{CRI_V1.runtime}.containerd.runtimes.runc.options]"
    return f'[plugins."{CRI_V2.runtime}".containerd.runtimes.runc.options]'


def containerd_regen_fix(ctx: CheckContext) -> str:
    """Regenerate a full native config from the installed binary, set SystemdCgroup, verify."""
    v = parse_version(ctx.facts.containerd_version)
    native = native_config_version(".".join(map(str, v))) if v else 2
    return ("cp -a /etc/containerd/config.toml /etc/containerd/config.toml.bak 2>/dev/null; "
            "mkdir -p /etc/containerd\n"
            "containerd config default > /etc/containerd/config.toml\n"
            f"# in {containerd_table(native)} set: SystemdCgroup = true "
            "(add the key if the generated file lacks it)\n"
            "systemctl restart containerd\n"
            "containerd config dump | grep -n SystemdCgroup")


def k8s_packages_fix(ctx: CheckContext, release: Release) -> str:
    """Install/pin kubeadm, kubelet and kubectl at the release's patch from pkgs.k8s.io."""
    patch = ctx.k8s_version if len(parse_version(ctx.k8s_version) or ()) == 3 else release.patch
    patch = patch.lstrip("v")   # may be the inventory's own text
    minor = release.minor
    deb_pkgs = words(f"{tool}={patch}-1.1" for tool in KUBE_TOOLS)
    rpm_pkgs = words(f"{tool}-{patch}" for tool in KUBE_TOOLS)
    deb = (f"sed -i 's#/v1\\.[0-9]*/#/v{minor}/#' /etc/apt/sources.list.d/kubernetes.list\n"
           "apt-mark unhold kubelet kubeadm kubectl\n"
           f"apt-get update && apt-get install -y --allow-downgrades {deb_pkgs}\n"
           "apt-mark hold kubelet kubeadm kubectl")
    rpm = (f"sed -i 's#/v1\\.[0-9]*/#/v{minor}/#g' /etc/yum.repos.d/kubernetes.repo\n"
           f"dnf install -y {rpm_pkgs} --disableexcludes=kubernetes")
    if ctx.family == "debian":
        return deb
    if ctx.family == "rhel":
        return rpm
    return f"# Debian/Ubuntu:\n{deb}\n# RHEL family:\n{rpm}"
