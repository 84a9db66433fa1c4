"""Host facts: the probe script sent once per host, and pure parsers of its output.

`parse_probe(text)` turns the probe's sectioned output into a `Facts` object. Every parser
tolerates missing sections and odd real-world output (no VERSION_ID, no lspci, nvidia-smi
failing without a driver, non-GPU NVIDIA functions on the bus).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field, fields, is_dataclass, replace
from importlib import resources
from typing import Any

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


SECTION_PREFIX = "@@gpuk8s:"
NVIDIA_VENDOR = "0x10de"

# Interfaces whose MAC says nothing about the machine (bridges, CNI, tunnels, containers).
_VIRTUAL_IFACE = re.compile(
    r"^(lo|docker\d*|veth.*|cali.*|cni\d*|flannel.*|vxlan.*|tunl\d*|kube-.*|nodelocaldns|"
    r"virbr.*|br-.*|cilium.*|lxc.*|wg.*|ifb\d*|dummy\d*|nerdctl\d*|tap.*|tun\d*)$"
)

# Files gpuk8s writes during `up`; the probe reports their sha256 (absent: not in the dict).
MANAGED_FILES = (
    "/etc/modules-load.d/kubernetes.conf", "/etc/sysctl.d/99-kubernetes.conf",
    "/etc/containerd/config.toml", "/etc/apt/sources.list.d/kubernetes.list",
    "/etc/apt/sources.list.d/docker.list", "/etc/yum.repos.d/kubernetes.repo",
    "/etc/yum.repos.d/docker-ce.repo", "/etc/NetworkManager/conf.d/calico.conf",
)

# A few device ids for a name when nvidia-smi cannot give one (no driver); preferred over
# lspci's chip description, which is less readable (pci.ids marketing names).
NVIDIA_DEVICE_NAMES = {
    "0x1db4": "Tesla V100-PCIE-16GB",
    "0x1eb8": "Tesla T4",
    "0x20b0": "A100-SXM4-40GB",
    "0x20b2": "A100-SXM4-80GB",
    "0x20b5": "A100 80GB PCIe",
    "0x20b7": "A30",
    "0x20f1": "A100-PCIE-40GB",
    "0x2236": "A10",
    "0x26b5": "L40",
    "0x26b9": "L40S",
    "0x27b8": "L4",
    "0x2321": "H100 NVL",
    "0x2330": "H100 SXM5 80GB",
    "0x2331": "H100 PCIe",
    "0x2335": "H200",
}


@functools.lru_cache(maxsize=1)
def probe_script() -> str:
    """The probe script text (POSIX sh), shipped as package data (read once per run)."""
    return resources.files("gpuk8s").joinpath("probe.sh").read_text(encoding="utf-8")


@dataclass
class OSInfo:
    id: str | None = None
    version_id: str | None = None
    pretty_name: str | None = None
    id_like: list[str] = field(default_factory=list)
    version_codename: str | None = None


@dataclass
class GPU:
    pci_address: str
    vendor_id: str
    device_id: str
    name: str | None = None
    class_id: str | None = None
    driver: str | None = None       # kernel driver bound (nvidia, nouveau, vfio-pci) or None


@dataclass
class ContainerdConfig:
    present: bool = False
    parse_error: str | None = None
    version: int | None = None              # the file's `version = N` (1 when absent)
    cri_disabled: bool = False
    systemd_cgroup: bool | None = None      # value in the table that matches the file version
    systemd_cgroup_misplaced: bool = False  # key only found in a table of the other version
    sandbox_image: str | None = None


@dataclass
class Facts:
    """Everything the checks need about one host, parsed from one probe run."""

    probe_version: int | None = None
    uid: int | None = None
    os: OSInfo = field(default_factory=OSInfo)
    kernel: str | None = None
    arch: str | None = None
    hostname: str | None = None
    cgroup_version: int | None = None
    cgroup_fs: str | None = None
    cpus: int | None = None
    memory_mib: int | None = None
    swap_enabled: bool | None = None
    swap_devices: list[str] = field(default_factory=list)
    swap_fstab_entries: list[str] = field(default_factory=list)
    swap_units: list[str] = field(default_factory=list)   # enabled/unmasked systemd swap units
    macs: dict[str, str] = field(default_factory=dict)    # physical-looking iface -> MAC
    addresses: list[str] = field(default_factory=list)    # "10.0.0.11/24" (global scope)
    routes: list[str] = field(default_factory=list)       # destination CIDRs other than default
    default_route: bool = False
    product_uuid: str | None = None
    modules: list[str] = field(default_factory=list)      # loaded (or built-in) kernel modules
    overlay_available: bool | None = None
    br_netfilter_loaded: bool | None = None
    sysctls: dict[str, str] = field(default_factory=dict)  # "net.ipv4.ip_forward" -> "1"
    binaries: dict[str, str] = field(default_factory=dict)  # name -> path
    services: dict[str, dict[str, str]] = field(default_factory=dict)  # unit -> {active, enabled}
    time_synchronized: bool | None = None
    ntp_enabled: bool | None = None
    ufw_enabled: bool | None = None
    listening_ports: list[int] = field(default_factory=list)
    endpoint_addresses: list[str] | None = None            # None when no endpoint was asked
    containerd_version: str | None = None
    containerd: ContainerdConfig = field(default_factory=ContainerdConfig)
    kubeadm_version: str | None = None
    kubelet_version: str | None = None
    kubectl_version: str | None = None
    helm_version: str | None = None
    gpus: list[GPU] = field(default_factory=list)
    nvidia_other_functions: list[GPU] = field(default_factory=list)  # audio, USB, NVSwitch...
    nvswitch_count: int = 0
    nvidia_driver_version: str | None = None
    nvidia_kernel_module: str | None = None  # "open" | "proprietary" (GPU Operator kernelModuleType)
    nvidia_smi_ok: bool | None = None      # None: nvidia-smi not installed
    nvidia_smi_error: str | None = None
    nouveau_loaded: bool | None = None
    nouveau_blacklisted: bool | None = None
    secure_boot: bool | None = None        # None: unknown / not UEFI-reported
    uefi: bool | None = None
    unattended_upgrades: bool | None = None
    cni_configs: list[str] = field(default_factory=list)
    kubernetes_files: list[str] = field(default_factory=list)
    selinux_enforcing: bool | None = None
    managed_files: dict[str, str] = field(default_factory=dict)  # path -> sha256 of gpuk8s's files

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (the `facts` object of `preflight --json`)."""
        return _plain(self)

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    def service_active(self, unit: str) -> bool:
        return self.services.get(unit, {}).get("active") == "active"


def _plain(value: Any) -> Any:
    """dataclasses.asdict without its deep copy of every leaf (facts hold only plain values)."""
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- sections

def split_sections(text: str) -> dict[str, str]:
    """Split probe output into {section name: raw text}: each '@@gpuk8s:NAME' line starts one.

    Splits on the markers themselves rather than line by line (the output is tens of KB).
    Text before the first marker is ignored; a name seen twice has its parts joined.
    """
    sections: dict[str, list[str]] = {}
    for part in ("\n" + text.replace("\r\n", "\n")).split("\n" + SECTION_PREFIX)[1:]:
        name, _, body = part.partition("\n")
        sections.setdefault(name.strip(), []).append(body)
    return {k: "\n".join(v).strip("\n") for k, v in sections.items()}


def _lines(text: str | None) -> list[str]:
    return [ln for ln in (text or "").splitlines() if ln.strip()]


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").strip().split()[0])
    except (ValueError, IndexError):
        return None


# --------------------------------------------------------------------------- parsers

def parse_os_release(text: str | None) -> OSInfo:
    """Parse /etc/os-release (shell-style KEY=value, values optionally quoted)."""
    values: dict[str, str] = {}
    for line in _lines(text):
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


def parse_cgroup(fs_type: str | None) -> tuple[int | None, str | None]:
    """`stat -fc %T /sys/fs/cgroup` -> (2 for cgroup2fs, 1 for tmpfs (v1 hierarchy), None)."""
    fs = (fs_type or "").strip() or None
    if fs == "cgroup2fs":
        return 2, fs
    if fs == "tmpfs":
        return 1, fs
    return None, fs


def parse_meminfo(text: str | None) -> int | None:
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text or "", re.M)
    return int(m.group(1)) // 1024 if m else None


def parse_swaps(text: str | None) -> list[str]:
    """Active swap devices from /proc/swaps (first line is a header)."""
    out = []
    for line in _lines(text):
        if line.startswith("Filename"):
            continue
        out.append(line.split()[0])
    return out


def parse_fstab_swap(text: str | None) -> list[str]:
    """fstab lines that mount swap and are not commented out."""
    out = []
    for line in _lines(text):
        s = line.strip()
        if s.startswith("#"):
            continue
        fields = s.split()
        if len(fields) >= 3 and fields[2] == "swap":
            opts = fields[3].split(",") if len(fields) >= 4 else []
            if "noauto" not in opts:
                out.append(s)
    return out


def parse_swap_units(text: str | None) -> list[str]:
    """Swap unit files that are neither masked (-> /dev/null) nor generated from fstab."""
    units: dict[str, bool] = {}
    for line in _lines(text):
        path, _, target = line.partition(" -> ")
        name = path.rsplit("/", 1)[-1]
        masked = target.strip() == "/dev/null"
        if masked:
            units[name] = False
        elif name not in units:
            units[name] = True
    return sorted(n for n, live in units.items() if live)


def parse_links(text: str | None) -> dict[str, str]:
    """`ip -o link show` -> {iface: mac} for interfaces that identify the machine."""
    macs: dict[str, str] = {}
    for line in _lines(text):
        m = re.match(r"^\d+:\s+([^:@\s]+)(?:@\S+)?:\s.*?link/ether\s+([0-9a-fA-F:]{17})", line)
        if not m:
            continue
        iface, mac = m.group(1), m.group(2).lower()
        if _VIRTUAL_IFACE.match(iface) or mac == "00:00:00:00:00:00":
            continue
        macs[iface] = mac
    return macs


def parse_addrs(text: str | None) -> list[str]:
    """`ip -o addr show` -> global-scope addresses with prefix ("10.0.0.11/24")."""
    out = []
    for line in _lines(text):
        m = re.search(r"\binet6?\s+(\S+)", line)
        if not m or " scope host" in line or " scope link" in line:
            continue
        out.append(m.group(1))
    return out


def parse_routes(text: str | None) -> tuple[list[str], bool]:
    """`ip -o route show` -> (destination prefixes, has default route)."""
    dests, default = [], False
    for line in _lines(text):
        first = line.split()[0]
        if first in ("default", "0.0.0.0/0", "::/0"):
            default = True
            continue
        if first in ("unreachable", "blackhole", "prohibit", "local", "broadcast", "multicast"):
            continue
        try:
            dests.append(str(ipaddress.ip_network(first, strict=False)))
        except ValueError:
            continue
    return dests, default


def parse_modules(text: str | None) -> list[str]:
    return sorted({ln.strip() for ln in _lines(text)})


def parse_sysctls(text: str | None) -> dict[str, str]:
    out = {}
    for line in _lines(text):
        key, _, value = line.partition("=")
        out[key.strip().replace("/", ".")] = value.strip()
    return out


def parse_kv(text: str | None) -> dict[str, str]:
    out = {}
    for line in _lines(text):
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
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


def parse_ufw_conf(text: str | None) -> bool | None:
    kv = parse_kv(text)
    if "ENABLED" not in kv:
        return None
    return kv["ENABLED"].strip("\"'").lower() == "yes"


def parse_uname(text: str | None) -> tuple[str | None, str | None]:
    """`uname -rm` ('6.8.0-45-generic x86_64'), or -r and -m on two lines -> (kernel, arch)."""
    words = [w for line in _lines(text) for w in line.split()]
    return (words[0] if words else None), (words[1] if len(words) > 1 else None)


def parse_binaries(text: str | None) -> dict[str, str]:
    """`command -v NAME` per tool: one path per line ('/usr/bin/kubeadm') -> {name: path}.

    Also reads the older 'name=path' lines. A tool that is not installed prints nothing.
    """
    out: dict[str, str] = {}
    for line in _lines(text):
        s = line.strip()
        name, sep, path = s.partition("=")
        if sep and not name.startswith("/"):
            out.setdefault(name.strip(), path.strip())
        elif s.startswith("/"):
            out.setdefault(s.rsplit("/", 1)[1], s)
    return out


def parse_listen(text: str | None) -> list[int]:
    """Listening TCP ports: `ss -Hltn` lines, or /proc/net/tcp and tcp6 (state 0A) where ss is absent."""
    ports = set()
    for line in _lines(text):
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "LISTEN":  # LISTEN 0 4096 [::]:22 [::]:*  (ss)
            port = fields[3].rsplit(":", 1)[-1]
            if port.isdigit():
                ports.add(int(port))
            continue
        if len(fields) < 4 or fields[0] == "sl" or fields[3] != "0A":
            continue
        try:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except (IndexError, ValueError):
            continue
    return sorted(ports)


def parse_getent(text: str | None) -> list[str]:
    addrs: list[str] = []
    for line in _lines(text):
        a = line.split()[0]
        if a not in addrs:
            addrs.append(a)
    return addrs


def parse_containerd_version(text: str | None) -> str | None:
    """`containerd --version` -> "2.1.4" (handles "containerd containerd.io 1.7.27 <sha>")."""
    for line in _lines(text):
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


_CRI_V2 = "io.containerd.grpc.v1.cri"          # config version 2 (containerd 1.x)
_CRI_V3_RUNTIME = "io.containerd.cri.v1.runtime"  # config version 3 (containerd 2.x)
_CRI_V3_IMAGES = "io.containerd.cri.v1.images"


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
    except tomllib.TOMLDecodeError as e:
        cfg.parse_error = str(e)
        return cfg
    cfg.version = int(data.get("version", 1))
    disabled = data.get("disabled_plugins") or []
    cfg.cri_disabled = any(p in ("cri", _CRI_V2, _CRI_V3_RUNTIME, "io.containerd.grpc.v1.cri")
                           for p in disabled)
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
    return cfg


def parse_kube_version(text: str | None) -> str | None:
    """kubeadm/kubelet/kubectl/helm version output -> "1.36.2" (None when absent or failing)."""
    for line in _lines(text):
        low = line.lower()
        if "kustomize" in low or "not found" in low or "error" in low:
            continue
        m = re.search(r"v?(\d+\.\d+\.\d+)", line)
        if m:
            return m.group(1)
    return None


def parse_pci(text: str | None, drivers_text: str | None = None,
              lspci_text: str | None = None) -> dict[str, dict[str, str]]:
    """`grep -H '' .../vendor .../device .../class` -> {address: {vendor, device, class, ...}}."""
    devices: dict[str, dict[str, str]] = {}
    for line in _lines(text):
        m = re.match(r"^/sys/bus/pci/devices/([^/]+)/(vendor|device|class):(.*)$", line.strip())
        if m:
            devices.setdefault(m.group(1), {})[m.group(2)] = m.group(3).strip().lower()
    for line in _lines(drivers_text):
        addr, _, drv = line.strip().partition(" ")
        if addr in devices and drv:
            devices[addr]["driver"] = drv
    for line in _lines(lspci_text):
        m = re.match(r"^(\S+)\s+(.*)$", line.strip())
        if m and m.group(1).lower() in devices:
            devices[m.group(1).lower()]["lspci"] = m.group(2)
    return devices


def _lspci_name(desc: str) -> str | None:
    """'3D controller [0302]: NVIDIA Corporation AD104GL [L4] [10de:27b8] (rev a1)' -> 'L4'."""
    body = desc.split("]: ", 1)[-1]
    body = re.sub(r"\s*\[[0-9a-f]{4}:[0-9a-f]{4}\]", "", body)
    body = re.sub(r"\s*\(rev [0-9a-f]+\)", "", body)
    marketing = re.findall(r"\[([^\]]+)\]", body)
    if marketing:
        return marketing[-1]
    return body.replace("NVIDIA Corporation", "").strip() or None


def parse_nvidia_smi(text: str | None) -> tuple[bool | None, str | None, dict[str, dict[str, str]]]:
    """nvidia-smi CSV query + 'rc=N' -> (ok, error message, {pci address: {name, driver}})."""
    if text is None or not text.strip():
        return None, None, {}
    lines = _lines(text)
    rc = None
    if lines and lines[-1].startswith("rc="):
        rc = _int(lines.pop()[3:])
    gpus: dict[str, dict[str, str]] = {}
    errors = []
    for line in lines:
        cols = [c.strip() for c in line.split(",")]
        if len(cols) >= 4 and re.match(r"^[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.\d$", cols[1]):
            bus = cols[1].lower()
            domain, rest = bus.split(":", 1)
            addr = f"{int(domain, 16):04x}:{rest}"
            gpus[addr] = {"name": cols[2], "driver_version": cols[3]}
            # pci.device_id is "0x233010DE": device id, then vendor id
            if len(cols) >= 7 and re.fullmatch(r"0x[0-9a-fA-F]{8}", cols[6]):
                gpus[addr]["device_id"] = "0x" + cols[6][2:6].lower()
                gpus[addr]["vendor_id"] = "0x" + cols[6][6:10].lower()
        else:
            errors.append(line.strip())
    ok = rc == 0 and bool(gpus)
    error = None if ok else (" ".join(errors) or f"nvidia-smi exited {rc}")
    return ok, error, gpus


def parse_nvidia_version(text: str | None) -> str | None:
    """/proc/driver/nvidia/version ('... Kernel Module  595.91.07 ...') or /sys/module/nvidia/version."""
    for line in _lines(text):
        m = re.search(r"(\d{3}\.\d+(?:\.\d+)?)", line)
        if m:
            return m.group(1)
    return None


def parse_nouveau_blacklist(modprobe_text: str | None, cmdline: str | None) -> bool:
    for line in _lines(modprobe_text):
        words = line.split()
        if words[:2] == ["blacklist", "nouveau"]:
            return True
        if words[:2] == ["install", "nouveau"] and any(w in ("/bin/false", "/bin/true", "/usr/bin/false")
                                                      for w in words[2:]):
            return True
    for word in (cmdline or "").split():
        key, _, value = word.partition("=")
        if key in ("modprobe.blacklist", "module_blacklist") and "nouveau" in value.split(","):
            return True
        if word == "rd.driver.blacklist=nouveau":
            return True
    return False


def parse_secure_boot(text: str | None) -> tuple[bool | None, bool | None]:
    """-> (secure_boot, uefi). Prefers the SecureBoot EFI variable, then mokutil."""
    secure: bool | None = None
    uefi: bool | None = None
    for line in _lines(text):
        s = line.strip()
        if s.startswith("efivar="):
            uefi = True
            nums = [int(x) for x in s[len("efivar="):].split() if x.isdigit()]
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
    for line in _lines(text):
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
    for unit in ("dnf-automatic.timer", "dnf-automatic-install.timer"):
        if services.get(unit, {}).get("enabled") == "enabled":
            return True
    settings = []
    apt = False
    for line in _lines(text):
        if line.strip() == "apt=yes":
            apt = True
            continue
        path, rest = line.split(":", 1) if line.startswith("/") else ("", line)
        m = re.search(r'APT::Periodic::Unattended-Upgrade\s+"?(\d+)"?', rest)
        if m:
            settings.append((path, int(m.group(1))))
    if settings:
        return sorted(settings, key=lambda s: s[0])[-1][1] > 0
    if apt:
        return False  # without the periodic setting, apt never runs unattended-upgrade
    if any(u in services for u in ("dnf-automatic.timer", "dnf-automatic-install.timer")):
        return False
    return None


def parse_sys_net(text: str | None) -> dict[str, str]:
    """`grep -H '' /sys/class/net/*/address` (hosts without iproute2) -> {iface: mac}."""
    macs = {}
    for line in _lines(text):
        m = re.match(r"^/sys/class/net/([^/]+)/address:([0-9a-fA-F:]{17})$", line.strip())
        if m and not _VIRTUAL_IFACE.match(m.group(1)) and m.group(2) != "00:00:00:00:00:00":
            macs[m.group(1)] = m.group(2).lower()
    return macs


def _hex_ipv4(h: str) -> str:
    return str(ipaddress.IPv4Address(int(h, 16).to_bytes(4, "little")))


def parse_proc_route(text: str | None) -> tuple[list[str], bool]:
    """/proc/net/route (hosts without iproute2) -> (destination prefixes, has default route)."""
    dests, default = [], False
    for line in _lines(text):
        cols = line.split()
        if len(cols) < 8 or cols[0] == "Iface":
            continue
        try:
            net = ipaddress.ip_network(f"{_hex_ipv4(cols[1])}/{_hex_ipv4(cols[7])}", strict=False)
        except ValueError:
            continue
        if net.prefixlen == 0:
            default = True
        else:
            dests.append(str(net))
    return dests, default


def parse_fib_trie(text: str | None, routes: list[str]) -> list[str]:
    """Local IPv4 addresses from /proc/net/fib_trie, with the prefix of the route they sit in."""
    found: list[str] = []
    prev = None
    for line in (text or "").splitlines():
        m = re.search(r"\|--\s+(\d+\.\d+\.\d+\.\d+)$", line)
        if m:
            prev = m.group(1)
            continue
        if prev and "/32 host LOCAL" in line:
            addr = ipaddress.ip_address(prev)
            if not addr.is_loopback:
                nets = [ipaddress.ip_network(r) for r in routes if ":" not in r]
                best = max((n for n in nets if addr in n), key=lambda n: n.prefixlen, default=None)
                entry = f"{addr}/{best.prefixlen if best else 32}"
                if entry not in found:
                    found.append(entry)
        prev = prev if "/32 host LOCAL" not in line else None
    return found


def parse_nvidia_module_type(text: str | None) -> str | None:
    """'NVRM version: NVIDIA UNIX Open Kernel Module ...' -> 'open'; the proprietary one -> 'proprietary'."""
    for line in _lines(text):
        if line.startswith("NVRM version:"):
            return "open" if "Open Kernel Module" in line else "proprietary"
    return None


# --------------------------------------------------------------------------- assembly

def parse_probe(text: str) -> Facts:
    """Build Facts from one probe run's output."""
    sec = split_sections(text)
    f = Facts()
    f.probe_version = _int(sec.get("probe"))
    f.uid = _int(sec.get("uid"))
    f.os = parse_os_release(sec.get("os_release"))
    f.kernel, f.arch = parse_uname(sec.get("uname"))
    host = _lines(sec.get("hostname"))
    f.hostname = host[0].strip() if host else None
    f.cgroup_version, f.cgroup_fs = parse_cgroup(sec.get("cgroup"))
    f.cpus = _int(sec.get("cpus"))
    f.memory_mib = parse_meminfo(sec.get("meminfo"))
    if "swaps" in sec:
        f.swap_devices = parse_swaps(sec.get("swaps"))
        f.swap_enabled = bool(f.swap_devices)
    f.swap_fstab_entries = parse_fstab_swap(sec.get("fstab"))
    f.swap_units = parse_swap_units(sec.get("swap_units"))
    if "links" in sec or "sys_net" not in sec:
        f.macs = parse_links(sec.get("links"))
        f.addresses = parse_addrs(sec.get("addrs"))
        f.routes, f.default_route = parse_routes(sec.get("routes"))
    else:  # host without iproute2
        f.macs = parse_sys_net(sec.get("sys_net"))
        f.routes, f.default_route = parse_proc_route(sec.get("proc_route"))
        f.addresses = parse_fib_trie(sec.get("fib_trie"), f.routes)
    uuid = (sec.get("product_uuid") or "").strip()
    f.product_uuid = uuid.lower() or None
    f.modules = parse_modules(sec.get("modules"))
    fs_names = {ln.split()[-1] for ln in _lines(sec.get("filesystems"))}
    f.sysctls = parse_sysctls(sec.get("sysctl"))
    f.overlay_available = ("overlay" in fs_names or "overlay" in f.modules) if (
        fs_names or f.modules) else None
    f.br_netfilter_loaded = ("br_netfilter" in f.modules
                             or "net.bridge.bridge-nf-call-iptables" in f.sysctls)
    f.binaries = parse_binaries(sec.get("binaries"))
    f.services = parse_services(sec.get("services"))
    f.time_synchronized, f.ntp_enabled = parse_timedatectl(sec.get("timedatectl"))
    f.ufw_enabled = parse_ufw_conf(sec.get("ufw_conf"))
    f.listening_ports = parse_listen(sec.get("listen"))
    if sec.get("endpoint") is not None and "endpoint" in sec:
        f.endpoint_addresses = parse_getent(sec.get("endpoint"))
    f.containerd_version = parse_containerd_version(sec.get("containerd_version"))
    raw_cfg = sec.get("containerd_config")
    f.containerd = parse_containerd_config(raw_cfg if raw_cfg else None)
    f.kubeadm_version = parse_kube_version(sec.get("kubeadm_version"))
    f.kubelet_version = parse_kube_version(sec.get("kubelet_version"))
    f.kubectl_version = parse_kube_version(sec.get("kubectl_version"))
    f.helm_version = parse_kube_version(sec.get("helm_version"))
    f.nvidia_smi_ok, f.nvidia_smi_error, smi_gpus = parse_nvidia_smi(sec.get("nvidia_smi"))
    devices = parse_pci(sec.get("pci"), sec.get("pci_driver"), sec.get("lspci"))
    for addr in sorted(devices):
        d = devices[addr]
        if d.get("vendor") != NVIDIA_VENDOR:
            continue
        cls = d.get("class", "")
        gpu = GPU(pci_address=addr, vendor_id=NVIDIA_VENDOR, device_id=d.get("device", ""),
                  class_id=cls or None, driver=d.get("driver"))
        gpu.name = (smi_gpus.get(addr, {}).get("name")
                    or NVIDIA_DEVICE_NAMES.get(gpu.device_id)
                    or (_lspci_name(d["lspci"]) if d.get("lspci") else None))
        if cls.startswith("0x03"):          # display controller: VGA 0x0300xx or 3D 0x0302xx
            f.gpus.append(gpu)
        else:
            if cls.startswith("0x0680"):     # NVSwitch shows up as a bridge
                f.nvswitch_count += 1
            f.nvidia_other_functions.append(gpu)
    if not devices:
        # No readable PCI tree (containers, gVisor): trust the driver's own list of GPUs.
        for addr, g in sorted(smi_gpus.items()):
            if g.get("vendor_id", NVIDIA_VENDOR) == NVIDIA_VENDOR:
                f.gpus.append(GPU(pci_address=addr, vendor_id=NVIDIA_VENDOR,
                                  device_id=g.get("device_id", ""), name=g.get("name"),
                                  driver="nvidia"))
    f.nvidia_driver_version = (
        parse_nvidia_version(sec.get("nvidia_version"))
        or next((g["driver_version"] for g in smi_gpus.values() if g.get("driver_version")), None)
    )
    f.nvidia_kernel_module = parse_nvidia_module_type(sec.get("nvidia_version"))
    f.nouveau_loaded = "nouveau" in f.modules or any(g.driver == "nouveau" for g in f.gpus)
    modprobe_text, apt_text = split_conf_grep(sec.get("conf_grep"))
    if "modprobe_nouveau" in sec:  # probes before conf_grep had a section each
        modprobe_text = sec.get("modprobe_nouveau")
    f.nouveau_blacklisted = parse_nouveau_blacklist(modprobe_text, sec.get("cmdline"))
    f.secure_boot, f.uefi = parse_secure_boot(sec.get("secure_boot"))
    f.unattended_upgrades = parse_auto_upgrades("\n".join(
        t for t in (sec.get("auto_upgrades"), apt_text) if t), f.services)
    f.cni_configs = sorted(ln.strip() for ln in _lines(sec.get("cni")))
    f.kubernetes_files = sorted(ln.strip() for ln in _lines(sec.get("k8s_state")))
    for line in _lines(sec.get("managed_files")):
        digest, _, path = line.strip().partition("  ")
        if path in MANAGED_FILES and re.fullmatch(r"[0-9a-f]{64}", digest):
            f.managed_files[path] = digest
    enforce = (sec.get("selinux") or "").strip()
    f.selinux_enforcing = None if not enforce else enforce == "1"
    return f
