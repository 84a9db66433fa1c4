"""One error hierarchy; each error carries the exit code the CLI maps it to."""

from __future__ import annotations

# Exit codes (documented in docs/exit-codes.md).
EXIT_OK = 0
EXIT_CHECKS_FAILED = 1
EXIT_USAGE = 2
EXIT_INVENTORY = 3
EXIT_UNREACHABLE = 4
EXIT_REMOTE = 5
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class Gpuk8sError(Exception):
    """Base of every error gpuk8s expects; the CLI turns it into a message and exit code."""

    exit_code = EXIT_INTERNAL


class UsageError(Gpuk8sError):
    """The command line asks for something that cannot be done."""

    exit_code = EXIT_USAGE


class InventoryError(Gpuk8sError):
    """The inventory file is missing, unparsable or invalid; lists every problem at once."""

    exit_code = EXIT_INVENTORY

    def __init__(self, problems: list["Problem"] | None = None, message: str | None = None):
        self.problems = list(problems or [])
        super().__init__(message or self._summary())

    def _summary(self) -> str:
        return "\n".join(str(p) for p in self.problems) or "invalid inventory"


class Problem:
    """One validation problem: where (file, line, field path) and what."""

    __slots__ = ("file", "line", "path", "message")

    def __init__(self, file: str, line: int | None, path: str, message: str):
        self.file, self.line, self.path, self.message = file, line, path, message

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def __repr__(self) -> str:
        return f"Problem({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Problem) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


class TransportError(Gpuk8sError):
    """A host could not be reached or a command could not be run on it.

    `kind` is one of: refused, timeout, unreachable, dns, auth, host-key-unknown,
    host-key-changed, host-key-revoked (known_hosts marks the key @revoked), sudo-password,
    protocol, identity (the identity file cannot be used),
    closed (the connection was closed or never opened), lost (the host stopped answering or the
    connection dropped in the middle of a command), interrupted (the run was interrupted).
    """

    exit_code = EXIT_UNREACHABLE

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


class Interrupted(Gpuk8sError):
    """The run was interrupted (Ctrl-C, SIGINT): no new change starts; the message says what was
    in flight and whether it ended or its session was closed."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str = "interrupted", in_flight: list[str] | None = None):
        self.in_flight = list(in_flight or [])
        super().__init__(message)


class RemoteCommandError(Gpuk8sError):
    """A remote command exited non-zero where success was required."""

    exit_code = EXIT_REMOTE

    def __init__(self, host: str, command: str, exit_status: int, stderr: str, hint: str = ""):
        self.host, self.command, self.exit_status, self.stderr, self.hint = (
            host, command, exit_status, stderr, hint)
        tail = "\n".join(stderr.strip().splitlines()[-10:])
        msg = f"{host}: `{command}` exited {exit_status}"
        if tail:
            msg += f"\n{tail}"
        if hint:
            msg += f"\n{hint}"
        super().__init__(msg)


class ClusterStateError(Gpuk8sError):
    """A host or the cluster is in a state gpuk8s will not repair by itself (e.g. a failed init)."""

    exit_code = EXIT_REMOTE


class VerificationError(Gpuk8sError):
    """A step ran, but reading the host back shows it did not take effect."""

    exit_code = EXIT_REMOTE

    def __init__(self, host: str, what: str, found: str, hint: str = ""):
        self.host, self.what, self.found, self.hint = host, what, found, hint
        msg = f"{host}: {what}: {found}"
        super().__init__(f"{msg}\n{hint}" if hint else msg)


class WaitTimeout(Gpuk8sError):
    """Something the run waits for (Calico, nodes Ready) did not happen before the deadline."""

    exit_code = EXIT_REMOTE


class PhaseFailed(Gpuk8sError):
    """One or more hosts failed in a phase; every host's error is listed."""

    exit_code = EXIT_REMOTE

    def __init__(self, phase: str, errors: dict[str, BaseException]):
        self.phase, self.errors = phase, errors
        lines = [f"{phase}: {len(errors)} host{'s' if len(errors) != 1 else ''} failed"]
        for name, e in errors.items():
            lines.append(f"- {e}" if str(e).startswith(name) else f"- {name}: {e}")
        super().__init__("\n".join(lines))


class PreflightFailed(Gpuk8sError):
    """Hosts failed checks that the action cannot repair; nothing was changed."""

    exit_code = EXIT_CHECKS_FAILED

    def __init__(self, report: object, blocking: dict[str, list[str]]):
        self.report, self.blocking = report, blocking
        lines = ["preflight failed; nothing was changed. Fix these (or pass --ignore CHECK_ID):"]
        for host, ids in blocking.items():
            lines.append(f"- {host}: {', '.join(ids)}")
        super().__init__("\n".join(lines))


class ActionFailed(Gpuk8sError):
    """A phase of an action failed: carries the action's partial report and the cause."""

    def __init__(self, report: object, cause: BaseException, message: str):
        self.report, self.cause = report, cause
        self.exit_code = getattr(cause, "exit_code", EXIT_REMOTE)
        super().__init__(message)
