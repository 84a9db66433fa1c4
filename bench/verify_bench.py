#!/usr/bin/env python3
"""`gpuk8s verify --no-smoke` vs `gpuk8s preflight` of the same hosts, in the lab (issue 9, "Speed").

On a lab cluster of 1 control plane + N GPU workers (default 20; one simulated L4 each with a
loaded host driver, tests/lab sim/gpuop.py) that `up` builds first, alternately (the order flips
each round, so neither always runs on a warm cache) `verify --no-smoke --json` and
`preflight --json`, --repeat rounds; target: median verify <= 2 x median preflight.

`verify` also writes its JUnit file, as CI runs it. What is compared is the wall time of each
whole command (start-up, connections, probe, checks, output).

Usage (root, as for the lab):  python3 bench/verify_bench.py [--workers 20] [--repeat 5] [--json FILE]
Exit status 0 when the target is met, 1 otherwise, 2 when a step failed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import precompile_package  # noqa: E402
from tests.lab.fixture import GPU, HostFixture  # noqa: E402
from tests.lab.lab import Lab  # noqa: E402

TIMEOUT = 1200  # seconds; every command is bounded


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO)
    return time.monotonic() - start, proc


def hosts(workers: int) -> list[HostFixture]:
    return [HostFixture.bare("cp-1", roles=("control-plane",), helm="4.2.3")] + [
        HostFixture.bare(f"w-{i + 1}", gpus=[GPU("L4")], nvidia_driver="595.91.07") for i in range(workers)]


def must(ok: bool, what: str, proc: subprocess.CompletedProcess) -> None:
    if not ok:
        sys.stderr.write(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n")
        sys.exit(2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    precompile_package()  # measure gpuk8s as installed, with its bytecode
    tmp = Path(tempfile.mkdtemp(prefix="gpuk8s-verify-bench-"))
    py = sys.executable
    with Lab(hosts(args.workers)) as lab:
        inv = lab.write_inventory(tmp / "inv.yaml")
        t_up, p = timed([py, "-m", "gpuk8s", "up", "-i", inv, "--kubeconfig", str(tmp / "kc"),
                         "--wait-timeout", "300", "--log-file", str(tmp / "up.log")])
        must(p.returncode == 0, "up", p)
        ver, pre = [], []
        for r in range(args.repeat):
            for which in (("verify", "preflight") if r % 2 == 0 else ("preflight", "verify")):
                if which == "verify":
                    t, p = timed([py, "-m", "gpuk8s", "verify", "-i", inv, "--no-smoke", "--json",
                                  "--junit", str(tmp / f"verify-{r}.xml")])
                    must(p.returncode == 0 and json.loads(p.stdout)["ok"], "verify", p)
                    ver.append(t)
                else:
                    t, p = timed([py, "-m", "gpuk8s", "preflight", "-i", inv, "--json"])
                    must(p.returncode in (0, 1) and len(json.loads(p.stdout)["hosts"]) == args.workers + 1,
                         "preflight", p)
                    pre.append(t)
    ratio = statistics.median(ver) / statistics.median(pre)
    ok = ratio <= 2.0
    n = args.workers + 1
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, lab hosts on this machine\n")
    print("| measurement | value |\n|---|---:|")
    print(f"| up, 1 control plane + {args.workers} GPU workers (once, to build the cluster) | {t_up:.1f} s |")
    print(f"| verify --no-smoke on the {n}-node cluster (median of {args.repeat}) | {statistics.median(ver):.2f} s |")
    print(f"| preflight on the same hosts (median of {args.repeat}) | {statistics.median(pre):.2f} s |")
    print("\n| target | measured | goal | result |\n|---|---:|---:|---|")
    print(f"| verify --no-smoke / preflight | {ratio:.2f}x | <= 2x | {'PASS' if ok else 'FAIL'} |")
    if args.json:
        args.json.write_text(json.dumps({"workers": args.workers, "repeat": args.repeat, "up": t_up,
                                         "verify": ver, "preflight": pre, "ratio": ratio}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
