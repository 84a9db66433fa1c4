"""Kubeconfig files: pure YAML logic (server, names, merge, expiry) and the private, atomic write.

Used by `gpuk8s kubeconfig` and by `up`'s WriteKubeconfig (phases/kubeconfig.py), so both write
the same file the same way. A kubeconfig holds a client key: callers register `secret_values()`
with the run log's redaction and never print the content anywhere but where the user asked.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from gpuk8s.errors import UsageError

# The fields of a kubeconfig that are credentials (client-go's clientcmd api v1 AuthInfo).
_SECRET_FIELDS = ("client-key-data", "client-certificate-data", "token", "password")
# Go's time.ParseDuration units kubeadm's --validity-period takes, plus "d" (days) for people.
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
# A user name: the certificate's CN and a part of an RBAC object name (no "/", "%", spaces).
USER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,62}")
# RBAC object names are path segment names; gpuk8s only takes plain DNS-like ClusterRole names.
ROLE_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9:._-]{0,251}[a-z0-9])?")


class KubeconfigError(UsageError):
    """A kubeconfig file cannot be read or merged (not YAML, not a Config)."""


@dataclass(frozen=True)
class Names:
    """How a cluster's entries are named in a kubeconfig: the cluster, its user, the context."""

    cluster: str
    user: str
    context: str

    @classmethod
    def admin(cls, cluster: str) -> "Names":
        return cls(cluster, f"{cluster}-admin", cluster)

    @classmethod
    def for_user(cls, cluster: str, user: str) -> "Names":
        return cls(cluster, f"{user}@{cluster}", f"{user}@{cluster}")


def parse_duration(text: str) -> float:
    """"24h", "90m", "30d", "1h30m" -> seconds (Go's ParseDuration units, and d for days)."""
    s = (text or "").strip()
    if not s or _DURATION_RE.sub("", s):
        raise UsageError(f"--expiry: {text!r} is not a duration like 24h, 90m or 30d")
    total = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_RE.findall(s))
    if total < 60:
        raise UsageError(f"--expiry: {text!r} is shorter than a minute")
    return total


def go_duration(seconds: float) -> str:
    """Seconds as a duration kubeadm's --validity-period parses (whole seconds, e.g. 86400s)."""
    return f"{int(round(seconds))}s"


def load(text: str, what: str = "kubeconfig") -> dict:
    """A kubeconfig's YAML as a dict (an empty file is an empty Config)."""
    try:
        doc = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as e:
        raise KubeconfigError(f"{what}: not YAML ({e.__class__.__name__})") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict) or any(not isinstance(doc.get(k) or [], list)
                                        for k in ("clusters", "users", "contexts")):
        raise KubeconfigError(f"{what}: not a kubeconfig (clusters, users and contexts must be lists)")
    return doc


def dump(doc: dict) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


def with_server(text: str, server: str) -> str:
    """The kubeconfig with every cluster's server set to `server` (names kept)."""
    doc = load(text)
    for c in doc.get("clusters") or []:
        c.setdefault("cluster", {})["server"] = server
    return dump(doc)


def normalized(text: str, server: str, names: Names) -> str:
    """One cluster, one user, one context, named for this cluster; server = the endpoint.

    `text` is what kubeadm wrote (admin.conf, or `kubeadm kubeconfig user`'s output): its
    current context picks the cluster and user kept.
    """
    doc = load(text)
    contexts = {c.get("name"): c.get("context") or {} for c in doc.get("contexts") or []}
    ctx = contexts.get(doc.get("current-context")) or next(iter(contexts.values()), {})
    clusters = {c.get("name"): c.get("cluster") or {} for c in doc.get("clusters") or []}
    users = {u.get("name"): u.get("user") or {} for u in doc.get("users") or []}
    cluster = dict(clusters.get(ctx.get("cluster")) or next(iter(clusters.values()), {}))
    user = dict(users.get(ctx.get("user")) or next(iter(users.values()), {}))
    if not cluster:
        raise KubeconfigError("kubeconfig: it has no cluster")
    cluster["server"] = server
    return dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": names.cluster, "cluster": cluster}],
        "users": [{"name": names.user, "user": user}],
        "contexts": [{"name": names.context, "context": {"cluster": names.cluster, "user": names.user}}],
        "current-context": names.context, "preferences": {},
    })


def merge(existing: str, new: str) -> str:
    """`new`'s clusters, users and contexts laid over `existing`'s, replacing same-named entries
    in place and appending the others; every other entry and field is kept. The current context
    becomes new's only when `existing` has none (switch with `kubectl config use-context`)."""
    old = load(existing, "existing kubeconfig")
    add = load(new)
    out = dict(old) if old else {"apiVersion": "v1", "kind": "Config", "preferences": {}}
    for key in ("clusters", "users", "contexts"):
        entries = list(old.get(key) or [])
        index = {e.get("name"): i for i, e in enumerate(entries) if isinstance(e, dict)}
        for e in add.get(key) or []:
            if e.get("name") in index:
                entries[index[e.get("name")]] = e
            else:
                entries.append(e)
        out[key] = entries
    if not out.get("current-context") and add.get("current-context"):
        out["current-context"] = add["current-context"]
    return dump(out)


def secret_values(text: str) -> list[str]:
    """Every credential in a kubeconfig (to register with the run log's redaction)."""
    try:
        doc = load(text)
    except KubeconfigError:
        return []
    values = []
    for u in doc.get("users") or []:
        for f in _SECRET_FIELDS:
            v = (u.get("user") or {}).get(f) if isinstance(u, dict) else None
            if isinstance(v, str) and v:
                values.append(v)
                try:
                    values += [ln for ln in base64.b64decode(v).decode().splitlines()
                               if len(ln) >= 16 and not ln.startswith("-----")]
                except (ValueError, UnicodeDecodeError):
                    pass
    return values


def client_cert_expiry(text: str) -> dt.datetime | None:
    """When the current user's client certificate expires (None: no certificate in the file)."""
    from cryptography import x509

    doc = load(text)
    for u in doc.get("users") or []:
        data = (u.get("user") or {}).get("client-certificate-data")
        if not data:
            continue
        try:
            cert = x509.load_pem_x509_certificate(base64.b64decode(data))
        except ValueError:
            return None
        return cert.not_valid_after_utc
    return None


def write_private(path: Path, content: str) -> None:
    """Write a file only its owner can read (mode 0600 from the moment it exists), atomically:
    a temporary file created 0600 beside it, then renamed over it."""
    _atomic_write(path, content, 0o600)


def write_merged(path: Path, content: str) -> None:
    """Replace a kubeconfig that already exists, atomically, keeping its mode (a new file: 0600)."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    _atomic_write(path, content, mode)


def _atomic_write(path: Path, content: str, mode: int) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".gpuk8s-new", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        if mode != 0o600:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def default_merge_target() -> Path:
    """Where `--merge` writes: $KUBECONFIG's first file (as kubectl reads it), else ~/.kube/config."""
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), None)
    return Path(first).expanduser() if first else Path.home() / ".kube" / "config"
