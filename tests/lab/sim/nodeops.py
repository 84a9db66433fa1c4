"""gpuk8s lab: day-2 node operations of the simulated kubectl and kubeadm.

Called from labsim.py: `kubectl_hook` (cordon, uncordon, drain, delete node, pods and
PodDisruptionBudgets, RBAC objects), `record_applied` (whole Pod / PodDisruptionBudget / RBAC
documents after a kubectl apply), `node_overlay` (spec.unschedulable and its taint) and
`kubeadm_kubeconfig` (`kubeadm kubeconfig user`). State: `c["nodeops"]` in the shared cluster,
under labsim's cluster lock.

Sources (cited again next to each behaviour), Kubernetes v1.36 unless noted:
- staging/src/k8s.io/kubectl/pkg/cmd/drain/drain.go (RunDrain: "error: unable to drain node %q due
  to error: %s, continuing command...", "There are pending nodes to be drained:"; cordon's
  "node/%s cordoned" / "already cordoned"; "node/%s drained"), staging/src/k8s.io/kubectl/pkg/drain/
  drain.go (evictPods: "evicting pod %s/%s", "error when evicting pods/%q -n %q (will retry after
  5s): %v", "global timeout reached: %v"; "There are pending pods in node %q when an error
  occurred: %v"), staging/src/k8s.io/kubectl/pkg/drain/filters.go (DaemonSet pods need
  --ignore-daemonsets, emptyDir pods --delete-emptydir-data, pods with no controller --force;
  mirror pods skipped; the messages "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets
  to ignore)", "cannot delete Pods with local storage (use --delete-emptydir-data to override)",
  "cannot delete Pods declare no controller (use --force to override)").
- pkg/registry/core/pod/storage/eviction.go (a PDB with no disruptions allowed refuses with 429
  "Cannot evict pod as it would violate the pod's disruption budget.", cause "The disruption budget
  %s needs %v healthy pods and has %v currently"); pkg/controller/disruption/disruption.go
  (currentHealthy, desiredHealthy from minAvailable / maxUnavailable, disruptionsAllowed); policy/v1
  (an empty selector selects every pod of the namespace).
- pkg/registry/rbac/clusterrolebinding/strategy.go + pkg/apis/rbac/validation (roleRef is
  immutable: "cannot change roleRef"); the default ClusterRoles (plugin/pkg/auth/authorizer/rbac/
  bootstrappolicy/policy.go: cluster-admin, admin, edit, view).
- cmd/kubeadm/app/cmd/kubeconfig.go (`kubeadm kubeconfig user`: --config and --client-name are
  required, --validity-period a Go duration, default CertificateValidity (8760h) with a warning
  above it), cmd/kubeadm/app/phases/kubeconfig/kubeconfig.go (WriteKubeConfigWithClientCert: a
  client certificate signed by the cluster CA, CN = client name, O = --org; cluster named
  clusterName, context "<user>@<cluster>", server = controlPlaneEndpoint).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
import time
from pathlib import Path

import labsim
from labsim import Exit, err, now, out

NODE_KINDS = ("node", "nodes", "no")
POD_KINDS = ("pods", "pod", "po")
PDB_KINDS = ("poddisruptionbudgets", "poddisruptionbudget", "pdb", "pdbs",
             "poddisruptionbudgets.policy")
DEFAULT_CLUSTER_ROLES = ("cluster-admin", "admin", "edit", "view")
RETRY_S = 5.0                      # drain.go: "will retry after 5s"


def state(c: dict) -> dict:
    s = c.setdefault("nodeops", {})
    for k in ("pods", "pdbs", "rbac"):
        s.setdefault(k, {})
    return s


# --------------------------------------------------------------------------- pods and budgets

def _suffix(n: int = 5) -> str:
    return "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


def _schedulable(c: dict, node: dict) -> bool:
    """A node a replacement pod can land on: Ready, not cordoned, no NoSchedule taint."""
    return labsim.node_ready(c, node)[0] == "True" and not node.get("unschedulable") and \
        not any(t.get("effect") in ("NoSchedule", "NoExecute") for t in node.get("taints") or [])


def _pod_json(c: dict, key: str, p: dict) -> dict:
    doc = json.loads(json.dumps(p["doc"]))
    md = doc.setdefault("metadata", {})
    md["namespace"] = md.get("namespace") or "default"
    md.setdefault("uid", p["uid"])
    md["creationTimestamp"] = labsim.iso(p["created"])
    node = c.get("nodes", {}).get((doc.get("spec") or {}).get("nodeName") or "")
    running = node is not None and labsim.node_ready(c, node)[0] == "True"
    doc["status"] = {"phase": "Running" if running else "Pending",
                     "conditions": [{"type": "Ready", "status": "True" if running else "False"}]}
    return doc


# The controllers of the pods labsim.all_pods simulates (what `kubectl get pod -o json` shows in
# metadata.ownerReferences, or the mirror-pod annotation of the kubelet's static pods): drain
# decides from these (filters.go). kubeadm: static pods (controlplane, etcd), kube-proxy DaemonSet,
# CoreDNS Deployment; Calico: calico-node DaemonSet, tigera-operator Deployment; the GPU Operator's
# operands are DaemonSets.
_DAEMONSETS = {"kube-proxy", "calico-node"}
_DEPLOYMENTS = {"kube-dns": "coredns-7c65d6cfc9", "tigera-operator": "tigera-operator-5f9c8d7b6"}


def with_owners(pods: list[dict]) -> list[dict]:
    """labsim.all_pods' pods with the ownerReferences (or mirror annotation) real ones carry."""
    for p in pods:
        md = p.setdefault("metadata", {})
        if md.get("ownerReferences") or "kubernetes.io/config.mirror" in (md.get("annotations") or {}):
            continue
        labels = md.get("labels") or {}
        app = labels.get("k8s-app") or labels.get("name") or labels.get("app") or ""
        if labels.get("tier") == "control-plane" and md.get("namespace") == "kube-system":
            md.setdefault("annotations", {})["kubernetes.io/config.mirror"] = labsim.hashlib.sha1(
                md.get("name", "").encode()).hexdigest()
        elif app in _DAEMONSETS or md.get("namespace") == "gpu-operator":
            md["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": app or md.get("name"),
                                      "controller": True, "blockOwnerDeletion": True}]
        elif app in _DEPLOYMENTS:
            md["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": _DEPLOYMENTS[app],
                                      "controller": True, "blockOwnerDeletion": True}]
    return pods


def workload_pods(c: dict) -> list[dict]:
    """The pods tests applied (kubectl apply -f of a Pod), as the API server shows them."""
    return [_pod_json(c, k, p) for k, p in sorted(state(c)["pods"].items())]


def all_pods(c: dict) -> list[dict]:
    return labsim.all_pods(c)   # labsim's own (with_owners) and the applied ones (workload_pods)


def _selects(selector: dict | None, labels: dict) -> bool:
    if not selector:
        return True   # policy/v1: an empty selector selects every pod of the namespace
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if (op == "In" and labels.get(k) not in vals) or (op == "NotIn" and labels.get(k) in vals) or \
                (op == "Exists" and k not in labels) or (op == "DoesNotExist" and k in labels):
            return False
    return True


def _pdb_pods(c: dict, pdb: dict) -> list[dict]:
    ns = pdb["metadata"].get("namespace") or "default"
    sel = (pdb.get("spec") or {}).get("selector")
    return [p for p in all_pods(c) if p["metadata"]["namespace"] == ns
            and _selects(sel, p["metadata"].get("labels") or {})]


def _intstr(v, total: int) -> int:
    if isinstance(v, str) and v.endswith("%"):
        return -(-int(v[:-1]) * total // 100)   # rounded up (intstr.GetScaledValueFromIntOrPercent)
    return int(v)


def pdb_json(c: dict, p: dict) -> dict:
    """disruption.go: currentHealthy (Ready pods), desiredHealthy (minAvailable, or expected minus
    maxUnavailable), disruptionsAllowed = currentHealthy - desiredHealthy (never below 0)."""
    doc = json.loads(json.dumps(p["doc"]))
    doc["metadata"]["namespace"] = doc["metadata"].get("namespace") or "default"
    pods = _pdb_pods(c, doc)
    healthy = sum(1 for x in pods if x["status"]["phase"] == "Running")
    expected = len(pods)
    spec = doc.get("spec") or {}
    if "minAvailable" in spec:
        desired = _intstr(spec["minAvailable"], expected)
    else:
        desired = expected - _intstr(spec.get("maxUnavailable", 0), expected)
    doc["status"] = {"currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
                     "disruptionsAllowed": max(0, healthy - desired), "observedGeneration": 1}
    return doc


def all_pdbs(c: dict) -> list[dict]:
    return [pdb_json(c, p) for _, p in sorted(state(c)["pdbs"].items())]


def _key(doc: dict) -> str:
    md = doc.get("metadata") or {}
    return f"{md.get('namespace') or 'default'}/{md.get('name')}"


def record_applied(c: dict, files: list[str]) -> None:
    """After labsim's kubectl apply succeeded: keep whole Pods, PDBs and RBAC objects."""
    s = state(c)
    for f in files:
        try:
            docs = [d for d in labsim.yaml.safe_load_all(Path(f).read_text()) if isinstance(d, dict)]
        except (OSError, labsim.yaml.YAMLError):
            continue
        for d in docs:
            kind = d.get("kind")
            if kind == "Pod":
                old = s["pods"].get(_key(d))
                s["pods"][_key(d)] = {"doc": d, "uid": (old or {}).get("uid") or str(__import__("uuid").uuid4()),
                                      "created": (old or {}).get("created") or now()}
            elif kind == "PodDisruptionBudget":
                s["pdbs"][_key(d)] = {"doc": d}
            elif kind in ("ClusterRole", "ClusterRoleBinding"):
                s["rbac"][f"{kind.lower()}/{d['metadata']['name']}"] = d


def _refuse_roleref_change(c: dict, rest: list[str]) -> None:
    """An update of a ClusterRoleBinding's roleRef is invalid (rbac validation: cannot change roleRef)."""
    f = labsim._flag_value(rest, "-f") or labsim._flag_value(rest, "--filename")
    if not f or f.startswith(("http://", "https://")):
        return
    try:
        docs = [d for d in labsim.yaml.safe_load_all(Path(f).read_text()) if isinstance(d, dict)]
    except (OSError, labsim.yaml.YAMLError):
        return
    for d in docs:
        if d.get("kind") != "ClusterRoleBinding":
            continue
        name = (d.get("metadata") or {}).get("name")
        have = state(c)["rbac"].get(f"clusterrolebinding/{name}")
        if have and have.get("roleRef") != d.get("roleRef"):
            raise Exit(1, f'The ClusterRoleBinding "{name}" is invalid: roleRef: Invalid value: '
                          f'{json.dumps(d.get("roleRef"))}: cannot change roleRef')


# --------------------------------------------------------------------------- nodes

def node_overlay(n: dict, doc: dict) -> None:
    """A cordoned node: spec.unschedulable and the node.kubernetes.io/unschedulable taint the node
    lifecycle controller adds (pkg/controller/nodelifecycle, taintNodeByCondition)."""
    if n.get("unschedulable"):
        doc["spec"]["unschedulable"] = True
        doc["spec"].setdefault("taints", []).append(
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": labsim.iso(now())})


def _remove_pod(c: dict, key: str) -> None:
    """A pod goes (evicted, or its node deleted); its ReplicaSet makes a replacement on a node it
    can schedule to (Pending with no node when there is none)."""
    s = state(c)
    p = s["pods"].pop(key)
    md = p["doc"].get("metadata") or {}
    owners = [o for o in md.get("ownerReferences") or [] if o.get("controller")]
    if not owners or owners[0].get("kind") not in ("ReplicaSet", "StatefulSet", "ReplicationController", "Job"):
        return
    doc = json.loads(json.dumps(p["doc"]))
    target = next((n for n in sorted(c.get("nodes", {}).values(), key=lambda n: n["created"])
                   if _schedulable(c, n)), None)
    spec = doc.setdefault("spec", {})
    if target is None:
        spec.pop("nodeName", None)
    else:
        spec["nodeName"] = target["name"]
    base = owners[0].get("name") or md.get("name")
    doc["metadata"]["name"] = md.get("name") if owners[0]["kind"] == "StatefulSet" else f"{base}-{_suffix()}"
    s["pods"][_key(doc)] = {"doc": doc, "uid": str(__import__("uuid").uuid4()), "created": now()}


def _evict(c: dict, key: str) -> str | None:
    """None when evicted; else the API's refusal (eviction.go)."""
    pod = _pod_json(c, key, state(c)["pods"][key])
    for p in state(c)["pdbs"].values():
        b = pdb_json(c, p)
        if b["metadata"]["namespace"] != pod["metadata"]["namespace"] or \
                not _selects((b.get("spec") or {}).get("selector"), pod["metadata"].get("labels") or {}):
            continue
        if b["status"]["disruptionsAllowed"] <= 0 and pod["status"]["phase"] == "Running":
            return "Cannot evict pod as it would violate the pod's disruption budget."
    _remove_pod(c, key)
    return None


def _drain(c: dict, rest: list[str], flags: list[str], words: list[str]) -> int:
    if len(words) != 1:
        raise Exit(1, "error: USAGE: drain NODE [flags]")
    name = words[0]
    node = c.get("nodes", {}).get(name)
    if node is None:
        raise Exit(1, f'Error from server (NotFound): nodes "{name}" not found')
    timeout = labsim._parse_ttl(labsim._flag_value(rest, "--timeout") or "0s")
    out(f"node/{name} {'already cordoned' if node.get('unschedulable') else 'cordoned'}")
    node["unschedulable"] = True
    on = [p for p in all_pods(c) if (p.get("spec") or {}).get("nodeName") == name
          and p["status"]["phase"] not in ("Succeeded", "Failed")
          and "kubernetes.io/config.mirror" not in (p["metadata"].get("annotations") or {})]
    ds, local, bare, go = [], [], [], []
    for p in on:
        ref = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        owners = [o for o in p["metadata"].get("ownerReferences") or [] if o.get("controller")]
        if owners and owners[0].get("kind") == "DaemonSet":
            ds.append(ref)
            continue
        if not owners and "--force" not in flags:
            bare.append(ref)
        if any("emptyDir" in v for v in (p.get("spec") or {}).get("volumes") or []) and \
                "--delete-emptydir-data" not in flags:
            local.append(ref)
        go.append(p)
    problems = []
    if bare:
        problems.append(f"cannot delete Pods declare no controller (use --force to override): {', '.join(bare)}")
    if ds and "--ignore-daemonsets" not in flags:
        problems.append(f"cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): {', '.join(ds)}")
    if local:
        problems.append(f"cannot delete Pods with local storage (use --delete-emptydir-data to override): "
                        f"{', '.join(local)}")
    if problems:
        msg = problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"
        err(f"error: unable to drain node \"{name}\" due to error: {msg}, continuing command...\n"
            f"There are pending nodes to be drained:\n {name}\n" + "\n".join(problems))
        return 1
    if ds:
        err(f"Warning: ignoring DaemonSet-managed Pods: {', '.join(ds)}")
    start = time.monotonic()
    pending = [_key(p) for p in go]
    for k in pending:
        out(f"evicting pod {k}")
    while pending:
        left = []
        for k in pending:
            ns, pod = k.split("/", 1)
            if k not in state(c)["pods"]:   # a pod labsim computes (CoreDNS...): its controller's
                out(f"pod/{pod} evicted")    # replacement is computed elsewhere too
                continue
            why = _evict(c, k)
            if why is None:
                out(f"pod/{pod} evicted")
            else:
                err(f"error when evicting pods/\"{pod}\" -n \"{ns}\" (will retry after 5s): {why}")
                left.append(k)
        pending = left
        if not pending:
            break
        # the lab holds the cluster lock while it waits: nothing else changes the budget meanwhile
        if timeout and time.monotonic() - start + RETRY_S > timeout:
            time.sleep(max(0.0, timeout - (time.monotonic() - start)))
            what = "; ".join(f"error when evicting pods/\"{k.split('/', 1)[1]}\" -n \"{k.split('/', 1)[0]}\": "
                             f"global timeout reached: {_go(timeout)}" for k in pending)
            err(f"There are pending pods in node \"{name}\" when an error occurred: {what}\n"
                f"error: unable to drain node \"{name}\" due to error: {what}, continuing command...\n"
                f"There are pending nodes to be drained:\n {name}\n{what}")
            return 1
        time.sleep(RETRY_S)
        for k in pending:
            out(f"evicting pod {k}")
    out(f"node/{name} drained")
    return 0


def _go(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}m{s % 60}s" if s >= 60 else f"{s}s"


def _list(items: list[dict]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}},
                      indent=4)


def kubectl_hook(c: dict, rest: list[str], ns: str, output: str | None) -> int | None:
    """Node operations, pods, PDBs and RBAC reads; None: not ours (labsim handles it)."""
    verb = rest[0] if rest else ""
    flags = [a for a in rest[1:] if a.startswith("-")]
    vals = {labsim._flag_value(rest, f) for f in ("--field-selector", "--timeout", "-l", "--selector")}
    words = [a for a in rest[1:] if not a.startswith("-") and a not in vals]
    every_ns = "-A" in flags or "--all-namespaces" in flags
    if verb in ("cordon", "uncordon"):
        if len(words) != 1:
            raise Exit(1, f"error: USAGE: {verb} NODE [flags]")
        node = c.get("nodes", {}).get(words[0])
        if node is None:
            raise Exit(1, f'Error from server (NotFound): nodes "{words[0]}" not found')
        want = verb == "cordon"
        out(f"node/{words[0]} {'already ' if bool(node.get('unschedulable')) == want else ''}{verb}ed")
        node["unschedulable"] = want
        return 0
    if verb == "drain":
        return _drain(c, rest, flags, words)
    if verb == "delete" and words and words[0] in NODE_KINDS:
        for name in words[1:]:
            if c.get("nodes", {}).pop(name, None) is None:
                if "--ignore-not-found" in flags or "--ignore-not-found=true" in flags:
                    continue
                raise Exit(1, f'Error from server (NotFound): nodes "{name}" not found')
            for k in [k for k, p in state(c)["pods"].items() if (p["doc"].get("spec") or {}).get("nodeName") == name]:
                _remove_pod(c, k)   # the pod GC deletes pods bound to a node that no longer exists
            out(f'node "{name}" deleted')
        return 0
    if verb == "delete" and words and words[0] in PDB_KINDS:
        for name in words[1:]:
            if state(c)["pdbs"].pop(f"{ns}/{name}", None) is None:
                if "--ignore-not-found" not in flags:
                    raise Exit(1, f'Error from server (NotFound): poddisruptionbudgets.policy "{name}" not found')
                continue
            c.get("objects", {}).get("fields", {}).pop(f"poddisruptionbudget.policy/{name}", None)
            out(f'poddisruptionbudget.policy "{name}" deleted')
        return 0
    if verb == "delete" and words and words[0] in ("clusterrolebinding", "clusterrolebindings"):
        for name in words[1:]:
            if state(c)["rbac"].pop(f"clusterrolebinding/{name}", None) is None:
                if "--ignore-not-found" not in flags:
                    raise Exit(1, f'Error from server (NotFound): clusterrolebindings.rbac.authorization.k8s.io '
                                  f'"{name}" not found')
                continue
            c.get("objects", {}).get("fields", {}).pop(f"clusterrolebinding.rbac.authorization.k8s.io/{name}", None)
            out(f'clusterrolebinding.rbac.authorization.k8s.io "{name}" deleted')
        return 0
    if verb == "apply":
        _refuse_roleref_change(c, rest)
        return None
    if verb != "get" or not words:
        return None
    kind = words[0].lower()
    if "/" in kind and kind.split("/", 1)[0] in ("clusterrole", "clusterrolebinding", "clusterroles",
                                                  "clusterrolebindings"):
        k, name = kind.split("/", 1)
        k = k.rstrip("s")
        obj = state(c)["rbac"].get(f"{k}/{name}")
        if obj is None and k == "clusterrole" and name in DEFAULT_CLUSTER_ROLES:
            obj = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {
                "name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}}, "rules": []}
        if obj is None:
            if "--ignore-not-found" in flags:
                return 0
            raise Exit(1, f'Error from server (NotFound): {k}s.rbac.authorization.k8s.io "{name}" not found')
        if output != "json":
            raise Exit(1, "error: the gpuk8s lab kubectl simulates RBAC objects with -o json only")
        out(json.dumps(obj, indent=4))
        return 0
    if kind in PDB_KINDS:
        items = [b for b in all_pdbs(c) if every_ns or b["metadata"]["namespace"] == ns]
        if output != "json":
            raise Exit(1, "error: the gpuk8s lab kubectl simulates poddisruptionbudgets with -o json only")
        out(_list(items))
        return 0
    if kind in POD_KINDS and (every_ns or labsim._flag_value(rest, "--field-selector") or
                              ns not in ("calico-system", "gpu-operator")):
        items = [p for p in all_pods(c) if every_ns or p["metadata"]["namespace"] == ns]
        sel = labsim._flag_value(rest, "--field-selector")
        if sel:
            for term in sel.split(","):
                k, _, v = term.partition("=")
                if k != "spec.nodeName":
                    raise Exit(1, f'Error from server (BadRequest): Unable to find {{"" "v1" "pods"}} that match '
                                  f'label selector "", field selector "{sel}": field label not supported: {k}')
                items = [p for p in items if (p.get("spec") or {}).get("nodeName") == v]
        if output != "json":
            raise Exit(1, "error: the gpuk8s lab kubectl simulates pods outside calico-system with -o json only")
        out(_list(items))
        return 0
    return None


# --------------------------------------------------------------------------- kubeadm kubeconfig user

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
CERTIFICATE_VALIDITY = 8760 * 3600   # kubeadm constants.CertificateValidity (365 days)


def _go_duration(flag: str, text: str) -> float:
    """Go's time.ParseDuration (what pflag's DurationVar uses; src/time/format.go): no "d" unit,
    'time: unknown unit "d" in duration "30d"', 'time: missing unit in duration "30"'."""
    bad = f'invalid argument "{text}" for "--{flag}" flag: time: '
    m = re.fullmatch(r"(?:\d+(?:\.\d+)?[a-zµ]*)+", text or "")
    if not m:
        raise Exit(1, bad + f'invalid duration "{text}"')
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)([a-zµ]*)", text):
        if not unit:
            raise Exit(1, bad + f'missing unit in duration "{text}"')
        if unit not in _UNIT:
            raise Exit(1, bad + f'unknown unit "{unit}" in duration "{text}"')
    return sum(float(n) * _UNIT[u] for n, u in _GO_DURATION.findall(text))


def kubeadm_kubeconfig(args: list[str]) -> int:
    if not args or args[0] != "user":
        raise Exit(1, f"kubeadm: the gpuk8s lab does not simulate: kubeadm kubeconfig {' '.join(args)}")
    flags: dict[str, str] = {}
    orgs: list[str] = []
    i, rest = 0, args[1:]
    while i < len(rest):
        a = rest[i]
        name, eq, val = a.lstrip("-").partition("=")
        if not a.startswith("--") or name not in ("config", "client-name", "validity-period", "org", "token"):
            raise Exit(1, f"unknown flag: {a}\nTo see the stack trace of this error execute with --v=5 or higher")
        if not eq:
            if i + 1 >= len(rest):
                raise Exit(1, f"flag needs an argument: --{name}")
            val = rest[i + 1]
            i += 1
        if name == "org":
            orgs += val.split(",")
        else:
            flags[name] = val
        i += 1
    missing = [f for f in ("client-name", "config") if f not in flags]
    if missing:
        raise Exit(1, "required flag(s) " + ", ".join(f'"{m}"' for m in missing) + " not set")
    validity = _go_duration("validity-period", flags["validity-period"]) if "validity-period" in flags \
        else CERTIFICATE_VALIDITY
    kinds = labsim.load_config(flags["config"], "init")
    cc = kinds.get("ClusterConfiguration") or {}
    if validity > CERTIFICATE_VALIDITY:
        err(f"W0101 00:00:00.000000    1234 kubeconfig.go:95] WARNING: the specified certificate validity period "
            f"{_go(validity)} is longer than the default duration 8760h0m0s, this may increase security risks.")
    cert_dir = cc.get("certificatesDir") or "/etc/kubernetes/pki"
    try:
        ca_pem = Path(cert_dir, "ca.crt").read_text()
        ca_key = Path(cert_dir, "ca.key").read_text()
    except OSError as e:
        raise Exit(1, f"couldn't create a kubeconfig; the CA files couldn't be loaded: failure loading ca certificate "
                      f"authority: couldn't load the certificate file {cert_dir}/ca.crt: open {cert_dir}/ca.crt: "
                      f"{e.strerror.lower()}")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    signer = serialization.load_pem_private_key(ca_key.encode(), password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    t = dt.datetime.now(dt.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs] +
                        [x509.NameAttribute(NameOID.COMMON_NAME, flags["client-name"])])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(t - dt.timedelta(minutes=5))
            .not_valid_after(t + dt.timedelta(seconds=validity))
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(signer, hashes.SHA256()))
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    cluster = cc.get("clusterName") or "kubernetes"
    user = flags["client-name"]
    endpoint = cc.get("controlPlaneEndpoint") or f"{labsim._cp_address()}:6443"
    doc = {"apiVersion": "v1", "clusters": [{"cluster": {"certificate-authority-data": b64(ca_pem.encode()),
                                                         "server": f"https://{endpoint}"}, "name": cluster}],
           "contexts": [{"context": {"cluster": cluster, "user": user}, "name": f"{user}@{cluster}"}],
           "current-context": f"{user}@{cluster}", "kind": "Config", "preferences": {},
           "users": [{"name": user, "user": {
               "client-certificate-data": b64(cert.public_bytes(serialization.Encoding.PEM)),
               "client-key-data": b64(key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.TraditionalOpenSSL,
                                                        serialization.NoEncryption()))}}]}
    out(labsim.yaml.safe_dump(doc, sort_keys=False).rstrip("\n"))
    return 0



# --------------------------------------------------------------------------- netfilter tools
# iptables 1.8.10 (nf_tables backend, as Ubuntu 24.04 and Rocky 9 ship it): iptables/iptables-save.c
# (header and table dump, "# Generated by iptables-save v1.8.10 (nf_tables) on <date>"),
# iptables/iptables-restore.c / xtables-restore.c ("COMMIT expected at line %d", a jump to a chain
# that does not exist: "Couldn't load target `%s':No such file or directory", "Error occurred at
# line: %d"; without --noflush the tables in the input replace the kernel's); nftables 1.0.x
# (`nft list tables` prints "table <family> <name>"; deleting a table that is not there: "Error:
# Could not process rule: No such file or directory"); ipvsadm 1.31 (-S/--save prints the rules in
# its own `-A -t addr:port -s rr` format; -C/--clear).

NETFILTER = Path("/etc/gpuk8s-lab/netfilter")
_BUILTIN_TARGETS = {"ACCEPT", "DROP", "RETURN", "REJECT", "QUEUE", "LOG", "MARK", "CONNMARK", "MASQUERADE",
                    "SNAT", "DNAT", "REDIRECT", "NOTRACK", "CT", "TCPMSS", "NFLOG", "CHECKSUM"}
_DEFAULT_RULES = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"


def _rules_file(tool: str) -> Path:
    return NETFILTER / f"{'ip6tables' if tool.startswith('ip6') else 'iptables'}.rules"


def _restore(tool: str, text: str) -> int:
    name = "ip6tables-restore" if tool.startswith("ip6") else "iptables-restore"
    table, chains, lines = None, set(), text.splitlines()
    for i, ln in enumerate(lines, 1):
        s = ln.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("*"):
            if table is not None:
                raise Exit(1, f"{name}: COMMIT expected at line {i}")
            table, chains = s[1:], set()
        elif s == "COMMIT":
            if table is None:
                raise Exit(1, f"{name} v1.8.10 (nf_tables): no command specified\nError occurred at line: {i}")
            table = None
        elif table is None:
            raise Exit(1, f"{name} v1.8.10 (nf_tables): no command specified\nError occurred at line: {i}")
        elif s.startswith(":"):
            chains.add(s[1:].split()[0])
        elif s.startswith("-A "):
            words = s.split()
            if words[1] not in chains:
                raise Exit(1, f"{name} v1.8.10 (nf_tables): Chain '{words[1]}' does not exist\n"
                              f"Error occurred at line: {i}\nTry `{name} -h' or '{name} --help' for more information.")
            if "-j" in words:
                target = words[words.index("-j") + 1]
                if target not in _BUILTIN_TARGETS and target not in chains:
                    raise Exit(1, f"{name} v1.8.10 (nf_tables): Couldn't load target `{target}':No such file or "
                                  f"directory\n\nError occurred at line: {i}\nTry `{name} -h' or '{name} --help' "
                                  "for more information.")
    if table is not None:
        raise Exit(1, f"{name}: COMMIT expected at line {len(lines) + 1}")
    NETFILTER.mkdir(parents=True, exist_ok=True)
    _rules_file(tool).write_text(text if text.endswith("\n") else text + "\n")
    return 0


def netfilter(args: list[str]) -> int:
    tool, rest = args[0], args[1:]
    if not labsim.is_root():
        raise Exit(1, "Error: Operation not permitted" if tool == "nft" else
                   f"{tool}: Permission denied (you must be root)")
    if tool.endswith("-save"):
        f = _rules_file(tool)
        body = f.read_text() if f.exists() else _DEFAULT_RULES
        out(f"# Generated by {tool} v1.8.10 (nf_tables) on {time.strftime('%a %b %d %H:%M:%S %Y')}\n"
            + body.rstrip("\n") + f"\n# Completed on {time.strftime('%a %b %d %H:%M:%S %Y')}")
        return 0
    if tool.endswith("-restore"):
        import sys
        return _restore(tool, sys.stdin.read())
    if tool == "nft":
        f = NETFILTER / "nft.tables"
        tables = [ln.split() for ln in (f.read_text().splitlines() if f.exists() else []) if ln.strip()]
        if rest[:2] == ["list", "tables"]:
            for fam, name in tables:
                out(f"table {fam} {name}")
            return 0
        if rest[:2] == ["delete", "table"] and len(rest) == 4:
            if [rest[2], rest[3]] not in tables:
                raise Exit(1, "Error: Could not process rule: No such file or directory\n"
                              f"delete table {rest[2]} {rest[3]}\n{'^' * (14 + len(rest[2]) + len(rest[3]))}")
            tables.remove([rest[2], rest[3]])
            f.write_text("".join(f"{a} {b}\n" for a, b in tables))
            return 0
        raise Exit(1, f"the gpuk8s lab does not simulate: nft {' '.join(rest)}")
    if tool == "ipvsadm":
        f = NETFILTER / "ipvs.rules"
        if rest in (["-Sn"], ["-S", "-n"], ["--save", "-n"], ["-S"], ["--save"]):
            text = f.read_text() if f.exists() else ""
            if text.strip():
                out(text.rstrip("\n"))
            return 0
        if rest in (["--clear"], ["-C"]):
            if f.exists():
                f.write_text("")
            return 0
        raise Exit(1, f"the gpuk8s lab does not simulate: ipvsadm {' '.join(rest)}")
    raise Exit(1, f"the gpuk8s lab does not simulate: {tool}")
