#!/usr/bin/env python3
"""`gpuk8s preflight --json` of two checkouts, interleaved on one lab: did a change slow it down?

    git worktree add /tmp/old <commit>
    sudo python3 bench/compare_commits.py /tmp/old . --hosts 50 --repeat 8

Both checkouts run against the same 50 lab hosts (bench/preflight_bench.py's fleet), alternating
old/new so machine noise hits both alike; wall time and client CPU (user+sys of the gpuk8s process
and its children) are reported as medians and as the new/old ratio. Each checkout is byte-compiled
first, as pip does on install.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.preflight_bench import fleet  # noqa: E402
from tests.lab.lab import Lab  # noqa: E402

TIMEOUT = 300


def run_once(checkout: Path, inventory: str) -> tuple[float, float]:
    """(wall s, CPU s) of one preflight run from `checkout`."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gpuk8s", "preflight", "-i", inventory, "--json"],
                            cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{checkout}: preflight exited {status}")
    return wall, ru.ru_utime + ru.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=8)
    args = ap.parse_args()
    for checkout in (args.old, args.new):
        compileall.compile_dir(str(checkout / "gpuk8s"), quiet=1)
    results: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    with Lab(fleet(args.hosts)) as lab, tempfile.TemporaryDirectory() as tmp:
        inv = lab.write_inventory(Path(tmp) / "inv.yaml", ssh={"connect_timeout": 15})
        for which in ("old", "new"):          # warm-up, not counted
            run_once(getattr(args, which).resolve(), inv)
        for i in range(args.repeat):
            order = ("old", "new") if i % 2 == 0 else ("new", "old")
            for which in order:
                time.sleep(1.0)
                results[which].append(run_once(getattr(args, which).resolve(), inv))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
           for k, v in results.items()}
    print(f"{args.hosts} hosts, {args.repeat} runs each, interleaved; medians")
    print("| checkout | wall s | client CPU ms/host |\n|---|---:|---:|")
    for k in ("old", "new"):
        print(f"| {k} ({getattr(args, k)}) | {med[k][0]:.2f} | {med[k][1] / args.hosts * 1000:.1f} |")
    print(f"new/old: wall {med['new'][0] / med['old'][0]:.2f}x, CPU {med['new'][1] / med['old'][1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
