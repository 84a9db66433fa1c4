"""`gpuk8s verify`: the cluster checks, read from the API server's objects (one kubectl call).

Each check is a pure function of a `ClusterCheckContext` (the objects kubectl returned, what the
inventory says the cluster should look like, what the hosts' facts found on their PCI buses, and
the CUDA smoke results) to ONE `CheckResult` for the whole cluster: a message that names every
node that fails, and a fix with the commands to look closer. Why + fix of each: docs/checks.md
("verify: cluster checks"). The objects are read by `phases/verify_cluster.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from gpuk8s.checks.base import FAIL, PASS, SKIP, WARN, CheckResult, CheckSet
from gpuk8s.facts.cluster import (allocatable, calico_state, clusterpolicy_state, name_of, node_labels,
                                  node_ready)
from gpuk8s.inventory import HostSpec, Inventory
from gpuk8s.shell import quote

VERIFY_CLUSTER = CheckSet("verify-cluster", (
    "cluster-api",
    "nodes-registered",
    "nodes-ready",
    "kubelet-version",
    "node-labels",
    "node-taints",
    "unknown-nodes",
    "system-pods",
    "calico-available",
    "gpu-operator-ready",
    "gpu-allocatable",
    "gpu-node-labels",
    "gpu-smoke-test",
))

# Namespaces whose pods make the cluster work: kubeadm's control plane, kube-proxy and CoreDNS,
# the Tigera operator and Calico (the GPU Operator's pods are judged by its ClusterPolicy).
SYSTEM_NAMESPACES = ("kube-system", "tigera-operator", "calico-system")
GPU_PRESENT = "nvidia.com/gpu.present"      # NFD/GFD (NVIDIA/k8s-device-plugin docs/gfd_labels.md)
GPU_PRODUCT = "nvidia.com/gpu.product"
KC = "kubectl"    # how fix texts spell kubectl (the user runs them where verify ran kubectl)


@dataclass(frozen=True)
class GPUExpectation:
    """What one GPU node should advertise, from its facts and its inventory GPU settings."""

    name: str
    resource: str                 # nvidia.com/gpu, nvidia.com/gpu.shared or nvidia.com/mig-<profile>
    devices: int | None           # GPUs on the PCI bus, or MIG devices of the profile; None: unknown
    replicas: int = 1             # time-slicing replicas (1: not shared)
    mig: bool = False
    shared_product: bool = False  # GFD appends -SHARED to gpu.product (time-slicing, not renamed)
    unknown_why: str = ""         # why devices is unknown (no facts: the host was unreachable)

    @property
    def want(self) -> int | None:
        return None if self.devices is None else self.devices * self.replicas


@dataclass
class ClusterCheckContext:
    """Everything the cluster checks read."""

    inventory: Inventory
    hosts: tuple[HostSpec, ...]              # the inventory hosts verified (--host limits them)
    known: frozenset[str]                    # every host of the inventory (unknown-nodes)
    objects: dict[str, list[dict]] | None    # kind -> objects; None: the API did not answer
    api_error: str = ""
    where: str = ""                          # where kubectl ran, for messages
    gpu: dict[str, GPUExpectation] = field(default_factory=dict)
    smoke: dict[str, tuple[str, str]] | None = None   # node -> (status, message); None: not run
    smoke_note: str = ""                     # why the smoke Jobs did not run
    missing_types: tuple[str, ...] = ()      # resource types the API server does not have

    def kind(self, kind: str) -> list[dict]:
        return (self.objects or {}).get(kind, [])

    @property
    def nodes(self) -> dict[str, dict]:
        return {name_of(n): n for n in self.kind("Node")}

    @property
    def expected_kubelet(self) -> str:
        return "v" + self.inventory.release.patch


def _nodes_of(names: list[str], limit: int = 8) -> str:
    head = ", ".join(names[:limit])
    return head + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _no_api(ctx: ClusterCheckContext, check_id: str) -> CheckResult | None:
    if ctx.objects is None:
        return CheckResult(check_id, SKIP, "the API server did not answer (see cluster-api)")
    return None


def _registered(ctx: ClusterCheckContext) -> tuple[dict[str, dict], list[HostSpec]]:
    nodes = ctx.nodes
    return nodes, [h for h in ctx.hosts if h.name in nodes]


def crashed_check(check_id: str, e: Exception) -> CheckResult:
    why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
    return CheckResult(check_id, FAIL, f"the check could not run on the objects the API server returned ({why})",
                       "gpuk8s verify --json --no-smoke   # report this message and the objects as a gpuk8s bug")


# --------------------------------------------------------------------------- API and nodes

@VERIFY_CLUSTER.check("cluster-api", "the API server answers",
                      "every other cluster check reads the cluster through kubectl")
def check_api(ctx: ClusterCheckContext) -> CheckResult:
    if ctx.objects is None:
        return CheckResult("cluster-api", FAIL,
                           f"kubectl on {ctx.where or 'the control plane'} got no answer: "
                           f"{ctx.api_error or 'no output'}",
                           "on a control plane: systemctl status kubelet; crictl ps --name kube-apiserver; "
                           "or pass --kubeconfig FILE for a cluster reached from here")
    extra = f" (no {', '.join(ctx.missing_types)} on this cluster)" if ctx.missing_types else ""
    return CheckResult("cluster-api", PASS, f"kubectl on {ctx.where} answers{extra}")


@VERIFY_CLUSTER.check("nodes-registered", "every inventory host is a node",
                      "a host that never joined, or was deleted, runs no pods")
def check_registered(ctx: ClusterCheckContext) -> CheckResult:
    if (r := _no_api(ctx, "nodes-registered")) is not None:
        return r
    nodes = ctx.nodes
    missing = [h.name for h in ctx.hosts if h.name not in nodes]
    if missing:
        return CheckResult("nodes-registered", FAIL,
                           f"not a node of the cluster: {_nodes_of(missing)}",
                           "gpuk8s up -i INVENTORY   # joins the hosts that are not nodes yet")
    return CheckResult("nodes-registered", PASS, f"all {len(ctx.hosts)} inventory hosts are nodes")


def _ready_reason(node: dict) -> str:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return f"{c.get('status')}: {c.get('message') or c.get('reason') or ''}".strip()
    return "no Ready condition"


@VERIFY_CLUSTER.check("nodes-ready", "every node is Ready",
                      "a NotReady node (kubelet stopped, runtime down, no CNI) gets no new pods and "
                      "its pods are evicted")
def check_ready(ctx: ClusterCheckContext) -> CheckResult:
    if (r := _no_api(ctx, "nodes-ready")) is not None:
        return r
    nodes, present = _registered(ctx)
    bad = [h.name for h in present if not node_ready(nodes[h.name])]
    if bad:
        detail = "; ".join(f"{n} ({_ready_reason(nodes[n])})" for n in bad[:8])
        first = quote(bad[0])
        return CheckResult("nodes-ready", FAIL, f"not Ready: {detail}",
                           f"on {first}: systemctl status kubelet containerd; journalctl -u kubelet -n 50\n"
                           f"{KC} describe node {first}")
    return CheckResult("nodes-ready", PASS, f"{len(present)} nodes Ready")


@VERIFY_CLUSTER.check("kubelet-version", "every node runs the expected kubelet",
                      "a kubelet outside the version skew policy, or left behind by an upgrade, "
                      "misbehaves in ways the API does not show")
def check_kubelet_version(ctx: ClusterCheckContext) -> CheckResult:
    if (r := _no_api(ctx, "kubelet-version")) is not None:
        return r
    nodes, present = _registered(ctx)
    want = ctx.expected_kubelet
    bad = []
    for h in present:
        got = ((nodes[h.name].get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion") or "unknown"
        if got != want:
            bad.append(f"{h.name} ({got})")
    if bad:
        return CheckResult("kubelet-version", FAIL, f"kubelet is not {want} on: {_nodes_of(bad)}",
                           f"gpuk8s preflight -i INVENTORY   # names the packages to install; the "
                           f"kubelet must be {want} (cluster.kubernetes_version)")
    return CheckResult("kubelet-version", PASS, f"{len(present)} nodes run kubelet {want}")


@VERIFY_CLUSTER.check("node-labels", "inventory labels are on the nodes",
                      "workloads select nodes by these labels (nodeSelector, affinity)")
def check_labels(ctx: ClusterCheckContext) -> CheckResult:
    if (r := _no_api(ctx, "node-labels")) is not None:
        return r
    nodes, present = _registered(ctx)
    bad, fixes = [], []
    for h in present:
        have = node_labels(nodes[h.name])
        wrong = [(k, v) for k, v in sorted(h.labels.items()) if have.get(k) != v]
        if wrong:
            bad.append(f"{h.name}: " + ", ".join(f"{k}={v} (has {have.get(k, 'none')})" for k, v in wrong))
            fixes.append(f"{KC} label node {quote(h.name)} " +
                         " ".join(quote(f"{k}={v}") for k, v in wrong) + " --overwrite")
    if bad:
        return CheckResult("node-labels", FAIL, "; ".join(bad[:8]), "\n".join(fixes[:8]))
    n = sum(len(h.labels) for h in present)
    return CheckResult("node-labels", PASS, f"{n} inventory labels set on {len(present)} nodes")


@VERIFY_CLUSTER.check("node-taints", "inventory taints are on the nodes",
                      "a missing taint lets pods onto nodes they must stay off (GPU or control-plane nodes)")
def check_taints(ctx: ClusterCheckContext) -> CheckResult:
    if (r := _no_api(ctx, "node-taints")) is not None:
        return r
    nodes, present = _registered(ctx)
    bad, fixes = [], []
    for h in present:
        have = {(t.get("key"), t.get("value") or None, t.get("effect"))
                for t in (nodes[h.name].get("spec") or {}).get("taints") or []}
        missing = [t for t in h.taints if (t.key, t.value or None, t.effect) not in have]
        if missing:
            bad.append(f"{h.name}: {', '.join(str(t) for t in missing)}")
            fixes.append(f"{KC} taint node {quote(h.name)} " + " ".join(quote(str(t)) for t in missing)
                         + " --overwrite")
    if bad:
        return CheckResult("node-taints", FAIL, "missing taints: " + "; ".join(bad[:8]), "\n".join(fixes[:8]))
    n = sum(len(h.taints) for h in present)
    return CheckResult("node-taints", PASS, f"{n} inventory taints set on {len(present)} nodes")


@VERIFY_CLUSTER.check("unknown-nodes", "no node outside the inventory",
                      "a node the inventory does not list is not checked, upgraded or repaired by gpuk8s")
def check_unknown(ctx: ClusterCheckContext) -> CheckResult:
    if (r := _no_api(ctx, "unknown-nodes")) is not None:
        return r
    extra = sorted(n for n in ctx.nodes if n not in ctx.known)
    if extra:
        return CheckResult("unknown-nodes", WARN, f"nodes not in the inventory: {_nodes_of(extra)}",
                           f"add them to the inventory's hosts, or drain and delete them: "
                           f"{KC} drain {quote(extra[0])} --ignore-daemonsets && {KC} delete node {quote(extra[0])}")
    return CheckResult("unknown-nodes", PASS, "every node is in the inventory")


# --------------------------------------------------------------------------- system pods, Calico

def pod_problem(pod: dict) -> str | None:
    """Why a pod is not running well (None: Succeeded, or Running with every container ready)."""
    st = pod.get("status") or {}
    phase = st.get("phase") or "Unknown"
    if phase == "Succeeded":
        return None
    reasons = []
    for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        for k in ("waiting", "terminated"):
            s = (cs.get("state") or {}).get(k) or {}
            if s.get("reason") and s.get("reason") != "Completed":
                reasons.append(f"{cs.get('name')}: {s['reason']}")
    ready = {c.get("type"): c.get("status") for c in st.get("conditions") or []}.get("Ready")
    if phase == "Running" and ready == "True":
        return None
    what = phase if ready == "True" or phase != "Running" else "Running, not Ready"
    return what + (f" ({'; '.join(reasons[:3])})" if reasons else "")


@VERIFY_CLUSTER.check("system-pods", "system pods are running",
                      "the API server, etcd, scheduler, controller manager, kube-proxy, CoreDNS and "
                      "Calico run as pods: one that is not running breaks scheduling, DNS or pod networking")
def check_system_pods(ctx: ClusterCheckContext) -> CheckResult:
    if (r := _no_api(ctx, "system-pods")) is not None:
        return r
    pods = [p for p in ctx.kind("Pod") if (p.get("metadata") or {}).get("namespace") in SYSTEM_NAMESPACES]
    if not pods:
        return CheckResult("system-pods", FAIL, f"no pods in {', '.join(SYSTEM_NAMESPACES)}",
                           f"{KC} get pods -A -o wide")
    bad = []
    for p in pods:
        why = pod_problem(p)
        if why is not None:
            md = p.get("metadata") or {}
            node = (p.get("spec") or {}).get("nodeName") or "-"
            bad.append((md.get("namespace") or "", name_of(p), node, why))
    if bad:
        ns, name = bad[0][0], bad[0][1]
        return CheckResult("system-pods", FAIL,
                           f"{len(bad)} of {len(pods)} system pods not running: " +
                           "; ".join(f"{n}/{p} on {node}: {why}" for n, p, node, why in bad[:8]),
                           f"{KC} describe pod -n {quote(ns)} {quote(name)}\n"
                           f"{KC} logs -n {quote(ns)} {quote(name)} --all-containers --tail 50")
    return CheckResult("system-pods", PASS, f"{len(pods)} system pods running")


@VERIFY_CLUSTER.check("calico-available", "Calico is Available (tigerastatus)",
                      "without the pod network nodes stay NotReady and pods cannot reach each other")
def check_calico(ctx: ClusterCheckContext) -> CheckResult:
    if (r := _no_api(ctx, "calico-available")) is not None:
        return r
    items = ctx.kind("TigeraStatus")
    if not items:
        return CheckResult("calico-available", FAIL, "no tigerastatus objects: the Tigera operator's Calico "
                           "is not installed", "gpuk8s up -i INVENTORY   # installs Calico")
    ok, what = calico_state(items)
    if not ok:
        return CheckResult("calico-available", FAIL, f"tigerastatus: {what}",
                           f"{KC} get tigerastatus; {KC} get pods -n calico-system -o wide")
    return CheckResult("calico-available", PASS,
                       f"tigerastatus Available: {', '.join(sorted(name_of(i) for i in items))}")


# --------------------------------------------------------------------------- the GPU layer

def _no_gpu(ctx: ClusterCheckContext, check_id: str) -> CheckResult | None:
    if (r := _no_api(ctx, check_id)) is not None:
        return r
    if not ctx.gpu:
        return CheckResult(check_id, SKIP, "no GPU nodes in the inventory or found on the hosts")
    return None


@VERIFY_CLUSTER.check("gpu-operator-ready", "the GPU Operator's ClusterPolicy is ready",
                      "the ClusterPolicy is ready only when every operand (driver, toolkit, device "
                      "plugin, GFD, validator) runs on every GPU node")
def check_clusterpolicy(ctx: ClusterCheckContext) -> CheckResult:
    if (r := _no_gpu(ctx, "gpu-operator-ready")) is not None:
        return r
    state = clusterpolicy_state(ctx.kind("ClusterPolicy"))
    if state == "ready":
        return CheckResult("gpu-operator-ready", PASS, "ClusterPolicy ready")
    what = "no ClusterPolicy: the GPU Operator is not installed" if state is None else f"ClusterPolicy {state}"
    return CheckResult("gpu-operator-ready", FAIL, what,
                       f"{KC} get pods -n gpu-operator -o wide; gpuk8s up -i INVENTORY   # installs or "
                       "diagnoses the GPU Operator")


@VERIFY_CLUSTER.check("gpu-allocatable", "every GPU node advertises all its GPUs",
                      "fewer allocatable GPUs than the PCI bus has means the device plugin marked GPUs "
                      "unhealthy (Xid errors) or runs with the wrong config; pods asking for them stay Pending")
def check_allocatable(ctx: ClusterCheckContext) -> CheckResult:
    if (r := _no_gpu(ctx, "gpu-allocatable")) is not None:
        return r
    nodes = ctx.nodes
    bad, unknown, good = [], [], 0
    for name, g in sorted(ctx.gpu.items()):
        if name not in nodes:
            continue   # nodes-registered reports it
        if g.want is None:
            unknown.append(f"{name} ({g.unknown_why or 'GPU count unknown'})")
            continue
        have = allocatable(nodes[name], g.resource)
        if have != g.want:
            what = f"{g.devices} {'MIG devices' if g.mig else 'GPUs'}" + \
                (f" x {g.replicas} replicas" if g.replicas > 1 else "")
            bad.append((name, f"{name}: allocatable {g.resource} is {have}, expected {g.want} ({what})"))
        else:
            good += 1
    if bad:
        first = quote(bad[0][0])
        return CheckResult("gpu-allocatable", FAIL, "; ".join(b for _, b in bad[:8]),
                           f"{KC} describe node {first}   # Allocatable; then the device plugin's logs:\n"
                           f"{KC} logs -n gpu-operator -l app=nvidia-device-plugin-daemonset --tail 50; "
                           f"on {first}: nvidia-smi -q | grep -i -A2 xid")
    if unknown:
        return CheckResult("gpu-allocatable", SKIP if not good else WARN,
                           f"{good} GPU nodes advertise every GPU; not judged: {'; '.join(unknown[:8])}")
    return CheckResult("gpu-allocatable", PASS, f"{good} GPU nodes advertise every GPU")


def _product_problem(g: GPUExpectation, product: str) -> str | None:
    if g.mig and "-MIG-" not in product:
        return f"gpu.product {product} has no -MIG- part (MIG profile not applied)"
    if g.shared_product and not product.endswith("-SHARED"):
        return f"gpu.product {product} lacks -SHARED (time-slicing x{g.replicas} not in effect)"
    if not g.shared_product and not g.mig and product.endswith("-SHARED"):
        return f"gpu.product {product} says -SHARED, but the inventory has no time-slicing here"
    return None


@VERIFY_CLUSTER.check("gpu-node-labels", "GPU nodes carry nvidia.com/gpu.present and gpu.product",
                      "NFD and GPU Feature Discovery label GPU nodes; the operator schedules its operands "
                      "and users select GPU models by these labels")
def check_gpu_labels(ctx: ClusterCheckContext) -> CheckResult:
    if (r := _no_gpu(ctx, "gpu-node-labels")) is not None:
        return r
    nodes = ctx.nodes
    bad = []
    for name, g in sorted(ctx.gpu.items()):
        if name not in nodes:
            continue
        labels = node_labels(nodes[name])
        if labels.get(GPU_PRESENT) != "true":
            bad.append((name, f"{name}: no {GPU_PRESENT}=true"))
        elif not labels.get(GPU_PRODUCT):
            bad.append((name, f"{name}: no {GPU_PRODUCT}"))
        elif (why := _product_problem(g, labels[GPU_PRODUCT])) is not None:
            bad.append((name, f"{name}: {why}"))
    if bad:
        return CheckResult("gpu-node-labels", FAIL, "; ".join(b for _, b in bad[:8]),
                           f"{KC} get node {quote(bad[0][0])} --show-labels; "
                           f"{KC} logs -n gpu-operator -l app=gpu-feature-discovery --tail 50")
    return CheckResult("gpu-node-labels", PASS, f"{len(ctx.gpu)} GPU nodes labelled")


@VERIFY_CLUSTER.check("gpu-smoke-test", "a CUDA Job passes on every GPU node",
                      "only a real CUDA program proves driver, toolkit, runtime and device plugin work "
                      "together")
def check_smoke(ctx: ClusterCheckContext) -> CheckResult:
    if (r := _no_gpu(ctx, "gpu-smoke-test")) is not None:
        return r
    if ctx.smoke is None:
        return CheckResult("gpu-smoke-test", SKIP, ctx.smoke_note or "not run")
    failed = [(n, m) for n, (s, m) in sorted(ctx.smoke.items()) if s == FAIL]
    skipped = [(n, m) for n, (s, m) in sorted(ctx.smoke.items()) if s == SKIP]
    passed = [n for n, (s, _) in ctx.smoke.items() if s == PASS]
    if failed:
        first = quote(failed[0][0])
        return CheckResult("gpu-smoke-test", FAIL, "; ".join(f"{n}: {m}" for n, m in failed[:8]),
                           f"{KC} describe node {first}; {KC} get pods -n gpu-operator -o wide "
                           f"--field-selector spec.nodeName={first}")
    if skipped and not passed:
        return CheckResult("gpu-smoke-test", SKIP, "; ".join(f"{n}: {m}" for n, m in skipped[:8]))
    note = f"; not run on {'; '.join(f'{n} ({m})' for n, m in skipped[:8])}" if skipped else ""
    return CheckResult("gpu-smoke-test", PASS, f"passed on {len(passed)} GPU nodes{note}")


def run_cluster_checks(ctx: ClusterCheckContext) -> list[CheckResult]:
    return VERIFY_CLUSTER.run_on(ctx, crashed_check)


__all__ = ["VERIFY_CLUSTER", "ClusterCheckContext", "GPUExpectation", "run_cluster_checks"]
