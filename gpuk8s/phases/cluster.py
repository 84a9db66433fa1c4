"""Cluster phases of `up`: init, Calico, joins, node labels and taints, readiness, kubeconfig.

Each decides from facts or the cluster's own state (admin.conf present, node joined,
Installation applied, label set), so a re-run is the recovery path.
"""

from __future__ import annotations

import secrets as _secrets
from dataclasses import replace
from typing import Callable

import yaml

from gpuk8s.errors import ClusterStateError, Gpuk8sError, RemoteCommandError, WaitTimeout
from gpuk8s.facts.cluster import ClusterFacts, kubectl, node_ready
from gpuk8s.gate import Change
from gpuk8s.host import Host
from gpuk8s.paths import ADMIN_CONF, CA_CERT, CALICO_INSTALLATION, KUBELET_CONF
from gpuk8s.phases import vip
from gpuk8s.phases.base import Context, Phase, PhaseResult, poll
from gpuk8s.phases.preflight import refresh
from gpuk8s.pki import ca_cert_hash
from gpuk8s.render import (RenderedFile, calico_installation, calico_manifest_urls,
                           kubeadm_init_config, kubeadm_join_config, kubeadm_token_config,
                           node_labels_after_join)
from gpuk8s.render.placeholders import PLACEHOLDER_CA_HASH
from gpuk8s.shell import Cmd, Secret

KUBEADM_TIMEOUT = 900.0
# The bootstrap token `up` makes when init did not (a re-run): as long as the uploaded
# control-plane certificates live, like the one init makes.
UP_TOKEN_TTL = "2h0m0s"


def _bootstrapped(ctx: Context) -> bool:
    return ctx.first_cp.has_file(ADMIN_CONF)


def cluster(ctx: Context) -> ClusterFacts:
    """The cluster as the first control plane sees it (one shared, explicitly invalidated view)."""
    if ctx.state.cluster is None:
        from gpuk8s.checks.base import is_gpu_host
        from gpuk8s.versions import GPU_OPERATOR_NAMESPACE

        gpu = any(is_gpu_host(h.spec, h.facts) for h in ctx.live())
        ctx.state.cluster = ClusterFacts(ctx.first_cp, GPU_OPERATOR_NAMESPACE if gpu else None)
    return ctx.state.cluster


# Delete the token when the cluster exists ($1 = admin.conf): used when the command that may
# have created it (init, token create) did not end normally, so the cluster may not exist.
_DELETE_TOKEN_IF_CLUSTER = '[ ! -e "$1" ] || kubeadm token delete "$2"'


class UsesJoinToken(Phase):
    """A phase that may create this run's bootstrap token, or write secret files on hosts.

    Its cleanup runs however the run ends (interrupted too): it removes the temporary secret
    files whose command did not end normally (the script removes them itself otherwise), then
    deletes this run's bootstrap token, also when the command creating it was interrupted."""

    cleanup_title = "delete join token"

    def cleanup(self, ctx: Context) -> None:
        failure: BaseException | None = None
        leftovers = {ctx.host(n): sorted(p) for n, p in ctx.gate.secret_files.items() if p}
        if leftovers:
            def remove(host: Host) -> None:
                paths = leftovers[host]
                host.apply(Change(host.name, f"remove leftover secret file {', '.join(paths)}",
                                  Cmd("rm", "-f", "--", *paths)))
                ctx.gate.secret_files.get(host.name, set()).difference_update(paths)
            try:
                ctx.parallel(list(leftovers), remove, "remove leftover secret files")
            except Gpuk8sError as e:
                failure = e
        if ctx.secrets is not None and (ctx.state.token_in_use or ctx.state.token_unsure):
            token_id = ctx.secrets.token.reveal().split(".", 1)[0]  # the public half
            cmd = Cmd("kubeadm", "token", "delete", token_id) if ctx.state.token_in_use else \
                Cmd("sh", "-c", _DELETE_TOKEN_IF_CLUSTER, "gpuk8s-token", ADMIN_CONF, token_id)
            ctx.first_cp.apply(Change(ctx.first_cp.name, f"delete bootstrap token {token_id}", cmd,
                                      accept_stderr="not found"))
            ctx.state.token_in_use = ctx.state.token_unsure = False
        if failure is not None:
            raise failure


def _creating_token(ctx: Context, make: Callable[[], object]) -> None:
    """Run a command that creates this run's bootstrap token; unless it ended with an exit
    status of its own, the token may exist (interrupted, connection lost): the cleanup deletes it."""
    ctx.state.token_unsure = True
    try:
        make()
    except RemoteCommandError:
        ctx.state.token_unsure = False
        raise
    ctx.state.token_unsure = False
    ctx.state.token_in_use = True


class InitControlPlane(UsesJoinToken):
    title = "init first control plane"

    def run(self, ctx: Context) -> PhaseResult:
        host = ctx.first_cp
        if _bootstrapped(ctx):
            # admin.conf is written before the control plane starts: a failed init leaves it too.
            view = cluster(ctx)
            if view.read() is None:
                stderr = view.last.stderr if view.last is not None else ""
                raise ClusterStateError(
                    f"{host.name}: {ADMIN_CONF} exists but the API server does not answer "
                    f"({ctx.log.redact(stderr.strip()[-300:])}). A previous `kubeadm init` probably "
                    f"failed: run `kubeadm reset -f` on {host.name}, then `gpuk8s up` again.")
            vip.after_init(ctx, host)     # cluster.vip: the manifest reads admin.conf from now on
            return PhaseResult(self.title, notes=[f"{host.name}: already initialised ({ADMIN_CONF} exists)"])
        cfg = kubeadm_init_config(ctx.inventory, host.spec, ctx.secrets, ctx.release)
        # cluster.vip: kube-vip's static pod goes in before init (kubeadm's init preflight checks
        # only its own four manifests), reading super-admin.conf until init is done (phases/vip.py).
        vip.before_init(ctx, host)
        _creating_token(ctx, lambda: host.with_secret_file(
            cfg, Cmd("kubeadm", "init", "--config", cfg.path, "--upload-certs"), "kubeadm init",
            timeout=KUBEADM_TIMEOUT,
            hint="fix the cause shown above, then run `gpuk8s up` again (a failed init leaves "
                 "files behind: `kubeadm reset -f` on that host first)"))
        vip.after_init(ctx, host)
        if not ctx.dry_run:
            refresh(ctx, [host])
            ctx.cluster_changed()
        return PhaseResult(self.title)


class InstallCalico(Phase):
    title = "install Calico"

    def run(self, ctx: Context) -> PhaseResult:
        inst = calico_installation(ctx.inventory, ctx.release)
        if _bootstrapped(ctx):
            view = cluster(ctx)
            pools = view.installation_pools()
            if pools and set(pools) == {ctx.inventory.cluster.pod_cidr} and view.calico()[0]:
                return PhaseResult(self.title, notes=["Calico installed and available"])
        host = ctx.first_cp
        for url in calico_manifest_urls(ctx.release):
            # Server-side apply: idempotent, and the CRDs are too large for client-side apply.
            host.change(f"apply {url.rsplit('/', 1)[-1]} (Calico {ctx.release.calico})",
                        kubectl("apply", "--server-side", "--force-conflicts", "-f", url), timeout=300)
        if not ctx.dry_run:
            # kubectl maps every object before it sends one: a custom resource is refused until
            # its CRD is Established, which the API server does asynchronously after creating it.
            host.read(kubectl("wait", "--for=condition=Established", "--timeout=120s",
                              *(f"crd/{crd}" for crd in calico_installation_crds(inst.content))),
                      timeout=180)
        host.put_file(RenderedFile(CALICO_INSTALLATION, inst.content, host=host.name),
                      "write the Calico Installation (pool = pod CIDR)")
        host.change("apply the Calico Installation",
                    kubectl("apply", "--server-side", "--force-conflicts", "-f", CALICO_INSTALLATION))
        if not ctx.dry_run:
            view = cluster(ctx)
            view.calico_crds = True
            ctx.cluster_changed()
            wait_for(ctx, "Calico available", view.fresh_calico, diagnose=lambda: diagnose_cluster(ctx))
        return PhaseResult(self.title)


def calico_installation_crds(manifest: str) -> list[str]:
    """The CRDs of the kinds in the Installation manifest (installations.operator.tigera.io...)."""
    kinds = [doc.get("kind") for doc in yaml.safe_load_all(manifest) if isinstance(doc, dict)]
    return [f"{k.lower()}s.operator.tigera.io" for k in kinds if k]


def wait_for(ctx: Context, what: str, probe: Callable[[], tuple[bool, str]],
             diagnose: Callable[[], str]) -> None:
    """Poll probe() -> (done, state) until done or the deadline; then raise with a diagnosis."""
    state = ""

    def step() -> bool:
        nonlocal state
        done, state = probe()
        return done

    if poll(ctx, step, timeout=ctx.options.wait_timeout, interval=ctx.options.poll_interval, what=what):
        return
    raise WaitTimeout(f"timed out after {ctx.options.wait_timeout:g}s waiting for {what}: {state}\n"
                      f"{diagnose()}")


def diagnose_cluster(ctx: Context) -> str:
    host = ctx.first_cp
    out = []
    for args in (("get", "tigerastatus"), ("get", "pods", "-n", "calico-system", "-o", "wide"),
                 ("get", "nodes", "-o", "wide")):
        res = host.read(kubectl(*args), check=False)
        out.append(f"$ kubectl {' '.join(args)}\n{(res.stdout or res.stderr).strip()}")
    return ctx.log.redact("\n".join(out))


def _ca_hash(ctx: Context) -> str:
    """The CA's public-key hash, computed here from ca.crt (a placeholder before init in a dry run)."""
    if ctx.dry_run and not _bootstrapped(ctx):
        return PLACEHOLDER_CA_HASH
    return ca_cert_hash(ctx.first_cp.read(Cmd("cat", CA_CERT)).stdout)


def _ensure_token(ctx: Context, ttl: str = UP_TOKEN_TTL, description: str = "") -> None:
    """Make sure this run's bootstrap token exists (created by init, or now, with this TTL and
    description: `kubeadm token create` refuses --ttl/--description beside --config)."""
    if ctx.state.token_in_use:
        return
    host = ctx.first_cp
    cfg = kubeadm_token_config(ctx.secrets, ctx.release, ttl=ttl, host=host.name,
                               description=description or f"gpuk8s: joins to {ctx.inventory.cluster.name}")
    _creating_token(ctx, lambda: host.with_secret_file(
        cfg, Cmd("kubeadm", "token", "create", "--config", cfg.path),
        f"create a short-lived bootstrap token (ttl {ttl})", accept_stderr="already exists"))


def _fresh_certificate_key(ctx: Context) -> None:
    """A new certificate key for the next upload (only this run knows it; never printed)."""
    if ctx.secrets is None or ctx.secrets.is_placeholder():
        return
    key = _secrets.token_hex(32)
    ctx.log.add_secret(key)
    ctx.secrets = replace(ctx.secrets, certificate_key=Secret(key))


def _upload_certs(ctx: Context) -> None:
    """Upload the control-plane certificates under a fresh certificate key, right before a
    control-plane join (kubeadm deletes them two hours after each upload). The key travels in
    the secret config file, never on a command line."""
    _fresh_certificate_key(ctx)
    host = ctx.first_cp
    cfg = kubeadm_init_config(ctx.inventory, host.spec, ctx.secrets, ctx.release)
    host.with_secret_file(
        cfg, Cmd("kubeadm", "init", "phase", "upload-certs", "--upload-certs", "--config", cfg.path),
        "upload control-plane certificates (valid 2 h)")


def _join(ctx: Context, host: Host, ca_hash: str, command: str = "up") -> None:
    cfg = kubeadm_join_config(ctx.inventory, host.spec, ctx.secrets, ctx.release, ca_hash)
    role = "control plane" if host.is_control_plane else "worker"
    host.with_secret_file(
        cfg, Cmd("kubeadm", "join", "--config", cfg.path), f"kubeadm join as {role}",
        timeout=KUBEADM_TIMEOUT,
        hint=f"fix the cause on {host.name} (then `kubeadm reset -f` there) and run `gpuk8s {command}` again")


def _pending(ctx: Context, hosts: list[Host]) -> list[Host]:
    return [h for h in ctx.live(hosts) if not h.has_file(KUBELET_CONF)]


def _not_first(ctx: Context, control_plane: bool) -> list[Host]:
    first = ctx.inventory.first_control_plane.name
    return [h for h in ctx.hosts if h.is_control_plane == control_plane and h.name != first]


class JoinControlPlanes(UsesJoinToken):
    """Control planes join one at a time (etcd grows by one member per join), each right after
    a fresh upload of the certificates. `up` and `join` share it; `join` passes its own token
    TTL and description (the token lives only as long as the run)."""

    title = "join control planes"

    def __init__(self, token_ttl: str = UP_TOKEN_TTL, token_description: str = "",
                 command: str = "up"):
        self.token_ttl, self.token_description, self.command = token_ttl, token_description, command

    def run(self, ctx: Context) -> PhaseResult:
        pending = _pending(ctx, _not_first(ctx, True))
        if not pending:
            return PhaseResult(self.title, notes=["every control plane is a member"])
        _ensure_token(ctx, self.token_ttl, self.token_description)
        ca = _ca_hash(ctx)
        for host in pending:  # one at a time: etcd grows by one member per join
            _upload_certs(ctx)
            _join(ctx, host, ca, self.command)
        if not ctx.dry_run:
            refresh(ctx, pending)
            ctx.cluster_changed()
        return PhaseResult(self.title)


class JoinWorkers(JoinControlPlanes):
    title = "join workers"

    def run(self, ctx: Context) -> PhaseResult:
        pending = _pending(ctx, _not_first(ctx, False))
        if not pending:
            return PhaseResult(self.title, notes=["every worker is a member"])
        _ensure_token(ctx, self.token_ttl, self.token_description)
        ca = _ca_hash(ctx)
        ctx.parallel(pending, lambda h: _join(ctx, h, ca, self.command), self.title, fatal=False)
        if not ctx.dry_run:
            refresh(ctx, ctx.live(pending))
            ctx.cluster_changed()
        return PhaseResult(self.title, notes=[f"{n}: {e}" for n, e in ctx.failed_hosts.items()])


class ApplyNodeMetadata(Phase):
    title = "apply labels and taints"

    def run(self, ctx: Context) -> PhaseResult:
        nodes = {} if ctx.dry_run and not _bootstrapped(ctx) else cluster(ctx).nodes()
        cp = ctx.first_cp
        before = len(ctx.gate.plan.changes)
        for host in ctx.live():
            spec = host.spec
            node = nodes.get(host.name, {"metadata": {"labels": {}}, "spec": {}})
            labels = node["metadata"].get("labels") or {}
            for key, value in sorted({**spec.labels, **node_labels_after_join(spec)}.items()):
                if labels.get(key) != value:
                    cp.change(f"label node {host.name} {key}={value}",
                              kubectl("label", "node", host.name, f"{key}={value}", "--overwrite"))
            have = {(t.get("key"), t.get("value") or None, t.get("effect"))
                    for t in node.get("spec", {}).get("taints") or []}
            for t in spec.taints:
                if (t.key, t.value or None, t.effect) not in have:
                    cp.change(f"taint node {host.name} {t}",
                              kubectl("taint", "node", host.name, str(t), "--overwrite"))
        if len(ctx.gate.plan.changes) > before:
            ctx.cluster_changed()
        return PhaseResult(self.title)


class WaitNodesReady(Phase):
    title = "wait for nodes Ready"

    def run(self, ctx: Context) -> PhaseResult:
        if ctx.dry_run:
            return PhaseResult(self.title, notes=["dry run: not waiting"])
        want = [h.name for h in ctx.live()]
        view = cluster(ctx)
        first = [True]

        def probe() -> tuple[bool, str]:
            nodes = view.nodes() if first[0] else view.fresh_nodes()
            first[0] = False
            missing = [n for n in want if n not in nodes]
            not_ready = [n for n in want if n in nodes and not node_ready(nodes[n])]
            if not missing and not not_ready:
                return True, "all Ready"
            return False, "; ".join(filter(None, [
                f"not registered: {', '.join(missing)}" if missing else "",
                f"NotReady: {', '.join(not_ready)}" if not_ready else ""]))

        def diagnose() -> str:
            nodes = view.fresh_nodes()
            parts = [diagnose_cluster(ctx)]
            for name in want:
                if name in nodes and node_ready(nodes[name]):
                    continue
                host = ctx.host(name)
                for cmd in (Cmd("systemctl", "is-active", "containerd", "kubelet"),
                            Cmd("journalctl", "-u", "kubelet", "-n", "20", "--no-pager")):
                    res = host.read(cmd, check=False)
                    parts.append(f"[{name}] $ {cmd.masked()}\n{(res.stdout + res.stderr).strip()}")
            return ctx.log.redact("\n".join(parts))

        wait_for(ctx, "every node to be Ready", probe, diagnose)
        return PhaseResult(self.title, notes=[f"{len(want)} nodes Ready"])
