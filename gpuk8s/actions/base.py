"""What every action shares: a run context over the inventory's hosts, and the phase manager."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Iterable

from gpuk8s.errors import ActionFailed, UsageError
from gpuk8s.gate import Gate
from gpuk8s.host import Host
from gpuk8s.inventory import Inventory
from gpuk8s.phases.base import Context, Phase, PhaseAborted, PhaseResult, RunOptions, run_phases
from gpuk8s.runlog import RunLog


def new_context(inventory: Inventory, options: RunOptions, log: RunLog, *,
                open_transport: Callable[..., Any] | None = None, secrets: Any = None,
                progress: Any = None) -> Context:
    """A context with one runtime Host per inventory host (not connected yet)."""
    if open_transport is None:
        from gpuk8s.transport import open_transport as default_open

        open_transport = default_open
    gate = Gate(options.dry_run, log)
    hosts = [Host(spec, gate, log) for spec in inventory.hosts]
    if secrets is not None:
        for value in secrets.values():
            log.add_secret(value)
    return Context(inventory=inventory, options=options, gate=gate, log=log, hosts=hosts,
                   secrets=secrets, open_transport=open_transport, progress=progress)


def run(ctx: Context, phases: list[Phase],
        on_phase: Callable[[str, PhaseResult | None], None] | None = None) -> list[PhaseResult]:
    """Run an action's phase list (cleanups, closing connections among them, always run)."""
    return run_phases(ctx, phases, on_phase)


def only_hosts(inventory: Inventory, names: Iterable[str]) -> Inventory:
    """The inventory limited to the named hosts (--host); an unknown name is a usage error."""
    names = list(names)
    unknown = [n for n in names if n not in {h.name for h in inventory.hosts}]
    if unknown:
        raise UsageError(f"--host: no such host in {inventory.path}: {', '.join(unknown)}")
    return replace(inventory, hosts=tuple(h for h in inventory.hosts if h.name in names))


def run_reported(ctx: Context, phases: list[Phase], report: Any, *, before_changes: Iterable[str],
                 fill: Callable[[Any, Context], None],
                 on_phase: Callable[[str, PhaseResult | None], None] | None = None) -> Any:
    """Run a changing action's phases into `report` (its `phases`, `error`, and what `fill` adds).

    A failure in one of `before_changes` (nothing was changed yet) is raised as itself; a later
    one fills the report and raises ActionFailed carrying it, so the command can show what was
    done before the failure."""
    try:
        report.phases = run(ctx, phases, on_phase)
    except PhaseAborted as e:
        if any(r.error for r in e.results if r.name in set(before_changes)):
            raise e.cause from None
        report.phases = e.results
        report.error = ctx.log.redact(str(e.cause))
        fill(report, ctx)
        raise ActionFailed(report, e.cause, report.error) from None
    fill(report, ctx)
    return report
