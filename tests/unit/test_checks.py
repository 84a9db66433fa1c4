"""Preflight checks: each failing condition, fleet comparisons, stable ids, docs coverage,
what `up` repairs, and fix texts that stay safe to paste whatever the host reports."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from gpuk8s.checks import (CHECKS, PREFLIGHT, CheckResult, is_gpu_host, overall_status,
                           run_checks)
from gpuk8s.facts import GPU, ContainerdConfig, Facts, OSInfo
from gpuk8s.inventory import (ClusterSpec, GPUSpec, HostSpec, Inventory, MIGSpec, NetworkSpec,
                              SSHSettings)
from gpuk8s.packages import RECOMMENDED_BINARIES, REQUIRED_BINARIES
from gpuk8s.shell import quote

DOCS = Path(__file__).resolve().parents[2] / "docs" / "checks.md"
MANDATORY_IDS = ("os-supported", "cgroup-v2", "swap-off", "hostname-unique", "product-uuid-unique",
                 "ip-forward", "containerd-systemd-cgroup", "nouveau-off", "secure-boot",
                 "gpu-present")


# --------------------------------------------------------------------------- builders

def healthy_facts(**changes: Any) -> Facts:
    """An Ubuntu 24.04 GPU control plane on which every check passes."""
    f = Facts(
        probe_version=1, uid=0,
        os=OSInfo(id="ubuntu", version_id="24.04", pretty_name="Ubuntu 24.04.3 LTS",
                  id_like=["debian"], version_codename="noble"),
        kernel="6.8.0-79-generic", arch="x86_64", hostname="cp1",
        cgroup_version=2, cgroup_fs="cgroup2fs", cpus=16, memory_mib=64000,
        swap_enabled=False, macs={"eno1": "3c:ec:ef:00:00:01"},
        addresses=["10.0.0.11/24"], routes=["10.0.0.0/24"], default_route=True,
        product_uuid="4c4c4544-0031-3010-8000-b1c04f000001",
        modules=["br_netfilter", "overlay"], overlay_available=True, br_netfilter_loaded=True,
        sysctls={"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1",
                 "net.bridge.bridge-nf-call-ip6tables": "1"},
        binaries={b: f"/usr/sbin/{b}" for b in REQUIRED_BINARIES
                  + RECOMMENDED_BINARIES + ("apt-get",)},
        services={"chrony": {"active": "active", "enabled": "enabled"},
                  "firewalld": {"active": "inactive", "enabled": ""}},
        time_synchronized=True, ntp_enabled=True, ufw_enabled=False,
        listening_ports=[22, 53],
        endpoint_addresses=["10.0.0.100"],
        containerd_version="2.1.4",
        containerd=ContainerdConfig(present=True, version=3, systemd_cgroup=True,
                                    sandbox_image="registry.k8s.io/pause:3.10.1"),
        kubeadm_version="1.36.2", kubelet_version="1.36.2", kubectl_version="1.36.2",
        helm_version="3.19.0",
        gpus=[GPU("0000:01:00.0", "0x10de", "0x27b8", "NVIDIA L4", "0x030200", None),
              GPU("0000:02:00.0", "0x10de", "0x27b8", "NVIDIA L4", "0x030200", None)],
        nvidia_smi_ok=None, nouveau_loaded=False, nouveau_blacklisted=True,
        secure_boot=False, uefi=True, unattended_upgrades=False,
    )
    return dataclasses.replace(f, **changes)


def worker_facts(n: int = 1, **changes: Any) -> Facts:
    base = healthy_facts(hostname=f"gpu{n}", macs={"eno1": f"3c:ec:ef:00:01:0{n}"},
                         addresses=[f"10.0.0.2{n}/24"], helm_version=None,
                         product_uuid=f"4c4c4544-0031-3010-8000-b1c04f00010{n}")
    return dataclasses.replace(base, **changes)


def host(name: str = "cp1", roles: tuple[str, ...] = ("control-plane",), gpu: bool | None = None,
         **kw: Any) -> HostSpec:
    return HostSpec(name=name, address=f"{name}.lab", roles=roles, ssh=SSHSettings(), gpu=gpu, **kw)


def inventory(hosts: tuple[HostSpec, ...] | None = None, *, driver: str = "auto",
              encapsulation: str = "VXLANCrossSubnet", **cluster: Any) -> Inventory:
    spec = dict(name="lab", kubernetes_version="1.36", control_plane_endpoint="k8s-api.lab:6443")
    spec.update(cluster)
    return Inventory(path="inventory.yaml", cluster=ClusterSpec(**spec),
                     hosts=hosts or (host("cp1"), host("gpu1", ("worker",))),
                     gpu=GPUSpec(driver=driver), network=NetworkSpec(encapsulation=encapsulation))


def result(check_id: str, facts: Facts, *, h: HostSpec | None = None, inv: Inventory | None = None,
           fleet: dict[str, Facts] | None = None) -> CheckResult:
    h = h or host("cp1")
    inv = inv or inventory()
    fleet = fleet if fleet is not None else {h.name: facts}
    by_id = {r.id: r for r in run_checks(inv, h, facts, fleet)}
    return by_id[check_id]


# --------------------------------------------------------------------------- baseline

def test_healthy_control_plane_passes_everything():
    results = run_checks(inventory(), host("cp1"), healthy_facts(), {"cp1": healthy_facts()})
    vip_checks = ("vip-free", "vip-interface")      # skip without cluster.vip (tests/unit/test_vip.py)
    bad = [r for r in results if r.status != "pass" and r.id not in vip_checks]
    assert bad == []
    assert {r.id: r.status for r in results if r.id in vip_checks} == dict.fromkeys(vip_checks, "skip")
    assert all(r.fix is None for r in results)


def test_healthy_worker_skips_only_helm():
    inv = inventory()
    results = run_checks(inv, inv.host("gpu1"), worker_facts(), {"gpu1": worker_facts()})
    statuses = {r.id: r.status for r in results}
    assert statuses.pop("helm") == "skip"
    assert (statuses.pop("vip-free"), statuses.pop("vip-interface")) == ("skip", "skip")
    assert set(statuses.values()) == {"pass"}


def test_ids_stable_and_complete():
    ids = [c.id for c in CHECKS]
    assert len(ids) == len(set(ids))
    for i in MANDATORY_IDS:
        assert i in ids
    for i in ids:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", i), i
    cpu_only = healthy_facts(gpus=[])
    for facts, h in ((healthy_facts(), host("cp1")), (cpu_only, host("cp1", gpu=False)),
                     (worker_facts(), host("gpu1", ("worker",)))):
        got = [r.id for r in run_checks(inventory(), h, facts, {h.name: facts})]
        assert got == ids


def test_checks_entries_are_id_title_why():
    for entry in CHECKS:
        check_id, title, why = entry
        assert check_id and title and why.strip()


def test_to_dict_is_json_ready():
    r = result("swap-off", healthy_facts(swap_enabled=True, swap_devices=["/swap.img"]))
    d = r.to_dict()
    assert d["id"] == "swap-off" and d["status"] == "fail"
    assert d["fix"] and d["message"]
    assert set(d) == {"id", "status", "message", "fix"}


def test_invalid_status_rejected():
    with pytest.raises(ValueError):
        CheckResult("x", "ok", "m")


def test_overall_status():
    p, w, f, s = (CheckResult("a", st, "m") for st in ("pass", "warn", "fail", "skip"))
    assert overall_status([p, s]) == "pass"
    assert overall_status([p, w, s]) == "warn"
    assert overall_status([w, f]) == "fail"


def test_docs_cover_every_check():
    text = DOCS.read_text(encoding="utf-8")
    headings = re.findall(r"^#+ .*`([a-z0-9-]+)`", text, re.M)
    for info in CHECKS:
        assert info.id in headings, f"docs/checks.md has no section for `{info.id}`"
    from gpuk8s.checks.verify_cluster import VERIFY_CLUSTER
    from gpuk8s.checks.verify_host import VERIFY_HOSTS

    from gpuk8s.phases.join import JOIN_CHECKS

    for info in JOIN_CHECKS:   # join's own checks of the joining hosts
        assert info.id in headings, f"docs/checks.md has no section for `{info.id}`"
    known = {c.id for c in CHECKS} | set(VERIFY_CLUSTER.ids) | set(VERIFY_HOSTS.ids)   # verify's sets too
    known |= {c.id for c in JOIN_CHECKS}
    assert set(headings) <= known, "docs/checks.md documents unknown ids"


def test_docs_list_checks_in_report_order():
    headings = re.findall(r"^## `([a-z0-9-]+)`", DOCS.read_text(encoding="utf-8"), re.M)
    assert tuple(headings) == PREFLIGHT.ids


# --------------------------------------------------------------------------- repaired by up

# What `up` repairs: swap, modules, sysctls, kubeadm's binaries, containerd and its config, the
# Kubernetes tools (host preparation), and Helm (InstallHelm, on clusters with GPU nodes: its
# plan step is tested in tests/unit/test_gpu_up.py).
REPAIRED_BY_UP = {"swap-off", "ip-forward", "bridge-netfilter", "kernel-modules",
                  "containerd-version", "containerd-cri-enabled", "containerd-systemd-cgroup",
                  "containerd-config-version", "containerd-sandbox-image", "kube-tools-version",
                  "required-binaries", "helm"}

# The step of a bare host's `up --dry-run` plan that repairs each of them.
REPAIR_STEPS = {
    "swap-off": "turn swap off now and after reboot",
    "kernel-modules": "write /etc/modules-load.d/kubernetes.conf",
    "ip-forward": "apply sysctls",
    "bridge-netfilter": "apply sysctls",
    "required-binaries": "install conntrack",
    "containerd-version": "install containerd",
    "kube-tools-version": "kubelet, kubeadm, kubectl",
    # one native file, rendered whole: CRI on, SystemdCgroup = true, the pause image
    "containerd-cri-enabled": "write /etc/containerd/config.toml",
    "containerd-systemd-cgroup": "write /etc/containerd/config.toml",
    "containerd-config-version": "write /etc/containerd/config.toml",
    "containerd-sandbox-image": "write /etc/containerd/config.toml",
}


def test_repaired_by_up_is_declared_per_check():
    assert "os-supported" not in PREFLIGHT.repaired_by_up
    assert PREFLIGHT.repaired_by_up == REPAIRED_BY_UP
    assert PREFLIGHT.repaired_by_up <= set(PREFLIGHT.ids)


def test_up_prepares_what_it_claims_to_repair(tmp_path, monkeypatch):
    # A bare host (swap on, ip_forward off, no containerd or Kubernetes tools, no conntrack):
    # its dry-run plan has a step for every check `up` repairs.
    from tests.unit import test_up
    bare = test_up.bare_probe
    monkeypatch.setattr(test_up, "bare_probe", lambda *a, **kw: bare(*a, **kw).replace(
        "conntrack=/usr/sbin/conntrack\n", ""))
    report, _, _ = test_up.dry_run(test_up.inventory(n_workers=1), tmp_path)
    steps = [c.description for c in report.plan.for_host("w-1")]
    assert set(REPAIR_STEPS) == PREFLIGHT.repaired_by_up - {"helm"}   # helm: GPU clusters only
    for check_id, step in REPAIR_STEPS.items():
        assert any(step in s for s in steps), (check_id, step, steps)


def test_docs_mark_what_up_repairs():
    sections = re.split(r"^## ", DOCS.read_text(encoding="utf-8"), flags=re.M)[1:]
    marked = {re.match(r"`([a-z0-9-]+)`", s).group(1) for s in sections
              if "*Repaired by `gpuk8s up`.*" in s}
    assert marked == PREFLIGHT.repaired_by_up


# --------------------------------------------------------------------------- failing conditions

K = dict  # shorthand for the kwargs of result()


def _cfg(**kw: Any) -> ContainerdConfig:
    return dataclasses.replace(healthy_facts().containerd, **kw)


CASES: list[tuple[str, str, str, dict]] = [
    # (check id, expected status, message fragment, result() kwargs)
    ("privileged-access", "fail", "uid 1000", K(facts=healthy_facts(uid=1000))),
    ("privileged-access", "warn", "uid", K(facts=healthy_facts(uid=None))),
    ("os-supported", "fail", "end of life",
     K(facts=healthy_facts(os=OSInfo(id="centos", version_id="7", pretty_name="CentOS Linux 7 (Core)",
                                     id_like=["rhel", "fedora"])))),
    ("os-supported", "fail", "Amazon Linux",
     K(facts=healthy_facts(os=OSInfo(id="amzn", version_id="2023", pretty_name="Amazon Linux 2023")))),
    ("os-supported", "fail", "refuses cgroup v1",
     K(facts=healthy_facts(os=OSInfo(id="rocky", version_id="8.10", pretty_name="Rocky Linux 8.10",
                                     id_like=["rhel", "centos", "fedora"])))),
    ("os-supported", "warn", "still tolerates",
     K(facts=healthy_facts(os=OSInfo(id="rhel", version_id="8.10", id_like=["fedora"])),
       inv=inventory(kubernetes_version="1.34"))),
    ("os-supported", "warn", "best effort",
     K(facts=healthy_facts(os=OSInfo(id="debian", version_id="12", pretty_name="Debian GNU/Linux 12")))),
    ("os-supported", "warn", "derivative of ubuntu",
     K(facts=healthy_facts(os=OSInfo(id="pop", version_id="22.04", pretty_name="Pop!_OS 22.04 LTS",
                                     id_like=["ubuntu", "debian"])))),
    ("os-supported", "warn", "no VERSION_ID",
     K(facts=healthy_facts(os=OSInfo(id="debian", pretty_name="Debian GNU/Linux trixie/sid")))),
    ("os-supported", "warn", "development release",
     K(facts=healthy_facts(os=OSInfo(id="ubuntu", version_id="26.04",
                                     pretty_name="Ubuntu Resolute Raccoon (development branch)")))),
    ("os-supported", "fail", "not supported",
     K(facts=healthy_facts(os=OSInfo(id="ubuntu", version_id="20.04", pretty_name="Ubuntu 20.04.6 LTS")))),
    ("os-supported", "fail", "not supported by gpuk8s",
     K(facts=healthy_facts(os=OSInfo(id="arch", pretty_name="Arch Linux")))),
    ("os-supported", "fail", "os-release", K(facts=healthy_facts(os=OSInfo()))),
    ("kernel-version", "fail", "4.18",
     K(facts=healthy_facts(kernel="4.18.0-553.el8_10.x86_64"))),
    ("kernel-version", "warn", "5.8", K(facts=healthy_facts(kernel="5.4.0-200-generic"))),
    ("cgroup-v2", "fail", "cgroup v1", K(facts=healthy_facts(cgroup_version=1, cgroup_fs="tmpfs"))),
    ("cgroup-v2", "warn", "1.35+",
     K(facts=healthy_facts(cgroup_version=1, cgroup_fs="tmpfs"), inv=inventory(kubernetes_version="1.34"))),
    ("cgroup-v2", "fail", "kubernetes_version 1.29 is not supported",
     K(facts=healthy_facts(cgroup_version=1, cgroup_fs="tmpfs"), inv=inventory(kubernetes_version="1.29"))),
    ("cpu-memory", "fail", "2 CPUs", K(facts=healthy_facts(cpus=1))),
    ("cpu-memory", "fail", "1700 MiB", K(facts=healthy_facts(memory_mib=1500))),
    ("cpu-memory", "warn", "below", K(facts=worker_facts(cpus=1), h=host("gpu1", ("worker",)))),
    ("swap-off", "fail", "active on /swap.img",
     K(facts=healthy_facts(swap_enabled=True, swap_devices=["/swap.img"]))),
    ("swap-off", "fail", "after reboot",
     K(facts=healthy_facts(swap_fstab_entries=["/swap.img none swap sw 0 0"]))),
    ("swap-off", "fail", "dev-sda3.swap", K(facts=healthy_facts(swap_units=["dev-sda3.swap"]))),
    ("hostname-valid", "fail", "DNS-1123", K(facts=healthy_facts(hostname="gpu_node_1"))),
    ("hostname-valid", "warn", "uppercase", K(facts=healthy_facts(hostname="CP1"))),
    ("hostname-valid", "warn", "differs from the inventory name",
     K(facts=healthy_facts(hostname="localhost.localdomain"))),
    ("product-uuid-unique", "warn", "needs root", K(facts=healthy_facts(product_uuid=None, uid=1000))),
    ("product-uuid-unique", "warn", "does not exist", K(facts=healthy_facts(product_uuid=None))),
    ("product-uuid-unique", "warn", "placeholder",
     K(facts=healthy_facts(product_uuid="03000200-0400-0500-0006-000700080009"))),
    ("kernel-modules", "warn", "br_netfilter", K(facts=healthy_facts(br_netfilter_loaded=False))),
    ("kernel-modules", "warn", "overlay", K(facts=healthy_facts(overlay_available=False))),
    ("ip-forward", "fail", "net.ipv4.ip_forward = 0",
     K(facts=healthy_facts(sysctls={"net.ipv4.ip_forward": "0"}))),
    ("bridge-netfilter", "warn", "br_netfilter not loaded",
     K(facts=healthy_facts(sysctls={"net.ipv4.ip_forward": "1"}))),
    ("bridge-netfilter", "warn", "bridge-nf-call-iptables = 0",
     K(facts=healthy_facts(sysctls={"net.ipv4.ip_forward": "1",
                                    "net.bridge.bridge-nf-call-iptables": "0",
                                    "net.bridge.bridge-nf-call-ip6tables": "1"}))),
    ("required-binaries", "fail", "nsenter",
     K(facts=healthy_facts(binaries={"ip": "/usr/sbin/ip", "iptables": "/usr/sbin/iptables",
                                     "mount": "/usr/bin/mount"}))),
    ("required-binaries", "warn", "socat",
     K(facts=healthy_facts(binaries={b: "/x" for b in REQUIRED_BINARIES}))),
    ("time-sync", "fail", "no NTP service",
     K(facts=healthy_facts(time_synchronized=False, ntp_enabled=False, services={}))),
    ("time-sync", "warn", "not synchronized yet",
     K(facts=healthy_facts(time_synchronized=False, ntp_enabled=True))),
    ("time-sync", "warn", "could not determine",
     K(facts=healthy_facts(time_synchronized=None, ntp_enabled=None, services={}))),
    ("ports-free", "fail", "6443 (kube-apiserver)", K(facts=healthy_facts(listening_ports=[22, 6443]))),
    ("ports-free", "fail", "10250 (kubelet)",
     K(facts=worker_facts(listening_ports=[10250]), h=host("gpu1", ("worker",)))),
    ("firewall", "warn", "firewalld is active",
     K(facts=healthy_facts(services={"firewalld": {"active": "active", "enabled": "enabled"},
                                     "chronyd": {"active": "active", "enabled": "enabled"}}))),
    ("firewall", "warn", "ufw is enabled", K(facts=healthy_facts(ufw_enabled=True))),
    ("cidr-overlap", "fail", "host address 10.244.3.7/16",
     K(facts=healthy_facts(addresses=["10.244.3.7/16"]))),
    ("cidr-overlap", "fail", "route 192.168.10.0/24",
     K(facts=healthy_facts(routes=["10.0.0.0/24", "192.168.10.0/24"]),
       inv=inventory(pod_cidr="192.168.0.0/16"))),
    ("cidr-overlap", "fail", "overlaps service_cidr",
     K(facts=healthy_facts(), inv=inventory(pod_cidr="10.96.0.0/16"))),
    ("cidr-overlap", "fail", "not a valid CIDR",
     K(facts=healthy_facts(), inv=inventory(pod_cidr="10.244.0.0/33"))),
    ("node-ip", "fail", "not an address of cp1",
     K(facts=healthy_facts(), h=host("cp1", node_ip="10.1.0.11"))),
    ("node-ip", "warn", "2 IPv4 addresses",
     K(facts=healthy_facts(addresses=["10.0.0.11/24", "10.1.0.11/24", "172.17.0.1/16"]))),
    ("endpoint-resolves", "fail", "does not resolve", K(facts=healthy_facts(endpoint_addresses=[]))),
    ("endpoint-resolves", "fail", "loopback",
     K(facts=worker_facts(endpoint_addresses=["127.0.1.1"]), h=host("gpu1", ("worker",)))),
    ("containerd-version", "fail", "needs containerd >= 2.0",
     K(facts=healthy_facts(containerd_version="1.7.27",
                           containerd=_cfg(version=2)))),
    ("containerd-version", "fail", "end of life",
     K(facts=healthy_facts(containerd_version="1.6.33"), inv=inventory(kubernetes_version="1.34"))),
    ("containerd-version", "fail", "kubernetes_version 1.30 is not supported",
     K(facts=healthy_facts(), inv=inventory(kubernetes_version="1.30"))),
    ("containerd-version", "warn", "gpuk8s up installs",
     K(facts=healthy_facts(containerd_version=None, containerd=ContainerdConfig()))),
    ("containerd-cri-enabled", "fail", "disables the CRI plugin",
     K(facts=healthy_facts(containerd=_cfg(cri_disabled=True, systemd_cgroup=None)))),
    ("containerd-cri-enabled", "fail", "not valid TOML",
     K(facts=healthy_facts(containerd=ContainerdConfig(present=True, parse_error="bad key")))),
    ("containerd-systemd-cgroup", "fail", "io.containerd.cri.v1.runtime",
     K(facts=healthy_facts(containerd=_cfg(systemd_cgroup=None, systemd_cgroup_misplaced=True)))),
    ("containerd-systemd-cgroup", "fail", "SystemdCgroup is false",
     K(facts=healthy_facts(containerd=_cfg(systemd_cgroup=False)))),
    ("containerd-systemd-cgroup", "fail", "not set",
     K(facts=healthy_facts(containerd=_cfg(systemd_cgroup=None)))),
    ("containerd-systemd-cgroup", "warn", "will generate",
     K(facts=healthy_facts(containerd=ContainerdConfig()))),
    ("containerd-config-version", "warn", "not native",
     K(facts=healthy_facts(containerd=_cfg(version=2)))),
    ("containerd-config-version", "fail", "cannot be read",
     K(facts=healthy_facts(containerd_version="1.7.27", containerd=_cfg(version=3)),
       inv=inventory(kubernetes_version="1.35"))),
    # containerd 2.x migrates version 0/1 files at startup (cmd/containerd/server/config/config.go,
    # v2.0.0; the lab's simulator does the same): not native, but not refused either.
    ("containerd-config-version", "warn", "migrated at startup",
     K(facts=healthy_facts(containerd=_cfg(version=1)))),
    ("containerd-sandbox-image", "warn", "differs",
     K(facts=healthy_facts(containerd=_cfg(sandbox_image="registry.k8s.io/pause:3.8")))),
    ("kube-tools-version", "fail", "kubeadm 1.35.6 is not Kubernetes 1.36",
     K(facts=healthy_facts(kubeadm_version="1.35.6"))),
    ("kube-tools-version", "fail", "newer than kubeadm",
     K(facts=healthy_facts(kubeadm_version="1.36.1", kubelet_version="1.36.2"))),
    ("kube-tools-version", "warn", "more than one minor",
     K(facts=healthy_facts(kubectl_version="1.33.1"))),
    ("kube-tools-version", "warn", "patch versions differ",
     K(facts=healthy_facts(kubectl_version="1.36.1"))),
    ("kube-tools-version", "warn", "not installed",
     K(facts=healthy_facts(kubeadm_version=None, kubelet_version=None, kubectl_version=None))),
    ("helm", "fail", "older than 3.12: gpuk8s up installs Helm 4.2.3", K(facts=healthy_facts(helm_version="3.8.2"))),
    ("helm", "warn", "not installed", K(facts=healthy_facts(helm_version=None))),
    ("cni-config-clean", "warn", "10-flannel.conflist",
     K(facts=healthy_facts(cni_configs=["10-flannel.conflist"]))),
    ("cni-config-clean", "warn", "earlier cluster",
     K(facts=healthy_facts(cni_configs=["10-calico.conflist", "calico-kubeconfig"]))),
    ("gpu-present", "fail", "gpu: true",
     K(facts=healthy_facts(gpus=[]), h=host("cp1", gpu=True))),
    ("gpu-present", "warn", "vfio-pci",
     K(facts=healthy_facts(gpus=[GPU("0000:01:00.0", "0x10de", "0x27b8", "L4", "0x030200",
                                     "vfio-pci")]))),
    ("nouveau-off", "fail", "nouveau module is loaded",
     K(facts=healthy_facts(nouveau_loaded=True, nouveau_blacklisted=False))),
    ("nouveau-off", "warn", "not blacklisted", K(facts=healthy_facts(nouveau_blacklisted=False))),
    ("secure-boot", "fail", "unsigned", K(facts=healthy_facts(secure_boot=True))),
    ("secure-boot", "warn", "unknown", K(facts=healthy_facts(secure_boot=None))),
    ("gpu-driver-image", "fail", "driver:595.91.07-debian12, which NVIDIA does not build",
     K(facts=healthy_facts(os=OSInfo(id="debian", version_id="12", pretty_name="Debian GNU/Linux 12")))),
    ("nvidia-driver", "warn", "nvidia-smi fails",
     K(facts=healthy_facts(nvidia_driver_version="595.91.07", modules=["nvidia", "overlay"],
                           nvidia_smi_ok=False, nvidia_smi_error="Failed to initialize NVML"))),
    ("nvidia-driver", "fail", "gpu.driver is container",
     K(facts=healthy_facts(nvidia_driver_version="595.91.07", nvidia_smi_ok=True),
       inv=inventory(driver="container"))),
    ("nvidia-driver", "fail", "gpu.driver is host", K(facts=healthy_facts(), inv=inventory(driver="host"))),
    ("gpu-driver-branch", "fail", "last to support the V100-PCIE-16GB",
     K(facts=healthy_facts(gpus=[GPU("0000:01:00.0", "0x10de", "0x1db4", None, "0x030200", None)]))),
    ("gpu-driver-branch", "warn", "not in gpuk8s's GPU table",
     K(facts=healthy_facts(gpus=[GPU("0000:01:00.0", "0x10de", "0x9999", None, "0x030200", None)]))),
    ("gpu-mig", "fail", "cannot do MIG",
     K(facts=healthy_facts(), inv=dataclasses.replace(
         inventory(), gpu=GPUSpec(mig=MIGSpec(config="all-1g.10gb"))))),
    ("unattended-upgrades", "warn", "unattended-upgrades is on",
     K(facts=healthy_facts(unattended_upgrades=True))),
    ("unattended-upgrades", "warn", "dnf-automatic",
     K(facts=healthy_facts(unattended_upgrades=True,
                           services={"dnf-automatic.timer": {"active": "active",
                                                             "enabled": "enabled"}}))),
]


@pytest.mark.parametrize("check_id,status,fragment,kwargs", CASES,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_failing_condition(check_id, status, fragment, kwargs):
    r = result(check_id, **kwargs)
    assert r.id == check_id
    assert r.status == status, r
    assert fragment.lower() in r.message.lower(), r.message
    if status == "fail":
        assert r.fix and r.fix.strip(), r
    else:
        assert r.fix is None or r.fix.strip()


def test_every_check_has_a_failing_case():
    covered = {c[0] for c in CASES}
    allowed_without = {"mac-unique", "hostname-unique", "gpu-os-consistent"}  # fleet tests below
    allowed_without |= {"endpoint-target", "vip-free", "vip-interface"}  # tests/unit/test_vip.py
    assert {c.id for c in CHECKS} - covered <= allowed_without


# --------------------------------------------------------------------------- specific fixes

def test_swap_fix_has_all_three_commands():
    r = result("swap-off", healthy_facts(swap_enabled=True, swap_devices=["/swap.img"],
                                         swap_fstab_entries=["/swap.img none swap sw 0 0"],
                                         swap_units=["dev-sdb2.swap"]))
    assert r.fix.splitlines() == ["swapoff -a", "sed -i '/\\sswap\\s/s/^/#/' /etc/fstab",
                                  "systemctl mask dev-sdb2.swap"]
    assert "/swap.img" in r.message and "fstab" in r.message


def test_nouveau_fix_is_os_family_aware():
    deb = result("nouveau-off", healthy_facts(nouveau_loaded=True))
    assert "update-initramfs -u" in deb.fix and "dracut" not in deb.fix
    assert "blacklist nouveau" in deb.fix and deb.fix.endswith("reboot")
    rocky = OSInfo(id="rocky", version_id="9.4", id_like=["rhel", "centos", "fedora"])
    rpm = result("nouveau-off", healthy_facts(os=rocky, nouveau_loaded=True))
    assert "dracut -f" in rpm.fix and "update-initramfs" not in rpm.fix


def test_required_binaries_fix_uses_package_manager():
    deb = result("required-binaries", healthy_facts(binaries={"ip": "/x", "iptables": "/x",
                                                              "mount": "/x"}))
    assert deb.fix.startswith("apt-get update && apt-get install -y util-linux")
    rocky = OSInfo(id="rocky", version_id="9.4", id_like=["rhel", "centos", "fedora"])
    rpm = result("required-binaries", healthy_facts(os=rocky, binaries={"ip": "/x", "dnf": "/x"}))
    assert rpm.fix.startswith("dnf install -y iptables-nft util-linux")
    assert "iproute-tc" in rpm.fix and "conntrack-tools" in rpm.fix


def test_cgroup_fix_per_family():
    deb = result("cgroup-v2", healthy_facts(cgroup_version=1, cgroup_fs="tmpfs"))
    assert "systemd.unified_cgroup_hierarchy=1" in deb.fix and "update-grub" in deb.fix
    rocky = OSInfo(id="rocky", version_id="9.4", id_like=["rhel"])
    rpm = result("cgroup-v2", healthy_facts(os=rocky, cgroup_version=1, cgroup_fs="tmpfs"))
    assert 'grubby --update-kernel=ALL --args="systemd.unified_cgroup_hierarchy=1"' in rpm.fix


def test_ip_forward_fix_writes_sysctl_d():
    r = result("ip-forward", healthy_facts(sysctls={}))
    assert r.status == "fail" and "unreadable" in r.message
    assert "/etc/sysctl.d/k8s.conf" in r.fix and "sysctl --system" in r.fix


def test_ip_forward_ipv6_cluster_needs_ipv6_forwarding():
    inv = inventory(pod_cidr="fd00:10:244::/56", service_cidr="fd00:10:96::/112")
    r = result("ip-forward", healthy_facts(), inv=inv)
    assert r.status == "fail" and "net.ipv6.conf.all.forwarding" in r.message


def test_systemd_cgroup_misplaced_names_right_table_per_version():
    v2 = result("containerd-systemd-cgroup", healthy_facts(
        containerd_version="1.7.27",
        containerd=_cfg(version=2, systemd_cgroup=None, systemd_cgroup_misplaced=True)),
        inv=inventory(kubernetes_version="1.35"))
    assert v2.status == "fail"
    assert 'belongs in [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]' \
        in v2.message
    v3 = result("containerd-systemd-cgroup", healthy_facts(
        containerd=_cfg(systemd_cgroup=None, systemd_cgroup_misplaced=True)))
    assert "belongs in [plugins.'io.containerd.cri.v1.runtime'" in v3.message
    assert "containerd config dump" in v3.fix


def test_containerd_17_on_135_passes():
    facts = healthy_facts(containerd_version="1.7.27", containerd=_cfg(
        version=2, sandbox_image="registry.k8s.io/pause:3.10.1"),
        kubeadm_version="1.35.6", kubelet_version="1.35.6", kubectl_version="1.35.6")
    inv = inventory(kubernetes_version="1.35")
    for cid in ("containerd-version", "containerd-config-version", "kube-tools-version"):
        assert result(cid, facts, inv=inv).status == "pass", cid


def test_kube_tools_fix_pins_patch_and_minor_repo():
    r = result("kube-tools-version", healthy_facts(kubeadm_version="1.35.6"),
               inv=inventory(kubernetes_version="1.36.2"))
    assert "kubeadm=1.36.2-1.1" in r.fix and "/v1.36/" in r.fix and "apt-mark hold" in r.fix


def test_ports_free_skips_existing_node():
    facts = healthy_facts(listening_ports=[6443, 10250, 2379],
                          kubernetes_files=["/etc/kubernetes/admin.conf",
                                            "/etc/kubernetes/kubelet.conf"])
    r = result("ports-free", facts)
    assert r.status == "skip" and "already a Kubernetes node" in r.message


def test_ports_busy_with_leftovers_suggests_reset():
    facts = healthy_facts(listening_ports=[2379],
                          kubernetes_files=["/etc/kubernetes/manifests/kube-apiserver.yaml"])
    r = result("ports-free", facts)
    assert r.status == "fail" and r.fix.startswith("kubeadm reset -f")


def test_cidr_overlap_ignores_own_pod_routes_on_existing_node():
    facts = healthy_facts(routes=["10.0.0.0/24", "10.244.12.0/26"],
                          addresses=["10.0.0.11/24", "10.244.12.1/32"],
                          kubernetes_files=["/etc/kubernetes/kubelet.conf"])
    assert result("cidr-overlap", facts).status == "pass"
    fresh = dataclasses.replace(facts, kubernetes_files=[])
    r = result("cidr-overlap", fresh)
    assert r.status == "fail" and "route 10.244.12.0/26" in r.message


def test_cidr_overlap_suggests_free_range():
    r = result("cidr-overlap", healthy_facts(addresses=["10.244.3.7/16"]))
    assert "cluster.pod_cidr: 172.20.0.0/16" in r.fix


def test_firewall_fix_opens_role_ports_and_calico():
    facts = healthy_facts(services={"firewalld": {"active": "active", "enabled": "enabled"}})
    r = result("firewall", facts)
    assert r.fix.startswith("systemctl disable --now firewalld")
    for port in ("6443/tcp", "2379-2380/tcp", "10250/tcp", "179/tcp", "4789/udp", "5473/tcp"):
        assert f"--add-port={port}" in r.fix
    assert "--add-source=10.244.0.0/16" in r.fix
    w = result("firewall", worker_facts(ufw_enabled=True), h=host("gpu1", ("worker",)))
    assert "ufw disable" in w.fix and "6443" not in w.fix and "30000:32767/tcp" in w.fix


def test_node_ip_present_passes():
    r = result("node-ip", healthy_facts(addresses=["10.0.0.11/24", "10.1.0.11/24"]),
               h=host("cp1", node_ip="10.1.0.11"))
    assert r.status == "pass" and "10.1.0.11/24" in r.message


def test_endpoint_checks():
    assert result("endpoint-resolves", healthy_facts(),
                  inv=inventory(control_plane_endpoint="10.0.0.100:6443")).status == "pass"
    assert result("endpoint-resolves", healthy_facts(endpoint_addresses=None)).status == "skip"
    assert result("endpoint-resolves", healthy_facts(),
                  inv=inventory(control_plane_endpoint=None)).status == "skip"
    r = result("endpoint-resolves", healthy_facts(endpoint_addresses=[]))
    assert "/etc/hosts" in r.fix and "k8s-api.lab" in r.fix


def test_endpoint_resolving_differently_across_fleet_warns():
    cp, w = healthy_facts(), worker_facts(endpoint_addresses=["10.9.9.9"])
    r = result("endpoint-resolves", cp, fleet={"cp1": cp, "gpu1": w})
    assert r.status == "warn" and "gpu1" in r.message


def test_unsupported_kubernetes_version_reported_by_version_checks():
    inv = inventory(kubernetes_version="1.29")
    by_id = {r.id: r for r in run_checks(inv, host("cp1"), healthy_facts(),
                                         {"cp1": healthy_facts()})}
    for cid in ("containerd-version", "kube-tools-version", "containerd-sandbox-image"):
        assert by_id[cid].status == "fail"
        assert "kubernetes_version 1.29 is not supported" in by_id[cid].message
    assert by_id["cgroup-v2"].status == "pass"


# --------------------------------------------------------------------------- GPU specifics

def test_gpu_present_message_counts_models():
    r = result("gpu-present", healthy_facts())
    assert r.status == "pass" and r.message == "2 x NVIDIA L4 (0x27b8)"


def test_gpu_present_nvswitch_mentions_fabric_manager():
    r = result("gpu-present", healthy_facts(nvswitch_count=4))
    assert "4 NVSwitch" in r.message and "Fabric Manager" in r.message


def test_gpu_checks_skip_on_cpu_hosts():
    cpu = healthy_facts(gpus=[], nouveau_loaded=True, secure_boot=True)
    for h in (host("cp1"), host("cp1", gpu=False)):
        by_id = {r.id: r for r in run_checks(inventory(), h, cpu, {"cp1": cpu})}
        for cid in ("gpu-present", "nouveau-off", "secure-boot", "nvidia-driver",
                    "gpu-os-consistent", "unattended-upgrades"):
            assert by_id[cid].status == "skip", (h.gpu, cid)
            assert by_id[cid].message


def test_gpu_false_overrides_detected_gpus():
    r = result("gpu-present", healthy_facts(), h=host("cp1", gpu=False))
    assert r.status == "skip" and "2 NVIDIA GPU(s) found will not be used" in r.message


def test_is_gpu_host():
    assert is_gpu_host(host(gpu=True), healthy_facts(gpus=[])) is True
    assert is_gpu_host(host(gpu=False), healthy_facts()) is False
    assert is_gpu_host(host(gpu=None), healthy_facts()) is True
    assert is_gpu_host(host(gpu=None), healthy_facts(gpus=[])) is False


def test_host_driver_detected():
    facts = healthy_facts(nvidia_driver_version="595.91.07", modules=["nvidia", "overlay"],
                          nvidia_smi_ok=True)
    r = result("nvidia-driver", facts)
    assert r.status == "pass"
    assert r.message == "host driver 595.91.07: GPU Operator will use driver.enabled=false"


def test_nvidia_smi_without_driver_means_driver_container():
    facts = healthy_facts(nvidia_smi_ok=False, nvidia_smi_error="NVIDIA-SMI has failed because "
                          "it couldn't communicate with the NVIDIA driver.")
    r = result("nvidia-driver", facts)
    assert r.status == "pass" and "driver container" in r.message


def test_secure_boot_with_host_driver_passes():
    facts = healthy_facts(secure_boot=True, nvidia_driver_version="580.82.07", nvidia_smi_ok=True)
    r = result("secure-boot", facts)
    assert r.status == "pass" and "580.82.07" in r.message


def test_secure_boot_fail_fix_mentions_mokutil_and_signed_driver():
    r = result("secure-boot", healthy_facts(secure_boot=True))
    assert "mokutil --disable-validation" in r.fix and "gpu.driver: host" in r.fix


def test_secure_boot_legacy_bios_passes():
    r = result("secure-boot", healthy_facts(secure_boot=False, uefi=False))
    assert r.status == "pass" and "legacy BIOS" in r.message


# --------------------------------------------------------------------------- fleet checks

def _two_workers(**second: Any) -> tuple[Inventory, dict[str, Facts]]:
    inv = inventory((host("cp1", gpu=False), host("gpu1", ("worker",)),
                     host("gpu2", ("worker",))))
    fleet = {"cp1": healthy_facts(gpus=[], product_uuid="11111111-2222-3333-4444-555555555555",
                                  macs={"eno1": "aa:aa:aa:aa:aa:aa"}),
             "gpu1": worker_facts(1), "gpu2": worker_facts(2, **second)}
    return inv, fleet


def test_duplicate_product_uuid_fails_on_both_naming_the_other():
    inv, fleet = _two_workers(product_uuid=worker_facts(1).product_uuid)
    for me, other in (("gpu1", "gpu2"), ("gpu2", "gpu1")):
        r = result("product-uuid-unique", fleet[me], h=inv.host(me), inv=inv, fleet=fleet)
        assert r.status == "fail" and other in r.message and "cp1" not in r.message
        assert r.fix
    ok = result("product-uuid-unique", fleet["cp1"], h=inv.host("cp1"), inv=inv, fleet=fleet)
    assert ok.status == "pass" and "3 reachable hosts" in ok.message


def test_duplicate_mac_fails_naming_host_and_interface():
    inv, fleet = _two_workers(macs={"ens1f0": worker_facts(1).macs["eno1"]})
    r = result("mac-unique", fleet["gpu1"], h=inv.host("gpu1"), inv=inv, fleet=fleet)
    assert r.status == "fail" and "gpu2 (ens1f0)" in r.message and r.fix
    r2 = result("mac-unique", fleet["gpu2"], h=inv.host("gpu2"), inv=inv, fleet=fleet)
    assert r2.status == "fail" and "gpu1 (eno1)" in r2.message


def test_duplicate_hostname_fails_case_insensitively():
    inv, fleet = _two_workers(hostname="GPU1")
    r = result("hostname-unique", fleet["gpu1"], h=inv.host("gpu1"), inv=inv, fleet=fleet)
    assert r.status == "fail" and "gpu2" in r.message
    assert r.fix == "hostnamectl set-hostname gpu1"


def test_gpu_os_mismatch_fails_naming_other():
    rocky = OSInfo(id="rocky", version_id="9.4", id_like=["rhel"])
    inv, fleet = _two_workers(os=rocky)
    r = result("gpu-os-consistent", fleet["gpu1"], h=inv.host("gpu1"), inv=inv, fleet=fleet)
    assert r.status == "fail" and "gpu2 (rocky 9.4)" in r.message and r.fix
    ok = result("gpu-os-consistent", fleet["cp1"], h=inv.host("cp1"), inv=inv, fleet=fleet)
    assert ok.status == "skip"   # cp1 is gpu: false


def test_gpu_os_mismatch_ignored_with_host_driver():
    rocky = OSInfo(id="rocky", version_id="9.4", id_like=["rhel"])
    inv, fleet = _two_workers(os=rocky)
    fleet["gpu1"] = dataclasses.replace(fleet["gpu1"], nvidia_driver_version="595.91.07",
                                        nvidia_smi_ok=True)
    r = result("gpu-os-consistent", fleet["gpu1"], h=inv.host("gpu1"), inv=inv, fleet=fleet)
    assert r.status == "pass" and "host driver" in r.message


def test_fleet_unique_values_pass():
    inv, fleet = _two_workers()
    for name in fleet:
        by_id = {r.id: r for r in run_checks(inv, inv.host(name), fleet[name], fleet)}
        for cid in ("hostname-unique", "product-uuid-unique", "mac-unique"):
            assert by_id[cid].status == "pass", (name, by_id[cid])


def test_helm_only_on_first_control_plane():
    inv = inventory((host("cp1"), host("cp2"), host("gpu1", ("worker",))))
    r = result("helm", healthy_facts(helm_version=None, hostname="cp2"), h=inv.host("cp2"), inv=inv)
    assert r.status == "skip" and "cp1" in r.message


def test_run_checks_is_pure():
    facts = healthy_facts(swap_enabled=True, swap_devices=["/swap.img"])
    before = dataclasses.asdict(facts)
    first = run_checks(inventory(), host("cp1"), facts, {"cp1": facts})
    second = run_checks(inventory(), host("cp1"), facts, {"cp1": facts})
    assert first == second and dataclasses.asdict(facts) == before


# --------------------------------------------------------------------------- fixes safe to paste

HOSTILE = ("x; rm -rf /", "$(reboot)", "`reboot`", "a'b", "two words")


def assert_one_word(fix: str, word: str) -> None:
    """`word` reaches the shell as one single-quoted word, so nothing in it is run or expanded."""
    assert quote(word) in fix, fix
    assert any(word in shlex.split(line) for line in fix.splitlines()), fix


@pytest.mark.parametrize("name", HOSTILE)
def test_cni_fix_quotes_file_names(name):
    r = result("cni-config-clean", healthy_facts(cni_configs=[name, "10-flannel.conflist"]))
    assert r.status == "warn"
    assert_one_word(r.fix, f"/etc/cni/net.d/{name}")
    assert "mv /etc/cni/net.d/10-flannel.conflist /root/cni-net.d.bak/" in r.fix


@pytest.mark.parametrize("user", HOSTILE + ("o'brien ; reboot",))
def test_sudoers_fix_quotes_the_user(user):
    h = dataclasses.replace(host("cp1"), ssh=SSHSettings(user=user))
    r = result("privileged-access", healthy_facts(uid=1000), h=h)
    assert_one_word(r.fix, f"{user} ALL=(ALL) NOPASSWD: ALL")


def test_sudoers_fix_unchanged_for_plain_users():
    h = dataclasses.replace(host("cp1"), ssh=SSHSettings(user="ubuntu"))
    r = result("privileged-access", healthy_facts(uid=1000), h=h)
    assert r.fix.startswith(
        "echo 'ubuntu ALL=(ALL) NOPASSWD: ALL' | sudo tee /etc/sudoers.d/gpuk8s && ")


@pytest.mark.parametrize("unit", HOSTILE)
def test_swap_fix_quotes_unit_names(unit):
    r = result("swap-off", healthy_facts(swap_units=[unit, "dev-sda3.swap"]))
    assert_one_word(r.fix, unit)
    assert r.fix.endswith(f"systemctl mask {quote(unit)} dev-sda3.swap")


@pytest.mark.parametrize("name", HOSTILE)
def test_hostname_fixes_quote_names(name):
    r = result("hostname-valid", healthy_facts(hostname=None), h=host(name))
    assert_one_word(r.fix, name)
    r = result("hostname-unique", healthy_facts(hostname=None), h=host(name))
    assert_one_word(r.fix, name)


@pytest.mark.parametrize("version", HOSTILE)
def test_kernel_fix_quotes_os_version(version):
    os = OSInfo(id="ubuntu", version_id=version, id_like=["debian"])
    r = result("kernel-version", healthy_facts(os=os, kernel="5.4.0-200-generic"))
    assert_one_word(r.fix, f"linux-generic-hwe-{version}")


@pytest.mark.parametrize("path", [f"/etc/kubernetes/{v}" for v in HOSTILE])
def test_ports_fix_quotes_leftover_paths(path):
    r = result("ports-free", healthy_facts(listening_ports=[6443], kubernetes_files=[path]))
    assert_one_word(r.fix, path)


@pytest.mark.parametrize("iface", HOSTILE)
def test_mac_fix_quotes_interface_names(iface):
    inv, fleet = _two_workers(macs={"eno9": worker_facts(1).macs["eno1"]})
    fleet["gpu1"] = dataclasses.replace(fleet["gpu1"], macs={iface: worker_facts(1).macs["eno1"]})
    r = result("mac-unique", fleet["gpu1"], h=inv.host("gpu1"), inv=inv, fleet=fleet)
    assert r.status == "fail"
    assert_one_word(r.fix, iface)


@pytest.mark.parametrize("bad", ["10.244.0.0/16;reboot", "10.244.0.0/16 $(reboot)"])
def test_firewall_fixes_quote_cidrs(bad):
    inv = inventory(pod_cidr=bad)
    fw = {"firewalld": {"active": "active", "enabled": "enabled"}}
    assert_one_word(result("firewall", healthy_facts(services=fw), inv=inv).fix,
                    f"--add-source={bad}")
    assert_one_word(result("firewall", healthy_facts(ufw_enabled=True), inv=inv).fix, bad)


def test_endpoint_fixes_quote_the_name():
    name = "api$(reboot).lab"
    inv = inventory(control_plane_endpoint=f"{name}:6443")
    r = result("endpoint-resolves", healthy_facts(endpoint_addresses=[]), inv=inv)
    assert_one_word(r.fix, f"<vip-or-load-balancer-ip> {name}")
    w = result("endpoint-resolves", worker_facts(endpoint_addresses=["127.0.1.1"]),
               h=host("gpu1", ("worker",)), inv=inv)
    assert_one_word(w.fix, f"<vip-or-load-balancer-ip> {name}")
    assert w.fix.startswith("sed -i '/\\sapi\\$\\(reboot\\)\\.lab\\b/d' /etc/hosts")
    cp, other = healthy_facts(), worker_facts(endpoint_addresses=["10.9.9.9"])
    d = result("endpoint-resolves", cp, inv=inv, fleet={"cp1": cp, "gpu1": other})
    assert_one_word(d.fix, name)


def test_kube_tools_fix_quotes_the_inventory_version():
    version = "1.36.2;reboot"
    r = result("kube-tools-version", healthy_facts(kubeadm_version="1.35.6"),
               inv=inventory(kubernetes_version=version))
    assert_one_word(r.fix, f"kubeadm={version}-1.1")


def test_preflight_names_the_containerd_that_up_installs_from_the_override():
    """versions.containerd is resolved once: preflight says what up really installs."""
    import dataclasses

    from gpuk8s.inventory import Versions

    inv = dataclasses.replace(inventory(), versions=Versions(containerd="2.0"))
    f = healthy_facts(containerd_version=None)
    f.binaries.pop("containerd", None)
    r = result("containerd-version", f, inv=inv)
    assert "installs containerd 2.0" in r.message and "2.1" not in r.message


# --------------------------------------------------------------------------- NVIDIA: NVML mismatch, MIG mode

_MISMATCH = "Failed to initialize NVML: Driver/library version mismatch"
_NV_MODULES = ["br_netfilter", "nvidia", "nvidia_drm", "nvidia_modeset", "nvidia_uvm", "overlay"]


def _mismatch_facts(**changes: Any) -> Facts:
    """A host driver upgraded without a reboot, as the probe parses it (recorded nvidia-smi output:
    anderskm/gputil#55)."""
    base = dict(nvidia_driver_version="580.173.02", modules=_NV_MODULES, nvidia_smi_ok=False,
                nvidia_smi_error=f"{_MISMATCH} NVML library version: 580.178",
                nvml_error=_MISMATCH, nvml_library_version="580.178")
    base.update(changes)
    return healthy_facts(**base)


def test_nvml_mismatch_fails_nvidia_driver_quoting_the_line_and_the_fix():
    r = result("nvidia-driver", _mismatch_facts())
    assert r.status == "fail"
    assert f"'{_MISMATCH}'" in r.message
    assert "580.173.02" in r.message and "580.178" in r.message and "without a reboot" in r.message
    assert r.fix.splitlines()[0].startswith("reboot")
    # only the modules the host has loaded, users before nvidia; nothing forced (no rmmod -f)
    assert "rmmod nvidia_drm nvidia_modeset nvidia_uvm nvidia && modprobe nvidia && nvidia-smi" in r.fix
    assert " -f" not in r.fix.rsplit("; rmmod", 1)[1].split("&&")[0]
    assert "systemctl stop nvidia-persistenced" in r.fix
    only = result("nvidia-driver", _mismatch_facts(modules=["nvidia", "overlay"]))
    assert "rmmod nvidia && modprobe nvidia" in only.fix
    # older drivers print no library version line
    old = result("nvidia-driver", _mismatch_facts(nvml_library_version=None))
    assert old.status == "fail" and f"'{_MISMATCH}'" in old.message


def test_other_nvml_errors_still_warn_and_container_mode_still_asks_to_purge():
    r = result("nvidia-driver", _mismatch_facts(nvml_error="Failed to initialize NVML: Unknown Error",
                                                nvidia_smi_error="Failed to initialize NVML: Unknown Error",
                                                nvml_library_version=None))
    assert r.status == "warn" and "nvidia-smi fails" in r.message
    r = result("nvidia-driver", _mismatch_facts(), inv=inventory(driver="container"))
    assert r.status == "fail" and "gpu.driver is container" in r.message


def _h100s(*modes: tuple[str | None, str | None]) -> list[GPU]:
    return [GPU(f"0000:{0x18 + i:02x}:00.0", "0x10de", "0x2330", "NVIDIA H100 80GB HBM3", "0x030200",
                "nvidia", mig_mode=cur, mig_mode_pending=pend) for i, (cur, pend) in enumerate(modes)]


def _mig_inv(config: str) -> Inventory:
    return dataclasses.replace(inventory(), gpu=GPUSpec(mig=MIGSpec(config=config)))


def test_gpu_mig_warns_when_mig_is_enabled_on_a_node_configured_without_it():
    f = healthy_facts(gpus=_h100s(("enabled", "enabled"), ("disabled", "disabled")))
    r = result("gpu-mig", f)
    assert r.status == "warn"
    assert "MIG mode is Enabled on 0000:18:00.0 but MIG is not configured" in r.message
    assert "0000:19:00.0" not in r.message
    assert r.fix.splitlines()[0] == "nvidia-smi -i 0000:18:00.0 -mig 0"
    # pending Disabled: only the reset is missing
    r = result("gpu-mig", healthy_facts(gpus=_h100s(("enabled", "disabled"))))
    assert r.status == "warn" and "pending a GPU reset" in r.message
    assert "nvidia-smi -i 0000:18:00.0 -r" in r.fix


def test_gpu_mig_warns_when_mig_is_configured_but_disabled():
    r = result("gpu-mig", healthy_facts(gpus=_h100s(("disabled", "disabled"), ("enabled", "enabled"))),
               inv=_mig_inv("all-1g.10gb"))
    assert r.status == "warn" and "MIG mode is Disabled on 0000:18:00.0" in r.message
    assert r.fix.splitlines()[0] == "nvidia-smi -i 0000:18:00.0 -mig 1"
    r = result("gpu-mig", healthy_facts(gpus=_h100s(("disabled", "enabled"))),
               inv=_mig_inv("all-1g.10gb"))
    assert r.status == "warn" and "Enabled pending a GPU reset" in r.message


def test_gpu_mig_unchanged_where_modes_agree_or_are_unknown():
    r = result("gpu-mig", healthy_facts(gpus=_h100s(("enabled", "enabled"))), inv=_mig_inv("all-1g.10gb"))
    assert (r.status, r.fix) == ("pass", None) and r.message.startswith("mig.config all-1g.10gb fits")
    for gpus in (_h100s(("disabled", "disabled")), _h100s((None, None)), healthy_facts().gpus):
        r = result("gpu-mig", healthy_facts(gpus=gpus))
        assert (r.status, r.message) == ("pass", "MIG not configured for this node (all-disabled)")
    # mode unknown (no nvidia-smi): the configured layout is checked as before
    r = result("gpu-mig", healthy_facts(gpus=_h100s((None, None))), inv=_mig_inv("all-1g.10gb"))
    assert r.status == "pass"


def test_driver_image_tag_of_rhel_and_rocky_is_the_major_and_host_drivers_need_none():
    """The operator's tag: ID + VERSION_ID, the major only for rhel/rocky/ol (getGPUNodeOSInfo)."""
    rocky = healthy_facts(os=OSInfo(id="rocky", version_id="9.4", pretty_name="Rocky Linux 9.4"))
    r = result("gpu-driver-image", rocky)
    assert r.status == "pass" and "595.91.07-rocky9" in r.message
    jammy = healthy_facts(os=OSInfo(id="ubuntu", version_id="20.04", pretty_name="Ubuntu 20.04"))
    assert result("gpu-driver-image", jammy).status == "fail"
    r = result("gpu-driver-image", jammy, inv=inventory(driver="host"))
    assert r.status == "pass" and "host driver" in r.message
