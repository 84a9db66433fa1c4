"""Parsers of the probe's NVIDIA sections: PCI devices, nvidia-smi, the driver, nouveau."""

from __future__ import annotations

import re

from gpuk8s import gpu_models
from gpuk8s.facts.model import GPU
from gpuk8s.facts.system import split_conf_grep
from gpuk8s.facts.text import first_int, nonblank_lines

NVIDIA_VENDOR = "0x10de"

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
_FALSE_INSTALL = ("/bin/false", "/bin/true", "/usr/bin/false")


def parse_pci(text: str | None, drivers_text: str | None = None,
              lspci_text: str | None = None) -> dict[str, dict[str, str]]:
    """`grep -H '' .../vendor .../device .../class` -> {address: {vendor, device, class, ...}}."""
    devices: dict[str, dict[str, str]] = {}
    for line in nonblank_lines(text):
        m = re.match(r"^/sys/bus/pci/devices/([^/]+)/(vendor|device|class):(.*)$", line.strip())
        if m:
            devices.setdefault(m.group(1), {})[m.group(2)] = m.group(3).strip().lower()
    for line in nonblank_lines(drivers_text):
        addr, _, drv = line.strip().partition(" ")
        if addr in devices and drv:
            devices[addr]["driver"] = drv
    for line in nonblank_lines(lspci_text):
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
    rows = nonblank_lines(text)
    rc = None
    if rows and rows[-1].startswith("rc="):
        rc = first_int(rows.pop()[3:])
    gpus: dict[str, dict[str, str]] = {}
    errors = []
    for line in rows:
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
            # mig.mode.current (column 6) and mig.mode.pending (column 8): "Enabled"/"Disabled",
            # "[N/A]" on GPUs without MIG (L4, T4), which leaves the key out
            for key, i in (("mig_mode", 5), ("mig_mode_pending", 7)):
                if len(cols) > i and cols[i] in ("Enabled", "Disabled"):
                    gpus[addr][key] = cols[i].lower()
        else:
            errors.append(line.strip())
    ok = rc == 0 and bool(gpus)
    error = None if ok else (" ".join(errors) or f"nvidia-smi exited {rc}")
    return ok, error, gpus


# NVML's initialisation failure, as nvidia-smi prints it (its exit code is the NVML return code:
# 18 for NVML_ERROR_LIB_RM_VERSION_MISMATCH). Drivers from about R535 add a second line with the
# user-space library's version, e.g. anderskm/gputil#55 ("NVML library version: 535.161", `echo
# $?` 18), mozilla/translations#1167 ("nvidia-smi failed with return code 18", both lines on stdout).
_NVML_INIT = re.compile(r"^Failed to initialize NVML: (.+)$")
_NVML_LIB = re.compile(r"^NVML library version: (\S+)$")


def parse_nvml_error(text: str | None) -> tuple[str | None, str | None]:
    """nvidia-smi output -> (the 'Failed to initialize NVML: ...' line, NVML library version)."""
    error = library = None
    for line in nonblank_lines(text):
        line = line.strip()
        if m := _NVML_INIT.match(line):
            error = error or line
        elif m := _NVML_LIB.match(line):
            library = library or m.group(1)
    return error, (library if error else None)


def _gpu_name(device: dict[str, str], smi_name: str | None) -> str | None:
    """The driver's name, else a known device id's, else lspci's marketing name."""
    return (smi_name
            or NVIDIA_DEVICE_NAMES.get(device.get("device", ""))
            or (_lspci_name(device["lspci"]) if device.get("lspci") else None))


def _gpus_from_smi(smi_gpus: dict[str, dict[str, str]]) -> list[GPU]:
    """The NVIDIA GPUs nvidia-smi lists, bound to the nvidia driver since it answers."""
    return [GPU(pci_address=addr, vendor_id=NVIDIA_VENDOR, device_id=g.get("device_id", ""),
                name=g.get("name"), driver="nvidia", mig_mode=g.get("mig_mode"),
                mig_mode_pending=g.get("mig_mode_pending"))
            for addr, g in sorted(smi_gpus.items())
            if g.get("vendor_id", NVIDIA_VENDOR) == NVIDIA_VENDOR]


def parse_gpus(pci: str | None, pci_driver: str | None, lspci: str | None, nvidia_smi: str | None
               ) -> tuple[list[GPU], list[GPU], int]:
    """NVIDIA PCI functions -> (GPUs, other functions (audio, USB, NVSwitch...), NVSwitch count)."""
    _, _, smi_gpus = parse_nvidia_smi(nvidia_smi)
    devices = parse_pci(pci, pci_driver, lspci)
    if not devices:
        # No readable PCI tree (containers, gVisor): trust the driver's own list of GPUs.
        return _gpus_from_smi(smi_gpus), [], 0
    gpus, others, nvswitches = [], [], 0
    for addr in sorted(devices):
        d = devices[addr]
        if d.get("vendor") != NVIDIA_VENDOR:
            continue
        cls = d.get("class", "")
        smi = smi_gpus.get(addr, {})
        gpu = GPU(pci_address=addr, vendor_id=NVIDIA_VENDOR, device_id=d.get("device", ""),
                  name=_gpu_name(d, smi.get("name")),
                  class_id=cls or None, driver=d.get("driver"),
                  mig_mode=smi.get("mig_mode"), mig_mode_pending=smi.get("mig_mode_pending"))
        if cls.startswith("0x03"):          # display controller: VGA 0x0300xx or 3D 0x0302xx
            gpus.append(gpu)
        else:
            if cls.startswith("0x0680"):     # NVSwitch shows up as a bridge
                nvswitches += 1
            others.append(gpu)
    return gpus, others, nvswitches


def parse_nvidia_version(text: str | None) -> str | None:
    """/proc/driver/nvidia/version or /sys/module/nvidia/version -> '595.91.07'.

    The open module: 'NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.126.09  Release
    Build  (dvs-builder@...)  Wed Jan  7 ...' (cpnr/computing#109); the proprietary one: 'NVRM
    version: NVIDIA UNIX x86_64 Kernel Module  580.173.02  Tue Jun 23 08:38:17 UTC 2026'
    (zzzhouuu/truenas-nvidia-drivers#19). The number after 'Kernel Module' (either wording), else
    the first driver-like number on a line that is not the GCC line."""
    for line in nonblank_lines(text):
        m = (re.search(r"Kernel Module(?: for \S+)?\s+(\d{3}\.\d+(?:\.\d+)?)\b", line)
             or (None if line.startswith("GCC version:")
                 else re.search(r"(\d{3}\.\d+(?:\.\d+)?)", line)))
        if m:
            return m.group(1)
    return None


def parse_driver(nvidia_version: str | None, nvidia_smi: str | None
                 ) -> tuple[str | None, bool | None, str | None]:
    """-> (driver version: the loaded module's, else nvidia-smi's; nvidia-smi ok; its error)."""
    ok, error, smi_gpus = parse_nvidia_smi(nvidia_smi)
    version = (parse_nvidia_version(nvidia_version)
               or next((g["driver_version"] for g in smi_gpus.values() if g.get("driver_version")),
                       None))
    return version, ok, error


def parse_nvidia_module_type(text: str | None) -> str | None:
    """'NVRM version: NVIDIA UNIX Open Kernel Module ...' -> 'open'; the proprietary one -> 'proprietary'."""
    for line in nonblank_lines(text):
        if line.startswith("NVRM version:"):
            return "open" if "Open Kernel Module" in line else "proprietary"
    return None


def nouveau_loaded(modules: list[str], gpus: list[GPU]) -> bool:
    """nouveau is loaded, or bound to a GPU (even where /proc/modules is unreadable)."""
    return "nouveau" in modules or any(g.driver == "nouveau" for g in gpus)


def parse_nouveau_blacklist(modprobe_text: str | None, cmdline: str | None) -> bool:
    """modprobe.d lines or the kernel command line keep nouveau from loading."""
    for line in nonblank_lines(modprobe_text):
        words = line.split()
        if words[:2] == ["blacklist", "nouveau"]:
            return True
        if words[:2] == ["install", "nouveau"] and any(w in _FALSE_INSTALL for w in words[2:]):
            return True
    for word in (cmdline or "").split():
        key, _, value = word.partition("=")
        if key in ("modprobe.blacklist", "module_blacklist") and "nouveau" in value.split(","):
            return True
        if word == "rd.driver.blacklist=nouveau":
            return True
    return False


def parse_nouveau_settings(conf_grep: str | None, modprobe_nouveau: str | None,
                           cmdline: str | None) -> bool:
    """nouveau blacklisted, from the shared conf_grep section (or the older modprobe_nouveau)."""
    modprobe_text, _ = split_conf_grep(conf_grep)
    if modprobe_nouveau is not None:  # probes before conf_grep had a section each
        modprobe_text = modprobe_nouveau
    return parse_nouveau_blacklist(modprobe_text, cmdline)


def gpu_model(gpu: GPU) -> gpu_models.GPUModel | None:
    """The known model of a GPU found on the bus: by PCI device id, else by the driver's name
    ("NVIDIA H100 80GB HBM3" has no table name, so the device id is what counts)."""
    model = gpu_models.model_by_device_id(gpu.device_id)
    if model is None and gpu.name:
        bare = gpu.name.removeprefix("NVIDIA ").removeprefix("Tesla ").replace(" ", "-")
        model = gpu_models.model_by_name(bare)
    return model


def gpu_models_found(gpus: list[GPU]) -> list[gpu_models.GPUModel | None]:
    """One entry per GPU (None: not in gpuk8s's table)."""
    return [gpu_model(g) for g in gpus]
