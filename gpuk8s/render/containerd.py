"""/etc/containerd/config.toml: `containerd config default`, edited for Kubernetes."""

from __future__ import annotations

from typing import Any

import tomli_w

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from gpuk8s import versions
from gpuk8s.errors import UsageError
from gpuk8s.paths import CNI_BIN_DIR, CNI_CONF_DIR, CONTAINERD_CONFIG
from gpuk8s.render.base import RenderedFile
from gpuk8s.render.gpu import CONTAINERD_DROP_IN, CONTAINERD_IMPORTS_GLOB
from gpuk8s.render.placeholders import containerd_default
from gpuk8s.versions import Release, cri_plugins, native_config_version

_RUNC_TYPE = "io.containerd.runc.v2"
_CNI_BIN_DIRS_SINCE = (2, 1)     # containerd 2.1 replaced cni.bin_dir with the list bin_dirs


def _table(parent: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The nested table parent[k1][k2]..., created where missing."""
    d = parent
    for k in keys:
        nxt = d.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            d[k] = nxt
        d = nxt
    return d


def _load_native(default_toml: str, containerd_version: str, native: int) -> dict[str, Any]:
    """The default as data; a file in another version is replaced by our snapshot of that one."""
    try:
        data = tomllib.loads(default_toml)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"the containerd default configuration is not valid TOML: {e}") from None
    if int(data.get("version", 1)) != native:
        kept = {k: data[k] for k in ("root", "state", "imports") if k in data}
        data = tomllib.loads(containerd_default(containerd_version))
        data.update(kept)
    return data


def _set_sandbox_image(plugins: dict[str, Any], native: int, image: str) -> None:
    cri = cri_plugins(native)
    *parents, key = cri.sandbox_image
    _table(plugins, cri.images, *parents)[key] = image


def _set_cni(runtime_plugin: dict[str, Any], containerd_version: str) -> None:
    cni = _table(runtime_plugin, "cni")
    have = versions.parse_version(containerd_version) or ()
    if have[:2] >= _CNI_BIN_DIRS_SINCE:
        cni["bin_dirs"] = [CNI_BIN_DIR]
        if "bin_dir" in cni:
            cni["bin_dir"] = ""
    else:
        cni["bin_dir"] = CNI_BIN_DIR
        cni.pop("bin_dirs", None)
    cni["conf_dir"] = CNI_CONF_DIR


def imports_drop_ins(imports: list[str] | tuple[str, ...]) -> bool:
    """The `imports` cover the toolkit's drop-in (the conf.d glob, or the file itself)."""
    return CONTAINERD_IMPORTS_GLOB in imports or CONTAINERD_DROP_IN in imports


def _keep_current(data: dict[str, Any], current_toml: str | None, native: int) -> None:
    """What others added to the current file survives a rewrite: its `imports` (the toolkit's
    drop-in directory) and every runtime other than runc (`nvidia`, `nvidia-cdi`... written by
    nvidia-ctk or the toolkit container). Kubespray's re-run drops them and breaks GPU pods
    (kubernetes-sigs/kubespray#12277). Only a file whose CRI tables are those of the native
    version is merged: the same version, or version 3 for a version 4 containerd (2.2 -> 2.3
    upgrade: 4 moved only the server settings, CRI kept its plugin ids and layout)."""
    if not current_toml:
        return
    try:
        cur = tomllib.loads(current_toml)
    except tomllib.TOMLDecodeError:
        return
    version = cur.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version > native or \
            cri_plugins(version) != cri_plugins(native):
        return
    imports = [i for i in cur.get("imports") or [] if isinstance(i, str)]
    data["imports"] = list(dict.fromkeys([*(data.get("imports") or []), *imports]))
    runtime_id = cri_plugins(native).runtime
    have = ((cur.get("plugins") or {}).get(runtime_id) or {}).get("containerd") or {}
    runtimes = have.get("runtimes") or {}
    want = _table(data, "plugins", runtime_id, "containerd", "runtimes")
    for name, entry in runtimes.items():
        if name != "runc" and isinstance(entry, dict) and name not in want:
            want[name] = entry


def containerd_config(default_toml: str, release: Release, containerd_version: str,
                      current_toml: str | None = None) -> str:
    """Edit `containerd config default` output for Kubernetes, in the containerd's native version.

    Sets SystemdCgroup = true in the runc options table of that version (every release prints it
    false, and 2.0.0-2.0.6 / 2.1.0-2.1.4 do not print the key: it is added), the sandbox (pause)
    image, the CNI directories, and takes CRI out of disabled_plugins; the default's `imports`
    (2.2+: the conf.d glob) are kept and the toolkit's drop-in glob added once. A file that is not
    in the native version (Docker's containerd.io stub with `disabled_plugins = ["cri"]`, or a
    version 2 file for containerd 2.x) is replaced by our snapshot of that release's default.
    Versions 3 and 4 keep CRI in the same tables; 4 only moved the server settings elsewhere.
    """
    native = native_config_version(containerd_version)
    data = _load_native(default_toml, containerd_version, native)
    data["version"] = native
    data["disabled_plugins"] = [p for p in data.get("disabled_plugins") or []
                                if p not in versions.CRI_PLUGIN_IDS]
    plugins = _table(data, "plugins")
    _set_sandbox_image(plugins, native, release.pause_image)
    runtime_plugin = _table(plugins, cri_plugins(native).runtime)
    runc = _table(runtime_plugin, "containerd", "runtimes", "runc")
    runc.setdefault("runtime_type", _RUNC_TYPE)
    _table(runc, "options")["SystemdCgroup"] = True
    _set_cni(runtime_plugin, containerd_version)
    _keep_current(data, current_toml, native)
    if not imports_drop_ins(data.get("imports") or []):
        data["imports"] = [*(data.get("imports") or []), CONTAINERD_IMPORTS_GLOB]
    header = (f"# Generated by gpuk8s from `containerd config default` (containerd "
              f"{containerd_version}, config version {native}):\n"
              "# SystemdCgroup = true, sandbox image, CRI enabled, CNI in "
              f"{CNI_CONF_DIR} and {CNI_BIN_DIR};\n"
              f"# imports {CONTAINERD_IMPORTS_GLOB} (the NVIDIA toolkit's drop-in); "
              "imports and runtimes added by others are kept.\n")
    return header + tomli_w.dumps(data)


def containerd_config_file(inv: Any, release: Release, containerd_version: str,
                           default_toml: str | None = None,
                           host: str | None = None,
                           current_toml: str | None = None) -> RenderedFile:
    """/etc/containerd/config.toml; default_toml None uses the shipped snapshot for the release;
    current_toml: the host's file now (its imports and non-runc runtimes are kept)."""
    base = default_toml if default_toml is not None else containerd_default(containerd_version)
    return RenderedFile(CONTAINERD_CONFIG, containerd_config(base, release, containerd_version,
                                                             current_toml),
                        host=host)
