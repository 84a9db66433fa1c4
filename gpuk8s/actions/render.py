"""`gpuk8s render`: every file `up` would write or apply, rendered offline into a directory."""

from __future__ import annotations

from pathlib import Path

from gpuk8s.actions.base import new_context, run
from gpuk8s.errors import UsageError
from gpuk8s.inventory import Inventory
from gpuk8s.phases.base import Phase, RunOptions
from gpuk8s.phases.render import RenderArtifacts, WriteTree
from gpuk8s.runlog import RunLog

OS_FAMILIES = ("debian", "rhel")


def phases(os_family: str, out: Path) -> list[Phase]:
    return [RenderArtifacts(os_family), WriteTree(out)]


def run_render(inventory: Inventory, os_family: str, out: Path) -> list[Path]:
    """Render and write; returns the paths written. Connects nowhere."""
    if os_family not in OS_FAMILIES:
        raise UsageError(f"--os-family must be debian or rhel, not {os_family!r}")
    ctx = new_context(inventory, RunOptions(dry_run=True), RunLog(None), open_transport=_offline)
    run(ctx, phases(os_family, out))
    return ctx.state.written


def _offline(*_args: object, **_kw: object) -> None:
    raise UsageError("render connects to no host")
