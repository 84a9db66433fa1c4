"""Reliability of `gpuk8s up` against real sshd hosts (issue 12, docs/reliability.md).

Interrupts: one lab of bare hosts is taken to a cluster by a sequence of runs, each interrupted
with SIGINT at a later point: at every phase boundary and in the middle of host preparation,
`kubeadm init`, Calico and a join (slow commands are made slow by a wrapper around the simulated
kubeadm, so the signal lands while they run). Every run must exit 130 within
INTERRUPT_LIMIT_S of the signal, log no `change:` line after the interrupt, leave no bootstrap
token (`kubeadm token list`) and no secret file on any host; a last run converges.

Frozen hosts: a host whose every process is stopped (`Lab.freeze_host`) in the middle of a
command is reported as lost, within the command's timeout, and SIGINT is still honoured.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path


from tests.lab.fixture import HostFixture

ADMIN = "/etc/kubernetes/admin.conf"
# The issue asks for "about 2 s"; gpuk8s bounds itself to about 1.6 s (phases/base.py:
# INTERRUPT_GRACE + PHASE_GRACE + CLEANUP_BOUND_INTERRUPTED); the rest is the margin a loaded
# 2-core CI machine needs for Python's own exit and the test's polling (documented in
# docs/reliability.md). Alone the runs end in well under 2 s; with the rest of the suite running
# on the other worker, 4.6 s was seen once (the cleanups' kubeadm call and the interpreter's exit
# wait for CPU), hence the margin.
INTERRUPT_LIMIT_S = 2.0 + 4.0
SLOW_FLAG = "/run/gpuk8s-test-slow"   # on a host: its kubeadm init/join sleep first while this exists


def start_up(inv: str, tmp: Path, log: Path, *args: str) -> subprocess.Popen:
    # SIGINT back to its default: a test runner may have started us with SIGINT ignored, and a
    # process that inherits SIG_IGN for SIGINT keeps it (the POSIX convention gpuk8s follows).
    return subprocess.Popen(
        [sys.executable, "-m", "gpuk8s", "up", "-i", inv, "--kubeconfig", str(tmp / "kubeconfig"),
         "--wait-timeout", "60", "--log-file", str(log), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_log(p: subprocess.Popen, log: Path, needle: str, timeout: float = 120) -> bool:
    """Poll the run log until `needle` appears (True) or the run ends (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if log.exists() and needle in log.read_text(errors="replace"):
            return True
        if p.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError(f"{needle!r} not logged within {timeout}s")


def interrupt(p: subprocess.Popen, log: Path) -> tuple[float, str, str]:
    """SIGINT, then the seconds until exit, stdout, stderr."""
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    return time.monotonic() - t0, out, err


def tokens(lab, cp: str = "cp-1") -> list[str]:
    if lab.exec(cp, f"test -e {ADMIN}").returncode != 0:
        return []
    r = lab.exec(cp, "kubeadm token list")
    assert r.returncode == 0, r.stderr
    return [ln.split()[0] for ln in r.stdout.splitlines()[1:] if ln.strip()]


def secret_files(lab) -> dict[str, str]:
    out = {}
    for n in lab.names():
        r = lab.exec(n, "ls /etc/gpuk8s/ 2>/dev/null | grep kubeadm || true")
        if r.stdout.strip():
            out[n] = r.stdout.strip()
    return out


def slow_kubeadm(lab, name: str, seconds: int = 30) -> None:
    """Wrap the installed (simulated) kubeadm: `init`/`join` first sleep while SLOW_FLAG exists;
    kubectl sleeps 3 s while SLOW_FLAG-kubectl exists."""
    for tool, case in (("kubeadm", f'case "$1" in init|join) [ -e {SLOW_FLAG} ] && '
                                   f'{{ touch {SLOW_FLAG}-started; sleep {seconds}; }};; esac'),
                       ("kubectl", f'[ -e {SLOW_FLAG}-kubectl ] && sleep 3')):
        real = lab.exec(name, f"readlink -f /usr/bin/{tool}").stdout.strip()
        assert real, f"{tool} is not installed yet"
        if real.endswith(f"{tool}-slow"):
            continue
        lab.write_file(name, f"/usr/local/sbin/{tool}-slow", f'#!/bin/sh\n{case}\nexec {real} "$@"\n', 0o755)
        lab.exec(name, f"ln -sf /usr/local/sbin/{tool}-slow /usr/bin/{tool}")


def wait_for_file(lab, name: str, path: str, limit: float = 20.0) -> bool:
    """Wait (bounded) until a file exists on a lab host."""
    deadline = time.monotonic() + limit
    for _ in range(400):
        if lab.exec(name, f"test -e {path}").returncode == 0:
            lab.exec(name, f"rm -f {path}")
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return False


def nodes(lab, cp: str = "cp-1") -> dict[str, dict]:
    r = lab.exec(cp, f"kubectl --kubeconfig {ADMIN} get nodes -o json")
    assert r.returncode == 0, r.stderr
    return {i["metadata"]["name"]: i for i in json.loads(r.stdout)["items"]}


def ready(node: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])


# (what the run is interrupted at, the log line that triggers the signal, setup before the run)
# In order: each run resumes where the previous one stopped and gets one step further.
STEPS = [
    ("boundary: connect", "phase connect:", None),
    ("boundary: gather facts", "phase gather facts:", None),
    ("boundary: preflight checks", "phase preflight checks:", None),
    ("boundary: preflight gate", "phase preflight gate:", None),
    ("middle of host preparation", "] change: install", None),
    ("boundary: prepare hosts", "phase prepare hosts:", None),
    ("middle of kubeadm init", "] change: kubeadm init", "slow-init"),
    ("boundary: init", "phase init first control plane:", "fast"),
    ("middle of Calico", "] change: apply the Calico Installation", "calico-slow"),
    # (w-1's join held back as well: the run after Calico is otherwise over within a second, less
    # than a loaded CI machine may take to deliver the signal)
    ("boundary: install Calico", "phase install Calico:", "calico-fast"),
    ("boundary: join control planes", "phase join control planes:", None),
    ("middle of a join", "] change: kubeadm join", "slow-join"),
    ("boundary: join workers", "phase join workers:", "fast"),
    ("boundary: labels and taints", "phase apply labels and taints:", "slow-kubectl"),
]
# Not covered: the boundary after "wait for nodes Ready" (the last phase, writing the kubeconfig,
# ends within the test's polling interval: the run is over before a signal could land).


def test_sigint_at_every_point_of_up_exits_130_promptly_and_leaves_nothing(lab_factory, tmp_path):
    lab = lab_factory([HostFixture.bare("cp-1", roles=("control-plane",)),
                       HostFixture.bare("w-1"), HostFixture.bare("w-2", os="rocky-9")])
    inv = lab.write_inventory(tmp_path / "inv.yaml")
    seen = []
    for i, (what, needle, setup) in enumerate(STEPS):
        if setup == "slow-init":
            for n in lab.names():
                slow_kubeadm(lab, n)
            lab.exec("cp-1", f"touch {SLOW_FLAG}")
        elif setup == "slow-join":
            lab.exec("w-1", f"touch {SLOW_FLAG}")
        elif setup == "fast":
            for n in lab.names():
                lab.exec(n, f"rm -f {SLOW_FLAG}")
        elif setup == "calico-slow":
            lab.exec("cp-1", "echo 3600 > /etc/gpuk8s-lab/calico_delay")
        elif setup == "slow-kubectl":
            lab.exec("cp-1", f"touch {SLOW_FLAG}-kubectl")
        elif setup == "calico-fast":
            lab.exec("cp-1", "rm -f /etc/gpuk8s-lab/calico_delay")
            lab.exec("w-1", f"touch {SLOW_FLAG}")
        log = tmp_path / f"run-{i}.log"
        p = start_up(inv, tmp_path, log)
        reached = wait_for_log(p, log, needle)
        assert reached, (what, p.returncode, p.stdout.read()[-2000:], p.stderr.read()[-2000:])
        if setup == "calico-slow":
            time.sleep(0.5)   # into the wait for Calico
        if setup in ("slow-init", "slow-join"):
            # the `change:` line is logged just before the command starts: wait until it runs
            host = "cp-1" if setup == "slow-init" else "w-1"
            assert wait_for_file(lab, host, f"{SLOW_FLAG}-started"), what
        elapsed, out, err = interrupt(p, log)
        text = log.read_text()
        assert p.returncode == 130, (what, p.returncode, out[-3000:], err[-3000:])
        assert elapsed <= INTERRUPT_LIMIT_S, (what, elapsed)
        lines = text.splitlines()
        marks = [j for j, ln in enumerate(lines) if "interrupted: no new change starts" in ln]
        assert marks, (what, text[-3000:])
        late = [ln for ln in lines[marks[0]:] if "] change: " in ln]
        assert late == [], (what, late)
        assert tokens(lab) == [], (what, text[-3000:])
        assert secret_files(lab) == {}, what
        if "middle of kubeadm" in what or "middle of a join" in what:
            # the command in flight was ended, and the report says so
            assert "ended (SIGTERM)" in out + err, (what, out[-2000:], err[-2000:])
        seen.append((what, round(elapsed, 2)))
    # the last run converges
    lab.exec("cp-1", f"rm -f {SLOW_FLAG}-kubectl")
    log = tmp_path / "final.log"
    p = start_up(inv, tmp_path, log)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, (out[-3000:], err[-3000:])
    got = nodes(lab)
    assert sorted(got) == ["cp-1", "w-1", "w-2"] and all(ready(n) for n in got.values())
    assert tokens(lab) == [] and secret_files(lab) == {}
    print("interrupt -> exit seconds:", seen)


def test_frozen_host_mid_join_is_lost_and_sigint_is_honoured(lab_factory, tmp_path):
    """w-1 freezes while its join runs: SIGINT still ends the run at once (exit 130); the
    report says its session was closed; a re-run after it thaws converges."""
    lab = lab_factory([HostFixture.bare("cp-1", roles=("control-plane",)), HostFixture.bare("w-1")])
    inv = lab.write_inventory(tmp_path / "inv.yaml")
    # First get the cluster up to the joins (interrupt when the join starts), kubeadm wrapped.
    log = tmp_path / "a.log"
    p = start_up(inv, tmp_path, log)
    assert wait_for_log(p, log, "phase prepare hosts:")
    interrupt(p, log)
    for n in lab.names():
        slow_kubeadm(lab, n)
    lab.exec("w-1", f"touch {SLOW_FLAG}")
    log = tmp_path / "b.log"
    p = start_up(inv, tmp_path, log)
    assert wait_for_log(p, log, "] change: kubeadm join")
    time.sleep(0.3)
    lab.freeze_host("w-1")
    try:
        elapsed, out, err = interrupt(p, log)
        assert p.returncode == 130, (out[-3000:], err[-3000:])
        assert elapsed <= INTERRUPT_LIMIT_S, elapsed
        assert "w-1: kubeadm join as worker: its session was closed" in out + err, (out[-2000:], err[-2000:])
        assert tokens(lab) == []
    finally:
        lab.thaw_host("w-1")
    lab.exec("w-1", f"rm -f {SLOW_FLAG}")
    # The thawed join script wakes up with its session gone; a re-run converges.
    p = start_up(inv, tmp_path, tmp_path / "c.log")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, (out[-3000:], err[-3000:])
    assert all(ready(n) for n in nodes(lab).values())
    assert tokens(lab) == [] and secret_files(lab) == {}


def test_frozen_host_mid_command_is_reported_lost_within_the_command_timeout(lab_factory, tmp_path):
    """A host that stops answering in the middle of a (long) join is reported as lost, not as
    `kubeadm join exited -1` with kubeadm reset advice, and long before the join's own timeout."""
    lab = lab_factory([HostFixture.bare("cp-1", roles=("control-plane",)), HostFixture.bare("w-1")])
    inv = lab.write_inventory(tmp_path / "inv.yaml")   # connect_timeout 3: lost after ~3 s + 3 s
    log = tmp_path / "a.log"
    p = start_up(inv, tmp_path, log)
    assert wait_for_log(p, log, "phase prepare hosts:")
    interrupt(p, log)
    for n in lab.names():
        slow_kubeadm(lab, n, seconds=600)
    lab.exec("w-1", f"touch {SLOW_FLAG}")
    log = tmp_path / "b.log"
    p = start_up(inv, tmp_path, log)
    assert wait_for_log(p, log, "] change: kubeadm join")
    time.sleep(0.3)
    lab.freeze_host("w-1")
    t0 = time.monotonic()
    try:
        out, err = p.communicate(timeout=120)
        took = time.monotonic() - t0
    finally:
        lab.thaw_host("w-1")
    text = out + err
    assert p.returncode == 5, text[-3000:]
    assert "w-1" in text and "stopped answering" in text, text[-3000:]
    assert "exited -1" not in text and "kubeadm reset" not in text, text[-3000:]
    # connect_timeout 3 -> a keepalive after 3 s of silence, 3 s for its reply; 900 s is the join's
    # own timeout. The bound leaves room for the run's other phases (wait for Ready of cp-1).
    assert took < 60, took
    assert tokens(lab) == []
    # w-1's join file stays while its (thawed, still sleeping) command runs: the script removes
    # it when the command ends; the cleanup could not reach a frozen host.
    assert set(secret_files(lab)) <= {"w-1"}
