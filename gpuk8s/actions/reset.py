"""`gpuk8s reset`: drain, kubeadm reset and clean up nodes, so that `up` can take them again."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gpuk8s.actions.base import new_context, run_reported
from gpuk8s.errors import UsageError
from gpuk8s.gate import Plan
from gpuk8s.inventory import Inventory
from gpuk8s.phases.base import Phase, PhaseResult, RunOptions
from gpuk8s.phases.preflight import Connect, GatherFacts
from gpuk8s.phases.reset import (CleanupHosts, DeleteNodes, DrainNodes, KubeadmReset, PlanReset,
                                 ResetRequest)
from gpuk8s.runlog import RunLog

# Phases before any change: a failure there is reported as itself (nothing was changed).
_BEFORE_CHANGES = (Connect.title, GatherFacts.title, PlanReset.title)


@dataclass
class ResetReport:
    request: ResetRequest
    phases: list[PhaseResult]
    plan: Plan
    dry_run: bool = False
    log_path: Path | None = None
    error: str | None = None
    failed_hosts: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.plan.changes)


def phases(request: ResetRequest) -> list[Phase]:
    return [Connect(), GatherFacts(), PlanReset(request), DrainNodes(request), KubeadmReset(request),
            CleanupHosts(request), DeleteNodes(request)]


def run_reset(inventory: Inventory, request: ResetRequest, options: RunOptions, *, log: RunLog,
              open_transport: Callable[..., Any] | None = None,
              on_phase: Callable[[str, PhaseResult | None], None] | None = None,
              progress: Any = None) -> ResetReport:
    """Every inventory host is connected (kubectl runs on a control plane that stays)."""
    known = {h.name for h in inventory.hosts}
    unknown = [n for n in request.hosts if n not in known]
    if unknown:
        raise UsageError(f"--host: no such host in {inventory.path}: {', '.join(unknown)}")
    if not request.all and not request.hosts:
        raise UsageError("name the hosts to reset (--host NAME, repeatable) or pass --all")
    if request.all and request.hosts:
        raise UsageError("--all resets every host: do not combine it with --host")
    ctx = new_context(inventory, options, log, open_transport=open_transport, progress=progress)
    report = ResetReport(request, [], ctx.gate.plan, options.dry_run, log.path)
    return run_reported(ctx, phases(request), report, before_changes=_BEFORE_CHANGES, fill=_fill,
                        on_phase=on_phase)


def _fill(report: ResetReport, ctx: Any) -> None:
    report.failed_hosts = dict(ctx.failed_hosts)
