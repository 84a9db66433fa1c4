"""Transports run commands on a host: `ssh` (paramiko) or `local` (this machine)."""

from __future__ import annotations

from gpuk8s.transport.base import Result, Transport


def open_transport(host, *, accept_new_host_keys: bool = False) -> Transport:
    """Connect to a host as its inventory entry says; raises TransportError when it cannot."""
    if host.connection == "local":
        from gpuk8s.transport.local import LocalTransport

        t: Transport = LocalTransport(host)
    else:
        from gpuk8s.transport.ssh import SSHTransport  # deferred: paramiko is slow to import

        t = SSHTransport(host, accept_new_host_keys=accept_new_host_keys)
    t.connect()
    return t


__all__ = ["Result", "Transport", "open_transport"]
