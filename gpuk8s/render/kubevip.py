"""kube-vip's static pod manifest (cluster.vip): one per control plane, ARP mode (docs/ha.md).

The manifest is the same on every control plane but for one volume: while `kubeadm init` runs on
the first control plane, kube-vip must read /etc/kubernetes/super-admin.conf. From Kubernetes
1.29 kubeadm's admin.conf is bound to the cluster-admin ClusterRole by a ClusterRoleBinding that
init creates only after the API server is up, and kube-vip, which must hold the VIP before that
(the endpoint is the VIP), cannot read its lease with admin.conf until then: kube-vip/kube-vip
issue #684, "kube-vip requires super-admin.conf with Kubernetes 1.29". super-admin.conf (group
system:masters) exists only on the host that ran `kubeadm init`, so after init the manifest goes
back to admin.conf there, and joined control planes use admin.conf from the start.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from gpuk8s.paths import ADMIN_CONF, KUBE_VIP_MANIFEST, SUPER_ADMIN_CONF
from gpuk8s.render.base import RenderedFile, render_template
from gpuk8s.versions import KUBE_VIP_IMAGE, Release


def kube_vip_image(release: Release) -> str:
    return f"{KUBE_VIP_IMAGE}:{release.kube_vip}"


def kube_vip_manifest(inv: Any, release: Release, *, during_init: bool = False,
                      host: str | None = None) -> RenderedFile:
    """/etc/kubernetes/manifests/kube-vip.yaml; during_init: the first control plane's copy
    while `kubeadm init` runs (super-admin.conf, see the module docstring)."""
    vip = inv.cluster.vip
    if vip is None:
        raise ValueError("kube_vip_manifest needs cluster.vip")
    subnet = 32 if ipaddress.ip_address(vip.address).version == 4 else 128
    content = render_template(
        "kube-vip/kube-vip.yaml.j2",
        image=kube_vip_image(release), address=vip.address, interface=vip.interface,
        port=inv.cluster.endpoint_port, subnet=subnet,
        kubeconfig=SUPER_ADMIN_CONF if during_init else ADMIN_CONF)
    return RenderedFile(KUBE_VIP_MANIFEST, content, mode=0o600, host=host)


def kube_vip_files(inv: Any, release: Release) -> list[RenderedFile]:
    """What `gpuk8s render` lists: each control plane's manifest as it stays after `up` (the
    first control plane's init-time copy differs only in the super-admin.conf volume)."""
    if inv.cluster.vip is None:
        return []
    return [kube_vip_manifest(inv, release, host=h.name) for h in inv.control_planes]
