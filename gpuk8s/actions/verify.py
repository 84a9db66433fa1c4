"""`gpuk8s verify`: prove a running GPU cluster is healthy, host by host and node by node.

Phases: Connect, GatherFacts (phases/preflight.py), VerifyHosts (phases/verify.py: the host checks),
VerifyCluster (phases/verify_cluster.py: one kubectl read, the cluster checks, the CUDA smoke Jobs
unless --no-smoke). Read-only except the smoke Jobs, which its cleanup deletes. The report has
the document shape of preflight's (`{"ok", "hosts": [...], "cluster": {...}}`); docs/verify.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from gpuk8s.actions.base import new_context, run
from gpuk8s.checks.base import CheckResult
from gpuk8s.errors import EXIT_CHECKS_FAILED, EXIT_OK, EXIT_UNREACHABLE
from gpuk8s.inventory import Inventory
from gpuk8s.phases.base import Context, Phase, RunOptions
from gpuk8s.phases.preflight import Connect, GatherFacts, HostReport, unreachable_report
from gpuk8s.phases.verify_cluster import StartClusterRead, VerifyCluster
from gpuk8s.runlog import RunLog


@dataclass
class ClusterReport:
    where: str                                   # where kubectl ran
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "fail"]

    def to_dict(self) -> dict[str, Any]:
        return {"kubectl": self.where or None, "checks": [c.to_dict() for c in self.checks]}


@dataclass
class VerifyReport:
    hosts: list[HostReport]
    cluster: ClusterReport

    @property
    def unreachable(self) -> list[HostReport]:
        return [h for h in self.hosts if not h.reachable]

    @property
    def failed(self) -> bool:
        return bool(self.cluster.failed) or any(h.failed or h.error for h in self.hosts)

    @property
    def ok(self) -> bool:
        return not self.unreachable and not self.failed

    @property
    def exit_code(self) -> int:
        """0 only when nothing failed; 4 when a host is unreachable; 1 for failed checks."""
        if self.unreachable:
            return EXIT_UNREACHABLE
        return EXIT_CHECKS_FAILED if self.failed else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "hosts": [h.to_dict() for h in self.hosts], "cluster": self.cluster.to_dict()}


def phases(*, known: frozenset[str] | None = None, smoke: bool = True, kubeconfig: str | None = None,
           control_planes: tuple = ()) -> list[Phase]:
    from gpuk8s.phases.verify import VerifyHosts

    cluster = VerifyCluster(known=known, smoke=smoke, kubeconfig=kubeconfig, control_planes=control_planes)
    # The cluster read starts before the host checks and runs beside them (one kubectl call on
    # one session of the control plane's connection); VerifyCluster waits for it.
    return [Connect(), GatherFacts(), StartClusterRead(cluster), VerifyHosts(), cluster]


def host_reports(ctx: Context) -> list[HostReport]:
    """Each host's report: its connection or probe error, or its host check results."""
    results = getattr(ctx.state, "verify_hosts", None) or {}
    out = []
    for host in ctx.hosts:
        spec = host.spec
        down = unreachable_report(host)
        if down is not None:
            out.append(down)
            continue
        checks = results.get(spec.name)
        error = host.warning if checks is not None else (host.failed or "the host checks did not run")
        kind = "sudo-password" if host.warning else (None if checks is not None else "error")
        out.append(HostReport(spec.name, spec.address, True, error, kind, host.facts, list(checks or [])))
    return out


def run_verify(inventory: Inventory, options: RunOptions = RunOptions(), *,
               full: Inventory | None = None, smoke: bool = True, kubeconfig: str | None = None,
               open_transport: Callable[..., Any] | None = None, progress: Any = None,
               log: RunLog | None = None) -> VerifyReport:
    """Verify the inventory's hosts and the cluster. `full`: the whole inventory when --host
    limits `inventory`: only nodes outside it count as unknown, and kubectl runs on one of its
    control planes when none was selected."""
    full = full or inventory
    ctx = new_context(inventory, options, log or RunLog(None), open_transport=open_transport,
                      progress=progress)
    plist = phases(known=frozenset(h.name for h in full.hosts), smoke=smoke, kubeconfig=kubeconfig,
                   control_planes=tuple(full.control_planes))
    run(ctx, plist)
    vc = next(p for p in plist if isinstance(p, VerifyCluster))
    return VerifyReport(host_reports(ctx), ClusterReport(vc.where, vc.results))
