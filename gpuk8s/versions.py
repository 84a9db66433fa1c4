"""Pinned versions, the compatibility matrix and timeouts: the one place they live.

Sources (see ../shared/docs/DOMAIN.md section 1): Kubernetes release notes (containerd 2.0 is
required from 1.36; cgroup v1 refused by default from 1.35), Calico system requirements, GPU
Operator platform support. The inventory's `versions:` block overrides any default here
(`resolve_release`, applied once when the inventory loads).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from gpuk8s.errors import UsageError

CUDA_SMOKE_IMAGE = "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0-ubuntu22.04"
# kube-vip (cluster.vip, docs/ha.md): the static pod that holds the control-plane VIP (ARP).
# v1.0.4: github.com/kube-vip/kube-vip/releases; the image is ghcr.io/kube-vip/kube-vip:<tag>.
KUBE_VIP_VERSION = "v1.0.4"
KUBE_VIP_IMAGE = "ghcr.io/kube-vip/kube-vip"


@dataclass(frozen=True)
class Release:
    """What gpuk8s installs and accepts for one Kubernetes minor."""

    minor: str                   # "1.36"
    patch: str                   # exact patch installed: "1.36.2" (or the inventory's patch)
    containerd_min: str          # oldest containerd accepted ("2.0" from 1.36)
    containerd: str              # containerd `up` installs: matrix default or versions.containerd
    kubeadm_api: str             # kubeadm config API version
    calico: str                  # Calico (tigera-operator) release
    gpu_operator: str            # NVIDIA GPU Operator chart version
    pause_image: str             # sandbox image kubeadm expects
    cgroup_v1_allowed: bool      # kubelet refuses cgroup v1 by default from 1.35
    cuda_image: str = CUDA_SMOKE_IMAGE   # image of the CUDA smoke-test pod
    containerd_pinned: bool = False      # versions.containerd given: installed must match it
    helm: str = "4.2.3"                  # Helm `up` installs on the first control plane
    helm_archive: str | None = None      # local helm-v<ver>-linux-<arch>.tar.gz (air-gapped)
    helm_sha256: str | None = None       # its sha256 (required unless HELM_SHA256 pins it)
    gpu_operator_chart: str | None = None  # local gpu-operator-<ver>.tgz instead of the repo
    cuda_image_pinned: bool = False      # versions.cuda_image given: used on every node
    kube_vip: str = KUBE_VIP_VERSION     # kube-vip image tag (cluster.vip) or versions.kube_vip

    def accepts_containerd(self, installed: str | None) -> bool:
        """An installed containerd is new enough and, when pinned, matches the pinned prefix."""
        have = parse_version(installed)
        if have is None or have < (parse_version(self.containerd_min) or ()):
            return False
        return not self.containerd_pinned or installed == self.containerd or \
            installed.startswith(self.containerd + ".")


# Newest first. Every combination here is inside the published support tables.
MATRIX: dict[str, Release] = {
    r.minor: r
    for r in (
        Release("1.36", "1.36.2", "2.0", "2.1", "v1beta4", "3.32.0", "v26.7.0",
                "registry.k8s.io/pause:3.10.1", False),
        Release("1.35", "1.35.6", "1.7", "2.1", "v1beta4", "3.31.3", "v26.7.0",
                "registry.k8s.io/pause:3.10.1", False),
        Release("1.34", "1.34.9", "1.7", "2.1", "v1beta4", "3.31.3", "v26.7.0",
                "registry.k8s.io/pause:3.10.1", True),
        Release("1.33", "1.33.12", "1.7", "1.7", "v1beta4", "3.30.4", "v26.7.0",
                "registry.k8s.io/pause:3.10", True),
    )
}

DEFAULT_KUBERNETES_MINOR = next(iter(MATRIX))
HELM_MIN = "3.12"

# --------------------------------------------------------------------------------------------
# Helm, the GPU Operator chart and the CUDA smoke image (docs/gpu.md says why each is pinned)
# --------------------------------------------------------------------------------------------

# Helm 4: GA since Nov 2025; Helm 3 gets its last feature release 2026-09-09 and security fixes
# only until 2027-02-10 (helm.sh/blog/helm-v3-end-of-life), shorter than a cluster's life.
HELM_VERSION = "4.2.3"
HELM_SUPPORTED_MAJORS = (3, 4)       # 3.x still accepted as an override (HELM_MIN or newer)
# sha256 of get.helm.sh/helm-v<ver>-linux-<arch>.tar.gz, from the release page
# (github.com/helm/helm/releases/tag/v4.2.3, "Installation and Upgrading").
HELM_SHA256: dict[tuple[str, str], str] = {
    ("4.2.3", "amd64"): "e9b88b4ee95b18c706839c28d3a0220e5bc470e9cd9262410c90793c45ff8b7c",
    ("4.2.3", "arm64"): "21abd9354d39b2cd79a8d76be6912cd137a983cbf997193503fb8a6a6e2f2785",
}
HELM_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def helm_arch(machine: str | None) -> str | None:
    """`uname -m` -> Helm's archive arch (amd64, arm64), None when Helm ships none gpuk8s uses."""
    return HELM_ARCHES.get((machine or "").lower())


def helm_archive_url(version: str, arch: str) -> str:
    return f"https://get.helm.sh/helm-v{version}-linux-{arch}.tar.gz"


def helm_checksum(release: "Release", arch: str) -> str | None:
    """The sha256 the Helm archive for `arch` must have: the inventory's, else the pinned one."""
    return release.helm_sha256 or HELM_SHA256.get((release.helm, arch))


# NVIDIA's Helm repository and chart; the release name and namespace gpuk8s uses.
GPU_OPERATOR_REPO = "https://helm.ngc.nvidia.com/nvidia"
GPU_OPERATOR_CHART = "nvidia/gpu-operator"
GPU_OPERATOR_NAMESPACE = "gpu-operator"
GPU_OPERATOR_RELEASE_NAME = "gpu-operator"
GPU_OPERATOR_DEFAULT_DRIVER = "595.91.07"    # driver.version in the v26.7.0 chart's values.yaml
# The OS tags NVIDIA builds driver container images for (NVIDIA/gpu-driver-container
# .common-ci.yml @06a208ca, its `.dist-*` DIST values). The operator pulls
# nvcr.io/nvidia/driver:<version>-<tag>, the tag being the GPU node's os-release ID + VERSION_ID,
# the major version only for rhel, rocky and ol (gpu-operator v26.7.0 controllers/
# state_manager.go getGPUNodeOSInfo); any other tag does not exist (ErrImagePull).
GPU_DRIVER_IMAGE_OS_TAGS = ("ubuntu22.04", "ubuntu24.04", "ubuntu26.04", "rhel8", "rhel9", "rhel10",
                            "rocky8", "rocky9", "rocky10")


def driver_image_os_tag(os_id: str, version_id: str) -> str:
    """The OS part of the operator's driver image tag for a node's /etc/os-release."""
    if os_id in ("rhel", "rocky", "ol"):
        version_id = version_id.split(".")[0]
    return f"{os_id}{version_id}"

# GPU Operator majors still supported (life-cycle-policy.rst: 26.7.x supported, 26.3.x
# deprecated = patches only, 25.10.x and lower end of support) -> Kubernetes minors validated
# on bare metal (platform-support.rst).
GPU_OPERATOR_SUPPORT: dict[tuple[int, int], tuple[str, tuple[int, int], tuple[int, int]]] = {
    (26, 7): ("supported", (1, 33), (1, 36)),
    (26, 3): ("deprecated", (1, 32), (1, 35)),
}

# CUDA smoke images, newest first: (CUDA version of the image, image, oldest driver whose CUDA
# version is at least the image's). The toolkit refuses an image whose NVIDIA_REQUIRE_CUDA is
# newer than the driver ("unsatisfied condition: cuda>=12.5"), so a node gets the newest image
# its driver runs. Driver minimums: CUDA Toolkit release notes, table 3 (Linux x86_64).
CUDA_SMOKE_IMAGES: tuple[tuple[tuple[int, int], str, str], ...] = (
    ((12, 5), CUDA_SMOKE_IMAGE, "555.42.02"),
    ((11, 7), "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda11.7.1-ubuntu20.04", "515.43.04"),
    ((10, 2), "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda10.2", "440.33"),
)


def cuda_image_for(release: "Release", *, cuda_version: str | None = None,
                   driver_version: str | None = None) -> str | None:
    """The smoke image for one node: versions.cuda_image when given; else the newest image whose
    CUDA is no newer than the node's (nvidia-smi's "CUDA Version", else derived from the driver
    version; with neither, the chart's default driver). None: the driver is too old for any."""
    if release.cuda_image_pinned:
        return release.cuda_image
    cuda = parse_version(cuda_version)
    driver = parse_version(driver_version or GPU_OPERATOR_DEFAULT_DRIVER)
    for image_cuda, image, min_driver in CUDA_SMOKE_IMAGES:
        if cuda is not None:
            if cuda[:2] >= image_cuda:
                return image
        elif driver is not None and driver >= parse_version(min_driver):
            return image
    return None


def driver_branch(version: str | None) -> int | None:
    """'595.91.07' or '580' -> 595 / 580."""
    v = parse_version(version) if version and "." in version else None
    if v:
        return v[0]
    return int(version) if version and version.strip().isdigit() else None


def gpu_operator_support(version: str) -> tuple[str, tuple[int, int], tuple[int, int]] | None:
    v = parse_version(version)
    return GPU_OPERATOR_SUPPORT.get(v[:2]) if v and len(v) >= 2 else None
CALICO_OLDEST = (3, 26)          # the manifests gpuk8s applies start at 3.26

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


# --------------------------------------------------------------------------------------------
# The inventory's `versions:` overrides: validated at load (with file and line), applied once
# --------------------------------------------------------------------------------------------

_IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*")
_CALICO_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
_GPU_OPERATOR_RE = re.compile(r"v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.]+)?")
_CONTAINERD_RE = re.compile(r"v?\d+\.\d+(?:\.\d+)?")


def calico_release(text: str) -> tuple[int, int, int] | None:
    """'v3.31.3' or '3.31.3' -> (3, 31, 3); None when it is not a Calico release number."""
    m = _CALICO_RE.fullmatch(text.strip())
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def _image_error(value: str, example: str) -> str | None:
    if _IMAGE_RE.fullmatch(value):
        return None
    return f"'{value}' is not an image reference like {example}"


def _calico_error(value: str) -> str | None:
    v = calico_release(value)
    if v is None:
        return f"'{value}' is not a Calico release like 3.31.3"
    if v[:2] < CALICO_OLDEST:
        return (f"Calico {value} is older than {CALICO_OLDEST[0]}.{CALICO_OLDEST[1]}, "
                "the oldest gpuk8s installs")
    return None


def _gpu_operator_error(value: str, release: Release | None = None) -> str | None:
    if not _GPU_OPERATOR_RE.fullmatch(value):
        return f"'{value}' is not a GPU Operator chart version like v26.7.0"
    support = gpu_operator_support(value)
    supported = ", ".join(f"{a}.{b}.x ({s})" for (a, b), (s, _, _) in GPU_OPERATOR_SUPPORT.items())
    if support is None:
        return (f"GPU Operator {value} is not a supported release (NVIDIA supports {supported}; "
                "older ones are out of support)")
    if release is not None:
        _, lo, hi = support
        k = parse_version(release.minor)[:2]
        if not lo <= k <= hi:
            return (f"GPU Operator {value} is not validated on Kubernetes {release.minor} "
                    f"(only {lo[0]}.{lo[1]} to {hi[0]}.{hi[1]})")
    return None


_HELM_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _helm_error(value: str) -> str | None:
    m = _HELM_RE.fullmatch(value.strip())
    if not m:
        return f"'{value}' is not a Helm release like {HELM_VERSION}"
    v = tuple(int(g) for g in m.groups())
    if v[0] not in HELM_SUPPORTED_MAJORS or v[:2] < parse_version(HELM_MIN):
        return (f"Helm {value} is not supported: use Helm 4 ({HELM_VERSION} is tested) or "
                f"Helm 3.{parse_version(HELM_MIN)[1]} or newer")
    return None


def _path_error(value: str, suffixes: tuple[str, ...], example: str) -> str | None:
    if any(ord(c) < 0x20 for c in value):
        return "must not contain control characters"
    if not value.endswith(suffixes):
        return f"'{value}' is not an archive path like {example}"
    return None


def _containerd_error(value: str, release: Release | None) -> str | None:
    if not _CONTAINERD_RE.fullmatch(value):
        return f"'{value}' is not a containerd version like 2.1 or 1.7.27"
    if release is None:
        return None
    have, need = parse_version(value), parse_version(release.containerd_min)
    if need is not None and have[:2] < need[:2]:
        return (f"containerd {value} is too old for Kubernetes {release.minor}: it needs "
                f"containerd {release.containerd_min} or newer")
    return None


def override_error(key: str, value: str, release: Release | None = None) -> str | None:
    """Why `versions.<key>: value` cannot be used, or None; release None skips the minimums
    that depend on the Kubernetes minor (containerd's)."""
    if key == "containerd":
        return _containerd_error(value, release)
    if key == "calico":
        return _calico_error(value)
    if key == "gpu_operator":
        return _gpu_operator_error(value, release)
    if key == "helm":
        return _helm_error(value)
    if key == "helm_archive":
        return _path_error(value, (".tar.gz", ".tgz"), "/srv/mirror/helm-v4.2.3-linux-amd64.tar.gz")
    if key == "helm_sha256":
        return None if _SHA256_RE.fullmatch(value.strip().lower()) else \
            f"'{value}' is not a sha256 (64 hex digits)"
    if key == "gpu_operator_chart":
        return _path_error(value, (".tgz", ".tar.gz"), "/srv/mirror/gpu-operator-v26.7.0.tgz")
    if key == "pause_image":
        return _image_error(value, "registry.k8s.io/pause:3.10")
    if key == "cuda_image":
        return _image_error(value, CUDA_SMOKE_IMAGE)
    if key == "kube_vip":
        return None if _KUBE_VIP_RE.fullmatch(value.strip()) else \
            f"'{value}' is not a kube-vip release like {KUBE_VIP_VERSION}"
    raise KeyError(key)


_KUBE_VIP_RE = re.compile(r"v?\d+\.\d+\.\d+")


def _normalized(key: str, value: str) -> str:
    """Version numbers without a leading 'v' (containerd, Calico, Helm); images as given."""
    if key == "helm_sha256":
        return value.strip().lower()
    if key == "kube_vip":   # the image tag: v1.0.4
        return "v" + value.strip().lstrip("v")
    return value.strip().lstrip("v") if key in ("containerd", "calico", "helm") else value


def combined_override_errors(given: dict[str, str]) -> dict[str, str]:
    """Problems between `versions:` keys (key -> message): an archive without a checksum."""
    problems: dict[str, str] = {}
    helm = _normalized("helm", given.get("helm") or HELM_VERSION)
    pinned = any(v == helm for v, _ in HELM_SHA256)
    if given.get("helm_archive") and not given.get("helm_sha256") and not pinned:
        problems["helm_archive"] = (f"needs versions.helm_sha256: gpuk8s pins no checksum for "
                                    f"Helm {helm}")
    if given.get("helm") and not pinned and not given.get("helm_sha256"):
        problems["helm"] = (f"needs versions.helm_sha256 (the archive's sha256 for the first "
                            f"control plane's architecture): gpuk8s pins checksums for Helm "
                            f"{', '.join(sorted({v for v, _ in HELM_SHA256}))} only")
    return problems


def resolve_release(kubernetes_version: str, **overrides: str | None) -> Release:
    """The matrix row for a Kubernetes minor or patch, with that patch and every override applied.

    overrides are the inventory's `versions:` keys (containerd, calico, gpu_operator, cuda_image,
    pause_image, helm, helm_archive, helm_sha256, gpu_operator_chart); None or "" leaves the
    matrix value.
    """
    release = release_for(kubernetes_version)
    if release is None:
        raise UsageError(f"Kubernetes {kubernetes_version} is not supported by this gpuk8s; "
                         f"supported minors: {', '.join(supported_minors())}")
    given = {k: v for k, v in overrides.items() if v}
    problems = [f"versions.{k}: {err}" for k, v in given.items()
                if (err := override_error(k, v, release))]
    problems += [f"versions.{k}: {err}" for k, err in combined_override_errors(given).items()]
    if problems:
        raise UsageError("\n".join(problems))
    changes: dict[str, object] = {k: _normalized(k, v) for k, v in given.items()}
    v = parse_version(kubernetes_version)
    if v is not None and len(v) >= 3:
        changes["patch"] = f"{v[0]}.{v[1]}.{v[2]}"
    if "containerd" in given:
        changes["containerd_pinned"] = True
    if "cuda_image" in given:
        changes["cuda_image_pinned"] = True
    return dataclasses.replace(release, **changes) if changes else release


# --------------------------------------------------------------------------------------------
# containerd's configuration file: its version per release, and where CRI lives in each version
# --------------------------------------------------------------------------------------------

# The config version `containerd config default` writes, by first release: containerd 1.x writes
# version 2 (cmd/containerd/command/config.go, v1.7.27); from 2.0 it writes the ConfigVersion
# constant of version/version.go: 3 in v2.0.0 to v2.2.x, 4 from v2.3.0. Version 4 moved the
# server settings ([grpc], [ttrpc], [debug] address, [metrics]) into the io.containerd.server.v1.*
# plugins (serviceMigrate in cmd/containerd/server/config/config.go, v2.3.0); the CRI tables kept
# their ids and layout.
_NATIVE_CONFIG_VERSIONS = (((2, 3), 4), ((2, 0), 3), ((1, 0), 2))


def native_config_version(containerd_version: str) -> int:
    """The config version this containerd writes by default: 2 for 1.x, 3 for 2.0-2.2, 4 after."""
    v = parse_version(containerd_version)
    if v is None:
        raise UsageError(f"containerd version '{containerd_version}' is not a version like 2.1.4")
    for first, config_version in _NATIVE_CONFIG_VERSIONS:
        if v[:2] >= first:
            return config_version
    raise UsageError(f"containerd {containerd_version} is too old")


@dataclass(frozen=True)
class CRIPlugins:
    """Where one containerd config version keeps the CRI settings gpuk8s reads and edits."""

    runtime: str                      # table with containerd.runtimes.runc.options and cni
    images: str                       # table with the sandbox (pause) image
    sandbox_image: tuple[str, ...]    # key path of the sandbox image inside `images`


CRI_V1 = CRIPlugins("cri", "cri", ("sandbox_image",))            # version 1: short ids
CRI_V2 = CRIPlugins("io.containerd.grpc.v1.cri", "io.containerd.grpc.v1.cri", ("sandbox_image",))
# containerd 2.x split CRI into a runtime and an images plugin (config versions 3 and 4).
CRI_V3 = CRIPlugins("io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images",
                    ("pinned_images", "sandbox"))
CRI_BY_CONFIG_VERSION: dict[int, CRIPlugins] = {1: CRI_V1, 2: CRI_V2, 3: CRI_V3, 4: CRI_V3}
# Every id that turns CRI off when listed in disabled_plugins.
CRI_PLUGIN_IDS = ("cri", CRI_V2.runtime, CRI_V3.runtime, CRI_V3.images)


def cri_plugins(config_version: int) -> CRIPlugins:
    """The CRI plugin ids of a config version (0 or missing is 1; newer than known: the newest)."""
    newest = max(CRI_BY_CONFIG_VERSION)
    return CRI_BY_CONFIG_VERSION[min(max(config_version, 1), newest)]
