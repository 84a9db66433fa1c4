"""The phases every host-facing action starts with: connect, gather facts, run the preflight checks.

None of them changes a host. One host's failure (unreachable, a probe that hangs or prints
nonsense) is recorded on that host and never hides the others' results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from gpuk8s.checks import PREFLIGHT, CheckResult
from gpuk8s.checks.base import crashed
from gpuk8s.errors import (EXIT_CHECKS_FAILED, EXIT_OK, EXIT_UNREACHABLE, PreflightFailed,
                           TransportError)
from gpuk8s.facts import Facts
from gpuk8s.facts.probe import gather_facts
from gpuk8s.host import Host
from gpuk8s.phases.base import Context, Phase, PhaseResult
from gpuk8s.runner import for_each_host


@dataclass
class HostReport:
    name: str
    address: str
    reachable: bool
    error: str | None = None
    error_kind: str | None = None
    facts: Facts | None = None
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "warn"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "reachable": self.reachable,
            "error": self.error,
            "error_kind": self.error_kind,
            "facts": self.facts.to_dict() if self.facts else None,
            "checks": [c.to_dict() for c in self.checks],
        }


@dataclass
class PreflightReport:
    hosts: list[HostReport]

    @property
    def unreachable(self) -> list[HostReport]:
        return [h for h in self.hosts if not h.reachable]

    @property
    def ok(self) -> bool:
        return not self.unreachable and not any(h.failed or h.error for h in self.hosts)

    @property
    def exit_code(self) -> int:
        if self.unreachable:
            return EXIT_UNREACHABLE
        if any(h.failed or h.error for h in self.hosts):
            return EXIT_CHECKS_FAILED
        return EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "hosts": [h.to_dict() for h in self.hosts]}


class Connect(Phase):
    """One connection per host for the whole run (host keys verified)."""

    title = "connect"
    cleanup_title = "disconnect"

    def run(self, ctx: Context) -> PhaseResult:
        def connect(host: Host) -> None:
            try:
                host.transport = ctx.open_transport(
                    host.spec, accept_new_host_keys=ctx.options.accept_new_host_keys)
            except Exception as e:  # noqa: BLE001 - recorded on the host, reported with the others
                host.error = e

        ctx.parallel([h for h in ctx.hosts if h.transport is None and h.error is None], connect,
                     self.title)
        return PhaseResult(self.title)

    def cleanup(self, ctx: Context) -> None:
        for host in ctx.hosts:
            host.close()


class GatherFacts(Phase):
    """Every connected host's facts in one round trip (the probe)."""

    title = "gather facts"

    def run(self, ctx: Context) -> PhaseResult:
        ctx.parallel([h for h in ctx.hosts if h.transport is not None and h.error is None],
                     lambda h: probe(ctx, h), self.title)
        return PhaseResult(self.title)


def probe(ctx: Context, host: Host) -> None:
    """Gather a host's facts; a failure is recorded on the host."""
    try:
        host.facts, host.warning = gather_facts(host.transport, ctx.inventory,
                                                timeout=host.spec.ssh.command_timeout)
    except Exception as e:  # noqa: BLE001 - recorded on the host, reported with the others
        host.error = e


def refresh(ctx: Context, hosts: Iterable[Host]) -> None:
    """Gather facts again after changes (a failure keeps the facts the host had)."""
    def again(host: Host) -> None:
        facts, _ = gather_facts(host.transport, ctx.inventory, timeout=host.spec.ssh.command_timeout)
        host.facts = facts

    for_each_host([h for h in hosts if h.transport is not None], again, name=lambda h: h.name,
                  parallel=ctx.options.parallel)


class RunPreflightChecks(Phase):
    """The preflight check set on every host's facts, against the fleet's."""

    title = "preflight checks"

    def run(self, ctx: Context) -> PhaseResult:
        ctx.state.preflight = check_hosts(ctx)
        return PhaseResult(self.title)


class RequirePreflight(Phase):
    """Stop before any change when a host is unreachable or fails a check nothing here repairs."""

    title = "preflight gate"

    def __init__(self, repaired: frozenset[str] = PREFLIGHT.repaired_by_up):
        self.repaired = repaired

    def run(self, ctx: Context) -> PhaseResult:
        report: PreflightReport = ctx.state.preflight
        if report.unreachable:
            raise TransportError(
                "unreachable", "cannot reach " + "; ".join(f"{h.error}" for h in report.unreachable))
        blocking, ignored = blocking_failures(report, ctx.options.ignore_checks, self.repaired)
        for host, ids in ignored.items():
            ctx.log.write(host, f"ignoring failed checks (--ignore): {', '.join(ids)}")
        ctx.state.ignored = ignored
        if blocking:
            raise PreflightFailed(report, blocking)
        return PhaseResult(self.title, notes=[f"{h}: ignoring {', '.join(ids)}" for h, ids in ignored.items()])


def unreachable_report(host: Host) -> HostReport | None:
    """The report of a host that could not be connected or probed (None: it was), with the
    error's kind (refused, auth, hostkey...); preflight's and verify's reports share it."""
    if host.error is None and host.facts is not None:
        return None
    e = host.error
    kind = e.kind if isinstance(e, TransportError) else "error"
    return HostReport(host.spec.name, host.spec.address, False, _one_line(e), kind)


def check_hosts(ctx: Context) -> PreflightReport:
    """Each host's report: its connection or probe error, or its checked facts."""
    fleet = {h.name: h.facts for h in ctx.hosts if h.error is None and h.facts is not None}
    reports = []
    for host in ctx.hosts:
        spec = host.spec
        down = unreachable_report(host)
        if down is not None:
            reports.append(down)
            continue
        rep = HostReport(spec.name, spec.address, True, host.warning,
                         "sudo-password" if host.warning else None, host.facts)
        try:
            rep.checks = PREFLIGHT.run(ctx.inventory, spec, host.facts, fleet)
        except Exception as e:  # noqa: BLE001 - one host's odd facts never break the others
            rep.checks = [crashed(i, e, spec.name, host.facts) for i in PREFLIGHT.ids]
        reports.append(rep)
    return PreflightReport(reports)


def blocking_failures(report: PreflightReport, ignore: Iterable[str],
                      repaired: frozenset[str]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(blocking failed check ids per host, ignored ones per host)."""
    ignore = set(ignore)
    blocking: dict[str, list[str]] = {}
    ignored: dict[str, list[str]] = {}
    for h in report.hosts:
        for c in h.failed:
            if c.id in ignore:
                ignored.setdefault(h.name, []).append(c.id)
            elif c.id not in repaired:
                blocking.setdefault(h.name, []).append(c.id)
        if h.error and h.error_kind == "sudo-password":
            blocking.setdefault(h.name, []).append("privileged-access")
    return blocking, ignored


def _one_line(e: BaseException | None) -> str:
    text = str(e) if e is not None else "unknown error"
    return text if isinstance(e, TransportError) else f"{type(e).__name__}: {text}"
