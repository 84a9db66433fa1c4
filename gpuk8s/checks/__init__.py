"""Preflight checks: pure functions from (inventory, host, facts, fleet) to CheckResults.

Every check always reports, in the same order, so `preflight --json` is stable: a check that does
not apply to a host says `skip` and why. Messages name what was found; fixes are the exact shell
commands to paste on the host (apt vs dnf, update-initramfs vs dracut chosen from the OS family).
Background for each check: docs/checks.md and ../shared/docs/DOMAIN.md sections 2, 3, 5, 6 and 8.

Layout: `base` (results, context, CheckSet), `preflight` (the PREFLIGHT set and its order),
`fixes` (shared fix texts) and one module per area that registers its checks into PREFLIGHT.
"""

from __future__ import annotations

from typing import Mapping

# Importing the area modules registers their checks into PREFLIGHT.
from gpuk8s.checks import endpoint, fleet, gpu, host, network, runtime  # noqa: F401
from gpuk8s.checks.base import (FAIL, PASS, SKIP, STATUSES, WARN, CheckContext, CheckInfo,
                                CheckResult, CheckSet, is_gpu_host, overall_status)
from gpuk8s.checks.gpu import driver_mode
from gpuk8s.checks.preflight import PREFLIGHT
from gpuk8s.facts import Facts
from gpuk8s.inventory import HostSpec, Inventory

CHECKS: list[CheckInfo] = PREFLIGHT.infos
CHECK_IDS: tuple[str, ...] = PREFLIGHT.ids

__all__ = [
    "CHECKS", "CHECK_IDS", "FAIL", "PASS", "PREFLIGHT", "SKIP", "STATUSES", "WARN", "CheckContext",
    "CheckInfo", "CheckResult", "CheckSet", "driver_mode", "is_gpu_host", "overall_status",
    "run_checks",
]


def run_checks(inventory: Inventory, host: HostSpec, facts: Facts,
               fleet: Mapping[str, Facts]) -> list[CheckResult]:
    """Every preflight check for one host, in CHECKS order; `fleet` maps host name -> Facts."""
    return PREFLIGHT.run(inventory, host, facts, fleet)
