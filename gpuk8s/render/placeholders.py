"""What a dry run or an offline `gpuk8s render` puts where a live run has real values: one place.

The secrets and the CA hash are well formed (kubeadm would parse them) and obviously fake; the
containerd default is our snapshot of `containerd config default` for the config version that
containerd writes.
"""

from __future__ import annotations

from gpuk8s.render.base import ClusterSecrets, template_text
from gpuk8s.shell import Secret
from gpuk8s.versions import native_config_version, parse_version

# The CA certificate hash before kubeadm init has made the CA (computed from ca.crt after it).
PLACEHOLDER_CA_HASH = "sha256:" + "0" * 64

PLACEHOLDER_SECRETS = ClusterSecrets(Secret("gpuk8s.placeholder00000"), Secret("0" * 64))

# Snapshot of `containerd config default` per containerd release (templates/containerd/): the
# output of containerd built from the tag named, for the releases from the first one given up to
# the next entry. tests/unit/data/containerd-default-<tag>.toml hold the same texts with where
# they came from. Within a minor the output changed where a backport changed it: commit 56cde7d2c
# ("add SystemdCgroup to default runtime options", internal/cri/config/config_unix.go) is in
# v2.0.7 and v2.1.5; before it runc's options table has no SystemdCgroup key at all. 2.1 replaced
# cni.bin_dir by bin_dirs, 2.2 added imports = ['/etc/containerd/conf.d/*.toml']
# (cmd/containerd/command/config.go, v2.2.0), 2.3 writes version 4 (version/version.go). Every
# one of them prints SystemdCgroup = false where it prints it: no release turns it on or detects
# systemd. Newest first.
_CONTAINERD_DEFAULTS: tuple[tuple[tuple[int, int, int], str], ...] = (
    ((2, 3, 0), "containerd/default-2.3.toml"),     # v2.3.4
    ((2, 2, 0), "containerd/default-2.2.toml"),     # v2.2.7
    ((2, 1, 5), "containerd/default-2.1.toml"),     # v2.1.9
    ((2, 1, 0), "containerd/default-2.1.4.toml"),   # v2.1.4: no SystemdCgroup
    ((2, 0, 7), "containerd/default-2.0.toml"),     # v2.0.11
    ((2, 0, 0), "containerd/default-2.0.6.toml"),   # v2.0.6: no SystemdCgroup
    ((0, 0, 0), "containerd/default-1.7.toml"),     # v1.7.34: config version 2
)
# A version without its patch ("2.1", the matrix's) is whatever patch the repository installs:
# the newest.
_NEWEST_PATCH = 1 << 30


def containerd_default_name(containerd_version: str) -> str:
    """The template with the `containerd config default` output of that containerd release."""
    native_config_version(containerd_version)     # a clear error for a bad version
    v = parse_version(containerd_version) or ()
    key = (v + (_NEWEST_PATCH,))[:3] if len(v) == 2 else (v + (0, 0, 0))[:3]
    return next(name for first, name in _CONTAINERD_DEFAULTS if key >= first)


def containerd_default(containerd_version: str) -> str:
    """Our snapshot of `containerd config default` of that containerd release (its config version
    is the one that containerd writes)."""
    return template_text(containerd_default_name(containerd_version))
