"""Interrupts (issue 12): once Ctrl-C arrives no host starts a new change, the command in flight
is ended or its session closed (and the report says which), cleanups still run (the bootstrap
token is deleted, leftover secret files removed), and the exit code is 130.

The interrupt is delivered the way a terminal delivers it: as KeyboardInterrupt in the main
thread (`_thread.interrupt_main`), while a worker thread is inside a fake remote command.
No timing assertions: the join timeouts below only keep a broken build from hanging the suite.
"""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import threading

import pytest

from gpuk8s.actions.up import run_up
from gpuk8s.errors import ActionFailed, Interrupted
from gpuk8s.gate import SECRET_SCRIPT, Change, Gate
from gpuk8s.phases.base import RunOptions
from gpuk8s.runlog import RunLog
from gpuk8s.runner import for_each_host
from gpuk8s.shell import Cmd
from tests.unit.fake import FakeHost, bare_probe, opener
from tests.unit.test_up import SECRETS, inventory

HANG_GUARD = 60  # seconds: only so that a regression fails instead of hanging the suite


class BlockingHost(FakeHost):
    """A fake host whose command containing `block` waits until aborted (or forever: frozen)."""

    def __init__(self, *a, block: str, frozen: bool = False, **kw):
        super().__init__(*a, **kw)
        self.block, self.frozen = block, frozen
        self.released = threading.Event()
        self.aborted: list[str] = []

    def run(self, cmd, *, stdin=None, timeout=None, sudo=True):
        rendered = cmd.render()
        if self.block in rendered:
            self.calls.append((self.host_name, rendered, stdin, sudo))
            _thread.interrupt_main()          # Ctrl-C arrives while this command runs
            if self.released.wait(HANG_GUARD):
                from gpuk8s.transport.base import Result
                return Result(cmd.masked(), 143, "", "Terminated", 0.0)
        return super().run(cmd, stdin=stdin, timeout=timeout, sudo=sudo)

    def abort(self, grace):
        self.aborted.append(self.block)
        if self.frozen:
            return [(self.block, False)]      # nothing answers: the session is closed
        self.released.set()
        return [(self.block, True)]


def blocking_opener(probes, calls, host: str, block: str, frozen: bool = False):
    base = opener(probes, calls)

    def open_transport(spec, accept_new_host_keys=False):
        if spec.name == host and spec.name not in base.hosts:
            base.hosts[spec.name] = BlockingHost(spec.name, probes[spec.name], calls, base.cluster,
                                                 block=block, frozen=frozen)
        return base(spec, accept_new_host_keys)

    open_transport.hosts = base.hosts
    return open_transport


def interrupted_up(tmp_path, host: str, block: str, *, frozen: bool = False, n_workers: int = 2):
    inv = inventory(n_workers=n_workers)
    probes = {h.name: bare_probe(h.name, i, h.address) for i, h in enumerate(inv.hosts)}
    calls: list = []
    fake = blocking_opener(probes, calls, host, block, frozen)
    log = RunLog(tmp_path / "up.log")
    err = None
    real = Gate.interrupt

    def interrupt(gate):
        fake.calls_at_interrupt = len(calls)
        real(gate)

    Gate.interrupt = interrupt
    try:   # in the main thread: that is where SIGINT lands
        run_up(inv, RunOptions(kubeconfig_path=tmp_path / "kc", poll_interval=0, wait_timeout=5),
               log=log, open_transport=fake, secrets=SECRETS)
    except BaseException as e:  # noqa: BLE001 - the test looks at it
        err = e
    finally:
        Gate.interrupt = real
    log.close()
    return err, calls, (tmp_path / "up.log").read_text(), fake


def _after_interrupt(log_text: str) -> list[str]:
    lines = log_text.splitlines()
    at = next(i for i, ln in enumerate(lines) if "interrupted: no new change starts" in ln)
    return lines[at + 1:]


@pytest.mark.parametrize("host,block", [
    ("cp-1", " kubeadm init --config"),            # init in flight on the first control plane
    ("w-1", " kubeadm join --config"),             # a worker's join in flight
    ("w-2", "apt-get update"),                      # host preparation in flight
])
def test_interrupt_stops_every_host_and_cleans_up(tmp_path, host, block):
    err, calls, log_text, fake = interrupted_up(tmp_path, host, block)
    assert isinstance(err, (ActionFailed, Interrupted)), err
    assert err.exit_code == 130
    assert fake.hosts[host].aborted == [block]
    assert "ended (SIGTERM)" in str(err)
    after = _after_interrupt(log_text)
    assert not [ln for ln in after if "] change: " in ln], after
    # cleanups ran: the token (init may have made it) is deleted, and nothing but cleanups ran
    token_id = SECRETS.token.reveal().split(".")[0]
    ran_after = calls[fake.calls_at_interrupt:]
    kinds = {c.split()[0] for _, c, *_ in ran_after}
    assert kinds <= {"kubeadm", "sh", "rm"}, ran_after
    assert any(token_id in c for _, c, *_ in ran_after) or block == "apt-get update"


def test_interrupted_init_token_is_deleted_even_though_init_never_returned(tmp_path):
    err, calls, log_text, fake = interrupted_up(tmp_path, "cp-1", " kubeadm init --config")
    token_id = SECRETS.token.reveal().split(".")[0]
    deletes = [c for _, c, *_ in calls if "token delete" in c]
    assert len(deletes) == 1 and token_id in deletes[0]
    assert "cleanup: delete bootstrap token" in log_text


def test_frozen_session_is_closed_and_the_report_says_so(tmp_path):
    """The command in flight never ends (frozen host): the run still ends, with exit 130, and
    says the session was closed and the command may still be running there."""
    err, calls, log_text, fake = interrupted_up(tmp_path, "w-1", " kubeadm join --config", frozen=True)
    assert err.exit_code == 130
    assert "w-1: kubeadm join as worker: its session was closed" in str(err)
    assert "may still be running" in str(err)
    # the leftover join config on w-1 is removed by the cleanup
    assert any(h == "w-1" and c.startswith("rm -f -- /etc/gpuk8s/kubeadm-join.yaml") for h, c, *_ in calls)


def test_gate_refuses_changes_after_an_interrupt_but_not_cleanups(tmp_path):
    log = RunLog(tmp_path / "g.log")
    gate = Gate(False, log)

    class Ex:
        name = "h"

        def execute(self, cmd, *, stdin=None, timeout=None):
            from gpuk8s.transport.base import Result
            return Result(cmd.masked(), 0, "", "", 0.0)

    gate.interrupt()
    with pytest.raises(Interrupted):
        gate.apply(Change("h", "touch", Cmd("touch", "/x")), Ex())
    import time
    gate.cleaning(time.monotonic() + 5)
    assert gate.apply(Change("h", "delete token", Cmd("kubeadm", "token", "delete", "x")), Ex()).ok
    log.close()
    text = (tmp_path / "g.log").read_text()
    assert "cleanup: delete token" in text and "change: touch" not in text


def test_runner_starts_no_host_after_stop():
    stop = threading.Event()
    started = []

    def work(h):
        started.append(h)
        stop.set()

    out = for_each_host(list(range(10)), work, name=str, parallel=1, stop=stop)
    assert started == [0]
    assert all(isinstance(out[str(i)].error, Interrupted) for i in range(1, 10))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_secret_script_removes_its_file_when_signalled(tmp_path, sig):
    """An interrupted run signals the session's process group; the script's trap removes the file."""
    f = tmp_path / "d" / "secret.yaml"
    p = subprocess.Popen(["sh", "-c", SECRET_SCRIPT, "gpuk8s-secret", str(f), "sh", "-c",
                          "echo started; exec sleep 60"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    p.stdin.write(b"token: abc\n")
    p.stdin.close()
    assert p.stdout.readline() == b"started\n"
    assert f.exists() and (f.stat().st_mode & 0o777) == 0o600
    os.killpg(p.pid, sig)
    p.wait(timeout=HANG_GUARD)
    assert not f.exists()
    assert p.returncode in (129, 130, 143)


def test_secret_script_removes_its_file_after_the_command(tmp_path):
    f = tmp_path / "secret.yaml"
    r = subprocess.run(["sh", "-c", SECRET_SCRIPT, "gpuk8s-secret", str(f), "sh", "-c", "cat \"$0\"; exit 3",
                        str(f)], input=b"x: 1\n", capture_output=True, timeout=HANG_GUARD)
    assert r.returncode == 3 and r.stdout == b"x: 1\n" and not f.exists()
