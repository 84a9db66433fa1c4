"""known_hosts read the way OpenSSH reads it (hostfile.c, match.c), for the SSH transport.

- A line that cannot be parsed (bad base64, a key type or marker gpuk8s does not know, too few
  fields, a hashed name with a bad salt) is skipped with a warning naming file and line; the
  other lines still count. OpenSSH skips such lines too (it only logs them at debug level).
- `@revoked` lines: their key is refused for the hosts the line names, whatever else says.
- `@cert-authority` lines: gpuk8s does not verify host certificates; such a line is skipped
  with a warning, and never hides the plain keys of the hosts it names.
- Host patterns: comma-separated, `*` and `?` wildcards, `!` negation (a negated match rules
  the line out), case-insensitive; hashed names `|1|base64(salt)|base64(hmac-sha1)`.

paramiko's own reader stops at the first bad base64 line (every host then fails), crashes
with an empty AssertionError on a bad salt, and ignores markers (a `@revoked` key is read as a
host named "@revoked").
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
from dataclasses import dataclass, field

import paramiko

from gpuk8s.shell import printable

MARK_NONE, MARK_REVOKED, MARK_CA = "", "@revoked", "@cert-authority"


@dataclass(frozen=True)
class Entry:
    marker: str
    patterns: tuple[str, ...]          # plain patterns (lowercase), or () for a hashed name
    hashed: tuple[bytes, bytes] | None  # (salt, digest)
    key: paramiko.PKey
    path: str
    lineno: int

    def matches(self, name: str) -> bool:
        name = name.lower()
        if self.hashed is not None:
            salt, digest = self.hashed
            return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)
        hit = False
        for p in self.patterns:
            negated = p.startswith("!")
            p = p[1:] if negated else p
            if p == name or (("*" in p or "?" in p) and fnmatch.fnmatchcase(name, p)):
                if negated:
                    return False
                hit = True
        return hit


@dataclass
class KnownHosts:
    path: str
    entries: list[Entry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _by_name: dict[str, list[Entry]] = field(default_factory=dict)
    _others: list[Entry] = field(default_factory=list)   # hashed or wildcard/negated lines

    def _index(self) -> None:
        for e in self.entries:
            if e.hashed is None and not any(c in p for p in e.patterns for c in "*?!"):
                for p in e.patterns:
                    self._by_name.setdefault(p, []).append(e)
            else:
                self._others.append(e)

    def for_host(self, name: str) -> list[Entry]:
        """The entries whose host field matches `name` (as OpenSSH spells it: `[addr]:port`
        off port 22), in file order."""
        found = list(self._by_name.get(name.lower(), ()))
        found += [e for e in self._others if e.matches(name)]
        return sorted(found, key=lambda e: e.lineno)

    def keys_for(self, name: str) -> list[paramiko.PKey]:
        """Plain (unmarked) keys for the host: the keys it may offer."""
        return [e.key for e in self.for_host(name) if e.marker == MARK_NONE]

    def revoked_for(self, name: str, key: paramiko.PKey) -> Entry | None:
        """The `@revoked` line that refuses this key for this host, if any."""
        blob = key.asbytes()
        for e in self.for_host(name):
            if e.marker == MARK_REVOKED and e.key.asbytes() == blob:
                return e
        return None


def _salt_and_hash(field_: str) -> tuple[bytes, bytes]:
    """`|1|salt|hash` -> (salt, hash); ValueError saying what is wrong (OpenSSH extract_salt)."""
    parts = field_.split("|")
    if len(parts) != 4 or parts[0] != "" or parts[1] != "1":
        raise ValueError("hashed host name is not |1|salt|hash")
    try:
        salt = base64.b64decode(parts[2], validate=True)
        digest = base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("hashed host name: salt or hash is not base64") from None
    if len(salt) != hashlib.sha1().digest_size:
        raise ValueError(f"hashed host name: salt is {len(salt)} bytes, not 20")
    if len(digest) != hashlib.sha1().digest_size:
        raise ValueError(f"hashed host name: hash is {len(digest)} bytes, not 20")
    return salt, digest


def _parse_line(line: str) -> tuple[str, tuple[str, ...], tuple[bytes, bytes] | None, paramiko.PKey]:
    fields = line.split()
    marker = MARK_NONE
    if fields[0].startswith("@"):
        marker = fields.pop(0)
        if marker not in (MARK_REVOKED, MARK_CA):
            raise ValueError(f"unknown marker {marker!r}")
    if len(fields) < 3:
        raise ValueError("expected `hosts keytype base64-key`")
    hosts, key_type, blob = fields[0], fields[1], fields[2]
    if key_type.isdigit():
        raise ValueError("SSH protocol 1 key (not supported by OpenSSH either)")
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key is not valid base64") from None
    try:
        key = paramiko.PKey.from_type_string(key_type, raw)
    except paramiko.UnknownKeyType:
        raise ValueError(f"key type {key_type!r} is not supported by gpuk8s") from None
    except Exception as e:  # noqa: BLE001 - any malformed key blob: the line is skipped
        raise ValueError(f"the {key_type} key does not decode ({type(e).__name__})") from None
    if key.get_name() != key_type and not (key_type.startswith("rsa-sha2") and key.get_name() == "ssh-rsa"):
        raise ValueError(f"the key is a {key.get_name()} key, the line says {key_type}")
    if hosts.startswith("|"):
        return marker, (), _salt_and_hash(hosts), key
    return marker, tuple(p.lower() for p in hosts.split(",") if p), None, key


def parse(path: str, text: str) -> KnownHosts:
    kh = KnownHosts(path)
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            marker, patterns, hashed, key = _parse_line(line)
        except ValueError as e:
            kh.warnings.append(f"{printable(path)}:{lineno}: line skipped: {printable(str(e))}")
            continue
        if marker == MARK_CA:
            kh.warnings.append(f"{printable(path)}:{lineno}: @cert-authority line skipped: gpuk8s does "
                               f"not verify host certificates; hosts that present one need a plain key "
                               f"line")
            continue
        kh.entries.append(Entry(marker, patterns, hashed, key, path, lineno))
    kh._index()
    return kh


def load(path: str) -> KnownHosts:
    """Read and parse a known_hosts file (OSError propagates; undecodable bytes are replaced,
    so such a line fails to parse and is skipped like any other bad line)."""
    with open(path, "rb") as f:
        return parse(path, f.read().decode("utf-8", errors="replace"))
