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
# kubectl's message when a type's CRD does not exist (yet): it then refuses the whole call.
NO_SUCH_TYPE = "the server doesn't have a resource type"


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

    def __init__(self, host: Any):
        self.host = host                     # a gpuk8s.host.Host that has admin.conf
        self.calico_crds: bool | None = None  # Calico's CRDs exist (None: not known yet)
        self._objects: dict[str, list[dict]] | None = None
        self.last: Result | None = None       # the last read, for error messages

    def invalidate(self) -> None:
        """Something changed the cluster: the next question reads it again."""
        self._objects = None

    def read(self) -> dict[str, list[dict]] | None:
        """Nodes, Installation and tigerastatus in one call; None when the API does not answer.

        Before Calico's CRDs exist kubectl refuses the whole call, so the nodes are read alone.
        """
        if self.calico_crds is not False:
            res = self.last = self.host.read(kubectl("get", ",".join(CLUSTER_TYPES), "-o", "json"),
                                             check=False)
            if res.exit_status == 0 or NO_SUCH_TYPE not in res.stderr:
                items = parse_list(res.stdout) if res.exit_status == 0 else None
                if items is not None:
                    self.calico_crds = True
                    self._objects = by_kind(items)
                return self._objects if items is not None else None
            self.calico_crds = False
        res = self.last = self.host.read(kubectl("get", "nodes", "-o", "json"), check=False)
        items = parse_list(res.stdout) if res.exit_status == 0 else None
        self._objects = by_kind(items) if items is not None else None
        return self._objects

    def objects(self) -> dict[str, list[dict]]:
        """What was read last, or a fresh read after an invalidate (empty when unanswered)."""
        if self._objects is None:
            self.read()
        return self._objects or {}

    def nodes(self) -> dict[str, dict]:
        return nodes_by_name(self.objects().get("Node", []))

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
