"""Reset phases: take nodes out of the cluster and return their hosts to a state `up` can take.

Order per node, after the kubeadm docs ("Remove the node"): cordon and drain (PDBs respected,
with a timeout and a report of what blocks), `kubeadm reset -f` (which, on a control plane, also
removes the node's etcd member through the API: kubeadm's reset phase `remove-etcd-member`,
cmd/kubeadm/app/cmd/phases/reset/removeetcdmember.go, and stops the kubelet), then what kubeadm
reset leaves behind (CNI configuration, Kubernetes' and Calico's iptables/nftables rules, IPVS,
Calico's interfaces, kubelet state, the GPU toolkit's containerd drop-in, the admin kubeconfig
`up` installed), and last the Node object. Every step decides from facts (the node's pods, the
Node, the probe's Kubernetes files, the leftovers a read finds), so an interrupted reset is
finished by running it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from gpuk8s.errors import ClusterStateError, RemoteCommandError, TransportError, UsageError
from gpuk8s.facts.cluster import ClusterFacts, kubectl, name_of, node_ready, parse_list
from gpuk8s.host import Host
from gpuk8s.paths import ADMIN_CONF, CNI_CONF_DIR
from gpuk8s.phases.base import Context, Phase, PhaseResult, poll
from gpuk8s.render.gpu import CONTAINERD_DROP_IN
from gpuk8s.shell import Cmd

CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
KUBEADM_RESET_TIMEOUT = 600.0
KUBELET_DIR = "/var/lib/kubelet"
# kubeadm's warning when remove-etcd-member could not remove the member (it goes on regardless).
ETCD_MEMBER_NOT_REMOVED = "Failed to remove etcd member"

# Read-only: what kubeadm reset leaves behind, one item per line. $1 CNI conf dir, $2 kubelet
# state dir, $3 the GPU toolkit's containerd drop-in, $4 the control-plane endpoint (an admin
# kubeconfig naming it is this cluster's), $5 the SSH user. Tools that are not installed have
# nothing to clean (iptables, nft, ipvsadm are optional on a server).
LEFTOVERS_SCRIPT = r'''
[ -n "$(ls -A -- "$1" 2>/dev/null)" ] && echo cni
[ -e "$2" ] && echo kubelet-state
[ -e "$3" ] && echo gpu-drop-in
for h in /root "$(getent passwd "$5" | cut -d: -f6)"; do
  [ -n "$h" ] && grep -qsF -- "https://$4" "$h/.kube/config" && echo "kubeconfig:$h/.kube/config"
done
for d in /sys/class/net/*; do
  n=${d##*/}
  case $n in cali*|vxlan.calico|vxlan-v6.calico) echo "link:$n" ;; esac
done
for t in iptables ip6tables; do
  command -v "$t-save" >/dev/null 2>&1 && "$t-save" 2>/dev/null | grep -q -e 'KUBE-' -e 'cali-' && echo "$t"
done
command -v nft >/dev/null 2>&1 && nft list tables 2>/dev/null | while read -r _ fam name; do
  case $name in kube-proxy|calico|cali*) echo "nft:$fam:$name" ;; esac
done
command -v ipvsadm >/dev/null 2>&1 && [ -n "$(ipvsadm -Sn 2>/dev/null)" ] && echo ipvs
exit 0
'''

# Removes the items LEFTOVERS_SCRIPT listed ($1 CNI dir, $2 kubelet dir, $3 drop-in, then the items);
# containerd is restarted when its CNI configuration or the toolkit's drop-in went (DOMAIN 2.8).
CLEANUP_SCRIPT = r'''
set -u; cni=$1; kl=$2; dropin=$3; shift 3; rc=0; restart=
for x in "$@"; do
  case $x in
    cni) find "$cni" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} + && restart=1 || rc=1 ;;
    kubelet-state) rm -rf -- "$kl" || rc=1 ;;
    gpu-drop-in) rm -f -- "$dropin" && restart=1 || rc=1 ;;
    kubeconfig:*) rm -f -- "${x#kubeconfig:}" || rc=1 ;;
    link:*) ip link delete "${x#link:}" 2>/dev/null || [ ! -e "/sys/class/net/${x#link:}" ] || rc=1 ;;
    iptables|ip6tables) "$x-save" | grep -v -e 'KUBE-' -e 'cali-' | "$x-restore" || rc=1 ;;
    nft:*) f=${x#nft:}; nft delete table "${f%%:*}" "${f#*:}" || rc=1 ;;
    ipvs) ipvsadm --clear || rc=1 ;;
    *) echo "unknown item $x" >&2; rc=1 ;;
  esac
done
if [ -n "$restart" ] && systemctl is-active -q containerd; then systemctl restart containerd || rc=1; fi
exit $rc
'''


@dataclass
class ResetRequest:
    """What `gpuk8s reset` was asked for, and (filled by the run) what it found."""

    hosts: tuple[str, ...] = ()
    all: bool = False
    drain_timeout: float = 300.0
    confirm: Callable[[str], bool] | None = None   # None: --yes (or a dry run)
    api: str | None = None             # the host whose kubectl is used (None: no cluster answers)
    nodes: dict[str, dict] = field(default_factory=dict)   # the cluster's Nodes at the start
    plan: list[str] = field(default_factory=list)          # the summary the user confirmed
    leftovers: dict[str, list[str]] = field(default_factory=dict)

    def targets(self, ctx: Context) -> list[Host]:
        names = set(self.hosts) if not self.all else {h.name for h in ctx.hosts}
        return [h for h in ctx.hosts if h.name in names]


def _drainable(pods: list[dict], node: str) -> list[dict]:
    """The pods `kubectl drain --ignore-daemonsets` evicts from a node: not DaemonSet-managed,
    not mirror (static) pods, not finished (staging/src/k8s.io/kubectl/pkg/drain/filters.go)."""
    out = []
    for p in pods:
        md, spec = p.get("metadata") or {}, p.get("spec") or {}
        if spec.get("nodeName") != node or (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        if "kubernetes.io/config.mirror" in (md.get("annotations") or {}):
            continue
        if any(o.get("kind") == "DaemonSet" and o.get("controller") for o in md.get("ownerReferences") or []):
            continue
        out.append(p)
    return out


def _selects(selector: dict, labels: dict) -> bool:
    """A LabelSelector's matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    if not selector:
        return True    # policy/v1: an empty selector selects every pod of the namespace
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if (op == "In" and labels.get(k) not in vals) or (op == "NotIn" and labels.get(k) in vals) or \
                (op == "Exists" and k not in labels) or (op == "DoesNotExist" and k in labels):
            return False
    return True


def blockers(pods: list[dict], pdbs: list[dict]) -> list[str]:
    """One line per pod still on the node, with the PodDisruptionBudgets that cover it."""
    lines = []
    for p in pods:
        md = p.get("metadata") or {}
        ns, labels = md.get("namespace") or "default", md.get("labels") or {}
        covering = []
        for b in pdbs:
            bmd, spec, st = b.get("metadata") or {}, b.get("spec") or {}, b.get("status") or {}
            if (bmd.get("namespace") or "default") != ns or not _selects(spec.get("selector") or {}, labels):
                continue
            limit = (f"minAvailable {spec['minAvailable']}" if "minAvailable" in spec else
                     f"maxUnavailable {spec.get('maxUnavailable')}")
            covering.append(f"PodDisruptionBudget {ns}/{name_of(b)} ({limit}, "
                            f"{st.get('disruptionsAllowed', '?')} disruptions allowed)")
        owners = ", ".join(f"{o.get('kind')}/{o.get('name')}" for o in md.get("ownerReferences") or []) or \
            "no controller"
        lines.append(f"pod {ns}/{md.get('name')} ({owners})" + (f": {'; '.join(covering)}" if covering else ""))
    return lines


class ResetPhase(Phase):
    """A phase of `gpuk8s reset`: it works from the run's one ResetRequest."""

    def __init__(self, request: ResetRequest):
        self.request = request


class NodeObjectPhase(ResetPhase):
    """A phase that changes Node objects through the API (cordon/drain, delete): not with --all
    (the whole cluster goes) nor without a control plane to run kubectl on."""

    def applies(self, ctx: Context) -> bool:
        return not self.request.all and self.request.api is not None


class PlanReset(ResetPhase):
    """Which nodes go, in what order; refuses what would break the cluster; asks to confirm."""

    title = "plan reset"

    def run(self, ctx: Context) -> PhaseResult:
        req = self.request
        targets = req.targets(ctx)
        down = [h for h in targets if h.error is not None or h.facts is None]
        if down:
            raise TransportError("unreachable", "cannot reset unreachable hosts (nothing was changed):\n" + "\n".join(
                f"- {h.name}: {ctx.log.redact(str(h.error))}" for h in down))
        names = {h.name for h in targets}
        # kubectl from a control plane that stays (else one that goes, until it is reset itself)
        cps = [h for h in ctx.hosts if h.is_control_plane and h.error is None and h.has_file(ADMIN_CONF)]
        api = next((h for h in cps if h.name not in names), None) or next(iter(cps), None)
        req.api = api.name if api is not None else None
        if api is not None:
            view = ClusterFacts(api)
            if view.read() is None:
                if not req.all:
                    stderr = view.last.stderr.strip()[-300:] if view.last is not None else ""
                    raise ClusterStateError(
                        f"{api.name}: the API server does not answer ({ctx.log.redact(stderr)}), so the "
                        "nodes cannot be drained nor etcd quorum checked; nothing was changed. Bring the "
                        "control plane back, or reset the whole cluster with --all")
                req.api = None
            else:
                req.nodes = view.nodes()
        if not req.all:
            self._refuse_unsafe(ctx, targets)
        req.plan = self._summary(ctx, targets)
        if req.confirm is not None and not ctx.dry_run and not req.confirm("\n".join(req.plan)):
            raise UsageError("reset cancelled; nothing was changed")
        return PhaseResult(self.title, notes=req.plan)

    def _refuse_unsafe(self, ctx: Context, targets: list[Host]) -> None:
        """The last control plane, or one whose removal leaves etcd without a quorum (stacked
        etcd: one member per control-plane node), only goes with --all."""
        nodes = self.request.nodes
        names = {h.name for h in targets}
        cps = {n for n, node in nodes.items()
               if CONTROL_PLANE_LABEL in ((node.get("metadata") or {}).get("labels") or {})}
        cps |= {h.name for h in ctx.hosts if h.is_control_plane and h.has_file(ADMIN_CONF)}
        going = cps & names
        if not going:
            return
        staying = cps - names
        if not staying:
            raise UsageError(f"refusing to reset {', '.join(sorted(going))}: the last control plane "
                             "(the cluster would be gone). Use --all to reset the whole cluster")
        ready = {n for n in staying if n in nodes and node_ready(nodes[n])}
        quorum = len(staying) // 2 + 1
        if len(ready) < quorum:
            raise UsageError(
                f"refusing to reset {', '.join(sorted(going))}: etcd would keep {len(staying)} members of "
                f"which {len(ready)} are Ready ({', '.join(sorted(ready)) or 'none'}), less than its quorum "
                f"of {quorum}. Bring the others back first, or use --all to reset the whole cluster")

    def _summary(self, ctx: Context, targets: list[Host]) -> list[str]:
        req = self.request
        lines = []
        for h in targets:
            role = "control plane" if h.is_control_plane else "worker"
            steps = []
            if h.name in req.nodes and not req.all:
                steps.append(f"drain (timeout {req.drain_timeout:g}s)")
            steps.append("kubeadm reset -f" + (" (removes its etcd member)" if h.is_control_plane else ""))
            steps.append("clean up CNI, iptables/nftables/IPVS, Calico links, kubelet state, GPU drop-in")
            if h.name in req.nodes and not req.all:
                steps.append("delete the Node")
            lines.append(f"{h.name} ({role}): " + ", ".join(steps))
        if req.all:
            lines.append("the whole cluster: every host, workers first, the first control plane last")
        return lines


def _api(ctx: Context, req: ResetRequest) -> Host | None:
    return ctx.host(req.api) if req.api is not None else None


def _pods_on(api: Host, node: str) -> list[dict] | None:
    res = api.read(kubectl("get", "pods", "-A", "--field-selector", f"spec.nodeName={node}", "-o", "json"),
                   check=False)
    return parse_list(res.stdout) if res.exit_status == 0 else None


class DrainNodes(NodeObjectPhase):
    """Cordon every node that goes, then drain them one at a time (PDBs respected)."""

    title = "cordon and drain"

    def run(self, ctx: Context) -> PhaseResult:
        req = self.request
        api = _api(ctx, req)
        assert api is not None
        going = [h.name for h in req.targets(ctx) if h.name in req.nodes]
        for name in going:
            if not (req.nodes[name].get("spec") or {}).get("unschedulable"):
                api.change(f"cordon node {name}", kubectl("cordon", name))
        notes = []
        for name in going:
            pods = _pods_on(api, name)
            if pods is not None and not _drainable(pods, name):
                notes.append(f"{name}: nothing to evict")
                continue
            try:
                api.change(f"drain node {name} (PodDisruptionBudgets respected, timeout {req.drain_timeout:g}s)",
                           kubectl("drain", name, "--ignore-daemonsets", "--delete-emptydir-data",
                                   f"--timeout={int(req.drain_timeout)}s"),
                           timeout=req.drain_timeout + 60)
            except RemoteCommandError as e:
                raise ClusterStateError(self._blocked(ctx, api, name, e)) from None
        return PhaseResult(self.title, notes=notes)

    def _blocked(self, ctx: Context, api: Host, node: str, e: RemoteCommandError) -> str:
        pods = _drainable(_pods_on(api, node) or [], node)
        res = api.read(kubectl("get", "poddisruptionbudgets", "-A", "-o", "json"), check=False)
        pdbs = (parse_list(res.stdout) or []) if res.exit_status == 0 else []
        lines = [f"{node}: drain did not finish (kubectl drain exited {e.exit_status}); nothing else was "
                 f"changed and the node stays cordoned (`kubectl uncordon {node}` to undo)."]
        tail = [ln for ln in e.stderr.strip().splitlines() if ln.strip()][-3:]
        lines += [f"  {ln}" for ln in tail]
        if pods:
            lines.append("blocking:")
            lines += [f"- {b}" for b in blockers(pods, pdbs)]
        lines.append("Scale the workload or relax its PodDisruptionBudget, or raise --drain-timeout, then "
                     "run `gpuk8s reset` again.")
        return ctx.log.redact("\n".join(lines))


def _needs_kubeadm_reset(host: Host) -> bool:
    return host.facts is not None and bool(host.facts.kubernetes_files)


class KubeadmReset(ResetPhase):
    """`kubeadm reset -f` where kubeadm left state: workers together, then control planes one at a
    time (the first control plane, and the host kubectl runs on, last)."""

    title = "kubeadm reset"

    def run(self, ctx: Context) -> PhaseResult:
        req = self.request
        targets = [h for h in req.targets(ctx) if _needs_kubeadm_reset(h)]
        workers = [h for h in targets if not h.is_control_plane]
        first = ctx.inventory.first_control_plane.name
        cps = sorted((h for h in targets if h.is_control_plane),
                     key=lambda h: (h.name == req.api, h.name == first))
        if not targets:
            return PhaseResult(self.title, notes=["no host has kubeadm state left"])
        if workers:
            ctx.parallel(workers, lambda h: self._reset(ctx, h), "kubeadm reset (workers)")
        for host in cps:
            self._reset(ctx, host)
        return PhaseResult(self.title)

    def _reset(self, ctx: Context, host: Host) -> None:
        res = host.change("kubeadm reset -f" + (" (removes its etcd member)" if host.is_control_plane else ""),
                          Cmd("kubeadm", "reset", "-f"), timeout=KUBEADM_RESET_TIMEOUT,
                          hint=f"fix the cause on {host.name}, then run `gpuk8s reset` again")
        said = f"{res.stdout}\n{res.stderr}" if res is not None else ""
        if ETCD_MEMBER_NOT_REMOVED in said:
            line = next(ln for ln in said.splitlines() if ETCD_MEMBER_NOT_REMOVED in ln)
            raise ClusterStateError(
                f"{host.name}: kubeadm reset could not remove its etcd member:\n"
                f"{ctx.log.redact(line.strip()[-500:])}\nRemove it from a remaining control "
                "plane: `kubectl -n kube-system exec etcd-<cp> -- etcdctl --endpoints https://127.0.0.1:2379 "
                "--cacert /etc/kubernetes/pki/etcd/ca.crt --cert /etc/kubernetes/pki/etcd/server.crt --key "
                "/etc/kubernetes/pki/etcd/server.key member remove <id>` (`member list` shows the id)")


class CleanupHosts(ResetPhase):
    """What kubeadm reset leaves behind (its own output lists it), read first, removed when found."""

    title = "clean up after kubeadm reset"

    def run(self, ctx: Context) -> PhaseResult:
        req = self.request
        endpoint = ctx.inventory.control_plane_endpoint

        def clean(host: Host) -> None:
            res = host.read(Cmd("sh", "-c", LEFTOVERS_SCRIPT, "gpuk8s-leftovers", CNI_CONF_DIR, KUBELET_DIR,
                                CONTAINERD_DROP_IN, endpoint, host.spec.ssh.user))
            items = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
            req.leftovers[host.name] = items
            if items:
                host.change(f"remove what kubeadm reset leaves: {', '.join(items)}",
                            Cmd("sh", "-c", CLEANUP_SCRIPT, "gpuk8s-cleanup", CNI_CONF_DIR, KUBELET_DIR,
                                CONTAINERD_DROP_IN, *items))

        ctx.parallel(req.targets(ctx), clean, self.title)
        clean_hosts = [n for n, items in sorted(req.leftovers.items()) if not items]
        notes = [f"already clean: {', '.join(clean_hosts)}"] if clean_hosts else []
        gpu = [h.name for h in req.targets(ctx) if h.facts is not None and h.facts.gpus]
        if gpu:   # the GPU Operator's driver container loaded them; nothing unloads them but a reboot
            notes.append(f"{', '.join(gpu)}: NVIDIA kernel modules may stay loaded until a reboot")
        return PhaseResult(self.title, notes=notes)


API_FAILOVER_WAIT = 30.0


class DeleteNodes(NodeObjectPhase):
    """The Node objects of the reset hosts (kubeadm reset removed the kubelet that would
    re-register them)."""

    title = "delete nodes"

    def run(self, ctx: Context) -> PhaseResult:
        req = self.request
        api = _api(ctx, req)
        assert api is not None
        res, items = None, None

        def listed() -> bool:
            nonlocal res, items
            res = api.read(kubectl("get", "nodes", "-o", "json"), check=False)
            items = parse_list(res.stdout) if res.exit_status == 0 else None
            return items is not None or ctx.dry_run

        # A control plane just reset may have held the endpoint (cluster.vip: kube-vip's lease
        # moves to another control plane within its lease duration; a balancer's health check
        # lags too): the API is given API_FAILOVER_WAIT seconds to answer again.
        poll(ctx, listed, timeout=min(API_FAILOVER_WAIT, ctx.options.wait_timeout),
             interval=min(ctx.options.poll_interval, 1.0), what="the API server after the reset")
        assert res is not None
        if items is None:
            if ctx.dry_run:
                items = list(req.nodes.values())
            else:
                raise ClusterStateError(f"{api.name}: cannot list the nodes: "
                                        f"{ctx.log.redact(res.stderr.strip()[-300:])}")
        present = {name_of(n) for n in items}
        for h in req.targets(ctx):
            if h.name in present:
                api.change(f"delete node {h.name}", kubectl("delete", "node", h.name, "--ignore-not-found"))
        return PhaseResult(self.title)

