"""Operations on one host during `up`/`join`: reads always run, changes pass one gate.

`HostOps.read()` runs read-only commands (also in a dry run). Every change — a command that
alters the host or the cluster, or a file written — goes through `Context.wet()`, which in a
dry run records what would happen (commands and files, secrets as ***) and does nothing.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from gpuk8s.errors import RemoteCommandError
from gpuk8s.facts import MANAGED_FILES, Facts
from gpuk8s.render import RenderedFile
from gpuk8s.runlog import RunLog
from gpuk8s.shell import Cmd
from gpuk8s.transport.base import Result

T = TypeVar("T")

# Writes stdin to a temporary file, then replaces the target only when the content differs;
# prints "changed" or "unchanged". The path and mode are arguments, never spliced into the script.
_PUT_SCRIPT = (
    'set -e; umask 077; d=$(dirname -- "$1"); mkdir -p -- "$d"; t="$1.gpuk8s-new"; cat > "$t"; '
    'if [ -f "$1" ] && cmp -s -- "$t" "$1"; then rm -f -- "$t"; echo unchanged; '
    'else chmod "$2" "$t"; mv -f -- "$t" "$1"; echo changed; fi'
)


# Writes $1 from stdin with mode 0600, runs the rest of the arguments, removes $1, keeps the status.
_SECRET_SCRIPT = (
    'f=$1; shift; umask 077; mkdir -p -- "${f%/*}" && cat > "$f" || exit 97; '
    '"$@"; rc=$?; rm -f -- "$f"; exit "$rc"'
)


@dataclass
class PlannedChange:
    host: str
    description: str
    commands: list[str] = field(default_factory=list)   # masked
    files: list[tuple[str, str, int]] = field(default_factory=list)  # (path, masked content, mode)


class Plan:
    """What a run changed (or, in a dry run, would change), in order, per host."""

    def __init__(self) -> None:
        self.changes: list[PlannedChange] = []
        self._lock = threading.Lock()

    def add(self, change: PlannedChange) -> None:
        with self._lock:
            self.changes.append(change)

    def for_host(self, host: str) -> list[PlannedChange]:
        return [c for c in self.changes if c.host == host]

    def hosts(self) -> list[str]:
        seen: list[str] = []
        for c in self.changes:
            if c.host not in seen:
                seen.append(c.host)
        return seen


class Gate:
    """The one place where changes happen (or are only recorded, in a dry run)."""

    def __init__(self, dry_run: bool, log: RunLog):
        self.dry_run = dry_run
        self.log = log
        self.plan = Plan()

    def wet(self, host: str, description: str, fn: Callable[[], T], *, commands=(), files=()) -> T | None:
        change = PlannedChange(host, description, [c.masked() if isinstance(c, Cmd) else str(c)
                                                   for c in commands],
                               [(f.path, f.masked(), f.mode) for f in files])
        self.plan.add(change)
        if self.dry_run:
            self.log.write(host, f"would: {description}")
            return None
        self.log.write(host, f"change: {description}")
        return fn()


class HostOps:
    """Read and change one host through its transport, logging everything (redacted)."""

    def __init__(self, name: str, transport, gate: Gate, log: RunLog,
                 facts_of: Callable[[], Facts | None] | None = None):
        self.name = name
        self.transport = transport
        self.gate = gate
        self.log = log
        self.facts_of = facts_of  # the host's latest facts: hashes of the files gpuk8s manages

    def _run(self, cmd: Cmd, *, stdin: str | bytes | None = None, timeout: float | None = None,
             check: bool = True, hint: str = "") -> Result:
        res = self.transport.run(cmd, stdin=stdin, timeout=timeout)
        self.log.write(self.name, f"$ {res.command} -> {res.exit_status} ({res.duration:.2f}s)")
        if res.exit_status != 0 and res.stderr.strip():
            self.log.write(self.name, "stderr: " + res.stderr.strip()[-2000:])
        if check and res.exit_status != 0:
            raise RemoteCommandError(self.name, res.command, res.exit_status,
                                     self.log.redact(res.stderr or res.stdout), hint)
        return res

    def read(self, cmd: Cmd, *, timeout: float | None = None, check: bool = True) -> Result:
        """A read-only command: runs in dry runs too."""
        return self._run(cmd, timeout=timeout, check=check)

    def change(self, description: str, cmd: Cmd, *, stdin: str | bytes | None = None,
               timeout: float | None = None, hint: str = "") -> Result | None:
        """A command that changes the host or the cluster: through the gate."""
        return self.gate.wet(self.name, description,
                             lambda: self._run(cmd, stdin=stdin, timeout=timeout, hint=hint),
                             commands=[cmd])

    def file_differs(self, f: RenderedFile) -> bool:
        """Read-only: does the host's file differ from what we would write (content or absence)?"""
        want = hashlib.sha256(f.content.encode()).hexdigest()
        facts = self.facts_of() if self.facts_of else None
        if facts is not None and f.path in MANAGED_FILES:
            return facts.managed_files.get(f.path) != want  # the probe hashed it: no round trip
        res = self.read(Cmd("sha256sum", "--", f.path), check=False)
        return res.exit_status != 0 or res.stdout.split()[:1] != [want]

    def put_file(self, f: RenderedFile, description: str | None = None) -> bool:
        """Write a file when its content differs; returns whether it changed (or would)."""
        if not self.file_differs(f):
            return False
        cmd = Cmd("sh", "-c", _PUT_SCRIPT, "gpuk8s-put", f.path, format(f.mode, "04o"))
        self.gate.wet(self.name, description or f"write {f.path}",
                      lambda: self._run(cmd, stdin=f.content), commands=[], files=[f])
        return True

    def run_with_secret_file(self, f: RenderedFile, cmd: Cmd, description: str, *,
                             timeout: float | None = None, hint: str = "",
                             accept: Callable[[Result], bool] | None = None) -> Result | None:
        """One round trip: write a file holding secrets (mode 0600, from stdin), run cmd, and
        remove the file whatever cmd did. Nothing secret is on a command line."""
        wrapped = Cmd("sh", "-c", _SECRET_SCRIPT, "gpuk8s-secret", f.path, cmd)

        def go() -> Result:
            res = self._run(wrapped, stdin=f.content, timeout=timeout, check=False)
            if res.exit_status != 0 and not (accept and accept(res)):
                raise RemoteCommandError(self.name, cmd.masked(), res.exit_status,
                                         self.log.redact(res.stderr or res.stdout), hint)
            return res

        return self.gate.wet(self.name, description, go, commands=[cmd], files=[f])
