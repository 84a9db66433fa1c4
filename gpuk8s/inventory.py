"""The inventory: typed model of the YAML file, loaded and validated with file/line/field errors."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import math
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gpuk8s import gpu_models, versions
from gpuk8s.errors import InventoryError, Problem
from gpuk8s.shell import printable
from gpuk8s.versions import COMMAND_TIMEOUT, DEFAULT_KUBERNETES_MINOR, SSH_CONNECT_TIMEOUT, Release

ROLE_CONTROL_PLANE = "control-plane"
ROLE_WORKER = "worker"
API_SERVER_PORT = 6443          # kube-apiserver's port when the endpoint names none


def _usable_ip(text: str | None) -> str | None:
    """text as a normalised IP, unless it is not one or is loopback/unspecified."""
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return None if ip.is_loopback or ip.is_unspecified else ip.compressed


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _local_endpoint_host(host: "HostSpec") -> str | None:
    """For a `connection: local` host known only as localhost: this machine's own address
    (the source address of its default route), which other nodes can reach later; None when
    the host has a usable address or this machine has no route out."""
    if host.connection != "local" or _usable_ip(host.address) or not _is_loopback_name(host.address):
        return None
    return primary_address()


def is_loopback_name(text: str) -> bool:
    """localhost and its aliases, or a loopback address: no other machine can use it."""
    return _is_loopback_name(text)


def _is_loopback_name(text: str) -> bool:
    t = text.lower().rstrip(".")
    if t in ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"):
        return True
    try:
        return ipaddress.ip_address(t).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=1)
def primary_address() -> str | None:
    """This machine's default-route source address: a UDP socket "connected" to a documentation
    address (RFC 5737) sends nothing, but makes the kernel pick the route and source; None
    without a route out (the IPv6 route is tried second)."""
    for family, target in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((target, 9))
                addr = _usable_ip(s.getsockname()[0].split("%", 1)[0])
        except OSError:
            continue
        if addr:
            return addr
    return None


@dataclass(frozen=True)
class Bastion:
    address: str
    user: str | None = None
    port: int = 22
    identity_file: str | None = None


@dataclass(frozen=True)
class SSHSettings:
    """Connection settings for one host (the inventory's `ssh:` defaults merged with the host's)."""

    user: str = "root"
    port: int = 22
    identity_file: str | None = None      # None: ssh-agent and default keys
    known_hosts: str = "~/.ssh/known_hosts"
    accept_new_host_keys: bool = False
    sudo: bool = True
    bastion: Bastion | None = None
    connect_timeout: float = SSH_CONNECT_TIMEOUT
    command_timeout: float = COMMAND_TIMEOUT


@dataclass(frozen=True)
class Taint:
    key: str
    value: str | None
    effect: str          # NoSchedule | PreferNoSchedule | NoExecute

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


@dataclass(frozen=True)
class HostSpec:
    name: str
    address: str
    roles: tuple[str, ...]
    ssh: SSHSettings
    connection: str = "ssh"              # "ssh" or "local"
    node_ip: str | None = None           # Kubernetes node IP (multi-NIC hosts); default: address
    gpu: bool | None = None              # True: must have GPUs; False: never a GPU node; None: detect
    gpu_overrides: GPUOverrides | None = None  # a `gpu:` mapping: this node's GPU settings
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    line: int | None = None              # where the host starts in the inventory file

    @property
    def is_control_plane(self) -> bool:
        return ROLE_CONTROL_PLANE in self.roles

    @property
    def is_worker(self) -> bool:
        return ROLE_WORKER in self.roles

    @property
    def internal_ip(self) -> str | None:
        """The IP the kubelet and API server use: node_ip, else the address when it is an IP."""
        return _usable_ip(self.node_ip) or _usable_ip(self.address)


@dataclass(frozen=True)
class VIPSpec:
    """cluster.vip: the control-plane virtual IP kube-vip holds on one control plane (ARP)."""

    address: str          # normalised IP
    interface: str        # the control planes' interface in the VIP's subnet
    line: int | None = None


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    kubernetes_version: str = DEFAULT_KUBERNETES_MINOR
    control_plane_endpoint: str | None = None   # "host:port"; required with >1 control plane
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    dns_domain: str = "cluster.local"
    vip: VIPSpec | None = None                  # kube-vip on the control planes (docs/ha.md)

    @property
    def endpoint_host(self) -> str | None:
        """Host part of control_plane_endpoint (brackets removed for IPv6)."""
        if not self.control_plane_endpoint:
            return None
        ep = self.control_plane_endpoint
        if ep.startswith("["):
            return ep[1:ep.index("]")]
        return ep.rsplit(":", 1)[0] if ep.count(":") == 1 else ep

    @property
    def endpoint_port(self) -> int:
        ep = self.control_plane_endpoint or ""
        if ep.startswith("[") and "]:" in ep:
            return int(ep.rsplit(":", 1)[1])
        if ep.count(":") == 1:
            return int(ep.rsplit(":", 1)[1])
        return API_SERVER_PORT


@dataclass(frozen=True)
class Versions:
    """Overrides of the pinned versions in gpuk8s/versions.py (None: use the matrix default)."""

    containerd: str | None = None
    calico: str | None = None
    gpu_operator: str | None = None
    cuda_image: str | None = None
    pause_image: str | None = None
    helm: str | None = None
    helm_archive: str | None = None
    helm_sha256: str | None = None
    gpu_operator_chart: str | None = None
    kube_vip: str | None = None


@dataclass(frozen=True)
class NetworkSpec:
    encapsulation: str = "VXLANCrossSubnet"   # IPIP | VXLAN | IPIPCrossSubnet | VXLANCrossSubnet | None


@dataclass(frozen=True)
class TimeSlicing:
    replicas: int
    rename_by_default: bool = False


@dataclass(frozen=True)
class MIGSpec:
    strategy: str = "single"        # single | mixed
    config: str = "all-disabled"    # MIG Manager profile applied via nvidia.com/mig.config


@dataclass(frozen=True)
class GPUSpec:
    driver: str = "auto"            # auto | container | host
    driver_version: str | None = None
    time_slicing: TimeSlicing | None = None
    mig: MIGSpec | None = None
    smoke_test: bool = True
    model: str | None = None        # optional hint (gpu_models.MODELS name): checks MIG at load


@dataclass(frozen=True)
class GPUOverrides:
    """The keys a host's `gpu:` mapping gives (None: the cluster-level value applies)."""

    driver: str | None = None
    driver_version: str | None = None
    replicas: int | None = None
    rename_by_default: bool | None = None
    mig_strategy: str | None = None
    mig_config: str | None = None
    smoke_test: bool | None = None
    model: str | None = None

    def merged(self, base: GPUSpec) -> GPUSpec:
        """base (the cluster-level `gpu:`) with these overrides applied."""
        ts = base.time_slicing
        if self.replicas is not None or self.rename_by_default is not None:
            ts = TimeSlicing(
                self.replicas if self.replicas is not None else (ts.replicas if ts else 0),
                self.rename_by_default if self.rename_by_default is not None
                else (ts.rename_by_default if ts else False))
        mig = base.mig
        if self.mig_strategy is not None or self.mig_config is not None:
            mig = MIGSpec(self.mig_strategy or (mig.strategy if mig else MIGSpec.strategy),
                          self.mig_config or (mig.config if mig else MIGSpec.config))
        return dataclasses.replace(
            base,
            driver=self.driver or base.driver,
            driver_version=self.driver_version or base.driver_version,
            time_slicing=ts, mig=mig,
            smoke_test=base.smoke_test if self.smoke_test is None else self.smoke_test,
            model=self.model or base.model)


@dataclass(frozen=True)
class Inventory:
    path: str
    cluster: ClusterSpec
    hosts: tuple[HostSpec, ...]
    versions: Versions = field(default_factory=Versions)
    network: NetworkSpec = field(default_factory=NetworkSpec)
    gpu: GPUSpec = field(default_factory=GPUSpec)

    @property
    def control_planes(self) -> list[HostSpec]:
        return [h for h in self.hosts if h.is_control_plane]

    @property
    def workers(self) -> list[HostSpec]:
        return [h for h in self.hosts if h.is_worker]

    @property
    def first_control_plane(self) -> HostSpec:
        return self.control_planes[0]

    def host(self, name: str) -> HostSpec:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def gpu_for(self, host: HostSpec | str) -> GPUSpec:
        """The GPU settings of one node: the cluster-level `gpu:` with the host's mapping applied."""
        spec = self.host(host) if isinstance(host, str) else host
        return spec.gpu_overrides.merged(self.gpu) if spec.gpu_overrides else self.gpu

    @property
    def declared_gpu_hosts(self) -> list[HostSpec]:
        """Hosts the inventory says are GPU nodes (`gpu: true` or a mapping); offline render
        uses these, `up` uses what preflight found (gpu absent: detected)."""
        return [h for h in self.hosts if h.gpu]

    @functools.cached_property
    def release(self) -> Release:
        """The matrix row for cluster.kubernetes_version with its patch and `versions:` applied.

        Computed once, on first use; the loader has validated every override (with file and
        line), so only an Inventory built directly with bad values raises UsageError here.
        """
        return versions.resolve_release(self.cluster.kubernetes_version,
                                        **dataclasses.asdict(self.versions))

    @property
    def control_plane_endpoint(self) -> str:
        """host:port every node reaches the API on: the inventory's endpoint (port 6443 added
        when missing), else the first control plane's node IP (its SSH address without one)."""
        c = self.cluster
        if c.control_plane_endpoint:
            return _join_host_port(c.endpoint_host, c.endpoint_port)
        first = self.first_control_plane
        return _join_host_port(first.internal_ip or _local_endpoint_host(first) or first.address,
                               API_SERVER_PORT)

    def bind_port(self, host: HostSpec) -> int:
        """6443, unless the endpoint names this very host (no load balancer) or the VIP that
        kube-vip moves between the control planes (the leader's API server answers on it
        directly, with no forwarding): then the endpoint's port."""
        c = self.cluster
        if c.vip is not None and host.is_control_plane:
            return c.endpoint_port
        if c.control_plane_endpoint and c.endpoint_host in {
                host.name, host.address, host.node_ip, host.internal_ip}:
            return c.endpoint_port
        return API_SERVER_PORT


# --------------------------------------------------------------------------------------------
# Loader: YAML text -> node tree (yaml.compose, with line marks) -> validated dataclasses.
# Every problem is collected, with file, line and field path, and raised together at the end.
# --------------------------------------------------------------------------------------------

ROLES = (ROLE_CONTROL_PLANE, ROLE_WORKER)
CONNECTIONS = ("ssh", "local")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
ENCAPSULATIONS = ("IPIP", "VXLAN", "IPIPCrossSubnet", "VXLANCrossSubnet", "None")
GPU_DRIVERS = ("auto", "container", "host")
MIG_STRATEGIES = ("single", "mixed")

TOP_KEYS = ("cluster", "ssh", "versions", "network", "gpu", "hosts")
CLUSTER_KEYS = ("name", "kubernetes_version", "control_plane_endpoint", "pod_cidr",
                "service_cidr", "dns_domain", "vip")
VIP_KEYS = ("address", "interface")
SSH_KEYS = ("user", "port", "identity_file", "known_hosts", "accept_new_host_keys", "sudo",
            "bastion", "connect_timeout", "command_timeout")
BASTION_KEYS = ("address", "user", "port", "identity_file")
VERSIONS_KEYS = ("containerd", "calico", "gpu_operator", "cuda_image", "pause_image", "helm",
                 "helm_archive", "helm_sha256", "gpu_operator_chart", "kube_vip")
NETWORK_KEYS = ("encapsulation",)
GPU_KEYS = ("driver", "driver_version", "time_slicing", "mig", "smoke_test", "model")
TIME_SLICING_KEYS = ("replicas", "rename_by_default")
MIG_KEYS = ("strategy", "config")
HOST_KEYS = ("name", "address", "roles", "connection", "node_ip", "gpu", "ssh", "labels", "taints")
TAINT_KEYS = ("key", "value", "effect")


_T_NULL = "tag:yaml.org,2002:null"
_T_BOOL = "tag:yaml.org,2002:bool"
_T_INT = "tag:yaml.org,2002:int"
_T_FLOAT = "tag:yaml.org,2002:float"
_T_STR = "tag:yaml.org,2002:str"
_T_MERGE = "tag:yaml.org,2002:merge"

_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_HOSTNAME_LABEL_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?")
_LABEL_NAME_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_K8S_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")
_PLAIN_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# Bounds on what a document may make the loader build: an inventory is a few levels deep and a
# few thousand nodes; aliases (and merge keys) can make a few hundred bytes expand to billions.
MAX_DEPTH = 64
MAX_NODES = 200_000


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader's composer with the depth and the alias-expanded node count bounded.

    Each composed node's size counts its aliased subtrees in full (what a walk of the tree
    visits), so a "billion laughs" document stops at MAX_NODES, after linear work; an alias to
    a node still being composed (a recursive alias) is refused rather than made a cycle.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self._sizes: dict[int, int] = {}
        self._depth = 0

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self._sizes:
                raise yaml.composer.ComposerError(
                    None, None, f"alias *{event.anchor} refers to a node that contains it "
                                "(recursive alias)", event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if isinstance(node, MappingNode):
            size = 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        elif isinstance(node, SequenceNode):
            size = 1 + sum(self._sizes[id(v)] for v in node.value)
        else:
            size = 1
        if size > MAX_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"aliases expand this document to more than {MAX_NODES} nodes "
                            "(an alias or merge-key bomb?)", node.start_mark)
        self._sizes[id(node)] = size
        return node


class _Bad:
    """Marks a value that failed validation (its problem is already recorded)."""

    def __repr__(self) -> str:
        return "<invalid>"


_BAD: Any = _Bad()


# ---- pure validators (return an error message, or None when valid) -------------------------

def _dns_label_error(text: str) -> str | None:
    if len(text) > 63:
        return f"'{text}' is longer than 63 characters"
    if not _DNS_LABEL_RE.fullmatch(text):
        return (f"'{text}' is not a valid DNS-1123 label (lowercase letters, digits and '-', "
                "starting and ending with a letter or digit)")
    return None


def _dns_subdomain_error(text: str) -> str | None:
    if len(text) > 253:
        return f"'{text}' is longer than 253 characters"
    if not _DNS_SUBDOMAIN_RE.fullmatch(text) or any(len(p) > 63 for p in text.split(".")):
        return (f"'{text}' is not a valid DNS-1123 name (lowercase letters, digits, '-' and '.', "
                "each part starting and ending with a letter or digit, at most 63 characters)")
    return None


def is_hostname(text: str) -> bool:
    """RFC 1123 host name (letters of either case, digits, '-'; one trailing dot allowed)."""
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return False
    parts = name.split(".")
    if all(p.isdigit() for p in parts):       # 10.0.0.300 is a bad IP, not a host name
        return False
    return all(len(p) <= 63 and _HOSTNAME_LABEL_RE.fullmatch(p) for p in parts)


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_address(text: str) -> bool:
    """An IPv4 or IPv6 address or a host name."""
    return is_ip(text) or is_hostname(text)


def _address_key(text: str) -> str:
    """Normal form used to detect two hosts with the same address."""
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return text.lower().rstrip(".")


def _endpoint_error(text: str) -> str | None:
    """Checks host[:port] / [ipv6]:port / bare IPv6."""
    if "://" in text:
        return f"'{text}' must be host[:port] without a scheme (e.g. k8s-api.example.com:6443)"
    port = None
    if text.startswith("["):
        m = re.fullmatch(r"\[([^\]]+)\](?::([^:]*))?", text)
        if not m:
            return f"'{text}' is not host[:port] or [ipv6]:port"
        host, port = m.group(1), m.group(2)
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            return f"'{host}' in brackets is not an IPv6 address"
    elif text.count(":") > 1:
        host = text
        if not is_ip(host):
            return (f"'{text}' is not host[:port]; "
                    "write an IPv6 endpoint with a port as [address]:port")
    elif ":" in text:
        host, port = text.rsplit(":", 1)
    else:
        host = text
    if not is_address(host):
        return f"host '{host}' is not an IP address or hostname"
    if port is not None:
        if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
            return f"port '{port}' is not a number from 1 to 65535"
    return None


def _label_key_error(key: str) -> str | None:
    prefix, _, name = key.rpartition("/") if "/" in key else ("", "", key)
    if "/" in prefix:
        return f"label key '{key}' has more than one '/'"
    if "/" in key:
        if not prefix:
            return f"label key '{key}' has an empty prefix before '/'"
        err = _dns_subdomain_error(prefix)
        if err:
            return f"label key prefix {err}"
    if not name:
        return f"label key '{key}' has an empty name"
    if len(name) > 63:
        return f"label key name '{name}' is longer than 63 characters"
    if not _LABEL_NAME_RE.fullmatch(name):
        return (f"label key name '{name}' must be letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit")
    return None


def _label_value_error(value: str) -> str | None:
    if value == "":
        return None
    if len(value) > 63:
        return f"label value '{value}' is longer than 63 characters"
    if not _LABEL_NAME_RE.fullmatch(value):
        return (f"label value '{value}' must be letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit")
    return None


def _suggest(word: str, choices: tuple[str, ...] | list[str]) -> str | None:
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return lowered[word.lower()]
    m = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if m:
        return m[0]
    m = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[m[0]] if m else None


def _one_of_message(value: str, choices: tuple[str, ...]) -> str:
    msg = f"'{value}' is not one of {', '.join(choices)}"
    guess = _suggest(value, choices)
    return f"{msg} (did you mean '{guess}'?)" if guess else msg


def _join(path: str, key: str) -> str:
    if not _PLAIN_KEY_RE.fullmatch(key):
        key_text = '"' + key.replace('"', '\\"') + '"'
        return f"{path}[{key_text}]" if path else f"[{key_text}]"
    return f"{path}.{key}" if path else key


def _line(node: Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return {
        _T_NULL: "nothing (null)",
        _T_BOOL: "a boolean",
        _T_INT: "an integer",
        _T_FLOAT: "a number",
        _T_STR: "a string",
    }.get(node.tag, "a " + node.tag.rsplit(":", 1)[-1])


def _is_null(node: Node | None) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _T_NULL


# ---- node walker ---------------------------------------------------------------------------

class _Found(dict):
    """Known keys of a mapping -> value node, plus the line of each key."""

    def __init__(self) -> None:
        super().__init__()
        self.key_lines: dict[str, int | None] = {}


class _Walker:
    """Reads the composed node tree, recording each problem with its line and field path."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []
        self._constructor = SafeConstructor()

    def add(self, where: Node | int | None, path: str, message: str) -> None:
        """Record a problem; values quoted in it are escaped, so none can forge another line."""
        line = where if isinstance(where, int) or where is None else _line(where)
        self.problems.append(Problem(self.file, line, printable(path), printable(message)))

    # -- mappings

    def _pairs(self, node: MappingNode, path: str) -> list[tuple[Node, Node]]:
        """Key/value pairs, with YAML merge keys (<<: *anchor) expanded; explicit keys win."""
        own: list[tuple[Node, Node]] = []
        merged: list[tuple[Node, Node]] = []
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.tag == _T_MERGE:
                sources = v.value if isinstance(v, SequenceNode) else [v]
                for src in sources:
                    if isinstance(src, MappingNode):
                        merged.extend(self._pairs(src, path))
                    else:
                        self.add(src, path,
                                 f"a merge key (<<) needs a mapping, got {_describe(src)}")
            else:
                own.append((k, v))
        own_keys = {k.value for k, _ in own if isinstance(k, ScalarNode)}
        seen: set[str] = set()
        kept_merged = []
        for k, v in merged:
            if isinstance(k, ScalarNode) and (k.value in own_keys or k.value in seen):
                continue
            seen.add(getattr(k, "value", ""))
            kept_merged.append((k, v))
        return kept_merged + own

    def entries(self, node: Node, path: str) -> list[tuple[str, Node, Node]] | None:
        """(key, key node, value node) of a mapping, duplicates reported; None if not a mapping."""
        if not isinstance(node, MappingNode):
            self.add(node, path, f"expected a mapping, got {_describe(node)}")
            return None
        out: list[tuple[str, Node, Node]] = []
        first_line: dict[str, int | None] = {}
        for k, v in self._pairs(node, path):
            if not isinstance(k, ScalarNode) or k.tag == _T_NULL:
                self.add(k, path, f"keys must be plain names, got {_describe(k)}")
                continue
            key = k.value
            if key in first_line:
                self.add(k, _join(path, key), f"duplicate key (first at line {first_line[key]})")
                continue
            first_line[key] = _line(k)
            out.append((key, k, v))
        return out

    def mapping(self, node: Node | None, path: str, known: tuple[str, ...],
                required: tuple[str, ...] = (), line: int | None = None) -> _Found | None:
        """Known keys of a mapping -> value node; unknown and missing keys are reported.

        A null node (an empty section) counts as an empty mapping; `line` is where to report
        missing keys in that case.
        """
        found = _Found()
        if node is None or _is_null(node):
            at: int | None = line if node is None or line is not None else _line(node)
        else:
            items = self.entries(node, path)
            if items is None:
                return None
            at = _line(node)
            for key, k, v in items:
                if key not in known:
                    guess = _suggest(key, known)
                    msg = (f"unknown key (did you mean '{guess}'?)" if guess else
                           f"unknown key (expected one of: {', '.join(known)})")
                    self.add(k, _join(path, key), msg)
                    continue
                found[key] = v
                found.key_lines[key] = _line(k)
        for key in required:
            if key not in found or _is_null(found[key]):
                where = found[key] if key in found else at
                self.add(where, _join(path, key), "required")
        return found

    # -- scalars

    def string(self, node: Node, path: str, *, allow_empty: bool = False) -> str:
        """A scalar as text; numbers keep their raw spelling ('1.30' stays '1.30')."""
        if not isinstance(node, ScalarNode) or node.tag in (_T_NULL, _T_BOOL):
            hint = ""
            if isinstance(node, ScalarNode) and node.tag == _T_BOOL:
                hint = f' (quote it: "{node.value}")'
            self.add(node, path, f"expected a string, got {_describe(node)}{hint}")
            return _BAD
        if not allow_empty and node.value.strip() == "":
            self.add(node, path, "must not be empty")
            return _BAD
        if (bad := _CONTROL_RE.search(node.value)) is not None:
            # Every string may reach a file or a command line: no newline, tab, ESC, NUL...
            self.add(node, path, f"must not contain control characters (found {printable(bad.group())} "
                                 f"in '{node.value}')")
            return _BAD
        return node.value

    def integer(self, node: Node, path: str, lo: int | None = None, hi: int | None = None) -> int:
        if not isinstance(node, ScalarNode) or node.tag != _T_INT:
            self.add(node, path, f"expected an integer, got {_describe(node)}")
            return _BAD
        try:   # the YAML int pattern lets through '0x_', '0b_' and ints of 5000 digits
            value = self._constructor.construct_yaml_int(node)
        except ValueError:
            self.add(node, path, f"'{node.value}' is not an integer")
            return _BAD
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            rng = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
            self.add(node, path, f"{value} is out of range (must be {rng})")
            return _BAD
        return value

    def seconds(self, node: Node, path: str) -> float:
        if not isinstance(node, ScalarNode) or node.tag not in (_T_INT, _T_FLOAT):
            self.add(node, path, f"expected a number of seconds, got {_describe(node)}")
            return _BAD
        try:
            value = float(self._constructor.construct_yaml_float(node)) if node.tag == _T_FLOAT \
                else float(self._constructor.construct_yaml_int(node))
        except (ValueError, OverflowError):
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            self.add(node, path, f"{node.value} must be a number of seconds greater than 0")
            return _BAD
        return value

    def boolean(self, node: Node, path: str) -> bool:
        if not isinstance(node, ScalarNode) or node.tag != _T_BOOL:
            self.add(node, path, f"expected true or false, got {_describe(node)}")
            return _BAD
        value = node.value.lower()
        if value not in SafeConstructor.bool_values:   # an explicit !!bool on other text
            self.add(node, path, f"expected true or false, got '{node.value}'")
            return _BAD
        return SafeConstructor.bool_values[value]

    def choice(self, node: Node, path: str, choices: tuple[str, ...]) -> str:
        if isinstance(node, ScalarNode) and node.tag == _T_NULL and "None" in choices:
            self.add(node, path, f"expected one of {', '.join(choices)}, got null "
                                 '(write None, without quotes or as "None", to turn it off)')
            return _BAD
        value = self.string(node, path)
        if value is _BAD:
            return _BAD
        if value not in choices:
            self.add(node, path, _one_of_message(value, choices))
            return _BAD
        return value

    def address(self, node: Node, path: str) -> str:
        value = self.string(node, path)
        if value is not _BAD and not is_address(value):
            self.add(node, path, f"'{value}' is not an IP address or hostname")
            return _BAD
        return value

    def ip(self, node: Node, path: str) -> str:
        value = self.string(node, path)
        if value is not _BAD and not is_ip(value):
            self.add(node, path, f"'{value}' is not an IP address")
            return _BAD
        return value

    def check(self, node: Node, path: str, value: str,
              validator: Callable[[str], str | None]) -> str:
        if value is _BAD:
            return _BAD
        err = validator(value)
        if err:
            self.add(node, path, err)
            return _BAD
        return value


def _given(found: dict[str, Node], key: str) -> Node | None:
    """The value node for key, or None when absent or null."""
    node = found.get(key)
    return None if node is None or _is_null(node) else node


def _ok(*values: Any) -> bool:
    return all(v is not _BAD for v in values)


# ---- sections ------------------------------------------------------------------------------

def _cluster(w: _Walker, node: Node | None,
             line: int | None) -> tuple[ClusterSpec, int | None, bool]:
    """The cluster section, the line to report cluster-wide problems at, endpoint given?"""
    f = w.mapping(node, "cluster", CLUSTER_KEYS, required=("name",), line=line)
    at = line if node is None or _is_null(node) else _line(node)
    if f is None:
        return ClusterSpec(name=""), at, False
    endpoint_given = _given(f, "control_plane_endpoint") is not None
    kw: dict[str, Any] = {}
    if (n := _given(f, "name")) is not None:
        kw["name"] = w.check(n, "cluster.name", w.string(n, "cluster.name"), _dns_label_error)
    if (n := _given(f, "kubernetes_version")) is not None:
        kw["kubernetes_version"] = _kubernetes_version(w, n)
    if (n := _given(f, "control_plane_endpoint")) is not None:
        path = "cluster.control_plane_endpoint"
        kw["control_plane_endpoint"] = w.check(n, path, w.string(n, path), _endpoint_error)
    nets = {}
    for key in ("pod_cidr", "service_cidr"):
        if (n := _given(f, key)) is not None:
            path = f"cluster.{key}"
            text = w.string(n, path)
            if text is _BAD:
                continue
            try:
                net = ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                w.add(n, path, f"'{text}' is not a network in CIDR notation (e.g. 10.244.0.0/16)")
                continue
            nets[key] = (n, net)
            kw[key] = str(net)
    pod = nets.get("pod_cidr", (None, ipaddress.ip_network(ClusterSpec.pod_cidr)))
    svc = nets.get("service_cidr", (None, ipaddress.ip_network(ClusterSpec.service_cidr)))
    if pod[1].version == svc[1].version and pod[1].overlaps(svc[1]):
        where = svc[0] or pod[0] or at
        path = "cluster.service_cidr" if svc[0] is not None else "cluster.pod_cidr"
        w.add(where, path, f"pod_cidr {pod[1]} and service_cidr {svc[1]} overlap")
    if (n := _given(f, "dns_domain")) is not None:
        kw["dns_domain"] = w.check(n, "cluster.dns_domain", w.string(n, "cluster.dns_domain"),
                                   _dns_subdomain_error)
    if (n := _given(f, "vip")) is not None:
        kw["vip"] = _vip(w, n, [pod[1], svc[1]])
        endpoint_given = True        # the VIP is the endpoint (judged above when invalid)
        if _ok(kw["vip"]):
            ep_node = _given(f, "control_plane_endpoint")
            ep = kw.get("control_plane_endpoint")
            if ep is None:
                kw["control_plane_endpoint"] = _join_host_port(kw["vip"].address, API_SERVER_PORT)
            elif _ok(ep):
                host = ClusterSpec(name="x", control_plane_endpoint=ep).endpoint_host
                if is_ip(host) and _address_key(host) != kw["vip"].address:
                    w.add(ep_node, "cluster.control_plane_endpoint",
                          f"'{ep}' names {host}, not the VIP {kw['vip'].address} (cluster.vip."
                          "address): with a VIP every node reaches the API servers through it; "
                          "drop control_plane_endpoint (it defaults to "
                          f"{_join_host_port(kw['vip'].address, API_SERVER_PORT)}) or make them "
                          "agree")
    if not _ok(*kw.values()) or "name" not in kw:
        return ClusterSpec(name=""), at, endpoint_given
    return ClusterSpec(**kw), at, endpoint_given


# Linux interface names (net/core/dev.c dev_valid_name): 1-15 bytes, not "." or "..", no '/',
# ':' or whitespace. gpuk8s also refuses the rest of the shell and YAML specials.
_IFACE_RE = re.compile(r"[A-Za-z0-9_.@-]{1,15}")


def _interface_error(text: str) -> str | None:
    if text in (".", "..") or not _IFACE_RE.fullmatch(text):
        return (f"'{text}' is not a network interface name (1 to 15 letters, digits, '-', '_', "
                "'.' or '@', as `ip -o link` shows them, e.g. eth0 or bond0.100)")
    if text == "lo":
        return ("'lo' cannot hold the VIP for other machines: ARP answers only on a real "
                "interface; give the control planes' interface in the VIP's subnet")
    return None


def _vip_address_error(text: str, cidrs: list[Any]) -> str | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return (f"'{text}' is not an IP address: the VIP is a free address in the control "
                "planes' subnet (e.g. 192.168.10.100)")
    kind = ("loopback" if ip.is_loopback else "unspecified" if ip.is_unspecified else
            "multicast" if ip.is_multicast else "link-local" if ip.is_link_local else
            "reserved" if ip.is_reserved else None)
    if kind:
        return f"{ip} is a {kind} address: the VIP must be a free unicast address in the " \
               "control planes' subnet"
    for net in cidrs:
        if net.version == ip.version and ip in net:
            return f"{ip} lies inside the cluster's network {net} (pod_cidr/service_cidr)"
    return None


def _vip(w: _Walker, node: Node, cidrs: list[Any]) -> VIPSpec:
    f = w.mapping(node, "cluster.vip", VIP_KEYS, required=("address", "interface"))
    if f is None:
        return _BAD
    address = interface = None
    if (n := _given(f, "address")) is not None:
        text = w.string(n, "cluster.vip.address")
        address = w.check(n, "cluster.vip.address", text,
                          functools.partial(_vip_address_error, cidrs=cidrs))
        if _ok(address):
            address = ipaddress.ip_address(address.strip()).compressed
    if (n := _given(f, "interface")) is not None:
        interface = w.check(n, "cluster.vip.interface", w.string(n, "cluster.vip.interface"),
                            _interface_error)
    if address is None or interface is None or not _ok(address, interface):
        return _BAD
    return VIPSpec(address=address, interface=interface, line=_line(node))


def _check_vip(w: _Walker, vip: VIPSpec | None, drafts: list[_HostDraft]) -> None:
    """The VIP belongs to no host: kube-vip adds it to the leader, so a host that already has it
    would answer ARP for it too (two machines, one address)."""
    if vip is None:
        return
    for d in drafts:
        spec = d.spec
        if spec is None:
            continue
        for key, value in (("address", spec.address), ("node_ip", spec.node_ip)):
            if value and is_ip(value) and _address_key(value) == vip.address:
                w.add(d.found.get(key), f"hosts[{d.index}].{key}",
                      f"{value} is the VIP (cluster.vip.address, line {vip.line}): the VIP must "
                      "be a free address that no host has; kube-vip adds it to the leading "
                      "control plane")


def _kubernetes_version(w: _Walker, node: Node) -> str:
    path = "cluster.kubernetes_version"
    # The raw scalar text, so that an unquoted 1.30 is "1.30", not the float 1.3.
    raw = w.string(node, path)
    if raw is _BAD:
        return _BAD
    m = _K8S_VERSION_RE.fullmatch(raw.strip())
    supported = ", ".join(versions.supported_minors())
    if not m:
        w.add(node, path, f"'{raw}' is not a Kubernetes version like 1.36 or 1.36.2 "
                          f"(supported minors: {supported})")
        return _BAD
    minor = f"{m.group(1)}.{m.group(2)}"
    if minor not in versions.supported_minors():
        w.add(node, path, f"Kubernetes {minor} is not supported (supported minors: {supported})")
        return _BAD
    return raw.strip().lstrip("v")


def _bastion(w: _Walker, node: Node, path: str) -> Bastion | None:
    f = w.mapping(node, path, BASTION_KEYS, required=("address",))
    if f is None:
        return _BAD
    kw: dict[str, Any] = {}
    if (n := _given(f, "address")) is not None:
        kw["address"] = w.address(n, f"{path}.address")
    if (n := _given(f, "user")) is not None:
        kw["user"] = w.string(n, f"{path}.user")
    if (n := _given(f, "port")) is not None:
        kw["port"] = w.integer(n, f"{path}.port", 1, 65535)
    if (n := _given(f, "identity_file")) is not None:
        kw["identity_file"] = w.string(n, f"{path}.identity_file")
    return Bastion(**kw) if "address" in kw and _ok(*kw.values()) else _BAD


def _ssh_fields(w: _Walker, node: Node | None, path: str) -> dict[str, Any]:
    """The keys given in an ssh: block, validated (only these override the defaults)."""
    f = w.mapping(node, path, SSH_KEYS)
    if not f:
        return {}
    out: dict[str, Any] = {}
    for key, n in f.items():
        p = f"{path}.{key}"
        if _is_null(n):
            if key in ("identity_file", "bastion"):
                out[key] = None          # explicit "none": ssh-agent / direct connection
            continue
        if key in ("user", "identity_file", "known_hosts"):
            out[key] = w.string(n, p)
        elif key == "port":
            out[key] = w.integer(n, p, 1, 65535)
        elif key in ("accept_new_host_keys", "sudo"):
            out[key] = w.boolean(n, p)
        elif key in ("connect_timeout", "command_timeout"):
            out[key] = w.seconds(n, p)
        elif key == "bastion":
            out[key] = _bastion(w, n, p)
    return out


def _versions(w: _Walker, node: Node | None, release: Release | None) -> Versions:
    """The overrides, each checked for the cluster's release (None: the cluster is invalid)."""
    f = w.mapping(node, "versions", VERSIONS_KEYS)
    if not f:
        return Versions()
    kw: dict[str, str] = {}
    for key, n in f.items():
        if _is_null(n):
            continue
        path = f"versions.{key}"
        kw[key] = w.check(n, path, w.string(n, path),
                          functools.partial(versions.override_error, key, release=release))
    if _ok(*kw.values()):
        for key, err in versions.combined_override_errors(kw).items():
            w.add(f[key], f"versions.{key}", err)
            kw[key] = _BAD
    return Versions(**kw) if _ok(*kw.values()) else Versions()


def _network(w: _Walker, node: Node | None) -> NetworkSpec:
    f = w.mapping(node, "network", NETWORK_KEYS)
    if not f or "encapsulation" not in f:
        return NetworkSpec()
    enc = w.choice(f["encapsulation"], "network.encapsulation", ENCAPSULATIONS)
    return NetworkSpec(encapsulation=enc) if _ok(enc) else NetworkSpec()


def _gpu_fields(w: _Walker, node: Node | None, path: str,
                cluster_level: bool) -> tuple[dict[str, Any], dict[str, Node]] | None:
    """The keys a `gpu:` mapping gives, validated -> (values, value nodes); None: not a mapping.

    Values use GPUOverrides' names (replicas, mig_config...); `time_slicing` alone marks a given
    time_slicing block. At cluster level time_slicing needs its replicas; a host's block may take
    them from the cluster's.
    """
    f = w.mapping(node, path, GPU_KEYS)
    if f is None:
        return None
    out: dict[str, Any] = {}
    nodes: dict[str, Node] = {}
    if (n := _given(f, "driver")) is not None:
        out["driver"], nodes["driver"] = w.choice(n, f"{path}.driver", GPU_DRIVERS), n
    if (n := _given(f, "driver_version")) is not None:
        out["driver_version"] = w.check(n, f"{path}.driver_version",
                                        w.string(n, f"{path}.driver_version"), _driver_version_error)
        nodes["driver_version"] = n
    if (n := _given(f, "smoke_test")) is not None:
        out["smoke_test"], nodes["smoke_test"] = w.boolean(n, f"{path}.smoke_test"), n
    if (n := _given(f, "model")) is not None:
        out["model"] = w.check(n, f"{path}.model", w.string(n, f"{path}.model"), _gpu_model_error)
        if out["model"] is not _BAD:
            out["model"] = gpu_models.model_by_name(out["model"]).name
        nodes["model"] = n
    if (n := _given(f, "time_slicing")) is not None:
        nodes["time_slicing"] = n
        ts = w.mapping(n, f"{path}.time_slicing", TIME_SLICING_KEYS,
                       required=("replicas",) if cluster_level else ())
        out["time_slicing"] = True if ts is not None else _BAD
        if ts is not None:
            if (r := _given(ts, "replicas")) is not None:
                out["replicas"] = w.integer(r, f"{path}.time_slicing.replicas", lo=2)
                nodes["replicas"] = r
            if (r := _given(ts, "rename_by_default")) is not None:
                out["rename_by_default"] = w.boolean(r, f"{path}.time_slicing.rename_by_default")
    if (n := _given(f, "mig")) is not None:
        nodes["mig"] = n
        mf = w.mapping(n, f"{path}.mig", MIG_KEYS)
        if mf is None:
            out["mig"] = _BAD
        else:
            out["mig"] = True
            if (s := _given(mf, "strategy")) is not None:
                out["mig_strategy"] = w.choice(s, f"{path}.mig.strategy", MIG_STRATEGIES)
                nodes["mig_strategy"] = s
            if (c := _given(mf, "config")) is not None:
                out["mig_config"] = w.check(c, f"{path}.mig.config", w.string(c, f"{path}.mig.config"),
                                            gpu_models.mig_config_syntax_error)
                nodes["mig_config"] = c
    return out, nodes


_DRIVER_VERSION_RE = re.compile(r"\d{3}(?:\.\d+){0,2}")


def _driver_version_error(text: str) -> str | None:
    if _DRIVER_VERSION_RE.fullmatch(text.strip()):
        return None
    return (f"'{text}' is not an NVIDIA driver version like 595.91.07 "
            "(or a branch like 580 with precompiled drivers)")


def _gpu_model_error(text: str) -> str | None:
    if gpu_models.model_by_name(text):
        return None
    names = gpu_models.model_names()
    guess = _suggest(text, names)
    hint = f" (did you mean '{guess}'?)" if guess else f" (known: {', '.join(names)})"
    return f"'{text}' is not a GPU model gpuk8s knows{hint}"


def _gpu(w: _Walker, node: Node | None) -> tuple[GPUSpec, dict[str, Node]]:
    """The cluster-level `gpu:` section and the value nodes of the keys it gives."""
    got = _gpu_fields(w, node, "gpu", cluster_level=True)
    if not got or not _ok(*got[0].values()):
        return GPUSpec(), (got[1] if got else {})
    v, nodes = got
    kw: dict[str, Any] = {k: v[k] for k in ("driver", "driver_version", "smoke_test", "model")
                          if k in v}
    if "time_slicing" in v and "replicas" in v:
        kw["time_slicing"] = TimeSlicing(v["replicas"], v.get("rename_by_default", False))
    if "mig" in v:
        mkw = {}
        if "mig_strategy" in v:
            mkw["strategy"] = v["mig_strategy"]
        if "mig_config" in v:
            mkw["config"] = v["mig_config"]
        kw["mig"] = MIGSpec(**mkw)
    return GPUSpec(**kw), nodes


def _host_gpu(w: _Walker, node: Node, path: str) -> tuple[bool | None, GPUOverrides | None]:
    """A host's `gpu:`: true/false, or a mapping (a GPU node with its own settings)."""
    if not isinstance(node, MappingNode):
        return w.boolean(node, path), None
    got = _gpu_fields(w, node, path, cluster_level=False)
    if not got or not _ok(*got[0].values()):
        return _BAD, None
    v = {k: val for k, val in got[0].items() if k not in ("time_slicing", "mig")}
    return True, GPUOverrides(**v)


def _check_gpu(w: _Walker, gpu: GPUSpec, gpu_nodes: dict[str, Node],
               drafts: list[_HostDraft]) -> None:
    """What needs the cluster-level and the host-level `gpu:` together, per GPU node."""
    cluster_at = {k: gpu_nodes.get(k) for k in ("mig_config", "model", "mig")}

    def mig_problem(spec: GPUSpec, where: Node | None, path: str) -> None:
        if spec.mig is None or not spec.model:
            return
        model = gpu_models.model_by_name(spec.model)
        err = model and gpu_models.mig_config_error(spec.mig.config, model)
        if err:
            w.add(where, path, err)

    mig_problem(gpu, cluster_at["mig_config"] or cluster_at["mig"] or cluster_at["model"],
                "gpu.mig.config")
    for d in drafts:
        spec = d.spec
        if spec is None or spec.gpu_overrides is None:
            continue
        o, path = spec.gpu_overrides, f"hosts[{d.index}].gpu"
        gnode = d.found.get("gpu")
        sub = {key: n for key, n in _gpu_value_nodes(gnode).items()}
        if (o.replicas is None and o.rename_by_default is not None
                and gpu.time_slicing is None):
            w.add(sub.get("time_slicing", gnode), f"{path}.time_slicing.replicas",
                  "required (the cluster-level gpu.time_slicing gives none)")
        if o.mig_strategy is not None and o.mig_strategy != (gpu.mig or MIGSpec()).strategy:
            w.add(sub.get("mig_strategy", gnode), f"{path}.mig.strategy",
                  f"'{o.mig_strategy}' differs from the cluster's "
                  f"'{(gpu.mig or MIGSpec()).strategy}': the GPU Operator has one MIG strategy "
                  "per cluster (ClusterPolicy mig.strategy); set gpu.mig.strategy instead")
        if o.driver_version is not None and o.driver_version != gpu.driver_version:
            w.add(sub.get("driver_version", gnode), f"{path}.driver_version",
                  "one driver version per cluster (ClusterPolicy driver.version): set "
                  "gpu.driver_version instead, or gpu: {driver: host} with the driver installed "
                  "on this host")
        merged = o.merged(gpu)
        if o.mig_config is not None or o.model is not None or o.mig_strategy is not None:
            where = sub.get("mig_config") or sub.get("model") or gnode
            field_path = f"{path}.mig.config" if "mig_config" in sub else \
                f"{path}.model" if "model" in sub else path
            mig_problem(merged, where, field_path)


def _gpu_value_nodes(node: Node | None) -> dict[str, Node]:
    """key -> value node of a host's gpu: mapping (mig/time_slicing keys flattened)."""
    out: dict[str, Node] = {}
    if not isinstance(node, MappingNode):
        return out
    for k, v in node.value:
        if not isinstance(k, ScalarNode):
            continue
        out[k.value] = v
        if k.value in ("mig", "time_slicing") and isinstance(v, MappingNode):
            for k2, v2 in v.value:
                if isinstance(k2, ScalarNode):
                    out[{"strategy": "mig_strategy", "config": "mig_config"}.get(k2.value, k2.value)
                        if k.value == "mig" else k2.value] = v2
    return out


def _labels(w: _Walker, node: Node, path: str) -> dict[str, str]:
    items = w.entries(node, path)
    if items is None:
        return _BAD
    out: dict[str, str] = {}
    for key, k, v in items:
        p = _join(path, key)
        err = _label_key_error(key)
        if err:
            w.add(k, p, err)
            continue
        if _is_null(v):
            value = ""
        elif isinstance(v, ScalarNode):
            value = v.value           # raw text: true -> "true", 4 -> "4"
        else:
            w.add(v, p, f"expected a label value (text), got {_describe(v)}")
            continue
        err = _label_value_error(value)
        if err:
            w.add(v, p, err)
            continue
        out[key] = value
    return out


def _taint(w: _Walker, node: Node, path: str) -> Taint:
    if isinstance(node, MappingNode):
        f = w.mapping(node, path, TAINT_KEYS, required=("key", "effect"))
        if f is None:
            return _BAD
        key = value = effect = None
        if (n := _given(f, "key")) is not None:
            key = w.check(n, f"{path}.key", w.string(n, f"{path}.key"), _label_key_error)
        if (n := _given(f, "value")) is not None:
            value = w.check(n, f"{path}.value", w.string(n, f"{path}.value", allow_empty=True),
                            _label_value_error) or None
        if (n := _given(f, "effect")) is not None:
            effect = w.choice(n, f"{path}.effect", TAINT_EFFECTS)
        if key is None or effect is None or not _ok(key, value, effect):
            return _BAD
        return Taint(key, value, effect)
    text = w.string(node, path)
    if text is _BAD:
        return _BAD
    if ":" not in text:
        w.add(node, path, f"'{text}' is not key[=value]:Effect "
                          f"(Effect is one of {', '.join(TAINT_EFFECTS)})")
        return _BAD
    left, effect = text.rsplit(":", 1)
    key, _, value = left.partition("=")
    for err in (_label_key_error(key), _label_value_error(value)):
        if err:
            w.add(node, path, err)
            return _BAD
    if effect not in TAINT_EFFECTS:
        w.add(node, path, f"taint effect {_one_of_message(effect, TAINT_EFFECTS)}")
        return _BAD
    return Taint(key, value or None, effect)


def _roles(w: _Walker, node: Node, path: str) -> tuple[str, ...]:
    if not isinstance(node, SequenceNode):
        w.add(node, path, f"expected a list of roles (e.g. [control-plane, worker]), "
                          f"got {_describe(node)}")
        return _BAD
    if not node.value:
        w.add(node, path, f"must list at least one role ({', '.join(ROLES)})")
        return _BAD
    roles: list[str] = []
    bad = False
    for i, item in enumerate(node.value):
        role = w.choice(item, f"{path}[{i}]", ROLES)
        if role is _BAD:
            bad = True
        elif role in roles:
            w.add(item, f"{path}[{i}]", f"duplicate role '{role}'")
            bad = True
        else:
            roles.append(role)
    return _BAD if bad else tuple(roles)


@dataclass
class _HostDraft:
    index: int
    node: Node
    found: dict[str, Node]
    name: str | None
    address: str | None
    roles: tuple[str, ...] | None
    spec: HostSpec | None


def _host(w: _Walker, i: int, node: Node, ssh_defaults: dict[str, Any]) -> _HostDraft:
    path = f"hosts[{i}]"
    before = len(w.problems)
    if _is_null(node):
        w.add(node, path, "empty host entry (expected a mapping with name, address and roles)")
        return _HostDraft(i, node, {}, None, None, None, None)
    f = w.mapping(node, path, HOST_KEYS, required=("name", "address", "roles"))
    if f is None:
        return _HostDraft(i, node, {}, None, None, None, None)
    name = address = roles = None
    if (n := _given(f, "name")) is not None:
        name = w.check(n, f"{path}.name", w.string(n, f"{path}.name"), _dns_subdomain_error)
    if (n := _given(f, "address")) is not None:
        address = w.address(n, f"{path}.address")
    if (n := _given(f, "roles")) is not None:
        roles = _roles(w, n, f"{path}.roles")
    kw: dict[str, Any] = {}
    if (n := _given(f, "connection")) is not None:
        kw["connection"] = w.choice(n, f"{path}.connection", CONNECTIONS)
    if (n := _given(f, "node_ip")) is not None:
        kw["node_ip"] = w.ip(n, f"{path}.node_ip")
    if (n := _given(f, "gpu")) is not None:
        kw["gpu"], overrides = _host_gpu(w, n, f"{path}.gpu")
        if overrides is not None:
            kw["gpu_overrides"] = overrides
    if (n := _given(f, "labels")) is not None:
        kw["labels"] = _labels(w, n, f"{path}.labels")
    if (n := _given(f, "taints")) is not None:
        if not isinstance(n, SequenceNode):
            w.add(n, f"{path}.taints", f"expected a list of taints, got {_describe(n)}")
        else:
            kw["taints"] = tuple(_taint(w, t, f"{path}.taints[{j}]") for j, t in enumerate(n.value))
    host_ssh = _ssh_fields(w, f.get("ssh"), f"{path}.ssh")
    merged = {**ssh_defaults, **host_ssh}
    spec = None
    if len(w.problems) == before and _ok(*merged.values()):
        spec = HostSpec(name=name, address=address, roles=roles, ssh=SSHSettings(**merged),
                        line=_line(node), **kw)
    return _HostDraft(i, node, f, name if name is not _BAD else None,
                      address if address is not _BAD else None,
                      roles if roles is not _BAD else None, spec)


def _hosts(w: _Walker, node: Node | None, key_line: int | None,
           ssh_defaults: dict[str, Any]) -> list[_HostDraft] | None:
    if node is None:
        w.add(key_line, "hosts", "required: list at least one host")
        return None
    if _is_null(node) or (isinstance(node, SequenceNode) and not node.value):
        w.add(key_line, "hosts", "must list at least one host")
        return None
    if not isinstance(node, SequenceNode):
        w.add(key_line, "hosts", f"expected a list of hosts, got {_describe(node)}")
        return None
    drafts = [_host(w, i, item, ssh_defaults) for i, item in enumerate(node.value)]

    names: dict[str, _HostDraft] = {}
    addresses: dict[str, _HostDraft] = {}
    for d in drafts:
        if d.name:
            if d.name in names:
                first = names[d.name]
                w.add(d.found["name"], f"hosts[{d.index}].name",
                      f"duplicate host name '{d.name}' (also hosts[{first.index}], "
                      f"line {_line(first.found['name'])})")
            else:
                names[d.name] = d
        if d.address:
            k = _address_key(d.address)
            if k in addresses:
                first = addresses[k]
                w.add(d.found["address"], f"hosts[{d.index}].address",
                      f"duplicate address '{d.address}' (also hosts[{first.index}] "
                      f"'{first.name or '?'}', line {_line(first.found['address'])})")
            else:
                addresses[k] = d
    # Only judge the roles when every host's roles could be read.
    if all(d.roles is not None for d in drafts):
        if not any(ROLE_CONTROL_PLANE in (d.roles or ()) for d in drafts):
            w.add(key_line, "hosts", f"no host has role '{ROLE_CONTROL_PLANE}' "
                                 "(give one host, or three for HA, roles: [control-plane])")
    return drafts


def _check_endpoint(w: _Walker, drafts: list[_HostDraft], endpoint_given: bool,
                    cluster_line: int | None) -> None:
    cps = [d for d in drafts if d.roles and ROLE_CONTROL_PLANE in d.roles]
    if len(cps) > 1 and not endpoint_given:
        names = ", ".join(d.name or f"hosts[{d.index}]" for d in cps)
        w.add(cluster_line, "cluster.control_plane_endpoint",
              f"required with more than one control plane ({len(cps)}: {names}); "
              "point it at a load balancer or virtual IP in front of every API server, "
              "e.g. k8s-api.example.com:6443, or give cluster.vip: {address, interface} and "
              "gpuk8s runs kube-vip on the control planes (docs/ha.md)")


# ---- public API ----------------------------------------------------------------------------

def parse_inventory(text: str, path: str = "<inventory>") -> Inventory:
    """Validate inventory YAML text; raise InventoryError listing every problem found."""
    w = _Walker(str(path))
    try:
        root = yaml.compose(text, Loader=_BoundedLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = " ".join(p for p in (e.context, e.problem) if p)
        raise InventoryError([Problem(w.file, mark.line + 1 if mark else None, "",
                                      printable(f"invalid YAML: {what}"))]) from None
    except yaml.YAMLError as e:
        raise InventoryError([Problem(w.file, None, "", printable(f"invalid YAML: {e}"))]) from None
    except RecursionError:   # MAX_DEPTH stops nesting first; this is the last resort
        raise InventoryError([Problem(w.file, None, "", "invalid YAML: nested too deeply")]) from None
    if root is None:
        raise InventoryError([Problem(w.file, None, "", "the inventory is empty; it needs at "
                                                        "least a cluster: and a hosts: section")])
    top = w.mapping(root, "", TOP_KEYS)
    if top is None:
        raise InventoryError(w.problems)
    key_lines = top.key_lines
    endpoint_given = False
    before = len(w.problems)
    if "cluster" not in top:
        w.add(1, "cluster", "required section missing (at least cluster.name)")
        cluster, cluster_line = ClusterSpec(name=""), 1
    else:
        cluster, cluster_line, endpoint_given = _cluster(w, top["cluster"], key_lines["cluster"])
    # The overrides are judged against the cluster's Kubernetes minor when the cluster is valid.
    release = versions.release_for(cluster.kubernetes_version) if len(w.problems) == before \
        else None
    ssh_defaults = _ssh_fields(w, top.get("ssh"), "ssh")
    vers = _versions(w, top.get("versions"), release)
    network = _network(w, top.get("network"))
    gpu, gpu_nodes = _gpu(w, top.get("gpu"))
    drafts = _hosts(w, top.get("hosts"), key_lines.get("hosts") or 1, ssh_defaults)
    if drafts:
        _check_endpoint(w, drafts, endpoint_given, cluster_line)
        _check_vip(w, cluster.vip, drafts)
        _check_gpu(w, gpu, gpu_nodes, drafts)
    if w.problems:
        w.problems.sort(key=lambda p: p.line or 0)
        raise InventoryError(w.problems)
    return Inventory(path=str(path), cluster=cluster, hosts=tuple(d.spec for d in drafts),
                     versions=vers, network=network, gpu=gpu)


def load_inventory(path: str | os.PathLike) -> Inventory:
    """Read and validate an inventory file; raise InventoryError listing every problem."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise InventoryError([Problem(name, None, "", "inventory file not found")]) from None
    except UnicodeDecodeError as e:
        raise InventoryError([Problem(name, None, "", f"not UTF-8 text: {e.reason}")]) from None
    except OSError as e:
        raise InventoryError([Problem(name, None, "", f"cannot read the inventory: "
                                                      f"{e.strerror or e}")]) from None
    return parse_inventory(text, name)


def local_inventory(name: str | None = None) -> Inventory:
    """A one-host inventory for this machine (`gpuk8s preflight --local`)."""
    host_name = (name or socket.gethostname() or "localhost").strip().lower()
    if name is None and _dns_subdomain_error(host_name):
        # Kubernetes node names are DNS-1123 names: "My_Box" -> "my-box".
        host_name = re.sub(r"[^a-z0-9.-]+", "-", host_name).strip("-.") or "localhost"
    host = HostSpec(name=host_name, address="localhost", roles=(ROLE_CONTROL_PLANE, ROLE_WORKER),
                    ssh=SSHSettings(), connection="local")
    return Inventory(path="<local>", cluster=ClusterSpec(name="local"), hosts=(host,))
