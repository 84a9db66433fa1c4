"""GPU checks: GPUs present, nouveau, Secure Boot, the host driver, OS consistency, upgrades.

They apply to GPU hosts only (`is_gpu_host`); every other host reports `skip`.
"""

from __future__ import annotations

from gpuk8s import gpu_models
from gpuk8s.checks.base import FAIL, PASS, SKIP, WARN, CheckContext, CheckResult, is_gpu_host
from gpuk8s.checks.fixes import initramfs
from gpuk8s.checks.preflight import PREFLIGHT
from gpuk8s.facts import Facts
from gpuk8s.facts.gpu import gpu_model
from gpuk8s.inventory import HostSpec, Inventory
from gpuk8s.versions import (GPU_DRIVER_IMAGE_OS_TAGS, GPU_OPERATOR_DEFAULT_DRIVER, driver_branch,
                             driver_image_os_tag)


def _host_driver_loaded(facts: Facts) -> bool:
    """True when an NVIDIA kernel driver is already loaded on the host."""
    return facts.nvidia_driver_version is not None or "nvidia" in facts.modules


def driver_mode(inventory: Inventory, facts: Facts, host: HostSpec | str | None = None) -> str:
    """'host' (pre-installed driver, driver.enabled=false) or 'container' (GPU Operator's driver).

    With a host, its own `gpu: {driver: ...}` wins over the cluster-level `gpu.driver`."""
    wanted = (inventory.gpu_for(host) if host is not None else inventory.gpu).driver
    if wanted in ("host", "container"):
        return wanted
    return "host" if _host_driver_loaded(facts) else "container"


def _skip_non_gpu(ctx: CheckContext, check_id: str) -> CheckResult | None:
    """A `skip` result for a host that is not a GPU node, else None."""
    if ctx.gpu:
        return None
    if ctx.host.gpu is False:
        return CheckResult(check_id, SKIP, f"{ctx.host.name} is not a GPU node (gpu: false)")
    return CheckResult(check_id, SKIP, f"{ctx.host.name} has no NVIDIA GPU: not a GPU node")


@PREFLIGHT.check("gpu-present", "NVIDIA GPUs present",
                 "A host declared `gpu: true` without a visible GPU would never get nvidia.com/gpu."
                 )
def check_gpu_present(ctx: CheckContext) -> CheckResult:
    f = ctx.facts
    if ctx.host.gpu is False:
        extra = f" ({len(f.gpus)} NVIDIA GPU(s) found will not be used)" if f.gpus else ""
        return CheckResult("gpu-present", SKIP, f"gpu: false in the inventory{extra}")
    if not f.gpus:
        if ctx.host.gpu:
            others = (f"; only non-GPU NVIDIA functions: "
                      f"{', '.join(g.class_id or '?' for g in f.nvidia_other_functions)}"
                      if f.nvidia_other_functions else "")
            return CheckResult("gpu-present", FAIL,
                               "gpu: true in the inventory but no NVIDIA display controller "
                               f"(PCI class 0x03xx, vendor 0x10de) is on the bus{others}",
                               "lspci -nn -d 10de:   # reseat the card / pass the GPU through, "
                               f"or set gpu: false for {ctx.host.name}")
        return CheckResult("gpu-present", SKIP, "no NVIDIA GPU found: CPU-only node")
    counts: dict[str, int] = {}
    for g in f.gpus:
        name = g.name or "GPU"
        if not name.startswith(("NVIDIA", "Tesla", "Quadro")):
            name = f"NVIDIA {name}"
        label = f"{name} ({g.device_id})"
        counts[label] = counts.get(label, 0) + 1
    desc = ", ".join(f"{n} x {label}" for label, n in counts.items())
    vfio = [g.pci_address for g in f.gpus if g.driver == "vfio-pci"]
    if vfio:
        return CheckResult("gpu-present", WARN,
                           f"{desc}; {', '.join(vfio)} bound to vfio-pci (reserved for VM "
                           "passthrough), not usable by the node",
                           "remove the 10de device ids from vfio-pci.ids= on the kernel command "
                           "line and /etc/modprobe.d, rebuild the initramfs, then reboot")
    if f.nvswitch_count:
        desc += (f"; {f.nvswitch_count} NVSwitch: Fabric Manager is required (the driver "
                 "container installs it; with a host driver install nvidia-fabricmanager)")
    return CheckResult("gpu-present", PASS, desc)


@PREFLIGHT.check("nouveau-off", "nouveau driver not loaded",
                 "With nouveau loaded the NVIDIA driver cannot load and GPU Operator pods stay in "
                 "Init (DOMAIN 6 #13).")
def check_nouveau_off(ctx: CheckContext) -> CheckResult:
    skip = _skip_non_gpu(ctx, "nouveau-off")
    if skip:
        return skip
    f = ctx.facts
    blacklist = ("printf 'blacklist nouveau\\noptions nouveau modeset=0\\n' > "
                 f"/etc/modprobe.d/blacklist-nouveau.conf\n{initramfs(ctx)}")
    if f.nouveau_loaded:
        return CheckResult("nouveau-off", FAIL,
                           "the nouveau module is loaded: the NVIDIA driver cannot bind the GPU",
                           f"{blacklist}\nreboot")
    if not f.nouveau_blacklisted and any(g.driver == "nvidia" for g in f.gpus):
        return CheckResult("nouveau-off", PASS,
                           "nouveau is not loaded; the NVIDIA host driver is bound to the GPUs")
    if not f.nouveau_blacklisted:
        return CheckResult("nouveau-off", WARN,
                           "nouveau is not loaded but not blacklisted either: it may load on "
                           "the next boot", blacklist)
    return CheckResult("nouveau-off", PASS, "nouveau is not loaded and is blacklisted")


@PREFLIGHT.check("secure-boot", "Secure Boot vs. driver container",
                 "With Secure Boot on, the kernel rejects the unsigned modules the driver "
                 "container builds (DOMAIN 6 #14).")
def check_secure_boot(ctx: CheckContext) -> CheckResult:
    skip = _skip_non_gpu(ctx, "secure-boot")
    if skip:
        return skip
    f = ctx.facts
    mode = driver_mode(ctx.inventory, f, ctx.host)
    if f.secure_boot is None:
        return CheckResult("secure-boot", WARN,
                           "Secure Boot state unknown (no SecureBoot EFI variable readable and "
                           "no mokutil)", "mokutil --sb-state")
    if not f.secure_boot:
        why = "legacy BIOS boot" if f.uefi is False else "UEFI, Secure Boot disabled"
        return CheckResult("secure-boot", PASS, f"Secure Boot is off ({why})")
    if mode == "host":
        if _host_driver_loaded(f):
            ver = f" {f.nvidia_driver_version}" if f.nvidia_driver_version else ""
            return CheckResult("secure-boot", PASS,
                               f"Secure Boot is on; the host driver{ver} is loaded, so its "
                               "modules are signed")
        return CheckResult("secure-boot", WARN,
                           "Secure Boot is on and gpu.driver is host, but no NVIDIA module is "
                           "loaded: the host driver must be signed (or its key enrolled)",
                           "mokutil --sb-state; modinfo -F signer nvidia")
    ubuntu = ("\n# or install a signed host driver: ubuntu-drivers install --gpgpu "
              "nvidia:580-server && reboot   (then gpu.driver: host, or gpu: {driver: host} for this host)"
              if ctx.facts.os.id == "ubuntu" else
              "\n# or pre-install a signed NVIDIA driver and set gpu.driver: host")
    return CheckResult("secure-boot", FAIL,
                       "Secure Boot is on and the GPU Operator would build the driver in a "
                       "container: the kernel rejects its unsigned modules "
                       "(\"Operation not permitted\")",
                       "mokutil --disable-validation && reboot   # confirm in MokManager, or "
                       f"disable Secure Boot in the UEFI setup{ubuntu}")


@PREFLIGHT.check("nvidia-driver", "Host NVIDIA driver",
                 "A pre-installed driver requires driver.enabled=false; otherwise the driver pod "
                 "fails 'module already loaded' (DOMAIN 6 #16).")
def check_nvidia_driver(ctx: CheckContext) -> CheckResult:
    skip = _skip_non_gpu(ctx, "nvidia-driver")
    if skip:
        return skip
    f = ctx.facts
    wanted = ctx.inventory.gpu_for(ctx.host).driver
    loaded = _host_driver_loaded(f)
    ver = f.nvidia_driver_version or "(unknown version)"
    purge = ("apt-get purge -y '*nvidia*' && apt-get autoremove -y" if ctx.family == "debian"
             else "dnf remove -y '*nvidia*'" if ctx.family == "rhel"
             else "apt-get purge -y '*nvidia*' || dnf remove -y '*nvidia*'")
    if loaded and wanted == "container":
        return CheckResult("nvidia-driver", FAIL,
                           f"host driver {ver} is loaded but gpu.driver is container: the driver "
                           "pod would fail with 'module already loaded'",
                           f"{purge}\nreboot   # or set gpu.driver: host (or auto) in "
                           f"{ctx.inventory.path}")
    if loaded and f.nvml_error and "Driver/library version mismatch" in f.nvml_error:
        return _nvml_mismatch(ctx, ver)
    if loaded:
        if f.nvidia_smi_ok:
            return CheckResult("nvidia-driver", PASS,
                               f"host driver {ver}: GPU Operator will use driver.enabled=false")
        err = f.nvidia_smi_error or "nvidia-smi is not installed"
        return CheckResult("nvidia-driver", WARN,
                           f"nvidia module {ver} is loaded but nvidia-smi fails: {err}",
                           "nvidia-smi; dmesg | grep -i -e NVRM -e Xid   # repair or reinstall "
                           "the host driver, then reboot")
    if wanted == "host":
        return CheckResult("nvidia-driver", FAIL,
                           "gpu.driver is host but no NVIDIA kernel module is loaded",
                           ("ubuntu-drivers install --gpgpu nvidia:580-server && reboot"
                            if ctx.facts.os.id == "ubuntu" else
                            "install the NVIDIA driver on the host and reboot")
                           + f"\n# or set gpu.driver: container in {ctx.inventory.path}")
    if f.nvidia_smi_ok is False:
        return CheckResult("nvidia-driver", PASS,
                           "no host driver (nvidia-smi is installed but reaches no driver): "
                           "GPU Operator deploys the driver container")
    return CheckResult("nvidia-driver", PASS,
                       "no host driver: GPU Operator deploys the driver container "
                       "(driver.enabled=true)")


# The loaded module's users first: nvidia_drm needs nvidia_modeset, and nvidia_uvm, nvidia_modeset
# and nvidia_peermem need nvidia (the "Used by" column of /proc/modules).
_NVIDIA_MODULES_UNLOAD_ORDER = ("nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia_peermem",
                                "nvidia")


def _nvml_mismatch(ctx: CheckContext, ver: str) -> CheckResult:
    """nvidia-smi cannot initialise NVML while the kernel module is loaded: after a driver upgrade
    without a reboot the user-space library (NVML) is newer than the module still loaded.
    A failure, not a warning: with driver.enabled=false the Container Toolkit and the device
    plugin load the same NVML, fail the same way ("nvml error: driver/library version mismatch"),
    and `up` would end with a GPU node that never gets nvidia.com/gpu."""
    f = ctx.facts
    quoted = f.nvml_error or ""
    loaded = [m for m in _NVIDIA_MODULES_UNLOAD_ORDER if m in f.modules]
    if "nvidia" not in loaded:
        loaded.append("nvidia")
    lib = f" {f.nvml_library_version}" if f.nvml_library_version else ""
    return CheckResult(
        "nvidia-driver", FAIL,
        f"nvidia-smi: '{quoted}': the loaded kernel module is {ver} but the installed user-space "
        f"NVML{lib} differs (driver upgraded without a reboot); the GPU Operator's toolkit and "
        "device plugin fail the same way and the node gets no nvidia.com/gpu",
        "reboot   # loads the installed driver's module\n"
        "# or, when no process uses the GPUs (rmmod refuses 'Module nvidia is in use' "
        "otherwise; then reboot):\n"
        "systemctl stop nvidia-persistenced nvidia-fabricmanager nvidia-dcgm 2>/dev/null; "
        f"rmmod {' '.join(loaded)} && modprobe nvidia && nvidia-smi")


def _models_on_bus(f: Facts) -> tuple[dict[str, int], list[str]]:
    """(known model name -> count, descriptions of GPUs not in gpuk8s's table)."""
    known: dict[str, int] = {}
    unknown: list[str] = []
    for g in f.gpus:
        m = gpu_model(g)
        if m is None:
            unknown.append(f"{g.name or 'GPU'} ({g.device_id or '?'})")
        else:
            known[m.name] = known.get(m.name, 0) + 1
    return known, unknown


@PREFLIGHT.check("gpu-driver-branch", "Driver branch supports the GPUs",
                 "A driver branch that does not support a GPU on the bus never binds it: the "
                 "driver pod crash-loops and the node gets no nvidia.com/gpu.")
def check_gpu_driver_branch(ctx: CheckContext) -> CheckResult:
    skip = _skip_non_gpu(ctx, "gpu-driver-branch")
    if skip:
        return skip
    f = ctx.facts
    if driver_mode(ctx.inventory, f, ctx.host) == "host":
        return CheckResult("gpu-driver-branch", SKIP,
                           "uses the host driver: the branch is whatever is installed")
    pinned = ctx.inventory.gpu_for(ctx.host).driver_version
    version = pinned or GPU_OPERATOR_DEFAULT_DRIVER
    branch = driver_branch(version)
    where = "gpu.driver_version" if pinned else "the chart's default driver"
    known, unknown = _models_on_bus(f)
    bad = [f"{n} x {name}: {err}" for name, n in known.items()
           if branch is not None and (err := gpu_models.branch_error(
               branch, gpu_models.model_by_name(name)))]
    if bad:
        fits = sorted({m for name in known for m in [gpu_models.model_by_name(name)]
                       if m.max_branch}, key=lambda m: m.max_branch)
        hint = (f'gpu.driver_version: "{fits[0].max_branch}.xx.yy" (a {fits[0].max_branch} '
                "release) in " if fits else "a newer gpu.driver_version in ")
        return CheckResult("gpu-driver-branch", FAIL,
                           f"driver {version} ({where}, branch {branch}) does not support "
                           f"{'; '.join(bad)}",
                           f"set {hint}{ctx.inventory.path}, or install a supported driver on "
                           "the host and set gpu: {driver: host} for it")
    desc = ", ".join(f"{n} x {name}" for name, n in known.items())
    if unknown:
        return CheckResult("gpu-driver-branch", WARN,
                           f"driver {version} ({where}): {', '.join(unknown)} not in gpuk8s's "
                           f"GPU table, support not checked" + (f"; {desc} supported" if desc
                                                                 else ""),
                           "check NVIDIA's driver release notes for these GPUs")
    return CheckResult("gpu-driver-branch", PASS,
                       f"driver {version} ({where}, branch {branch}) supports {desc}")


@PREFLIGHT.check("gpu-mig", "MIG layout fits the GPUs",
                 "MIG on a GPU that cannot do it (L4, T4...) or a profile the model lacks leaves "
                 "MIG Manager failing and the node without the GPUs the inventory promised.")
def check_gpu_mig(ctx: CheckContext) -> CheckResult:
    skip = _skip_non_gpu(ctx, "gpu-mig")
    if skip:
        return skip
    mig = ctx.inventory.gpu_for(ctx.host).mig
    if mig is None or not gpu_models.mig_enabled(mig.config):
        wrong, reset = _mig_mode_off(ctx.facts, "disabled")
        if wrong:
            return CheckResult(
                "gpu-mig", WARN,
                f"MIG mode is Enabled on {', '.join(wrong)} but MIG is not configured for this "
                "node (all-disabled): the GPUs offer no whole-GPU nvidia.com/gpu until MIG "
                "Manager disables it, which needs the GPUs idle and a GPU reset",
                _mig_mode_fix(wrong, 0))
        if reset:
            return _mig_reset_result(f"MIG not configured for this node (all-disabled): MIG mode "
                                     f"on {', '.join(reset)} is Enabled, Disabled", reset)
        return CheckResult("gpu-mig", PASS, "MIG not configured for this node (all-disabled)")
    known, unknown = _models_on_bus(ctx.facts)
    errors = [err for name in known
              if (err := gpu_models.mig_config_error(mig.config, gpu_models.model_by_name(name)))]
    if errors:
        return CheckResult("gpu-mig", FAIL, f"mig.config {mig.config}: {'; '.join(errors)}",
                           f"set gpu: {{mig: {{config: all-disabled}}}} for {ctx.host.name} in "
                           f"{ctx.inventory.path} (or a profile its GPUs have)")
    if unknown:
        return CheckResult("gpu-mig", WARN,
                           f"mig.config {mig.config}: {', '.join(unknown)} not in gpuk8s's GPU "
                           "table, MIG support not checked",
                           "nvidia-smi --query-gpu=name,mig.mode.current --format=csv")
    wrong, reset = _mig_mode_off(ctx.facts, "enabled")
    if wrong:
        return CheckResult(
            "gpu-mig", WARN,
            f"mig.config {mig.config} but MIG mode is Disabled on {', '.join(wrong)}: MIG "
            "Manager must enable it, which needs the GPUs idle and a GPU reset",
            _mig_mode_fix(wrong, 1))
    if reset:
        return _mig_reset_result(f"mig.config {mig.config}: MIG mode on {', '.join(reset)} is "
                                 "Disabled, Enabled", reset)
    return CheckResult("gpu-mig", PASS,
                       f"mig.config {mig.config} fits {', '.join(known)} "
                       f"(strategy {mig.strategy})")


def _mig_mode_off(f: Facts, wanted: str) -> tuple[list[str], list[str]]:
    """GPUs with a known MIG mode other than `wanted`: (those whose pending mode is not `wanted`
    either, those where only a GPU reset is missing). GPUs without MIG ("[N/A]") are left out."""
    wrong = [g.pci_address for g in f.gpus
             if g.mig_mode is not None and (g.mig_mode_pending or g.mig_mode) != wanted]
    reset = [g.pci_address for g in f.gpus
             if g.mig_mode is not None and g.mig_mode != wanted and g.mig_mode_pending == wanted]
    return wrong, reset


def _mig_reset_result(message: str, addresses: list[str]) -> CheckResult:
    return CheckResult("gpu-mig", WARN, f"{message} pending a GPU reset",
                       "\n".join(f"nvidia-smi -i {a} -r" for a in addresses)
                       + "   # with no process on the GPU; or reboot")


def _mig_mode_fix(addresses: list[str], mode: int) -> str:
    """Set MIG mode now (root, no process on the GPU); a mode left pending applies at the GPU's
    reset. `-i` takes a PCI bus id (NVML nvmlDeviceGetHandleByPciBusId_v2: domain:bus:device.function);
    MIG mode persists across reboots (NVIDIA MIG User Guide, "Enable MIG Mode")."""
    return "\n".join(f"nvidia-smi -i {a} -mig {mode}" for a in addresses) + (
        "\n# 'pending' in nvidia-smi -q: reset the GPU (nvidia-smi -i ADDRESS -r) or reboot")


@PREFLIGHT.check("gpu-os-consistent", "Same OS on all driver-container GPU nodes",
                 "The GPU Operator requires one OS version on all GPU nodes using its driver "
                 "container (DOMAIN 5.1).")
def check_gpu_os_consistent(ctx: CheckContext) -> CheckResult:
    skip = _skip_non_gpu(ctx, "gpu-os-consistent")
    if skip:
        return skip
    f = ctx.facts
    if driver_mode(ctx.inventory, f, ctx.host) == "host":
        return CheckResult("gpu-os-consistent", PASS,
                           "uses the host driver: the OS need not match other GPU nodes")
    mine = (f.os.id, f.os.version_id)
    differ = []
    peers = 0
    for name, other in ctx.others():
        try:
            spec = ctx.inventory.host(name)
        except KeyError:
            continue
        if not is_gpu_host(spec, other) or driver_mode(ctx.inventory, other, spec) == "host":
            continue
        peers += 1
        if (other.os.id, other.os.version_id) != mine:
            differ.append(f"{name} ({other.os.id} {other.os.version_id})")
    label = f"{mine[0]} {mine[1]}"
    if differ:
        return CheckResult("gpu-os-consistent", FAIL,
                           f"this host runs {label} but driver-container GPU nodes "
                           f"{', '.join(differ)} differ",
                           "reinstall the GPU nodes with one OS version, or pre-install the "
                           "driver on the odd ones and set gpu.driver: host")
    return CheckResult("gpu-os-consistent", PASS,
                       f"{label}, same as {peers} other GPU node(s)" if peers
                       else f"{label} (the only driver-container GPU node reachable)")


@PREFLIGHT.check("gpu-driver-image", "A driver container image exists for the OS",
                 "The GPU Operator pulls nvcr.io/nvidia/driver:<version>-<os tag>; NVIDIA builds "
                 "it for a few OS releases only, elsewhere the driver pod never starts "
                 "(ErrImagePull).")
def check_gpu_driver_image(ctx: CheckContext) -> CheckResult:
    skip = _skip_non_gpu(ctx, "gpu-driver-image")
    if skip:
        return skip
    f = ctx.facts
    if driver_mode(ctx.inventory, f, ctx.host) == "host":
        return CheckResult("gpu-driver-image", PASS, "uses the host driver: no driver image is pulled")
    tag = driver_image_os_tag(f.os.id or "", f.os.version_id or "")
    version = ctx.inventory.gpu_for(ctx.host).driver_version or GPU_OPERATOR_DEFAULT_DRIVER
    if tag in GPU_DRIVER_IMAGE_OS_TAGS:
        return CheckResult("gpu-driver-image", PASS, f"nvcr.io/nvidia/driver:{version}-{tag} is published")
    return CheckResult("gpu-driver-image", FAIL,
                       f"the GPU Operator would pull nvcr.io/nvidia/driver:{version}-{tag}, which "
                       f"NVIDIA does not build (driver images exist for "
                       f"{', '.join(GPU_DRIVER_IMAGE_OS_TAGS)})",
                       "install one of those OS releases on this node, or pre-install the NVIDIA "
                       "driver on the host and set `gpu: {driver: host}` for it in the inventory")


@PREFLIGHT.check("unattended-upgrades", "Automatic kernel upgrades off",
                 "An unattended kernel upgrade can land on a kernel the driver container cannot "
                 "build for (DOMAIN 5.8, 6 #15).")
def check_unattended_upgrades(ctx: CheckContext) -> CheckResult:
    skip = _skip_non_gpu(ctx, "unattended-upgrades")
    if skip:
        return skip
    f = ctx.facts
    if f.unattended_upgrades:
        if any(v.get("enabled") == "enabled" for k, v in f.services.items()
               if k.startswith("dnf-automatic")):
            return CheckResult("unattended-upgrades", WARN,
                               "dnf-automatic timers are enabled: a kernel update may outrun "
                               "the GPU driver",
                               "systemctl disable --now dnf-automatic.timer "
                               "dnf-automatic-install.timer")
        return CheckResult("unattended-upgrades", WARN,
                           "unattended-upgrades is on (APT::Periodic::Unattended-Upgrade \"1\"): "
                           "a kernel upgrade may outrun the GPU driver",
                           "apt-get remove -y unattended-upgrades   # or keep it and turn it off:\n"
                           "printf 'APT::Periodic::Update-Package-Lists \"1\";\\n"
                           "APT::Periodic::Unattended-Upgrade \"0\";\\n' > "
                           "/etc/apt/apt.conf.d/20auto-upgrades")
    if f.unattended_upgrades is None:
        if f.services.get("unattended-upgrades", {}).get("enabled") == "enabled":
            return CheckResult("unattended-upgrades", PASS,
                               "unattended-upgrades is installed but 20auto-upgrades is missing, "
                               "so it never runs")
        return CheckResult("unattended-upgrades", WARN,
                           "could not determine whether automatic upgrades are on",
                           "cat /etc/apt/apt.conf.d/20auto-upgrades; "
                           "systemctl is-enabled dnf-automatic.timer")
    return CheckResult("unattended-upgrades", PASS, "automatic upgrades are off")
