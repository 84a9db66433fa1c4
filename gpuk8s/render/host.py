"""Host preparation files: kernel modules, sysctls, and NetworkManager's hands off Calico."""

from __future__ import annotations

import ipaddress
from typing import Any

from gpuk8s.errors import UsageError
from gpuk8s.paths import MODULES_FILE, NM_CALICO_CONF, SYSCTL_FILE
from gpuk8s.render.base import RenderedFile, render_template


def pod_networks(inv: Any) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """cluster.pod_cidr as networks (one, or an IPv4 and an IPv6 one for dual stack)."""
    out = []
    for part in inv.cluster.pod_cidr.split(","):
        try:
            out.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise UsageError(f"cluster.pod_cidr '{inv.cluster.pod_cidr}' is not a CIDR "
                             "like 10.244.0.0/16") from None
    return out


def sysctl_file(inv: Any = None, host: str | None = None) -> RenderedFile:
    """/etc/sysctl.d/99-kubernetes.conf: forwarding and bridge netfilter."""
    ipv6 = inv is not None and any(n.version == 6 for n in pod_networks(inv))
    return RenderedFile(SYSCTL_FILE, render_template("host/99-kubernetes.conf.j2", ipv6=ipv6),
                        host=host)


def modules_file(host: str | None = None) -> RenderedFile:
    """/etc/modules-load.d/kubernetes.conf: overlay and br_netfilter at every boot."""
    return RenderedFile(MODULES_FILE, render_template("host/kubernetes-modules.conf.j2"),
                        host=host)


def networkmanager_calico_file(host: str | None = None) -> RenderedFile:
    """/etc/NetworkManager/conf.d/calico.conf: NetworkManager leaves Calico's interfaces alone."""
    return RenderedFile(NM_CALICO_CONF, render_template("host/calico-networkmanager.conf.j2"),
                        host=host)
