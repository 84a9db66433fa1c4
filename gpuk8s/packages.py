"""Which distribution packages provide the binaries kubeadm looks for, per OS family.

Preflight names them in its fixes and `up` installs them, so both read this one table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuk8s.versions import OS_FAMILIES

if TYPE_CHECKING:
    from gpuk8s.facts import Facts

# kubeadm's FileExisting preflight errors without these ...
REQUIRED_BINARIES = ("ip", "iptables", "mount", "nsenter")
# ... and only warns without these.
RECOMMENDED_BINARIES = ("ethtool", "socat", "tc", "conntrack", "touch", "ebtables")

# binary -> package per OS family; a binary not listed is its own package name.
_PACKAGES = {
    "debian": {"ip": "iproute2", "iptables": "iptables", "mount": "mount", "nsenter": "util-linux",
               "ethtool": "ethtool", "socat": "socat", "tc": "iproute2", "conntrack": "conntrack",
               "touch": "coreutils", "ebtables": "ebtables"},
    "rhel": {"ip": "iproute", "iptables": "iptables-nft", "mount": "util-linux",
             "nsenter": "util-linux", "ethtool": "ethtool", "socat": "socat", "tc": "iproute-tc",
             "conntrack": "conntrack-tools", "touch": "coreutils", "ebtables": "/usr/sbin/ebtables"},
}


def os_family(facts: Facts) -> str | None:
    """'debian' (apt) or 'rhel' (dnf) from os-release ID / ID_LIKE, else from the binaries found."""
    for i in [facts.os.id or ""] + list(facts.os.id_like):
        if i in OS_FAMILIES:
            return OS_FAMILIES[i]
    if "apt-get" in facts.binaries:
        return "debian"
    if "dnf" in facts.binaries or "yum" in facts.binaries:
        return "rhel"
    return None


def packages_for(family: str, binaries: list[str]) -> list[str]:
    """The distribution packages that provide `binaries` ("debian" or "rhel" family)."""
    return list(dict.fromkeys(_PACKAGES[family].get(b, b) for b in binaries))


def missing_binaries(facts: Facts) -> list[str]:
    """Binaries kubeadm needs or warns about that the host lacks."""
    return [b for b in REQUIRED_BINARIES + RECOMMENDED_BINARIES if b not in facts.binaries]
