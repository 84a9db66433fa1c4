"""The facts data model: what one probe run says about one host."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any


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
    mig_mode: str | None = None          # nvidia-smi mig.mode.current: enabled | disabled; None: no MIG / unknown
    mig_mode_pending: str | None = None  # mig.mode.pending (differs until a GPU reset or reboot)


@dataclass
class ContainerdConfig:
    present: bool = False
    parse_error: str | None = None
    version: int | None = None              # the file's `version = N` (1 when absent)
    cri_disabled: bool = False
    systemd_cgroup: bool | None = None      # value in the table that matches the file version
    systemd_cgroup_misplaced: bool = False  # key only found in a table of the other version
    sandbox_image: str | None = None
    imports: tuple[str, ...] = ()           # the root file's `imports` (drop-in paths/globs)


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
    # TCP connect to the endpoint: open | refused | timeout | unreachable | error: <text>;
    # None when the probe did not try (no endpoint, or not a node and no cluster.vip)
    endpoint_tcp: str | None = None
    interfaces: dict[str, list[str]] = field(default_factory=dict)  # every iface -> "10.0.0.5/24"
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
    nvml_error: str | None = None          # "Failed to initialize NVML: Driver/library version mismatch"
    nvml_library_version: str | None = None  # the user-space NVML's version nvidia-smi reports with it
    nouveau_loaded: bool | None = None
    nouveau_blacklisted: bool | None = None
    secure_boot: bool | None = None        # None: unknown / not UEFI-reported
    uefi: bool | None = None
    unattended_upgrades: bool | None = None
    cni_configs: list[str] = field(default_factory=list)
    kubernetes_files: list[str] = field(default_factory=list)
    selinux_enforcing: bool | None = None
    managed_files: dict[str, str] = field(default_factory=dict)  # path -> sha256 of gpuk8s's files
    # Facts left unknown because their probe output could not be parsed: field(s) -> reason.
    parse_errors: dict[str, str] = field(default_factory=dict)

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
