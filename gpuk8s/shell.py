"""Cmd: the only way gpuk8s builds a remote shell command.

Every argument is quoted when rendered; `Secret` values render for real only in `render()`
and as `***` in `masked()`, which is what logs, dry-run plans and error messages show.
Operators (`&&`, `|`, redirections) come from a fixed set, so no caller can splice a raw
string into a shell line.
"""

from __future__ import annotations

import shlex
from typing import Iterable, Union

_OPERATORS = frozenset({"&&", "||", "|", ";"})
_REDIRECTS = frozenset({">", ">>", "<", "2>", "2>&1", "2>/dev/null", ">/dev/null"})


class Secret:
    """A value that must never be shown: prints as *** everywhere except Cmd.render()."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = str(value)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "***"

    def __repr__(self) -> str:
        return "Secret('***')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Nested:
    """A whole command passed as one argument (e.g. to `sh -c`), quoted as a single word."""

    __slots__ = ("cmd",)

    def __init__(self, cmd: "Cmd"):
        self.cmd = cmd


Arg = Union[str, int, Secret, "Cmd", Nested]


class _Token:
    """A fixed shell token (operator or redirection) that is emitted unquoted."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def quote(value: str) -> str:
    """Quote one word for a POSIX shell."""
    return shlex.quote(value)


class Cmd:
    """An immutable remote command built from parts; quoted when rendered."""

    __slots__ = ("_parts",)

    def __init__(self, *argv: Arg):
        parts: list[object] = []
        for a in argv:
            if isinstance(a, Cmd):
                parts.extend(a._parts)
            elif isinstance(a, (str, int, Secret, Nested)):
                parts.append(a if not isinstance(a, int) else str(a))
            else:
                raise TypeError(f"Cmd argument of unsupported type {type(a).__name__}")
        self._parts = tuple(parts)

    @classmethod
    def _from_parts(cls, parts: Iterable[object]) -> "Cmd":
        c = cls.__new__(cls)
        c._parts = tuple(parts)
        return c

    def then(self, op: str, other: "Cmd") -> "Cmd":
        """Join two commands with a shell operator: &&, ||, | or ;."""
        if op not in _OPERATORS:
            raise ValueError(f"unsupported shell operator {op!r}")
        return Cmd._from_parts(self._parts + (_Token(op),) + other._parts)

    def redirect(self, op: str, target: str | None = None) -> "Cmd":
        """Add a redirection; the target path is quoted like any argument."""
        if op not in _REDIRECTS:
            raise ValueError(f"unsupported redirection {op!r}")
        extra: tuple[object, ...] = (_Token(op),) if target is None else (_Token(op), target)
        return Cmd._from_parts(self._parts + extra)

    def sudo(self) -> "Cmd":
        """Run the whole command as root through `sudo -n` (never prompts for a password)."""
        return Cmd("sudo", "-n", "--", "sh", "-c", Nested(self))

    def _words(self, reveal: bool) -> list[str]:
        out = []
        for p in self._parts:
            if isinstance(p, _Token):
                out.append(p.text)
            elif isinstance(p, Secret):
                out.append(quote(p.reveal()) if reveal else "***")
            elif isinstance(p, Nested):
                inner = p.cmd.render() if reveal else p.cmd.masked()
                out.append(quote(inner))
            else:
                out.append(quote(p))  # type: ignore[arg-type]
        return out

    def render(self) -> str:
        """The exact string sent to the remote shell (secrets revealed)."""
        return " ".join(self._words(True))

    def masked(self) -> str:
        """The command as shown to people and logs (secrets as ***)."""
        return " ".join(self._words(False))

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"Cmd({self.masked()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cmd) and other.render() == self.render()

    def __hash__(self) -> int:
        return hash(self.render())
