"""Package repositories: pkgs.k8s.io for kubelet/kubeadm/kubectl, Docker's for containerd.io."""

from __future__ import annotations

import re
from typing import Any

from gpuk8s import versions
from gpuk8s.errors import UsageError
from gpuk8s.paths import DOCKER_APT_KEYRING, DOCKER_APT_SOURCE, DOCKER_YUM_REPO, K8S_APT_KEYRING, \
    K8S_APT_SOURCE, K8S_YUM_REPO
from gpuk8s.render.base import RenderedFile, render_template
from gpuk8s.versions import Release

_MINOR_RE = re.compile(r"\d+\.\d+")
_DOCKER = "https://download.docker.com/linux"
# dnf expands $releasever and $basearch itself.
_DOCKER_RHEL_REPO = f"{_DOCKER}/rhel/$releasever/$basearch/stable"


def os_family_of(os_id: str) -> str:
    """'ubuntu' -> 'debian', 'rocky' -> 'rhel'; UsageError for anything else."""
    fam = versions.OS_FAMILIES.get(os_id.lower())
    if fam is None:
        raise UsageError(f"no Kubernetes package repository for OS family '{os_id}' "
                         "(gpuk8s knows debian and rhel)")
    return fam


def package_repo_url(release: Release, family: str) -> str:
    """https://pkgs.k8s.io/core:/stable:/v1.XX/deb/ (or .../rpm/)."""
    if not _MINOR_RE.fullmatch(release.minor):
        raise UsageError(f"Kubernetes minor '{release.minor}' is not like 1.36")
    kind = "deb" if os_family_of(family) == "debian" else "rpm"
    return f"https://pkgs.k8s.io/core:/stable:/v{release.minor}/{kind}/"


def package_key_url(release: Release, family: str) -> str:
    """The repository signing key: Release.key (apt, to dearmor) or repomd.xml.key (yum)."""
    base = package_repo_url(release, family)
    return base + ("Release.key" if os_family_of(family) == "debian" else "repodata/repomd.xml.key")


def package_repo_file(inv: Any, release: Release, os_family: str,
                      host: str | None = None) -> RenderedFile:
    """The pkgs.k8s.io repository for this Kubernetes minor (apt list or yum .repo).

    os_family: "debian" or "rhel" (an OS id such as "ubuntu" or "rocky" is accepted too).
    """
    fam = os_family_of(os_family)
    url = package_repo_url(release, fam)
    if fam == "debian":
        content = render_template("packages/kubernetes.list.j2", minor=release.minor,
                                  keyring=K8S_APT_KEYRING, repo_url=url)
        return RenderedFile(K8S_APT_SOURCE, content, host=host)
    content = render_template("packages/kubernetes.repo.j2", minor=release.minor, repo_url=url,
                              key_url=package_key_url(release, fam))
    return RenderedFile(K8S_YUM_REPO, content, host=host)


def docker_key_url(distro: str) -> str:
    """Docker's apt signing key for 'ubuntu' or 'debian' (saved as an ASCII-armoured keyring)."""
    return f"{_DOCKER}/{distro}/gpg"


def docker_repo_file(release: Release, os_family: str, distro: str | None = None,
                     codename: str | None = None, host: str | None = None) -> RenderedFile:
    """Docker's repository, where containerd.io comes from (apt list or dnf .repo).

    distro ('ubuntu' or 'debian') and codename (os-release VERSION_CODENAME) are for apt only.
    """
    if os_family_of(os_family) == "debian":
        if not distro or not codename:
            raise UsageError("Docker's apt repository needs the distribution and its codename")
        content = render_template("packages/docker.list.j2", minor=release.minor,
                                  keyring=DOCKER_APT_KEYRING, repo_url=f"{_DOCKER}/{distro}",
                                  codename=codename)
        return RenderedFile(DOCKER_APT_SOURCE, content, host=host)
    content = render_template("packages/docker-ce.repo.j2", minor=release.minor,
                              repo_url=_DOCKER_RHEL_REPO, key_url=f"{_DOCKER}/rhel/gpg")
    return RenderedFile(DOCKER_YUM_REPO, content, host=host)
