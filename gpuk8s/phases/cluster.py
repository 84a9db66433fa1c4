"""Cluster phases of `up`: init, Calico, joins, node labels and taints, readiness, kubeconfig.

Each decides from facts or the cluster's own state (admin.conf present, node joined,
Installation applied, label set), so a re-run is the recovery path.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

from gpuk8s.errors import ClusterStateError, Gpuk8sError, RemoteCommandError
from gpuk8s.inventory import HostSpec
from gpuk8s.phases.base import (ADMIN_CONF, CA_CERT, KUBELET_CONF, Context, Phase, PhaseResult)
from gpuk8s.pki import ca_cert_hash
from gpuk8s.render import (RenderedFile, calico_installation, calico_manifest_urls,
                           control_plane_endpoint, kubeadm_init_config, kubeadm_join_config,
                           node_labels_after_join)
from gpuk8s.shell import Cmd

CALICO_INSTALLATION_PATH = "/etc/gpuk8s/calico-installation.yaml"
KUBEADM_TIMEOUT = 900.0


class WaitTimeout(Gpuk8sError):
    exit_code = RemoteCommandError.exit_code


def _bootstrapped(ctx: Context) -> bool:
    return ctx.has_file(ctx.first_cp.name, ADMIN_CONF)


class InitControlPlane(Phase):
    title = "init first control plane"

    def run(self, ctx: Context) -> PhaseResult:
        host = ctx.first_cp
        if _bootstrapped(ctx):
            # admin.conf is written before the control plane starts: a failed init leaves it too.
            res, objects = _read_cluster(ctx)
            if objects is None:
                raise ClusterStateError(
                    f"{host.name}: {ADMIN_CONF} exists but the API server does not answer "
                    f"({ctx.log.redact(res.stderr.strip()[-300:])}). A previous `kubeadm init` probably "
                    f"failed: run `kubeadm reset -f` on {host.name}, then `gpuk8s up` again.")
            ctx.cached(CLUSTER_READ, lambda: objects)
            return PhaseResult(self.title, notes=[f"{host.name}: already initialised ({ADMIN_CONF} exists)"])
        cfg = kubeadm_init_config(ctx.inventory, host, ctx.secrets, ctx.release)
        ctx.ops(host.name).run_with_secret_file(
            cfg, Cmd("kubeadm", "init", "--config", cfg.path, "--upload-certs"), "kubeadm init",
            timeout=KUBEADM_TIMEOUT,
            hint="fix the cause shown above, then run `gpuk8s up` again (a failed init leaves "
                 "files behind: `kubeadm reset -f` on that host first)")
        ctx.token_in_use = True
        if not ctx.dry_run:
            ctx.refresh([host.name])
        return PhaseResult(self.title)


def _kubectl_json(ctx: Context, *args: str) -> dict | None:
    res = ctx.ops(ctx.first_cp.name).read(ctx.kubectl(*args, "-o", "json"), check=False)
    if res.exit_status != 0:
        return None
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError:
        return None


# What a run checks first, read in one kubectl call: the nodes, Calico's Installation and its
# tigerastatus (a re-run on a finished cluster needs nothing else from the API server).
CLUSTER_TYPES = ("nodes", "installations.operator.tigera.io", "tigerastatuses.operator.tigera.io")
CLUSTER_READ = "cluster objects"
NO_SUCH_TYPE = "the server doesn't have a resource type"


def _by_kind(res) -> dict[str, list[dict]] | None:
    """A `kubectl get ... -o json` List -> {kind: [objects]}; None when the call failed."""
    if res.exit_status != 0:
        return None
    try:
        items = json.loads(res.stdout).get("items", [])
    except (ValueError, AttributeError):
        return None
    objects: dict[str, list[dict]] = {}
    for item in items:
        if isinstance(item, dict):
            objects.setdefault(item.get("kind") or "", []).append(item)
    return objects


def _read_cluster(ctx: Context):
    """-> (last result, {kind: objects} or None when the API server did not answer).

    Before Calico's CRDs exist kubectl refuses the whole call, so the nodes are read alone.
    """
    ops = ctx.ops(ctx.first_cp.name)
    if ctx.calico_crds is not False:
        res = ops.read(ctx.kubectl("get", ",".join(CLUSTER_TYPES), "-o", "json"), check=False)
        if res.exit_status == 0 or NO_SUCH_TYPE not in res.stderr:
            objects = _by_kind(res)
            if objects is not None:
                ctx.calico_crds = True
            return res, objects
        ctx.calico_crds = False
    res = ops.read(ctx.kubectl("get", "nodes", "-o", "json"), check=False)
    return res, _by_kind(res)


def _cluster_objects(ctx: Context) -> dict[str, list[dict]]:
    """The cluster's nodes and Calico objects, read again only after something changed."""
    return ctx.cached(CLUSTER_READ, lambda: _read_cluster(ctx)[1]) or {}


def _calico_available(ctx: Context) -> tuple[bool, str]:
    doc = _kubectl_json(ctx, "get", "tigerastatus")
    if not doc:
        return False, "no tigerastatus yet"
    return _calico_state(doc.get("items", []))


def _calico_state(items: list[dict]) -> tuple[bool, str]:
    """tigerastatus objects -> (every component Available, what is not)."""
    states = []
    ok = bool(items)
    for item in items:
        conds = {c.get("type"): c for c in item.get("status", {}).get("conditions", [])}
        avail = conds.get("Available", {}).get("status") == "True"
        degraded = conds.get("Degraded", {})
        if not avail:
            ok = False
            msg = degraded.get("message") or conds.get("Available", {}).get("message") or ""
            states.append(f"{item['metadata']['name']}: not available {msg}".strip())
    return ok, "; ".join(states) or "available"


class InstallCalico(Phase):
    title = "install Calico"

    def run(self, ctx: Context) -> PhaseResult:
        inst = calico_installation(ctx.inventory, ctx.release)
        if not ctx.dry_run and _bootstrapped(ctx):
            objects = _cluster_objects(ctx)
            current = next((i for i in objects.get("Installation", [])
                            if (i.get("metadata") or {}).get("name") == "default"), None)
            pools = [p.get("cidr") for p in ((current or {}).get("spec", {}).get("calicoNetwork", {})
                                             .get("ipPools") or [])]
            ok, _ = _calico_state(objects.get("TigeraStatus", []))
            if current and pools and set(pools) == {ctx.inventory.cluster.pod_cidr} and ok:
                return PhaseResult(self.title, notes=["Calico installed and available"])
        ops = ctx.ops(ctx.first_cp.name)
        for url in calico_manifest_urls(ctx.release):
            # Server-side apply: idempotent, and the CRDs are too large for client-side apply.
            ops.change(f"apply {url.rsplit('/', 1)[-1]} (Calico {ctx.release.calico})",
                       ctx.kubectl("apply", "--server-side", "--force-conflicts", "-f", url), timeout=300)
        ops.put_file(RenderedFile(CALICO_INSTALLATION_PATH, inst.content, host=ctx.first_cp.name),
                     "write the Calico Installation (pool = pod CIDR)")
        ops.change("apply the Calico Installation",
                   ctx.kubectl("apply", "--server-side", "--force-conflicts", "-f", CALICO_INSTALLATION_PATH))
        if not ctx.dry_run:
            ctx.calico_crds = True
            _wait(ctx, "Calico available", lambda: _calico_available(ctx),
                  diagnose=lambda: _diagnose_cluster(ctx))
        return PhaseResult(self.title)


def _wait(ctx: Context, what: str, probe, diagnose) -> None:
    """Poll probe() -> (done, state) until done or the deadline; then raise with a diagnosis."""
    deadline = time.monotonic() + ctx.options.wait_timeout
    state = ""
    for _ in range(100000):  # bounded by the deadline; the count only guards against a zero interval
        done, state = probe()
        if done:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(ctx.options.poll_interval)
    raise WaitTimeout(f"timed out after {ctx.options.wait_timeout:g}s waiting for {what}: {state}\n"
                      f"{diagnose()}")


def _diagnose_cluster(ctx: Context) -> str:
    ops = ctx.ops(ctx.first_cp.name)
    out = []
    for args in (("get", "tigerastatus"), ("get", "pods", "-n", "calico-system", "-o", "wide"),
                 ("get", "nodes", "-o", "wide")):
        res = ops.read(ctx.kubectl(*args), check=False)
        out.append(f"$ kubectl {' '.join(args)}\n{(res.stdout or res.stderr).strip()}")
    return ctx.log.redact("\n".join(out))


def _ca_hash(ctx: Context) -> str:
    res = ctx.ops(ctx.first_cp.name).read(Cmd("cat", CA_CERT))
    return ca_cert_hash(res.stdout)


def _ensure_token(ctx: Context) -> None:
    """Make sure this run's bootstrap token exists (created by init, or now)."""
    if ctx.token_in_use:
        return
    host = ctx.first_cp
    cfg = kubeadm_init_config(ctx.inventory, host, ctx.secrets, ctx.release)
    ctx.ops(host.name).run_with_secret_file(
        cfg, Cmd("kubeadm", "token", "create", "--config", cfg.path),
        "create a short-lived bootstrap token", accept=lambda r: "already exists" in r.stderr)
    ctx.token_in_use = True


def _upload_certs(ctx: Context) -> None:
    """Upload fresh control-plane certificates (they expire two hours after each upload)."""
    host = ctx.first_cp
    cfg = kubeadm_init_config(ctx.inventory, host, ctx.secrets, ctx.release)
    ctx.ops(host.name).run_with_secret_file(
        cfg, Cmd("kubeadm", "init", "phase", "upload-certs", "--upload-certs", "--config", cfg.path),
        "upload control-plane certificates (valid 2 h)")


def _join(ctx: Context, host: HostSpec, ca_hash: str) -> None:
    cfg = kubeadm_join_config(ctx.inventory, host, ctx.secrets, ctx.release, ca_hash)
    role = "control plane" if host.is_control_plane else "worker"
    ctx.ops(host.name).run_with_secret_file(
        cfg, Cmd("kubeadm", "join", "--config", cfg.path), f"kubeadm join as {role}",
        timeout=KUBEADM_TIMEOUT,
        hint=f"fix the cause on {host.name} (then `kubeadm reset -f` there) and run `gpuk8s up` again")


def _pending(ctx: Context, hosts) -> list[HostSpec]:
    return [h for h in ctx.live_hosts(hosts) if not ctx.has_file(h.name, KUBELET_CONF)]


class JoinControlPlanes(Phase):
    title = "join control planes"

    def run(self, ctx: Context) -> PhaseResult:
        pending = _pending(ctx, ctx.inventory.control_planes[1:])
        if not pending:
            return PhaseResult(self.title, notes=["every control plane is a member"])
        _ensure_token(ctx)
        ca = _ca_hash(ctx) if not ctx.dry_run or _bootstrapped(ctx) else "sha256:" + "0" * 64
        for host in pending:  # one at a time: etcd grows by one member per join
            _upload_certs(ctx)
            _join(ctx, host, ca)
        if not ctx.dry_run:
            ctx.refresh([h.name for h in pending])
        return PhaseResult(self.title)


class JoinWorkers(Phase):
    title = "join workers"

    def run(self, ctx: Context) -> PhaseResult:
        pending = _pending(ctx, [h for h in ctx.inventory.hosts if not h.is_control_plane])
        if not pending:
            return PhaseResult(self.title, notes=["every worker is a member"])
        _ensure_token(ctx)
        ca = _ca_hash(ctx) if not ctx.dry_run or _bootstrapped(ctx) else "sha256:" + "0" * 64
        ctx.parallel(pending, lambda h: _join(ctx, h, ca), self.title, fatal=False)
        if not ctx.dry_run:
            ctx.refresh([h.name for h in pending if h.name not in ctx.failed_hosts])
        return PhaseResult(self.title, notes=[f"{n}: {e}" for n, e in ctx.failed_hosts.items()])


def _fetch_nodes(ctx: Context) -> dict[str, dict]:
    doc = _kubectl_json(ctx, "get", "nodes") or {}
    return {i["metadata"]["name"]: i for i in doc.get("items", [])}


def _nodes(ctx: Context) -> dict[str, dict]:
    """Nodes by name; read again only after a change (a re-run reads the cluster once)."""
    return {i["metadata"]["name"]: i for i in _cluster_objects(ctx).get("Node", [])}


def _ready(node: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in node.get("status", {}).get("conditions", []))


class ApplyNodeMetadata(Phase):
    title = "apply labels and taints"

    def run(self, ctx: Context) -> PhaseResult:
        if ctx.dry_run and not _bootstrapped(ctx):
            nodes: dict[str, dict] = {}
        else:
            nodes = _nodes(ctx)
        ops = ctx.ops(ctx.first_cp.name)
        for host in ctx.live_hosts(ctx.inventory.hosts):
            node = nodes.get(host.name, {"metadata": {"labels": {}}, "spec": {}})
            labels = node["metadata"].get("labels") or {}
            for key, value in sorted({**host.labels, **node_labels_after_join(host)}.items()):
                if labels.get(key) != value:
                    ops.change(f"label node {host.name} {key}={value}",
                               ctx.kubectl("label", "node", host.name, f"{key}={value}", "--overwrite"))
            have = {(t.get("key"), t.get("value") or None, t.get("effect"))
                    for t in node.get("spec", {}).get("taints") or []}
            for t in host.taints:
                if (t.key, t.value or None, t.effect) not in have:
                    ops.change(f"taint node {host.name} {t}",
                               ctx.kubectl("taint", "node", host.name, str(t), "--overwrite"))
        return PhaseResult(self.title)


class WaitNodesReady(Phase):
    title = "wait for nodes Ready"

    def run(self, ctx: Context) -> PhaseResult:
        if ctx.dry_run:
            return PhaseResult(self.title, notes=["dry run: not waiting"])
        want = [h.name for h in ctx.live_hosts(ctx.inventory.hosts)]

        first = [True]

        def probe():
            nodes = _nodes(ctx) if first[0] else _fetch_nodes(ctx)
            first[0] = False
            missing = [n for n in want if n not in nodes]
            not_ready = [n for n in want if n in nodes and not _ready(nodes[n])]
            if not missing and not not_ready:
                return True, "all Ready"
            return False, "; ".join(filter(None, [
                f"not registered: {', '.join(missing)}" if missing else "",
                f"NotReady: {', '.join(not_ready)}" if not_ready else ""]))

        def diagnose() -> str:
            nodes = _fetch_nodes(ctx)
            parts = [_diagnose_cluster(ctx)]
            for name in want:
                if name in nodes and _ready(nodes[name]):
                    continue
                ops = ctx.ops(name)
                for cmd in (Cmd("systemctl", "is-active", "containerd", "kubelet"),
                            Cmd("journalctl", "-u", "kubelet", "-n", "20", "--no-pager")):
                    res = ops.read(cmd, check=False)
                    parts.append(f"[{name}] $ {cmd.masked()}\n{(res.stdout + res.stderr).strip()}")
            return ctx.log.redact("\n".join(parts))

        _wait(ctx, "every node to be Ready", probe, diagnose)
        return PhaseResult(self.title, notes=[f"{len(want)} nodes Ready"])


def kubeconfig_for_user(admin_conf: str, server: str) -> str:
    """The admin kubeconfig with its server pointing at the control-plane endpoint."""
    doc = yaml.safe_load(admin_conf) or {}
    for c in doc.get("clusters") or []:
        c.setdefault("cluster", {})["server"] = server
    return yaml.safe_dump(doc, sort_keys=False)


class WriteKubeconfig(Phase):
    title = "write kubeconfig"

    def __init__(self, path: Path):
        self.path = path

    def run(self, ctx: Context) -> PhaseResult:
        host = ctx.first_cp
        ops = ctx.ops(host.name)
        user = host.ssh.user
        admin = ""
        if not ctx.dry_run or _bootstrapped(ctx):
            home = "/root" if user == "root" else (
                (ops.read(Cmd("getent", "passwd", user)).stdout.split(":") + [""] * 6)[5] or f"/home/{user}")
            target = f"{home}/.kube/config"
            # One round trip: is the user's copy current (first line), then admin.conf itself.
            res = ops.read(Cmd("sh", "-c", 'cmp -s -- "$1" "$2"; echo "$?"; cat -- "$1"',
                               "gpuk8s-kubeconfig", ADMIN_CONF, target), check=False)
            first, _, admin = res.stdout.partition("\n")
            if first.strip() != "0":
                ops.change(f"install the admin kubeconfig for {user} at {target}",
                           Cmd("install", "-D", "-m", "0600", "-o", user, ADMIN_CONF, target))
        if ctx.dry_run and not _bootstrapped(ctx):
            ctx.gate.wet("local", f"write the admin kubeconfig to {self.path}", lambda: None)
            return PhaseResult(self.title)
        if not admin.strip():
            admin = ops.read(Cmd("cat", ADMIN_CONF)).stdout
        content = kubeconfig_for_user(admin, f"https://{control_plane_endpoint(ctx.inventory)}")
        current = self.path.read_text() if self.path.exists() else None
        if current != content:
            ctx.gate.wet("local", f"write the admin kubeconfig to {self.path} (mode 0600)",
                         lambda: _write_private(self.path, content))
        return PhaseResult(self.title, notes=[f"kubeconfig: {self.path}"])


def _write_private(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    os.chmod(path, 0o600)


class DeleteJoinToken(Phase):
    title = "delete join token"

    def run(self, ctx: Context) -> PhaseResult:
        if not ctx.token_in_use:
            return PhaseResult(self.title)
        token_id = ctx.secrets.token.reveal().split(".", 1)[0]  # the public half
        ops = ctx.ops(ctx.first_cp.name)
        ops.gate.wet(ctx.first_cp.name, f"delete bootstrap token {token_id}",
                     lambda: ops.read(Cmd("kubeadm", "token", "delete", token_id), check=False),
                     commands=[Cmd("kubeadm", "token", "delete", token_id)])
        return PhaseResult(self.title)
