"""What every phase of `up` shares: the run context and the phase manager."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from gpuk8s.errors import Gpuk8sError, RemoteCommandError, TransportError
from gpuk8s.facts import Facts
from gpuk8s.hostops import Gate, HostOps
from gpuk8s.inventory import HostSpec, Inventory
from gpuk8s.render import ClusterSecrets
from gpuk8s.runlog import RunLog
from gpuk8s.runner import for_each_host
from gpuk8s.shell import Cmd
from gpuk8s.versions import Release

ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
CA_CERT = "/etc/kubernetes/pki/ca.crt"


class PhaseFailed(Gpuk8sError):
    """One or more hosts failed in a phase; every host's error is listed."""

    exit_code = RemoteCommandError.exit_code

    def __init__(self, phase: str, errors: dict[str, BaseException]):
        self.phase, self.errors = phase, errors
        lines = [f"{phase}: {len(errors)} host{'s' if len(errors) != 1 else ''} failed"]
        for name, e in errors.items():
            lines.append(f"- {e}" if str(e).startswith(name) else f"- {name}: {e}")
        super().__init__("\n".join(lines))


@dataclass
class UpOptions:
    dry_run: bool = False
    ignore_checks: tuple[str, ...] = ()
    accept_new_host_keys: bool = False
    parallel: int = 64
    kubeconfig_path: Path | None = None
    wait_timeout: float = 900.0
    poll_interval: float = 3.0


@dataclass
class Context:
    """Everything a phase needs; phases keep no state of their own."""

    inventory: Inventory
    release: Release
    options: UpOptions
    gate: Gate
    log: RunLog
    secrets: ClusterSecrets
    transports: dict
    facts: dict[str, Facts]
    refresh: Callable[[Iterable[str]], None]
    failed_hosts: dict[str, str] = field(default_factory=dict)
    token_in_use: bool = False
    progress: object | None = None   # start(title, total) / done(host, ok) / stop(): per-host progress
    calico_crds: bool | None = None   # Calico's CRDs exist on the cluster (None: not known yet)
    _ops: dict[str, HostOps] = field(default_factory=dict)
    _cache: dict[str, tuple[int, Any]] = field(default_factory=dict)  # key -> (changes made, value)

    def cached(self, key: str, fetch: Callable[[], Any]) -> Any:
        """A read of the cluster, done again only after something changed."""
        mark = len(self.gate.plan.changes)
        hit = self._cache.get(key)
        if hit is None or hit[0] != mark:
            hit = self._cache[key] = (mark, fetch())
        return hit[1]

    @property
    def dry_run(self) -> bool:
        return self.gate.dry_run

    @property
    def first_cp(self) -> HostSpec:
        return self.inventory.first_control_plane

    def ops(self, name: str) -> HostOps:
        if name not in self._ops:
            self._ops[name] = HostOps(name, self.transports[name], self.gate, self.log,
                                      facts_of=lambda: self.facts.get(name))
        return self._ops[name]

    def live_hosts(self, hosts: Iterable[HostSpec]) -> list[HostSpec]:
        return [h for h in hosts if h.name not in self.failed_hosts]

    def has_file(self, host: str, path: str) -> bool:
        return path in self.facts[host].kubernetes_files

    def kubectl(self, *args: str) -> Cmd:
        """kubectl on the first control plane, with the admin kubeconfig."""
        return Cmd("kubectl", "--kubeconfig", ADMIN_CONF, *args)

    def parallel(self, hosts: Iterable[HostSpec], fn: Callable[[HostSpec], object],
                 phase: str, *, fatal: bool = True) -> dict[str, object]:
        """Run fn on hosts in parallel; every host finishes; failures are collected.

        fatal=False records failed hosts (later phases skip them) and lets the run go on.
        """
        hosts = list(hosts)
        bar = self.progress
        if bar is not None:
            bar.start(phase, len(hosts))
        try:
            outcomes = for_each_host(hosts, fn, name=lambda h: h.name, parallel=self.options.parallel,
                                     on_done=(lambda o: bar.done(o.name, o.ok)) if bar is not None else None)
        finally:
            if bar is not None:
                bar.stop()
        errors = {n: o.error for n, o in outcomes.items() if not o.ok}
        for n, e in errors.items():
            self.log.write(n, f"{phase} failed: {e}")
        if errors and fatal:
            raise PhaseFailed(phase, errors)  # type: ignore[arg-type]
        for n, e in errors.items():
            self.failed_hosts[n] = f"{phase}: {self.log.redact(str(e))}"
        return {n: o.value for n, o in outcomes.items() if o.ok}


@dataclass
class PhaseResult:
    name: str
    changes: list[str] = field(default_factory=list)   # one line per change made (or planned)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.changes)


class Phase:
    """A step of `up`: idempotent, deciding from facts; returns what it changed."""

    title = "phase"

    def run(self, ctx: Context) -> PhaseResult:  # pragma: no cover - interface
        raise NotImplementedError


def run_phases(ctx: Context, phases: list[Phase],
               on_phase: Callable[[str, PhaseResult | None], None] | None = None) -> list[PhaseResult]:
    """Run phases in order; stop at the first failing one (a re-run resumes from the facts)."""
    results = []
    for phase in phases:
        if on_phase:
            on_phase(phase.title, None)
        start = time.monotonic()
        before = len(ctx.gate.plan.changes)
        try:
            res = phase.run(ctx)
        except (Gpuk8sError, TransportError) as e:
            res = PhaseResult(phase.title, error=ctx.log.redact(str(e)))
            res.seconds = time.monotonic() - start
            results.append(res)
            ctx.log.write("-", f"phase {phase.title} failed: {e}")
            if on_phase:
                on_phase(phase.title, res)
            raise PhaseAborted(results, e) from None
        res.seconds = time.monotonic() - start
        res.changes = [f"{c.host}: {c.description}" for c in ctx.gate.plan.changes[before:]]
        ctx.log.write("-", f"phase {phase.title}: {len(res.changes)} changes in {res.seconds:.1f}s")
        results.append(res)
        if on_phase:
            on_phase(phase.title, res)
    return results


class PhaseAborted(Gpuk8sError):
    """A phase failed: carries the results so far and the cause."""

    def __init__(self, results: list[PhaseResult], cause: BaseException):
        self.results, self.cause = results, cause
        self.exit_code = getattr(cause, "exit_code", RemoteCommandError.exit_code)
        super().__init__(str(cause))
