"""Transport paths the preflight tests do not cover: a jump host (bastion), a non-22 port, IPv6, key files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.lab.fixture import HostFixture

GOOD = dict(containerd="2.1.4", kube="1.36.2", ip_forward=True)


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory([
        HostFixture("jump", roles=("worker",), **GOOD),
        HostFixture("cp-1", roles=("control-plane",), helm="3.19.0", **GOOD),
        HostFixture("odd-port", roles=("worker",), ssh_port=2222, **GOOD),
    ])


def preflight(inv, *args):
    p = subprocess.run([sys.executable, "-m", "gpuk8s", "preflight", "-i", inv, "--json", *args],
                       capture_output=True, text=True, timeout=120)
    return p.returncode, json.loads(p.stdout) if p.stdout.strip() else None, p.stderr


def sshd_log(lab, name) -> str:
    path = lab.host(name).dir / "sshd.log"
    return path.read_text(errors="replace") if path.exists() else ""


def test_through_a_bastion(lab, tmp_path):
    jump = lab.address("jump")
    inv = lab.write_inventory(tmp_path / "inv.yaml", hosts=["cp-1", "odd-port"],
                              ssh={"bastion": {"address": jump, "user": "root"}})
    rc, doc, err = preflight(inv)
    assert doc is not None, err
    hosts = {h["name"]: h for h in doc["hosts"]}
    assert all(h["reachable"] for h in hosts.values()), err
    assert hosts["cp-1"]["facts"]["hostname"] == "cp-1"
    # The targets saw the connection come from the bastion, not from the client.
    log = sshd_log(lab, "cp-1")
    if log:
        assert f"from {jump} " in log, log[-2000:]


def test_unreachable_bastion_is_named(lab, tmp_path):
    inv = lab.write_inventory(tmp_path / "inv.yaml", hosts=["cp-1"],
                              ssh={"bastion": {"address": lab.unused_address(), "user": "root"},
                                   "connect_timeout": 2})
    rc, doc, err = preflight(inv)
    assert rc == 4, err
    h = doc["hosts"][0]
    assert not h["reachable"] and "bastion" in h["error"], h["error"]


def test_non_22_port_uses_bracketed_known_hosts_entry(lab, tmp_path):
    inv = lab.write_inventory(tmp_path / "inv.yaml", hosts=["cp-1", "odd-port"])
    rc, doc, err = preflight(inv)
    assert doc is not None, err
    odd = doc["hosts"][1]
    assert odd["name"] == "odd-port" and odd["reachable"], odd["error"]
    known = open(lab.known_hosts).read()
    assert f"[{lab.address('odd-port')}]:2222 " in known


def test_identity_files_encrypted_unknown_and_rsa(lab, tmp_path, monkeypatch):
    """The identity file is parsed once per run; what paramiko would say per host still holds."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # no agent to fall back to
    enc, other, rsa = tmp_path / "enc", tmp_path / "other", tmp_path / "rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret", "-f", str(enc)], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)], check=True)
    for key, expect in ((enc, "is encrypted; load it into ssh-agent"), (other, "authentication failed")):
        inv = lab.write_inventory(tmp_path / f"inv-{key.name}.yaml", hosts=["cp-1", "odd-port"],
                                  ssh={"identity_file": str(key)})
        rc, doc, err = preflight(inv)
        assert rc == 4, err
        for h in doc["hosts"]:
            assert not h["reachable"] and expect in h["error"], h["error"]
            assert "s3cret" not in h["error"]
    # an RSA key authorized for root works like the lab's ed25519 one
    pub = rsa.with_suffix(".pub").read_text()
    for name in ("cp-1", "odd-port"):
        lab.exec(name, "cat >> /root/.ssh/authorized_keys", input=pub)
    inv = lab.write_inventory(tmp_path / "inv-rsa.yaml", hosts=["cp-1", "odd-port"],
                              ssh={"identity_file": str(rsa)})
    rc, doc, err = preflight(inv)
    assert doc is not None and all(h["reachable"] for h in doc["hosts"]), (err, doc)


def test_ipv6_addresses(lab, tmp_path):
    """Hosts addressed by IPv6 literals, on port 22 and on another port ([addr]:port in known_hosts)."""
    inv = lab.write_inventory(tmp_path / "inv.yaml", hosts=["cp-1", "odd-port"], host_overrides={
        "cp-1": {"address": lab.address6("cp-1")}, "odd-port": {"address": lab.address6("odd-port")}})
    rc, doc, err = preflight(inv)
    assert doc is not None, err
    hosts = {h["name"]: h for h in doc["hosts"]}
    for name in ("cp-1", "odd-port"):
        h = hosts[name]
        assert h["reachable"] and h["address"] == lab.address6(name), h["error"]
        assert h["facts"]["hostname"] == name
        assert any(a.startswith(lab.address6(name) + "/") for a in h["facts"]["addresses"])
    known = open(lab.known_hosts).read()
    assert f"\n{lab.address6('cp-1')} " in "\n" + known and f"[{lab.address6('odd-port')}]:2222 " in known
    log = sshd_log(lab, "cp-1")
    if log:
        assert "Accepted publickey for root from fd67:7075:6b38:" in log, log[-2000:]
    # an IPv6 host whose key is not in known_hosts is refused with the bracketed keyscan hint
    without = tmp_path / "kh"
    without.write_text("".join(ln for ln in known.splitlines(keepends=True)
                               if not ln.startswith(f"[{lab.address6('odd-port')}]:2222 ")))
    inv = lab.write_inventory(tmp_path / "inv2.yaml", hosts=["cp-1", "odd-port"],
                              ssh={"known_hosts": str(without)},
                              host_overrides={"odd-port": {"address": lab.address6("odd-port")}})
    rc, doc, err = preflight(inv)
    assert doc is not None, (rc, err)
    assert doc["hosts"][0]["reachable"], doc["hosts"][0]["error"]
    h = doc["hosts"][1]
    assert rc == 4 and not h["reachable"] and h["error_kind"] == "host-key-unknown", h
    assert f"ssh-keyscan -p 2222 {lab.address6('odd-port')}" in h["error"]
