"""Cluster facts: what the Kubernetes API says (nodes, Calico), read with kubectl on a control plane.

Shared by `up`'s phases and, next, `verify` and the GPU phases (Helm release, ClusterPolicy,
allocatable GPUs belong here too). Parsing is pure; `ClusterFacts` reads through a host and keeps
what it read until a phase that changed the cluster calls `invalidate()`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from gpuk8s.paths import ADMIN_CONF
from gpuk8s.shell import Cmd

if TYPE_CHECKING:
    from gpuk8s.transport.base import Result

# What a run checks first, read in one kubectl call: the nodes, Calico's Installation and its
# tigerastatus (a re-run on a finished cluster needs nothing else from the API server).
CLUSTER_TYPES = ("nodes", "installations.operator.tigera.io", "tigerastatuses.operator.tigera.io")
CALICO_TYPES = CLUSTER_TYPES[1:]
# With GPU nodes the same call also lists, with `-n <operator namespace>` (cluster-scoped types
# are listed whole, namespaced ones in that namespace): the ClusterPolicy (a CRD: absent until
# the operator's chart is installed), the namespaces, and the operator namespace's ConfigMaps and
# pods, so a re-run on a finished GPU cluster reads the API server once.
CLUSTER_POLICY_TYPE = "clusterpolicies.nvidia.com"
GPU_CORE_TYPES = ("namespaces", "configmaps", "pods")
# kubectl's message when a type's CRD does not exist (yet): it then refuses the whole call.
NO_SUCH_TYPE = "the server doesn't have a resource type"


def _missing_type(stderr: str) -> str:
    """The type kubectl names in `error: the server doesn't have a resource type "X"` ('' if none)."""
    tail = stderr.split(NO_SUCH_TYPE, 1)[1] if NO_SUCH_TYPE in stderr else ""
    return tail.strip().split('"')[1].lower() if tail.strip().startswith('"') and tail.count('"') >= 2 else ""


def kubectl(*args: str) -> Cmd:
    """kubectl on a control plane, with the admin kubeconfig."""
    return Cmd("kubectl", "--kubeconfig", ADMIN_CONF, *args)


def parse_list(stdout: str) -> list[dict] | None:
    """`kubectl get ... -o json` output -> its items; None when it is not a List."""
    try:
        items = json.loads(stdout).get("items", [])
    except (ValueError, AttributeError):
        return None
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else None


def by_kind(items: list[dict]) -> dict[str, list[dict]]:
    objects: dict[str, list[dict]] = {}
    for item in items:
        objects.setdefault(item.get("kind") or "", []).append(item)
    return objects


def name_of(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("name") or ""


def nodes_by_name(items: list[dict]) -> dict[str, dict]:
    return {name_of(n): n for n in items}


def node_ready(node: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def calico_state(items: list[dict]) -> tuple[bool, str]:
    """tigerastatus objects -> (every component Available, what is not)."""
    states = []
    ok = bool(items)
    for item in items:
        conds = {c.get("type"): c for c in (item.get("status") or {}).get("conditions") or []}
        if conds.get("Available", {}).get("status") == "True":
            continue
        ok = False
        msg = conds.get("Degraded", {}).get("message") or conds.get("Available", {}).get("message") or ""
        states.append(f"{name_of(item)}: not available {msg}".strip())
    return ok, "; ".join(states) or "available"


def installation_pools(objects: dict[str, list[dict]]) -> list[str] | None:
    """The pod CIDRs of Calico's `default` Installation; None when there is none."""
    inst = next((i for i in objects.get("Installation", []) if name_of(i) == "default"), None)
    if inst is None:
        return None
    pools = ((inst.get("spec") or {}).get("calicoNetwork") or {}).get("ipPools") or []
    return [p.get("cidr") for p in pools if isinstance(p, dict)]


class ClusterFacts:
    """The cluster as one control plane's kubectl sees it; read once until invalidated."""

    def __init__(self, host: Any, gpu_namespace: str | None = None):
        self.host = host                     # a gpuk8s.host.Host that has admin.conf
        self.calico_crds: bool | None = None  # Calico's CRDs exist (None: not known yet)
        self.gpu_crds: bool | None = None     # the GPU Operator's ClusterPolicy CRD exists
        # A run with GPU nodes reads the operator's objects in the same call (GPU_TYPES).
        self.gpu_namespace = gpu_namespace
        self._objects: dict[str, list[dict]] | None = None
        self.last: Result | None = None       # the last read, for error messages

    def invalidate(self) -> None:
        """Something changed the cluster: the next question reads it again."""
        self._objects = None

    def _types(self) -> list[str]:
        types = ["nodes"] + (list(CALICO_TYPES) if self.calico_crds is not False else [])
        if self.gpu_namespace:
            types += ([CLUSTER_POLICY_TYPE] if self.gpu_crds is not False else []) + list(GPU_CORE_TYPES)
        return types

    def read(self) -> dict[str, list[dict]] | None:
        """Nodes, Installation and tigerastatus (and, in a run with GPU nodes, the ClusterPolicy
        and the operator namespace's pods and ConfigMaps) in one call; None when the API does not
        answer.

        kubectl refuses the whole call when one type's CRD does not exist (yet: before Calico or
        the operator is installed); the read is then made again without the type it named, which
        stays left out until the phase that installs it says otherwise (`calico_crds`/`gpu_crds`).
        """
        for _ in range(3):   # bounded: each retry leaves one CRD group out
            types = self._types()
            ns = ["-n", self.gpu_namespace] if self.gpu_namespace else []
            res = self.last = self.host.read(kubectl("get", ",".join(types), *ns, "-o", "json"), check=False)
            if res.exit_status != 0 and NO_SUCH_TYPE in res.stderr:
                missing = _missing_type(res.stderr)
                if CLUSTER_POLICY_TYPE in types and CLUSTER_POLICY_TYPE.startswith(missing):
                    self.gpu_crds = False
                    continue
                if self.calico_crds is not False:
                    self.calico_crds = False   # Calico's, or a name we do not know: nodes alone
                    continue
                if self.gpu_crds is not False and self.gpu_namespace:
                    self.gpu_crds = False
                    continue
            items = parse_list(res.stdout) if res.exit_status == 0 else None
            if items is not None:
                if CALICO_TYPES[0] in types:
                    self.calico_crds = True
                if CLUSTER_POLICY_TYPE in types:
                    self.gpu_crds = True
            self._objects = by_kind(items) if items is not None else None
            return self._objects
        self._objects = None
        return None

    def objects(self) -> dict[str, list[dict]]:
        """What was read last, or a fresh read after an invalidate (empty when unanswered)."""
        if self._objects is None:
            self.read()
        return self._objects or {}

    def nodes(self) -> dict[str, dict]:
        return nodes_by_name(self.objects().get("Node", []))

    def seed(self, objects: dict[str, list[dict]]) -> None:
        """Objects read elsewhere in one call (verify's batched read): no second read of them."""
        self._objects = dict(objects)
        self.calico_crds = bool(objects.get("TigeraStatus")) or self.calico_crds

    def fresh_nodes(self) -> dict[str, dict]:
        """The nodes read now (waiting loops), without touching the cached objects."""
        res = self.host.read(kubectl("get", "nodes", "-o", "json"), check=False)
        return nodes_by_name((parse_list(res.stdout) or []) if res.exit_status == 0 else [])

    def calico(self) -> tuple[bool, str]:
        """(Calico Available, what is not), from the cached objects."""
        return calico_state(self.objects().get("TigeraStatus", []))

    def installation_pools(self) -> list[str] | None:
        return installation_pools(self.objects())

    def fresh_calico(self) -> tuple[bool, str]:
        res = self.host.read(kubectl("get", "tigerastatus", "-o", "json"), check=False)
        items = parse_list(res.stdout) if res.exit_status == 0 else None
        return calico_state(items) if items else (False, "no tigerastatus yet")


# ---- the GPU layer: the Helm release, the operator's objects, allocatable GPUs ---------------
# Read on the first control plane with the admin kubeconfig. `helm list -o json` prints helm's
# releaseElement list (helm/helm pkg/cmd/list.go: name, namespace, revision, updated, status,
# chart "<name>-<version>", app_version); `helm get values -o json` the user-supplied values
# (`null` when none: helm/helm pkg/cmd/get_values.go prints the release's Config).

def helm(*args: str) -> Cmd:
    """helm on a control plane, with the admin kubeconfig."""
    return Cmd("helm", *args, "--kubeconfig", ADMIN_CONF)


def helm_list(namespace: str, helm_major: int = 4) -> Cmd:
    """Every release of the namespace: Helm 4 lists every status by default and has no `--all`
    (`helm list --all`: "Error: unknown flag: --all"); Helm 3 shows only deployed and failed ones
    without it."""
    return helm("list", "-n", namespace, *(["--all"] if helm_major == 3 else []), "-o", "json")


def helm_get_values(release: str, namespace: str) -> Cmd:
    return helm("get", "values", release, "-n", namespace, "-o", "json")


def parse_helm_list(stdout: str) -> list[dict] | None:
    """`helm list -o json` -> its releases; None when the output is not a JSON list."""
    try:
        data = json.loads(stdout or "[]")
    except ValueError:
        return None
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else None


def parse_helm_values(stdout: str) -> dict | None:
    """`helm get values -o json` -> the user-supplied values ({} for `null`); None: unreadable."""
    try:
        data = json.loads(stdout or "null")
    except ValueError:
        return None
    return data if isinstance(data, dict) else ({} if data is None else None)


def helm_release(host: Any, name: str, namespace: str, helm_major: int = 4) -> dict | None:
    """The release's list entry (status, chart) or None when it does not exist."""
    res = host.read(helm_list(namespace, helm_major), check=False)
    releases = parse_helm_list(res.stdout) if res.exit_status == 0 else None
    if releases is None:
        return None
    return next((r for r in releases if r.get("name") == name), None)


def helm_values(host: Any, name: str, namespace: str) -> dict | None:
    res = host.read(helm_get_values(name, namespace), check=False)
    return parse_helm_values(res.stdout) if res.exit_status == 0 else None


def get_objects(host: Any, namespace: str, *refs: str) -> list[dict]:
    """`kubectl get <kind/name>... --ignore-not-found -o json`: the objects that exist."""
    res = host.read(kubectl("get", *refs, "-n", namespace, "--ignore-not-found", "-o", "json"),
                    check=False)
    if res.exit_status != 0 or not res.stdout.strip():
        return []
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        return []
    if isinstance(doc, dict) and doc.get("kind") == "List":
        return [i for i in doc.get("items") or [] if isinstance(i, dict)]
    return [doc] if isinstance(doc, dict) else []


def list_objects(host: Any, kind: str, namespace: str | None = None, *selector: str) -> list[dict]:
    """`kubectl get <kind> [-n ns] [-l sel] -o json` items ([] when unanswered)."""
    args = ["get", kind] + (["-n", namespace] if namespace else []) + list(selector) + ["-o", "json"]
    res = host.read(kubectl(*args), check=False)
    return (parse_list(res.stdout) or []) if res.exit_status == 0 else []


def clusterpolicy_state(items: list[dict]) -> str | None:
    """The ClusterPolicy's status.state (`ready`, `notReady`); None when there is none."""
    for item in items:
        state = (item.get("status") or {}).get("state")
        if state:
            return str(state)
    return None if not items else "unknown"


def allocatable(node: dict, resource: str) -> int:
    """A node's allocatable count of an extended resource (0 when absent)."""
    value = ((node.get("status") or {}).get("allocatable") or {}).get(resource)
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def node_labels(node: dict) -> dict[str, str]:
    return dict((node.get("metadata") or {}).get("labels") or {})
