"""What every phase shares: run options, what the run discovers, the context, and the manager.

A command is an ordered list of phases (gpuk8s/actions/). The manager runs them in order, skips
those that say they need not run, stops at the first that fails, and then, on every exit path
(success, failure, Ctrl-C, an internal error), runs the cleanups of the phases that started.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from gpuk8s.errors import EXIT_REMOTE, Gpuk8sError, Interrupted, PhaseFailed
from gpuk8s.gate import Gate
from gpuk8s.runner import DEFAULT_PARALLEL, call_in_thread, for_each_host, wait_thread

# Interrupts (docs/reliability.md). After SIGINT the commands in flight get INTERRUPT_GRACE
# seconds to end after their SIGTERM, then their sessions are closed; the interrupted phase gets
# PHASE_GRACE more to unwind; then every started phase's cleanup runs, all of them together
# within CLEANUP_BOUND_INTERRUPTED (each cleanup of a run that was not interrupted: CLEANUP_BOUND).
INTERRUPT_GRACE = 0.4
PHASE_GRACE = 0.2
CLEANUP_BOUND_INTERRUPTED = 1.0
CLEANUP_BOUND = 120.0

if TYPE_CHECKING:
    from gpuk8s.facts.cluster import ClusterFacts
    from gpuk8s.host import Host
    from gpuk8s.inventory import Inventory
    from gpuk8s.render import ClusterSecrets
    from gpuk8s.runlog import RunLog
    from gpuk8s.versions import Release


@dataclass(frozen=True)
class RunOptions:
    """What the user asked for; the same for every phase of a run."""

    dry_run: bool = False
    ignore_checks: tuple[str, ...] = ()
    accept_new_host_keys: bool = False
    parallel: int = DEFAULT_PARALLEL
    kubeconfig_path: Path | None = None
    wait_timeout: float = 900.0
    poll_interval: float = 3.0


@dataclass
class RunState:
    """What the run discovers about the cluster as it goes (never set by the user)."""

    preflight: Any = None                  # the checked report (phases/preflight.PreflightReport)
    ignored: dict[str, list[str]] = field(default_factory=dict)  # failed checks let through
    token_in_use: bool = False             # this run's bootstrap token exists on the cluster
    token_unsure: bool = False             # a command that creates it started and did not end normally
    cluster: ClusterFacts | None = None   # the API server's view, once there is one
    kubeconfig: Path | None = None         # where the admin kubeconfig was written
    artifacts: list[Any] = field(default_factory=list)  # rendered files (render)
    gpu_summary: list[dict] = field(default_factory=list)  # one row per GPU node (phases/gpu.py)
    written: list[Path] = field(default_factory=list)   # files written locally (render)
    verify_hosts: dict[str, list] = field(default_factory=dict)  # host -> CheckResults (phases/verify.py)
    # Hosts this run reads but never works on (join: the first control plane and the hosts that
    # are already nodes): `Context.live()` leaves them out, so no phase prepares, joins or waits on them.
    left_alone: set[str] = field(default_factory=set)


@dataclass
class Context:
    """Everything a phase needs; phases keep no state of their own."""

    inventory: Inventory
    options: RunOptions
    gate: Gate
    log: RunLog
    hosts: list[Host]
    secrets: ClusterSecrets | None = None
    open_transport: Callable[..., Any] | None = None
    progress: Any = None   # start(title, total) / done(host, ok) / stop(): per-host progress
    state: RunState = field(default_factory=RunState)

    @property
    def release(self) -> Release:
        return self.inventory.release

    @property
    def dry_run(self) -> bool:
        return self.gate.dry_run

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    @property
    def first_cp(self) -> Host:
        return self.host(self.inventory.first_control_plane.name)

    def live(self, hosts: Iterable[Host] | None = None) -> list[Host]:
        """The hosts (all by default) that no phase has failed on and the run works on."""
        return [h for h in (self.hosts if hosts is None else hosts)
                if h.failed is None and h.name not in self.state.left_alone]

    @property
    def failed_hosts(self) -> dict[str, str]:
        return {h.name: h.failed for h in self.hosts if h.failed is not None}

    def parallel(self, hosts: Iterable[Host], fn: Callable[[Host], object], phase: str, *,
                 fatal: bool | Callable[[Host], bool] = True) -> dict[str, object]:
        """Run fn on hosts in parallel; every host finishes; failures are collected.

        fatal=False marks failed hosts (later phases skip them) and lets the run go on; a
        callable decides per failed host: the phase fails when it is true for any of them.
        """
        hosts = list(hosts)
        bar = self.progress
        if bar is not None:
            bar.start(phase, len(hosts))
        deadline = self.gate.cleanup_deadline
        if deadline is not None:   # a cleanup's workers are part of the cleanup
            inner = fn

            def fn(h: Host) -> object:  # type: ignore[no-redef]
                self.gate.cleaning(deadline)
                return inner(h)
        try:
            outcomes = for_each_host(hosts, fn, name=lambda h: h.name, parallel=self.options.parallel,
                                     on_done=(lambda o: bar.done(o.name, o.ok)) if bar is not None else None,
                                     stop=None if deadline is not None else self.gate.interrupted)
        finally:
            if bar is not None:
                bar.stop()
        errors = {n: o.error for n, o in outcomes.items() if not o.ok}
        if self.gate.interrupted.is_set() and deadline is None:
            raise Interrupted("interrupted")   # the interrupt's own report says what was running
        for n, e in errors.items():
            self.log.write(n, f"{phase} failed: {e}")
        if errors and (fatal if isinstance(fatal, bool) else any(fatal(self.host(n)) for n in errors)):
            raise PhaseFailed(phase, errors)  # type: ignore[arg-type]
        for n, e in errors.items():
            self.host(n).failed = f"{phase}: {self.log.redact(str(e))}"
        return {n: o.value for n, o in outcomes.items() if o.ok}

    def cluster_changed(self) -> None:
        """A phase changed the cluster: what was read of it must be read again."""
        if not self.dry_run and self.state.cluster is not None:
            self.state.cluster.invalidate()


@dataclass
class PhaseResult:
    name: str
    changes: list[str] = field(default_factory=list)   # one line per change made (or planned)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    skipped: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.changes)


class Phase:
    """One step of an action: idempotent, deciding from facts; returns what it did."""

    title = "phase"
    cleanup_title = ""   # set by phases that have a cleanup

    def applies(self, ctx: Context) -> bool:
        """Whether the phase has anything to do in this run."""
        return True

    def run(self, ctx: Context) -> PhaseResult:  # pragma: no cover - interface
        raise NotImplementedError

    def cleanup(self, ctx: Context) -> None:
        """Runs at the end of every run in which this phase started, however the run ended."""


class PhaseAborted(Gpuk8sError):
    """A phase failed: carries the results so far and the cause."""

    def __init__(self, results: list[PhaseResult], cause: BaseException):
        self.results, self.cause = results, cause
        self.exit_code = getattr(cause, "exit_code", EXIT_REMOTE)
        super().__init__(str(cause))


def run_phases(ctx: Context, phases: list[Phase],
               on_phase: Callable[[str, PhaseResult | None], None] | None = None) -> list[PhaseResult]:
    """Run phases in order; stop at the first failing one (a re-run resumes from the facts).

    Each phase runs in a worker thread while this thread waits in short slices, so Ctrl-C is
    seen at once: the run is interrupted (`_interrupt`), and the phase ends as
    PhaseAborted(Interrupted) (exit 130). Cleanups of the phases that started run last, in
    reverse order, on every exit path, each in its own thread and time bound; their results are
    appended. A Gpuk8sError becomes PhaseAborted; anything else (an internal error) propagates
    unchanged after the cleanups.
    """
    results: list[PhaseResult] = []
    started: list[Phase] = []
    aborted: PhaseAborted | None = None
    try:
        for phase in phases:
            if ctx.gate.interrupted.is_set():
                break
            if not phase.applies(ctx):
                results.append(PhaseResult(phase.title, skipped=True))
                continue
            started.append(phase)
            try:
                results.append(_run_one(ctx, phase.run, phase.title, on_phase))
            except PhaseAborted as e:
                results.extend(e.results)
                aborted = e
                break
    except KeyboardInterrupt:   # between phases (a phase's own interrupt is handled in _run_one)
        aborted = PhaseAborted([], _interrupt(ctx, None))
    finally:
        interrupted = ctx.gate.interrupted.is_set()
        shared = time.monotonic() + CLEANUP_BOUND_INTERRUPTED if interrupted else None
        for phase in reversed(started):
            if type(phase).cleanup is Phase.cleanup:
                continue
            deadline = time.monotonic() + CLEANUP_BOUND if shared is None else \
                max(shared, time.monotonic() + 0.2)
            try:
                res = _cleanup(ctx, phase, on_phase, deadline)
            except KeyboardInterrupt:   # a second Ctrl-C: stop cleaning up, exit now
                ctx.log.write("-", f"interrupted again: cleanups after {phase.title} skipped")
                break
            if res.changes or res.error:   # a cleanup that had nothing to do is not news
                results.append(res)
    if aborted is not None:
        raise PhaseAborted(results, aborted.cause)
    return results


def _interrupt(ctx: Context, phase_thread: threading.Thread | None) -> Interrupted:
    """Ctrl-C: no new change starts; the commands in flight are ended (SIGTERM) or, after
    INTERRUPT_GRACE, their sessions closed; returns the error that says which."""
    ctx.gate.interrupt()
    in_flight = dict(ctx.gate.in_flight)
    reports: dict[str, list[tuple[str, bool]]] = {}

    def abort(h: Host) -> None:
        reports[h.name] = h.abort(INTERRUPT_GRACE)

    threads = [call_in_thread(lambda h=h: abort(h), name="gpuk8s-abort")[0]
               for h in ctx.hosts if h.transport is not None]
    end = time.monotonic() + INTERRUPT_GRACE + 0.2
    for t in threads:
        wait_thread(t, end)
    if phase_thread is not None:
        wait_thread(phase_thread, time.monotonic() + PHASE_GRACE)
    if ctx.progress is not None:
        try:
            ctx.progress.stop()
        except Exception:  # noqa: BLE001 - the display must not hide the interrupt
            pass
    lines, items = ["interrupted: no new change was started after the signal"], []
    for name, ran in reports.items():
        for command, ended in ran:
            what = in_flight.get(name) or (command if len(command) <= 100 else command[:97] + "...")
            how = ("ended (SIGTERM)" if ended else
                   f"its session was closed after {INTERRUPT_GRACE:g}s; it may still be running there")
            items.append(f"{name}: {what}: {how}")
    lines += [f"- {i}" for i in items] or ["- nothing was running on the hosts"]
    for line in lines:
        ctx.log.write("-", line)
    return Interrupted(ctx.log.redact("\n".join(lines)), items)


def _run_one(ctx: Context, fn: Callable[[Context], PhaseResult | None], title: str,
             on_phase: Callable[[str, PhaseResult | None], None] | None, *,
             announce: bool = True, deadline: float | None = None) -> PhaseResult:
    """Run one phase (or, with a deadline, a cleanup) in a worker thread; `announce` tells
    on_phase when it starts, not only when it ends."""
    if on_phase and announce:
        on_phase(title, None)
    start = time.monotonic()
    before = len(ctx.gate.plan.changes)

    def target() -> PhaseResult | None:
        if deadline is not None:
            ctx.gate.cleaning(deadline)
        return fn(ctx)

    thread, box = call_in_thread(target)
    error: BaseException | None = None
    try:
        if not wait_thread(thread, None if deadline is None else deadline + 0.2):
            error = Gpuk8sError(f"{title}: did not finish within its time bound")
    except KeyboardInterrupt:
        if deadline is not None:
            raise
        error = _interrupt(ctx, thread)
    if error is None:
        error = box.get("error")
        if isinstance(error, KeyboardInterrupt):
            error = _interrupt(ctx, None)
    if error is not None and not isinstance(error, Gpuk8sError):
        raise error
    if error is not None:
        res = PhaseResult(title, error=ctx.log.redact(str(error)), seconds=time.monotonic() - start)
        ctx.log.write("-", f"phase {title} failed: {error}")
        if on_phase:
            on_phase(title, res)
        raise PhaseAborted([res], error) from None
    res = box.get("value") or PhaseResult(title)
    res.seconds = time.monotonic() - start
    res.changes = [f"{c.host}: {c.description}" for c in ctx.gate.plan.changes[before:]]
    ctx.log.write("-", f"phase {title}: {len(res.changes)} changes in {res.seconds:.1f}s")
    if on_phase and (announce or res.changes):
        on_phase(title, res)
    return res


def _cleanup(ctx: Context, phase: Phase,
             on_phase: Callable[[str, PhaseResult | None], None] | None, deadline: float) -> PhaseResult:
    """A cleanup never hides the run's own outcome: its failure is logged and reported."""
    title = phase.cleanup_title or f"clean up after {phase.title}"
    try:
        return _run_one(ctx, phase.cleanup, title, on_phase, announce=False, deadline=deadline)
    except PhaseAborted as e:
        return e.results[0]
    except Exception as e:  # noqa: BLE001 - the cleanup of one phase must not stop the others
        ctx.log.write("-", f"{title} failed: {type(e).__name__}: {e}")
        return PhaseResult(title, error=ctx.log.redact(f"{type(e).__name__}: {e}"))


def poll(ctx: Context, step: Callable[[], bool], *, timeout: float, interval: float,
         what: str) -> bool:
    """Call step() until it returns True (-> True) or `timeout` seconds pass (-> False); the
    pause between calls ends at once on an interrupt (raises Interrupted)."""
    deadline = time.monotonic() + timeout
    for _ in range(100000):  # bounded by the deadline; the count only guards against a zero interval
        if step():
            return True
        if time.monotonic() >= deadline:
            return False
        if ctx.gate.interrupted.wait(interval):
            raise Interrupted(f"interrupted while waiting for {what}")
    return False
