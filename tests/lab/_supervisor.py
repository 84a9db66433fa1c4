"""Lab supervisor: forks one namespace holder per simulated host (test infrastructure only).

Run by tests/lab/lab.py as `python3 _supervisor.py <owner pid> <tag>`; speaks JSON lines on
stdin/stdout. One Python process forks every host, so bring-up pays Python's start-up once.

Each child: unshare(mount, UTS, net) -> hostname -> veth `eth0` (peer moved to the root netns)
-> sysctls -> tmpfs /sys from a prepared tree, cgroup2 (or v1-style tmpfs) -> /proc file binds ->
overlays over /etc /usr /var ... whose upper dirs hold the host's files -> tmpfs /run and /tmp ->
TCP listeners -> exec `sleep infinity` (the holder: keeps the namespaces and listeners alive).
Children die with the supervisor (PDEATHSIG), and the supervisor dies with its owner.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
MNT_DETACH = 2

libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(src: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    _check(libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {fstype or 'bind'} {src} on {target}")


def pdeathsig(sig: int = signal.SIGKILL) -> None:
    libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def setup_host(spec: dict, root_pid: int) -> list[socket.socket]:
    """Runs in the forked child: build the host's namespaces; return its listening sockets."""
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWNET), "unshare")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    socket.sethostname(spec["hostname"])

    net = spec["net"]
    batch = (f"link add eth0 address {net['mac']} type veth peer name {net['peer']} netns {root_pid}\n"
             "link set lo up\n"
             f"addr add {net['address']} dev eth0\n"
             f"addr add {net['address6']} dev eth0 nodad\n"
             "link set eth0 up\n"
             f"route add default via {net['gateway']}\n")
    r = subprocess.run(["ip", "-batch", "-"], input=batch, text=True, capture_output=True, timeout=20)
    if r.returncode != 0:
        raise RuntimeError(f"ip -batch in host netns failed: {r.stderr.strip()}")

    for key, value in spec["sysctls"].items():
        path = "/proc/sys/" + key
        if os.path.exists(path):
            with open(path, "w") as f:
                f.write(value)
    if spec["hide_bridge_sysctls"] and os.path.isdir("/proc/sys/net/bridge"):
        mount("none", "/proc/sys/net/bridge", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=555")

    hostdir = spec["hostdir"]
    # A real sysfs mounted from inside the new netns lists this host's interfaces only; its
    # net directories are kept (class/net/eth0 -> ../../devices/virtual/net/eth0), as on a server.
    real_sys = os.path.join(hostdir, "sysfs-net")
    os.makedirs(real_sys, exist_ok=True)
    mount("sysfs", real_sys, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # /sys: a tmpfs filled from the prepared tree, then the cgroup hierarchy.
    mount("sysfs", "/sys", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")
    shutil.copytree(os.path.join(hostdir, "sys"), "/sys", symlinks=True, dirs_exist_ok=True)
    os.chmod("/sys", 0o755)
    for rel in ("class/net", "devices/virtual/net"):
        os.makedirs("/sys/" + rel, exist_ok=True)
        mount(os.path.join(real_sys, rel), "/sys/" + rel, None, MS_BIND)
    _check(libc.umount2(real_sys.encode(), MNT_DETACH), f"umount {real_sys}")
    os.makedirs("/sys/fs/cgroup", exist_ok=True)
    if spec["cgroup"] == 2:
        mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    else:
        mount("tmpfs", "/sys/fs/cgroup", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")
        for ctl in ("blkio", "cpu,cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory",
                    "net_cls,net_prio", "perf_event", "pids", "systemd"):
            os.makedirs("/sys/fs/cgroup/" + ctl, exist_ok=True)

    # /proc: per-host files bound over the real ones; /proc/driver replaced by a prepared tree.
    for name in spec["proc_files"]:
        mount(os.path.join(hostdir, "proc", name), "/proc/" + name, None, MS_BIND)
    for name in spec.get("proc_files_if_present", []):   # a new entry cannot be made in procfs
        if os.path.exists("/proc/" + name):
            mount(os.path.join(hostdir, "proc", name), "/proc/" + name, None, MS_BIND)
    if os.path.isdir("/proc/driver"):
        mount("none", "/proc/driver", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=555")
        shutil.copytree(os.path.join(hostdir, "proc_driver"), "/proc/driver", dirs_exist_ok=True)

    # Writable per-host views of every top-level tree; upper dirs hold the host's files. The lab
    # dir gets its own mount first so the upper dirs stay writable once "/" is read-only.
    labdir = spec["labdir"]
    mount(labdir, labdir, None, MS_BIND)
    for tree in spec["overlays"]:
        key = tree.strip("/").replace("/", "_")
        upper = os.path.join(hostdir, "upper", key)
        work = os.path.join(hostdir, "work", key)
        mount("overlay", tree, "overlay", 0, f"lowerdir={tree},upperdir={upper},workdir={work}")

    mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    # /run/systemd/system: systemd's mark of a booted system (sd_booted(3)); testinfra's Service
    # picks its systemd implementation from it (testinfra/modules/service.py, 10.2.2).
    for d in ("/run/sshd", "/run/lock", "/run/user", "/run/gpuk8s-lab", "/run/systemd/system"):
        os.makedirs(d, mode=0o755, exist_ok=True)
    mount(labdir, "/run/gpuk8s-lab", None, MS_BIND | MS_REC)
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    if os.path.isdir("/dev/shm"):
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")

    socks = []
    for port in spec["listen"]:
        try:  # like most servers: one dual-stack socket (shows in /proc/net/tcp6)
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", port))
        except OSError:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
        s.listen(64)
        s.set_inheritable(True)
        socks.append(s)
    return socks


def fork_host(spec: dict, root_pid: int) -> tuple[int, int]:
    """Fork a holder for one host; returns (pid, read end of its status pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        return pid, r
    # child
    try:
        os.close(r)
        pdeathsig()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        log = os.open(os.path.join(spec["hostdir"], "holder.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 2)
        socks = setup_host(spec, root_pid)
        os.write(w, b"ok\n")
        os.close(w)
        os.chdir("/")
        os.execv("/bin/sleep", [f"gpuk8s-lab-holder:{spec['tag']}:{spec['name']}", "infinity"])
    except BaseException:
        try:
            os.write(w, ("error: " + traceback.format_exc()).encode()[-3000:])
        except OSError:
            pass
    os._exit(1)


def spawn(specs: list[dict], holders: dict[str, int], timeout: float = 60.0) -> dict:
    root_pid = os.getpid()
    pending = {}
    for spec in specs:
        pid, r = fork_host(spec, root_pid)
        holders[spec["name"]] = pid
        pending[r] = (spec, pid, b"")
    errors, deadline = {}, time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select(list(pending), [], [], max(0.0, deadline - time.monotonic()))
        for r in ready:
            spec, pid, buf = pending[r]
            chunk = os.read(r, 4096)
            if chunk:
                pending[r] = (spec, pid, buf + chunk)
                continue
            os.close(r)
            del pending[r]
            if buf.strip() != b"ok":
                errors[spec["name"]] = buf.decode(errors="replace") or "holder exited without a status"
    for r, (spec, _pid, _buf) in pending.items():
        os.close(r)
        errors[spec["name"]] = f"holder not ready after {timeout:.0f}s"
    ok_specs = [s for s in specs if s["name"] not in errors]
    if ok_specs:
        batch = "".join(f"link set dev {s['net']['peer']} master {s['net']['bridge']}\n"
                        f"link set dev {s['net']['peer']} up\n" for s in ok_specs)
        res = subprocess.run(["ip", "-batch", "-"], input=batch, text=True, capture_output=True, timeout=30)
        if res.returncode != 0:
            errors["<bridge>"] = res.stderr.strip()
    return {"ok": not errors, "pids": {s["name"]: holders[s["name"]] for s in specs}, "errors": errors}


def kill(names: list[str], holders: dict[str, int]) -> None:
    for name in names:
        pid = holders.pop(name, None)
        if pid is None:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def main() -> int:
    owner = int(sys.argv[1])
    pdeathsig()
    if os.getppid() != owner:      # owner already gone
        return 1
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    holders: dict[str, int] = {}
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["op"] == "spawn":
                reply = spawn(cmd["specs"], holders, cmd.get("timeout", 60.0))
            elif cmd["op"] == "kill":
                kill(cmd["names"], holders)
                reply = {"ok": True}
            else:
                reply = {"ok": False, "errors": {"<op>": f"unknown op {cmd['op']}"}}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        kill(list(holders), holders)
    return 0


if __name__ == "__main__":
    sys.exit(main())
