"""Scale with faults (issue 12): many hosts at once, some broken, never a false "unreachable".

50 hosts preflighted at --parallel 50, 10 of them broken in assorted ways: the 40 healthy hosts
give complete, correct results and each broken one a precise error (its error_kind), all
within the probe timeout plus a small margin.

The bound: connect_timeout (3 s: the hung sshd) and the probe timeout (ssh.command_timeout,
8 s here: the slow probe) run concurrently with everything else, so the whole preflight needs
about 8 s plus the time to handshake and probe 50 hosts; MARGIN_S (15 s) covers that and a
loaded 2-core CI machine (measured: see docs/reliability.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.lab.fixture import HostFixture

GOOD = dict(containerd="2.1.4", kube="1.36.2", ip_forward=True)
COMMAND_TIMEOUT_S = 8
CONNECT_TIMEOUT_S = 3
MARGIN_S = 15

# The nearest sshd ancestor of this command is its own session's sshd: killing it drops this
# connection in the middle of the probe (and nothing else: bounded walk up its own parents).
DIE_MID_PROBE = """#!/bin/sh
p=$PPID i=0
while [ "$p" -gt 1 ] && [ $i -lt 20 ]; do
  read -r c < /proc/$p/comm
  case "$c" in sshd*) kill -9 "$p"; exit 0;; esac
  read -r _ _ _ p _ < /proc/$p/stat || exit 1
  i=$((i+1))
done
exit 1
"""
SLOW = "#!/bin/sh\nsleep 60\n"
BAD_IP = "#!/bin/sh\necho '2: eth0    inet 999.1.2.3/24 brd 999.1.2.255 scope global eth0'\n"
MALFORMED = "#!/bin/sh\nprintf 'containerd \\033[2Jgarbage v999.x.y\\n'\n"

BROKEN = {            # host -> the error_kind its report must carry
    "refused": "refused",
    "hung-sshd": "timeout",
    "auth-fail": "auth",
    "sudo-pw": "sudo-password",
    "slow-probe": "timeout",
    "key-changed": "host-key-changed",
    "dies-mid-probe": "lost",
    "frozen": "timeout",          # every process stopped: TCP answers, nothing else
}
MALFORMED_HOSTS = ("malformed", "bad-ip")   # reachable; the affected facts unknown, checks say why


def replace_tool(lab, host: str, tool: str, script: str) -> None:
    """This host's /usr/local/bin/<tool> becomes `script` (the simulator there is a symlink into
    the lab-wide simulator dir: remove the link first, so no other host sees the change)."""
    r = lab.exec(host, f"rm -f /usr/local/bin/{tool}")
    assert r.returncode == 0, r.stderr
    lab.write_file(host, f"/usr/local/bin/{tool}", script, 0o755)


@pytest.fixture(scope="module")
def lab(lab_factory):
    fixtures = [HostFixture("cp-1", roles=("control-plane",), **GOOD)]
    fixtures += [HostFixture(f"w-{i:02d}", **GOOD) for i in range(1, 40)]
    fixtures += [HostFixture("refused", sshd=False, **GOOD)]
    fixtures += [HostFixture(n, **GOOD) for n in ("hung-sshd", "auth-fail", "sudo-pw", "slow-probe",
                                                  "key-changed", "dies-mid-probe", "malformed",
                                                  "bad-ip", "frozen")]
    lab = lab_factory(fixtures)
    lab.hang_sshd("hung-sshd")
    lab.rotate_host_key("key-changed")
    replace_tool(lab, "slow-probe", "systemctl", SLOW)
    replace_tool(lab, "dies-mid-probe", "systemctl", DIE_MID_PROBE)
    replace_tool(lab, "malformed", "containerd", MALFORMED)
    replace_tool(lab, "bad-ip", "ip", BAD_IP)
    lab.freeze_host("frozen")
    return lab


def test_fifty_hosts_ten_broken(lab, tmp_path):
    inv = lab.write_inventory(
        tmp_path / "inv.yaml",
        ssh={"connect_timeout": CONNECT_TIMEOUT_S, "command_timeout": COMMAND_TIMEOUT_S},
        host_overrides={"auth-fail": {"ssh": {"user": "nobody"}},
                        "sudo-pw": {"ssh": {"user": "alice"}}})
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "gpuk8s", "preflight", "-i", inv, "--json",
                        "--parallel", "50"], capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start
    doc = json.loads(p.stdout)
    hosts = {h["name"]: h for h in doc["hosts"]}
    assert len(hosts) == 50
    for name, kind in BROKEN.items():
        assert hosts[name]["error_kind"] == kind, (name, hosts[name]["error"])
        assert name in hosts[name]["error"]
    for name in MALFORMED_HOSTS:
        h = hosts[name]
        assert h["reachable"] and h["facts"]["hostname"] == name, (name, h["error"])
        assert not h["error"], (name, h["error"])
    checks = {h["name"]: {c["id"]: c for c in h["checks"]} for h in doc["hosts"]}
    assert checks["malformed"]["containerd-version"]["status"] in ("warn", "fail")
    assert "did not report a version" in checks["malformed"]["containerd-version"]["message"]
    assert checks["bad-ip"]["mac-unique"]["status"] in ("warn", "fail")
    assert "ip -o link show" in checks["bad-ip"]["mac-unique"]["message"]
    assert "\x1b" not in p.stdout          # the garbage's escape sequence is JSON-escaped
    healthy = [n for n in hosts if n not in BROKEN and n not in MALFORMED_HOSTS]
    assert len(healthy) == 40
    for n in healthy:
        h = hosts[n]
        assert h["reachable"] and h["error"] is None, (n, h["error"])
        assert h["facts"]["hostname"] == n and h["checks"], n
        assert not [c for c in h["checks"] if c["status"] == "fail"], (n, h["checks"])
    assert took <= COMMAND_TIMEOUT_S + CONNECT_TIMEOUT_S + MARGIN_S, took
