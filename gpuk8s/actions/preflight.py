"""`gpuk8s preflight`: connect, gather facts, run the preflight checks; change nothing."""

from __future__ import annotations

from typing import Any, Callable

from gpuk8s.actions.base import new_context, run
from gpuk8s.inventory import Inventory
from gpuk8s.phases.base import Phase, RunOptions
from gpuk8s.phases.preflight import Connect, GatherFacts, PreflightReport, RunPreflightChecks
from gpuk8s.runlog import RunLog


def phases() -> list[Phase]:
    return [Connect(), GatherFacts(), RunPreflightChecks()]


def run_preflight(inventory: Inventory, options: RunOptions = RunOptions(), *,
                  open_transport: Callable[..., Any] | None = None,
                  progress: Any = None) -> PreflightReport:
    """Probe every host in parallel, then check each against its own and the fleet's facts."""
    ctx = new_context(inventory, options, RunLog(None), open_transport=open_transport,
                      progress=progress)
    run(ctx, phases())
    return ctx.state.preflight
