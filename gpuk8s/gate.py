"""The one gate every change passes: a dry run records a Change, a wet run records and runs it.

A Change is one object (command, files written from stdin, accepted exit statuses). The plan a
dry run prints and the command a wet run executes both come from that same object
(`Change.remote()`), so they cannot drift apart. Reads never pass here: they run in dry runs too.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

from gpuk8s.errors import Interrupted, RemoteCommandError
from gpuk8s.shell import Cmd

if TYPE_CHECKING:
    from gpuk8s.render import RenderedFile
    from gpuk8s.runlog import RunLog
    from gpuk8s.transport.base import Result

# Writes stdin to a temporary file, then replaces the target only when the content differs;
# prints "changed" or "unchanged". The path and mode are arguments, never spliced into the script.
PUT_SCRIPT = (
    'set -e; umask 077; d=$(dirname -- "$1"); mkdir -p -- "$d"; t="$1.gpuk8s-new"; cat > "$t"; '
    'if [ -f "$1" ] && cmp -s -- "$t" "$1"; then rm -f -- "$t"; echo unchanged; '
    'else chmod "$2" "$t"; mv -f -- "$t" "$1"; echo changed; fi'
)

# Writes $1 from stdin with mode 0600, runs the rest of the arguments, removes $1, keeps the status.
# The EXIT trap removes $1 however the script ends: a hangup, SIGINT or SIGTERM (an interrupted
# run signals the session's process group) ends the script through the trap too (the script
# itself writes nothing, so a closed session's SIGPIPE never kills it). A session closed while
# the command runs leaves the script waiting for the command, which removes the file when the
# command ends; the cleanups of `up` remove it as well (gpuk8s.phases.cluster).
SECRET_SCRIPT = (
    'f=$1; shift; umask 077; trap \'rm -f -- "$f"\' EXIT; trap \'exit 129\' HUP; '
    'trap \'exit 130\' INT; trap \'exit 143\' TERM; '
    'mkdir -p -- "${f%/*}" && cat > "$f" || exit 97; '
    '"$@"; rc=$?; rm -f -- "$f"; exit "$rc"'
)

LOCAL = "local"   # the host name of changes made on this machine (the kubeconfig file)


@dataclass(frozen=True)
class Change:
    """One change to a host or the cluster, exactly as it is shown and as it runs."""

    host: str
    description: str
    cmd: Cmd | None = None                    # runs on the host (after `file` is written)
    file: "RenderedFile | None" = None        # written from stdin (put in place, or temporary)
    temporary: bool = False                   # file holds secrets: 0600, removed after cmd whatever it did
    accept_stderr: str = ""                   # a failure whose stderr says this also counts as done
    timeout: float | None = None
    hint: str = ""                            # what to do when it fails
    local: Callable[[], None] | None = field(default=None, compare=False)  # a change on this machine

    def __post_init__(self) -> None:
        if self.local is None and self.cmd is None and self.file is None:
            raise ValueError("a Change needs a command, a file or a local action")
        if self.temporary and (self.file is None or self.cmd is None):
            raise ValueError("a temporary file exists only for the command that reads it")

    @property
    def commands(self) -> list[str]:
        """What a plan shows as commands (masked); file writes show the file instead."""
        return [self.cmd.masked()] if self.cmd is not None else []

    @property
    def files(self) -> list["RenderedFile"]:
        return [self.file] if self.file is not None else []

    def remote(self) -> tuple[Cmd, str | None]:
        """The exact command and stdin that a wet run executes on the host."""
        f = self.file
        if f is None:
            assert self.cmd is not None
            return self.cmd, None
        if self.temporary:
            assert self.cmd is not None
            return Cmd("sh", "-c", SECRET_SCRIPT, "gpuk8s-secret", f.path, self.cmd), f.content
        put = Cmd("sh", "-c", PUT_SCRIPT, "gpuk8s-put", f.path, format(f.mode, "04o"))
        return (put if self.cmd is None else put.then("&&", self.cmd)), f.content


class Executor(Protocol):
    """Runs a command on one host and logs it (gpuk8s.host.Host)."""

    name: str

    def execute(self, cmd: Cmd, *, stdin: str | bytes | None = None,
                timeout: float | None = None) -> "Result": ...


class Plan:
    """What a run changed (or, in a dry run, would change), in order, per host."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self._lock = threading.Lock()

    def add(self, change: Change) -> None:
        with self._lock:
            self.changes.append(change)

    def for_host(self, host: str) -> list[Change]:
        return [c for c in self.changes if c.host == host]

    def hosts(self) -> list[str]:
        return list(dict.fromkeys(c.host for c in self.changes))


class Gate:
    """The one place where changes happen (or, in a dry run, are only recorded).

    Once `interrupt()` was called (Ctrl-C), no change starts, except in a cleanup: the thread
    that runs the cleanups marks itself with `cleaning()`, and its changes are logged as
    `cleanup:` (never `change:`) and bounded by the cleanups' deadline.
    """

    def __init__(self, dry_run: bool, log: "RunLog"):
        self.dry_run = dry_run
        self.log = log
        self.plan = Plan()
        self.interrupted = threading.Event()
        self._local = threading.local()
        self._lock = threading.Lock()
        self.in_flight: dict[str, str] = {}          # host -> description of the change running there
        self.secret_files: dict[str, set[str]] = {}  # host -> temporary secret files whose command did not end normally

    # ------------------------------------------------------------------ interrupts and cleanups
    def interrupt(self) -> None:
        """From now on no change starts (outside the cleanups)."""
        with self._lock:   # the same lock as apply's check-and-log: no `change:` line follows
            if not self.interrupted.is_set():
                self.interrupted.set()
                self.log.write("-", "interrupted: no new change starts")

    @property
    def in_cleanup(self) -> bool:
        return getattr(self._local, "deadline", None) is not None

    def cleaning(self, deadline: float | None) -> None:
        """Mark this thread as running cleanups until `deadline` (time.monotonic()); None unmarks."""
        self._local.deadline = deadline

    @property
    def cleanup_deadline(self) -> float | None:
        return getattr(self._local, "deadline", None)

    def check(self) -> None:
        """Raise Interrupted when the run was interrupted and this is not a cleanup."""
        if self.interrupted.is_set() and not self.in_cleanup:
            raise Interrupted("interrupted: not started")

    def bound(self, timeout: float | None) -> float | None:
        """A command timeout, shortened to the cleanups' deadline in a cleanup."""
        deadline = getattr(self._local, "deadline", None)
        if deadline is None:
            return timeout
        left = max(0.1, deadline - time.monotonic())
        return left if timeout is None else min(timeout, left)

    def apply(self, change: Change, executor: Executor | None = None) -> "Result | None":
        """Record the change; in a wet run execute it and fail unless it succeeded."""
        if executor is None and change.local is None and not self.dry_run:
            raise ValueError(f"no host to run {change.description!r} on")
        secret = change.file.path if change.temporary and change.file is not None else None
        with self._lock:   # check, record and log as one step (interrupt() takes this lock)
            self.check()
            self.plan.add(change)
            if self.dry_run:
                self.log.write(change.host, f"would: {change.description}")
                return None
            self.log.write(change.host, f"{'cleanup' if self.in_cleanup else 'change'}: {change.description}")
            if change.local is None:
                self.in_flight[change.host] = change.description
                if secret:
                    self.secret_files.setdefault(change.host, set()).add(secret)
        if change.local is not None:
            change.local()
            return None
        assert executor is not None
        cmd, stdin = change.remote()
        try:
            res = executor.execute(cmd, stdin=stdin, timeout=self.bound(change.timeout))
        finally:
            with self._lock:
                self.in_flight.pop(change.host, None)
        if secret:  # the script ran to its end: it removed the file
            with self._lock:
                self.secret_files.get(change.host, set()).discard(secret)
        if self.interrupted.is_set() and not self.in_cleanup:
            raise Interrupted(f"interrupted while `{change.description}` ran (exit {res.exit_status})")
        if res.exit_status != 0 and not (change.accept_stderr and change.accept_stderr in res.stderr):
            shown = change.cmd.masked() if change.cmd is not None else f"write {change.file.path}"
            raise RemoteCommandError(executor.name, shown, res.exit_status,
                                     self.log.redact(res.stderr or res.stdout), change.hint)
        return res
