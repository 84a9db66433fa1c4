"""The one gate every change passes: a dry run records a Change, a wet run records and runs it.

A Change is one object (command, files written from stdin, accepted exit statuses). The plan a
dry run prints and the command a wet run executes both come from that same object
(`Change.remote()`), so they cannot drift apart. Reads never pass here: they run in dry runs too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

from gpuk8s.errors import RemoteCommandError
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
SECRET_SCRIPT = (
    'f=$1; shift; umask 077; mkdir -p -- "${f%/*}" && cat > "$f" || exit 97; '
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
    """The one place where changes happen (or, in a dry run, are only recorded)."""

    def __init__(self, dry_run: bool, log: "RunLog"):
        self.dry_run = dry_run
        self.log = log
        self.plan = Plan()

    def apply(self, change: Change, executor: Executor | None = None) -> "Result | None":
        """Record the change; in a wet run execute it and fail unless it succeeded."""
        self.plan.add(change)
        if self.dry_run:
            self.log.write(change.host, f"would: {change.description}")
            return None
        self.log.write(change.host, f"change: {change.description}")
        if change.local is not None:
            change.local()
            return None
        if executor is None:
            raise ValueError(f"no host to run {change.description!r} on")
        cmd, stdin = change.remote()
        res = executor.execute(cmd, stdin=stdin, timeout=change.timeout)
        if res.exit_status != 0 and not (change.accept_stderr and change.accept_stderr in res.stderr):
            shown = change.cmd.masked() if change.cmd is not None else f"write {change.file.path}"
            raise RemoteCommandError(executor.name, shown, res.exit_status,
                                     self.log.redact(res.stderr or res.stdout), change.hint)
        return res
