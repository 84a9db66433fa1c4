"""Run commands on this machine (`connection: local` or `preflight --local`)."""

from __future__ import annotations

import os
import subprocess
import time

from gpuk8s.errors import TransportError
from gpuk8s.shell import Cmd
from gpuk8s.transport.base import Result, check_sudo, wrap_sudo


class LocalTransport:
    def __init__(self, host):
        self.host_name = host.name
        self._want_sudo = host.ssh.sudo
        self._is_root = os.geteuid() == 0
        self.privileged = self._is_root or self._want_sudo
        self._timeout = host.ssh.command_timeout

    def connect(self) -> None:
        return None

    def run(self, cmd: Cmd, *, stdin: bytes | str | None = None, timeout: float | None = None,
            sudo: bool = True) -> Result:
        use_sudo = sudo and self._want_sudo and not self._is_root
        full = wrap_sudo(cmd, use_sudo)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        start = time.monotonic()
        try:
            proc = subprocess.run(["/bin/sh", "-c", full.render()], input=data, capture_output=True,
                                  timeout=timeout or self._timeout, stdin=None if data else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise TransportError("timeout", f"{self.host_name}: `{cmd.masked()}` did not finish "
                                            f"within {e.timeout:g}s") from None
        res = Result(full.masked(), proc.returncode, proc.stdout.decode(errors="replace"),
                     proc.stderr.decode(errors="replace"), time.monotonic() - start)
        check_sudo(res, self.host_name, os.environ.get("USER", "current user"), use_sudo)
        return res

    def close(self) -> None:
        return None
