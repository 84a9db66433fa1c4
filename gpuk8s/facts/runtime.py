"""Parsers of the probe's container-runtime and Kubernetes sections: containerd, kube tools, CNI."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, replace
from typing import Any

from gpuk8s.facts.model import ContainerdConfig
from gpuk8s.facts.text import nonblank_lines

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from gpuk8s.versions import CRI_PLUGIN_IDS, CRI_V2, CRI_V3, cri_plugins

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


# --------------------------------------------------------------------------- running configuration

@dataclass(frozen=True)
class RunningContainerd:
    """What `containerd config dump` (the configuration the daemon runs with: the root file,
    its imports merged in, defaults filled) says about CRI's runtimes."""

    parse_error: str | None = None
    version: int | None = None
    runtime_plugin: str | None = None                 # the CRI runtime plugin id of that version
    runtimes: dict[str, dict] = field(default_factory=dict)   # name -> its table (options...)
    default_runtime: str | None = None
    imports: tuple[str, ...] = ()                     # the files containerd loaded (root first)

    def systemd_cgroup(self, runtime: str) -> bool | None:
        """The runtime's options.SystemdCgroup (None: not set)."""
        opts = (self.runtimes.get(runtime) or {}).get("options")
        value = opts.get("SystemdCgroup") if isinstance(opts, dict) else None
        return value if isinstance(value, bool) else None


def parse_containerd_dump(text: str | None) -> RunningContainerd:
    """Parse `containerd config dump`. The CRI runtime table is found by the dump's own `version`
    (containerd 1.x dumps version 2 with io.containerd.grpc.v1.cri; 2.x dumps 3 or 4 with
    io.containerd.cri.v1.runtime: versions.CRI_BY_CONFIG_VERSION); a runtime table under another
    CRI id (an unmigrated drop-in) is reported too."""
    if text is None or not text.strip():
        return RunningContainerd(parse_error="empty output")
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        return RunningContainerd(parse_error=str(e) or type(e).__name__)
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        return RunningContainerd(parse_error=f"version = {version!r} is not a number")
    plugin_id = cri_plugins(version).runtime
    plugins = data.get("plugins") if isinstance(data.get("plugins"), dict) else {}
    runtimes: dict[str, dict] = {}
    default = None
    for pid in [plugin_id] + [p for p in CRI_PLUGIN_IDS if p != plugin_id]:
        table = _dig(plugins, pid, "containerd")
        if not isinstance(table, dict):
            continue
        for name, rt in (table.get("runtimes") or {}).items() if isinstance(table.get("runtimes"), dict) else ():
            if isinstance(rt, dict):
                runtimes.setdefault(name, rt)
        if default is None and isinstance(table.get("default_runtime_name"), str):
            default = table["default_runtime_name"]
    imports = data.get("imports")
    return RunningContainerd(
        version=version, runtime_plugin=plugin_id, runtimes=runtimes, default_runtime=default,
        imports=tuple(i for i in imports if isinstance(i, str)) if isinstance(imports, list) else ())


def has_nvidia_runtime(dump: str) -> bool:
    """`containerd config dump` has a runtimes.nvidia entry in a CRI runtime table."""
    return "nvidia" in parse_containerd_dump(dump).runtimes
