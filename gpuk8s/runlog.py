"""The run log: every command, result and phase, with every known secret redacted."""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from gpuk8s.shell import Secret, printable

# Things that look like secrets even when gpuk8s did not create them (kubeadm prints its own).
_PATTERNS = [
    re.compile(r"\b([a-z0-9]{6})\.[a-z0-9]{16}\b"),                    # bootstrap token
    re.compile(r"(--certificate-key[ =])[0-9a-f]{64}"),                  # certificate key flag
    re.compile(r"(?m)^([0-9a-f]{64})$"),                                 # key alone on a line
    re.compile(r"(?m)^(\s*(?:client-key-data|client-certificate-data|token):\s*)\S+"),  # kubeconfig
]


def redact(text: str) -> str:
    """Mask whatever looks like a secret (tokens, certificate keys, kubeconfig credentials)."""
    text = _PATTERNS[0].sub(lambda m: m.group(1) + ".***", text)
    text = _PATTERNS[1].sub(lambda m: m.group(1) + "***", text)
    text = _PATTERNS[2].sub("***", text)
    return _PATTERNS[3].sub(lambda m: m.group(1) + "***", text)


class RunLog:
    """Append-only log file shared by all host threads; `redact` is applied to everything."""

    def __init__(self, path: Path | None):
        self.path = path
        self._secrets: list[str] = []
        self._lock = threading.Lock()
        self._fh = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._fh = os.fdopen(fd, "a", encoding="utf-8")

    @staticmethod
    def default_path(cluster: str, command: str) -> Path:
        base = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "gpuk8s" / "logs"
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return base / f"{cluster}-{command}-{stamp}.log"

    def add_secret(self, value: Secret | str) -> None:
        raw = value.reveal() if isinstance(value, Secret) else value
        if raw and raw not in self._secrets:
            self._secrets.append(raw)

    def redact(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return redact(text)

    def write(self, host: str, message: str) -> None:
        """One entry: control characters escaped, continuation lines indented under it, so
        a remote value can neither drive a terminal that shows the log nor forge an entry."""
        if self._fh is None:
            return
        text = printable(self.redact(message), lines=True).replace("\n", "\n    | ")
        line = f"{time.strftime('%H:%M:%S')} [{printable(host)}] {text}\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
