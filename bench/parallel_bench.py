#!/usr/bin/env python3
"""`--parallel` sweep: `gpuk8s preflight` on many lab hosts at --parallel 16, 64 (default) and N,
against N plain OpenSSH clients started at once (the floor).

    python3 bench/parallel_bench.py [--hosts 150] [--repeat 1] [--json out.json]

Needs root and the lab's prerequisites (tests/lab/README.md). Reuses preflight_bench.py's fleet
(control planes plus L4 and H100 GPU workers), its measured runner and its OpenSSH floor. For
each run: wall time, how many hosts answered (reachable, with facts), and the ratio to the
OpenSSH floor of the same round. Every host must answer at every --parallel: a host reported
unreachable here is a false report (nothing in this lab is broken). Exit 0 when every run had
every host answer, 1 otherwise, 2 when the lab cannot start.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._common import precompile_package  # noqa: E402
from bench.preflight_bench import (ENDPOINT_HOST, SETTLE_S, Bench, _run_measured, _versions,  # noqa: E402
                                   fleet)
from tests.lab.lab import Lab, LabError  # noqa: E402

from gpuk8s.runner import DEFAULT_PARALLEL  # noqa: E402


def gpuk8s_at(b: Bench, parallel: int) -> dict:
    """One `gpuk8s preflight --json --parallel P`; how many hosts answered."""
    out, err = b.work / f"gpuk8s-p{parallel}.json", b.work / f"gpuk8s-p{parallel}.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        rc, wall, cpu = _run_measured([sys.executable, "-m", "gpuk8s", "preflight", "-i", b.inv, "--json",
                                       "--parallel", str(parallel)], env=b.env, cwd=str(REPO), out=fo, err=fe)
    answered, unreachable, problem = 0, [], None
    try:
        hosts = json.loads(out.read_text())["hosts"]
        answered = sum(1 for h in hosts if h["reachable"] and h["facts"] is not None)
        unreachable = [(h["name"], h.get("error_kind")) for h in hosts if not h["reachable"] or h["facts"] is None]
        if len(hosts) != b.n or unreachable:
            problem = f"{len(hosts)} hosts in report, {len(unreachable)} not answering: {unreachable[:5]}"
    except (ValueError, KeyError) as e:
        problem = f"no JSON report (rc {rc}): {e}; stderr: {err.read_text()[-500:]}"
    if rc not in (0, 1):
        problem = problem or f"exit code {rc}: {err.read_text()[-500:]}"
    return {"wall": wall, "cpu": cpu, "rc": rc, "answered": answered, "ok": problem is None,
            "problem": problem}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=150, help="lab hosts (17-230, default 150)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds (default 1)")
    ap.add_argument("--json", metavar="FILE", help="also write all raw numbers here")
    args = ap.parse_args()
    if not 17 <= args.hosts <= 230 or not 1 <= args.repeat <= 10:
        ap.error("--hosts 17-230, --repeat 1-10")
    levels = sorted({16, DEFAULT_PARALLEL, args.hosts})
    info = _versions()
    print(f"# {info['date']}  {info['cpus']} CPUs ({info['cpu']}), Linux {info['kernel']}, Python "
          f"{info['python']}, paramiko {info['paramiko']}, {info['openssh']}", flush=True)
    precompile_package()
    work = Path(tempfile.mkdtemp(prefix="gpuk8s-pbench-"))
    t0 = time.monotonic()
    try:
        lab = Lab(fleet(args.hosts), endpoint=f"{ENDPOINT_HOST}:6443", boot_timeout=300)
    except LabError as e:
        print(f"cannot start the lab: {e}", file=sys.stderr)
        return 2
    rounds: list[dict] = []
    with lab:
        print(f"# lab: {args.hosts} hosts up in {time.monotonic() - t0:.1f}s", flush=True)
        b = Bench(lab, work, args.hosts)
        warm = b.openssh()                       # warm-up, not counted: page cache, sshd's first fork
        if not warm["ok"]:
            print(f"warm-up openssh failed: {warm['problem']}", file=sys.stderr)
            return 1
        for r in range(args.repeat):
            order = ["openssh"] + [f"p{p}" for p in levels]
            if r % 2:
                order.reverse()
            res: dict = {}
            for k in order:
                time.sleep(SETTLE_S)
                res[k] = b.openssh() if k == "openssh" else gpuk8s_at(b, int(k[1:]))
                x = res[k]
                print(f"  round {r + 1} {k:8s} {x['wall']:6.1f}s  "
                      f"{'answered ' + str(x['answered']) + '/' + str(args.hosts) if 'answered' in x else ''}"
                      f"{'' if x['ok'] else '  PROBLEM: ' + str(x['problem'])}", flush=True)
            rounds.append(res)
    print(f"\n{args.hosts} hosts, {args.repeat} round(s), medians; ratio = gpuk8s wall / OpenSSH floor "
          f"wall of the same round")
    print(f"{'run':24s} {'wall':>7s} {'answered':>9s} {'ratio':>7s}")
    floor = statistics.median(r["openssh"]["wall"] for r in rounds)
    ok_floor = all(r["openssh"]["ok"] for r in rounds)
    print(f"{'OpenSSH floor':24s} {floor:6.1f}s {'all' if ok_floor else 'NOT all':>9s} {'-':>7s}")
    summary = {"openssh_wall": floor, "levels": {}}
    all_ok = ok_floor
    for p in levels:
        k = f"p{p}"
        wall = statistics.median(r[k]["wall"] for r in rounds)
        ratio = statistics.median(r[k]["wall"] / r["openssh"]["wall"] for r in rounds)
        answered = min(r[k]["answered"] for r in rounds)
        all_ok &= all(r[k]["ok"] for r in rounds)
        label = f"gpuk8s --parallel {p}" + (" (default)" if p == DEFAULT_PARALLEL else "")
        print(f"{label:24s} {wall:6.1f}s {str(answered) + '/' + str(args.hosts):>9s} {ratio:6.2f}x")
        summary["levels"][p] = {"wall": wall, "ratio": ratio, "answered_min": answered}
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "hosts": args.hosts, "rounds": rounds,
                                               "summary": summary}, indent=2))
    print("every host answered at every --parallel" if all_ok else "SOME HOSTS DID NOT ANSWER")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
