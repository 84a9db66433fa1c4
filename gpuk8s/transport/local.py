"""Run commands on this machine (`connection: local` or `preflight --local`)."""

from __future__ import annotations

import os
import subprocess
import threading
import time

from gpuk8s.errors import TransportError
from gpuk8s.shell import Cmd
from gpuk8s.transport.base import Result, check_sudo, may_start_after_abort, wrap_sudo


class LocalTransport:
    def __init__(self, host):
        self.host_name = host.name
        self._want_sudo = host.ssh.sudo
        self._is_root = os.geteuid() == 0
        self.privileged = self._is_root or self._want_sudo
        self._timeout = host.ssh.command_timeout
        self._lock = threading.Lock()
        self._in_flight: dict[subprocess.Popen, str] = {}
        self._aborted: set[subprocess.Popen] = set()
        self._abort_all = False

    def connect(self) -> None:
        return None

    def run(self, cmd: Cmd, *, stdin: bytes | str | None = None, timeout: float | None = None,
            sudo: bool = True) -> Result:
        use_sudo = sudo and self._want_sudo and not self._is_root
        full = wrap_sudo(cmd, use_sudo)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        start = time.monotonic()
        limit = timeout or self._timeout
        with self._lock:
            if self._abort_all and not may_start_after_abort():
                raise TransportError("interrupted", f"{self.host_name}: interrupted; "
                                                    f"`{cmd.masked()}` was not started")
            proc = subprocess.Popen(["/bin/sh", "-c", full.render()], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE,
                                    stdin=subprocess.PIPE if data else subprocess.DEVNULL)
            self._in_flight[proc] = cmd.masked()
        try:
            out, err = proc.communicate(data, timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise TransportError("timeout", f"{self.host_name}: `{cmd.masked()}` did not finish "
                                            f"within {limit:g}s") from None
        finally:
            with self._lock:
                self._in_flight.pop(proc, None)
        if proc in self._aborted:
            raise TransportError("interrupted", f"{self.host_name}: `{cmd.masked()}` was ended by the "
                                                f"interrupt (exit {proc.returncode})")
        res = Result(full.masked(), proc.returncode, out.decode(errors="replace"),
                     err.decode(errors="replace"), time.monotonic() - start)
        check_sudo(res, self.host_name, os.environ.get("USER", "current user"), use_sudo)
        return res

    def abort(self, grace: float) -> list[tuple[str, bool]]:
        """Interrupt: SIGTERM the commands in flight, SIGKILL what is left after `grace` seconds."""
        with self._lock:
            self._abort_all = True
            procs = dict(self._in_flight)
            self._aborted.update(procs)
        for p in procs:
            p.terminate()
        end = time.monotonic() + grace
        while time.monotonic() < end and any(p.poll() is None for p in procs):
            time.sleep(0.02)
        report = []
        for p, command in procs.items():
            ended = p.poll() is not None
            if not ended:
                p.kill()
            report.append((command, ended))
        return report

    def close(self) -> None:
        return None
