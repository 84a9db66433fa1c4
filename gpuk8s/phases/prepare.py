"""PrepareHosts: swap, kernel modules, sysctls, containerd and the Kubernetes packages.

Every step decides from the host's facts and changes only what differs, so a second run on a
prepared host changes nothing. Hosts are prepared in parallel.
"""

from __future__ import annotations

from gpuk8s.errors import UsageError, VerificationError
from gpuk8s.facts import parse_containerd_config, parse_containerd_version
from gpuk8s.host import Host
from gpuk8s.packages import missing_binaries, os_family, packages_for
from gpuk8s.paths import (APT_KEYRINGS, CONTAINERD_CONFIG, DOCKER_APT_KEYRING, FSTAB, K8S_APT_KEYRING,
                          SELINUX_CONFIG)
from gpuk8s.phases.base import Context, Phase, PhaseResult
from gpuk8s.phases.preflight import refresh
from gpuk8s.render import (containerd_config_file, docker_key_url, docker_repo_file, modules_file,
                           networkmanager_calico_file, package_key_url, package_repo_file, sysctl_file)
from gpuk8s.render.placeholders import containerd_default
from gpuk8s.render.containerd import imports_drop_ins
from gpuk8s.shell import Cmd
from gpuk8s.versions import native_config_version

SYSCTLS = ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables",
           "net.bridge.bridge-nf-call-ip6tables")
KUBE_PACKAGES = ("kubelet", "kubeadm", "kubectl")
# setenforce now, and SELINUX=permissive in $1 when the file exists (the path is an argument).
_SELINUX_PERMISSIVE = 'setenforce 0 && { [ ! -f "$1" ] || sed -i "s/^SELINUX=enforcing$/SELINUX=permissive/" "$1"; }'


def _fstab_swap_sed() -> Cmd:
    # Comment out every active swap line; keep a backup next to it.
    return Cmd("sed", "-i.gpuk8s.bak", "-E", r"/^[^#[:space:]]\S*[[:space:]]+\S+[[:space:]]+swap[[:space:]]/s/^/# disabled by gpuk8s: /",
               FSTAB)


def version_pattern(want: str, sep: str) -> str:
    """'2.1' -> '2.1.*' (never 2.10); '2.1.4' -> '2.1.4<sep>*' (any package revision)."""
    return f"{want}.*" if want.count(".") < 2 else f"{want}{sep}*"


class PrepareHosts(Phase):
    title = "prepare hosts"

    def run(self, ctx: Context) -> PhaseResult:
        # A worker that fails is marked (later phases skip it; the others go on to join); a
        # control plane that fails stops the run: the cluster needs every one of them.
        before = set(ctx.failed_hosts)
        ctx.parallel(ctx.live(), lambda h: prepare_host(ctx, h), self.title,
                     fatal=lambda h: h.is_control_plane)
        changed = {c.host for c in ctx.gate.plan.changes}
        if not ctx.dry_run and changed:
            refresh(ctx, [h for h in ctx.live() if h.name in changed])
        return PhaseResult(self.title, notes=[f"{n}: {e}" for n, e in ctx.failed_hosts.items()
                                              if n not in before])


def _chain(cmds: list[Cmd]) -> Cmd:
    """Several commands in one round trip, stopping at the first failure."""
    out = cmds[0]
    for c in cmds[1:]:
        out = out.then("&&", c)
    return out


def prepare_host(ctx: Context, host: Host) -> None:
    f = host.facts
    family = os_family(f)
    if family is None:
        raise UsageError(f"{host.name}: cannot tell the package manager of {f.os.pretty_name or 'this OS'}")

    # Swap: off now and after reboot (the kubelet refuses to start with swap on).
    swap = ([Cmd("swapoff", "-a")] if f.swap_enabled else []) + \
        ([_fstab_swap_sed()] if f.swap_fstab_entries else []) + \
        [Cmd("systemctl", "mask", unit) for unit in f.swap_units]
    if swap:
        host.change("turn swap off now and after reboot (fstab, swap units)", _chain(swap))

    # Kernel modules and sysctls, persisted and applied.
    host.put_file(modules_file(host.name))
    load = [Cmd("modprobe", m) for m, loaded in (("overlay", f.overlay_available),
                                                 ("br_netfilter", f.br_netfilter_loaded)) if not loaded]
    if load:
        host.change("load " + " and ".join(c.masked().split()[-1] for c in load), _chain(load))
    sysctl_changed = host.put_file(sysctl_file(ctx.inventory, host.name))
    if sysctl_changed or any(f.sysctls.get(k) != "1" for k in SYSCTLS):
        host.change("apply sysctls", Cmd("sysctl", "--system"))

    # RHEL family: SELinux permissive (kubeadm's containers; the GPU Operator needs it not
    # disabled), persisted in /etc/selinux/config.
    if family == "rhel" and f.selinux_enforcing:
        host.change("set SELinux to permissive (now and after reboot)",
                    Cmd("sh", "-c", _SELINUX_PERMISSIVE, "gpuk8s-selinux", SELINUX_CONFIG))
    # NetworkManager must not manage Calico's interfaces.
    if f.service_active("NetworkManager"):
        host.put_file(networkmanager_calico_file(host.name), "keep NetworkManager off Calico's interfaces")

    install_prerequisites(ctx, host, family)
    install_packages(ctx, host, family)
    configure_containerd(ctx, host)
    if f.services.get("kubelet", {}).get("enabled") != "enabled":
        host.change("enable kubelet", Cmd("systemctl", "enable", "kubelet"))


def install_prerequisites(ctx: Context, host: Host, family: str) -> None:
    """The tools kubeadm's preflight looks for (ip, iptables, conntrack, socat, ...) and, on apt
    systems that will fetch repository keys, curl and gpg: one package transaction."""
    f = host.facts
    if family != "debian" and _needs_packages(ctx, host):
        return  # dnf needs no curl for repository keys: they join the main package transaction
    pkgs = packages_for(family, missing_binaries(f))
    if family == "debian" and _needs_packages(ctx, host):
        pkgs += [p for p in ("ca-certificates", "curl", "gpg") if p not in f.binaries]
    if not pkgs:
        return
    pkgs = list(dict.fromkeys(pkgs))
    cmd = (Cmd("apt-get", "update", "-qq").then("&&", Cmd("apt-get", "install", "-y", "-qq", *pkgs))
           if family == "debian" else Cmd("dnf", "install", "-y", *pkgs))
    host.change(f"install {', '.join(pkgs)}", cmd, timeout=900)


def _needs_packages(ctx: Context, host: Host) -> bool:
    f = host.facts
    patch = ctx.release.patch
    return not ctx.release.accepts_containerd(f.containerd_version) or \
        (f.kubeadm_version, f.kubelet_version, f.kubectl_version) != (patch, patch, patch)


def _apt_install(*packages: str) -> Cmd:
    return Cmd("apt-get", "install", "-y", "-qq", "--allow-downgrades",
               "--allow-change-held-packages", *packages)


def install_packages(ctx: Context, host: Host, family: str) -> None:
    """containerd (Docker's repository) and kubelet/kubeadm/kubectl (pkgs.k8s.io) in the versions
    the matrix wants: repositories first, then one package transaction, then the holds."""
    f = host.facts
    patch = ctx.release.patch
    want_ctr = None if ctx.release.accepts_containerd(f.containerd_version) else ctx.release.containerd
    want_kube = (f.kubeadm_version, f.kubelet_version, f.kubectl_version) != (patch, patch, patch)
    if not want_ctr and not want_kube:
        return
    what = " and ".join(filter(None, [f"containerd {want_ctr}" if want_ctr else "",
                                      f"kubelet, kubeadm, kubectl {patch}" if want_kube else ""]))
    if family == "debian":
        distro = "debian" if (f.os.id or "") == "debian" else "ubuntu"
        keys = [Cmd("install", "-m", "0755", "-d", APT_KEYRINGS)]
        if want_ctr:
            if not f.os.version_codename:
                raise UsageError(f"{host.name}: /etc/os-release has no VERSION_CODENAME, so the "
                                 "Docker apt repository for containerd cannot be chosen; install "
                                 "containerd yourself or set versions.containerd to what is installed")
            keys.append(Cmd("curl", "-fsSL", docker_key_url(distro),
                            "-o", DOCKER_APT_KEYRING))
        if want_kube:
            keys.append(Cmd("curl", "-fsSL", package_key_url(ctx.release, "debian")).then(
                "|", Cmd("gpg", "--batch", "--yes", "--dearmor", "-o", K8S_APT_KEYRING)))
        host.change("fetch repository keys", _chain(keys))
        if want_ctr:
            host.put_file(docker_repo_file(ctx.release, family, distro, f.os.version_codename, host.name))
        if want_kube:
            host.put_file(package_repo_file(ctx.inventory, ctx.release, family, host.name))
        pkgs = ([f"containerd.io={version_pattern(want_ctr, '-')}"] if want_ctr else []) + \
            ([f"{p}={patch}-1.1" for p in KUBE_PACKAGES] if want_kube else [])
        steps = [Cmd("apt-get", "update", "-qq"), _apt_install(*pkgs)]
        if want_kube:
            steps.append(Cmd("apt-mark", "hold", *KUBE_PACKAGES))
        host.change(f"install {what}" + (" (held)" if want_kube else ""), _chain(steps), timeout=900)
    else:
        if want_ctr:
            host.put_file(docker_repo_file(ctx.release, family, host=host.name))
        if want_kube:
            host.put_file(package_repo_file(ctx.inventory, ctx.release, family, host.name))
        pkgs = packages_for(family, missing_binaries(f)) + \
            ([f"containerd.io-{version_pattern(want_ctr, '-')}"] if want_ctr else []) + \
            ([f"{p}-{patch}" for p in KUBE_PACKAGES] if want_kube else [])
        # The repository excludes the Kubernetes packages from routine upgrades (the hold).
        host.change(f"install {what}", Cmd("dnf", "install", "-y", *pkgs, "--disableexcludes=kubernetes"),
                   timeout=900)
    if want_ctr and not ctx.dry_run:
        version = parse_containerd_version(host.read(Cmd("containerd", "--version")).stdout)
        if not ctx.release.accepts_containerd(version):
            raise VerificationError(host.name, "after the install, `containerd --version` reports",
                                    str(version), f"the repository did not provide containerd {want_ctr}")
        f.containerd_version = version


def configure_containerd(ctx: Context, host: Host) -> None:
    """The config: generated from the installed binary, edited in its native version, verified."""
    f = host.facts
    # The containerd this step configures: the installed one, unless install_packages replaces it
    # (a dry run installs nothing, so an old 1.7 would otherwise show a version 2 file where the
    # wet run writes the new release's version 3 or 4).
    version = f.containerd_version if ctx.release.accepts_containerd(f.containerd_version) \
        else ctx.release.containerd
    active = f.service_active("containerd")
    enabled = f.services.get("containerd", {}).get("enabled") == "enabled"
    gpu = host.spec.gpu is not False and bool(host.spec.gpu or f.gpus)
    if active and enabled and containerd_config_ok(ctx, f, version, gpu=gpu):
        return  # the facts show a running containerd whose config already meets every requirement
    if ctx.dry_run and not ctx.release.accepts_containerd(f.containerd_version):
        default = containerd_default(version)
    else:
        default = host.read(Cmd("containerd", "config", "default")).stdout
    # The current file's imports and non-runc runtimes (the NVIDIA toolkit's) are kept.
    current = host.read(Cmd("cat", "--", CONTAINERD_CONFIG), check=False).stdout \
        if f.containerd.present else None
    cfg = containerd_config_file(ctx.inventory, ctx.release, version, default_toml=default,
                                 host=host.name, current_toml=current)
    changed = host.put_file(cfg, "write /etc/containerd/config.toml (SystemdCgroup, pause image, CRI on)")
    if changed or not active or not enabled:
        host.change("enable and restart containerd", Cmd("systemctl", "enable", "containerd").then(
            "&&", Cmd("systemctl", "restart", "containerd")))
    if not ctx.dry_run:
        dump = parse_containerd_config(host.read(Cmd("containerd", "config", "dump")).stdout)
        if dump.systemd_cgroup is not True or dump.cri_disabled:
            found = "the CRI plugin is disabled" if dump.cri_disabled else "SystemdCgroup is not true"
            raise VerificationError(host.name, "containerd's running configuration (`containerd config dump`)",
                                    found, "check /etc/containerd/config.toml and its drop-ins")


def containerd_config_ok(ctx: Context, f, version: str, *, gpu: bool = False) -> bool:
    """The current config (from the probe) is in the native version, CRI on, systemd cgroups,
    and the pause image kubeadm expects; on a GPU node it imports the toolkit's drop-in. Other
    `imports` and runtimes (the toolkit's `nvidia`) are never a reason to rewrite it."""
    c = f.containerd
    return (c.present and not c.parse_error and c.version == native_config_version(version)
            and c.systemd_cgroup is True and not c.cri_disabled
            and c.sandbox_image == ctx.release.pause_image
            and (not gpu or imports_drop_ins(c.imports)))
