"""`gpuk8s up`: preflight, then the phases that take hosts to a running cluster."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gpuk8s.actions.base import new_context, run
from gpuk8s.errors import ActionFailed
from gpuk8s.gate import Plan
from gpuk8s.inventory import Inventory
from gpuk8s.phases.base import Phase, PhaseAborted, PhaseResult, RunOptions
from gpuk8s.phases.cluster import (ApplyNodeMetadata, InitControlPlane, InstallCalico,
                                   JoinControlPlanes, JoinWorkers, WaitNodesReady, WriteKubeconfig)
from gpuk8s.phases.gpu import (InstallGPUOperator, InstallHelm, LabelGPUNodes, SmokeTestGPUs,
                               WaitGPUOperator)
from gpuk8s.phases.prepare import PrepareHosts
from gpuk8s.phases.preflight import (Connect, GatherFacts, PreflightReport, RequirePreflight,
                                     RunPreflightChecks)
from gpuk8s.render import ClusterSecrets
from gpuk8s.runlog import RunLog

# Phases before any change: a failure there is reported as itself (nothing was changed).
_BEFORE_CHANGES = (Connect.title, GatherFacts.title, RunPreflightChecks.title, RequirePreflight.title)


@dataclass
class UpReport:
    phases: list[PhaseResult]
    plan: Plan
    preflight: PreflightReport | None
    ignored: dict[str, list[str]] = field(default_factory=dict)
    failed_hosts: dict[str, str] = field(default_factory=dict)
    kubeconfig: Path | None = None
    log_path: Path | None = None
    dry_run: bool = False
    error: str | None = None
    gpu_nodes: list[dict] = field(default_factory=list)   # one row per GPU node (phases/gpu.py)

    @property
    def changed(self) -> bool:
        return bool(self.plan.changes)


def phases(kubeconfig: Path) -> list[Phase]:
    return [Connect(), GatherFacts(), RunPreflightChecks(), RequirePreflight(), PrepareHosts(),
            InitControlPlane(), InstallCalico(), InstallHelm(), InstallGPUOperator(),
            JoinControlPlanes(), JoinWorkers(), ApplyNodeMetadata(), LabelGPUNodes(),
            WaitNodesReady(), WaitGPUOperator(), SmokeTestGPUs(), WriteKubeconfig(kubeconfig)]


def run_up(inventory: Inventory, options: RunOptions, *, log: RunLog,
           open_transport: Callable[..., Any] | None = None,
           on_phase: Callable[[str, PhaseResult | None], None] | None = None,
           secrets: ClusterSecrets | None = None, progress: Any = None) -> UpReport:
    """Preflight every host, then run the phases; a re-run resumes from what the facts show."""
    kubeconfig = options.kubeconfig_path or Path(f"{inventory.cluster.name}-kubeconfig").resolve()
    ctx = new_context(inventory, options, log, open_transport=open_transport,
                      secrets=secrets or ClusterSecrets.generate(), progress=progress)
    report = UpReport([], ctx.gate.plan, None, kubeconfig=kubeconfig, log_path=log.path,
                      dry_run=options.dry_run)
    try:
        report.phases = run(ctx, phases(kubeconfig), on_phase)
    except PhaseAborted as e:
        if any(r.error for r in e.results if r.name in _BEFORE_CHANGES):
            raise e.cause from None
        report.phases = e.results
        report.error = log.redact(str(e.cause))
        _fill(report, ctx)
        raise ActionFailed(report, e.cause, report.error) from None
    _fill(report, ctx)
    return report


def _fill(report: UpReport, ctx: Any) -> None:
    report.preflight = ctx.state.preflight
    report.ignored = dict(ctx.state.ignored)
    report.failed_hosts = dict(ctx.failed_hosts)
    report.gpu_nodes = list(ctx.state.gpu_summary)
