"""`gpuk8s kubeconfig`: the admin kubeconfig, or a named user's bound to a ClusterRole."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from gpuk8s.actions.base import new_context, run
from gpuk8s.gate import Plan
from gpuk8s.inventory import Inventory
from gpuk8s.phases.base import Phase, PhaseAborted, PhaseResult, RunOptions
from gpuk8s.phases.kubeconfig import (FetchKubeconfig, FindControlPlane, KubeconfigRequest,
                                      WriteKubeconfigFile)
from gpuk8s.phases.preflight import Connect, GatherFacts
from gpuk8s.runlog import RunLog


@dataclass
class KubeconfigReport:
    request: KubeconfigRequest
    phases: list[PhaseResult]
    plan: Plan
    dry_run: bool = False
    log_path: Path | None = None
    notes: list[str] = field(default_factory=list)


def phases(request: KubeconfigRequest) -> list[Phase]:
    return [Connect(), GatherFacts(), FindControlPlane(request), FetchKubeconfig(request),
            WriteKubeconfigFile(request)]


def run_kubeconfig(inventory: Inventory, request: KubeconfigRequest, options: RunOptions, *,
                   log: RunLog, open_transport: Callable[..., Any] | None = None,
                   on_phase: Callable[[str, PhaseResult | None], None] | None = None,
                   progress: Any = None) -> KubeconfigReport:
    """Connect to the control planes only (the kubeconfig comes from the first that answers)."""
    request.validate()
    cps = replace(inventory, hosts=tuple(h for h in inventory.hosts if h.is_control_plane))
    ctx = new_context(cps, options, log, open_transport=open_transport, progress=progress)
    try:
        results = run(ctx, phases(request), on_phase)
    except PhaseAborted as e:
        raise e.cause from None
    return KubeconfigReport(request, results, ctx.gate.plan, options.dry_run, log.path)
