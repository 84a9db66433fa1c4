"""The probe: the script sent once per host, its command line, and the parse of its output.

The script prints sections, each '@@gpuk8s:NAME' on its own line followed by raw output.
`SECTION_PARSERS` says, row by row, which sections a parser reads and which Facts fields it
fills; a section no row reads is ignored, and a missing one reaches its parser as None.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable

from gpuk8s.errors import TransportError
from gpuk8s.facts.gpu import (nouveau_loaded, parse_driver, parse_gpus, parse_nouveau_settings,
                              parse_nvidia_module_type, parse_nvml_error)
from gpuk8s.facts.model import Facts
from gpuk8s.facts.network import (parse_endpoint, parse_endpoint_tcp, parse_interfaces,
                                  parse_listen, parse_network, parse_ufw_conf)
from gpuk8s.facts.runtime import (parse_containerd_config, parse_containerd_version,
                                  parse_kube_version, parse_name_list)
from gpuk8s.facts.system import (br_netfilter_loaded, overlay_available, parse_binaries,
                                 parse_cgroup, parse_fstab_swap, parse_hostname,
                                 parse_managed_files, parse_meminfo, parse_modules,
                                 parse_os_release, parse_product_uuid, parse_secure_boot,
                                 parse_selinux, parse_services, parse_swap_state,
                                 parse_swap_units, parse_sysctls, parse_timedatectl,
                                 parse_unattended_upgrades, parse_uname)
from gpuk8s.facts.text import first_int
from gpuk8s.paths import KUBERNETES_STATE_FILES, MANAGED_FILES
from gpuk8s.shell import Cmd
from gpuk8s.versions import PROBE_TIMEOUT

if TYPE_CHECKING:
    from gpuk8s.inventory import Inventory

SECTION_PREFIX = "@@gpuk8s:"
# probe.sh's arguments put this between the Kubernetes state files and the managed files
# (no absolute path can be it).
ARGS_SEPARATOR = "--"


@functools.lru_cache(maxsize=1)
def probe_script() -> str:
    """The probe script text (POSIX sh), shipped as package data (read once per run)."""
    return resources.files("gpuk8s.facts").joinpath("probe.sh").read_text(encoding="utf-8")


def probe_args(endpoint_host: str, tcp: str | None = None) -> tuple[str, ...]:
    """probe.sh's arguments: endpoint host, [tcp:PORT | tcp!:PORT], state files, the separator,
    managed files."""
    return (endpoint_host, *((tcp,) if tcp and endpoint_host else ()), *KUBERNETES_STATE_FILES,
            ARGS_SEPARATOR, *MANAGED_FILES)


def probe_command(inventory: Inventory) -> Cmd:
    """`sh -s -- <endpoint host> <paths...>`: the probe script itself travels on stdin.

    With an endpoint, nodes of a running cluster connect to it (tcp:PORT); with cluster.vip
    every host does (tcp!:PORT), so preflight knows whether the VIP is still free."""
    c = inventory.cluster
    tcp = None
    if c.endpoint_host:
        vip = getattr(c, "vip", None)
        tcp = f"{'tcp!' if vip is not None else 'tcp'}:{getattr(c, 'endpoint_port', 6443)}"
    return Cmd("sh", "-s", "--", *probe_args(c.endpoint_host or "", tcp))


def gather_facts(transport, inventory: Inventory,
                 timeout: float | None = None) -> tuple[Facts, str | None]:
    """One round trip: run the probe (privileged when possible) and parse it.

    `timeout` is the host's ssh.command_timeout (PROBE_TIMEOUT when not given). When sudo
    wants a password, the probe runs once more unprivileged so the other checks still report;
    the sudo problem is returned as the host's error.
    """
    script = probe_script()
    cmd = probe_command(inventory)
    limit = PROBE_TIMEOUT if timeout is None else timeout
    try:
        res = transport.run(cmd, stdin=script, timeout=limit)
    except TransportError as e:
        if e.kind != "sudo-password":
            raise
        res = transport.run(cmd, stdin=script, timeout=limit, sudo=False)
        return parse_probe(res.stdout), str(e)
    return parse_probe(res.stdout), None


def split_sections(text: str) -> dict[str, str]:
    """Split probe output into {section name: raw text}: each '@@gpuk8s:NAME' line starts one.

    Splits on the markers themselves rather than line by line (the output is tens of KB).
    Text before the first marker is ignored; a name seen twice has its parts joined.
    """
    sections: dict[str, list[str]] = {}
    for part in ("\n" + text.replace("\r\n", "\n")).split("\n" + SECTION_PREFIX)[1:]:
        name, _, body = part.partition("\n")
        sections.setdefault(name.strip(), []).append(body)
    return {k: "\n".join(v).strip("\n") for k, v in sections.items()}


@dataclass(frozen=True)
class SectionParser:
    """One row of the table: the sections a parser reads and the Facts fields it fills."""

    reads: tuple[str, ...]
    fills: tuple[str, ...]        # parse returns one value, or a tuple with one per field
    parse: Callable[..., Any]
    uses: tuple[str, ...] = ()    # fields filled by earlier rows, passed after the sections


def _row(reads: str, fills: str, parse: Callable[..., Any], uses: str = "") -> SectionParser:
    """A table row from space-separated names."""
    return SectionParser(tuple(reads.split()), tuple(fills.split()), parse, tuple(uses.split()))


SECTION_PARSERS: tuple[SectionParser, ...] = (
    _row("probe", "probe_version", first_int),
    _row("uid", "uid", first_int),
    _row("os_release", "os", parse_os_release),
    _row("uname", "kernel arch", parse_uname),
    _row("hostname", "hostname", parse_hostname),
    _row("cgroup", "cgroup_version cgroup_fs", parse_cgroup),
    _row("cpus", "cpus", first_int),
    _row("meminfo", "memory_mib", parse_meminfo),
    _row("swaps", "swap_devices swap_enabled", parse_swap_state),
    _row("fstab", "swap_fstab_entries", parse_fstab_swap),
    _row("swap_units", "swap_units", parse_swap_units),
    # With iproute2 the probe prints links/addrs/routes; without it sys_net/fib_trie/proc_route.
    _row("links addrs routes sys_net proc_route fib_trie", "macs addresses routes default_route",
         parse_network),
    _row("product_uuid", "product_uuid", parse_product_uuid),
    _row("modules", "modules", parse_modules),
    _row("sysctl", "sysctls", parse_sysctls),
    _row("filesystems", "overlay_available", overlay_available, uses="modules"),
    _row("", "br_netfilter_loaded", br_netfilter_loaded, uses="modules sysctls"),
    _row("binaries", "binaries", parse_binaries),
    _row("services", "services", parse_services),
    _row("timedatectl", "time_synchronized ntp_enabled", parse_timedatectl),
    _row("ufw_conf", "ufw_enabled", parse_ufw_conf),
    _row("listen", "listening_ports", parse_listen),
    _row("endpoint", "endpoint_addresses", parse_endpoint),
    _row("endpoint_tcp", "endpoint_tcp", parse_endpoint_tcp),
    _row("links addrs", "interfaces", parse_interfaces),
    _row("containerd_version", "containerd_version", parse_containerd_version),
    _row("containerd_config", "containerd", parse_containerd_config),
    _row("kubeadm_version", "kubeadm_version", parse_kube_version),
    _row("kubelet_version", "kubelet_version", parse_kube_version),
    _row("kubectl_version", "kubectl_version", parse_kube_version),
    _row("helm_version", "helm_version", parse_kube_version),
    _row("pci pci_driver lspci nvidia_smi", "gpus nvidia_other_functions nvswitch_count", parse_gpus),
    _row("nvidia_version nvidia_smi", "nvidia_driver_version nvidia_smi_ok nvidia_smi_error",
         parse_driver),
    _row("nvidia_version", "nvidia_kernel_module", parse_nvidia_module_type),
    _row("nvidia_smi", "nvml_error nvml_library_version", parse_nvml_error),
    _row("", "nouveau_loaded", nouveau_loaded, uses="modules gpus"),
    # conf_grep holds both modprobe.d's nouveau lines and APT's unattended-upgrade settings.
    _row("conf_grep modprobe_nouveau cmdline", "nouveau_blacklisted", parse_nouveau_settings),
    _row("secure_boot", "secure_boot uefi", parse_secure_boot),
    _row("auto_upgrades conf_grep", "unattended_upgrades", parse_unattended_upgrades,
         uses="services"),
    _row("cni", "cni_configs", parse_name_list),
    _row("k8s_state", "kubernetes_files", parse_name_list),
    _row("selinux", "selinux_enforcing", parse_selinux),
    _row("managed_files", "managed_files", parse_managed_files),
)


_UNKNOWN = Facts()


def parse_probe(text: str) -> Facts:
    """Build Facts from one probe run's output, one table row at a time.

    Remote output is untrusted: a parser that fails on it leaves its fields unknown (their
    defaults) and records why in `facts.parse_errors`; the other rows, and the other hosts,
    are unaffected.
    """
    sections = split_sections(text)
    facts = Facts()
    for row in SECTION_PARSERS:
        try:
            value = row.parse(*map(sections.get, row.reads), *(getattr(facts, u) for u in row.uses))
            values = (value,) if len(row.fills) == 1 else tuple(value)
            if len(values) != len(row.fills):
                raise ValueError(f"{len(values)} values for {len(row.fills)} fields")
        except Exception as e:  # noqa: BLE001 - one section's odd output never breaks the host
            values = tuple(copy.deepcopy(getattr(_UNKNOWN, name)) for name in row.fills)
            facts.parse_errors[" ".join(row.fills)] = _reason(row, e)
        for name, v in zip(row.fills, values):
            setattr(facts, name, v)
    return facts


def _reason(row: SectionParser, e: Exception) -> str:
    """Why a row's facts are unknown, one line (the sections it read, the error)."""
    where = "section " + ", ".join(row.reads) if row.reads else "derived from " + ", ".join(row.uses)
    return f"{where}: {type(e).__name__}: {str(e)[:200]}".replace("\n", " ")
