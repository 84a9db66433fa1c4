"""The `up` action: preflight, then the phases that take hosts to a running cluster."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from gpuk8s.errors import Gpuk8sError, TransportError
from gpuk8s.hostops import Gate, Plan
from gpuk8s.inventory import Inventory
from gpuk8s.phases.base import Context, PhaseAborted, PhaseResult, UpOptions, run_phases
from gpuk8s.phases.cluster import (ApplyNodeMetadata, DeleteJoinToken, InitControlPlane, InstallCalico,
                                   JoinControlPlanes, JoinWorkers, WaitNodesReady, WriteKubeconfig)
from gpuk8s.phases.prepare import PrepareHosts
from gpuk8s.preflight import PreflightReport, check_hosts, gather_facts
from gpuk8s.render import ClusterSecrets, release_for_inventory
from gpuk8s.runlog import RunLog
from gpuk8s.runner import for_each_host

# Failed checks that `up` itself repairs while preparing hosts: they do not stop it.
FIXED_BY_UP = frozenset({
    "swap-off", "ip-forward", "bridge-netfilter", "kernel-modules", "containerd-version",
    "containerd-cri-enabled", "containerd-systemd-cgroup", "containerd-config-version",
    "containerd-sandbox-image", "kube-tools-version", "helm", "required-binaries",
})


class PreflightFailed(Gpuk8sError):
    """Hosts failed checks that `up` cannot repair; nothing was changed."""

    exit_code = 1

    def __init__(self, report: PreflightReport, blocking: dict[str, list[str]]):
        self.report, self.blocking = report, blocking
        lines = ["preflight failed; nothing was changed. Fix these (or pass --ignore CHECK_ID):"]
        for host, ids in blocking.items():
            lines.append(f"- {host}: {', '.join(ids)}")
        super().__init__("\n".join(lines))


@dataclass
class UpReport:
    phases: list[PhaseResult]
    plan: Plan
    preflight: PreflightReport
    ignored: dict[str, list[str]] = field(default_factory=dict)
    failed_hosts: dict[str, str] = field(default_factory=dict)
    kubeconfig: Path | None = None
    log_path: Path | None = None
    dry_run: bool = False
    error: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.plan.changes)


def blocking_failures(report: PreflightReport, ignore: Iterable[str]) -> tuple[dict, dict]:
    """(blocking failed check ids per host, ignored ones per host)."""
    ignore = set(ignore)
    blocking: dict[str, list[str]] = {}
    ignored: dict[str, list[str]] = {}
    for h in report.hosts:
        for c in h.failed:
            if c.id in ignore:
                ignored.setdefault(h.name, []).append(c.id)
            elif c.id not in FIXED_BY_UP:
                blocking.setdefault(h.name, []).append(c.id)
        if h.error and h.error_kind == "sudo-password":
            blocking.setdefault(h.name, []).append("privileged-access")
    return blocking, ignored


def run_up(inventory: Inventory, options: UpOptions, *, log: RunLog,
           open_transport: Callable | None = None,
           on_phase: Callable[[str, PhaseResult | None], None] | None = None,
           secrets: ClusterSecrets | None = None, progress: object | None = None) -> UpReport:
    """Preflight every host, then run the phases; a re-run resumes from what the facts show."""
    if open_transport is None:
        from gpuk8s.transport import open_transport as _open

        open_transport = _open
    release = release_for_inventory(inventory)
    secrets = secrets or ClusterSecrets.generate()
    for value in secrets.values():
        log.add_secret(value)
    kubeconfig = options.kubeconfig_path or Path(f"{inventory.cluster.name}-kubeconfig").resolve()

    # One connection per host for the whole run; each host is probed as soon as it is connected.
    transports: dict = {}
    try:
        def probe(host):
            transports[host.name] = open_transport(host, accept_new_host_keys=options.accept_new_host_keys)
            return gather_facts(transports[host.name], inventory)

        outcomes = for_each_host(inventory.hosts, probe, name=lambda h: h.name,
                                 parallel=options.parallel)
        report = check_hosts(inventory, outcomes)
        if report.unreachable:
            raise TransportError(
                "unreachable", "cannot reach " + "; ".join(f"{h.error}" for h in report.unreachable))
        blocking, ignored = blocking_failures(report, options.ignore_checks)
        for host, ids in ignored.items():
            log.write(host, f"ignoring failed checks (--ignore): {', '.join(ids)}")
        if blocking:
            raise PreflightFailed(report, blocking)

        facts = {h.name: h.facts for h in report.hosts}

        def refresh(names: Iterable[str]) -> None:
            names = list(names)
            res = for_each_host([inventory.host(n) for n in names],
                                lambda h: gather_facts(transports[h.name], inventory)[0],
                                name=lambda h: h.name, parallel=options.parallel)
            for n, o in res.items():
                if o.ok:
                    facts[n] = o.value

        ctx = Context(inventory=inventory, release=release, options=options,
                      gate=Gate(options.dry_run, log), log=log, secrets=secrets,
                      transports=transports, facts=facts, refresh=refresh, progress=progress)
        phases = [PrepareHosts(), InitControlPlane(), InstallCalico(), JoinControlPlanes(),
                  JoinWorkers(), ApplyNodeMetadata(), WaitNodesReady(), WriteKubeconfig(kubeconfig),
                  DeleteJoinToken()]
        up = UpReport([], ctx.gate.plan, report, ignored, kubeconfig=kubeconfig,
                      log_path=log.path, dry_run=options.dry_run)
        try:
            up.phases = run_phases(ctx, phases, on_phase)
        except PhaseAborted as e:
            up.phases = e.results
            up.error = log.redact(str(e.cause))
            up.failed_hosts = dict(ctx.failed_hosts)
            _cleanup_token(ctx)
            raise UpFailed(up, e.cause) from None
        up.failed_hosts = dict(ctx.failed_hosts)
        return up
    finally:
        for t in transports.values():
            t.close()


def _cleanup_token(ctx: Context) -> None:
    """After a failure, still delete this run's join token (best effort)."""
    if ctx.token_in_use and not ctx.dry_run:
        try:
            DeleteJoinToken().run(ctx)
        except Exception as e:  # noqa: BLE001 - cleanup must not hide the real failure
            ctx.log.write(ctx.first_cp.name, f"could not delete the join token: {e}")


class UpFailed(Gpuk8sError):
    """A phase failed; carries the partial report."""

    def __init__(self, report: UpReport, cause: BaseException):
        self.report, self.cause = report, cause
        self.exit_code = getattr(cause, "exit_code", 5)
        super().__init__(report.error or str(cause))
