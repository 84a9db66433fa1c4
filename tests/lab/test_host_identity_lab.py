"""Host identity (issue 12): known_hosts read the way OpenSSH reads it, against real sshd hosts.

One known_hosts with a bad base64 line, a `@cert-authority` line, a hashed entry with a bad
salt and a `@revoked` key for one host: the other hosts still connect (before, the bad line
made every host unreachable), the revoked one is refused before authentication, and each
skipped line is named (file:line) on stderr, while --json stays one exact document.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.lab.fixture import HostFixture

GOOD = dict(containerd="2.1.4", kube="1.36.2", ip_forward=True)


def test_bad_lines_are_skipped_and_a_revoked_key_is_refused(lab_factory, tmp_path):
    lab = lab_factory([HostFixture("cp-1", roles=("control-plane",), **GOOD)]
                      + [HostFixture(f"w-{i}", roles=("worker",), **GOOD) for i in (1, 2, 3)])
    revoked = lab.host("w-2")
    name = revoked.address if revoked.port == 22 else f"[{revoked.address}]:{revoked.port}"
    kh = tmp_path / "known_hosts"
    kh.write_text(
        "198.18.250.1 ssh-ed25519 AAAA!!this-is-not-base64\n"
        f"@cert-authority *.lab.example ssh-ed25519 {revoked.host_key_pub}\n"
        f"|1|c2FsdA==|aGFzaA== ssh-ed25519 {revoked.host_key_pub}\n"
        + open(lab.known_hosts).read()
        + f"@revoked {name} ssh-ed25519 {revoked.host_key_pub}\n")
    inv = lab.write_inventory(tmp_path / "inv.yaml", ssh={"known_hosts": str(kh)})
    p = subprocess.run([sys.executable, "-m", "gpuk8s", "preflight", "-i", inv, "--json"],
                       capture_output=True, text=True, timeout=120)
    doc = json.loads(p.stdout)          # the whole document, nothing else on stdout
    hosts = {h["name"]: h for h in doc["hosts"]}
    assert p.returncode == 4, p.stderr                 # one host unreachable
    for n in ("cp-1", "w-1", "w-3"):
        assert hosts[n]["reachable"], (n, hosts[n]["error"])
        assert hosts[n]["facts"]["hostname"] == n
    w2 = hosts["w-2"]
    assert not w2["reachable"] and w2["error_kind"] == "host-key-revoked", w2
    assert "REVOKED" in w2["error"] and f"line {len(kh.read_text().splitlines())}" in w2["error"]
    for line in (1, 2, 3):
        assert f"{kh}:{line}: " in p.stderr, p.stderr
    assert p.stderr.count(f"{kh}:1: ") == 1            # once per run, not once per host
