#!/usr/bin/env python3
"""`gpuk8s up` in the lab: how it scales with workers, and what a second run costs.

Measured side by side in one run, on simulated bare hosts (tests/lab):
  1. `up` of 1 control plane + 1 worker and of 1 control plane + N workers (default 20), each
     from fresh bare hosts, alternated --repeat times: target median N-worker time <= 2 x the
     median 1-worker time (preparation and joins run in parallel);
  2. on the finished N-worker cluster, alternately, a second `up` (must change nothing) and a
     `preflight`: target second-up median <= 1.5 x the preflight median.

With --gpu every worker is a GPU worker (one simulated L4 with a loaded host driver, tests/lab
sim/gpuop.py) and `up` adds the GPU layer (Helm, the GPU Operator, its wait, the CUDA smoke Jobs);
the targets are the same (issue 8, "Speed").

Usage (root, as for the lab):  python3 bench/up_bench.py [--workers 20] [--repeat 3] [--gpu] [--json FILE]
Exit status 0 when both targets are met, 1 otherwise.
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

from tests.lab.fixture import GPU, HostFixture  # noqa: E402
from bench._common import precompile_package  # noqa: E402
from tests.lab.lab import Lab  # noqa: E402

TIMEOUT = 1200  # seconds; every command is bounded


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO)
    return time.monotonic() - start, proc


def up(inv: str, tmp: Path, tag: str) -> tuple[float, subprocess.CompletedProcess]:
    cluster = Path(inv).stem  # one kubeconfig per cluster, so a re-run finds it current
    return timed([sys.executable, "-m", "gpuk8s", "up", "-i", inv, "--kubeconfig", str(tmp / f"kc-{cluster}"),
                  "--wait-timeout", "300", "--log-file", str(tmp / f"{tag}.log")])


def preflight(inv: str) -> tuple[float, subprocess.CompletedProcess]:
    return timed([sys.executable, "-m", "gpuk8s", "preflight", "-i", inv, "--json"])


GPU_MODE = False  # --gpu: every worker a GPU worker


def hosts(workers: int) -> list[HostFixture]:
    oses = ("ubuntu-24.04", "rocky-9", "ubuntu-22.04")
    if GPU_MODE:   # helm at the pin on the control plane, as in tests/lab/test_gpu_lab.py
        return [HostFixture.bare("cp-1", roles=("control-plane",), helm="4.2.3")] + [
            HostFixture.bare(f"w-{i + 1}", os=oses[i % len(oses)], gpus=[GPU("L4")], nvidia_driver="595.91.07")
            for i in range(workers)]
    return [HostFixture.bare("cp-1", roles=("control-plane",))] + [
        HostFixture.bare(f"w-{i + 1}", os=oses[i % len(oses)]) for i in range(workers)]


def must(ok: bool, what: str, proc: subprocess.CompletedProcess) -> None:
    if not ok:
        sys.stderr.write(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n")
        sys.exit(2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--gpu", action="store_true", help="every worker a GPU worker with simulated GPUs")
    args = ap.parse_args()
    global GPU_MODE
    GPU_MODE = args.gpu
    precompile_package()  # measure gpuk8s as installed, with its bytecode
    tmp = Path(tempfile.mkdtemp(prefix="gpuk8s-up-bench-"))
    results: dict[str, object] = {"workers": args.workers, "repeat": args.repeat, "gpu": args.gpu}

    # Scaling: `up` from bare hosts with 1 and with N workers, alternated on fresh labs, medians.
    ones, ns = [], []
    for r in range(args.repeat):
        with Lab(hosts(1)) as lab:
            inv = lab.write_inventory(tmp / f"inv-1-{r}.yaml")
            t1, p = up(inv, tmp, f"up-1-{r}")
            must(p.returncode == 0, "up with 1 worker", p)
            ones.append(t1)
        if r < args.repeat - 1:
            with Lab(hosts(args.workers)) as lab:
                inv = lab.write_inventory(tmp / f"inv-{args.workers}-{r}.yaml")
                tn, p = up(inv, tmp, f"up-{args.workers}-{r}")
                must(p.returncode == 0, f"up with {args.workers} workers", p)
                ns.append(tn)
    with Lab(hosts(args.workers)) as lab:
        inv = lab.write_inventory(tmp / f"inv-{args.workers}.yaml")
        tn, p = up(inv, tmp, f"up-{args.workers}")
        must(p.returncode == 0, f"up with {args.workers} workers", p)
        ns.append(tn)
        again, pre = [], []
        for r in range(args.repeat):
            order = (("up", "pre") if r % 2 == 0 else ("pre", "up"))
            for which in order:
                if which == "up":
                    t, p = up(inv, tmp, f"again-{r}")
                    must(p.returncode == 0 and "nothing to do" in p.stdout, "second up", p)
                    again.append(t)
                else:
                    t, p = preflight(inv)
                    must(p.returncode in (0, 1) and json.loads(p.stdout)["hosts"], "preflight", p)
                    pre.append(t)

    t1, tn = statistics.median(ones), statistics.median(ns)
    scale = tn / t1
    rerun = statistics.median(again) / statistics.median(pre)
    results.update(up_1=ones, up_n=ns, second_up=again, preflight=pre, scale_ratio=scale, rerun_ratio=rerun)
    w = "GPU worker" if args.gpu else "worker"
    rows = [
        (f"up, 1 control plane + 1 {w} (median of {args.repeat})", f"{t1:.1f} s"),
        (f"up, 1 control plane + {args.workers} {w}s (median of {args.repeat})", f"{tn:.1f} s"),
        (f"second up on the {args.workers + 1}-node cluster (median of {args.repeat})",
         f"{statistics.median(again):.2f} s"),
        (f"preflight on the same hosts (median of {args.repeat})", f"{statistics.median(pre):.2f} s"),
    ]
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, lab hosts on this machine\n")
    print("| measurement | value |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    ok_scale, ok_rerun = scale <= 2.0, rerun <= 1.5
    print("\n| target | measured | goal | result |\n|---|---:|---:|---|")
    print(f"| up {args.workers} workers / up 1 worker | {scale:.2f}x | <= 2x | {'PASS' if ok_scale else 'FAIL'} |")
    print(f"| second up / preflight | {rerun:.2f}x | <= 1.5x | {'PASS' if ok_rerun else 'FAIL'} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok_scale and ok_rerun else 1


if __name__ == "__main__":
    sys.exit(main())
