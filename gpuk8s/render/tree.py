"""Every file for every host plus the cluster manifests, and writing them out as a tree."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from gpuk8s.errors import UsageError
from gpuk8s.render.base import ClusterSecrets, RenderedFile
from gpuk8s.render.calico import calico_installation
from gpuk8s.render.containerd import containerd_config_file
from gpuk8s.render.gpu import gpu_files
from gpuk8s.render.host import modules_file, sysctl_file
from gpuk8s.render.kubeadm import kubeadm_init_config, kubeadm_join_config
from gpuk8s.render.packages import package_repo_file
from gpuk8s.render.placeholders import PLACEHOLDER_CA_HASH


def render_all(inv: Any, os_families: str | Mapping[str, str] = "debian",
               secrets: ClusterSecrets | None = None,
               containerd_version: str | None = None) -> list[RenderedFile]:
    """Every file for every host plus the cluster manifests (placeholder secrets by default).

    os_families: one OS family for every host, or host name -> family ("debian" if missing).
    """
    release = inv.release
    secrets = secrets or ClusterSecrets.placeholder()
    ctr_version = containerd_version or release.containerd
    first = inv.first_control_plane
    files: list[RenderedFile] = []
    for host in inv.hosts:
        fam = os_families if isinstance(os_families, str) else \
            os_families.get(host.name, "debian")
        files.append(modules_file(host.name))
        files.append(sysctl_file(inv, host.name))
        files.append(package_repo_file(inv, release, fam, host.name))
        files.append(containerd_config_file(inv, release, ctr_version, host=host.name))
        if host.name == first.name:
            files.append(kubeadm_init_config(inv, host, secrets, release))
        else:
            files.append(kubeadm_join_config(inv, host, secrets, release, PLACEHOLDER_CA_HASH))
    files.append(calico_installation(inv, release))
    files.extend(gpu_files(inv, release))
    return files


def _relative(path: str) -> Path:
    p = Path(path)
    rel = p.relative_to("/") if p.is_absolute() else p
    if any(part in ("..", "") for part in rel.parts) or not rel.parts:
        raise UsageError(f"refusing to write outside the output directory: {path!r}")
    return rel


def write_tree(files: Iterable[RenderedFile], out_dir: Path,
               host_of: Mapping[RenderedFile, str] | None = None) -> list[Path]:
    """Write host files under out_dir/<host>/<path> and manifests under out_dir/cluster/.

    host_of overrides a file's own `host`; secret files are written with mode 0600.
    """
    out_dir = Path(out_dir)
    written: list[Path] = []
    for f in files:
        host = (host_of or {}).get(f, f.host)
        if f.path.startswith("cluster/"):
            target = out_dir / _relative(f.path)
        elif host is None:
            raise UsageError(f"no host given for {f.path}")
        else:
            target = out_dir / _relative(host) / _relative(f.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o600 if f.secret else f.mode
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(f.content)
        os.chmod(target, mode)
        written.append(target)
    return written
