"""`gpuk8s up`: preflight, then the phases that take hosts to a running cluster."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gpuk8s.actions.base import new_context, run_reported
from gpuk8s.gate import Plan
from gpuk8s.inventory import Inventory
from gpuk8s.phases.base import Phase, PhaseResult, RunOptions
from gpuk8s.phases.cluster import (ApplyNodeMetadata, InitControlPlane, InstallCalico,
                                   JoinControlPlanes, JoinWorkers, WaitNodesReady)
from gpuk8s.phases.gpu import (InstallGPUOperator, InstallHelm, LabelGPUNodes, SmokeTestGPUs,
                               WaitGPUOperator)
from gpuk8s.phases.kubeconfig import WriteKubeconfig
from gpuk8s.phases.preflight import (Connect, GatherFacts, PreflightReport, RequirePreflight,
                                     RunPreflightChecks)
from gpuk8s.phases.prepare import PrepareHosts
from gpuk8s.phases.vip import InstallKubeVip
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

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed_hosts

    def to_dict(self) -> dict[str, Any]:
        """`up --json`: the outcome, each phase, each change (commands masked), the GPU nodes."""
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "changed": self.changed,
            "error": self.error,
            "failed_hosts": dict(self.failed_hosts),
            "ignored_checks": {k: list(v) for k, v in self.ignored.items()},
            "phases": [_phase_dict(p, self.dry_run) for p in self.phases],
            "changes": [{"host": c.host, "description": c.description, "commands": c.commands,
                         "files": [f.path for f in c.files]} for c in self.plan.changes],
            "gpu_nodes": [dict(r) for r in self.gpu_nodes],
            "preflight": preflight_summary(self.preflight),
            "kubeconfig": str(self.kubeconfig) if self.kubeconfig and not self.dry_run else None,
            "log": str(self.log_path) if self.log_path else None,
        }


def _phase_dict(p: PhaseResult, dry_run: bool) -> dict[str, Any]:
    status = ("failed" if p.error else "not-needed" if p.skipped else
              ("would-change" if dry_run else "changed") if p.changes else "unchanged")
    return {"name": p.name, "status": status, "changes": list(p.changes), "notes": list(p.notes),
            "seconds": round(p.seconds, 3), "error": p.error}


def preflight_summary(report: PreflightReport | None) -> dict[str, Any] | None:
    """Preflight's outcome inside `up --json`: per host, reachability and the checks that did not
    pass (`gpuk8s preflight --json` has the facts too)."""
    if report is None:
        return None
    return {"ok": report.ok, "hosts": [
        {"name": h.name, "reachable": h.reachable, "error": h.error,
         "checks": [c.to_dict() for c in h.checks if c.status != "pass"]} for h in report.hosts]}


def preflight_failed_document(report: PreflightReport, error: str, dry_run: bool) -> dict[str, Any]:
    """`up --json` when preflight failed: nothing was changed."""
    return {"ok": False, "dry_run": dry_run, "changed": False, "error": error, "failed_hosts": {},
            "ignored_checks": {}, "phases": [], "changes": [], "gpu_nodes": [],
            "preflight": preflight_summary(report), "kubeconfig": None, "log": None}


def phases(kubeconfig: Path) -> list[Phase]:
    return [Connect(), GatherFacts(), RunPreflightChecks(), RequirePreflight(), PrepareHosts(),
            InitControlPlane(), InstallCalico(), InstallHelm(), InstallGPUOperator(),
            JoinControlPlanes(), InstallKubeVip(), JoinWorkers(), ApplyNodeMetadata(), LabelGPUNodes(),
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
    return run_reported(ctx, phases(kubeconfig), report, before_changes=_BEFORE_CHANGES, fill=_fill,
                        on_phase=on_phase)


def _fill(report: UpReport, ctx: Any) -> None:
    report.preflight = ctx.state.preflight
    report.ignored = dict(ctx.state.ignored)
    report.failed_hosts = dict(ctx.failed_hosts)
    report.gpu_nodes = list(ctx.state.gpu_summary)
