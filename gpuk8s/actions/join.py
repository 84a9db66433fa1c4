"""`gpuk8s join`: add the inventory hosts that are not yet nodes of the running cluster.

The first control plane is asked which hosts are nodes already (left alone); the others are
preflighted (plus a TCP connect from each to the control-plane endpoint), prepared, and joined
with a bootstrap token made for this run and deleted when it ends, a fresh certificate key
uploaded right before each control-plane join, and the CA hash computed here. Then labels and
taints, Ready, and on GPU nodes the operands and the CUDA smoke test, on the new nodes only.
The join phases are `up`'s own (phases/cluster.py).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from gpuk8s.actions.base import new_context, run_reported
from gpuk8s.errors import UsageError
from gpuk8s.gate import Plan
from gpuk8s.inventory import Inventory
from gpuk8s.phases.base import Phase, PhaseResult, RunOptions
from gpuk8s.phases.cluster import ApplyNodeMetadata, JoinControlPlanes, JoinWorkers, WaitNodesReady
from gpuk8s.phases.gpu import LabelGPUNodes, SmokeTestGPUs, WaitGPUOperator
from gpuk8s.phases.join import FindJoiningHosts, JoinPreflightChecks, RequireGPUOperator
from gpuk8s.phases.prepare import PrepareHosts
from gpuk8s.phases.vip import InstallKubeVip
from gpuk8s.phases.preflight import Connect, GatherFacts, PreflightReport, RequirePreflight
from gpuk8s.render import ClusterSecrets
from gpuk8s.runlog import RunLog

# How long this run's bootstrap token lives: the joins of one run, not days (it is deleted when
# the run ends anyway; the TTL bounds a token whose deletion could not run, e.g. a lost host).
JOIN_TOKEN_TTL = "1h0m0s"

# Phases before any change: a failure there is reported as itself (nothing was changed).
_BEFORE_CHANGES = (FindJoiningHosts.title, Connect.title, GatherFacts.title,
                   JoinPreflightChecks.title, RequirePreflight.title, RequireGPUOperator.title)


@dataclass
class JoinReport:
    phases: list[PhaseResult]
    plan: Plan
    preflight: PreflightReport | None
    already_nodes: list[str] = field(default_factory=list)   # left alone
    joining: list[str] = field(default_factory=list)         # the hosts this run worked on
    ignored: dict[str, list[str]] = field(default_factory=dict)
    failed_hosts: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    dry_run: bool = False
    error: str | None = None
    gpu_nodes: list[dict] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.plan.changes)

    @property
    def joined(self) -> list[str]:
        return [] if self.dry_run or self.error else \
            [n for n in self.joining if n not in self.failed_hosts]


def run_id() -> str:
    """Names this run in the bootstrap token's description (`kubeadm token list` shows it)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + f" pid {os.getpid()}"


def phases(cluster_name: str, rid: str | None = None) -> list[Phase]:
    desc = f"gpuk8s join {cluster_name} {rid or run_id()}"
    token = dict(token_ttl=JOIN_TOKEN_TTL, token_description=desc, command="join")
    return [FindJoiningHosts(), Connect(), GatherFacts(), JoinPreflightChecks(), RequirePreflight(),
            RequireGPUOperator(), PrepareHosts(), JoinControlPlanes(**token), InstallKubeVip(), JoinWorkers(**token),
            ApplyNodeMetadata(), LabelGPUNodes(), WaitNodesReady(), WaitGPUOperator(), SmokeTestGPUs()]


def join_candidates(inventory: Inventory, names: Iterable[str] = ()) -> Inventory:
    """The inventory with the hosts `join` may add (all but the first control plane, or the
    named ones) after the first control plane; naming the first control plane is an error."""
    from dataclasses import replace

    names = list(names)
    first = inventory.first_control_plane.name
    known = {h.name for h in inventory.hosts}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"--host: no such host in {inventory.path}: {', '.join(unknown)}")
    if first in names:
        raise UsageError(f"--host {first}: the first control plane is where the cluster was created "
                         "(`gpuk8s up`); join adds the other hosts to it")
    keep = [h for h in inventory.hosts if h.name != first and (not names or h.name in names)]
    return replace(inventory, hosts=(inventory.first_control_plane, *keep))


def run_join(inventory: Inventory, options: RunOptions, *, log: RunLog, hosts: Iterable[str] = (),
             open_transport: Callable[..., Any] | None = None,
             on_phase: Callable[[str, PhaseResult | None], None] | None = None,
             secrets: ClusterSecrets | None = None, progress: Any = None) -> JoinReport:
    """Join the hosts that are not nodes yet; a re-run resumes (every phase decides from facts)."""
    inv = join_candidates(inventory, hosts)
    ctx = new_context(inv, options, log, open_transport=open_transport,
                      secrets=secrets or ClusterSecrets.generate(), progress=progress)
    report = JoinReport([], ctx.gate.plan, None, log_path=log.path, dry_run=options.dry_run)
    return run_reported(ctx, phases(inventory.cluster.name), report, before_changes=_BEFORE_CHANGES,
                        fill=_fill, on_phase=on_phase)


def _fill(report: JoinReport, ctx: Any) -> None:
    first = ctx.first_cp.name
    report.preflight = ctx.state.preflight
    report.already_nodes = sorted(ctx.state.left_alone - {first})
    report.joining = [h.name for h in ctx.hosts if h.name not in ctx.state.left_alone]
    report.ignored = dict(ctx.state.ignored)
    report.failed_hosts = {n: e for n, e in ctx.failed_hosts.items() if n != first}
    report.gpu_nodes = list(ctx.state.gpu_summary)
