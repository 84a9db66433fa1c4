"""Shared by the benchmarks."""

from __future__ import annotations

import compileall
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def precompile_package() -> None:
    """Byte-compile gpuk8s/ as `pip install` does for an installed package.

    An editable checkout run under PYTHONDONTWRITEBYTECODE=1 (set on some development machines)
    would otherwise compile every module from source on every run: ~30 ms of start-up and
    client CPU that no installed copy of gpuk8s pays.
    """
    compileall.compile_dir(str(REPO / "gpuk8s"), quiet=1)
