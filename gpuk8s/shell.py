"""Cmd: the only way gpuk8s builds a remote shell command.

Every argument is quoted when rendered; `Secret` values render for real only in `render()`
and as `***` in `masked()`, which is what logs, dry-run plans and error messages show.
Operators (`&&`, `|`, redirections) come from a fixed set, so no caller can splice a raw
string into a shell line.
"""

from __future__ import annotations

import re
import shlex
from typing import Callable, Iterable, Union

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


# C0 controls (ESC, BEL, CR, backspace...), DEL, C1 controls (U+0080-U+009F: 8-bit CSI/OSC),
# and the bidirectional overrides that reorder what a terminal shows.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROLS_BUT_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escaped(m: re.Match) -> str:
    ch = m.group()
    c = ord(ch)
    return _NAMED.get(ch) or (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}")


def printable(text: object, *, lines: bool = False) -> str:
    """Text safe for a terminal or a log line: control characters shown as `\\x1b`, `\\x9b`...

    Every string from a host (os-release, hostnames, kernel and tool versions, file names,
    stderr) goes through this before human output, so an escape sequence can neither clear
    the screen, set the window title nor open an OSC that swallows later output. With
    `lines`, newlines and tabs stay (a multi-line stderr tail); otherwise they are escaped too,
    so a value cannot forge extra lines. JSON output does not use it: it stays exact.
    """
    s = text if isinstance(text, str) else str(text)
    pattern = _CONTROLS_BUT_LINES if lines else _CONTROLS
    return pattern.sub(_escaped, s) if pattern.search(s) else s


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

    def rewrite(self, fn: "Callable[[str], str]") -> "Cmd":
        """The same command with every plain word w replaced by fn(w) (nested commands too;
        operators and secrets untouched): verify's local kubectl with the user's kubeconfig."""
        def one(p: object) -> object:
            if isinstance(p, str):
                return fn(p)
            if isinstance(p, Nested):
                return Nested(p.cmd.rewrite(fn))
            return p
        return Cmd._from_parts(one(p) for p in self._parts)

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
