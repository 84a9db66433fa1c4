"""Runtime checks: kubeadm's binaries, containerd, the Kubernetes tools, Helm, CNI config."""

from __future__ import annotations

from gpuk8s.checks.base import FAIL, PASS, SKIP, WARN, CheckContext, CheckResult, not_supported
from gpuk8s.checks.fixes import containerd_regen_fix, containerd_table, install, k8s_packages_fix
from gpuk8s.checks.preflight import PREFLIGHT
from gpuk8s.packages import RECOMMENDED_BINARIES, REQUIRED_BINARIES
from gpuk8s.paths import CNI_CONF_DIR
from gpuk8s.shell import quote
from gpuk8s.versions import CRI_V2, CRI_V3, HELM_MIN, native_config_version, parse_version

CONTAINERD_OLDEST = (1, 7)                 # 1.6 is EOL; anything older has no CRI v1
CALICO_CNI_FILES = ("10-calico.conflist", "calico-kubeconfig")


@PREFLIGHT.check("required-binaries", "Binaries kubeadm looks for",
                 "kubeadm errors without ip, iptables, mount, nsenter and warns without ethtool, "
                 "socat, tc, conntrack, touch, ebtables.", repaired_by_up=True)
def check_required_binaries(ctx: CheckContext) -> CheckResult:
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
                           install(ctx, missing_req + missing_rec))
    if missing_rec:
        return CheckResult("required-binaries", WARN,
                           f"missing {', '.join(missing_rec)} (kubeadm warns)",
                           install(ctx, missing_rec))
    return CheckResult("required-binaries", PASS,
                       f"found {', '.join(REQUIRED_BINARIES + RECOMMENDED_BINARIES)}")


@PREFLIGHT.check("containerd-version", "containerd version",
                 "Kubernetes 1.36+ needs containerd 2.x; 1.6 is EOL; older versions lack CRI v1.",
                 repaired_by_up=True)
def check_containerd_version(ctx: CheckContext) -> CheckResult:
    if ctx.release is None:
        return not_supported(ctx, "containerd-version")
    rel = ctx.release
    raw = ctx.facts.containerd_version
    remove = ("apt-get remove -y containerd containerd.io" if ctx.family == "debian"
              else "dnf remove -y containerd containerd.io" if ctx.family == "rhel"
              else "apt-get remove -y containerd containerd.io || dnf remove -y containerd.io")
    fix = f"{remove}   # then `gpuk8s up` installs containerd {rel.containerd}"
    if raw is None:
        if "containerd" in ctx.facts.binaries:
            return CheckResult("containerd-version", WARN,
                               f"containerd at {ctx.facts.binaries['containerd']} did not report "
                               "a version", "containerd --version")
        return CheckResult("containerd-version", WARN,
                           f"containerd is not installed: gpuk8s up installs containerd "
                           f"{rel.containerd}", None)
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


@PREFLIGHT.check("containerd-cri-enabled", "containerd CRI plugin enabled",
                 "Docker's containerd.io package ships disabled_plugins = [\"cri\"], so kubeadm "
                 "fails with 'unknown service runtime.v1.RuntimeService' (DOMAIN 6 #1).",
                 repaired_by_up=True)
def check_containerd_cri_enabled(ctx: CheckContext) -> CheckResult:
    cfg = ctx.facts.containerd
    if not cfg.present:
        return CheckResult("containerd-cri-enabled", SKIP,
                           "no /etc/containerd/config.toml: gpuk8s up generates one with CRI on")
    if cfg.parse_error:
        return CheckResult("containerd-cri-enabled", FAIL,
                           f"/etc/containerd/config.toml is not valid TOML: {cfg.parse_error}",
                           containerd_regen_fix(ctx))
    if cfg.cri_disabled:
        return CheckResult("containerd-cri-enabled", FAIL,
                           "/etc/containerd/config.toml disables the CRI plugin "
                           "(disabled_plugins = [\"cri\"], as shipped by containerd.io)",
                           containerd_regen_fix(ctx))
    return CheckResult("containerd-cri-enabled", PASS, "the CRI plugin is not disabled")


@PREFLIGHT.check("containerd-systemd-cgroup", "containerd uses the systemd cgroup driver",
                 "kubeadm configures the kubelet for systemd; containerd defaults to cgroupfs, and "
                 "a mismatch makes control-plane pods restart (DOMAIN 6 #2, #3).",
                 repaired_by_up=True)
def check_containerd_systemd_cgroup(ctx: CheckContext) -> CheckResult:
    cfg = ctx.facts.containerd
    if not cfg.present:
        return CheckResult("containerd-systemd-cgroup", WARN,
                           "no /etc/containerd/config.toml: gpuk8s up will generate one with "
                           "SystemdCgroup = true", None)
    if cfg.parse_error:
        return CheckResult("containerd-systemd-cgroup", FAIL,
                           f"/etc/containerd/config.toml is not valid TOML: {cfg.parse_error}",
                           containerd_regen_fix(ctx))
    table = containerd_table(cfg.version)
    if cfg.systemd_cgroup:
        return CheckResult("containerd-systemd-cgroup", PASS,
                           f"SystemdCgroup = true in {table} (config version {cfg.version})")
    if cfg.systemd_cgroup_misplaced:
        other = containerd_table(2 if (cfg.version or 1) >= 3 else 3)
        return CheckResult("containerd-systemd-cgroup", FAIL,
                           f"SystemdCgroup is set under {other}, which a version {cfg.version} "
                           f"config ignores: it belongs in {table}; containerd runs with cgroupfs",
                           containerd_regen_fix(ctx))
    state = "false" if cfg.systemd_cgroup is False else "not set"
    return CheckResult("containerd-systemd-cgroup", FAIL,
                       f"SystemdCgroup is {state} in {table}, so containerd uses cgroupfs while "
                       "the kubelet uses systemd", containerd_regen_fix(ctx))


@PREFLIGHT.check("containerd-config-version", "containerd config in the binary's native version",
                 "containerd 2.x wants version = 3, 1.x version = 2; a migrated config makes the "
                 "NVIDIA toolkit write a drop-in newer than the root file (DOMAIN 6 #19).",
                 repaired_by_up=True)
def check_containerd_config_version(ctx: CheckContext) -> CheckResult:
    cfg = ctx.facts.containerd
    if not cfg.present or cfg.parse_error or cfg.version is None:
        return CheckResult("containerd-config-version", SKIP,
                           "no parsable /etc/containerd/config.toml")
    v = parse_version(ctx.facts.containerd_version)
    if v is None:
        if ctx.release is None:
            return not_supported(ctx, "containerd-config-version")
        v = parse_version(ctx.release.containerd)
        who = f"containerd {ctx.release.containerd} (installed by gpuk8s up)"
    else:
        who = f"containerd {ctx.facts.containerd_version}"
    native = native_config_version(".".join(map(str, v))) if v else 2
    fix = containerd_regen_fix(ctx)
    if cfg.version == native:
        return CheckResult("containerd-config-version", PASS,
                           f"config version {cfg.version} is native for {who}")
    if cfg.version > native:
        return CheckResult("containerd-config-version", FAIL,
                           f"config version {cfg.version} cannot be read by {who} "
                           f"(expects version {native})", fix)
    return CheckResult("containerd-config-version", WARN,
                       f"config version {cfg.version} is not native for {who} (expects "
                       f"{native}): it is migrated at startup, and the NVIDIA toolkit's drop-in "
                       "may then carry a higher version than the root file", fix)


@PREFLIGHT.check("containerd-sandbox-image", "containerd sandbox (pause) image",
                 "kubeadm warns when the runtime's sandbox image differs from the one it expects.",
                 repaired_by_up=True)
def check_containerd_sandbox_image(ctx: CheckContext) -> CheckResult:
    cfg = ctx.facts.containerd
    if not cfg.present or cfg.parse_error:
        return CheckResult("containerd-sandbox-image", SKIP,
                           "no parsable /etc/containerd/config.toml: gpuk8s up sets the image")
    if ctx.release is None:
        return not_supported(ctx, "containerd-sandbox-image")
    want = ctx.release.pause_image
    if (cfg.version or 1) >= 3:
        where = f"[plugins.'{CRI_V3.images}'.pinned_images] sandbox"
    else:
        where = f'[plugins."{CRI_V2.images}"] sandbox_image'
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

@PREFLIGHT.check("kube-tools-version", "kubeadm, kubelet, kubectl versions",
                 "The kubelet may never be newer than the control plane or kubeadm; one pinned "
                 "patch everywhere avoids skew (DOMAIN 2.9).", repaired_by_up=True)
def check_kube_tools_version(ctx: CheckContext) -> CheckResult:
    if ctx.release is None:
        return not_supported(ctx, "kube-tools-version")
    rel = ctx.release
    f = ctx.facts
    tools = {"kubeadm": f.kubeadm_version, "kubelet": f.kubelet_version,
             "kubectl": f.kubectl_version}
    present = {k: v for k, v in tools.items() if v}
    if not present:
        return CheckResult("kube-tools-version", WARN,
                           f"kubeadm, kubelet and kubectl are not installed: gpuk8s up installs "
                           f"{rel.patch}", None)
    fix = k8s_packages_fix(ctx, rel)
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


@PREFLIGHT.check("helm", "Helm on the first control plane",
                 "gpuk8s installs the GPU Operator chart with Helm from the first control plane "
                 "only; `gpuk8s up` installs the pinned Helm there (checksum verified) when a GPU "
                 "node needs the operator.", repaired_by_up=True)
def check_helm(ctx: CheckContext) -> CheckResult:
    cps = ctx.inventory.control_planes
    if not cps or cps[0].name != ctx.host.name:
        first = cps[0].name if cps else "none"
        return CheckResult("helm", SKIP,
                           f"Helm is only needed on the first control plane ({first})")
    raw = ctx.facts.helm_version
    pinned = ctx.release.helm if ctx.release is not None else None
    then = f"gpuk8s up installs Helm {pinned} (checksum verified) when GPU nodes need it" \
        if pinned else "gpuk8s up installs the pinned Helm when GPU nodes need it"
    if not raw:
        return CheckResult("helm", WARN, f"helm is not installed: {then}", None)
    v = parse_version(raw) or (0,)
    if v < (parse_version(HELM_MIN) or (0,)):
        return CheckResult("helm", FAIL, f"helm {raw} is older than {HELM_MIN}: {then}",
                           "rm -f \"$(command -v helm)\"   # or let gpuk8s up replace it")
    return CheckResult("helm", PASS, f"helm {raw}")


@PREFLIGHT.check("cni-config-clean", "No other CNI configuration",
                 "The container runtime uses the first file in /etc/cni/net.d; a leftover "
                 "flannel/podman config hijacks pod networking, and kubeadm reset does not "
                 "remove it.")
def check_cni_config_clean(ctx: CheckContext) -> CheckResult:
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
           + " && ".join(f"mv {quote(f'{CNI_CONF_DIR}/{f}')} /root/cni-net.d.bak/"
                         for f in stale))
    if foreign:
        return CheckResult("cni-config-clean", WARN,
                           f"/etc/cni/net.d has another CNI's config: {', '.join(foreign)}", fix)
    return CheckResult("cni-config-clean", WARN,
                       f"/etc/cni/net.d has Calico files from an earlier cluster "
                       f"({', '.join(calico)}) but this host is not a node", fix)
