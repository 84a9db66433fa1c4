"""The preflight action: probe every host once, in parallel, then run the pure checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from gpuk8s.checks import CheckResult, run_checks
from gpuk8s.errors import EXIT_CHECKS_FAILED, EXIT_OK, EXIT_UNREACHABLE, TransportError
from gpuk8s.facts import Facts, parse_probe, probe_script
from gpuk8s.inventory import HostSpec, Inventory
from gpuk8s.runner import DEFAULT_PARALLEL, Outcome, for_each_host
from gpuk8s.shell import Cmd
from gpuk8s.versions import PROBE_TIMEOUT


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


def probe_command(inventory: Inventory) -> Cmd:
    """`sh -s -- <endpoint host>`: the probe script itself travels on stdin."""
    return Cmd("sh", "-s", "--", inventory.cluster.endpoint_host or "")


def gather_facts(transport, inventory: Inventory) -> tuple[Facts, str | None]:
    """One round trip: run the probe (privileged when possible) and parse it.

    When sudo wants a password, the probe runs once more unprivileged so the other checks
    still report; the sudo problem is returned as the host's error.
    """
    script = probe_script()
    cmd = probe_command(inventory)
    try:
        res = transport.run(cmd, stdin=script, timeout=PROBE_TIMEOUT)
    except TransportError as e:
        if e.kind != "sudo-password":
            raise
        res = transport.run(cmd, stdin=script, timeout=PROBE_TIMEOUT, sudo=False)
        return parse_probe(res.stdout), str(e)
    return parse_probe(res.stdout), None


def check_hosts(inventory: Inventory, outcomes: dict[str, Outcome]) -> PreflightReport:
    """Turn per-host probe outcomes ((facts, warning) or an error) into the checked report."""
    fleet = {n: o.value[0] for n, o in outcomes.items() if o.ok and o.value is not None}
    reports = []
    for host in inventory.hosts:
        o = outcomes[host.name]
        if not o.ok:
            e = o.error
            kind = e.kind if isinstance(e, TransportError) else "error"
            reports.append(HostReport(host.name, host.address, False, _one_line(e), kind))
            continue
        facts, warning = o.value  # type: ignore[misc]
        rep = HostReport(host.name, host.address, True, warning,
                         "sudo-password" if warning else None, facts)
        rep.checks = run_checks(inventory, host, facts, fleet)
        reports.append(rep)
    return PreflightReport(reports)


def run_preflight(inventory: Inventory, *, accept_new_host_keys: bool = False,
                  parallel: int = DEFAULT_PARALLEL, open_transport: Callable | None = None,
                  on_host_done: Callable[[str, bool], None] | None = None) -> PreflightReport:
    """Probe every host in parallel, then check each against its own and the fleet's facts."""
    if open_transport is None:
        from gpuk8s.transport import open_transport as _open

        open_transport = _open

    def probe(host: HostSpec) -> tuple[Facts, str | None]:
        t = open_transport(host, accept_new_host_keys=accept_new_host_keys)
        try:
            return gather_facts(t, inventory)
        finally:
            t.close()

    def done(o: Outcome) -> None:
        if on_host_done is not None:
            on_host_done(o.name, o.ok)

    outcomes = for_each_host(inventory.hosts, probe, name=lambda h: h.name, parallel=parallel,
                             on_done=done)
    return check_hosts(inventory, outcomes)


def _one_line(e: BaseException | None) -> str:
    text = str(e) if e is not None else "unknown error"
    return text if isinstance(e, TransportError) else f"{type(e).__name__}: {text}"
