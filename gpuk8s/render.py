"""Render every file gpuk8s puts on a host or applies to the cluster: pure, no network, no SSH.

Templates live in templates/ (Jinja2, StrictUndefined). User values reach a YAML template only
through the `yaml` filter, which emits a quoted scalar that round-trips through yaml.safe_load;
plain-text templates (apt/yum repositories) only take values through `line`, which refuses
control characters. Secrets go into file content only; RenderedFile.masked() shows them as ***.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import secrets as _secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import jinja2
import tomli_w
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from gpuk8s import versions
from gpuk8s.errors import UsageError
from gpuk8s.shell import Secret
from gpuk8s.versions import Release

def _templates_dir() -> Path:
    """templates/ of the source tree, or the copy installed as gpuk8s/templates."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "templates", here / "templates"):
        if (candidate / "kubeadm").is_dir():
            return candidate
    return here.parent / "templates"


TEMPLATES_DIR = _templates_dir()

KUBEADM_INIT_CONFIG = "/etc/gpuk8s/kubeadm-init.yaml"
KUBEADM_JOIN_CONFIG = "/etc/gpuk8s/kubeadm-join.yaml"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
SYSCTL_FILE = "/etc/sysctl.d/99-kubernetes.conf"
MODULES_FILE = "/etc/modules-load.d/kubernetes.conf"
APT_SOURCE_FILE = "/etc/apt/sources.list.d/kubernetes.list"
APT_KEYRING = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg"
YUM_REPO_FILE = "/etc/yum.repos.d/kubernetes.repo"
CALICO_INSTALLATION = "cluster/calico-installation.yaml"

API_SERVER_PORT = 6443
CONTROL_PLANE_TAINT_KEY = "node-role.kubernetes.io/control-plane"
PLACEHOLDER_CA_HASH = "sha256:" + "0" * 64
CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONF_DIR = "/etc/cni/net.d"

_TOKEN_RE = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")
_CERT_KEY_RE = re.compile(r"[0-9a-f]{64}")
_CA_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")
_CALICO_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
_MINOR_RE = re.compile(r"\d+\.\d+")
_IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*")

# Plugin ids of the CRI service in each containerd config version (and the v1 short name).
_CRI_V2 = "io.containerd.grpc.v1.cri"
_CRI_V3_RUNTIME = "io.containerd.cri.v1.runtime"
_CRI_V3_IMAGES = "io.containerd.cri.v1.images"
_CRI_PLUGIN_IDS = ("cri", _CRI_V2, _CRI_V3_RUNTIME, _CRI_V3_IMAGES)
_RUNC_TYPE = "io.containerd.runc.v2"

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


# --------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RenderedFile:
    """One rendered file: an absolute path on `host`, or "cluster/<name>.yaml" for kubectl."""

    path: str
    content: str
    mode: int = 0o644
    secret: bool = False
    host: str | None = None                       # None: a cluster manifest
    secret_values: tuple[str, ...] = field(default=(), compare=False)

    def masked(self) -> str:
        """The content with every secret value replaced by *** (for dry-run and logs)."""
        text = self.content
        for value in sorted(self.secret_values, key=len, reverse=True):
            if value:
                text = text.replace(value, "***")
        return text

    def __repr__(self) -> str:  # never show content: it may hold a token
        return (f"RenderedFile(path={self.path!r}, host={self.host!r}, mode={oct(self.mode)}, "
                f"secret={self.secret}, {len(self.content)} chars)")


@dataclass(frozen=True)
class ClusterSecrets:
    token: Secret            # bootstrap token [a-z0-9]{6}.[a-z0-9]{16}
    certificate_key: Secret  # 64 hex chars (AES-256 key for the uploaded certificates)

    def __post_init__(self) -> None:
        if not _TOKEN_RE.fullmatch(self.token.reveal()):
            raise ValueError("bootstrap token must match [a-z0-9]{6}.[a-z0-9]{16}")
        if not _CERT_KEY_RE.fullmatch(self.certificate_key.reveal()):
            raise ValueError("certificate key must be 64 lowercase hex characters")

    @staticmethod
    def generate() -> "ClusterSecrets":
        alphabet = string.ascii_lowercase + string.digits
        token_id = "".join(_secrets.choice(alphabet) for _ in range(6))
        token_secret = "".join(_secrets.choice(alphabet) for _ in range(16))
        return ClusterSecrets(Secret(f"{token_id}.{token_secret}"),
                              Secret(_secrets.token_hex(32)))

    @staticmethod
    def placeholder() -> "ClusterSecrets":
        """Fixed, obviously fake but well-formed values for `gpuk8s render` output."""
        return ClusterSecrets(Secret("gpuk8s.placeholder00000"), Secret("0" * 64))

    def is_placeholder(self) -> bool:
        return self == ClusterSecrets.placeholder()

    def values(self) -> tuple[str, ...]:
        return (self.token.reveal(), self.certificate_key.reveal())


# --------------------------------------------------------------------------------------------
# Jinja2 environment and filters
# --------------------------------------------------------------------------------------------

def yaml_scalar(value: Any) -> str:
    """A YAML scalar that yaml.safe_load reads back as exactly `value` (strings double-quoted)."""
    if isinstance(value, Secret):
        raise TypeError("reveal() a Secret explicitly and list it in RenderedFile.secret_values")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"the yaml filter takes a string, number, boolean or None, "
                        f"not {type(value).__name__}")
    out = yaml.dump(value, Dumper=yaml.SafeDumper, default_style='"', width=2 ** 31,
                    allow_unicode=True).rstrip("\n")
    if out.endswith("\n..."):
        out = out[:-4].rstrip("\n")
    if "\n" in out or yaml.safe_load(out) != value:
        raise UsageError(f"cannot write {value!r} as a single-line YAML value")
    return out


def plain_line(value: Any) -> str:
    """A value for a plain-text line (repository files): no control characters at all."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"the line filter takes a string or number, not {type(value).__name__}")
    text = str(value)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise UsageError(f"refusing to write {text!r}: it contains control characters")
    return text


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["yaml"] = yaml_scalar
    env.filters["line"] = plain_line
    return env


def render_template(name: str, **context: Any) -> str:
    """Render templates/<name> with the given values (undefined names are errors)."""
    return _environment().get_template(name).render(**context)


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------

def _calico_version(text: str) -> tuple[int, int, int]:
    m = _CALICO_RE.fullmatch(text.strip())
    if not m:
        raise UsageError(f"Calico version '{text}' is not a release like 3.31.3")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def release_for_inventory(inv: Any) -> Release:
    """The matrix row for the inventory's Kubernetes version, with its `versions:` overrides."""
    wanted = inv.cluster.kubernetes_version
    release = versions.release_for(wanted)
    if release is None:
        raise UsageError(f"Kubernetes {wanted} is not supported by this gpuk8s; supported "
                         f"minors: {', '.join(versions.supported_minors())}")
    over = inv.versions
    changes: dict[str, str] = {}
    if over.pause_image:
        if not _IMAGE_RE.fullmatch(over.pause_image):
            raise UsageError(f"versions.pause_image '{over.pause_image}' is not an image "
                             "reference like registry.k8s.io/pause:3.10")
        changes["pause_image"] = over.pause_image
    if over.calico:
        major, minor, patch = _calico_version(over.calico)
        changes["calico"] = f"{major}.{minor}.{patch}"
    if over.gpu_operator:
        changes["gpu_operator"] = over.gpu_operator
    if over.containerd:
        have = versions.parse_version(over.containerd)
        need = versions.parse_version(release.containerd_min)
        if have is None:
            raise UsageError(f"versions.containerd '{over.containerd}' is not a version "
                             "like 2.1 or 1.7.27")
        if need is not None and have[:2] < need[:2]:
            raise UsageError(f"versions.containerd {over.containerd} is too old for "
                             f"Kubernetes {release.minor}: it needs containerd "
                             f"{release.containerd_min} or newer")
        changes["containerd_default"] = over.containerd.lstrip("v")
    return dataclasses.replace(release, **changes) if changes else release


def kubernetes_patch(inv: Any, release: Release) -> str:
    """The exact Kubernetes version to install: the inventory's patch, else the release's."""
    v = versions.parse_version(inv.cluster.kubernetes_version)
    if v is not None and len(v) >= 3:
        return f"{v[0]}.{v[1]}.{v[2]}"
    return release.patch


# --------------------------------------------------------------------------------------------
# kubeadm
# --------------------------------------------------------------------------------------------

def _usable_ip(text: str | None) -> str | None:
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return None if ip.is_loopback or ip.is_unspecified else ip.compressed


def node_ip(host: Any) -> str | None:
    """The IP the kubelet and API server use: node_ip, else the address when it is an IP."""
    return _usable_ip(host.node_ip) or _usable_ip(host.address)


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def control_plane_endpoint(inv: Any) -> str:
    """The inventory's endpoint (port 6443 added when missing), else the first control plane.

    Without an endpoint the first control plane's node IP is used (the address the other
    nodes reach it on), falling back to its SSH address.
    """
    c = inv.cluster
    if c.control_plane_endpoint:
        return _join_host_port(c.endpoint_host, c.endpoint_port)
    first = inv.first_control_plane
    return _join_host_port(node_ip(first) or first.address, API_SERVER_PORT)


def _bind_port(inv: Any, host: Any) -> int:
    """6443, unless the endpoint names this very host (no load balancer): then its port."""
    c = inv.cluster
    if c.control_plane_endpoint and c.endpoint_host in {host.name, host.address, host.node_ip,
                                                        node_ip(host)}:
        return c.endpoint_port
    return API_SERVER_PORT


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
    api = _kubeadm_api(release)
    args: list[dict[str, str]] = []
    ip = node_ip(host)
    if ip:
        args.append({"name": "node-ip", "value": ip})
    labels = node_labels_for_kubelet(host)
    if labels:
        args.append({"name": "node-labels",
                     "value": ",".join(f"{k}={v}" for k, v in sorted(labels.items()))})
    return {
        "node_name": host.name,
        "kubelet_extra_args": args,
        "extra_args_as_map": api == "v1beta3",   # v1beta4 made extraArgs a list of name/value
        "taints": _taints(host),
        "control_plane_node": host.is_control_plane,
    }


def _kubeadm_api(release: Release) -> str:
    if release.kubeadm_api not in ("v1beta3", "v1beta4"):
        raise UsageError(f"kubeadm config API {release.kubeadm_api} is not supported by this "
                         "gpuk8s (it writes v1beta3 and v1beta4)")
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
        advertise_address=node_ip(host),
        bind_port=_bind_port(inv, host),
        cluster_name=c.name,
        kubernetes_version="v" + kubernetes_patch(inv, release),
        control_plane_endpoint=control_plane_endpoint(inv),
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
        control_plane_endpoint=control_plane_endpoint(inv),
        token=secrets.token.reveal(),
        ca_cert_hash=ca_cert_hash,
        control_plane=host.is_control_plane,
        advertise_address=node_ip(host),
        bind_port=_bind_port(inv, host),
        certificate_key=secrets.certificate_key.reveal(),
        **_registration(host, release),
    )
    values = secrets.values() if host.is_control_plane else (secrets.token.reveal(),)
    return RenderedFile(KUBEADM_JOIN_CONFIG, content, 0o600, True, host.name, values)


# --------------------------------------------------------------------------------------------
# containerd
# --------------------------------------------------------------------------------------------

def _containerd_version(text: str) -> tuple[int, ...]:
    v = versions.parse_version(text)
    if v is None:
        raise UsageError(f"containerd version '{text}' is not a version like 2.1.4")
    return v


def native_config_version(containerd_version: str) -> int:
    """The config file version a containerd writes by default: 2 for 1.x, 3 for 2.x."""
    major = _containerd_version(containerd_version)[0]
    if major < 1:
        raise UsageError(f"containerd {containerd_version} is too old")
    return 2 if major == 1 else 3


def shipped_containerd_default(containerd_version: str) -> str:
    """Our snapshot of `containerd config default` for that containerd major."""
    name = "default-1.7.toml" if native_config_version(containerd_version) == 2 \
        else "default-2.1.toml"
    return (TEMPLATES_DIR / "containerd" / name).read_text(encoding="utf-8")


def _table(parent: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The nested table parent[k1][k2]..., created where missing."""
    d = parent
    for k in keys:
        nxt = d.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            d[k] = nxt
        d = nxt
    return d


def containerd_config(default_toml: str, release: Release, containerd_version: str) -> str:
    """Edit `containerd config default` output for Kubernetes, in the containerd's native version.

    Sets SystemdCgroup = true in the runc options table of that version, the sandbox (pause)
    image, the CNI directories, and takes CRI out of disabled_plugins. A file that is not in
    the native version (Docker's containerd.io stub with `disabled_plugins = ["cri"]`, or a
    version 2 file for containerd 2.x) is replaced by our snapshot of the default for that major.
    """
    native = native_config_version(containerd_version)
    v = _containerd_version(containerd_version)
    try:
        data = tomllib.loads(default_toml)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"the containerd default configuration is not valid TOML: {e}") from None
    if int(data.get("version", 1)) != native:
        kept = {k: data[k] for k in ("root", "state", "imports") if k in data}
        data = tomllib.loads(shipped_containerd_default(containerd_version))
        data.update(kept)
    data["version"] = native
    data["disabled_plugins"] = [p for p in data.get("disabled_plugins") or []
                                if p not in _CRI_PLUGIN_IDS]
    plugins = _table(data, "plugins")
    if native == 2:
        cri = _table(plugins, _CRI_V2)
        cri["sandbox_image"] = release.pause_image
        runtime_plugin = cri
    else:
        _table(plugins, _CRI_V3_IMAGES, "pinned_images")["sandbox"] = release.pause_image
        runtime_plugin = _table(plugins, _CRI_V3_RUNTIME)
    runc = _table(runtime_plugin, "containerd", "runtimes", "runc")
    runc.setdefault("runtime_type", _RUNC_TYPE)
    _table(runc, "options")["SystemdCgroup"] = True
    cni = _table(runtime_plugin, "cni")
    if native == 3 and v[:2] >= (2, 1):
        cni["bin_dirs"] = [CNI_BIN_DIR]       # 2.1 replaced bin_dir with bin_dirs
        if "bin_dir" in cni:
            cni["bin_dir"] = ""
    else:
        cni["bin_dir"] = CNI_BIN_DIR
        cni.pop("bin_dirs", None)
    cni["conf_dir"] = CNI_CONF_DIR
    header = (f"# Generated by gpuk8s from `containerd config default` (containerd "
              f"{containerd_version}, config version {native}):\n"
              "# SystemdCgroup = true, sandbox image, CRI enabled, CNI in "
              f"{CNI_CONF_DIR} and {CNI_BIN_DIR}.\n")
    return header + tomli_w.dumps(data)


def containerd_config_file(inv: Any, release: Release, containerd_version: str,
                           default_toml: str | None = None,
                           host: str | None = None) -> RenderedFile:
    """/etc/containerd/config.toml; default_toml None uses the shipped snapshot for the major."""
    base = default_toml if default_toml is not None else \
        shipped_containerd_default(containerd_version)
    return RenderedFile(CONTAINERD_CONFIG, containerd_config(base, release, containerd_version),
                        host=host)


# --------------------------------------------------------------------------------------------
# Host files
# --------------------------------------------------------------------------------------------

def _pod_cidrs(inv: Any) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
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
    ipv6 = inv is not None and any(n.version == 6 for n in _pod_cidrs(inv))
    return RenderedFile(SYSCTL_FILE, render_template("host/99-kubernetes.conf.j2", ipv6=ipv6),
                        host=host)


def modules_file(host: str | None = None) -> RenderedFile:
    """/etc/modules-load.d/kubernetes.conf: overlay and br_netfilter at every boot."""
    return RenderedFile(MODULES_FILE, render_template("host/kubernetes-modules.conf.j2"),
                        host=host)


def os_family_of(os_id: str) -> str:
    """'ubuntu' -> 'debian', 'rocky' -> 'rhel'; UsageError for anything else."""
    fam = versions.OS_FAMILIES.get(os_id.lower())
    if fam is None:
        raise UsageError(f"no Kubernetes package repository for OS family '{os_id}' "
                         "(gpuk8s knows debian and rhel)")
    return fam


def package_repo_url(release: Release, family: str) -> str:
    """https://pkgs.k8s.io/core:/stable:/v1.XX/deb/ (or .../rpm/)."""
    if not _MINOR_RE.fullmatch(release.minor):
        raise UsageError(f"Kubernetes minor '{release.minor}' is not like 1.36")
    kind = "deb" if os_family_of(family) == "debian" else "rpm"
    return f"https://pkgs.k8s.io/core:/stable:/v{release.minor}/{kind}/"


def package_key_url(release: Release, family: str) -> str:
    """The repository signing key: Release.key (apt, to dearmor) or repomd.xml.key (yum)."""
    base = package_repo_url(release, family)
    return base + ("Release.key" if os_family_of(family) == "debian" else "repodata/repomd.xml.key")


def package_repo_file(inv: Any, release: Release, os_family: str,
                      host: str | None = None) -> RenderedFile:
    """The pkgs.k8s.io repository for this Kubernetes minor (apt list or yum .repo).

    os_family: "debian" or "rhel" (an OS id such as "ubuntu" or "rocky" is accepted too).
    """
    fam = os_family_of(os_family)
    url = package_repo_url(release, fam)
    if fam == "debian":
        content = render_template("packages/kubernetes.list.j2", minor=release.minor,
                                  keyring=APT_KEYRING, repo_url=url)
        return RenderedFile(APT_SOURCE_FILE, content, host=host)
    content = render_template("packages/kubernetes.repo.j2", minor=release.minor, repo_url=url,
                              key_url=package_key_url(release, fam))
    return RenderedFile(YUM_REPO_FILE, content, host=host)


# --------------------------------------------------------------------------------------------
# Calico
# --------------------------------------------------------------------------------------------

def calico_installation(inv: Any, release: Release) -> RenderedFile:
    """cluster/calico-installation.yaml: Installation (pool = podSubnet), APIServer, etc."""
    calico = _calico_version(release.calico)
    enc = inv.network.encapsulation
    pools = []
    for net in _pod_cidrs(inv):
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
    if (major, minor) < (3, 26):
        raise UsageError(f"Calico {release.calico} is older than 3.26, which gpuk8s installs")
    base = (f"https://raw.githubusercontent.com/projectcalico/calico/"
            f"v{major}.{minor}.{patch}/manifests/")
    if (major, minor) <= (3, 29):
        names = ["tigera-operator.yaml"]
    elif (major, minor) <= (3, 31):
        names = ["operator-crds.yaml", "tigera-operator.yaml"]
    else:
        names = ["v1_crd_projectcalico_org.yaml", "tigera-operator.yaml"]
    return [base + n for n in names]


# --------------------------------------------------------------------------------------------
# Everything, and writing it out
# --------------------------------------------------------------------------------------------

def render_all(inv: Any, os_families: str | Mapping[str, str] = "debian",
               secrets: ClusterSecrets | None = None,
               containerd_version: str | None = None) -> list[RenderedFile]:
    """Every file for every host plus the cluster manifests (placeholder secrets by default).

    os_families: one OS family for every host, or host name -> family ("debian" if missing).
    """
    release = release_for_inventory(inv)
    secrets = secrets or ClusterSecrets.placeholder()
    ctr_version = containerd_version or release.containerd_default
    first = inv.first_control_plane
    files: list[RenderedFile] = []
    for host in inv.hosts:
        fam = os_families if isinstance(os_families, str) else \
            os_families.get(host.name, "debian")
        files.append(modules_file(host.name))
        files.append(sysctl_file(inv, host.name))
        files.append(package_repo_file(inv, release, fam, host.name))
        files.append(containerd_config_file(inv, release, ctr_version, host=host.name))
        if host.name == first.name:
            files.append(kubeadm_init_config(inv, host, secrets, release))
        else:
            files.append(kubeadm_join_config(inv, host, secrets, release, PLACEHOLDER_CA_HASH))
    files.append(calico_installation(inv, release))
    return files


def _relative(path: str) -> Path:
    p = Path(path)
    rel = p.relative_to("/") if p.is_absolute() else p
    if any(part in ("..", "") for part in rel.parts) or not rel.parts:
        raise UsageError(f"refusing to write outside the output directory: {path!r}")
    return rel


def write_tree(files: Iterable[RenderedFile], out_dir: Path,
               host_of: Mapping[RenderedFile, str] | None = None) -> list[Path]:
    """Write host files under out_dir/<host>/<path> and manifests under out_dir/cluster/.

    host_of overrides a file's own `host`; secret files are written with mode 0600.
    """
    out_dir = Path(out_dir)
    written: list[Path] = []
    for f in files:
        host = (host_of or {}).get(f, f.host)
        if f.path.startswith("cluster/"):
            target = out_dir / _relative(f.path)
        elif host is None:
            raise UsageError(f"no host given for {f.path}")
        else:
            target = out_dir / _relative(host) / _relative(f.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o600 if f.secret else f.mode
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(f.content)
        os.chmod(target, mode)
        written.append(target)
    return written
