#!/usr/bin/env python3
"""Side-by-side benchmark of `gpuk8s preflight` against the OpenSSH floor and Ansible fact gathering.

    python3 bench/preflight_bench.py [--hosts 50] [--repeat 3] [--startup-reps 20] [--json out.json]

Needs root and the lab's prerequisites (tests/lab/README.md), and `pip install ansible-core`
(or `pip install -e .[bench]`); it installs nothing itself (without ansible it says so and the
Ansible row is marked as not run).

One run brings up N lab hosts (real sshd each, realistic GPU workers and control planes), then,
for every repeat, runs the three contenders back to back in an order that changes per repeat:

  gpuk8s    python3 -m gpuk8s preflight -i INV --json  (wall time; CPU of that process via wait4)
  openssh   N `ssh ... sh -s -- k8s-api.lab PATHS... < gpuk8s/facts/probe.sh`, all started at once (the floor)
  ansible   ansible all -m setup -f N  (same key and known_hosts, strict host key checking)

Raw seconds vary (sshd, the probes and the client share the machine's CPUs), so the targets are
judged on per-repeat ratios (medians of the paired ratios). sshd runs with LogLevel VERBOSE so the
hosts' own logs say how many connections, authentications and sessions each contender used.
Finally start-up: `python3 -m gpuk8s --help` (and the installed entry point) vs `python3 -c pass`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.lab.fixture import GPU, HostFixture  # noqa: E402
from bench._common import precompile_package  # noqa: E402
from tests.lab.lab import Lab, LabError  # noqa: E402
from gpuk8s.facts.probe import probe_args  # noqa: E402
from gpuk8s.shell import Cmd  # noqa: E402

PROBE = REPO / "gpuk8s" / "facts" / "probe.sh"
ENDPOINT_HOST = "k8s-api.lab"
# The probe's own command line (the paths it hashes travel as arguments), exactly as gpuk8s sends it.
PROBE_COMMAND = Cmd("sh", "-s", "--", *probe_args(ENDPOINT_HOST)).render()
SETTLE_S = 2.0                 # pause before each timed run
RUN_TIMEOUT = 600.0            # any single contender run is killed after this many seconds

TARGETS = {
    "gpuk8s_vs_openssh": 1.3,      # gpuk8s wall / OpenSSH floor wall: at most
    "ansible_vs_gpuk8s": 10.0,     # ansible wall / gpuk8s wall: at least
    "cpu_ms_per_host": 20.0,       # gpuk8s CPU (user+sys) / host: below
    "startup_ratio": 2.5,          # `python3 -m gpuk8s --help` / `python3 -c pass`: below
}


# --------------------------------------------------------------------------- fixtures

def fleet(n: int) -> list[HostFixture]:
    """Control planes plus a mix of L4 and H100 GPU workers on the OSes people run."""
    n_cp = 3 if n >= 6 else 1
    hosts = [HostFixture(f"cp-{i}", roles=("control-plane",), os="ubuntu-24.04", cpus=16, memory_mib=65536,
                         containerd="2.1.4", kube="1.36.2", helm="3.19.0" if i == 1 else None,
                         listening_ports=(6443, 10250) if i == 1 else ())
             for i in range(1, n_cp + 1)]
    for i in range(1, n - n_cp + 1):
        if i % 2:   # L4 inference box: Ubuntu 22.04, 2 x L4 with HD audio functions
            hosts.append(HostFixture(
                f"l4-{i:03d}", os="ubuntu-22.04", cpus=32, memory_mib=262144,
                gpus=[GPU("L4", audio=True)] * 2, nvidia_driver="595.91.07", nvidia_ctk="1.18.0",
                nouveau_blacklisted=True, containerd="2.1.4", kube="1.36.2"))
        else:       # H100 HGX: 8 GPUs, NVSwitches, Ubuntu 24.04 or Rocky 9
            hosts.append(HostFixture(
                f"h100-{i:03d}", os="rocky-9" if i % 4 == 0 else "ubuntu-24.04", cpus=112,
                memory_mib=2097152, gpus=[GPU("H100")] * 8, nvswitches=4, nvidia_driver="595.91.07",
                nvidia_ctk="1.18.0", nouveau_blacklisted=True, containerd="2.1.4", kube="1.36.2"))
    return hosts


# --------------------------------------------------------------------------- process helpers

def _run_measured(argv: list[str], *, stdin=None, env=None, cwd=None, out=None, err=None,
                  timeout: float = RUN_TIMEOUT) -> tuple[int, float, float]:
    """Run argv; returns (exit code, wall seconds, CPU seconds user+sys of it and its waited children)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                         stdout=out or subprocess.DEVNULL, stderr=err or subprocess.DEVNULL,
                         env=env, cwd=cwd)
    timer = threading.Timer(timeout, _kill, (p.pid,))
    timer.start()
    try:
        _, status, ru = os.wait4(p.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, wall, ru.ru_utime + ru.ru_stime


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _machine_busy() -> float:
    """CPU-seconds this machine has spent busy (all CPUs, every process: client, sshd, probes)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- sshd logs

LOG_PATTERNS = {
    "connections": re.compile(r"^Connection from (\S+) port \d+"),
    "auth_ok": re.compile(r"^Accepted publickey for \S+ from (\S+) port"),
    "sessions": re.compile(r"^Starting session: .* from (\S+) port"),
}


def _verbose_sshd(lab: Lab) -> None:
    """LogLevel VERBOSE on every host (sshd then logs each session it starts), and restart sshd."""
    for name in lab.names():
        cfg = lab.read_file(name, "/etc/ssh/sshd_config")
        lab.write_file(name, "/etc/ssh/sshd_config", cfg.replace("LogLevel INFO", "LogLevel VERBOSE"), 0o644)
        lab.stop_sshd(name)
        lab.start_sshd(name)


def _log_offsets(lab: Lab) -> dict[str, int]:
    return {n: (lab.host(n).dir / "sshd.log").stat().st_size for n in lab.names()}


def _log_counts(lab: Lab, since: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per host: connections, accepted authentications and sessions logged since the offsets."""
    time.sleep(0.3)   # let sshd children finish writing
    counts = {}
    for n in lab.names():
        with open(lab.host(n).dir / "sshd.log", "rb") as f:
            f.seek(since[n])
            text = f.read().decode(errors="replace")
        c = {k: 0 for k in LOG_PATTERNS}
        for line in text.splitlines():
            for k, rx in LOG_PATTERNS.items():
                if rx.match(line):
                    c[k] += 1
        counts[n] = c
    return counts


def _summarize_counts(counts: dict[str, dict[str, int]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k in LOG_PATTERNS:
        vals = [c[k] for c in counts.values()]
        out[k] = {"total": sum(vals), "min": min(vals), "max": max(vals)}
    return out


# --------------------------------------------------------------------------- contenders

class Bench:
    def __init__(self, lab: Lab, work: Path, n: int):
        self.lab, self.work, self.n = lab, work, n
        self.inv = lab.write_inventory(work / "inventory.yaml")
        self.env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1", TERM="dumb", COLUMNS="120")
        self.ansible = shutil.which("ansible")
        self.ansible_python = None
        self.ansible_env: dict[str, str] | None = None
        self.runs = 0

    # gpuk8s ------------------------------------------------------------------
    def gpuk8s(self) -> dict:
        out = self.work / "gpuk8s.json"
        err = self.work / "gpuk8s.err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            rc, wall, cpu = _run_measured([sys.executable, "-m", "gpuk8s", "preflight", "-i", self.inv, "--json"],
                                          env=self.env, cwd=str(REPO), out=fo, err=fe)
        problem = None
        try:
            doc = json.loads(out.read_text())
            hosts = doc["hosts"]
            bad = [h["name"] for h in hosts if not h["reachable"] or h["facts"] is None]
            if len(hosts) != self.n or bad:
                problem = f"{len(hosts)} hosts in report, not probed: {bad[:5]}"
        except (ValueError, KeyError) as e:
            problem = f"no JSON report (rc {rc}): {e}; stderr: {err.read_text()[-500:]}"
        if rc not in (0, 1):          # 1 = some checks failed, which is a valid result
            problem = problem or f"exit code {rc}: {err.read_text()[-500:]}"
        return {"wall": wall, "cpu": cpu, "rc": rc, "ok": problem is None, "problem": problem}

    # OpenSSH floor -----------------------------------------------------------
    def openssh(self) -> dict:
        procs = []
        files = []
        t0 = time.perf_counter()
        for name in self.lab.names():
            argv = self.lab.ssh_argv(name) + ["--", PROBE_COMMAND]
            fi = open(PROBE, "rb")
            fo = open(self.work / f"ssh-{name}.out", "wb")
            fe = open(self.work / f"ssh-{name}.err", "wb")
            files += [fi, fo, fe]
            procs.append((name, subprocess.Popen(argv, stdin=fi, stdout=fo, stderr=fe)))
        timer = threading.Timer(RUN_TIMEOUT, lambda: [_kill(p.pid) for _, p in procs])
        timer.start()
        cpu = 0.0
        rcs = {}
        try:
            for name, p in procs:
                _, status, ru = os.wait4(p.pid, 0)
                p.returncode = rcs[name] = os.waitstatus_to_exitcode(status)
                cpu += ru.ru_utime + ru.ru_stime
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        for f in files:
            f.close()
        bad = [n for n in rcs if rcs[n] != 0 or "@@gpuk8s:end" not in
               (self.work / f"ssh-{n}.out").read_text(errors="replace")]
        problem = None
        if bad:
            problem = f"{len(bad)} probes failed, e.g. {bad[0]}: " \
                      f"{(self.work / f'ssh-{bad[0]}.err').read_text()[-300:]}"
        return {"wall": wall, "cpu": cpu, "ok": not bad, "problem": problem}

    # Ansible -----------------------------------------------------------------
    def prepare_ansible(self) -> str | None:
        """Inventory, config and interpreter; returns why Ansible cannot run, or None."""
        if self.ansible is None:
            return "ansible not installed (pip install ansible-core)"
        first = self.lab.names()[0]
        for cand in ("/usr/bin/python3", sys.executable):
            r = self.lab.exec(first, f"{cand} -c 'import sys; print(sys.version_info[:2])'")
            if r.returncode == 0:
                self.ansible_python = cand
                break
        if self.ansible_python is None:
            return "no python3 inside the lab hosts"
        ini = self.work / "ansible.ini"
        ini.write_text("[all]\n" + "".join(
            f"{n} ansible_host={self.lab.address(n)} ansible_port={self.lab.host(n).port}\n"
            for n in self.lab.names()))
        cfg = self.work / "ansible.cfg"
        cfg.write_text("[defaults]\nhost_key_checking = True\nretry_files_enabled = False\n"
                       "interpreter_python = " + self.ansible_python + "\n")
        ssh_args = ("-C -o ControlMaster=auto -o ControlPersist=60s "        # Ansible's own defaults
                    f"-o UserKnownHostsFile={self.lab.known_hosts} -o GlobalKnownHostsFile=/dev/null "
                    "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes")
        self.ansible_env = dict(
            os.environ, ANSIBLE_CONFIG=str(cfg), ANSIBLE_HOST_KEY_CHECKING="True",
            ANSIBLE_PYTHON_INTERPRETER=self.ansible_python, ANSIBLE_SSH_ARGS=ssh_args,
            ANSIBLE_PRIVATE_KEY_FILE=self.lab.client_key, ANSIBLE_REMOTE_USER="root",
            ANSIBLE_LOCAL_TEMP=str(self.work / "ansible-tmp"), ANSIBLE_NOCOLOR="1",
            ANSIBLE_DEPRECATION_WARNINGS="False", ANSIBLE_HOME=str(self.work / "ansible-home"),
            ANSIBLE_INVENTORY=str(ini), LC_ALL="C.UTF-8", LANG="C.UTF-8")
        return None

    def ansible_run(self, hosts: str = "all", forks: int | None = None) -> dict:
        assert self.ansible_env is not None
        self.runs += 1
        cp_dir = self.work / f"ansible-cp-{self.runs}"      # fresh ControlPath dir: every run is cold
        cp_dir.mkdir()
        env = dict(self.ansible_env, ANSIBLE_SSH_CONTROL_PATH_DIR=str(cp_dir))
        out, err = self.work / "ansible.out", self.work / "ansible.err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            rc, wall, cpu = _run_measured([self.ansible, hosts, "-m", "setup", "-f", str(forks or self.n)],
                                          env=env, out=fo, err=fe)
        text = out.read_text(errors="replace")
        expected = self.n if hosts == "all" else len(hosts.split(","))
        ok_hosts = set(re.findall(r"^(\S+) \| SUCCESS => \{", text, re.M))
        gathered = len(re.findall(r'"ansible_product_uuid":', text))
        problem = None
        if rc != 0 or len(ok_hosts) != expected or gathered != expected:
            problem = (f"rc {rc}, {len(ok_hosts)}/{expected} SUCCESS, {gathered} with facts: "
                       f"{(text + err.read_text(errors='replace'))[-600:]}")
        self._close_masters(cp_dir)
        return {"wall": wall, "cpu": cpu, "rc": rc, "ok": problem is None, "problem": problem,
                "hosts_ok": len(ok_hosts)}

    def _close_masters(self, cp_dir: Path) -> None:
        """End the ControlPersist masters of one Ansible run (bounded: one `ssh -O exit` per socket)."""
        for sock in list(cp_dir.iterdir())[: self.n + 5]:
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "dummy"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=10, check=False)


# --------------------------------------------------------------------------- start-up

def startup(reps: int) -> dict:
    """Interleaved start-up timings (median seconds) of the CLI's --help against bare Python."""
    py = sys.executable
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cands: dict[str, list[str]] = {"python3 -c pass": [py, "-c", "pass"],
                                   "python3 -m gpuk8s --help": [py, "-m", "gpuk8s", "--help"]}
    note = None
    which = shutil.which("gpuk8s")
    entry = None
    if which:
        first_line = Path(which).read_bytes()[:200].split(b"\n")[0]
        if "/shims/" in which or b"bash" in first_line:
            real = Path(py).parent / "gpuk8s"      # the real console script behind the shim
            note = f"{which} is a pyenv shim (a bash script); timed {real} instead"
            entry = str(real) if real.exists() else None
        else:
            entry = which
    if entry:
        cands[f"{entry} --help"] = [entry, "--help"]
    times: dict[str, list[float]] = {k: [] for k in cands}
    for i in range(reps + 1):                   # the first round warms the page cache, not counted
        order = list(cands) if i % 2 == 0 else list(reversed(cands))
        for k in order:
            t0 = time.perf_counter()
            r = subprocess.run(cands[k], env=env, cwd=str(REPO), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=60)
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                raise RuntimeError(f"{cands[k]} exited {r.returncode}")
            if i:
                times[k].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["python3 -c pass"]
    return {"median_s": med, "ratio": {k: med[k] / base for k in med if k != "python3 -c pass"},
            "reps": reps, "note": note}


# --------------------------------------------------------------------------- main

def _versions() -> dict[str, str]:
    def cmd(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"
    import paramiko
    cpu = "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpus": str(os.cpu_count()), "cpu": cpu, "kernel": platform.release(),
            "python": platform.python_version(), "paramiko": paramiko.__version__,
            "openssh": cmd(["ssh", "-V"]), "ansible": cmd(["ansible", "--version"]) if shutil.which("ansible") else "-"}


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=50, help="lab hosts (1-230, default 50)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the three contenders (default 3)")
    ap.add_argument("--startup-reps", type=int, default=20, help="start-up timings per command (default 20)")
    ap.add_argument("--no-ansible", action="store_true", help="skip Ansible")
    ap.add_argument("--json", metavar="FILE", help="also write all raw numbers here")
    args = ap.parse_args()
    if not 1 <= args.hosts <= 230 or not 1 <= args.repeat <= 20 or not 1 <= args.startup_reps <= 200:
        ap.error("--hosts 1-230, --repeat 1-20, --startup-reps 1-200")
    info = _versions()
    print(f"# {info['date']}  {info['cpus']} CPUs ({info['cpu']}), Linux {info['kernel']}, Python "
          f"{info['python']}, paramiko {info['paramiko']}, {info['openssh']}, {info['ansible']}", flush=True)

    precompile_package()  # measure gpuk8s as installed, with its bytecode
    work = Path(tempfile.mkdtemp(prefix="gpuk8s-bench-"))
    results: dict = {"info": info, "hosts": args.hosts, "repeat": args.repeat, "rounds": []}
    try:
        t0 = time.monotonic()
        try:
            lab = Lab(fleet(args.hosts), endpoint=f"{ENDPOINT_HOST}:6443", boot_timeout=120)
        except LabError as e:
            print(f"cannot start the lab: {e}", file=sys.stderr)
            return 2
        with lab:
            _verbose_sshd(lab)
            print(f"# lab: {args.hosts} hosts up in {time.monotonic() - t0:.1f}s", flush=True)
            b = Bench(lab, work, args.hosts)
            why_no_ansible = "skipped (--no-ansible)" if args.no_ansible else b.prepare_ansible()
            # Warm-up (not counted): page cache, sshd's first fork, Python bytecode; proves each works.
            for label, fn in (("gpuk8s", b.gpuk8s), ("openssh", b.openssh)):
                r = fn()
                if not r["ok"]:
                    print(f"warm-up {label} failed: {r['problem']}", file=sys.stderr)
                    return 1
            if why_no_ansible is None:
                r = b.ansible_run(hosts=",".join(lab.names()[:2]), forks=2)
                if not r["ok"]:
                    why_no_ansible = f"Ansible warm-up failed: {r['problem']}"
                    print(why_no_ansible, file=sys.stderr)
            contenders = {"gpuk8s": b.gpuk8s, "openssh": b.openssh}
            if why_no_ansible is None:
                contenders["ansible"] = b.ansible_run
            base_order = list(contenders)
            for i in range(args.repeat):
                k = len(base_order)
                order = base_order[i % k:] + base_order[:i % k]
                if (i // k) % 2:
                    order.reverse()
                rnd: dict = {"order": order}
                for name in order:
                    time.sleep(SETTLE_S)        # let the previous contender's sshd children exit
                    off = _log_offsets(lab)
                    busy = _machine_busy()
                    r = contenders[name]()
                    r["machine_cpu"] = _machine_busy() - busy
                    r["sshd"] = _summarize_counts(_log_counts(lab, off))
                    rnd[name] = r
                    status = "ok" if r["ok"] else f"FAILED: {r['problem']}"
                    print(f"  round {i + 1} {name:8s} wall {r['wall']:7.2f}s  cpu {r['cpu']:6.2f}s  "
                          f"conns {r['sshd']['connections']['total']:4d}  "
                          f"machine cpu {r['machine_cpu']:6.2f}s  "
                          f"sessions {r['sshd']['sessions']['total']:4d}  {status}", flush=True)
                results["rounds"].append(rnd)
            results["ansible_note"] = why_no_ansible
        results["startup"] = startup(args.startup_reps)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0 if results.get("all_pass") else 1


def report(res: dict, args) -> None:
    n = res["hosts"]
    rounds = res["rounds"]

    def med(key, field, only_ok=True):
        vals = [r[key][field] for r in rounds if key in r and (r[key]["ok"] or not only_ok)]
        return statistics.median(vals) if vals else None

    def med_ratio(num, den):
        vals = [r[num]["wall"] / r[den]["wall"] for r in rounds
                if num in r and den in r and r[num]["ok"] and r[den]["ok"]]
        return statistics.median(vals) if vals else None

    g_wall, s_wall, a_wall = med("gpuk8s", "wall"), med("openssh", "wall"), med("ansible", "wall")
    g_cpu_ms = med("gpuk8s", "cpu") * 1000 / n if med("gpuk8s", "cpu") is not None else None
    s_cpu_ms = med("openssh", "cpu") * 1000 / n if med("openssh", "cpu") is not None else None
    a_cpu_ms = med("ansible", "cpu") * 1000 / n if med("ansible", "cpu") is not None else None
    r_floor = med_ratio("gpuk8s", "openssh")
    r_ansible = med_ratio("ansible", "gpuk8s")
    m_vals = [r["ansible"]["machine_cpu"] / r["gpuk8s"]["machine_cpu"] for r in rounds
              if "ansible" in r and r["ansible"]["ok"] and r["gpuk8s"]["ok"]]
    r_ansible_cpu = statistics.median(m_vals) if m_vals else None
    su = res["startup"]
    st_ratio = su["ratio"]["python3 -m gpuk8s --help"]

    def conns(key):
        vals = [r[key]["sshd"] for r in rounds if key in r]
        if not vals:
            return "-"
        c, a, s = (vals[-1][k] for k in ("connections", "auth_ok", "sessions"))
        return f"{c['min']}-{c['max']} / {a['min']}-{a['max']} / {s['min']}-{s['max']}"

    fails = [f"{k} round {i + 1}: {r[k]['problem']}" for i, r in enumerate(rounds)
             for k in ("gpuk8s", "openssh", "ansible") if k in r and not r[k]["ok"]]

    one_per_host = all(r["gpuk8s"]["sshd"][k]["min"] == r["gpuk8s"]["sshd"][k]["max"] == 1
                       for r in rounds for k in ("connections", "auth_ok", "sessions"))
    checks = [
        ("gpuk8s wall / OpenSSH floor", _fmt_ratio(r_floor), f"<= {TARGETS['gpuk8s_vs_openssh']}x",
         r_floor is not None and r_floor <= TARGETS["gpuk8s_vs_openssh"]),
        ("Ansible setup wall / gpuk8s", _fmt_ratio(r_ansible), f">= {TARGETS['ansible_vs_gpuk8s']:g}x",
         r_ansible is not None and r_ansible >= TARGETS["ansible_vs_gpuk8s"]),
        ("gpuk8s CPU per host", "-" if g_cpu_ms is None else f"{g_cpu_ms:.1f} ms",
         f"< {TARGETS['cpu_ms_per_host']:g} ms", g_cpu_ms is not None and g_cpu_ms < TARGETS["cpu_ms_per_host"]),
        ("gpuk8s conns/auths/sessions per host", conns("gpuk8s"), "1 / 1 / 1", one_per_host),
        ("start-up: -m gpuk8s --help / -c pass", _fmt_ratio(st_ratio), f"< {TARGETS['startup_ratio']}x",
         st_ratio < TARGETS["startup_ratio"]),
    ]
    for k, v in su["ratio"].items():
        if k != "python3 -m gpuk8s --help":
            checks.append((f"start-up: {Path(k.split()[0]).name} entry point / -c pass", _fmt_ratio(v),
                           f"< {TARGETS['startup_ratio']}x", v < TARGETS["startup_ratio"]))

    print()
    print(f"## {n} hosts, {len(rounds)} rounds (order rotated per round), medians")
    print()
    print("| contender | wall (median s) | client CPU ms/host | machine CPU s (all processes) "
          "| sshd conns / auths / sessions per host (min-max) |")
    print("|---|---:|---:|---:|---|")
    for key, label, w, c in (("gpuk8s", "gpuk8s preflight --json", g_wall, g_cpu_ms),
                             ("openssh", f"OpenSSH floor ({n} parallel ssh)", s_wall, s_cpu_ms),
                             ("ansible", f"ansible -m setup -f {n}", a_wall, a_cpu_ms)):
        ws = "not run" if w is None else f"{w:.2f}"
        cs = "-" if c is None else f"{c:.1f}"
        m = med(key, "machine_cpu")
        ms = "-" if m is None else f"{m:.1f}"
        print(f"| {label} | {ws} | {cs} | {ms} | {conns(key)} |")
    print()
    print("| start-up (median of %d, interleaved) | ms | ratio to `python3 -c pass` |" % su["reps"])
    print("|---|---:|---:|")
    for k, v in su["median_s"].items():
        print(f"| `{k}` | {v * 1000:.0f} | {_fmt_ratio(su['ratio'].get(k, 1.0))} |")
    if su["note"]:
        print(f"\n({su['note']})")
    print()
    print("| target | measured | goal | result |")
    print("|---|---:|---:|---|")
    for label, val, goal, ok in checks:
        print(f"| {label} | {val} | {goal} | {'PASS' if ok else 'FAIL'} |")
    if r_ansible_cpu is not None:
        print(f"\n(info) machine CPU, Ansible / gpuk8s: {r_ansible_cpu:.2f}x (median of per-round ratios)")
    if res.get("ansible_note"):
        print(f"\nAnsible: {res['ansible_note']}")
    for f in fails:
        print(f"\nFAILED RUN (not counted): {f}")
    res["summary"] = {"gpuk8s_wall_s": g_wall, "openssh_wall_s": s_wall, "ansible_wall_s": a_wall,
                      "gpuk8s_cpu_ms_per_host": g_cpu_ms, "openssh_cpu_ms_per_host": s_cpu_ms,
                      "ansible_cpu_ms_per_host": a_cpu_ms, "ratio_gpuk8s_to_openssh": r_floor,
                      "ratio_ansible_to_gpuk8s": r_ansible,
                      "ratio_ansible_to_gpuk8s_machine_cpu": r_ansible_cpu, "startup": su,
                      "checks": [{"target": c[0], "measured": c[1], "goal": c[2], "pass": c[3]} for c in checks]}
    res["all_pass"] = all(c[3] for c in checks) and not fails


if __name__ == "__main__":
    sys.exit(main())
