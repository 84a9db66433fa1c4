"""Parsers of the probe's container-runtime and Kubernetes sections: containerd, kube tools, CNI."""

from __future__ import annotations

import functools
import re
from dataclasses import replace
from typing import Any

from gpuk8s.facts.model import ContainerdConfig
from gpuk8s.facts.text import nonblank_lines

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from gpuk8s.versions import CRI_PLUGIN_IDS, CRI_V2, CRI_V3

_CRI_V2 = CRI_V2.runtime              # config version 2 (containerd 1.x)
_CRI_V3_RUNTIME = CRI_V3.runtime      # config versions 3 and 4 (containerd 2.x)
_CRI_V3_IMAGES = CRI_V3.images


def parse_containerd_version(text: str | None) -> str | None:
    """`containerd --version` -> "2.1.4" (handles "containerd containerd.io 1.7.27 <sha>")."""
    for line in nonblank_lines(text):
        if not line.startswith("containerd"):
            continue
        for word in line.split()[1:]:
            m = re.fullmatch(r"v?(\d+\.\d+\.\d+\S*)", word)
            if m:
                return m.group(1)
    return None


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def parse_containerd_config(text: str | None) -> ContainerdConfig:
    """Parse /etc/containerd/config.toml and find SystemdCgroup in the table of its version.

    A fleet mostly carries identical files: each distinct text is parsed once per run.
    """
    return replace(_parse_containerd_config(text))


@functools.lru_cache(maxsize=256)
def _parse_containerd_config(text: str | None) -> ContainerdConfig:
    if text is None or not text.strip():
        return ContainerdConfig(present=bool(text is not None and text != ""))
    cfg = ContainerdConfig(present=True)
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as e:  # RecursionError: [[[[... nesting
        cfg.parse_error = str(e) or type(e).__name__
        return cfg
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        cfg.parse_error = f"version = {version!r} is not a number"
        return cfg
    cfg.version = version
    disabled = data.get("disabled_plugins") or []
    cfg.cri_disabled = isinstance(disabled, list) and any(p in CRI_PLUGIN_IDS[:3] for p in disabled)
    plugins = data.get("plugins") or {}
    v1_opts = _dig(plugins, "cri", "containerd", "runtimes", "runc", "options")
    v2_opts = _dig(plugins, _CRI_V2, "containerd", "runtimes", "runc", "options")
    v3_opts = _dig(plugins, _CRI_V3_RUNTIME, "containerd", "runtimes", "runc", "options")
    # Version 1 files name plugins by short id ([plugins.cri]); version 2 and 3 by full id.
    if cfg.version >= 3:
        native, others = v3_opts, (v2_opts, v1_opts)
    elif cfg.version == 2:
        native, others = v2_opts, (v3_opts, v1_opts)
    else:
        native, others = v1_opts, (v2_opts, v3_opts)
    if isinstance(native, dict) and "SystemdCgroup" in native:
        cfg.systemd_cgroup = bool(native["SystemdCgroup"])
    elif any(isinstance(o, dict) and "SystemdCgroup" in o for o in others):
        cfg.systemd_cgroup_misplaced = True
    if cfg.version >= 3:
        cfg.sandbox_image = _dig(plugins, _CRI_V3_IMAGES, "pinned_images", "sandbox")
    elif cfg.version == 2:
        cfg.sandbox_image = _dig(plugins, _CRI_V2, "sandbox_image")
    else:
        cfg.sandbox_image = _dig(plugins, "cri", "sandbox_image")
    if not isinstance(cfg.sandbox_image, str):
        cfg.sandbox_image = None
    imports = data.get("imports")
    if isinstance(imports, list):
        cfg.imports = tuple(i for i in imports if isinstance(i, str))
    return cfg


def parse_kube_version(text: str | None) -> str | None:
    """kubeadm/kubelet/kubectl/helm version output -> "1.36.2" (None when absent or failing)."""
    for line in nonblank_lines(text):
        low = line.lower()
        if "kustomize" in low or "not found" in low or "error" in low:
            continue
        m = re.search(r"v?(\d+\.\d+\.\d+)", line)
        if m:
            return m.group(1)
    return None


def parse_name_list(text: str | None) -> list[str]:
    """One name or path per line -> sorted (CNI configuration files, Kubernetes state files)."""
    return sorted(ln.strip() for ln in nonblank_lines(text))
