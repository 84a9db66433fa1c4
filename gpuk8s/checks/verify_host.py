"""verify's host checks: is a host that `up` prepared (or any kubeadm node) still healthy?

Unlike preflight's checks (pure functions of the probe's facts), these look at the host NOW,
through pytest-testinfra's modules (`File`, `Service`, the host's `run`) driven over gpuk8s's own
transport (gpuk8s/testinfra_backend.py): every call is a read on the host's one connection.
The facts of this run's probe still say what the host should look like (OS family, GPUs on the
PCI bus, the driver's mode).

Round trips matter (verify on 21 hosts must cost at most twice a preflight), so each check makes
one or two testinfra calls, the two containerd checks share one `containerd config dump`, and
phases/verify.py runs a host's checks concurrently on its one connection. Where a testinfra
module would spawn several commands for one answer (`Sysctl` looks up the sysctl binary with
`command -v` first; `Package` asks dpkg once per package), one command that gives the same
answer is used instead. Background of each check and its fix: docs/checks.md "verify: host checks".
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from gpuk8s.checks.base import (FAIL, PASS, SKIP, WARN, CheckContext, CheckResult, CheckSet,
                                not_supported)
from gpuk8s.facts.runtime import RunningContainerd, parse_containerd_dump
from gpuk8s.paths import CONTAINERD_DROP_IN, FSTAB, K8S_YUM_REPO, MODULES_FILE, SYSCTL_FILE
from gpuk8s.shell import printable, quote

VERIFY_HOSTS_ORDER = (
    "containerd-running", "kubelet-running", "swap-off", "kernel-modules", "sysctls",
    "containerd-cgroup-driver", "nvidia-runtime", "kube-packages", "nvidia-smi", "xid-errors",
)

VERIFY_HOSTS = CheckSet("verify-hosts", VERIFY_HOSTS_ORDER)

KUBE_PACKAGES = ("kubelet", "kubeadm", "kubectl")
TOOLKIT_DROP_IN = CONTAINERD_DROP_IN   # the NVIDIA Container Toolkit's (paths.py)
KERNEL_MODULES = ("overlay", "br_netfilter")
# systemctl is-enabled exits 0 for these UnitFileStates (systemctl(1), "is-enabled" table).
_ENABLED_STATES = frozenset({"enabled", "enabled-runtime", "static", "alias", "indirect", "generated"})
XID_LINES_SHOWN = 5


@dataclass(frozen=True)
class VerifyHostContext(CheckContext):
    """CheckContext plus the host as testinfra sees it (`ti`, a testinfra.host.Host) and a
    per-host memo shared by the checks that run concurrently on it."""

    ti: Any = None
    driver: str | None = None   # GPU nodes: "host" (a host driver, nvidia-smi on the host) | "container"
    _memo: dict = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def once(self, key: str, fn: Callable[[], Any]) -> Any:
        """fn() once per host, whichever check asks first; the others wait for its answer
        (or its exception)."""
        with self._lock:
            slot = self._memo.get(key)
            if slot is None:
                slot = self._memo[key] = [threading.Lock(), None, None, False]
        with slot[0]:
            if not slot[3]:
                try:
                    slot[1] = fn()
                except Exception as e:  # noqa: BLE001 - handed to every check that asks
                    slot[2] = e
                slot[3] = True
        if slot[2] is not None:
            raise slot[2]
        return slot[1]

    def module(self, name: str) -> Any:
        """A testinfra module of this host, resolved once (resolution may run a command)."""
        return self.once(f"module:{name}", lambda: getattr(self.ti, name))


def host_driver_mode(ctx: CheckContext) -> str:
    """'host' or 'container' for a GPU node: the inventory's `gpu.driver` when it says; else
    'host' when nvidia-smi is on the host's own PATH (the GPU Operator's driver container keeps
    its nvidia-smi inside the container, under /run/nvidia/driver) and a driver is loaded."""
    wanted = ctx.inventory.gpu_for(ctx.host).driver
    if wanted in ("host", "container"):
        return wanted
    f = ctx.facts
    loaded = f.nvidia_driver_version is not None or "nvidia" in f.modules
    return "host" if loaded and f.nvidia_smi_ok is not None else "container"


def _skip_non_gpu(ctx: CheckContext, check_id: str) -> CheckResult | None:
    if ctx.gpu:
        return None
    why = "gpu: false" if ctx.host.gpu is False else "no NVIDIA GPU on the PCI bus"
    return CheckResult(check_id, SKIP, f"not a GPU node ({why})")


def _first_line(text: str, limit: int = 200) -> str:
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    return printable(line[:limit])


# The commands testinfra's modules send for the calls below (pytest-testinfra 10.2.2): File's
# content (modules/file.py GNUFile: `cat -- %s`) and is_directory (`test -d %s`), Service's
# systemd detection (modules/service.py: `test -d /run/systemd/system/`) and systemd_properties
# (`systemctl show %s`). planned_commands() lists them so the backend batches them; a form that
# a newer testinfra words differently is just sent on its own (tests/unit/test_verify_hosts.py
# asserts that none is, today).
TI_CAT = "cat -- %s"
TI_TEST_DIR = "test -d %s"
TI_SYSTEMD_DIR = "/run/systemd/system/"
TI_SYSTEMCTL_SHOW = "systemctl show %s"
CONTAINERD_DUMP = "containerd config dump"
DPKG_QUERY = "dpkg-query -W -f %s %s %s %s"
RPM_QUERY = "rpm -q --queryformat %s %s %s %s"
NVIDIA_SMI = "nvidia-smi --query-gpu=index,pci.bus_id,name --format=csv,noheader"


def planned_commands(ctx: "VerifyHostContext") -> list[tuple[str, ...]]:
    """(command, *args) of every testinfra call the checks will make on this host, as the
    backend builds them: run in one round trip before the checks (gpuk8s/testinfra_backend.py)."""
    plan: list[tuple[str, ...]] = [(TI_TEST_DIR, TI_SYSTEMD_DIR)]
    plan += [(TI_SYSTEMCTL_SHOW, u) for u in ("containerd", "kubelet")]
    plan += [(TI_CAT, "/proc/swaps"), (TI_CAT, FSTAB)]
    plan += [(TI_TEST_DIR, f"/sys/module/{m}") for m in KERNEL_MODULES]
    plan += [(TI_CAT, "/proc/sys/" + k.replace(".", "/")) for k in wanted_sysctls(ctx)]
    plan.append((CONTAINERD_DUMP,))
    if ctx.family == "debian":
        plan.append((DPKG_QUERY, _DPKG_FORMAT, *KUBE_PACKAGES))
    elif ctx.family == "rhel":
        plan += [(RPM_QUERY, _RPM_FORMAT, *KUBE_PACKAGES), (TI_CAT, K8S_YUM_REPO)]
    if ctx.gpu:
        if ctx.driver == "host":
            plan.append((NVIDIA_SMI,))
        plan.append((_XID_SCRIPT, str(XID_LINES_SHOWN)))
    return plan


def _command(ctx: VerifyHostContext, command: str, *args: str) -> Any:
    """testinfra's Command module: `command` is fixed text, each %s an argument testinfra quotes
    (shlex.quote); returns its CommandResult (rc, stdout, stderr)."""
    return ctx.module("command")(command, *args)


def _read(ctx: VerifyHostContext, path: str) -> str | None:
    """A file's text with testinfra's File (`cat -- PATH`, one command), None when it cannot be
    read (testinfra raises RuntimeError when cat exits 1)."""
    try:
        return ctx.module("file")(path).content_string
    except RuntimeError:
        return None


# --------------------------------------------------------------------------- services

def _service(ctx: VerifyHostContext, check_id: str, unit: str) -> CheckResult:
    props = ctx.module("service")(unit).systemd_properties   # one `systemctl show UNIT`
    load = props.get("LoadState", "")
    active = props.get("ActiveState", "")
    sub = props.get("SubState", "")
    enabled = props.get("UnitFileState", "")
    logs = f"journalctl -u {quote(unit)} -n 50 --no-pager"
    if load in ("not-found", ""):
        return CheckResult(check_id, FAIL, f"{unit}.service is not installed (LoadState="
                                           f"{printable(load) or 'unknown'})",
                           "gpuk8s up   # installs and starts it")
    problems, fixes = [], []
    if active != "active":
        problems.append(f"{unit} is {printable(active) or 'inactive'}"
                        + (f" ({printable(sub)})" if sub else ""))
    if enabled == "masked":
        problems.append(f"{unit} is masked")
        fixes.append(f"systemctl unmask {quote(unit)}")
    elif enabled not in _ENABLED_STATES:
        problems.append(f"{unit} is not enabled at boot (UnitFileState={printable(enabled) or 'unknown'})")
    if problems:
        fixes.append(f"systemctl enable --now {quote(unit)}")
        if active != "active":
            fixes.append(f"{logs}   # why it stopped")
        return CheckResult(check_id, FAIL, "; ".join(problems), "\n".join(fixes))
    return CheckResult(check_id, PASS, f"{unit} is active ({printable(sub) or 'running'}) and "
                                       f"enabled ({printable(enabled)})")


@VERIFY_HOSTS.check("containerd-running", "containerd active and enabled",
                    "Every pod of the node runs under containerd; stopped, nothing starts and "
                    "the kubelet reports the node NotReady.")
def check_containerd_running(ctx: VerifyHostContext) -> CheckResult:
    return _service(ctx, "containerd-running", "containerd")


@VERIFY_HOSTS.check("kubelet-running", "kubelet active and enabled",
                    "The kubelet is the node: stopped, the node turns NotReady and its pods are "
                    "evicted; disabled, it does not come back after a reboot.")
def check_kubelet_running(ctx: VerifyHostContext) -> CheckResult:
    return _service(ctx, "kubelet-running", "kubelet")


# --------------------------------------------------------------------------- kernel

@VERIFY_HOSTS.check("swap-off", "No active swap",
                    "The kubelet refuses to run (or, with swap allowed, misreports memory) "
                    "when swap comes back, e.g. after a reboot with swap still in /etc/fstab.")
def check_swap_off(ctx: VerifyHostContext) -> CheckResult:
    swaps = _read(ctx, "/proc/swaps")
    if swaps is None:
        return CheckResult("swap-off", WARN, "could not read /proc/swaps",
                           "cat /proc/swaps   # must list no devices")
    devices = [ln.split()[0] for ln in swaps.splitlines()[1:] if ln.strip()]
    if devices:
        return CheckResult("swap-off", FAIL,
                           f"swap is active on {', '.join(printable(d) for d in devices)}",
                           "swapoff -a\nsed -i '/\\sswap\\s/s/^/#/' /etc/fstab   # and mask any .swap unit")
    text = _read(ctx, FSTAB) or ""
    entries = [ln for ln in text.splitlines()
               if ln.split()[2:3] == ["swap"] and not ln.lstrip().startswith("#")]
    if entries:
        return CheckResult("swap-off", WARN,
                           f"no active swap, but /etc/fstab would mount swap after a reboot "
                           f"({'; '.join(printable(e.strip()) for e in entries[:3])})",
                           "sed -i '/\\sswap\\s/s/^/#/' /etc/fstab")
    return CheckResult("swap-off", PASS, "no active swap, none in /etc/fstab")


@VERIFY_HOSTS.check("kernel-modules", "overlay and br_netfilter loaded",
                    "containerd's overlayfs snapshotter needs overlay; pod traffic across the "
                    "node's bridge is filtered only with br_netfilter (its sysctls vanish without it).")
def check_kernel_modules(ctx: VerifyHostContext) -> CheckResult:
    # /sys/module/<name> exists for a loaded module and for one built into the kernel.
    missing = [m for m in KERNEL_MODULES if not ctx.module("file")(f"/sys/module/{m}").is_directory]
    if missing:
        return CheckResult("kernel-modules", FAIL, f"not loaded: {', '.join(missing)}",
                           "\n".join(f"modprobe {m}" for m in missing)
                           + f"\ncat {MODULES_FILE}   # must list them (gpuk8s up writes it)")
    return CheckResult("kernel-modules", PASS, "overlay and br_netfilter are loaded")


def wanted_sysctls(ctx: CheckContext) -> dict[str, str]:
    """The settings of /etc/sysctl.d/99-kubernetes.conf (templates/host/99-kubernetes.conf.j2)."""
    want = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1",
            "net.bridge.bridge-nf-call-ip6tables": "1"}
    if ":" in ctx.inventory.cluster.pod_cidr:   # an IPv6 pod network: render/host.py pod_networks
        want["net.ipv6.conf.all.forwarding"] = "1"
    return want


@VERIFY_HOSTS.check("sysctls", "Kernel settings gpuk8s sets",
                    "Without ip_forward pods cannot reach other nodes; without the bridge-nf "
                    "settings Services and NetworkPolicies miss bridged traffic.")
def check_sysctls(ctx: VerifyHostContext) -> CheckResult:
    # What `sysctl -n KEY` prints is /proc/sys/<KEY with dots as slashes> (procps-ng sysctl.c
    # ReadSetting); read with File, one command per key (testinfra's Sysctl first runs
    # `command -v` twice to find the binary).
    wrong = []
    for key, value in wanted_sysctls(ctx).items():
        have = _read(ctx, "/proc/sys/" + key.replace(".", "/"))
        have = have.strip() if have is not None else None
        if have != value:
            wrong.append(f"{key} = {printable(have) if have is not None else '(absent)'} (want {value})")
    if wrong:
        return CheckResult("sysctls", FAIL, "; ".join(wrong),
                           f"sysctl --system   # applies {SYSCTL_FILE} (gpuk8s up writes it)"
                           + ("\nmodprobe br_netfilter   # the bridge-nf keys exist only with it"
                              if any("bridge" in w and "(absent)" in w for w in wrong) else ""))
    return CheckResult("sysctls", PASS, ", ".join(f"{k} = {v}" for k, v in wanted_sysctls(ctx).items()))


# --------------------------------------------------------------------------- containerd

def _dump(ctx: VerifyHostContext) -> tuple[RunningContainerd, str]:
    """(parsed `containerd config dump`, error text); one command per host for both checks."""
    def read() -> tuple[RunningContainerd, str]:
        res = _command(ctx, CONTAINERD_DUMP)
        if res.rc != 0:
            return RunningContainerd(parse_error="failed"), \
                f"`containerd config dump` exited {res.rc}: {_first_line(res.stderr or res.stdout)}"
        parsed = parse_containerd_dump(res.stdout)
        if parsed.parse_error:
            return parsed, f"`containerd config dump` is not TOML: {printable(parsed.parse_error[:200])}"
        return parsed, ""
    return ctx.once("containerd-dump", read)


@VERIFY_HOSTS.check("containerd-cgroup-driver", "containerd runs with the systemd cgroup driver",
                    "The kubelet uses the systemd cgroup driver; a containerd on cgroupfs makes "
                    "two managers of the same cgroups and pods die under memory pressure. Read from "
                    "the running configuration, drop-ins merged.")
def check_containerd_cgroup_driver(ctx: VerifyHostContext) -> CheckResult:
    dump, error = _dump(ctx)
    fix_file = "/etc/containerd/config.toml"
    if error:
        return CheckResult("containerd-cgroup-driver", FAIL, error,
                           "containerd config dump   # run it on the host: containerd refuses its "
                           "configuration\njournalctl -u containerd -n 50 --no-pager")
    names = ["runc"] + [n for n in ("nvidia",) if n in dump.runtimes]
    if dump.default_runtime and dump.default_runtime not in names and dump.default_runtime in dump.runtimes:
        names.append(dump.default_runtime)
    bad = [n for n in names if dump.systemd_cgroup(n) is not True]
    table = f"[plugins.'{dump.runtime_plugin}'.containerd.runtimes.runc.options]"
    if "runc" not in dump.runtimes:
        return CheckResult("containerd-cgroup-driver", FAIL,
                           f"the running configuration has no runc runtime under {dump.runtime_plugin}",
                           f"gpuk8s up   # rewrites {fix_file}")
    if bad:
        return CheckResult("containerd-cgroup-driver", FAIL,
                           "SystemdCgroup is not true in the running configuration for runtime(s) "
                           f"{', '.join(printable(n) for n in bad)} ({dump.runtime_plugin})",
                           f"set SystemdCgroup = true under {table} in {fix_file}, then\n"
                           "systemctl restart containerd   # or run gpuk8s up, which repairs it")
    return CheckResult("containerd-cgroup-driver", PASS,
                       f"SystemdCgroup = true for {', '.join(names)} (config version {dump.version})")


@VERIFY_HOSTS.check("nvidia-runtime", "containerd has the nvidia runtime from the toolkit's drop-in",
                    "GPU pods run with the nvidia runtime that the NVIDIA Container Toolkit adds "
                    "through its drop-in; without it they start without GPUs and the device plugin "
                    "and validator fail.")
def check_nvidia_runtime(ctx: VerifyHostContext) -> CheckResult:
    skip = _skip_non_gpu(ctx, "nvidia-runtime")
    if skip:
        return skip
    dump, error = _dump(ctx)
    if error:
        return CheckResult("nvidia-runtime", FAIL, error,
                           "journalctl -u containerd -n 50 --no-pager")
    from_drop_in = TOOLKIT_DROP_IN in dump.imports
    toolkit_logs = ("kubectl -n gpu-operator get pods -l app=nvidia-container-toolkit-daemonset "
                    f"--field-selector spec.nodeName={quote(ctx.host.name)}   # on a control plane; "
                    "then `kubectl -n gpu-operator logs POD`")
    if "nvidia" not in dump.runtimes:
        why = ("the toolkit's drop-in is loaded but defines no nvidia runtime" if from_drop_in else
               f"{TOOLKIT_DROP_IN} is not loaded (absent, or config.toml does not import "
               "/etc/containerd/conf.d/*.toml)")
        return CheckResult("nvidia-runtime", FAIL, f"no `nvidia` runtime in containerd's running "
                                                   f"configuration: {why}",
                           f"ls -l {TOOLKIT_DROP_IN}\n{toolkit_logs}\n"
                           "gpuk8s up   # restores the import in config.toml")
    if not from_drop_in:
        return CheckResult("nvidia-runtime", WARN,
                           f"the `nvidia` runtime is configured, but not by the toolkit's drop-in "
                           f"{TOOLKIT_DROP_IN} (loaded: {', '.join(printable(i) for i in dump.imports) or 'none'}); "
                           "the GPU Operator's toolkit does not manage it",
                           f"{toolkit_logs}")
    return CheckResult("nvidia-runtime", PASS, f"`nvidia` runtime from {TOOLKIT_DROP_IN}")


# --------------------------------------------------------------------------- packages

# dpkg-query -W with a format (dpkg-query(1) "--showformat"): ${Status} is "want ok state";
# want is "hold" for a package apt-mark holds (apt-mark hold sets the dpkg selection).
_DPKG_FORMAT = "${Package} ${Status} ${Version}\\n"
# rpm -q with a query format (rpm(8) --queryformat); an absent package prints "package NAME is
# not installed" on stdout.
_RPM_FORMAT = "%{NAME} %{VERSION}\\n"


def _debian_packages(ctx: VerifyHostContext) -> tuple[dict[str, str], set[str], str]:
    res = _command(ctx, DPKG_QUERY, _DPKG_FORMAT, *KUBE_PACKAGES)
    versions, held = {}, set()
    for ln in res.stdout.splitlines():
        w = ln.split()
        if len(w) == 5 and w[0] in KUBE_PACKAGES and w[3] == "installed":
            versions[w[0]] = w[4]
            if w[1] == "hold":
                held.add(w[0])
    err = "" if res.rc in (0, 1) else _first_line(res.stderr)
    return versions, held, err


def _rhel_packages(ctx: VerifyHostContext) -> tuple[dict[str, str], set[str], str]:
    res = _command(ctx, RPM_QUERY, _RPM_FORMAT, *KUBE_PACKAGES)
    versions = {}
    for ln in res.stdout.splitlines():
        w = ln.split()
        if len(w) == 2 and w[0] in KUBE_PACKAGES:
            versions[w[0]] = w[1]
    held = set(_yum_excludes(_read(ctx, K8S_YUM_REPO) or "")) & set(KUBE_PACKAGES)
    return versions, held, ""


def _yum_excludes(text: str) -> list[str]:
    """The `exclude=` words of the [kubernetes] section (dnf.conf(5): space or comma separated)."""
    section, out = None, []
    for ln in text.splitlines():
        s = ln.strip()
        if s.startswith("[") and s.endswith("]"):
            section = s[1:-1].strip()
        elif section == "kubernetes" and re.match(r"(exclude|excludepkgs)\s*=", s):
            out += [w for w in re.split(r"[\s,]+", s.split("=", 1)[1]) if w]
    return out


@VERIFY_HOSTS.check("kube-packages", "kubelet, kubeadm, kubectl at the expected version and held",
                    "A kubelet newer or older than the cluster's version breaks the version skew "
                    "policy; an unheld package is upgraded by the next routine apt/dnf upgrade.")
def check_kube_packages(ctx: VerifyHostContext) -> CheckResult:
    if ctx.release is None:
        return not_supported(ctx, "kube-packages")
    want = ctx.release.patch
    if ctx.family == "debian":
        versions, held, err = _debian_packages(ctx)
        hold_fix = f"apt-mark hold {' '.join(KUBE_PACKAGES)}"
        install = ("apt-get install -y --allow-change-held-packages "
                   + " ".join(f"{p}={quote(want)}-1.1" for p in KUBE_PACKAGES))
    elif ctx.family == "rhel":
        versions, held, err = _rhel_packages(ctx)
        hold_fix = f"add `exclude=kubelet kubeadm kubectl` to [kubernetes] in {K8S_YUM_REPO}"
        install = ("dnf install -y " + " ".join(f"{p}-{quote(want)}" for p in KUBE_PACKAGES)
                   + " --disableexcludes=kubernetes")
    else:
        return CheckResult("kube-packages", WARN, "unknown package manager (neither apt nor dnf): "
                                                  "versions and holds not checked")
    if err:
        query = "dpkg-query -W" if ctx.family == "debian" else "rpm -q"
        return CheckResult("kube-packages", FAIL, f"could not query the package database: {err}",
                           f"{query} {' '.join(KUBE_PACKAGES)}   # on the host: why it fails")
    missing = [p for p in KUBE_PACKAGES if p not in versions]
    wrong = [f"{p} {printable(v)}" for p, v in sorted(versions.items())
             if re.sub(r"^\d+:", "", v).split("-")[0] != want]
    unheld = [p for p in KUBE_PACKAGES if p in versions and p not in held]
    problems, fixes = [], []
    if missing:
        problems.append(f"not installed: {', '.join(missing)}")
    if wrong:
        problems.append(f"not at {want}: {', '.join(wrong)}")
    if missing or wrong:
        fixes.append(install)
    if unheld:
        problems.append(f"not held: {', '.join(unheld)}")
        fixes.append(hold_fix)
    if problems:
        return CheckResult("kube-packages", FAIL, "; ".join(problems), "\n".join(fixes))
    return CheckResult("kube-packages", PASS, f"kubelet, kubeadm, kubectl {want}, held")


# --------------------------------------------------------------------------- GPUs

@VERIFY_HOSTS.check("nvidia-smi", "nvidia-smi healthy and sees every GPU on the PCI bus",
                    "A GPU the driver lost (fallen off the bus, a failed reset) is still on the "
                    "PCI bus but no pod can use it; a driver/library mismatch after an upgrade "
                    "without a reboot fails every GPU pod.")
def check_nvidia_smi(ctx: VerifyHostContext) -> CheckResult:
    skip = _skip_non_gpu(ctx, "nvidia-smi")
    if skip:
        return skip
    if ctx.driver != "host":
        return CheckResult("nvidia-smi", SKIP, "the GPU Operator's driver container runs the driver "
                                               "here (its validator checks it)")
    res = _command(ctx, NVIDIA_SMI)
    diagnose = "nvidia-smi; dmesg | grep -i nvrm | tail -n 20"
    if res.rc != 0:
        return CheckResult("nvidia-smi", FAIL,
                           f"nvidia-smi exited {res.rc}: {_first_line(res.stdout + chr(10) + res.stderr)}",
                           diagnose + "\nreboot   # after a driver upgrade: loads the new module")
    listed = [ln for ln in res.stdout.splitlines() if ln.strip()]
    on_bus = len(ctx.facts.gpus)
    if len(listed) != on_bus:
        return CheckResult("nvidia-smi", FAIL,
                           f"nvidia-smi lists {len(listed)} GPU(s), {on_bus} are on the PCI bus",
                           f"{diagnose}\nlspci -nn -d 10de:   # a GPU the driver lost needs a reset "
                           "or a reboot (drain the node first)")
    return CheckResult("nvidia-smi", PASS, f"nvidia-smi lists all {on_bus} GPU(s) on the PCI bus")


# The kernel log since boot: journald's (`journalctl -k -b`), else the ring buffer (`dmesg`: no
# journald, or a journal without this boot); awk counts the Xid lines and keeps the first few
# (a flapping GPU writes thousands). "@@gpuk8s:nolog" when neither could be read.
_XID_SCRIPT = ("{ journalctl -k -b -q --no-pager 2>/dev/null || dmesg 2>/dev/null || "
               "echo @@gpuk8s:nolog; } | awk -v keep=%s "
               "'/@@gpuk8s:nolog/ { print; next } /NVRM: Xid/ { n++; if (n <= keep) print } "
               "END { print \"@@gpuk8s:xids \" n+0 }'")
# NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus.
# (NVIDIA/NVSentinel#155, leptonai/gpud#1209 quote such lines from dmesg and journalctl -k.)
_XID_RE = re.compile(r"NVRM: Xid \((PCI:[0-9A-Fa-f:.]+)\): (\d+)")


@VERIFY_HOSTS.check("xid-errors", "No NVIDIA Xid errors since boot",
                    "The driver logs an Xid for every GPU error (79: fallen off the bus, 48/94/95: "
                    "ECC, 119: GSP timeout...); a node with Xids since boot may run jobs on a GPU "
                    "that is failing.")
def check_xid_errors(ctx: VerifyHostContext) -> CheckResult:
    skip = _skip_non_gpu(ctx, "xid-errors")
    if skip:
        return skip
    if ctx.facts.uid not in (0, None):   # journalctl -k shows an unprivileged user nothing
        return CheckResult("xid-errors", WARN, "the kernel log needs root: the checks run as uid "
                                               f"{ctx.facts.uid} (no sudo)",
                           "journalctl -k -b | grep 'NVRM: Xid'   # as root; or set ssh.sudo: true")
    res = _command(ctx, _XID_SCRIPT, str(XID_LINES_SHOWN))
    lines = res.stdout.splitlines()
    count_line = next((ln for ln in reversed(lines) if ln.startswith("@@gpuk8s:xids ")), None)
    if count_line is None or any(ln.startswith("@@gpuk8s:nolog") for ln in lines):
        return CheckResult("xid-errors", WARN, "could not read the kernel log (journalctl -k -b, dmesg)",
                           "journalctl -k -b | grep 'NVRM: Xid'")
    count = int(count_line.split()[1]) if count_line.split()[1].isdigit() else 0
    xids = [ln for ln in lines if "NVRM: Xid" in ln]
    if not count:
        return CheckResult("xid-errors", PASS, "no Xid in the kernel log since boot")
    codes = sorted({m.group(2) for ln in xids if (m := _XID_RE.search(ln))}, key=int)
    shown = "\n".join(f"  {printable(ln.strip()[:300])}" for ln in xids)
    more = f"\n  ... {count - len(xids)} more" if count > len(xids) else ""
    return CheckResult("xid-errors", FAIL,
                       f"{count} NVIDIA Xid error(s) since boot (Xid {', '.join(codes) or '?'}):\n"
                       f"{shown}{more}",
                       "journalctl -k -b | grep 'NVRM: Xid'   # see NVIDIA's Xid catalogue for each code\n"
                       f"kubectl drain {quote(ctx.host.name)} --ignore-daemonsets --delete-emptydir-data"
                       "   # then reset the GPU or reboot; replace it if the Xid returns")
