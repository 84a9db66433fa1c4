"""Offline phases of `gpuk8s render`: every file gpuk8s would write or apply, into a directory."""

from __future__ import annotations

from pathlib import Path

from gpuk8s.phases.base import Context, Phase, PhaseResult
from gpuk8s.render import render_all, write_tree
from gpuk8s.render.kubevip import kube_vip_files


class RenderArtifacts(Phase):
    title = "render files"

    def __init__(self, os_family: str):
        self.os_family = os_family

    def run(self, ctx: Context) -> PhaseResult:
        ctx.state.artifacts = render_all(ctx.inventory, self.os_family)
        ctx.state.artifacts += kube_vip_files(ctx.inventory, ctx.inventory.release)  # cluster.vip
        return PhaseResult(self.title, notes=[f"{len(ctx.state.artifacts)} files"])


class WriteTree(Phase):
    title = "write files"

    def __init__(self, out: Path):
        self.out = out

    def run(self, ctx: Context) -> PhaseResult:
        ctx.state.written = write_tree(ctx.state.artifacts, self.out)
        return PhaseResult(self.title)
