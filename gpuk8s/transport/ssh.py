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
from gpuk8s.shell import Cmd, printable, quote
from gpuk8s.transport import known_hosts
from gpuk8s.transport.base import Result, check_sudo, may_start_after_abort, wrap_sudo

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

# SSH handshakes (TCP connect, key exchange, authentication) in flight, process-wide, bounded
# apart from the sessions in flight (--parallel): a handshake is CPU-bound (the key exchange
# on both ends), so 150 at once on a small machine starve each other past the connect timeout
# and healthy hosts read as unreachable. A handshake waits here first; its timeouts start only
# once it holds a slot, so a timeout means the host did not answer, not that gpuk8s was busy.
# Commands on established sessions are not bounded by this.
# 8 per CPU (16 on 2 CPUs): the lab's 150 hosts answer in full at 16 handshakes in flight, while
# 4 left 50 hosts waiting on each other's round trips (preflight 1.3x slower than at 50 in flight).
HANDSHAKES_IN_FLIGHT = max(16, 8 * (os.cpu_count() or 1))


def _handshake_slots() -> int:
    """GPUK8S_SSH_HANDSHAKES overrides the bound (a positive integer; anything else is ignored)."""
    raw = os.environ.get("GPUK8S_SSH_HANDSHAKES", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else HANDSHAKES_IN_FLIGHT


_HANDSHAKES = threading.BoundedSemaphore(_handshake_slots())


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


_log = logging.getLogger("gpuk8s.known_hosts")


def _load_known_hosts(path: str) -> known_hosts.KnownHosts:
    """Parse known_hosts; its skipped lines are logged once per file version (not per host)."""
    kh = known_hosts.load(path)
    for w in kh.warnings:
        _log.warning("warning: %s", w)
    return kh


def _known_hosts_entries(path: str) -> known_hosts.KnownHosts:
    """known_hosts entries (with N hosts, parsing per connection would cost N x N key decodes)."""
    try:
        return _parsed_once("known_hosts", path, _load_known_hosts)
    except FileNotFoundError:
        return known_hosts.KnownHosts(path)


class _HostKeys(paramiko.HostKeys):
    """paramiko's view of known_hosts, answered from gpuk8s's OpenSSH-style reader: the plain
    keys of the host ({type: key}, file order; paramiko prefers the first type)."""

    def __init__(self, kh: known_hosts.KnownHosts):
        super().__init__()
        self.kh = kh
        self.returned: dict[str, _KeyDict] = {}

    def lookup(self, hostname):
        d = _KeyDict()
        for k in self.kh.keys_for(hostname):
            d.setdefault(k.get_name(), k)
        if not d:
            return None
        self.returned[hostname] = d
        return d


class _KeyDict(dict):
    def keys(self):   # paramiko indexes keys()[0]
        return list(super().keys())


class _HostKeyRevoked(Exception):
    def __init__(self, entry: known_hosts.Entry, key: paramiko.PKey):
        self.entry, self.key = entry, key
        super().__init__(f"{entry.path}:{entry.lineno}")


def _verifying_transport(client: paramiko.SSHClient, name: str):
    """A paramiko Transport factory that checks the host's key against known_hosts' `@revoked`
    lines right after the key exchange (before any authentication), like OpenSSH; and accepts
    any of several known keys of one type (paramiko compares with one)."""

    class _Transport(paramiko.Transport):
        def start_client(self, event=None, timeout=None):
            super().start_client(event=event, timeout=timeout)
            key = self.get_remote_server_key()
            hostkeys: _HostKeys = client.get_host_keys()   # set by SSHTransport._new_client
            revoked = hostkeys.kh.revoked_for(name, key)
            if revoked is not None:
                self.close()
                raise _HostKeyRevoked(revoked, key)
            d = hostkeys.returned.get(name)
            if d is not None and any(k == key for k in hostkeys.kh.keys_for(name)):
                d[key.get_name()] = key

    return _Transport


def _private_key(path: str) -> paramiko.PKey | None:
    """The identity file (paramiko would parse it once per host, trying each key type in turn);
    None when it cannot be read without help (encrypted, unknown format): paramiko then gets
    the path and reports the problem itself."""
    try:
        return _parsed_once("identity", path, paramiko.PKey.from_path)
    except (paramiko.SSHException, OSError, ValueError, TypeError):  # TypeError: encrypted
        return None


# Every command first reports its process group on stderr (read and removed by _drain), so an
# interrupt can SIGTERM it from another session: sshd honours the SSH "signal" request only for
# non-root logins. Field 5 of /proc/PID/stat is the process group; this shell's name ("sh") has
# no space, so the fields split on spaces. Shell builtins only: no process of its own.
_REPORT_PGID = ('read -r _ _ _ _ g _ < /proc/$$/stat && echo "@@gpuk8s:pgid $g" >&2; exec "$@"')
# A command that gets no stdin reads /dev/null instead, and no EOF is sent on its channel: a
# command that ends at once can make sshd close the channel before an EOF sent after exec gets
# there (paramiko sends it outside the channel lock), and OpenSSH drops the whole connection on
# an EOF for a channel it no longer has (channels.c channel_from_packet_id: "ieof packet referred
# to nonexistent channel"; seen in the lab with many short commands at once). sshd closes the
# channel when the command exits whether or not the client sent EOF (session.c
# session_exit_message -> chan_write_failed).
_REPORT_PGID_NO_STDIN = ('read -r _ _ _ _ g _ < /proc/$$/stat && echo "@@gpuk8s:pgid $g" >&2; '
                         'exec "$@" </dev/null')
_POLL_SLICE = 0.5      # seconds a command's reader blocks before it looks at its deadline again
_LIVENESS_WAIT = 3.0   # seconds a keepalive may take before the host counts as not answering


def _answers(tr: paramiko.Transport, wait: float) -> bool:
    """Does the peer still answer? A keepalive global request (OpenSSH replies even to an
    unknown request), waited for at most `wait` seconds in a daemon thread."""
    import threading as _t

    done = _t.Event()

    def ask() -> None:
        try:
            tr.global_request("keepalive@openssh.com", wait=True)
        except Exception:  # noqa: BLE001 - no answer is the answer
            return
        if tr.is_active():
            done.set()

    _t.Thread(target=ask, name="gpuk8s-keepalive", daemon=True).start()
    return done.wait(wait)


def _send_signal(chan: paramiko.Channel, name: str) -> None:
    """RFC 4254 6.9 "signal" request (OpenSSH >= 7.9 signals the session's process group);
    paramiko has no public call for it. Sent from a daemon thread: never blocks the caller."""
    from paramiko.common import cMSG_CHANNEL_REQUEST
    from paramiko.message import Message

    def send() -> None:
        try:
            m = Message()
            m.add_byte(cMSG_CHANNEL_REQUEST)
            m.add_int(chan.remote_chanid)
            m.add_string("signal")
            m.add_boolean(False)
            m.add_string(name)
            chan.transport._send_user_message(m)
        except Exception:  # noqa: BLE001 - the session is closed after the grace anyway
            pass

    threading.Thread(target=send, name="gpuk8s-signal", daemon=True).start()


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
        self._lock = threading.Lock()
        self._in_flight: dict = {}     # channel -> masked command
        self._aborted: set = set()     # channels abort() was asked to end
        self._expired: set = set()     # channels the watchdog closed at their deadline
        self._pgids: dict = {}         # channel -> the remote process group of its command
        self._abort_all = False        # abort() was called: only cleanups start commands
        # A command silent for `_quiet` seconds gets a keepalive; no reply within
        # `_liveness_wait`: the host is lost. Both follow ssh.connect_timeout (how long a host
        # may take to answer at all).
        self._liveness_wait = max(1.0, min(_LIVENESS_WAIT, s.connect_timeout))
        self._quiet = max(2.0, s.connect_timeout)

    # ------------------------------------------------------------------ connect
    def _new_client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        try:
            kh = _known_hosts_entries(self.known_hosts)
        except (OSError, paramiko.SSHException, ValueError) as e:
            raise TransportError("host-key-unknown",
                                 f"{self.host_name}: cannot read known_hosts {self.known_hosts}: {e}")
        client._host_keys = _HostKeys(kh)   # per client: the parsed file is shared, read-only
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
        with _HANDSHAKES:   # the timeouts below start when the handshake does
            self._handshake(client, address, port, user, key_file, sock, timeout, where)

    def _handshake(self, client, address, port, user, key_file, sock, timeout, where):
        try:
            if sock is None:
                sock = socket.create_connection((address, port), timeout=timeout)
            pkey = _private_key(key_file) if key_file else None
            client.connect(
                address, port=port, username=user, pkey=pkey,
                transport_factory=_verifying_transport(client, known_hosts_name(address, port)),
                key_filename=None if pkey is not None else key_file, sock=sock,
                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                allow_agent=True, look_for_keys=key_file is None,
            )
        except _HostKeyRevoked as e:
            raise TransportError(
                "host-key-revoked",
                f"{where}: HOST KEY REVOKED: the host offers {e.key.get_name()} {fingerprint(e.key)}, "
                f"which {quote(e.entry.path)} line {e.entry.lineno} marks @revoked. gpuk8s refuses "
                f"it; do not connect until the host has a new key.",
            ) from None
        except _HostKeyUnknown as e:
            raise TransportError(
                "host-key-unknown",
                f"{where}: host key not in {self.known_hosts} ({e.key.get_name()} {fingerprint(e.key)}). "
                f"Verify it, then add it with "
                f"`ssh-keyscan -p {port} {quote(address)} >> {quote(self.known_hosts)}` "
                f"or set `accept_new_host_keys: true` (or pass --accept-new-host-keys).",
            ) from None
        except paramiko.BadHostKeyException as e:
            raise TransportError(
                "host-key-changed",
                f"{where}: HOST KEY CHANGED: known_hosts has {fingerprint(e.expected_key)}, the host "
                f"offers {e.key.get_name()} {fingerprint(e.key)}. This may be a reinstalled machine or "
                f"an attack. If the change is expected, remove the old entry with "
                f"`ssh-keygen -R {quote(known_hosts_name(address, port))} -f {quote(self.known_hosts)}`.",
            ) from None
        except paramiko.PasswordRequiredException:
            raise TransportError("auth", f"{where}: the private key {printable(key_file)} is encrypted; "
                                         f"load it into ssh-agent (`ssh-add {quote(key_file)}`)") from None
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
        self._require_identity_files()
        client = self._new_client()
        try:
            # Direct: the TCP connect happens in _connect_client, inside the handshake bound.
            sock = None if s.bastion is None else self._open_socket(self.address, s.port,
                                                                     s.connect_timeout)
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

    def _require_identity_files(self) -> None:
        """A missing identity file is named before any connection is tried."""
        s = self.settings
        for what, path in (("ssh.identity_file", s.identity_file),
                           ("ssh.bastion.identity_file", s.bastion.identity_file if s.bastion else None)):
            if path and not os.path.isfile(os.path.expanduser(path)):
                raise TransportError("auth", f"{self.host_name}: the identity file "
                                             f"{printable(os.path.expanduser(path))} does not exist "
                                             f"({what} in the inventory)")

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
            raise TransportError("lost", f"{self.host_name}: connection lost before `{cmd.masked()}` "
                                         f"could run")
        chan = None
        watchdog = None
        try:
            chan = tr.open_session(timeout=limit)
            chan.settimeout(max(0.1, deadline - time.monotonic()))  # bounds sendall on a frozen peer
            with self._lock:
                if self._abort_all and not may_start_after_abort():
                    raise TransportError("interrupted", f"{self.host_name}: interrupted; "
                                                        f"`{cmd.masked()}` was not started")
                self._in_flight[chan] = cmd.masked()
            # exec_command and recv_exit_status wait without a bound in paramiko: past the
            # deadline the watchdog closes the channel, which ends every wait on it.
            watchdog = threading.Timer(max(0.1, deadline - time.monotonic()) + self._liveness_wait + 1,
                                       self._expire, (chan,))
            watchdog.daemon = True
            watchdog.start()
            if stdin is None:
                chan.exec_command(Cmd("sh", "-c", _REPORT_PGID_NO_STDIN, "gpuk8s-run", full).render())
            else:
                chan.exec_command(Cmd("sh", "-c", _REPORT_PGID, "gpuk8s-run", full).render())
                try:
                    chan.sendall(stdin.encode() if isinstance(stdin, str) else stdin)
                    chan.shutdown_write()
                except OSError:   # socket.timeout (a frozen peer) included: handled below
                    if not (chan.closed or chan.exit_status_ready()):
                        raise
                    # the command ended before it took all of its input (`sudo -n` refusing at
                    # once): its exit status and stderr, read next, say why
            out, err = self._drain(chan, tr, deadline, limit, cmd)
            status = chan.recv_exit_status()
        except TransportError:
            if chan is not None:
                chan.close()
            raise
        except socket.timeout:
            raise TransportError("lost", f"{self.host_name}: the host stopped answering: it took no "
                                         f"input of `{cmd.masked()}` within {limit:g}s") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            if chan is not None and chan in self._expired:
                raise TransportError("lost", f"{self.host_name}: the host stopped answering during "
                                             f"`{cmd.masked()}` (nothing within {limit:g}s)") from None
            if not tr.is_active():
                raise TransportError("lost", f"{self.host_name}: connection lost during "
                                             f"`{cmd.masked()}` ({e or type(e).__name__})") from None
            raise TransportError("closed", f"{self.host_name}: `{cmd.masked()}` failed: {e}") from None
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if chan is not None:
                with self._lock:
                    self._in_flight.pop(chan, None)
                    self._pgids.pop(chan, None)
        if status == -1:   # paramiko's value when no exit-status came: a signal, or the link died
            if chan in self._expired:
                raise TransportError("lost", f"{self.host_name}: the host stopped answering during "
                                             f"`{cmd.masked()}` (nothing within {limit:g}s)")
            if not tr.is_active():
                raise TransportError("lost", f"{self.host_name}: connection lost during "
                                             f"`{cmd.masked()}`; its outcome on the host is unknown")
            if chan in self._aborted:
                raise TransportError("interrupted", f"{self.host_name}: `{cmd.masked()}` was ended "
                                                    f"by the interrupt")
            raise TransportError("closed", f"{self.host_name}: `{cmd.masked()}` ended without an exit "
                                           f"status (killed by a signal, or its session was closed)")
        res = Result(full.masked(), status, out.decode(errors="replace"), err.decode(errors="replace"),
                     time.monotonic() - start)
        check_sudo(res, self.host_name, self.settings.user, use_sudo)
        return res

    def _kill_groups(self, groups: list[str], grace: float) -> None:
        client = self._client
        tr = client.get_transport() if client is not None else None
        if tr is None or not tr.is_active():
            return
        kill = wrap_sudo(Cmd("kill", "-TERM", "--", *(f"-{g}" for g in groups)), self._use_sudo)
        try:
            chan = tr.open_session(timeout=grace)
            chan.exec_command(Cmd("sh", "-c", 'exec "$@" </dev/null', "gpuk8s-kill", kill).render())
            chan.status_event.wait(grace)
            chan.close()
        except Exception:  # noqa: BLE001 - the sessions are closed after the grace anyway
            pass

    def _expire(self, chan) -> None:
        """The watchdog: the command's deadline passed and its reader is stuck in paramiko."""
        with self._lock:
            if chan not in self._in_flight:
                return
            self._expired.add(chan)
        chan.close()

    def _drain(self, chan, tr, deadline: float, limit: float, cmd: Cmd) -> tuple[bytes, bytes]:
        """Read stdout and stderr together until EOF, bounded by the deadline.

        A channel that has been silent for a while gets a keepalive near the deadline, so a
        frozen host is reported as lost (not as a slow command) no later than the deadline.
        """
        out, err = bytearray(), bytearray()
        marker = True   # the first stderr line is _REPORT_PGID's
        poller = select.poll()  # poll, not select: fds above 1024 at large fleets
        poller.register(chan.fileno(), select.POLLIN)
        checked = False
        last_data = last_check = time.monotonic()
        while True:
            n = len(out) + len(err)
            while chan.recv_ready():
                out += chan.recv(_READ_CHUNK)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(_READ_CHUNK)
            if len(out) + len(err) != n:
                last_data = time.monotonic()
            if marker and b"\n" in err:
                line, _, rest = bytes(err).partition(b"\n")
                if line.startswith(b"@@gpuk8s:pgid "):
                    with self._lock:
                        self._pgids[chan] = line.split()[1].decode(errors="replace")
                    err[:] = rest
                marker = False
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                if chan.eof_received or chan.closed:
                    break
            if chan.closed and not chan.recv_ready() and not chan.recv_stderr_ready():
                break   # closed by abort() or by the connection's end: run() tells which
            now = time.monotonic()
            remaining = deadline - now
            # A silent channel is asked whether its host still answers: every `quiet` seconds of
            # silence, and once just before the deadline. No reply within `wait`: lost.
            wait = min(self._liveness_wait, max(remaining - 0.2, 0.1))
            if now - max(last_data, last_check) >= self._quiet or (
                    not checked and limit >= 4 * self._liveness_wait
                    and remaining <= self._liveness_wait + 0.5 and now - last_data >= 1.0):
                checked = checked or remaining <= self._liveness_wait + 0.5
                last_check = now
                if not tr.is_active() or not _answers(tr, wait):
                    chan.close()
                    raise TransportError(
                        "lost", f"{self.host_name}: the host stopped answering during `{cmd.masked()}` "
                                f"(silent for {time.monotonic() - last_data:.0f}s, no reply to a "
                                f"keepalive within {wait:g}s); its outcome on the host is unknown")
                continue
            if remaining <= 0:
                chan.close()
                raise TransportError("timeout", f"{self.host_name}: `{cmd.masked()}` did not finish "
                                                f"within {limit:g}s; raise ssh.command_timeout if "
                                                f"it is just slow")
            poller.poll(min(remaining, _POLL_SLICE) * 1000)
        return bytes(out), bytes(err)

    def abort(self, grace: float) -> list[tuple[str, bool]]:
        """Interrupt: ask the commands in flight to end (SIGTERM to their process group, the
        SSH "signal" request), wait up to `grace` seconds, then close the sessions still open.

        Returns (masked command, ended) for each; ended=False means the session was closed and
        the command may go on running on the host. Never blocks longer than about `grace`.
        """
        with self._lock:
            self._abort_all = True
            chans = dict(self._in_flight)
            self._aborted.update(chans)
        for chan in chans:
            _send_signal(chan, "TERM")   # honoured by sshd for non-root logins (privilege separation)
        end = time.monotonic() + grace
        killed: set[str] = set()
        while time.monotonic() < end and not all(c.exit_status_ready() or c.closed for c in chans):
            with self._lock:   # a command that just started reports its group a moment later
                groups = sorted({g for c, g in self._pgids.items() if c in chans and g.isdigit()} - killed)
            if groups:   # root logins too: SIGTERM the process groups from a new session
                killed.update(groups)
                threading.Thread(target=self._kill_groups, args=(groups, grace), daemon=True,
                                 name="gpuk8s-kill").start()
            time.sleep(0.02)
        report = []
        for chan, command in chans.items():
            ended = chan.exit_status_ready() and chan.exit_status != -1
            if not ended:
                chan.close()
            report.append((command, ended))
        return report

    def close(self) -> None:
        for c in (self._client, self._bastion):
            if c is not None:
                c.close()
        self._client = self._bastion = None
