"""Pinned versions, the compatibility matrix and timeouts: the one place they live.

Sources (see ../shared/docs/DOMAIN.md section 1): Kubernetes release notes (containerd 2.0 is
required from 1.36; cgroup v1 refused by default from 1.35), Calico system requirements, GPU
Operator platform support. The inventory's `versions:` block overrides any default here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Release:
    """What gpuk8s installs and accepts for one Kubernetes minor."""

    minor: str                   # "1.36"
    patch: str                   # default exact patch installed: "1.36.2"
    containerd_min: str          # oldest containerd accepted ("2.0" from 1.36)
    containerd_default: str      # containerd minor installed by default
    kubeadm_api: str             # kubeadm config API version
    calico: str                  # Calico (tigera-operator) release
    gpu_operator: str            # NVIDIA GPU Operator chart version
    pause_image: str             # sandbox image kubeadm expects
    cgroup_v1_allowed: bool      # kubelet refuses cgroup v1 by default from 1.35


# Newest first. Every combination here is inside the published support tables.
MATRIX: dict[str, Release] = {
    r.minor: r
    for r in (
        Release("1.36", "1.36.2", "2.0", "2.1", "v1beta4", "3.32.0", "v26.7.0",
                "registry.k8s.io/pause:3.10.1", False),
        Release("1.35", "1.35.6", "1.7", "2.1", "v1beta4", "3.31.3", "v26.7.0",
                "registry.k8s.io/pause:3.10.1", False),
        Release("1.34", "1.34.9", "1.7", "2.1", "v1beta4", "3.31.3", "v26.3.1",
                "registry.k8s.io/pause:3.10.1", True),
        Release("1.33", "1.33.12", "1.7", "1.7", "v1beta4", "3.30.4", "v26.3.1",
                "registry.k8s.io/pause:3.10", True),
    )
}

DEFAULT_KUBERNETES_MINOR = next(iter(MATRIX))
HELM_MIN = "3.12"
CUDA_SMOKE_IMAGE = "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0-ubuntu22.04"

# Hardware minimums kubeadm enforces on control planes (cmd/kubeadm/app/constants).
CONTROL_PLANE_MIN_CPUS = 2
CONTROL_PLANE_MIN_MEMORY_MIB = 1700

# Timeouts (seconds).
SSH_CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 60.0
PROBE_TIMEOUT = 60.0

# Supported operating systems: id -> (supported major versions, best-effort versions).
SUPPORTED_OS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ubuntu": (("22.04", "24.04"), ()),
    "rhel": (("9",), ("10",)),
    "rocky": (("9",), ("10",)),
    "almalinux": (("9",), ("10",)),
    "debian": ((), ("12", "13")),
}
# OS id (os-release ID or ID_LIKE) -> package family: "debian" (apt) or "rhel" (dnf).
OS_FAMILIES: dict[str, str] = {
    "debian": "debian", "ubuntu": "debian",
    "rhel": "rhel", "centos": "rhel", "fedora": "rhel", "rocky": "rhel", "almalinux": "rhel",
    "ol": "rhel", "amzn": "rhel",
}

# Known to be unsuitable, with the reason shown to the user.
REJECTED_OS: dict[str, str] = {
    "centos": "CentOS Linux is end of life and ships cgroup v1 and an old kernel",
    "amzn": "Amazon Linux is not supported by kubeadm's packages or the GPU Operator on bare metal",
}

_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """The first dotted version in text as a tuple: 'v1.36.2' -> (1, 36, 2)."""
    if not text:
        return None
    m = _VERSION_RE.search(text)
    if not m:
        return None
    return tuple(int(g) for g in m.groups() if g is not None)


def minor_of(version: str) -> str | None:
    """'1.36.2' or 'v1.36' -> '1.36'."""
    v = parse_version(version)
    return f"{v[0]}.{v[1]}" if v else None


def release_for(kubernetes_version: str) -> Release | None:
    """The matrix row for a Kubernetes minor or patch version, or None if unsupported."""
    minor = minor_of(kubernetes_version)
    return MATRIX.get(minor) if minor else None


def supported_minors() -> list[str]:
    return list(MATRIX)
