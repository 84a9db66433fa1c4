"""A host during a run: its inventory entry, its connection, its facts, and operations on it.

Reads (`read`) run in dry runs too; every change goes through the run's Gate as a Change.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from gpuk8s.errors import RemoteCommandError, TransportError
from gpuk8s.gate import Change, Gate
from gpuk8s.paths import MANAGED_FILES
from gpuk8s.shell import Cmd

if TYPE_CHECKING:
    from gpuk8s.facts import Facts
    from gpuk8s.inventory import HostSpec
    from gpuk8s.render import RenderedFile
    from gpuk8s.runlog import RunLog
    from gpuk8s.transport.base import Result, Transport


class Host:
    """One inventory host in a run; phases keep no per-host state anywhere else."""

    def __init__(self, spec: "HostSpec", gate: Gate, log: "RunLog"):
        self.spec = spec
        self.gate = gate
        self.log = log
        self.transport: Transport | None = None
        self.facts: Facts | None = None
        self.error: BaseException | None = None   # could not connect or gather facts
        self.warning: str | None = None           # facts gathered unprivileged (sudo wants a password)
        self.failed: str | None = None            # a phase failed here; later phases skip the host
        self.lost: TransportError | None = None   # the connection stopped answering: nothing more runs

    def __repr__(self) -> str:
        return f"Host({self.spec.name!r})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_control_plane(self) -> bool:
        return self.spec.is_control_plane

    def has_file(self, path: str) -> bool:
        """The probe found this Kubernetes state file (admin.conf, kubelet.conf...)."""
        return self.facts is not None and path in self.facts.kubernetes_files

    def abort(self, grace: float) -> list[tuple[str, bool]]:
        """End the commands in flight on this host (interrupt): (command, ended) for each;
        ended=False: its session was closed after `grace` seconds, it may still run there."""
        abort = getattr(self.transport, "abort", None)
        return abort(grace) if abort is not None else []

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def execute(self, cmd: Cmd, *, stdin: str | bytes | None = None,
                timeout: float | None = None) -> "Result":
        """Run one command and log it (redacted); never raises on a non-zero exit."""
        self.gate.check()   # interrupted: nothing new starts on any host (cleanups excepted)
        if self.transport is None:
            raise TransportError("closed", f"{self.name}: not connected; `{cmd.masked()}` was not run")
        from gpuk8s.transport.base import cleanup_thread

        cleanup_thread.active = self.gate.in_cleanup
        if self.lost is not None:   # a frozen host would hold every later command to its timeout
            raise TransportError(self.lost.kind, f"{self.name}: `{cmd.masked()}` was not run: the "
                                                 "host stopped answering earlier in this run")
        try:
            res = self.transport.run(cmd, stdin=stdin, timeout=self.gate.bound(timeout))
        except TransportError as e:
            if e.kind == "lost":
                self.lost = e
            raise
        self.log.write(self.name, f"$ {res.command} -> {res.exit_status} ({res.duration:.2f}s)")
        if res.exit_status != 0 and res.stderr.strip():
            self.log.write(self.name, "stderr: " + res.stderr.strip()[-2000:])
        return res

    def read(self, cmd: Cmd, *, timeout: float | None = None, check: bool = True) -> "Result":
        """A read-only command: runs in dry runs too; check=True fails on a non-zero exit."""
        res = self.execute(cmd, timeout=timeout)
        if check and res.exit_status != 0:
            raise RemoteCommandError(self.name, res.command, res.exit_status,
                                     self.log.redact(res.stderr or res.stdout))
        return res

    def apply(self, change: Change) -> "Result | None":
        return self.gate.apply(change, self)

    def change(self, description: str, cmd: Cmd, *, timeout: float | None = None,
               hint: str = "") -> "Result | None":
        """A command that changes the host or the cluster, through the gate."""
        return self.apply(Change(self.name, description, cmd, timeout=timeout, hint=hint))

    def file_differs(self, f: "RenderedFile") -> bool:
        """Read-only: does the host's file differ from what we would write (content or absence)?"""
        want = hashlib.sha256(f.content.encode()).hexdigest()
        if self.facts is not None and f.path in MANAGED_FILES:
            return self.facts.managed_files.get(f.path) != want  # the probe hashed it: no round trip
        res = self.read(Cmd("sha256sum", "--", f.path), check=False)
        return res.exit_status != 0 or res.stdout.split()[:1] != [want]

    def put_file(self, f: "RenderedFile", description: str | None = None) -> bool:
        """Write a file when its content differs; returns whether it changed (or would)."""
        if not self.file_differs(f):
            return False
        self.apply(Change(self.name, description or f"write {f.path}", file=f))
        return True

    def with_secret_file(self, f: "RenderedFile", cmd: Cmd, description: str, *,
                         timeout: float | None = None, hint: str = "",
                         accept_stderr: str = "") -> "Result | None":
        """One round trip: write a file holding secrets (0600, from stdin), run cmd, remove the
        file whatever cmd did. Nothing secret is on a command line."""
        return self.apply(Change(self.name, description, cmd, file=f, temporary=True,
                                 timeout=timeout, hint=hint, accept_stderr=accept_stderr))
