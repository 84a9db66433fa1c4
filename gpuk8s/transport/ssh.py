"""SSH transport on paramiko: one verified connection per host, reused for every command.

The only module that imports paramiko. Host keys are checked against known_hosts; an unknown
key fails unless `accept_new_host_keys` is set (like OpenSSH StrictHostKeyChecking=accept-new,
the key is then appended to known_hosts); a changed key always fails.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import hmac
import logging
import os
import select
import socket
import threading
import time

import paramiko

from gpuk8s.errors import TransportError
from gpuk8s.shell import Cmd
from gpuk8s.transport.base import Result, check_sudo, wrap_sudo

# paramiko logs connection failures with tracebacks; gpuk8s reports them itself, per host.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False

# paramiko compares every packet's MAC in a Python byte loop; hmac.compare_digest is the same
# constant-time comparison in C, and cuts the client's CPU per host substantially.
paramiko.util.constant_time_bytes_eq = hmac.compare_digest

# Appends to one known_hosts file from many host threads must not interleave (and _parsed_once
# never reads one half-written).
_KNOWN_HOSTS_LOCK = threading.Lock()
_READ_CHUNK = 65536


_PARSED: dict[tuple[str, str], tuple[tuple[int, int], object]] = {}


def _parsed_once(kind: str, path: str, parse):
    """parse(path), once per file version (mtime, size) rather than once per host.

    Under the known_hosts lock, so a parse never sees half of an accept-new append; a file that
    changes (keys appended by accept-new) is parsed again. Errors from os.stat and parse propagate.
    """
    st = os.stat(path)
    stamp = (st.st_mtime_ns, st.st_size)
    with _KNOWN_HOSTS_LOCK:
        hit = _PARSED.get((kind, path))
        if hit is None or hit[0] != stamp:
            hit = _PARSED[(kind, path)] = (stamp, parse(path))
        return hit[1]


def _load_host_keys(path: str) -> list:
    keys = paramiko.HostKeys()
    keys.load(path)
    return keys._entries


def _known_hosts_entries(path: str) -> list:
    """known_hosts entries (with N hosts, parsing per connection would cost N x N key decodes)."""
    try:
        return _parsed_once("known_hosts", path, _load_host_keys)
    except FileNotFoundError:
        return []


def _private_key(path: str) -> paramiko.PKey | None:
    """The identity file (paramiko would parse it once per host, trying each key type in turn);
    None when it cannot be read without help (encrypted, unknown format): paramiko then gets
    the path and reports the problem itself."""
    try:
        return _parsed_once("identity", path, paramiko.PKey.from_path)
    except (paramiko.SSHException, OSError, ValueError, TypeError):  # TypeError: encrypted
        return None


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(address: str, port: int) -> str:
    """The name OpenSSH uses in known_hosts: `addr` on port 22, `[addr]:port` elsewhere."""
    return address if port == 22 else f"[{address}]:{port}"


class _HostKeyUnknown(Exception):
    def __init__(self, hostname: str, key: paramiko.PKey):
        self.hostname, self.key = hostname, key
        super().__init__(hostname)


class _VerifyPolicy(paramiko.MissingHostKeyPolicy):
    """Reject unknown keys, or accept-and-record them when the user opted in."""

    def __init__(self, known_hosts: str, accept_new: bool):
        self.known_hosts, self.accept_new = known_hosts, accept_new

    def missing_host_key(self, client, hostname, key):
        if not self.accept_new:
            raise _HostKeyUnknown(hostname, key)
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with _KNOWN_HOSTS_LOCK:
            os.makedirs(os.path.dirname(self.known_hosts) or ".", mode=0o700, exist_ok=True)
            fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        client.get_host_keys().add(hostname, key.get_name(), key)


def _classify_socket_error(e: BaseException) -> str:
    if isinstance(e, socket.gaierror):
        return "dns"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, OSError) and e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    return "unreachable"


def _socket_failure(e: BaseException, address: str, timeout: float) -> tuple[str, str]:
    """(kind, reason) for a failed TCP connection, worded for the user."""
    kind = _classify_socket_error(e) if isinstance(e, OSError) else "unreachable"
    reason = {"refused": "connection refused (is sshd running on that port?)",
              "timeout": f"no answer within {timeout:g}s",
              "dns": f"cannot resolve {address}"}.get(kind, getattr(e, "strerror", None) or str(e))
    return kind, reason


class SSHTransport:
    """A paramiko connection to one inventory host (optionally through a bastion)."""

    def __init__(self, host, *, accept_new_host_keys: bool = False):
        s = host.ssh
        self.host_name = host.name
        self.address = host.address
        self.settings = s
        self.accept_new = accept_new_host_keys or s.accept_new_host_keys
        self.known_hosts = os.path.expanduser(s.known_hosts)
        self.privileged = s.user == "root" or s.sudo
        self._use_sudo = s.user != "root" and s.sudo
        self._client: paramiko.SSHClient | None = None
        self._bastion: paramiko.SSHClient | None = None

    # ------------------------------------------------------------------ connect
    def _new_client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        try:
            entries = _known_hosts_entries(self.known_hosts)
        except (OSError, paramiko.SSHException, ValueError) as e:
            raise TransportError("host-key-unknown",
                                 f"{self.host_name}: cannot read known_hosts {self.known_hosts}: {e}")
        client.get_host_keys()._entries = list(entries)  # per-client copy of the parsed file
        client.set_missing_host_key_policy(_VerifyPolicy(self.known_hosts, self.accept_new))
        return client

    def _open_socket(self, address: str, port: int, timeout: float):
        """A TCP socket to the host, direct or through the bastion's direct-tcpip channel."""
        b = self.settings.bastion
        if b is None:
            return socket.create_connection((address, port), timeout=timeout)
        self._bastion = self._new_client()
        self._connect_client(self._bastion, b.address, b.port, b.user or self.settings.user,
                             b.identity_file or self.settings.identity_file, None, label="bastion ")
        tr = self._bastion.get_transport()
        assert tr is not None
        return tr.open_channel("direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=timeout)

    def _connect_client(self, client, address, port, user, identity_file, sock, label=""):
        timeout = self.settings.connect_timeout
        where = f"{self.host_name}: {label}{user}@{known_hosts_name(address, port)}"
        key_file = os.path.expanduser(identity_file) if identity_file else None
        try:
            if sock is None:
                sock = socket.create_connection((address, port), timeout=timeout)
            pkey = _private_key(key_file) if key_file else None
            client.connect(
                address, port=port, username=user, pkey=pkey,
                key_filename=None if pkey is not None else key_file, sock=sock,
                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                allow_agent=True, look_for_keys=key_file is None,
            )
        except _HostKeyUnknown as e:
            raise TransportError(
                "host-key-unknown",
                f"{where}: host key not in {self.known_hosts} ({e.key.get_name()} {fingerprint(e.key)}). "
                f"Verify it, then add it with `ssh-keyscan -p {port} {address} >> {self.known_hosts}` "
                f"or set `accept_new_host_keys: true` (or pass --accept-new-host-keys).",
            ) from None
        except paramiko.BadHostKeyException as e:
            raise TransportError(
                "host-key-changed",
                f"{where}: HOST KEY CHANGED: known_hosts has {fingerprint(e.expected_key)}, the host "
                f"offers {e.key.get_name()} {fingerprint(e.key)}. This may be a reinstalled machine or "
                f"an attack. If the change is expected, remove the old entry with "
                f"`ssh-keygen -R '{known_hosts_name(address, port)}' -f {self.known_hosts}`.",
            ) from None
        except paramiko.PasswordRequiredException:
            raise TransportError("auth", f"{where}: the private key {key_file} is encrypted; load it "
                                         f"into ssh-agent (`ssh-add {key_file}`)") from None
        except paramiko.AuthenticationException as e:
            raise TransportError("auth", f"{where}: authentication failed ({e}); check ssh.user and "
                                         f"ssh.identity_file, or ssh-agent") from None
        except (socket.timeout, TimeoutError):
            raise TransportError("timeout", f"{where}: no answer within {timeout:g}s") from None
        except paramiko.SSHException as e:
            text = str(e)
            low = text.lower()
            # paramiko gives up the handshake silently at the timeout and then reports
            # "No existing session": that is a timeout too (a hung or overloaded sshd).
            kind = "timeout" if any(m in low for m in ("banner", "timeout", "no existing session")) \
                else "protocol"
            if kind == "timeout":
                text = f"no SSH handshake within {timeout:g}s (sshd hung or overloaded)"
            raise TransportError(kind, f"{where}: {text}") from None
        except OSError as e:
            kind, reason = _socket_failure(e, address, timeout)
            raise TransportError(kind, f"{where}: {reason}") from None

    def connect(self) -> None:
        s = self.settings
        client = self._new_client()
        try:
            sock = self._open_socket(self.address, s.port, s.connect_timeout)
        except TransportError:
            raise
        except (OSError, paramiko.SSHException) as e:
            kind, reason = _socket_failure(e, self.address, s.connect_timeout)
            raise TransportError(kind, f"{self.host_name}: {s.user}@"
                                       f"{known_hosts_name(self.address, s.port)}: {reason}") from None
        self._connect_client(client, self.address, s.port, s.user, s.identity_file, sock)
        tr = client.get_transport()
        if tr is not None:
            tr.set_keepalive(15)
        self._client = client

    # ------------------------------------------------------------------ run
    def run(self, cmd: Cmd, *, stdin: bytes | str | None = None, timeout: float | None = None,
            sudo: bool = True) -> Result:
        if self._client is None:
            raise TransportError("closed", f"{self.host_name}: not connected")
        use_sudo = sudo and self._use_sudo
        full = wrap_sudo(cmd, use_sudo)
        limit = timeout or self.settings.command_timeout
        start = time.monotonic()
        deadline = start + limit
        tr = self._client.get_transport()
        if tr is None or not tr.is_active():
            raise TransportError("closed", f"{self.host_name}: connection lost")
        try:
            chan = tr.open_session(timeout=limit)
            chan.exec_command(full.render())
            if stdin is not None:
                chan.sendall(stdin.encode() if isinstance(stdin, str) else stdin)
            chan.shutdown_write()
            out, err = self._drain(chan, deadline, limit, cmd)
            status = chan.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise TransportError("closed", f"{self.host_name}: `{cmd.masked()}` failed: {e}") from None
        res = Result(full.masked(), status, out.decode(errors="replace"), err.decode(errors="replace"),
                     time.monotonic() - start)
        check_sudo(res, self.host_name, self.settings.user, use_sudo)
        return res

    def _drain(self, chan, deadline: float, limit: float, cmd: Cmd) -> tuple[bytes, bytes]:
        """Read stdout and stderr together until EOF, bounded by the deadline."""
        out, err = bytearray(), bytearray()
        poller = select.poll()  # poll, not select: fds above 1024 at large fleets
        poller.register(chan.fileno(), select.POLLIN)
        while True:
            while chan.recv_ready():
                out += chan.recv(_READ_CHUNK)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(_READ_CHUNK)
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                if chan.eof_received or chan.closed:
                    break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                chan.close()
                raise TransportError("timeout", f"{self.host_name}: `{cmd.masked()}` did not finish "
                                                f"within {limit:g}s; raise ssh.command_timeout if "
                                                f"it is just slow")
            poller.poll(min(remaining, 1.0) * 1000)
        return bytes(out), bytes(err)

    def close(self) -> None:
        for c in (self._client, self._bastion):
            if c is not None:
                c.close()
        self._client = self._bastion = None
