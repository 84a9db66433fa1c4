"""What a dry run or an offline `gpuk8s render` puts where a live run has real values: one place.

The secrets and the CA hash are well formed (kubeadm would parse them) and obviously fake; the
containerd default is our snapshot of `containerd config default` for the config version that
containerd writes.
"""

from __future__ import annotations

from gpuk8s.render.base import ClusterSecrets, template_text
from gpuk8s.shell import Secret
from gpuk8s.versions import native_config_version

# The CA certificate hash before kubeadm init has made the CA (computed from ca.crt after it).
PLACEHOLDER_CA_HASH = "sha256:" + "0" * 64

PLACEHOLDER_SECRETS = ClusterSecrets(Secret("gpuk8s.placeholder00000"), Secret("0" * 64))

# Snapshot of `containerd config default` per config version (templates/containerd/).
_CONTAINERD_DEFAULTS = {
    2: "containerd/default-1.7.toml",
    3: "containerd/default-2.1.toml",
    4: "containerd/default-2.3.toml",
}


def containerd_default(containerd_version: str) -> str:
    """Our snapshot of `containerd config default` in the config version of that containerd."""
    return template_text(_CONTAINERD_DEFAULTS[native_config_version(containerd_version)])
