"""What every renderer shares: RenderedFile, ClusterSecrets, the YAML/line filters, the templates.

Templates are read from the package gpuk8s.templates (templates/ at the top of the repository,
installed inside gpuk8s) through importlib.resources, so an editable install, a regular one and a
zipped one all find the same files. One Jinja2 environment (StrictUndefined) serves every render.
"""

from __future__ import annotations

import functools
import re
import secrets as _secrets
import string
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jinja2
import yaml

from gpuk8s.errors import UsageError
from gpuk8s.shell import Secret

TEMPLATES_PACKAGE = "gpuk8s.templates"

_TOKEN_RE = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")
_CERT_KEY_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RenderedFile:
    """One rendered file: an absolute path on `host`, or "cluster/<name>.yaml" for kubectl."""

    path: str
    content: str
    mode: int = 0o644
    secret: bool = False
    host: str | None = None                       # None: a cluster manifest
    secret_values: tuple[str, ...] = field(default=(), compare=False)

    def masked(self) -> str:
        """The content with every secret value replaced by *** (for dry-run and logs)."""
        text = self.content
        for value in sorted(self.secret_values, key=len, reverse=True):
            if value:
                text = text.replace(value, "***")
        return text

    def __repr__(self) -> str:  # never show content: it may hold a token
        return (f"RenderedFile(path={self.path!r}, host={self.host!r}, mode={oct(self.mode)}, "
                f"secret={self.secret}, {len(self.content)} chars)")


@dataclass(frozen=True)
class ClusterSecrets:
    token: Secret            # bootstrap token [a-z0-9]{6}.[a-z0-9]{16}
    certificate_key: Secret  # 64 hex chars (AES-256 key for the uploaded certificates)

    def __post_init__(self) -> None:
        if not _TOKEN_RE.fullmatch(self.token.reveal()):
            raise ValueError("bootstrap token must match [a-z0-9]{6}.[a-z0-9]{16}")
        if not _CERT_KEY_RE.fullmatch(self.certificate_key.reveal()):
            raise ValueError("certificate key must be 64 lowercase hex characters")

    @staticmethod
    def generate() -> "ClusterSecrets":
        """Fresh random secrets for one `up` run."""
        alphabet = string.ascii_lowercase + string.digits
        token_id = "".join(_secrets.choice(alphabet) for _ in range(6))
        token_secret = "".join(_secrets.choice(alphabet) for _ in range(16))
        return ClusterSecrets(Secret(f"{token_id}.{token_secret}"),
                              Secret(_secrets.token_hex(32)))

    @staticmethod
    def placeholder() -> "ClusterSecrets":
        """The fixed, obviously fake secrets of `gpuk8s render` and dry runs (placeholders.py)."""
        # placeholders.py builds its value from this class, so it is imported on first use.
        from gpuk8s.render.placeholders import PLACEHOLDER_SECRETS
        return PLACEHOLDER_SECRETS

    def is_placeholder(self) -> bool:
        return self == ClusterSecrets.placeholder()

    def values(self) -> tuple[str, ...]:
        return (self.token.reveal(), self.certificate_key.reveal())


def yaml_scalar(value: Any) -> str:
    """A YAML scalar that yaml.safe_load reads back as exactly `value` (strings double-quoted)."""
    if isinstance(value, Secret):
        raise TypeError("reveal() a Secret explicitly and list it in RenderedFile.secret_values")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"the yaml filter takes a string, number, boolean or None, "
                        f"not {type(value).__name__}")
    out = yaml.dump(value, Dumper=yaml.SafeDumper, default_style='"', width=2 ** 31,
                    allow_unicode=True).rstrip("\n")
    if out.endswith("\n..."):
        out = out[:-4].rstrip("\n")
    if "\n" in out or yaml.safe_load(out) != value:
        raise UsageError(f"cannot write {value!r} as a single-line YAML value")
    return out


def plain_line(value: Any) -> str:
    """A value for a plain-text line (repository files): no control characters at all."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"the line filter takes a string or number, not {type(value).__name__}")
    text = str(value)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise UsageError(f"refusing to write {text!r}: it contains control characters")
    return text


def _resource(name: str) -> resources.abc.Traversable:
    """templates/<name> ("kubeadm/init.yaml.j2") inside the installed gpuk8s.templates."""
    node = resources.files(TEMPLATES_PACKAGE)
    for part in name.split("/"):
        node = node / part
    return node


def template_text(name: str) -> str:
    """The raw text of templates/<name>, e.g. a shipped containerd default configuration."""
    return _resource(name).read_text(encoding="utf-8")


def _load(name: str) -> tuple[str, None, Any] | None:
    """Jinja2 loader: the template's source, or None (TemplateNotFound) when there is none."""
    node = _resource(name)
    if not node.is_file():
        return None
    # Installed templates do not change while gpuk8s runs: a compiled template stays valid.
    return node.read_text(encoding="utf-8"), None, lambda: True


@functools.cache
def environment() -> jinja2.Environment:
    """The one Jinja2 environment (built on first use): undefined names are errors."""
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_load),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["yaml"] = yaml_scalar
    env.filters["line"] = plain_line
    return env


def render_template(name: str, **context: Any) -> str:
    """Render templates/<name> with the given values (undefined names are errors)."""
    return environment().get_template(name).render(**context)
