#!/usr/bin/env python3
"""`gpuk8s join` in the lab: adding workers to a running cluster costs about what `up` of the same
workers costs, minus the cluster's creation (issue 10, "Speed").

Measured side by side in one run, alternated --repeat times, on simulated hosts (tests/lab):
  A. a running cluster of 1 control plane + 20 workers (made by `up`, not timed) and 10 bare
     hosts; timed: `join` of the 10 (preflight of the 10 and the endpoint check, preparation,
     a fresh token, the joins, labels, Ready);
  B. `up` of 1 control plane + 10 workers from bare hosts; timed: the whole run minus its
     `init first control plane` phase (from the run log's phase timings), i.e. what `up` spends
     on everything but creating the cluster.
Target: median(A) <= 1.5 x median(B).

Usage (root, as for the lab):  python3 bench/join_bench.py [--nodes 21] [--join 10] [--repeat 3] [--json FILE]
Exit status 0 when the target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import precompile_package  # noqa: E402
from tests.lab.fixture import HostFixture  # noqa: E402
from tests.lab.lab import Lab  # noqa: E402

TIMEOUT = 1200  # seconds; every command is bounded
OSES = ("ubuntu-24.04", "rocky-9", "ubuntu-22.04")
INIT_RE = re.compile(r"phase init first control plane: \d+ changes in ([\d.]+)s")


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO)
    return time.monotonic() - start, proc


def gpuk8s(verb: str, inv: str, log: Path, *extra: str) -> tuple[float, subprocess.CompletedProcess]:
    return timed([sys.executable, "-m", "gpuk8s", verb, "-i", inv, "--wait-timeout", "300",
                  "--log-file", str(log), *extra])


def must(ok: bool, what: str, proc: subprocess.CompletedProcess) -> None:
    if not ok:
        sys.stderr.write(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n")
        sys.exit(2)


def bare(names: list[str]) -> list[HostFixture]:
    return [HostFixture.bare(n, os=OSES[i % len(OSES)]) for i, n in enumerate(names)]


def run_join(tmp: Path, nodes: int, joining: int, r: int) -> float:
    members = [f"w-{i + 1}" for i in range(nodes - 1)]
    new = [f"j-{i + 1}" for i in range(joining)]
    with Lab([HostFixture.bare("cp-1", roles=("control-plane",))] + bare(members) + bare(new)) as lab:
        small = lab.write_inventory(tmp / f"running-{r}.yaml", hosts=["cp-1", *members])
        full = lab.write_inventory(tmp / f"full-{r}.yaml")
        _, p = gpuk8s("up", small, tmp / f"setup-{r}.log", "--kubeconfig", str(tmp / f"kc-{r}"))
        must(p.returncode == 0, f"up of the {nodes}-node cluster", p)
        t, p = gpuk8s("join", full, tmp / f"join-{r}.log")
        must(p.returncode == 0 and "joined:" in p.stdout, f"join of {joining} workers", p)
        return t


def run_up(tmp: Path, workers: int, r: int) -> tuple[float, float]:
    with Lab([HostFixture.bare("cp-1", roles=("control-plane",))] + bare([f"w-{i + 1}" for i in range(workers)])) as lab:
        inv = lab.write_inventory(tmp / f"up-{r}.yaml")
        log = tmp / f"up-{r}.log"
        t, p = gpuk8s("up", inv, log, "--kubeconfig", str(tmp / f"kc-up-{r}"))
        must(p.returncode == 0, f"up of 1 control plane + {workers} workers", p)
        m = INIT_RE.search(log.read_text())
        must(m is not None, "the init phase's time in the up log", p)
        return t, float(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=21, help="nodes of the running cluster (1 CP + workers)")
    ap.add_argument("--join", type=int, default=10, help="workers to join / to bring up")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    precompile_package()
    tmp = Path(tempfile.mkdtemp(prefix="gpuk8s-join-bench-"))
    joins, ups, inits = [], [], []
    for r in range(args.repeat):   # alternated: A then B, B then A
        order = ("join", "up") if r % 2 == 0 else ("up", "join")
        for which in order:
            if which == "join":
                joins.append(run_join(tmp, args.nodes, args.join, r))
            else:
                t, init = run_up(tmp, args.join, r)
                ups.append(t)
                inits.append(init)
    up_minus = [u - i for u, i in zip(ups, inits)]
    tj, tu = statistics.median(joins), statistics.median(up_minus)
    ratio = tj / tu
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, lab hosts on this machine\n")
    print("| measurement | value |\n|---|---:|")
    print(f"| join of {args.join} workers to a running {args.nodes}-node cluster (median of {args.repeat}) | {tj:.1f} s |")
    print(f"| up of 1 control plane + {args.join} workers from bare hosts (median of {args.repeat}) | "
          f"{statistics.median(ups):.1f} s |")
    print(f"| its init phase (median of {args.repeat}) | {statistics.median(inits):.1f} s |")
    print(f"| up minus init (median of {args.repeat}) | {tu:.1f} s |")
    ok = ratio <= 1.5
    print("\n| target | measured | goal | result |\n|---|---:|---:|---|")
    print(f"| join / (up - init) | {ratio:.2f}x | <= 1.5x | {'PASS' if ok else 'FAIL'} |")
    if args.json:
        args.json.write_text(json.dumps({"nodes": args.nodes, "joining": args.join, "repeat": args.repeat,
                                         "join_s": joins, "up_s": ups, "init_s": inits,
                                         "up_minus_init_s": up_minus, "ratio": ratio}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
