"""The phases of `gpuk8s join` that `up` does not have: find the hosts to join, check that each
reaches the control-plane endpoint, and require what GPU nodes need from the running cluster.

`join` works on a running cluster, days after `up`: it relies on nothing `up` left behind (its
token and uploaded certificates have long expired). The first control plane is connected first
and asked for the cluster's nodes; the hosts that already are nodes are left alone (reported as
"already a node" and never connected), and the first control plane is only read and used to run
kubeadm and kubectl (`RunState.left_alone`, which `Context.live()` leaves out).
"""

from __future__ import annotations

from dataclasses import replace

from gpuk8s.checks.base import FAIL, PASS, CheckInfo, CheckResult
from gpuk8s.errors import ClusterStateError, TransportError, UsageError
from gpuk8s.facts.probe import gather_facts
from gpuk8s.host import Host
from gpuk8s.paths import ADMIN_CONF, KUBELET_CONF
from gpuk8s.phases.base import Context, Phase, PhaseResult
from gpuk8s.phases.cluster import cluster
from gpuk8s.phases.preflight import check_hosts
from gpuk8s.shell import Cmd, printable, quote

ENDPOINT_CHECK_ID = "join-endpoint-reachable"
NOT_A_NODE_CHECK_ID = "join-not-a-node"
# The checks `join` adds to preflight's on the joining hosts (docs/checks.md has an entry each).
JOIN_CHECKS = (
    CheckInfo(ENDPOINT_CHECK_ID, "The control-plane endpoint answers from the host",
              "kubeadm join's discovery and the kubelet reach the API servers through the endpoint"),
    CheckInfo(NOT_A_NODE_CHECK_ID, "The host is not a node of another cluster",
              "kubeadm join refuses a host that has its own kubelet.conf"),
)
ENDPOINT_CONNECT_TIMEOUT = 5   # seconds for one TCP connect from a joining host

# A TCP connect from the host itself to $1:$2, resolved as the host resolves it (its
# /etc/hosts, its DNS), with the tools real servers have: bash's /dev/tcp (bash ships with every
# Ubuntu and RHEL server), else `nc -z` (netcat-openbsd on Ubuntu, nmap-ncat on RHEL when
# installed); `timeout` (coreutils) bounds it. The first line of stdout names the tool used.
# The choice is made on the host in the same round trip: the probe does not list these tools
# (the lab hides every binary the probe looks for unless a fixture provides it).
_TCP_CONNECT = (
    't=; command -v timeout >/dev/null 2>&1 && t="timeout $3"; '
    'if command -v bash >/dev/null 2>&1; then echo "bash /dev/tcp/$1/$2"; '
    '$t bash -c \'exec 3<>"/dev/tcp/$1/$2"\' gpuk8s-endpoint "$1" "$2"; '
    'elif command -v nc >/dev/null 2>&1; then echo "nc -z -w $3 $1 $2"; $t nc -z -w "$3" "$1" "$2"; '
    'else echo "none"; echo "neither bash nor nc is installed" >&2; exit 3; fi')


def endpoint_check_cmd(host: str, port: int) -> Cmd:
    return Cmd("sh", "-c", _TCP_CONNECT, "gpuk8s-endpoint", host, str(port), str(ENDPOINT_CONNECT_TIMEOUT))


def _ssh_target(host: Host) -> str:
    s = host.spec.ssh
    return f"{s.user}@{host.spec.address}:{s.port}"


class FindJoiningHosts(Phase):
    """Connect to the first control plane, read the cluster's nodes; the hosts that are nodes
    already are left alone. Refuses clearly when the first control plane or its API server does
    not answer, naming what it tried."""

    title = "find hosts to join"
    cleanup_title = "disconnect"

    def run(self, ctx: Context) -> PhaseResult:
        first = ctx.first_cp
        ep = ctx.inventory.control_plane_endpoint
        if first.transport is None:
            try:
                first.transport = ctx.open_transport(
                    first.spec, accept_new_host_keys=ctx.options.accept_new_host_keys)
            except TransportError as e:
                raise TransportError(e.kind, f"cannot reach the cluster's first control plane "
                                             f"{first.name} (ssh {_ssh_target(first)}): {e}") from None
        if first.facts is None:
            try:
                first.facts, first.warning = gather_facts(first.transport, ctx.inventory,
                                                          timeout=first.spec.ssh.command_timeout)
            except TransportError as e:
                raise TransportError(e.kind, f"the cluster's first control plane {first.name} "
                                             f"(ssh {_ssh_target(first)}) did not answer the probe: {e}") from None
            except Exception as e:  # noqa: BLE001 - odd probe output: said as such, not a traceback
                raise ClusterStateError(f"the probe of the cluster's first control plane {first.name} "
                                        f"failed: {type(e).__name__}: {printable(str(e))}") from None
        if not first.has_file(ADMIN_CONF):
            raise ClusterStateError(
                f"{first.name} ({first.spec.address}) has no {ADMIN_CONF}: there is no cluster to join "
                f"there. Run `gpuk8s up -i {quote(str(ctx.inventory.path))}` to create it.")
        view = cluster(ctx)
        if view.read() is None:
            res = view.last
            why = (res.stderr or res.stdout).strip()[-400:] if res is not None else "no answer"
            raise ClusterStateError(
                f"the API server at {ep} does not answer kubectl on the first control plane "
                f"{first.name} ({first.spec.address}): {ctx.log.redact(printable(why))}\n"
                f"tried: `kubectl --kubeconfig {ADMIN_CONF} get nodes` on {first.name}, whose "
                f"admin.conf names the control-plane endpoint {ep}")
        nodes = view.nodes()
        members = [h for h in ctx.hosts if h is not first and h.name in nodes]
        ctx.state.left_alone |= {first.name} | {h.name for h in members}
        # The hosts left alone are never connected: the run works on the others only.
        ctx.hosts = [first] + [h for h in ctx.hosts if h is not first and h.name not in nodes]
        joining = [h.name for h in ctx.hosts if h is not first]
        notes = [f"{h.name}: already a node (left alone)" for h in members]
        notes.append(f"to join: {', '.join(joining)}" if joining else "nothing to join: every host is a node")
        return PhaseResult(self.title, notes=notes)

    def cleanup(self, ctx: Context) -> None:
        ctx.first_cp.close()


class JoinPreflightChecks(Phase):
    """The preflight checks on the joining hosts only (the nodes' ports are in use, as they
    should be), plus: each joining host reaches the control-plane endpoint on its port, and
    none holds a kubelet.conf of its own (a node of some cluster, not of this one)."""

    title = "preflight checks"

    def run(self, ctx: Context) -> PhaseResult:
        joining = [h for h in ctx.hosts if h.name not in ctx.state.left_alone]
        report = check_hosts(replace(ctx, hosts=joining))
        ep_host, _, port = ctx.inventory.control_plane_endpoint.rpartition(":")
        ep_host, ep_port = ep_host.strip("[]"), int(port)
        reached = [h for h in joining if h.error is None and h.facts is not None]
        results = ctx.parallel(reached, lambda h: endpoint_check(h, ep_host, ep_port), "check the endpoint")
        for rep in report.hosts:
            if rep.name in results:
                rep.checks.append(results[rep.name])
            host = ctx.host(rep.name)
            if host.has_file(KUBELET_CONF):
                rep.checks.append(CheckResult(
                    NOT_A_NODE_CHECK_ID, FAIL,
                    f"{KUBELET_CONF} exists, but the cluster has no node {host.name}: the host is (or "
                    "was) a node of another cluster, or its Node was deleted",
                    f"on {host.name}: kubeadm reset -f (or `gpuk8s reset --host {quote(host.name)}`), "
                    "then join again"))
        ctx.state.preflight = report
        return PhaseResult(self.title)


def endpoint_check(host: Host, ep_host: str, ep_port: int) -> CheckResult:
    """A TCP connect from the host to the endpoint (a read: it runs in dry runs too)."""
    res = host.read(endpoint_check_cmd(ep_host, ep_port), check=False,
                    timeout=ENDPOINT_CONNECT_TIMEOUT + 10)
    tool = printable((res.stdout.splitlines() or ["?"])[0].strip())
    target = f"{ep_host}:{ep_port}"
    if res.exit_status == 0:
        return CheckResult(ENDPOINT_CHECK_ID, PASS, f"{target} accepts TCP connections ({tool})")
    err = printable(" ".join(res.stderr.split())[-300:]) or f"exit status {res.exit_status}"
    if res.exit_status == 124:
        err = f"no answer within {ENDPOINT_CONNECT_TIMEOUT}s"
    tried = f"tried `{tool}` on {host.name}" if tool != "none" else "no tool to try it with"
    return CheckResult(
        ENDPOINT_CHECK_ID, FAIL,
        f"{host.name} cannot open a TCP connection to the control-plane endpoint {target}: {err} ({tried})",
        f"from {host.name}, the endpoint's name must resolve (getent ahosts {quote(ep_host)}) and port "
        f"{ep_port} must be open on the way to the API servers (firewalls, load balancer); "
        "check with: timeout 5 bash -c 'exec 3<>\"/dev/tcp/$0/$1\"' " + f"{quote(ep_host)} {ep_port}")


class RequireGPUOperator(Phase):
    """GPU nodes join a cluster whose GPU Operator is installed (`up` installs it); `join` does
    not install or reconfigure it, so the running nodes' operands are never touched."""

    title = "check the GPU Operator"

    def applies(self, ctx: Context) -> bool:
        from gpuk8s.phases.gpu import gpu_hosts

        return bool(gpu_hosts(ctx))

    def run(self, ctx: Context) -> PhaseResult:
        from gpuk8s.facts.cluster import helm_release
        from gpuk8s.phases.gpu import NS, gpu_hosts
        from gpuk8s.versions import GPU_OPERATOR_RELEASE_NAME

        cp = ctx.first_cp
        major = int(ctx.release.helm.split(".", 1)[0])
        entry = helm_release(cp, GPU_OPERATOR_RELEASE_NAME, NS, major) \
            if cp.facts is not None and cp.facts.helm_version else None
        names = ", ".join(h.name for h in gpu_hosts(ctx))
        if entry is None:
            raise UsageError(
                f"{names}: GPU nodes, but the cluster has no GPU Operator release "
                f"{GPU_OPERATOR_RELEASE_NAME!r} in namespace {NS} (read with helm on {cp.name}); "
                f"run `gpuk8s up -i {quote(str(ctx.inventory.path))}` once, which installs it, "
                "then join")
        return PhaseResult(self.title, notes=[f"GPU Operator release {entry.get('chart', '?')} installed"])
