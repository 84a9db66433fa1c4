"""kubeadm's configuration files: InitConfiguration/ClusterConfiguration and JoinConfiguration.

Node registration (name, node IP, the labels the kubelet may set itself, taints) is shared by both.
"""

from __future__ import annotations

import re
from typing import Any

from gpuk8s.errors import UsageError
from gpuk8s.paths import KUBEADM_INIT_CONFIG, KUBEADM_JOIN_CONFIG, KUBEADM_TOKEN_CONFIG
from gpuk8s.render.base import ClusterSecrets, RenderedFile, render_template
from gpuk8s.render.placeholders import PLACEHOLDER_CA_HASH
from gpuk8s.versions import Release

CONTROL_PLANE_TAINT_KEY = "node-role.kubernetes.io/control-plane"
KUBEADM_APIS = ("v1beta3", "v1beta4")

_CA_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")

# Labels the kubelet may set on its own Node (k8s.io/kubelet well_known_labels.go); any other
# label in the kubernetes.io / k8s.io namespaces makes the kubelet refuse to start.
_KUBELET_LABELS = frozenset({
    "kubernetes.io/hostname", "kubernetes.io/os", "kubernetes.io/arch",
    "beta.kubernetes.io/os", "beta.kubernetes.io/arch", "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type", "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
})
_KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")


def _label_namespace(key: str) -> str:
    return key.split("/", 1)[0] if "/" in key else ""


def _kubelet_may_set(key: str) -> bool:
    ns = _label_namespace(key)
    restricted = any(ns == d or ns.endswith("." + d) for d in ("kubernetes.io", "k8s.io"))
    if not restricted or key in _KUBELET_LABELS:
        return True
    return any(ns == d or ns.endswith("." + d) for d in _KUBELET_LABEL_NAMESPACES)


def node_labels_for_kubelet(host: Any) -> dict[str, str]:
    """The host's labels the kubelet may register itself (--node-labels)."""
    return {k: v for k, v in host.labels.items() if _kubelet_may_set(k)}


def node_labels_after_join(host: Any) -> dict[str, str]:
    """Labels the kubelet may not set (e.g. node-role.kubernetes.io/*): apply with kubectl."""
    return {k: v for k, v in host.labels.items() if not _kubelet_may_set(k)}


def _taints(host: Any) -> list[dict[str, str | None]]:
    """Inventory taints, plus kubeadm's control-plane taint unless the host is also a worker."""
    out = [{"key": t.key, "value": t.value, "effect": t.effect} for t in host.taints]
    if host.is_control_plane and not host.is_worker:
        if not any(t["key"] == CONTROL_PLANE_TAINT_KEY and t["effect"] == "NoSchedule"
                   for t in out):
            out.append({"key": CONTROL_PLANE_TAINT_KEY, "value": None, "effect": "NoSchedule"})
    return out


def _registration(host: Any, release: Release) -> dict[str, Any]:
    args: list[dict[str, str]] = []
    if host.internal_ip:
        args.append({"name": "node-ip", "value": host.internal_ip})
    labels = node_labels_for_kubelet(host)
    if labels:
        args.append({"name": "node-labels",
                     "value": ",".join(f"{k}={v}" for k, v in sorted(labels.items()))})
    return {
        "node_name": host.name,
        "kubelet_extra_args": args,
        # v1beta4 made extraArgs a list of name/value pairs.
        "extra_args_as_map": _kubeadm_api(release) == "v1beta3",
        "taints": _taints(host),
        "control_plane_node": host.is_control_plane,
    }


def _kubeadm_api(release: Release) -> str:
    if release.kubeadm_api not in KUBEADM_APIS:
        raise UsageError(f"kubeadm config API {release.kubeadm_api} is not supported by this "
                         f"gpuk8s (it writes {' and '.join(KUBEADM_APIS)})")
    return release.kubeadm_api


def kubeadm_init_config(inv: Any, host: Any, secrets: ClusterSecrets,
                        release: Release) -> RenderedFile:
    """/etc/gpuk8s/kubeadm-init.yaml for the first control plane (kubeadm init --config)."""
    if not host.is_control_plane:
        raise UsageError(f"{host.name} is not a control plane; kubeadm init runs on one")
    c = inv.cluster
    content = render_template(
        "kubeadm/init.yaml.j2",
        placeholder_secrets=secrets.is_placeholder(),
        kubeadm_api_version=f"kubeadm.k8s.io/{_kubeadm_api(release)}",
        token=secrets.token.reveal(),
        certificate_key=secrets.certificate_key.reveal(),
        advertise_address=host.internal_ip,
        bind_port=inv.bind_port(host),
        cluster_name=c.name,
        kubernetes_version="v" + release.patch,
        control_plane_endpoint=inv.control_plane_endpoint,
        pod_subnet=c.pod_cidr,
        service_subnet=c.service_cidr,
        dns_domain=c.dns_domain,
        **_registration(host, release),
    )
    return RenderedFile(KUBEADM_INIT_CONFIG, content, 0o600, True, host.name, secrets.values())


def kubeadm_join_config(inv: Any, host: Any, secrets: ClusterSecrets, release: Release,
                        ca_cert_hash: str) -> RenderedFile:
    """/etc/gpuk8s/kubeadm-join.yaml (kubeadm join --config); controlPlane only for CPs."""
    if not _CA_HASH_RE.fullmatch(ca_cert_hash):
        raise UsageError(f"CA certificate hash {ca_cert_hash!r} is not sha256:<64 hex chars>")
    content = render_template(
        "kubeadm/join.yaml.j2",
        placeholder_secrets=secrets.is_placeholder(),
        placeholder_ca_hash=ca_cert_hash == PLACEHOLDER_CA_HASH,
        kubeadm_api_version=f"kubeadm.k8s.io/{_kubeadm_api(release)}",
        control_plane_endpoint=inv.control_plane_endpoint,
        token=secrets.token.reveal(),
        ca_cert_hash=ca_cert_hash,
        control_plane=host.is_control_plane,
        advertise_address=host.internal_ip,
        bind_port=inv.bind_port(host),
        certificate_key=secrets.certificate_key.reveal(),
        **_registration(host, release),
    )
    values = secrets.values() if host.is_control_plane else (secrets.token.reveal(),)
    return RenderedFile(KUBEADM_JOIN_CONFIG, content, 0o600, True, host.name, values)


_TTL_RE = re.compile(r"(\d+h)?(\d+m)?(\d+s)?")


def kubeadm_token_config(secrets: ClusterSecrets, release: Release, *, ttl: str,
                         description: str, host: str | None = None) -> RenderedFile:
    """/etc/gpuk8s/kubeadm-token.yaml: this run's bootstrap token with its TTL and description
    (`kubeadm token create --config`; kubeadm refuses --ttl/--description beside --config)."""
    if not ttl or not _TTL_RE.fullmatch(ttl):
        raise UsageError(f"bootstrap token TTL {ttl!r} is not a Go duration like 1h0m0s")
    content = render_template(
        "kubeadm/token.yaml.j2",
        placeholder_secrets=secrets.is_placeholder(),
        kubeadm_api_version=f"kubeadm.k8s.io/{_kubeadm_api(release)}",
        token=secrets.token.reveal(),
        description=description,
        ttl=ttl,
    )
    return RenderedFile(KUBEADM_TOKEN_CONFIG, content, 0o600, True, host, (secrets.token.reveal(),))
