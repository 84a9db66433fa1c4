"""What every transport provides: run a Cmd, get a Result; never raise on a non-zero exit."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from gpuk8s.errors import TransportError
from gpuk8s.shell import Cmd

# After a transport's abort() (an interrupt) it starts no new command, except from a thread that
# runs the run's cleanups: gpuk8s.host.Host sets `cleanup_thread.active` around such commands.
cleanup_thread = threading.local()


def may_start_after_abort() -> bool:
    return bool(getattr(cleanup_thread, "active", False))


_SUDO_PASSWORD_MARKERS = ("a password is required", "a terminal is required", "no tty present",
                          "askpass")


@dataclass
class Result:
    """Outcome of one remote command (the caller decides what a non-zero exit means)."""

    command: str          # masked command line (secrets as ***)
    exit_status: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class Transport(Protocol):
    """A connection to one host, reused for every command of a run."""

    host_name: str
    privileged: bool  # commands run as root (root login, or sudo on)

    def connect(self) -> None: ...

    def run(self, cmd: Cmd, *, stdin: bytes | str | None = None, timeout: float | None = None,
            sudo: bool = True) -> Result: ...

    def close(self) -> None: ...


def wrap_sudo(cmd: Cmd, needs_sudo: bool) -> Cmd:
    """Prefix `sudo -n` when the login user is not root and sudo is wanted."""
    return cmd.sudo() if needs_sudo else cmd


def check_sudo(result: Result, host: str, user: str, used_sudo: bool) -> None:
    """Turn sudo's 'password required' failure into a clear TransportError."""
    if used_sudo and result.exit_status != 0 and result.stderr.lstrip().startswith("sudo:"):
        low = result.stderr.lower()
        if any(m in low for m in _SUDO_PASSWORD_MARKERS):
            raise TransportError(
                "sudo-password",
                f"{host}: sudo asks for a password for user {user!r}; gpuk8s runs `sudo -n`. "
                f"Allow passwordless sudo (e.g. '{user} ALL=(ALL) NOPASSWD: ALL' in "
                f"/etc/sudoers.d/{user}) or connect as root.",
            )
