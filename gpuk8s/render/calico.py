"""Calico: the operator's Installation (and friends) and the manifests applied before it."""

from __future__ import annotations

from typing import Any

from gpuk8s.errors import UsageError
from gpuk8s.render.base import RenderedFile, render_template
from gpuk8s.render.host import pod_networks
from gpuk8s.versions import CALICO_OLDEST, Release, calico_release

# The Installation's name in a render tree (cluster/...); on the first control plane it is
# written to paths.CALICO_INSTALLATION before `kubectl apply`.
CALICO_INSTALLATION = "cluster/calico-installation.yaml"


def _calico_version(text: str) -> tuple[int, int, int]:
    v = calico_release(text)
    if v is None:
        raise UsageError(f"Calico version '{text}' is not a release like 3.31.3")
    return v


def calico_installation(inv: Any, release: Release) -> RenderedFile:
    """cluster/calico-installation.yaml: Installation (pool = podSubnet), APIServer, etc."""
    calico = _calico_version(release.calico)
    enc = inv.network.encapsulation
    pools = []
    for net in pod_networks(inv):
        if net.version == 6 and enc.startswith("IPIP"):
            raise UsageError(f"network.encapsulation {enc} cannot carry the IPv6 pod CIDR "
                             f"{net}; use VXLAN, VXLANCrossSubnet or None")
        pools.append({
            "name": "default-ipv4-ippool" if net.version == 4 else "default-ipv6-ippool",
            "cidr": inv.cluster.pod_cidr if "," not in inv.cluster.pod_cidr else str(net),
            "block_size": 26 if net.version == 4 else 122,
            "encapsulation": enc,
        })
    content = render_template(
        "calico/installation.yaml.j2",
        pools=pools,
        ipv4=any(p["name"] == "default-ipv4-ippool" for p in pools),
        ipv6=any(p["name"] == "default-ipv6-ippool" for p in pools),
        goldmane_whisker=calico[:2] >= (3, 30),
    )
    return RenderedFile(CALICO_INSTALLATION, content)


def calico_manifest_urls(release: Release) -> list[str]:
    """The CRD and operator manifests to `kubectl create` before the Installation (DOMAIN 4.1)."""
    major, minor, patch = _calico_version(release.calico)
    if (major, minor) < CALICO_OLDEST:
        raise UsageError(f"Calico {release.calico} is older than "
                         f"{CALICO_OLDEST[0]}.{CALICO_OLDEST[1]}, which gpuk8s installs")
    base = (f"https://raw.githubusercontent.com/projectcalico/calico/"
            f"v{major}.{minor}.{patch}/manifests/")
    if (major, minor) <= (3, 29):
        names = ["tigera-operator.yaml"]
    elif (major, minor) <= (3, 31):
        names = ["operator-crds.yaml", "tigera-operator.yaml"]
    else:
        names = ["v1_crd_projectcalico_org.yaml", "tigera-operator.yaml"]
    return [base + n for n in names]
