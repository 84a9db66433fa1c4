"""verify's host phase: VERIFY_HOSTS on every host that connected and was probed.

Runs after Connect and GatherFacts (phases/preflight.py). Each host's checks run through
testinfra over that host's own gpuk8s connection (gpuk8s/testinfra_backend.py), hosts in
parallel, and a host's checks concurrently (paramiko multiplexes sessions on the one
connection; at most HOST_CHECKS_IN_FLIGHT at once, below OpenSSH's default MaxSessions of 10).

A host whose connect or probe failed is absent from `ctx.state.verify_hosts` (its error is on
the Host). A command that hangs ends at the transport's command timeout and fails only the
check that made it; a host whose connection is lost fails the checks it could not run (a lost
host runs nothing more, so they fail at once); the other hosts are never held up.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Mapping

from gpuk8s.checks.base import FAIL, CheckContext, CheckResult, crashed
from gpuk8s.checks.verify_host import (VERIFY_HOSTS, VerifyHostContext, host_driver_mode,
                                        planned_commands)
from gpuk8s.errors import Interrupted, TransportError
from gpuk8s.facts import Facts
from gpuk8s.host import Host
from gpuk8s.phases.base import Context, Phase, PhaseResult
from gpuk8s.runner import for_each_host
from gpuk8s.shell import printable, quote

# Sessions one host's checks keep open at once. OpenSSH's MaxSessions defaults to 10 per
# connection (sshd_config(5)); an interrupt's kill and the liveness check need one more each.
HOST_CHECKS_IN_FLIGHT = 6


class VerifyHosts(Phase):
    """The host check set (VERIFY_HOSTS) on every reachable, probed host."""

    title = "verify hosts"

    def run(self, ctx: Context) -> PhaseResult:
        hosts = [h for h in ctx.hosts
                 if h.transport is not None and h.error is None and h.facts is not None]
        fleet = {h.name: h.facts for h in hosts if h.facts is not None}
        results: dict[str, list[CheckResult]] = {}

        def verify(host: Host) -> None:
            results[host.name] = verify_host(ctx, host, fleet)

        ctx.parallel(hosts, verify, self.title, fatal=False)
        # Every probed host has a list, in inventory order (a worker that failed outright
        # reports each check as failed).
        ctx.state.verify_hosts = {
            h.name: results.get(h.name) or [
                CheckResult(i, FAIL, f"not checked: {printable(h.failed or 'the host worker failed')}")
                for i in VERIFY_HOSTS.ids]
            for h in hosts}
        failed = sum(1 for rs in ctx.state.verify_hosts.values() for r in rs if r.status == FAIL)
        return PhaseResult(self.title, notes=[f"{len(hosts)} hosts checked, {failed} failed checks"])


def verify_context(ctx: Context, host: Host, fleet: Mapping[str, Facts]) -> VerifyHostContext:
    """The check context of one connected, probed host (its testinfra Host over its connection)."""
    from gpuk8s.testinfra_backend import testinfra_host   # testinfra loads only when verify runs

    assert host.facts is not None
    base = CheckContext.for_host(ctx.inventory, host.spec, host.facts, fleet)
    values = {f.name: getattr(base, f.name) for f in fields(CheckContext)}
    vctx = VerifyHostContext(**values, ti=testinfra_host(host, timeout=host.spec.ssh.command_timeout))
    if vctx.gpu:
        vctx = VerifyHostContext(**values, ti=vctx.ti, driver=host_driver_mode(vctx))
    return vctx


def verify_host(ctx: Context, host: Host, fleet: Mapping[str, Facts]) -> list[CheckResult]:
    """Every VERIFY_HOSTS check on one host, in the set's order; never raises for a check."""
    vctx = verify_context(ctx, host, fleet)
    try:   # one round trip for every command the checks are known to send
        vctx.ti.backend.prefetch(planned_commands(vctx))
    except TransportError as e:
        ctx.log.write(host.name, f"testinfra batch failed: {e}")
        if e.kind != "timeout":   # lost, closed, sudo wants a password: no command would run
            return [not_run(i, e, host) for i in VERIFY_HOSTS.ids]
        # timed out: one of them hangs; each runs on its own, so only its own check fails
    checks = VERIFY_HOSTS.checks()
    outcomes = for_each_host(checks, lambda c: c[1](vctx), name=lambda c: c[0].id,
                             parallel=HOST_CHECKS_IN_FLIGHT, stop=ctx.gate.interrupted)
    out = []
    for info, _ in checks:
        o = outcomes[info.id]
        if o.ok and isinstance(o.value, CheckResult):
            out.append(o.value)
        else:
            out.append(not_run(info.id, o.error, host))
    return out


def not_run(check_id: str, e: BaseException | None, host: Host) -> CheckResult:
    """The failure of a check whose commands could not run, or that raised."""
    if isinstance(e, Interrupted):
        return CheckResult(check_id, FAIL, "not checked: the run was interrupted")
    if isinstance(e, TransportError):
        return CheckResult(check_id, FAIL, f"could not run on the host: {printable(host.log.redact(str(e)))}",
                           f"gpuk8s preflight --host {quote(host.name)}   # is the host reachable?"
                           if e.kind in ("lost", "closed", "timeout") else None)
    if isinstance(e, AssertionError):   # testinfra's check_output/run_expect: an exit it did not expect
        text = " ".join(re.sub(r"backend=<[^>]*>, ", "", str(e)).split())[:300]
        return CheckResult(check_id, FAIL, f"unexpected answer from the host: {printable(text)}",
                           "run that command on the host to see why it fails")
    if e is None:
        e = RuntimeError("the check returned no result")
    return crashed(check_id, e, host.name, host.facts)
