"""Parsers of the probe's operating-system sections: OS, kernel, memory, swap, services, boot."""

from __future__ import annotations

import re

from gpuk8s.facts.model import OSInfo
from gpuk8s.facts.text import nonblank_lines, parse_kv
from gpuk8s.paths import MANAGED_FILES

_SHA256 = re.compile(r"[0-9a-f]{64}")
_DNF_AUTOMATIC = ("dnf-automatic.timer", "dnf-automatic-install.timer")


def parse_os_release(text: str | None) -> OSInfo:
    """Parse /etc/os-release (shell-style KEY=value, values optionally quoted)."""
    values: dict[str, str] = {}
    for line in nonblank_lines(text):
        line = line.strip()
        if line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value.replace('\\"', '"')
    os_id = values.get("ID", "").lower() or None
    version_id = values.get("VERSION_ID") or None
    if version_id is None and values.get("VERSION"):
        m = re.match(r"\s*(\d+(?:\.\d+)*)", values["VERSION"])
        version_id = m.group(1) if m else None
    return OSInfo(
        id=os_id,
        version_id=version_id,
        pretty_name=values.get("PRETTY_NAME") or values.get("NAME") or None,
        id_like=values.get("ID_LIKE", "").lower().split(),
        version_codename=values.get("VERSION_CODENAME") or None,
    )


def parse_uname(text: str | None) -> tuple[str | None, str | None]:
    """`uname -rm` ('6.8.0-45-generic x86_64'), or -r and -m on two lines -> (kernel, arch)."""
    words = [w for line in nonblank_lines(text) for w in line.split()]
    return (words[0] if words else None), (words[1] if len(words) > 1 else None)


def parse_hostname(text: str | None) -> str | None:
    """/proc/sys/kernel/hostname -> its first line."""
    host = nonblank_lines(text)
    return host[0].strip() if host else None


def parse_product_uuid(text: str | None) -> str | None:
    """/sys/class/dmi/id/product_uuid, lower-cased (kubeadm compares it across nodes)."""
    return (text or "").strip().lower() or None


def parse_cgroup(fs_type: str | None) -> tuple[int | None, str | None]:
    """`stat -fc %T /sys/fs/cgroup` -> (2 for cgroup2fs, 1 for tmpfs (v1 hierarchy), None)."""
    fs = (fs_type or "").strip() or None
    if fs == "cgroup2fs":
        return 2, fs
    if fs == "tmpfs":
        return 1, fs
    return None, fs


def parse_meminfo(text: str | None) -> int | None:
    """/proc/meminfo's MemTotal in MiB."""
    m = re.search(r"^MemTotal:\s+([0-9]{1,20})\s*kB", text or "", re.M)
    return int(m.group(1)) // 1024 if m else None


def parse_swaps(text: str | None) -> list[str]:
    """Active swap devices from /proc/swaps (first line is a header)."""
    out = []
    for line in nonblank_lines(text):
        if line.startswith("Filename"):
            continue
        out.append(line.split()[0])
    return out


def parse_swap_state(text: str | None) -> tuple[list[str], bool | None]:
    """/proc/swaps -> (active devices, swap on); swap on is unknown when the section is missing."""
    if text is None:
        return [], None
    devices = parse_swaps(text)
    return devices, bool(devices)


def parse_fstab_swap(text: str | None) -> list[str]:
    """fstab lines that mount swap and are not commented out."""
    out = []
    for line in nonblank_lines(text):
        s = line.strip()
        if s.startswith("#"):
            continue
        words = s.split()
        if len(words) >= 3 and words[2] == "swap":
            opts = words[3].split(",") if len(words) >= 4 else []
            if "noauto" not in opts:
                out.append(s)
    return out


def parse_swap_units(text: str | None) -> list[str]:
    """Swap unit files that are neither masked (-> /dev/null) nor generated from fstab."""
    units: dict[str, bool] = {}
    for line in nonblank_lines(text):
        path, _, target = line.partition(" -> ")
        name = path.rsplit("/", 1)[-1]
        masked = target.strip() == "/dev/null"
        if masked:
            units[name] = False
        elif name not in units:
            units[name] = True
    return sorted(n for n, live in units.items() if live)


def parse_modules(text: str | None) -> list[str]:
    """/proc/modules names and /sys/module entries -> sorted, without duplicates."""
    return sorted({ln.strip() for ln in nonblank_lines(text)})


def overlay_available(filesystems: str | None, modules: list[str]) -> bool | None:
    """overlay in /proc/filesystems or among the modules; unknown when neither was readable."""
    fs_names = {ln.split()[-1] for ln in nonblank_lines(filesystems)}
    if not fs_names and not modules:
        return None
    return "overlay" in fs_names or "overlay" in modules


def br_netfilter_loaded(modules: list[str], sysctls: dict[str, str]) -> bool:
    """br_netfilter is loaded, or built in (its bridge-nf-call sysctls exist)."""
    return "br_netfilter" in modules or "net.bridge.bridge-nf-call-iptables" in sysctls


def parse_sysctls(text: str | None) -> dict[str, str]:
    """'net/ipv4/ip_forward=1' lines -> {"net.ipv4.ip_forward": "1"}."""
    out = {}
    for line in nonblank_lines(text):
        key, _, value = line.partition("=")
        out[key.strip().replace("/", ".")] = value.strip()
    return out


def parse_binaries(text: str | None) -> dict[str, str]:
    """`command -v NAME` per tool: one path per line ('/usr/bin/kubeadm') -> {name: path}.

    Also reads the older 'name=path' lines. A tool that is not installed prints nothing.
    """
    out: dict[str, str] = {}
    for line in nonblank_lines(text):
        s = line.strip()
        name, sep, path = s.partition("=")
        if sep and not name.startswith("/"):
            out.setdefault(name.strip(), path.strip())
        elif s.startswith("/"):
            out.setdefault(s.rsplit("/", 1)[1], s)
    return out


def parse_services(text: str | None) -> dict[str, dict[str, str]]:
    """`systemctl show -p Id,LoadState,ActiveState,UnitFileState U...` -> {unit: {active, enabled, load}}.

    One block per unit, separated by blank lines, properties in any order. Units are keyed
    without the `.service` suffix; units that do not exist (LoadState=not-found) are left out.
    """
    out: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n\s*\n", text or ""):
        kv = parse_kv(block)
        unit = kv.get("Id")
        if not unit or kv.get("LoadState") == "not-found":
            continue
        name = unit[: -len(".service")] if unit.endswith(".service") else unit
        out[name] = {"active": kv.get("ActiveState", ""), "enabled": kv.get("UnitFileState", ""),
                     "load": kv.get("LoadState", "")}
    return out


def parse_timedatectl(text: str | None) -> tuple[bool | None, bool | None]:
    """`timedatectl show` -> (NTPSynchronized, NTP)."""
    kv = parse_kv(text)

    def yes(key: str) -> bool | None:
        return None if key not in kv else kv[key].lower() == "yes"

    return yes("NTPSynchronized"), yes("NTP")


def parse_secure_boot(text: str | None) -> tuple[bool | None, bool | None]:
    """-> (secure_boot, uefi). Prefers the SecureBoot EFI variable, then mokutil."""
    secure: bool | None = None
    uefi: bool | None = None
    for line in nonblank_lines(text):
        s = line.strip()
        if s.startswith("efivar="):
            uefi = True
            nums = [int(x) for x in s[len("efivar="):].split() if x.isascii() and x.isdigit()]
            if len(nums) >= 5:  # 4 attribute bytes, then the value
                secure = nums[4] == 1
        elif s == "efi=yes":
            uefi = True
        elif s == "efi=no":
            uefi = False
        elif secure is None:
            low = s.lower()
            if "secureboot enabled" in low:
                secure = True
            elif "secureboot disabled" in low:
                secure = False
    if uefi is False and secure is None:
        secure = False  # legacy BIOS boot has no Secure Boot
    return secure, uefi


def split_conf_grep(text: str | None) -> tuple[str, str]:
    """One `grep -rH` over modprobe.d and APT's configuration -> (modprobe lines, apt 'file:line's)."""
    modprobe, apt = [], []
    for line in nonblank_lines(text):
        if line.startswith("/etc/apt/"):
            apt.append(line)
        else:
            modprobe.append(line.split(":", 1)[1] if line.startswith("/") and ":" in line else line)
    return "\n".join(modprobe), "\n".join(apt)


def parse_auto_upgrades(text: str | None, services: dict[str, dict[str, str]]) -> bool | None:
    """Unattended upgrades on: APT::Periodic::Unattended-Upgrade "1", or dnf-automatic timers.

    The apt section holds `apt=yes` when /etc/apt exists, then `file:line` for every setting;
    APT reads its configuration files in lexical order, so the last one wins.
    """
    for unit in _DNF_AUTOMATIC:
        if services.get(unit, {}).get("enabled") == "enabled":
            return True
    settings = []
    apt = False
    for line in nonblank_lines(text):
        if line.strip() == "apt=yes":
            apt = True
            continue
        path, rest = line.split(":", 1) if line.startswith("/") else ("", line)
        m = re.search(r'APT::Periodic::Unattended-Upgrade\s+"?([0-9]{1,9})"?', rest)
        if m:
            settings.append((path, int(m.group(1))))
    if settings:
        return sorted(settings, key=lambda s: s[0])[-1][1] > 0
    if apt:
        return False  # without the periodic setting, apt never runs unattended-upgrade
    if any(u in services for u in _DNF_AUTOMATIC):
        return False
    return None


def parse_unattended_upgrades(auto_upgrades: str | None, conf_grep: str | None,
                              services: dict[str, dict[str, str]]) -> bool | None:
    """The auto_upgrades section plus APT's settings from the shared conf_grep section."""
    _, apt_text = split_conf_grep(conf_grep)
    return parse_auto_upgrades("\n".join(t for t in (auto_upgrades, apt_text) if t), services)


def parse_selinux(text: str | None) -> bool | None:
    """/sys/fs/selinux/enforce: '1' enforcing, '0' permissive; absent without SELinux."""
    enforce = (text or "").strip()
    return None if not enforce else enforce == "1"


def parse_managed_files(text: str | None) -> dict[str, str]:
    """`sha256sum` of the files gpuk8s manages -> {path: digest}; other lines are dropped."""
    out = {}
    for line in nonblank_lines(text):
        digest, _, path = line.strip().partition("  ")
        if path in MANAGED_FILES and _SHA256.fullmatch(digest):
            out[path] = digest
    return out
