"""known_hosts read the way OpenSSH reads it (gpuk8s/transport/known_hosts.py), issue 12.

paramiko's own reader (used before) raised on the first bad base64 line, so every host of the
fleet became unreachable, and raised an empty AssertionError on a hashed name with a bad salt.
"""

import base64
import hashlib
import hmac
import logging

import paramiko
import pytest

from gpuk8s.transport import known_hosts
from gpuk8s.transport.ssh import _HostKeys, _known_hosts_entries


def _pub(seed: int) -> tuple[str, str, paramiko.PKey]:
    """A valid ed25519 public key (type, base64, key), deterministic per seed."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32).public_key().public_bytes(
        Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    t, b64 = raw.split()
    return t, b64, paramiko.PKey.from_type_string(t, base64.b64decode(b64))


def _hashed(name: str, salt: bytes = b"s" * 20) -> str:
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


T1, K1, KEY1 = _pub(1)
T2, K2, KEY2 = _pub(2)
T3, K3, KEY3 = _pub(3)


def test_old_reader_failed_the_whole_file_on_one_bad_line(tmp_path):
    """The defect, reproduced: paramiko's reader gives up at the bad line."""
    p = tmp_path / "known_hosts"
    p.write_text(f"10.0.0.1 {T1} {K1}\n10.0.0.2 {T2} AAAA!!notbase64\n")
    with pytest.raises(Exception):
        paramiko.HostKeys().load(str(p))
    p.write_text(f"|1|c2FsdA==|aGFzaA== {T1} {K1}\n10.0.0.1 {T1} {K1}\n")
    with pytest.raises(AssertionError):
        paramiko.HostKeys().load(str(p))


def test_a_bad_line_is_skipped_with_file_and_line_and_the_others_count(tmp_path):
    p = tmp_path / "known_hosts"
    p.write_text(
        "# comment\n\n"
        f"10.0.0.1 {T1} {K1}\n"
        f"10.0.0.2 {T2} AAAA!!notbase64\n"          # bad base64
        f"10.0.0.3 {T3}\n"                          # too few fields
        f"10.0.0.4 ssh-foo {K1}\n"                  # unknown key type
        f"10.0.0.5 {T2} {base64.b64encode(b'garbage').decode()}\n"   # base64, not a key
        f"@bogus 10.0.0.6 {T1} {K1}\n"              # unknown marker
        f"  [10.0.0.7]:2222,h7 {T2} {K2} a comment\n")
    kh = known_hosts.load(str(p))
    assert kh.keys_for("10.0.0.1") == [KEY1]
    assert kh.keys_for("[10.0.0.7]:2222") == [KEY2]
    assert kh.keys_for("H7") == [KEY2]                       # case-insensitive, like OpenSSH
    for name in ("10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7"):
        assert kh.keys_for(name) == []
    lines = [w.split(": ", 1)[0] for w in kh.warnings]
    assert lines == [f"{p}:{n}" for n in (4, 5, 6, 7, 8)]
    assert "not valid base64" in kh.warnings[0]
    assert "unknown marker" in kh.warnings[4]


def test_hashed_names_and_a_bad_salt(tmp_path):
    p = tmp_path / "known_hosts"
    p.write_text(
        f"|1|c2FsdA==|aGFzaA== {T1} {K1}\n"               # salt of 4 bytes
        f"|1|!!!|aGFzaA== {T1} {K1}\n"                    # salt not base64
        f"|2|abc|def {T1} {K1}\n"                         # unknown hash type
        f"{_hashed('10.0.0.1')} {T2} {K2}\n"
        f"{_hashed('[10.0.0.2]:2222', b'x' * 20)} {T3} {K3}\n")
    kh = known_hosts.load(str(p))
    assert kh.keys_for("10.0.0.1") == [KEY2]
    assert kh.keys_for("[10.0.0.2]:2222") == [KEY3]
    assert kh.keys_for("10.0.0.2") == []
    assert [w.split(": ", 1)[0] for w in kh.warnings] == [f"{p}:1", f"{p}:2", f"{p}:3"]
    assert "salt is 4 bytes" in kh.warnings[0]
    assert all(w.strip() for w in kh.warnings)                # never an empty message


def test_patterns_wildcards_and_negation(tmp_path):
    p = tmp_path / "known_hosts"
    p.write_text(f"10.0.0.*,!10.0.0.9 {T1} {K1}\ngpu-? {T2} {K2}\n")
    kh = known_hosts.load(str(p))
    assert kh.keys_for("10.0.0.5") == [KEY1]
    assert kh.keys_for("10.0.0.9") == []                      # a negated match rules the line out
    assert kh.keys_for("gpu-1") == [KEY2]
    assert kh.keys_for("gpu-10") == []


def test_revoked_keys_are_found_and_never_offered_as_known(tmp_path):
    p = tmp_path / "known_hosts"
    p.write_text(f"10.0.0.1 {T1} {K1}\n@revoked 10.0.0.1 {T1} {K1}\n@revoked * {T2} {K2}\n"
                 f"10.0.0.2 {T3} {K3}\n")
    kh = known_hosts.load(str(p))
    hit = kh.revoked_for("10.0.0.1", KEY1)
    assert hit is not None and (hit.path, hit.lineno) == (str(p), 2)
    assert kh.revoked_for("10.0.0.2", KEY2).lineno == 3       # a pattern covers every host
    assert kh.revoked_for("10.0.0.2", KEY3) is None
    assert kh.keys_for("10.0.0.1") == [KEY1]                  # the plain line; refused at connect
    assert kh.warnings == []


def test_cert_authority_lines_are_skipped_with_a_warning_and_hide_nothing(tmp_path):
    p = tmp_path / "known_hosts"
    p.write_text(f"@cert-authority *.lab,10.0.0.* {T1} {K1}\n10.0.0.1 {T2} {K2}\n")
    kh = known_hosts.load(str(p))
    assert kh.keys_for("10.0.0.1") == [KEY2]
    assert len(kh.warnings) == 1 and kh.warnings[0].startswith(f"{p}:1: @cert-authority")
    assert "certificates" in kh.warnings[0]


def test_hostile_bytes_in_a_bad_line_are_escaped_in_the_warning(tmp_path):
    p = tmp_path / "known_hosts"
    p.write_bytes(b"10.0.0.1 ssh-\x1b]0;pwned\x07 AAAA\n\xff\xfe junk here\n")
    kh = known_hosts.load(str(p))
    assert len(kh.warnings) == 2
    assert not any(ch in w for w in kh.warnings for ch in "\x1b\x07\n")


def test_transport_host_keys_use_the_tolerant_reader_and_warn_once(tmp_path, caplog):
    p = tmp_path / "known_hosts"
    p.write_text(f"10.0.0.2 {T2} AAAA!!notbase64\n[10.0.0.1]:2222 {T1} {K1}\n")
    with caplog.at_level(logging.WARNING, logger="gpuk8s.known_hosts"):
        hk = [_HostKeys(_known_hosts_entries(str(p))) for _ in range(5)]   # five hosts
    assert hk[0].get("[10.0.0.1]:2222") == {T1: KEY1}
    assert list(hk[0].get("[10.0.0.1]:2222").keys())[0] == T1
    assert hk[0].get("10.0.0.2") is None
    warned = [r.getMessage() for r in caplog.records if r.name == "gpuk8s.known_hosts"]
    assert warned == [f"warning: {p}:1: line skipped: the key is not valid base64"]
