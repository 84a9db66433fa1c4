"""NVIDIA data-centre GPU models: PCI device ids, architecture, driver branches, MIG profiles.

Pure data, in the versions layer (imports nothing of gpuk8s): the inventory validates a `gpu.model`
hint and MIG profile names against it, the facts name GPUs by device id, the checks judge a driver
branch and a MIG layout against what preflight finds on the PCI bus.

Sources: NVIDIA MIG User Guide ("Supported MIG Profiles", per GPU), NVIDIA/mig-parted's default
configuration (config names `all-disabled`, `all-enabled`, `all-balanced`, `all-<profile>`, with
`+me` written `.me`), the driver release notes (first branch per architecture; R580 is the last
branch for Maxwell, Pascal and Volta), NVIDIA's open kernel module notes (Blackwell needs the open
modules, Turing and newer support them, Volta and older need the proprietary ones).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GPUModel:
    name: str                            # canonical inventory name: "H100-SXM5-80GB"
    arch: str                            # volta | turing | ampere | ada | hopper | blackwell
    device_ids: tuple[str, ...]          # PCI device ids ("0x2330")
    min_branch: int                      # oldest driver branch that supports it
    max_branch: int | None = None        # newest branch that supports it (None: current)
    mig_profiles: tuple[str, ...] = ()   # MIG GPU instance profiles; () = no MIG

    @property
    def mig_capable(self) -> bool:
        return bool(self.mig_profiles)

    @property
    def kernel_module(self) -> str:
        """'open' (required), 'proprietary' (required) or 'any' (both work)."""
        if self.arch == "blackwell":
            return "open"
        if self.arch in ("volta", "pascal", "maxwell"):
            return "proprietary"
        return "any"


_A100_40 = ("1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb")
_X_80 = ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")
_A30 = ("1g.6gb", "1g.6gb+me", "2g.12gb", "2g.12gb+me", "4g.24gb")
_H100_NVL = ("1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb")
_H200 = ("1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb")

MODELS: tuple[GPUModel, ...] = (
    GPUModel("V100-PCIE-16GB", "volta", ("0x1db4",), 384, 580),
    GPUModel("V100-SXM2-16GB", "volta", ("0x1db1",), 384, 580),
    GPUModel("V100-SXM2-32GB", "volta", ("0x1db5",), 384, 580),
    GPUModel("V100-PCIE-32GB", "volta", ("0x1db6",), 384, 580),
    GPUModel("T4", "turing", ("0x1eb8",), 410),
    GPUModel("A100-SXM4-40GB", "ampere", ("0x20b0",), 450, None, _A100_40),
    GPUModel("A100-PCIE-40GB", "ampere", ("0x20f1",), 450, None, _A100_40),
    GPUModel("A100-SXM4-80GB", "ampere", ("0x20b2",), 450, None, _X_80),
    GPUModel("A100-PCIE-80GB", "ampere", ("0x20b5",), 450, None, _X_80),
    GPUModel("A30", "ampere", ("0x20b7",), 460, None, _A30),
    GPUModel("A10", "ampere", ("0x2236",), 460),
    GPUModel("L4", "ada", ("0x27b8",), 525),
    GPUModel("L40", "ada", ("0x26b5",), 525),
    GPUModel("L40S", "ada", ("0x26b9",), 535),
    GPUModel("H100-SXM5-80GB", "hopper", ("0x2330",), 525, None, _X_80),
    GPUModel("H100-PCIE-80GB", "hopper", ("0x2331",), 525, None, _X_80),
    GPUModel("H100-NVL", "hopper", ("0x2321",), 535, None, _H100_NVL),
    GPUModel("H200", "hopper", ("0x2335",), 550, None, _H200),
)

_BY_NAME = {m.name.lower(): m for m in MODELS}
_BY_DEVICE = {d: m for m in MODELS for d in m.device_ids}

# MIG Manager's config names (mig-parted default config): all-<g>g.<mem>gb[.me]
_MIG_ALL_RE = re.compile(r"all-(\d)g\.(\d+)gb(\.me)?")
MIG_SPECIAL_CONFIGS = ("all-disabled", "all-enabled", "all-balanced")


def model_names() -> list[str]:
    return [m.name for m in MODELS]


def model_by_name(name: str | None) -> GPUModel | None:
    return _BY_NAME.get(name.strip().lower()) if name else None


def model_by_device_id(device_id: str | None) -> GPUModel | None:
    return _BY_DEVICE.get((device_id or "").lower())


def mig_config_syntax_error(config: str) -> str | None:
    """Why `config` is not a MIG Manager config name gpuk8s can apply, or None."""
    if config in MIG_SPECIAL_CONFIGS or _MIG_ALL_RE.fullmatch(config):
        return None
    return (f"'{config}' is not a MIG Manager configuration name: use all-disabled, all-enabled, "
            "all-balanced or all-<profile> such as all-1g.10gb (all-1g.10gb.me for +me)")


def mig_config_profile(config: str) -> str | None:
    """'all-1g.10gb.me' -> '1g.10gb+me'; None for all-disabled/all-enabled/all-balanced."""
    m = _MIG_ALL_RE.fullmatch(config)
    if not m:
        return None
    return f"{m.group(1)}g.{m.group(2)}gb" + ("+me" if m.group(3) else "")


def mig_enabled(config: str) -> bool:
    return config != "all-disabled"


def mig_config_error(config: str, model: GPUModel) -> str | None:
    """Why MIG config `config` cannot apply to `model` (syntax already valid), or None."""
    if not mig_enabled(config):
        return None
    if not model.mig_capable:
        return (f"the {model.name} cannot do MIG (only A100, A30, H100 and H200 class GPUs "
                "can); use mig.config all-disabled or time_slicing instead")
    profile = mig_config_profile(config)
    if profile is not None and profile not in model.mig_profiles:
        return (f"MIG profile {profile} does not exist on the {model.name} "
                f"(its profiles: {', '.join(model.mig_profiles)})")
    return None


def branch_error(branch: int, model: GPUModel) -> str | None:
    """Why driver branch `branch` (595) does not support `model`, or None."""
    if branch < model.min_branch:
        return f"the {model.name} needs driver branch {model.min_branch} or newer"
    if model.max_branch is not None and branch > model.max_branch:
        return (f"driver branch {model.max_branch} is the last to support the {model.name} "
                f"({model.arch}); branch {branch} does not")
    return None
