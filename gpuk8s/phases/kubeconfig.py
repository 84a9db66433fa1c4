"""Kubeconfig phases: fetch the admin kubeconfig or make a named user's, and write it locally.

`gpuk8s kubeconfig` runs Connect, GatherFacts, FindControlPlane, FetchKubeconfig and
WriteKubeconfigFile; `up` ends with WriteKubeconfig. Both go through gpuk8s/kubeconfig.py (the
server set to the control-plane endpoint, entries named for the cluster, a private atomic write).
The content holds a client key: it is registered with the run log's redaction as soon as it is
read, and shown nowhere but in the file (or on stdout) the user asked for.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path

from gpuk8s import kubeconfig as kc
from gpuk8s.errors import ClusterStateError, TransportError, UsageError
from gpuk8s.facts.cluster import get_objects, kubectl
from gpuk8s.gate import LOCAL, Change
from gpuk8s.host import Host
from gpuk8s.paths import ADMIN_CONF
from gpuk8s.phases.base import Context, Phase, PhaseResult
from gpuk8s.render.kubeconfig import binding_name, kubeadm_user_config, user_binding
from gpuk8s.shell import Cmd, printable

# One round trip: is the user's copy current (first line: cmp's status), then admin.conf itself.
_COMPARE_AND_READ = 'cmp -s -- "$1" "$2"; echo "$?"; cat -- "$1"'


def server_url(ctx: Context) -> str:
    """The API server every kubeconfig gpuk8s writes points at: the control-plane endpoint."""
    return f"https://{ctx.inventory.control_plane_endpoint}"


def admin_kubeconfig(ctx: Context, admin_conf: str) -> str:
    """admin.conf as gpuk8s hands it out: server = endpoint, entries named for the cluster."""
    for value in kc.secret_values(admin_conf):
        ctx.log.add_secret(value)
    return kc.normalized(admin_conf, server_url(ctx), kc.Names.admin(ctx.inventory.cluster.name))


@dataclass
class KubeconfigRequest:
    """What `gpuk8s kubeconfig` was asked for, and (filled by the run) what it got."""

    user: str | None = None          # None: the admin kubeconfig
    role: str = "view"
    expiry_s: float = 24 * 3600.0
    output: Path | None = None       # -o FILE (mode 0600)
    merge: Path | None = None        # --merge: this kubeconfig file, merged into
    source: str | None = None        # the control plane it came from
    content: str | None = None       # the kubeconfig (a secret: never logged)
    expires: dt.datetime | None = None
    binding: str | None = None       # the ClusterRoleBinding of --user
    context: str | None = None       # the context's name in the file
    written: Path | None = None
    tried: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.output is not None and self.merge is not None:
            raise UsageError("-o/--output and --merge are exclusive: pick one")
        if self.user is not None and (self.user.startswith("system:") or self.user in (
                "kubernetes-admin", "kubernetes-super-admin")):
            raise UsageError(f"--user {self.user}: that name is the cluster's own identity; pick another")
        if self.user is not None and not kc.USER_NAME_RE.fullmatch(self.user):
            raise UsageError(f"--user {printable(self.user)!s}: a user name is 1-63 letters, digits, '.', '_', "
                             "'@' or '-', starting with a letter or digit")
        if not kc.ROLE_NAME_RE.fullmatch(self.role or ""):
            raise UsageError(f"--cluster-role {printable(self.role)!s}: not a ClusterRole name")


class FindControlPlane(Phase):
    """The first control plane (inventory order) that is reachable and has admin.conf."""

    title = "find a control plane"

    def __init__(self, request: KubeconfigRequest):
        self.request = request

    def run(self, ctx: Context) -> PhaseResult:
        tried = []
        for host in ctx.hosts:
            if not host.is_control_plane:
                continue
            if host.error is not None or host.facts is None:
                tried.append(f"{host.name}: unreachable ({ctx.log.redact(str(host.error))})")
            elif not host.has_file(ADMIN_CONF):
                tried.append(f"{host.name}: no {ADMIN_CONF} (not a control plane of a cluster)")
            else:
                self.request.source = host.name
                return PhaseResult(self.title, notes=[f"using {host.name}"])
        self.request.tried = tried
        cps = [h for h in ctx.hosts if h.is_control_plane]
        if cps and all(h.error is not None or h.facts is None for h in cps):
            raise TransportError("unreachable", "no control plane answers; tried:\n" +
                                 "\n".join(f"- {t}" for t in tried))
        raise ClusterStateError("no control plane to read the kubeconfig from; tried:\n" +
                                "\n".join(f"- {t}" for t in tried))


class FetchKubeconfig(Phase):
    """admin.conf, or `kubeadm kubeconfig user` for --user (bound to its ClusterRole first)."""

    title = "fetch kubeconfig"

    def __init__(self, request: KubeconfigRequest):
        self.request = request

    def run(self, ctx: Context) -> PhaseResult:
        req = self.request
        host = ctx.host(req.source) if req.source else ctx.first_cp
        names = kc.Names.admin(ctx.inventory.cluster.name) if req.user is None else \
            kc.Names.for_user(ctx.inventory.cluster.name, req.user)
        req.context = names.context
        if req.user is None:
            req.content = admin_kubeconfig(ctx, host.read(Cmd("cat", ADMIN_CONF)).stdout)
            req.expires = kc.client_cert_expiry(req.content)
            return PhaseResult(self.title, notes=[f"admin kubeconfig from {host.name}"])
        self._bind(ctx, host)
        cfg = kubeadm_user_config(ctx.inventory, host.name)
        made = time.time()
        res = host.with_secret_file(
            cfg, Cmd("kubeadm", "kubeconfig", "user", "--config", cfg.path, "--client-name", req.user,
                     "--validity-period", kc.go_duration(req.expiry_s)),
            f"make a client certificate for user {req.user} (valid {kc.go_duration(req.expiry_s)})")
        if res is None:   # dry run
            req.expires = dt.datetime.fromtimestamp(made + req.expiry_s, dt.timezone.utc)
            return PhaseResult(self.title)
        for value in kc.secret_values(res.stdout):
            ctx.log.add_secret(value)
        req.content = kc.normalized(res.stdout, server_url(ctx), names)
        req.expires = kc.client_cert_expiry(req.content)
        return PhaseResult(self.title, notes=[f"user {req.user} bound to ClusterRole {req.role}"])

    def _bind(self, ctx: Context, host: Host) -> None:
        """The user's ClusterRoleBinding: applied when absent or different; its roleRef cannot
        change in place (the API server refuses it), so a binding to another role is replaced."""
        req = self.request
        assert req.user is not None
        req.binding = name = binding_name(req.user)
        if not get_objects(host, "default", f"clusterrole/{req.role}"):
            raise UsageError(f"--cluster-role {req.role}: no such ClusterRole in the cluster "
                             "(`kubectl get clusterroles` lists them; view, edit, admin and cluster-admin "
                             "always exist)")
        have = get_objects(host, "default", f"clusterrolebinding/{name}")
        if have:
            ref = have[0].get("roleRef") or {}
            subjects = have[0].get("subjects") or []
            if ref.get("name") == req.role and any(s.get("kind") == "User" and s.get("name") == req.user
                                                   for s in subjects):
                return
            if ref.get("name") != req.role:
                host.change(f"delete ClusterRoleBinding {name} (bound to {ref.get('name')})",
                            kubectl("delete", "clusterrolebinding", name, "--ignore-not-found"))
        f = user_binding(req.user, req.role, host.name)
        host.put_file(f, f"write the ClusterRoleBinding of {req.user}")
        host.change(f"bind user {req.user} to ClusterRole {req.role}",
                    kubectl("apply", "--server-side", "--force-conflicts", "-f", f.path))


class WriteKubeconfigFile(Phase):
    """-o FILE (0600, atomic) or --merge into a kubeconfig (others' entries kept, mode kept);
    neither: the CLI prints it on stdout."""

    title = "write kubeconfig"

    def __init__(self, request: KubeconfigRequest):
        self.request = request

    def run(self, ctx: Context) -> PhaseResult:
        req = self.request
        if req.output is None and req.merge is None:
            return PhaseResult(self.title, notes=["printed on stdout"])
        target = req.output or req.merge
        assert target is not None
        if req.output is not None:
            current = target.read_text() if target.exists() else None
            if req.content is not None and current == req.content:
                return PhaseResult(self.title, notes=[f"{target} is current"])
            content = req.content
            ctx.gate.apply(Change(LOCAL, f"write the kubeconfig to {target} (mode 0600)",
                                  local=lambda: kc.write_private(target, content or "")))
        else:
            existing = target.read_text() if target.exists() else ""
            merged = kc.merge(existing, req.content) if req.content is not None else None
            if merged is not None and merged == existing:
                return PhaseResult(self.title, notes=[f"{target} is current"])
            ctx.gate.apply(Change(LOCAL, f"merge the kubeconfig into {target} (others kept)",
                                  local=lambda: kc.write_merged(target, merged or "")))
        req.written = target
        return PhaseResult(self.title, notes=[f"kubeconfig: {target}"])


class WriteKubeconfig(Phase):
    """`up`'s last phase: the admin kubeconfig for the SSH user on the first control plane, and
    locally at `path` (mode 0600, server = the control-plane endpoint)."""

    title = "write kubeconfig"

    def __init__(self, path: Path):
        self.path = path

    def run(self, ctx: Context) -> PhaseResult:
        host = ctx.first_cp
        bootstrapped = host.has_file(ADMIN_CONF)
        user = host.spec.ssh.user
        admin = ""
        if not ctx.dry_run or bootstrapped:
            home = "/root" if user == "root" else (
                (host.read(Cmd("getent", "passwd", user)).stdout.split(":") + [""] * 6)[5] or f"/home/{user}")
            target = f"{home}/.kube/config"
            res = host.read(Cmd("sh", "-c", _COMPARE_AND_READ, "gpuk8s-kubeconfig", ADMIN_CONF, target),
                            check=False)
            first, _, admin = res.stdout.partition("\n")
            if first.strip() != "0":
                host.change(f"install the admin kubeconfig for {user} at {target}",
                            Cmd("install", "-D", "-m", "0600", "-o", user, ADMIN_CONF, target))
        ctx.state.kubeconfig = self.path
        if ctx.dry_run and not bootstrapped:
            ctx.gate.apply(Change(LOCAL, f"write the admin kubeconfig to {self.path}", local=lambda: None))
            return PhaseResult(self.title)
        if not admin.strip():
            admin = host.read(Cmd("cat", ADMIN_CONF)).stdout
        content = admin_kubeconfig(ctx, admin)
        current = self.path.read_text() if self.path.exists() else None
        if current != content:
            ctx.gate.apply(Change(LOCAL, f"write the admin kubeconfig to {self.path} (mode 0600)",
                                  local=lambda: kc.write_private(self.path, content)))
        return PhaseResult(self.title, notes=[f"kubeconfig: {self.path}"])
