"""The lab: simulated bare-metal hosts, each a real OpenSSH server in its own namespaces.

    with Lab([HostFixture("cp-1", roles=("control-plane",)), HostFixture("gpu-1", gpus=[GPU("L4")])]) as lab:
        subprocess.run(lab.ssh_argv("gpu-1") + ["hostname"])

Per host: a network namespace (veth `eth0` into a lab bridge in the root namespace, an address in
198.18.0.0/15 and one in fd67:7075:6b38::/48), a UTS namespace (hostname) and a mount namespace where overlays over /etc /usr /var
/opt /root /home /srv hold the host's files (so nothing a test does reaches this machine), /sys is a
tmpfs built from the fixture, /proc/{swaps,meminfo,filesystems,cmdline} are per-host files and tool
simulators (tests/lab/sim) sit in /usr/local/bin. All state lives in a temporary lab directory; the
root namespace only gains the bridge. Teardown always runs (context manager, atexit, and the holder
processes die with the test process); leftovers of crashed runs are removed at start-up.
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import fcntl
import compileall
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

import yaml

from .fixture import (DEFAULT, DEFAULT_USERS, GPU, PROBED_BINARIES, HostFixture, User,
                      containerd_default_config, containerd_version_line)

__all__ = ["Lab", "LabError", "LabHost", "HostFixture", "GPU", "User", "DEFAULT_USERS"]

HERE = Path(__file__).resolve().parent
SIM_DIR = HERE / "sim"
SUPERVISOR = HERE / "_supervisor.py"
REPO = HERE.parent.parent
# The probe moved into the facts package; either layout works.
PROBE_SCRIPT = REPO / "gpuk8s" / "facts" / "probe.sh"

LAB_DIR_PREFIX = "gpuk8s-lab-"
IFACE_PREFIX = "gl"                  # gl<owner pid, 6 hex><lab counter, 2 hex>{b | v<n>} (<= 15 chars)
HOLDER_TAG = "gpuk8s-lab-holder:"
IN_HOST_LAB_DIR = "/run/gpuk8s-lab"  # where a host sees the lab directory
LOCK_FILE = "/tmp/gpuk8s-lab.lock"
SERVER_BASHRC = """# ~/.bashrc: executed by bash(1) for non-login shells (a stock server's).
# If not running interactively, don't do anything.
case $- in
    *i*) ;;
      *) return;;
esac
HISTCONTROL=ignoreboth
"""
SERVER_PROFILE = """# ~/.profile: executed by the command interpreter for login shells (a stock server's).
if [ -n "$BASH_VERSION" ] && [ -f "$HOME/.bashrc" ]; then . "$HOME/.bashrc"; fi
"""
SYSCTL_README = """Kernel system variables configuration files

Files found in this directory will be read by sysctl --system, in the lexical order of
their names. See sysctl.d(5) for the file format.
"""
OVERLAY_TREES = ("/etc", "/usr", "/var", "/opt", "/root", "/home", "/srv")   # at least these
NOT_OVERLAID = {"proc", "sys", "dev", "run", "tmp", "lost+found"}
PATH_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin")
ALWAYS_SIMULATED = ("modprobe", "sysctl", "swapoff", "journalctl", "dmesg")
SIMULATED = ("containerd", "runc", "crictl", "kubeadm", "kubelet", "kubectl", "helm", "nvidia-smi",
             "nvidia-ctk", "mokutil", "lspci", "systemctl")
FIRST_HOST, LAST_HOST = 10, 239      # .10-.239 for hosts, .240-.254 never used (unused_address)
DEFAULT_ENDPOINT = "k8s-api.lab:6443"
EFI_GUID = "8be4df61-93ca-11d2-aa0d-e98c0f5ff6cb"
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)
_lab_counter = 0


class LabError(RuntimeError):
    """The lab could not be built or driven; the message says what is missing."""


def _pdeathsig() -> None:  # runs in the child between fork and exec
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _run(argv: list[str], *, input: str | None = None, timeout: float = 30, check: bool = True
         ) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(argv, input=input, text=True, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{' '.join(argv)} timed out after {timeout}s") from e
    if check and r.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- prerequisites, leftovers

def check_prerequisites() -> None:
    """Fail loudly (LabError) when this machine cannot run the lab."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the lab needs root (namespaces, mounts, veth)")
    for tool in ("ip", "nsenter", "ssh", "ssh-keygen", "sudo"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} not found in PATH (apt-get install iproute2 util-linux "
                            "openssh-client openssh-server sudo)")
    if not os.access("/usr/sbin/sshd", os.X_OK):
        problems.append("/usr/sbin/sshd missing (apt-get install openssh-server)")
    if not os.path.islink("/bin") or not os.path.islink("/sbin"):
        problems.append("the lab expects a merged-/usr system (/bin and /sbin symlinks into /usr)")
    if not PROBE_SCRIPT.is_file():
        problems.append(f"{PROBE_SCRIPT} missing")
    try:
        with open("/proc/filesystems") as f:
            fs = f.read()
        for needed in ("overlay", "tmpfs", "cgroup2"):
            if f"\t{needed}\n" not in fs:
                problems.append(f"kernel lacks the {needed} filesystem")
    except OSError as e:
        problems.append(f"cannot read /proc/filesystems: {e}")
    if problems:
        raise LabError("lab prerequisites missing:\n  - " + "\n  - ".join(problems))


def _owner_of_iface(name: str) -> int | None:
    m = re.match(rf"^{IFACE_PREFIX}([0-9a-f]{{6}})[0-9a-f]{{2}}(b|v\d+)$", name)
    return int(m.group(1), 16) if m else None


def cleanup_leftovers() -> list[str]:
    """Remove bridges, veths, holder processes and lab dirs of lab runs whose owner is gone."""
    removed = []
    me = os.getpid()
    # Holder/supervisor processes of dead owners.
    for pid_s in os.listdir("/proc"):
        if not pid_s.isdigit():
            continue
        try:
            with open(f"/proc/{pid_s}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        m = re.search(rf"{HOLDER_TAG}([0-9a-f]{{6}})", cmd) or \
            re.search(r"_supervisor\.py\x00(\d+)\x00", cmd)
        if not m:
            continue
        owner = int(m.group(1), 16) if HOLDER_TAG in cmd else int(m.group(1))
        if owner != me and not _pid_alive(owner):
            try:
                os.kill(int(pid_s), signal.SIGKILL)
                removed.append(f"process {pid_s}")
            except ProcessLookupError:
                pass
    # Links.
    out = _run(["ip", "-o", "link", "show"], check=False).stdout
    for line in out.splitlines():
        m = re.match(r"^\d+:\s+([^:@\s]+)", line)
        if not m:
            continue
        owner = _owner_of_iface(m.group(1))
        if owner is not None and owner != me and not _pid_alive(owner):
            _run(["ip", "link", "del", m.group(1)], check=False)
            removed.append(f"link {m.group(1)}")
    # Lab directories.
    for p in Path(tempfile.gettempdir()).glob(LAB_DIR_PREFIX + "*"):
        m = re.match(rf"^{LAB_DIR_PREFIX}(\d+)-", p.name)
        if m and int(m.group(1)) != me and not _pid_alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(f"dir {p}")
    return removed


# --------------------------------------------------------------------------- machine facts (cached)

class _Machine:
    """What this machine has, read once: the files lab hosts copy and the binaries they hide."""

    def __init__(self) -> None:
        self.passwd = Path("/etc/passwd").read_text().splitlines()
        self.group = Path("/etc/group").read_text().splitlines()
        self.shadow = Path("/etc/shadow").read_text().splitlines()
        self.filesystems = Path("/proc/filesystems").read_text()
        self.binary_paths: dict[str, list[str]] = {}
        for name in set(PROBED_BINARIES) | {"timedatectl", "uname", "ss"}:
            self.binary_paths[name] = [f"{d}/{name}" for d in PATH_DIRS if os.path.lexists(f"{d}/{name}")]
        # Every top-level directory gets a per-host overlay, so no write reaches this machine
        # (and "/" itself is read-only inside a host).
        self.trees = sorted(f"/{d}" for d in os.listdir("/")
                            if d not in NOT_OVERLAID and os.path.isdir(f"/{d}") and not os.path.islink(f"/{d}")
                            and not os.path.ismount(f"/{d}"))
        missing = [t for t in OVERLAY_TREES if t not in self.trees and os.path.isdir(t)]
        if missing:
            raise LabError(f"cannot give lab hosts their own {missing} (a separate mount?)")


_machine: _Machine | None = None


def _get_machine() -> _Machine:
    global _machine
    if _machine is None:
        _machine = _Machine()
    return _machine


# --------------------------------------------------------------------------- host record

@dataclasses.dataclass
class LabHost:
    fixture: HostFixture
    index: int
    address: str
    dir: Path
    peer: str                      # veth end in the root namespace
    mac: str
    product_uuid: str
    holder_pid: int | None = None
    sshd: subprocess.Popen | None = None
    host_key_pub: str = ""
    address6: str = ""             # the host's IPv6 (ULA) address on the lab's /64

    @property
    def name(self) -> str:
        return self.fixture.name

    @property
    def port(self) -> int:
        return self.fixture.ssh_port


# --------------------------------------------------------------------------- the lab

class Lab:
    """A set of simulated hosts. Start on construction; `close()` (or `with`) tears everything down."""

    def __init__(self, fixtures: Iterable[HostFixture] = (), *, endpoint: str = DEFAULT_ENDPOINT,
                 boot_timeout: float = 60.0) -> None:
        global _lab_counter
        check_prerequisites()
        cleanup_leftovers()
        self.endpoint = endpoint
        self.boot_timeout = boot_timeout
        self.hosts: dict[str, LabHost] = {}
        self._closed = False
        self._supervisor: subprocess.Popen | None = None
        self.timings: dict[str, float] = {}
        # 256 labs per process before a name comes back (a session-scoped factory keeps labs
        # open; 16 were not enough once a test worker made more than 16 labs)
        n = _lab_counter % 256
        _lab_counter += 1
        self.tag = f"{os.getpid():06x}{n:02x}"
        self.bridge = f"{IFACE_PREFIX}{self.tag}b"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{LAB_DIR_PREFIX}{os.getpid()}-{n}-"))
        os.chmod(self.dir, 0o755)
        atexit.register(self.close)
        try:
            self._setup_shared()
            self._setup_bridge()
            self._start_supervisor()
            if fixtures:
                self.add(list(fixtures))
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ public API

    @property
    def client_key(self) -> str:
        """Private key (ed25519) accepted for root and every fixture user with ssh_key=True."""
        return str(self.dir / "client_key")

    @property
    def known_hosts(self) -> str:
        return str(self.dir / "known_hosts")

    @property
    def shared_dir(self) -> Path:
        """Lab-wide state (the simulated cluster); hosts see it at /run/gpuk8s-lab/shared."""
        return self.dir / "shared"

    def advance_clock(self, seconds: float) -> float:
        """Move the simulators' clock on (`labsim.now`): bootstrap tokens and uploaded
        certificates expire as their TTL says, days later, without waiting. Returns the offset."""
        f = self.shared_dir / "clock_offset"
        try:
            offset = float(f.read_text())
        except (OSError, ValueError):
            offset = 0.0
        offset += seconds
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"{offset}\n")
        return offset

    def address(self, name: str) -> str:
        return self._host(name).address

    def address6(self, name: str) -> str:
        """The host's IPv6 address (every host has one, on the lab's own ULA /64)."""
        return self._host(name).address6

    def host(self, name: str) -> LabHost:
        return self._host(name)

    def names(self) -> list[str]:
        return list(self.hosts)

    def unused_address(self, i: int = 0) -> str:
        """An address on the lab subnet where no host exists (connects time out)."""
        return str(self.network.network_address + 240 + (i % 15))

    def add(self, fixtures: list[HostFixture]) -> list[LabHost]:
        """Bring up more hosts (in parallel)."""
        t0 = time.monotonic()
        names = [f.name for f in fixtures]
        dup = {n for n in names if names.count(n) > 1} | (set(names) & set(self.hosts))
        if dup:
            raise LabError(f"duplicate host names: {sorted(dup)}")
        start = len(self.hosts)
        if FIRST_HOST + start + len(fixtures) - 1 > LAST_HOST:
            raise LabError(f"a lab holds at most {LAST_HOST - FIRST_HOST + 1} hosts")
        new = []
        for i, fx in enumerate(fixtures, start):
            idx = FIRST_HOST + i
            digest = hashlib.sha256(f"{self.tag}/{fx.name}".encode()).digest()
            h = LabHost(
                fixture=fx, index=i, address=str(self.network.network_address + idx),
                address6=str(self.network6.network_address + idx),
                dir=self.dir / "hosts" / fx.name, peer=f"{IFACE_PREFIX}{self.tag}v{i}",
                mac=fx.mac or "52:54:00:%02x:%02x:%02x" % (self.octet, digest[0], idx),
                product_uuid=(fx.product_uuid or str(uuid.UUID(bytes=digest[:16], version=4))).lower(),
            )
            self.hosts[fx.name] = h
            new.append(h)
        try:
            keygens = [self._keygen(h.dir / "upper" / "etc" / "ssh" / "ssh_host_ed25519_key", h)
                       for h in new]
            for h in new:
                self._render(h)
            for p, h in keygens:
                if p.wait(timeout=30) != 0:
                    raise LabError(f"ssh-keygen for {h.name} failed")
                h.host_key_pub = (h.dir / "upper/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1]
            self.timings["render"] = time.monotonic() - t0
            self._spawn_holders(new)
            self.timings["holders"] = time.monotonic() - t0
            for h in new:
                if h.fixture.sshd:
                    self._start_sshd(h)
            self._wait_listening([h for h in new if h.fixture.sshd])
            self._write_known_hosts()
        except BaseException:
            for h in new:
                self.hosts.pop(h.name, None)
            raise
        self.timings["bring_up"] = time.monotonic() - t0
        return new

    def ssh_argv(self, name: str, user: str = "root", *, connect_timeout: float = 5,
                 extra: Iterable[str] = ()) -> list[str]:
        """An OpenSSH client command line for this host (strict host key checking, lab key only)."""
        h = self._host(name)
        return ["ssh", "-F", "/dev/null", "-i", self.client_key, "-p", str(h.port),
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", f"ConnectTimeout={connect_timeout:g}", "-o", "LogLevel=ERROR",
                *extra, f"{user}@{h.address}"]

    def ssh(self, name: str, command: str, *, user: str = "root", input: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command over real SSH; never raises on a non-zero exit."""
        return _run(self.ssh_argv(name, user) + ["--", command], input=input, timeout=timeout, check=False)

    def probe(self, name: str, *, user: str = "root", sudo: bool = False, endpoint_host: str | None = None,
              timeout: float = 60) -> str:
        """Run gpuk8s/facts/probe.sh over SSH like the tool does; returns its raw output."""
        from gpuk8s.facts.probe import probe_args
        from gpuk8s.shell import Cmd

        ep = endpoint_host if endpoint_host is not None else self.endpoint.rsplit(":", 1)[0]
        cmd = Cmd("sh", "-s", "--", *probe_args(ep)).render()
        if sudo:
            cmd = "sudo -n -- " + cmd
        r = self.ssh(name, cmd, user=user, input=PROBE_SCRIPT.read_text(), timeout=timeout)
        if r.returncode != 0:
            raise LabError(f"probe of {name} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def exec(self, name: str, command: str, *, input: str | None = None, timeout: float = 30
             ) -> subprocess.CompletedProcess:
        """Run `sh -c command` as root inside the host's namespaces (for assertions and setup)."""
        h = self._host(name)
        if h.holder_pid is None:
            raise LabError(f"{name} is not running")
        return _run(["nsenter", "-t", str(h.holder_pid), "-m", "-u", "-n", "--", "/bin/sh", "-c", command],
                    input=input, timeout=timeout, check=False)

    def write_file(self, name: str, path: str, content: str, mode: int = 0o644) -> None:
        """Write a file inside the host's view (through its mounts)."""
        q = _sh_quote(path)
        r = self.exec(name, f'mkdir -p "$(dirname {q})" && cat > {q} && chmod {mode:o} {q}', input=content)
        if r.returncode != 0:
            raise LabError(f"writing {path} on {name}: {r.stderr.strip()}")

    def read_file(self, name: str, path: str) -> str:
        r = self.exec(name, f"cat {_sh_quote(path)}")
        if r.returncode != 0:
            raise LabError(f"reading {path} on {name}: {r.stderr.strip()}")
        return r.stdout

    def set_service(self, name: str, unit: str, active: str, enabled: str) -> None:
        """Set a unit's state for the systemctl simulator (adds the unit when missing)."""
        if "." not in unit:
            unit += ".service"
        cmd = ("f=/etc/gpuk8s-lab/units; grep -v \"^$U \" $f > $f.new; echo \"$U $A $E\" >> $f.new; "
               "mv $f.new $f").replace("$U", unit).replace("$A", active).replace("$E", enabled)
        r = self.exec(name, cmd)
        if r.returncode != 0:
            raise LabError(r.stderr)

    def add_kernel_log(self, name: str, *messages: str) -> None:
        """Append kernel messages to the host's log since boot (what the `journalctl -k` and
        `dmesg` simulators print), as journalctl's short output shows them."""
        lines = "".join(f"Aug 20 10:00:{i % 60:02d} {name} kernel: {m}\n" for i, m in enumerate(messages))
        r = self.exec(name, "mkdir -p /etc/gpuk8s-lab/journal && cat >> /etc/gpuk8s-lab/journal/kernel",
                      input=lines)
        if r.returncode != 0:
            raise LabError(r.stderr)

    def add_xid(self, name: str, code: int = 79, gpu: int = 0,
                text: str = "GPU has fallen off the bus.") -> str:
        """Log an NVIDIA Xid for the host's GPU number `gpu` (its PCI address), in the driver's
        wording (NVIDIA/NVSentinel#155, leptonai/gpud#1209); returns the message."""
        devices = self._host(name).fixture.pci_devices()
        gpus = [d["address"] for d in devices if d.get("gpu") is not None]
        pci = gpus[gpu].rsplit(".", 1)[0] if gpus else "0000:00:00"
        msg = f"NVRM: Xid (PCI:{pci}): {code}, pid='<unknown>', name=<unknown>, {text}"
        self.add_kernel_log(name, msg)
        return msg

    def stop_sshd(self, name: str) -> None:
        """Stop sshd (the address answers with connection refused; open sessions are left)."""
        h = self._host(name)
        if h.sshd is not None:
            _signal(h.sshd.pid, signal.SIGCONT)
            h.sshd.terminate()
            try:
                h.sshd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                h.sshd.kill()
                h.sshd.wait(timeout=10)
            h.sshd = None

    def start_sshd(self, name: str) -> None:
        h = self._host(name)
        if h.sshd is None:
            self._start_sshd(h)
            self._wait_listening([h])

    def hang_sshd(self, name: str) -> None:
        """SIGSTOP sshd: TCP connects (the kernel's backlog), no banner ever comes -> client timeout."""
        h = self._host(name)
        if h.sshd is None:
            raise LabError(f"sshd on {name} is not running")
        _signal(h.sshd.pid, signal.SIGSTOP)

    def resume_sshd(self, name: str) -> None:
        h = self._host(name)
        if h.sshd is not None:
            _signal(h.sshd.pid, signal.SIGCONT)

    def freeze_host(self, name: str) -> None:
        """SIGSTOP every process of the host (sshd, its sessions, their commands) but the holder:
        its kernel still ACKs TCP, nothing answers (a frozen machine, a frozen SSH session)."""
        h = self._host(name)
        ns = {os.readlink(f"/proc/{h.holder_pid}/ns/mnt")}
        for pid in _pids_in_mnt_ns(ns):
            if pid != h.holder_pid:
                _signal(pid, signal.SIGSTOP)

    def thaw_host(self, name: str) -> None:
        h = self._host(name)
        ns = {os.readlink(f"/proc/{h.holder_pid}/ns/mnt")}
        for pid in _pids_in_mnt_ns(ns):
            _signal(pid, signal.SIGCONT)
        if h.sshd is not None:
            _signal(h.sshd.pid, signal.SIGCONT)

    def rotate_host_key(self, name: str) -> str:
        """New host key and sshd restart; lab.known_hosts keeps the old key ("changed key").

        Returns the new public key (base64). `refresh_known_hosts()` accepts it.
        """
        h = self._host(name)
        tmp = h.dir / "newkey"
        p, _ = self._keygen(tmp, h)
        if p.wait(timeout=30) != 0:
            raise LabError("ssh-keygen failed")
        priv, pub = tmp.read_text(), (h.dir / "newkey.pub").read_text()
        self.write_file(name, "/etc/ssh/ssh_host_ed25519_key", priv, 0o600)
        self.write_file(name, "/etc/ssh/ssh_host_ed25519_key.pub", pub, 0o644)
        tmp.unlink()
        (h.dir / "newkey.pub").unlink()
        was_running = h.sshd is not None
        self.stop_sshd(name)
        h.new_host_key_pub = pub.split()[1]  # type: ignore[attr-defined]
        if was_running:
            self.start_sshd(name)
        return pub.split()[1]

    def refresh_known_hosts(self) -> None:
        for h in self.hosts.values():
            new = getattr(h, "new_host_key_pub", None)
            if new:
                h.host_key_pub = new
        self._write_known_hosts()

    def write_inventory(self, path: str | os.PathLike, hosts: Iterable[str] | None = None,
                        host_overrides: dict[str, dict[str, Any]] | None = None, **overrides: Any) -> str:
        """Write a gpuk8s inventory for (some of) the lab's hosts; returns the path.

        overrides: top-level sections; dicts (cluster, ssh) are merged, other values replace.
        host_overrides: per host name, keys merged into that host's entry.
        """
        names = list(hosts) if hosts is not None else list(self.hosts)
        inv: dict[str, Any] = {
            "cluster": {"name": "lab", "kubernetes_version": "1.36",
                        "control_plane_endpoint": self.endpoint,
                        "pod_cidr": "10.244.0.0/16", "service_cidr": "10.96.0.0/12"},
            "ssh": {"user": "root", "port": 22, "identity_file": self.client_key,
                    "known_hosts": self.known_hosts, "accept_new_host_keys": False, "sudo": True,
                    "connect_timeout": 3, "command_timeout": 20},
            "hosts": [],
        }
        for name in names:
            h = self._host(name)
            entry: dict[str, Any] = {"name": name, "address": h.address, "roles": list(h.fixture.roles)}
            if h.port != 22:
                entry["ssh"] = {"port": h.port}
            if h.fixture.gpu != DEFAULT:
                entry["gpu"] = h.fixture.gpu
            elif h.fixture.gpus:
                entry["gpu"] = True
            for key, value in (host_overrides or {}).get(name, {}).items():
                if isinstance(value, dict) and isinstance(entry.get(key), dict):
                    entry[key] = {**entry[key], **value}
                else:
                    entry[key] = value
            inv["hosts"].append(entry)
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(inv.get(key), dict):
                inv[key] = {**inv[key], **value}
            else:
                inv[key] = value
        Path(path).write_text(yaml.safe_dump(inv, sort_keys=False, default_flow_style=None))
        return str(path)

    def close(self) -> None:
        """Tear everything down: processes, namespaces, bridge, lab directory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        errors = []
        mnt_ns = set()
        for h in self.hosts.values():
            if h.holder_pid:
                try:
                    mnt_ns.add(os.readlink(f"/proc/{h.holder_pid}/ns/mnt"))
                except OSError:
                    pass
        for h in self.hosts.values():
            if h.sshd is not None:
                _signal(h.sshd.pid, signal.SIGKILL)
        # Every process left in a host's mount namespace (sshd sessions, probes, children).
        if mnt_ns:
            for pid in _pids_in_mnt_ns(mnt_ns):
                _signal(pid, signal.SIGKILL)
        if self._supervisor is not None:
            try:
                self._supervisor.stdin.close()  # type: ignore[union-attr]
                self._supervisor.wait(timeout=15)
            except (subprocess.TimeoutExpired, OSError):
                self._supervisor.kill()
                self._supervisor.wait(timeout=10)
        for h in self.hosts.values():
            if h.sshd is not None:
                try:
                    h.sshd.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    errors.append(f"sshd of {h.name} did not exit")
        if mnt_ns:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _pids_in_mnt_ns(mnt_ns):
                time.sleep(0.05)
        # The kernel removes a namespace's veths asynchronously; wait, then remove any left.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._my_links(peers_only=True):
            time.sleep(0.05)
        for link in self._my_links(peers_only=True):
            _run(["ip", "link", "del", link], check=False)
        _run(["ip", "link", "del", self.bridge], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        if self._my_links():
            errors.append(f"links left: {self._my_links()}")
        if errors:
            raise LabError("lab teardown incomplete: " + "; ".join(errors))

    # ------------------------------------------------------------------ internals: shared setup

    def _host(self, name: str) -> LabHost:
        try:
            return self.hosts[name]
        except KeyError:
            raise LabError(f"no lab host {name!r}; hosts: {list(self.hosts)}") from None

    def _my_links(self, peers_only: bool = False) -> list[str]:
        out = _run(["ip", "-o", "link", "show"], check=False).stdout
        names = [m.group(1) for m in re.finditer(r"^\d+:\s+([^:@\s]+)", out, re.M)]
        prefix = f"{IFACE_PREFIX}{self.tag}" + ("v" if peers_only else "")
        return [n for n in names if n.startswith(prefix)]

    def _setup_shared(self) -> None:
        (self.dir / "hosts").mkdir()
        self.shared_dir.mkdir()
        shutil.copytree(SIM_DIR, self.dir / "sim", ignore=shutil.ignore_patterns("__pycache__"))
        # labsim.py needs fixture.py's file formats; the checkout may be invisible inside hosts
        # (a clone under /tmp: every host has its own /tmp), so it travels with the simulators.
        shutil.copy2(HERE / "fixture.py", self.dir / "sim" / "fixture.py")
        # ... with the real `containerd config default` outputs it serves per release.
        (self.dir / "sim" / "containerd-defaults").mkdir()
        for f in (HERE.parent / "unit" / "data").glob("containerd-default-*.toml"):
            shutil.copy2(f, self.dir / "sim" / "containerd-defaults" / f.name)
        # Compile once: every simulated call would otherwise recompile labsim.py (2,000 lines).
        compileall.compile_dir(str(self.dir / "sim"), quiet=1)
        for p in (self.dir / "sim").iterdir():
            p.chmod(0o755)
        # The heavier simulators (sim/labsim.py) run with this interpreter (it has PyYAML and
        # cryptography); hosts see it through the read-only root and the overlays.
        (self.dir / "python").write_text(sys.executable + "\n")
        # They start with `python -S` (no site: no .pth files to run, ~10 ms less per call) and
        # find PyYAML through this one directory instead.
        import yaml
        (self.dir / "pypath").write_text(str(Path(yaml.__file__).resolve().parent.parent) + "\n")
        (self.dir / "labsim.json").write_text(json.dumps({"python": sys.executable, "repo": str(REPO)}) + "\n")
        os.chmod(self.shared_dir, 0o777)
        key = self.dir / "client_key"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gpuk8s-lab-client", "-f", str(key)])
        key.chmod(0o600)
        self.client_pub = (self.dir / "client_key.pub").read_text().strip()
        (self.dir / "known_hosts").write_text("")

    def _setup_bridge(self) -> None:
        """Pick a free 198.18.N.0/24 (under a lock, so parallel labs differ) and create the bridge."""
        with open(LOCK_FILE, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            out = _run(["ip", "-o", "-4", "addr", "show"], check=False).stdout
            used = {ipaddress.ip_network(a, strict=False) for a in re.findall(r"inet (\S+)", out)}
            for cand in ipaddress.ip_network("198.18.0.0/15").subnets(new_prefix=24):
                if not any(cand.overlaps(u) for u in used):
                    break
            else:
                raise LabError("no free /24 left in 198.18.0.0/15")
            self.network = cand
            self.octet = int(str(cand.network_address).split(".")[2])
            self.gateway = str(cand.network_address + 1)
            # IPv6 beside it: a unique-local /64 per lab (same N), no duplicate address detection
            # so addresses work at once.
            self.network6 = ipaddress.ip_network(f"fd67:7075:6b38:{self.octet:x}::/64")
            _run(["ip", "-batch", "-"], input=(
                f"link add {self.bridge} type bridge\n"
                f"addr add {self.gateway}/24 dev {self.bridge}\n"
                f"addr add {self.network6.network_address + 1}/64 dev {self.bridge} nodad\n"
                f"link set {self.bridge} up\n"))

    def _start_supervisor(self) -> None:
        log = open(self.dir / "supervisor.log", "ab")
        self._supervisor = subprocess.Popen(
            [sys.executable, "-S", str(SUPERVISOR), str(os.getpid()), self.tag],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            preexec_fn=_pdeathsig, close_fds=True)
        log.close()

    def _ask_supervisor(self, cmd: dict, timeout: float) -> dict:
        sup = self._supervisor
        assert sup is not None and sup.stdin is not None and sup.stdout is not None
        sup.stdin.write(json.dumps(cmd) + "\n")
        sup.stdin.flush()
        import select
        ready, _, _ = select.select([sup.stdout], [], [], timeout)
        if not ready:
            raise LabError(f"lab supervisor did not answer within {timeout:.0f}s")
        line = sup.stdout.readline()
        if not line:
            log = (self.dir / "supervisor.log").read_text(errors="replace")[-3000:]
            raise LabError(f"lab supervisor died: {log}")
        return json.loads(line)

    # ------------------------------------------------------------------ internals: hosts

    def _keygen(self, path: Path, h: LabHost) -> tuple[subprocess.Popen, LabHost]:
        path.parent.mkdir(parents=True, exist_ok=True)
        p = subprocess.Popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{h.fixture.host_name}",
                              "-f", str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        return p, h

    def _spawn_holders(self, hosts: list[LabHost]) -> None:
        specs = []
        for h in hosts:
            fx = h.fixture
            sysctls = {"net/ipv4/ip_forward": "1" if fx.ip_forward else "0"}
            if "br_netfilter" in fx.modules:
                v = "1" if fx.bridge_nf_call else "0"
                sysctls["net/bridge/bridge-nf-call-iptables"] = v
                sysctls["net/bridge/bridge-nf-call-ip6tables"] = v
            specs.append({
                "name": h.name, "tag": self.tag, "hostname": fx.host_name,
                "labdir": str(self.dir), "hostdir": str(h.dir),
                "net": {"mac": h.mac, "peer": h.peer, "address": f"{h.address}/24",
                        "address6": f"{h.address6}/64", "gateway": self.gateway, "bridge": self.bridge},
                "sysctls": sysctls, "hide_bridge_sysctls": "br_netfilter" not in fx.modules,
                "cgroup": fx.cgroup_version,
                "proc_files": ["swaps", "meminfo", "filesystems", "cmdline"],
                # bound only where this kernel has the file (CONFIG_MODULES=n kernels have none)
                "proc_files_if_present": ["modules"],
                "overlays": _get_machine().trees,
                "listen": sorted(set(fx.listening_ports) - {fx.ssh_port}),
            })
        reply = self._ask_supervisor({"op": "spawn", "specs": specs, "timeout": self.boot_timeout},
                                     timeout=self.boot_timeout + 30)
        for h in hosts:
            h.holder_pid = reply["pids"].get(h.name)
        if not reply["ok"]:
            raise LabError("lab hosts failed to start:\n" + "\n".join(
                f"[{n}] {e}" for n, e in reply["errors"].items()))

    def _start_sshd(self, h: LabHost) -> None:
        log = open(h.dir / "sshd.log", "ab")
        h.sshd = subprocess.Popen(
            ["nsenter", "-t", str(h.holder_pid), "-m", "-u", "-n", "--",
             "/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/sshd_config"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=_pdeathsig,
            start_new_session=True, cwd="/")
        log.close()

    def _wait_listening(self, hosts: list[LabHost]) -> None:
        deadline = time.monotonic() + self.boot_timeout
        pending = list(hosts)
        while pending:
            still = []
            for h in pending:
                if h.sshd is not None and h.sshd.poll() is not None:
                    log = (h.dir / "sshd.log").read_text(errors="replace")[-2000:]
                    raise LabError(f"sshd on {h.name} exited ({h.sshd.returncode}): {log}")
                try:
                    with socket.create_connection((h.address, h.port), timeout=0.5) as s:
                        s.settimeout(5)
                        if not s.recv(64).startswith(b"SSH-"):
                            still.append(h)
                except OSError:
                    still.append(h)
            pending = still
            if pending:
                if time.monotonic() > deadline:
                    raise LabError(f"sshd not answering within {self.boot_timeout:.0f}s on "
                                   f"{[h.name for h in pending]}")
                time.sleep(0.02)

    def _write_known_hosts(self) -> None:
        lines = []
        for h in self.hosts.values():
            if not h.host_key_pub:
                continue
            for addr in (h.address, h.address6):
                host = addr if h.port == 22 else f"[{addr}]:{h.port}"
                lines.append(f"{host} ssh-ed25519 {h.host_key_pub}\n")
        Path(self.known_hosts).write_text("".join(lines))

    # ------------------------------------------------------------------ internals: rendering

    def _first_control_plane(self) -> LabHost | None:
        return next((h for h in self.hosts.values() if "control-plane" in h.fixture.roles), None)

    def _render(self, h: LabHost) -> None:
        _HostRenderer(self, h).render()


def _sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _pids_in_mnt_ns(namespaces: set[str]) -> list[int]:
    out = []
    me = os.getpid()
    for pid_s in os.listdir("/proc"):
        if not pid_s.isdigit() or int(pid_s) == me:
            continue
        try:
            if os.readlink(f"/proc/{pid_s}/ns/mnt") in namespaces:
                out.append(int(pid_s))
        except OSError:
            continue
    return out


# --------------------------------------------------------------------------- host file rendering

class _HostRenderer:
    """Writes one host's view into its lab directory: overlay upper dirs, /sys tree, /proc files."""

    def __init__(self, lab: Lab, h: LabHost) -> None:
        self.lab, self.h, self.fx = lab, h, h.fixture
        self.m = _get_machine()
        self.upper = h.dir / "upper"

    # -- primitives

    def _tree_of(self, path: str) -> str:
        for tree in self.m.trees:
            if path == tree or path.startswith(tree + "/"):
                return tree
        raise LabError(f"{path} is not under a per-host tree ({self.m.trees})")

    def _upper_path(self, path: str) -> Path:
        tree = self._tree_of(path)
        return self.upper / tree.strip("/").replace("/", "_") / path[len(tree):].lstrip("/")

    def _mkdirs(self, path: str) -> Path:
        """Create the upper dir for `path`, copying owner/mode from this machine's dir if it has one."""
        tree = self._tree_of(path)
        parts = path[len(tree):].strip("/").split("/") if path != tree else []
        cur_host, cur_up = tree, self._upper_path(tree)
        for part in [""] + parts:
            if part:
                cur_host, cur_up = f"{cur_host}/{part}", cur_up / part
            if not cur_up.exists():
                cur_up.mkdir(parents=True)
                try:
                    st = os.stat(cur_host)
                    os.chown(cur_up, st.st_uid, st.st_gid)
                    os.chmod(cur_up, stat.S_IMODE(st.st_mode))
                except FileNotFoundError:
                    pass
        return cur_up

    def write(self, path: str, content: str | bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        up = self._upper_path(path)
        self._mkdirs(path.rsplit("/", 1)[0] or "/")
        if up.is_symlink() or up.exists():
            up.unlink()
        if isinstance(content, str):
            content = content.encode()
        up.write_bytes(content)
        os.chown(up, uid, gid)
        os.chmod(up, mode)

    def mkdir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0, opaque: bool = False) -> None:
        up = self._upper_path(path)
        self._mkdirs(path.rsplit("/", 1)[0] or "/")
        if up.is_symlink() or (up.exists() and not up.is_dir()):
            up.unlink()
        up.mkdir(exist_ok=True)
        os.chown(up, uid, gid)
        os.chmod(up, mode)
        if opaque:
            os.setxattr(up, "trusted.overlay.opaque", b"y")

    def symlink(self, path: str, target: str) -> None:
        up = self._upper_path(path)
        self._mkdirs(path.rsplit("/", 1)[0])
        if up.is_symlink() or up.exists():
            up.unlink()
        os.symlink(target, up)

    def hide(self, path: str) -> None:
        """Whiteout: the path does not exist in the host's view."""
        if not os.path.lexists(path):
            return
        up = self._upper_path(path)
        self._mkdirs(path.rsplit("/", 1)[0])
        if up.is_symlink() or (up.exists() and not up.is_dir()):
            up.unlink()
        elif up.is_dir():
            shutil.rmtree(up)
        os.mknod(up, stat.S_IFCHR | 0o000, os.makedev(0, 0))

    # -- the host

    def render(self) -> None:
        h, fx = self.h, self.fx
        for tree in self.m.trees:
            self._mkdirs(tree)
            (h.dir / "work" / tree.strip("/").replace("/", "_")).mkdir(parents=True, exist_ok=True)
        self.identity()
        self.users()
        self.sshd_config()
        self.storage()
        self.binaries()
        self.state()
        self.config_files()
        self.sys_tree()
        self.proc_files()
        for path, content in fx.files.items():
            self.write(path, content)

    def identity(self) -> None:
        fx, lab = self.fx, self.lab
        self.write("/etc/os-release", fx.os_release)
        self.write("/usr/lib/os-release", fx.os_release)
        self.write("/etc/hostname", fx.host_name + "\n")
        lines = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{fx.host_name}",
                 "::1\tlocalhost ip6-localhost ip6-loopback", "ff02::1\tip6-allnodes",
                 "ff02::2\tip6-allrouters"]
        cp = lab._first_control_plane()
        ep_host = lab.endpoint.rsplit(":", 1)[0]
        if fx.resolve_endpoint and cp is not None and not _is_ip(ep_host):
            lines.append(f"{cp.address}\t{ep_host}")
        for addr, names in fx.hosts_entries:
            lines.append(f"{addr}\t{names}")
        self.write("/etc/hosts", "\n".join(lines) + "\n")
        # Unknown names fail fast: nothing answers DNS inside the host's netns.
        self.write("/etc/resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        self.write("/etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\ngshadow: files\n"
                                          "hosts: files dns\nnetworks: files\nprotocols: db files\n"
                                          "services: db files\nethers: db files\nrpc: db files\n")
        self.write("/etc/machine-id", hashlib.md5(self.h.product_uuid.encode()).hexdigest() + "\n", 0o444)

    def users(self) -> None:
        fx, m = self.fx, self.m
        names = {u.name for u in fx.users}
        passwd = [ln for ln in m.passwd if ln.split(":")[0] not in names - {"root"}]
        group = [ln for ln in m.group if ln.split(":")[0] not in names - {"root"}]
        shadow = [ln for ln in m.shadow if ln.split(":")[0] not in names]
        sudoers = []
        for u in fx.users:
            home = "/root" if u.uid == 0 else f"/home/{u.name}"
            if u.uid != 0:
                passwd.append(f"{u.name}:x:{u.uid}:{u.uid}:{u.name}:{home}:/bin/bash")
                group.append(f"{u.name}:x:{u.uid}:")
                self.mkdir(home, 0o750, u.uid, u.uid)
            shadow.append(f"{u.name}:{u.password_hash}:20000:0:99999:7:::")
            # A server's own shell start-up files: this machine's (pyenv init and the like) would
            # run in every SSH session (bash sources ~/.bashrc when started by sshd).
            self.write(f"{home}/.bashrc", SERVER_BASHRC, 0o644, u.uid, u.uid)
            self.write(f"{home}/.profile", SERVER_PROFILE, 0o644, u.uid, u.uid)
            if u.ssh_key:
                self.mkdir(f"{home}/.ssh", 0o700, u.uid, u.uid)
                self.write(f"{home}/.ssh/authorized_keys", self.lab.client_pub + "\n", 0o600, u.uid, u.uid)
            if u.sudo == "nopasswd":
                sudoers.append(f"{u.name} ALL=(ALL:ALL) NOPASSWD: ALL")
            elif u.sudo == "password":
                sudoers.append(f"{u.name} ALL=(ALL:ALL) ALL")
        self.write("/etc/passwd", "\n".join(passwd) + "\n")
        self.write("/etc/group", "\n".join(group) + "\n")
        self.write("/etc/shadow", "\n".join(shadow) + "\n", 0o640, 0, _gid("shadow"))
        self.write("/etc/sudoers", "Defaults\tenv_reset\nDefaults\tmail_badpass\n"
                   'Defaults\tsecure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"\n'
                   "root\tALL=(ALL:ALL) ALL\n%sudo\tALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n", 0o440)
        self.mkdir("/etc/sudoers.d", 0o750, opaque=True)
        self.write("/etc/sudoers.d/90-gpuk8s-lab", "\n".join(sudoers) + "\n", 0o440)

    def sshd_config(self) -> None:
        self.write("/etc/ssh/sshd_config", f"""# gpuk8s lab host {self.fx.name}
Port {self.fx.ssh_port}
ListenAddress 0.0.0.0
ListenAddress ::
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxStartups 200:30:400
MaxSessions 50
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
LogLevel INFO
""")

    def storage(self) -> None:
        fx = self.fx
        debian = fx.family == "debian"
        swapdev = "/swap.img" if debian else "/dev/mapper/rl-swap"
        fstab = ["# /etc/fstab: static file system information.",
                 "UUID=3c1f0b1e-5a7c-4f0e-9b1d-2f6a8e9c0d11 /          ext4 defaults,errors=remount-ro 0 1",
                 "UUID=7A3B-1C2D                            /boot/efi  vfat umask=0077 0 1"]
        if fx.fstab_swap:
            fstab.append(f"{swapdev}\tnone\tswap\tsw\t0\t0")
        self.write("/etc/fstab", "\n".join(fstab) + "\n")
        if fx.swap_unit:
            unit = "swap.img.swap" if debian else "dev-mapper-rl\\x2dswap.swap"
            if fx.swap_unit == "masked":
                self.symlink(f"/etc/systemd/system/{unit}", "/dev/null")
            else:
                self.write(f"/etc/systemd/system/{unit}",
                           f"[Unit]\nDescription=Swap\n\n[Swap]\nWhat={swapdev}\n\n[Install]\n"
                           "WantedBy=swap.target\n")
                self.symlink(f"/etc/systemd/system/swap.target.wants/{unit}", f"../{unit}")
        if fx.etcd_member:
            self.mkdir("/var/lib/etcd", 0o700)
            self.mkdir("/var/lib/etcd/member", 0o700)

    def binaries(self) -> None:
        fx, m = self.fx, self.m
        sim = f"{IN_HOST_LAB_DIR}/sim"
        provided: dict[str, str] = {}                 # name -> in-host path of the simulator
        if fx.containerd:
            provided["containerd"] = provided["runc"] = ""
        for tool, version in (("kubeadm", fx.kubeadm), ("kubelet", fx.kubelet), ("kubectl", fx.kubectl),
                              ("helm", fx.helm), ("crictl", fx.crictl_version), ("nvidia-ctk", fx.nvidia_ctk)):
            if version:
                provided[tool] = ""
        if fx.smi_installed:
            provided["nvidia-smi"] = ""
        if fx.mokutil:
            provided["mokutil"] = ""
        if fx.lspci:
            provided["lspci"] = ""
        provided["systemctl"] = provided["timedatectl"] = ""
        if "iptables" in fx.binaries:   # the iptables package's save/restore (sim/nodeops.py netfilter)
            provided.update(dict.fromkeys(("iptables-save", "iptables-restore", "ip6tables-save",
                                           "ip6tables-restore"), ""))
        for tool in ("nft", "ipvsadm"):  # only where the fixture installs them
            if tool in fx.binaries:
                provided[tool] = ""
        if fx.selinux:
            provided["setenforce"] = ""
        pkg = fx.pkg_manager
        pkgs = {"dnf": ["dnf", "yum"], "yum": ["yum"], "apt-get": ["apt-get"]}.get(pkg or "", [])
        keep_real = {b for b in fx.binaries if m.binary_paths.get(b)}
        for name in PROBED_BINARIES + ("timedatectl",):
            if name not in keep_real:
                for p in m.binary_paths.get(name, []):
                    self.hide(p)
        if "ip" not in keep_real:  # ss comes in the same package (iproute2)
            for p in m.binary_paths.get("ss", []):
                self.hide(p)
        for name in provided:
            self.symlink(f"/usr/local/bin/{name}", f"{sim}/{name}")
        for name in set(fx.binaries) - keep_real - set(provided) - set(ALWAYS_SIMULATED):
            self.symlink(f"/usr/sbin/{name}", f"{sim}/stub")
        # Tools that would change this machine (kernel modules, global sysctls, swap) or read its
        # journal are never the real ones: the simulator replaces every real copy.
        for name in ALWAYS_SIMULATED:
            if name in PROBED_BINARIES and name not in fx.binaries:
                continue                                  # hidden above: the fixture lacks it
            real = [p for p in m.binary_paths.get(name, []) if os.path.lexists(p)] or \
                [p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.lexists(p)]
            for p in real:
                self.symlink(p, f"{sim}/{name}")
            self.symlink(f"/usr/local/bin/{name}", f"{sim}/{name}")
        # curl and gpg: no network here; simulated when "installed", else absent.
        for name in ("curl", "gpg"):
            for p in (f"/usr/bin/{name}", f"/usr/local/bin/{name}"):
                if os.path.lexists(p):
                    self.hide(p)
            if fx.apt_tools:
                self.symlink(f"/usr/bin/{name}", f"{sim}/{name}")
        for name in pkgs:
            self.symlink(f"/usr/bin/{name}", f"{sim}/pkg")
        if pkg == "apt-get":
            self.symlink("/usr/bin/apt-mark", f"{sim}/apt-mark")
        # The package database: dpkg-query (Debian family) or rpm (RHEL family) answer from
        # packages.json; the other is absent, and this machine's own database never shows.
        db = "dpkg-query" if pkg == "apt-get" else "rpm" if pkg in ("dnf", "yum") else None
        for name in ("dpkg-query", "rpm"):
            if name == db:
                self.symlink(f"/usr/bin/{name}", f"{sim}/{name}")
            elif os.path.lexists(f"/usr/bin/{name}"):
                self.hide(f"/usr/bin/{name}")
        if fx.kernel_release:
            self.symlink("/usr/local/bin/uname", f"{sim}/uname")

    def state(self) -> None:
        fx, h = self.fx, self.h
        d = "/etc/gpuk8s-lab"
        self.mkdir(d, 0o755)
        state = dataclasses.asdict(fx)
        state.update(address=h.address, mac=h.mac, product_uuid=h.product_uuid, lab_tag=self.lab.tag)
        self.write(f"{d}/state.json", json.dumps(state, indent=2, default=str) + "\n")
        self.write(f"{d}/kernel", (fx.kernel_release or "") + "\n")
        self.write(f"{d}/arch", os.uname().machine + "\n")
        self.write(f"{d}/units", "".join(f"{u} {a} {e}\n" for u, (a, e) in sorted(_units(fx).items())))
        self.write(f"{d}/timedatectl",
                   "Timezone=Etc/UTC\nLocalRTC=no\nCanNTP=yes\n"
                   f"NTP={'yes' if fx.ntp else 'no'}\nNTPSynchronized={'yes' if fx.time_sync else 'no'}\n"
                   "TimeUSec=Thu 2026-08-20 10:00:00 UTC\nRTCTimeUSec=Thu 2026-08-20 10:00:00 UTC\n")
        sb = "none" if fx.secure_boot is None else ("enabled" if fx.secure_boot else "disabled")
        self.write(f"{d}/secure_boot", sb + "\n")
        self.mkdir(f"{d}/versions")
        for tool, version in (("kubeadm", fx.kubeadm), ("kubelet", fx.kubelet), ("kubectl", fx.kubectl),
                              ("helm", fx.helm), ("crictl", fx.crictl_version), ("nvidia-ctk", fx.nvidia_ctk),
                              ("runc", "1.3.0" if fx.containerd else None)):
            if version:
                self.write(f"{d}/versions/{tool}", version.lstrip("v") + "\n")
        if fx.containerd:
            self.mkdir(f"{d}/containerd")
            self.write(f"{d}/containerd/version_line",
                       containerd_version_line(fx.containerd, fx.containerd_build) + "\n")
            self.write(f"{d}/containerd/default.toml", containerd_default_config(fx.containerd.split("-")[0]))
        # What the package manager simulator considers installed (name -> package version).
        deb = fx.family == "debian"
        packages: dict[str, str] = {}
        if fx.containerd and fx.containerd_build == "distro":
            packages["containerd"] = fx.containerd
        elif fx.containerd:
            packages["containerd.io"] = f"{fx.containerd}-1" + ("" if deb else ".el9")
        for tool in ("kubeadm", "kubelet", "kubectl"):
            version = getattr(fx, tool)
            if version:
                packages[tool] = f"{version.lstrip('v')}-" + ("1.1" if deb else "150500.1.1")
        if fx.apt_tools:
            packages.update({"curl": "1.0", "gpg": "1.0", "ca-certificates": "1.0"})
        self.write(f"{d}/packages.json", json.dumps(packages, indent=1) + "\n")
        self.write(f"{d}/invocations.log", "", 0o666)
        self.mkdir(f"{d}/nvidia")
        self.write(f"{d}/nvidia/driver_version", (fx.nvidia_driver or "") + "\n")
        if fx.nvml_mismatch:
            self.write(f"{d}/nvidia/nvml_mismatch", fx.nvml_mismatch + "\n")
        gpus, lspci = [], []
        for dev in fx.pci_devices():
            lspci.append(dev["lspci"])
            if dev.get("gpu") is not None:
                spec = dev["gpu"].spec
                dom, rest = dev["address"].split(":", 1)
                bus = f"{int(dom, 16):08X}:{rest.upper()}"
                gpu_uuid = "GPU-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"{h.product_uuid}/{dev['address']}"))
                serial = str(int(hashlib.sha256(gpu_uuid.encode()).hexdigest(), 16))[:13]
                gpu = dev["gpu"]
                gpus.append(f"{dev['index']}|{bus}|{spec.smi_name}|{spec.memory_mib}|{gpu.mig_current}|{gpu_uuid}"
                            f"|0x{spec.device_id[2:].upper()}10DE|{spec.compute_cap}|{serial}"
                            f"|{gpu.mig_pending_mode}")
        self.write(f"{d}/nvidia/gpus", "".join(g + "\n" for g in gpus))
        base = ["0000:00:00.0 Host bridge [0600]: Intel Corporation Sky Lake-E DMI3 Registers [8086:2020] (rev 07)",
                "0000:00:03.0 Ethernet controller [0200]: Intel Corporation Ethernet Controller E810-C for QSFP [8086:1592] (rev 02)"]
        self.write(f"{d}/lspci", "".join(ln + "\n" for ln in base + lspci))

    def config_files(self) -> None:
        fx = self.fx
        # containerd
        cfg = fx.effective_containerd_config
        if cfg is not None:
            self.mkdir("/etc/containerd", opaque=True)
            self.write("/etc/containerd/config.toml", cfg)
        else:
            self.hide("/etc/containerd")
        # kubernetes state
        if fx.kubernetes_files:
            self.mkdir("/etc/kubernetes", opaque=True)
            for rel, content in fx.kubernetes_files.items():
                mode = 0o600 if rel.endswith((".conf", ".key")) else 0o644
                self.write(f"/etc/kubernetes/{rel}", content, mode)
        else:
            self.hide("/etc/kubernetes")
        if fx.cni:
            self.mkdir("/etc/cni", opaque=True)
            for fname, content in fx.cni.items():
                self.write(f"/etc/cni/net.d/{fname}", content)
        else:
            self.hide("/etc/cni")
        # sysctl configuration: a stock server's (Debian/Ubuntu procps and systemd files), never
        # this machine's, so `sysctl --system` reads the same files on every runner.
        self.mkdir("/etc/sysctl.d", opaque=True)
        self.write("/etc/sysctl.d/README.sysctl", SYSCTL_README)
        self.symlink("/etc/sysctl.d/99-sysctl.conf", "../sysctl.conf")
        self.write("/etc/sysctl.conf", "#\n# /etc/sysctl.conf - Configuration file for setting system variables\n"
                   "# See /etc/sysctl.d/ for additional system variables.\n# See sysctl.conf (5) for information.\n#\n")
        self.mkdir("/usr/lib/sysctl.d", opaque=True)
        self.write("/usr/lib/sysctl.d/50-pid-max.conf", "# This file is part of systemd.\n"
                   "# Bump the numeric PID range to make PID collisions less likely.\nkernel.pid_max = 4194304\n")
        self.write("/usr/lib/sysctl.d/99-protect-links.conf", "# Protected links\nfs.protected_fifos = 1\n"
                   "fs.protected_hardlinks = 1\nfs.protected_regular = 2\nfs.protected_symlinks = 1\n")
        self.hide("/usr/local/lib/sysctl.d")
        # nouveau blacklist
        if fx.nouveau_blacklisted:
            self.write("/etc/modprobe.d/blacklist-nouveau.conf", "blacklist nouveau\noptions nouveau modeset=0\n")
        # unattended upgrades (apt) / firewall config
        if fx.family == "debian":
            self.mkdir("/etc/apt/apt.conf.d", opaque=True)
            self.write("/etc/apt/apt.conf.d/01autoremove", 'APT\n{\n  NeverAutoRemove\n  {\n'
                       '\t"^firmware-linux.*";\n\t"^linux-firmware$";\n  };\n};\n')
            if fx.unattended_upgrades or fx.os_values.get("ID") == "ubuntu":
                v = "1" if fx.unattended_upgrades else "0"
                self.write("/etc/apt/apt.conf.d/20auto-upgrades",
                           f'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "{v}";\n')
            else:
                self.hide("/etc/apt/apt.conf.d/20auto-upgrades")
        else:
            self.hide("/etc/apt")
        ufw = fx.ufw_state
        if ufw is None:
            self.hide("/etc/ufw")
        else:
            self.write("/etc/ufw/ufw.conf", "# /etc/ufw/ufw.conf\n#\n\n# Set to yes to start on boot. If setting "
                       "this remotely, be sure to add a rule\n# to allow your remote connection before starting "
                       f"ufw. Eg: 'ufw allow 22/tcp'\nENABLED={'yes' if ufw else 'no'}\n\n"
                       "# Please use the 'ufw' command to set the loglevel. Eg: 'ufw logging medium'.\n"
                       "# See 'man ufw' for details.\nLOGLEVEL=low\n")

    def sys_tree(self) -> None:
        fx, h = self.fx, self.h
        root = h.dir / "sys"

        def w(rel: str, content: str | bytes, mode: int = 0o444) -> None:
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content.encode() if isinstance(content, str) else content)
            p.chmod(mode)

        def ln(rel: str, target: str) -> None:
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, p)

        cpus = max(1, fx.cpus)
        rng = "0" if cpus == 1 else f"0-{cpus - 1}"
        for f in ("online", "possible", "present"):
            w(f"devices/system/cpu/{f}", rng + "\n")
        for i in range(min(cpus, 256)):
            (root / f"devices/system/cpu/cpu{i}").mkdir(parents=True, exist_ok=True)
        w("devices/virtual/dmi/id/product_uuid", h.product_uuid + "\n", 0o400)
        w("devices/virtual/dmi/id/sys_vendor", "Supermicro\n")
        w("devices/virtual/dmi/id/product_name", "SYS-421GE-TNRT\n")
        ln("class/dmi", "../devices/virtual/dmi")
        devices = [{"address": "0000:00:00.0", "vendor": "0x8086", "device": "0x2020", "class": "0x060000",
                    "driver": None},
                   {"address": "0000:00:03.0", "vendor": "0x8086", "device": "0x1592", "class": "0x020000",
                    "driver": "ice"}] + fx.pci_devices()
        for dev in devices:
            rel = f"devices/pci0000:00/{dev['address']}"
            w(f"{rel}/vendor", dev["vendor"] + "\n")
            w(f"{rel}/device", dev["device"] + "\n")
            w(f"{rel}/class", dev["class"] + "\n")
            ln(f"bus/pci/devices/{dev['address']}", f"../../../{rel}")
            if dev["driver"]:
                (root / "bus/pci/drivers" / dev["driver"]).mkdir(parents=True, exist_ok=True)
                ln(f"{rel}/driver", f"../../../bus/pci/drivers/{dev['driver']}")
                # and the driver's side of the binding, as in real sysfs
                ln(f"bus/pci/drivers/{dev['driver']}/{dev['address']}", f"../../../../{rel}")
        (root / "module").mkdir(parents=True, exist_ok=True)
        for mod in _loaded_modules(fx):
            (root / "module" / mod).mkdir(parents=True, exist_ok=True)
            w(f"module/{mod}/initstate", "live\n")
        if fx.nvidia_driver:
            w("module/nvidia/version", fx.nvidia_driver + "\n")
        if fx.secure_boot is not None:
            w(f"firmware/efi/efivars/SecureBoot-{EFI_GUID}", bytes([6, 0, 0, 0, 1 if fx.secure_boot else 0]), 0o644)
            w("firmware/efi/fw_platform_size", "64\n")
        (root / "firmware/acpi").mkdir(parents=True, exist_ok=True)
        (root / "fs/cgroup").mkdir(parents=True, exist_ok=True)
        if fx.selinux:
            w("fs/selinux/enforce", ("1" if fx.selinux == "enforcing" else "0"), 0o644)
        (root / "kernel").mkdir(parents=True, exist_ok=True)
        # /proc/driver replacement
        pd = h.dir / "proc_driver"
        pd.mkdir(exist_ok=True)
        if fx.nvidia_driver:
            (pd / "nvidia").mkdir()
            # The open module (cpnr/computing#109) and the proprietary one
            # (zzzhouuu/truenas-nvidia-drivers#19: "NVIDIA UNIX x86_64 Kernel Module  580.173.02  <date>")
            first = (f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {fx.nvidia_driver}  Release Build  "
                     "(dvs-builder@U22-I3-AE18-23-3)  Mon Aug 11 10:00:00 UTC 2026\n"
                     if fx.nvidia_kernel_module == "open" else
                     f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {fx.nvidia_driver}  "
                     "Mon Aug 11 10:00:00 UTC 2026\n")
            (pd / "nvidia/version").write_text(
                first + "GCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04)\n")

    def proc_files(self) -> None:
        fx, h = self.fx, self.h
        d = h.dir / "proc"
        d.mkdir(exist_ok=True)
        swap_kb = 8388604 if fx.swap else 0
        swapdev = "/swap.img" if fx.family == "debian" else "/dev/dm-1"
        kind = "file" if fx.family == "debian" else "partition"
        swaps = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
        if fx.swap:
            swaps += f"{swapdev:<40}{kind}\t\t{swap_kb}\t\t0\t\t-2\n"
        (d / "swaps").write_text(swaps)
        total = fx.memory_mib * 1024
        free = total * 9 // 10
        meminfo = [("MemTotal", total), ("MemFree", free), ("MemAvailable", free), ("Buffers", 2048),
                   ("Cached", total // 20), ("SwapCached", 0), ("Active", total // 40), ("Inactive", total // 40),
                   ("Shmem", 1024), ("SwapTotal", swap_kb), ("SwapFree", swap_kb), ("Dirty", 0),
                   ("HugePages_Total", None), ("Hugepagesize", 2048)]
        lines = []
        for k, v in meminfo:
            if v is None:
                lines.append(f"{k + ':':<16}{0:>8}")
            else:
                lines.append(f"{k + ':':<16}{v:>8} kB")
        (d / "meminfo").write_text("\n".join(lines) + "\n")
        fs_lines = [ln for ln in self.m.filesystems.splitlines()
                    if "overlay" in fx.modules or ln.split()[-1] != "overlay"]
        (d / "filesystems").write_text("\n".join(fs_lines) + "\n")
        kernel = fx.kernel_release or os.uname().release
        cmdline = fx.cmdline
        if cmdline is None:
            if fx.family == "debian":
                cmdline = f"BOOT_IMAGE=/vmlinuz-{kernel} root=/dev/mapper/ubuntu--vg-ubuntu--lv ro quiet splash"
            else:
                cmdline = (f"BOOT_IMAGE=(hd0,gpt2)/vmlinuz-{kernel} root=/dev/mapper/rl-root ro "
                           "crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M rd.lvm.lv=rl/root rd.lvm.lv=rl/swap")
        (d / "cmdline").write_text(cmdline + "\n")
        # /proc/modules from the fixture, never this machine's (whose br_netfilter or nouveau would
        # show on every host). Format of kernel/module/procfs.c m_show() (Linux v6.8): name, size,
        # use count, users ("-" when none), state, address (0x0... with kptr_restrict), taints.
        (d / "modules").write_text("".join(_proc_modules_line(m) for m in _loaded_modules(fx)))


def _loaded_modules(fx: HostFixture) -> list[str]:
    """The kernel modules loaded on the host, as the fixture says (/sys/module, /proc/modules)."""
    modules = set(fx.modules)
    if fx.nvidia_driver:
        modules |= {"nvidia", "nvidia_uvm", "nvidia_modeset", "nvidia_drm"}
    if fx.nouveau:
        modules.add("nouveau")
    return sorted(modules)


# Sizes and users as a stock Ubuntu 24.04 kernel shows them; nvidia's proprietary/out-of-tree
# modules carry the (POE) taint flags (kernel/module/main.c module_flags()).
_MODULE_LINES = {
    "overlay": "212992 0 -", "br_netfilter": "32768 0 -", "nf_conntrack": "196608 0 -",
    "ip_vs": "204800 0 -", "nouveau": "3096576 0 -",
    "nvidia": "104071168 2 nvidia_uvm,nvidia_modeset,", "nvidia_uvm": "2076672 0 -",
    "nvidia_modeset": "1638400 1 nvidia_drm,", "nvidia_drm": "135168 0 -",
}


def _proc_modules_line(name: str) -> str:
    rest = _MODULE_LINES.get(name, "65536 0 -")
    taint = " (POE)" if name.startswith("nvidia") else ""
    return f"{name} {rest} Live 0x0000000000000000{taint}\n"


def _units(fx: HostFixture) -> dict[str, tuple[str, str]]:
    """The systemd units the systemctl simulator knows, as (active, enabled)."""
    u: dict[str, tuple[str, str]] = {}
    debian = fx.family == "debian"
    u["ssh.service" if debian else "sshd.service"] = ("active", "enabled")
    if fx.containerd:
        u["containerd.service"] = ("active" if fx.containerd_active else "inactive", "enabled")
    if fx.kubelet:
        configured = "kubelet.conf" in fx.kubernetes_files
        u["kubelet.service"] = ("active" if configured else "activating", "enabled")
    if fx.firewalld:
        u["firewalld.service"] = ("active", "enabled")
    elif fx.firewalld is None and not debian:
        u["firewalld.service"] = ("inactive", "disabled")
    elif fx.firewalld is False and not debian:
        u["firewalld.service"] = ("inactive", "disabled")
    if fx.ufw_state is not None:
        u["ufw.service"] = ("active", "enabled")
    state = ("active", "enabled") if fx.ntp else ("inactive", "disabled")
    u["systemd-timesyncd.service" if debian else "chronyd.service"] = state
    if fx.docker:
        u["docker.service"] = ("active", "enabled")
    if debian:
        if fx.unattended_upgrades or fx.os_values.get("ID") == "ubuntu":
            u["unattended-upgrades.service"] = ("active", "enabled")
    elif fx.unattended_upgrades:
        u["dnf-automatic.timer"] = ("active", "enabled")
    for unit, st in fx.services.items():
        key = unit if "." in unit else unit + ".service"
        if st is None:
            u.pop(key, None)
        else:
            u[key] = st
    return u


def _gid(group: str) -> int:
    import grp
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return 0


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s.strip("[]"))
        return True
    except ValueError:
        return False
