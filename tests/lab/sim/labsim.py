"""gpuk8s lab simulator engine: the heavier tools, run inside a lab host.

Invoked by the sh wrappers in this directory as `labsim.py TOOL ARGS...` with the interpreter the
test runner used (recorded in /run/gpuk8s-lab/python). Per-host state lives in /etc/gpuk8s-lab/
(the host's overlay); the simulated cluster lives in /run/gpuk8s-lab/shared/cluster.json (the lab
directory, shared by every host), guarded by an flock on cluster.lock.

Simulated: apt-get, apt-mark, dnf/yum, curl, gpg, modprobe, sysctl, swapoff, journalctl,
kubeadm (init, init phase upload-certs, token create/delete/list, join, reset), kubectl (against
the shared cluster) and the TOML check `systemctl restart containerd` runs. Nothing here touches
the real machine: every path is inside the host's overlays, per-host /proc files or its netns.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path


class _Lazy:
    """A module imported on first use: each simulated call pays only for what it touches
    (PyYAML, tomllib, fixture... cost ~25 ms of start-up when imported up front)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


base64, dt, fnmatch, hashlib = _Lazy("base64"), _Lazy("datetime"), _Lazy("fnmatch"), _Lazy("hashlib")
ipaddress, secrets, socket, tomllib = _Lazy("ipaddress"), _Lazy("secrets"), _Lazy("socket"), _Lazy("tomllib")
yaml = _Lazy("yaml")
fx = _Lazy("fixture")  # tests/lab/fixture.py (containerd file formats), copied next to this file

LAB = Path("/run/gpuk8s-lab")
SIM = LAB / "sim"
SHARED = LAB / "shared"
STATE = Path("/etc/gpuk8s-lab")
CLUSTER = SHARED / "cluster.json"
CLUSTER_LOCK = SHARED / "cluster.lock"

sys.path.insert(0, str(Path(__file__).resolve().parent))  # where fixture.py is

TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
CONTAINERD_OFFERED = ["1.7.27", "2.1.4"]
KUBE_OFFERED = ["1.33.12", "1.34.9", "1.35.6", "1.36.2"]
CALICO_DELAY = float(os.environ.get("GPUK8S_LAB_CALICO_DELAY", "2"))


def calico_delay() -> float:
    """Seconds Calico takes to become available; a test can hold it back with a per-host file."""
    try:
        return float(Path("/etc/gpuk8s-lab/calico_delay").read_text().strip())
    except (OSError, ValueError):
        return CALICO_DELAY


class Exit(Exception):
    def __init__(self, code: int, err: str = "", out: str = ""):
        super().__init__(err)
        self.code, self.err, self.out = code, err, out


def out(s: str = "") -> None:
    sys.stdout.write(s + ("\n" if not s.endswith("\n") else ""))


def err(s: str) -> None:
    sys.stderr.write(s + ("\n" if not s.endswith("\n") else ""))


CLOCK_OFFSET = SHARED / "clock_offset"


def now() -> float:
    """The lab's clock: this machine's plus the seconds a test moved it on (`Lab.advance_clock`),
    so bootstrap tokens and uploaded certificates expire as their TTL says without waiting."""
    try:
        return time.time() + float(CLOCK_OFFSET.read_text())
    except (OSError, ValueError):
        return time.time()


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- host helpers

def host_state() -> dict:
    return json.loads((STATE / "state.json").read_text())


def host_name() -> str:
    return host_state()["name"]


def family() -> str:
    osr = Path("/etc/os-release").read_text()
    vals = dict(line.split("=", 1) for line in osr.splitlines() if "=" in line)
    words = [vals.get("ID", "").strip('"').lower()] + vals.get("ID_LIKE", "").strip('"').lower().split()
    return "debian" if any(w in ("debian", "ubuntu") for w in words) else "rhel"


def os_pretty(path: str = "/etc/os-release") -> str:
    for line in Path(path).read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


def write(path: str | Path, content: str | bytes, mode: int = 0o644) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + f".labsim-{os.getpid()}")
    tmp.write_bytes(content.encode() if isinstance(content, str) else content)
    os.chmod(tmp, mode)
    os.replace(tmp, p)


def symlink(path: str, target: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + f".labsim-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, p)


def units() -> dict[str, list[str]]:
    u = {}
    f = STATE / "units"
    if f.exists():
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                u[parts[0]] = parts[1:]
    return u


def set_unit(unit: str, active: str | None = None, enabled: str | None = None,
             default: tuple[str, str] = ("inactive", "disabled"), path: Path = STATE / "units") -> None:
    u = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                u[parts[0]] = parts[1:]
    cur = u.get(unit, list(default))
    if active:
        cur[0] = active
    if enabled:
        cur[1] = enabled
    u[unit] = cur
    write(path, "".join(f"{k} {a} {e}\n" for k, (a, e) in sorted(u.items())))


def version_file(tool: str, base: Path = STATE) -> str | None:
    try:
        return (base / "versions" / tool).read_text().strip() or None
    except OSError:
        return None


def is_root() -> bool:
    return os.geteuid() == 0


def swap_on(proc_swaps: str = "/proc/swaps") -> bool:
    try:
        return len([ln for ln in Path(proc_swaps).read_text().splitlines()[1:] if ln.strip()]) > 0
    except OSError:
        return False


def read_sysctl(key: str) -> str | None:
    try:
        return Path("/proc/sys/" + key.replace(".", "/")).read_text().strip()
    except OSError:
        return None


def other_host_dir(name: str) -> Path:
    """Another host's /etc upper dir (its simulator state), as seen from inside any host."""
    return LAB / "hosts" / name / "upper" / "etc"


# --------------------------------------------------------------------------- packages

# Docker's apt repositories per distribution and codename (download.docker.com/linux/<distro>/dists/<codename>).
# containerd.io's version carries the build's distribution from the 1.7.28/2.x builds on
# (pool/stable/amd64/containerd.io_2.1.5-1~ubuntu.22.04~jammy_amd64.deb,
# containerd.io_2.2.1-1~debian.12~bookworm_amd64.deb), while 1.7.27 and older were one
# containerd.io_1.7.27-1_amd64.deb in every codename's pool. A codename without that build has no such
# version: apt's "E: Version '...' for 'containerd.io' was not found".
DOCKER_DISTS = {"ubuntu": {"focal": "20.04", "jammy": "22.04", "noble": "24.04", "resolute": "26.04"},
                "debian": {"bullseye": "11", "bookworm": "12", "trixie": "13"}}
DOCKER_BUILDS = {"1.7.27": {"focal", "jammy", "noble", "bullseye", "bookworm"},
                 "2.1.4": {"jammy", "noble", "resolute", "bookworm", "trixie"}}
RPM_RELEASES = {"9": "el9", "10": "el10"}       # download.docker.com/linux/rhel/<releasever>/
K8S_REPO_RE = re.compile(r"https://pkgs\.k8s\.io/core:/stable:/v(\d+\.\d+)/(deb|rpm)/")


def _docker_version(v: str, distro: str, codename: str) -> str:
    return f"{v}-1" if v.startswith("1.7.") else f"{v}-1~{distro}.{DOCKER_DISTS[distro][codename]}~{codename}"


def _apt_sources() -> list[dict]:
    """The one-line sources (`deb [signed-by=K] URI SUITE [COMPONENT...]`) of sources.list(.d)."""
    found = []
    files = [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    for f in files:
        if not f.is_file():
            continue
        for line in f.read_text().splitlines():
            m = re.match(r"\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)((?:\s+\S+)*)\s*$", line)
            if not m:
                continue
            key = re.search(r"signed-by=([^\s\]]+)", m.group(1) or "")
            found.append({"uri": m.group(2), "suite": m.group(3), "components": m.group(4).split(),
                          "key": key.group(1) if key else ""})
    return found


def _apt_name(src: dict, what: str) -> str:
    """How apt names a repository file in messages: 'URI SUITE InRelease', or for a flat repository
    (suite "/") 'URI-without-slash  InRelease' (apt-pkg/metaindex.cc, Describe)."""
    if src["suite"] == "/":
        return f"{src['uri'].rstrip('/')}  {what}"
    return f"{src['uri']} {src['suite']} {what}"


def _apt_release_exists(src: dict) -> bool:
    """Whether the repository serves a Release file for this suite: Docker's only for the
    distribution's codenames (and the `stable` component), pkgs.k8s.io only under /deb/."""
    uri = src["uri"].rstrip("/")
    m = re.fullmatch(r"https://download\.docker\.com/linux/(ubuntu|debian)", uri)
    if m:
        return src["suite"] in DOCKER_DISTS[m.group(1)]
    if "pkgs.k8s.io" in uri:
        k = K8S_REPO_RE.fullmatch(src["uri"] if src["uri"].endswith("/") else src["uri"] + "/")
        return bool(k) and k.group(2) == "deb" and src["suite"] == "/"
    return False


def _keyring_problem(path: str) -> str | None:
    """Why apt cannot use a signed-by keyring: missing, or its contents do not match its name:
    apt reads `.asc` as ASCII-armoured and `.gpg` as a binary keyring; an armoured key saved as
    .gpg is "ignored as the file has an unsupported filetype" and the repository's signature then
    fails with NO_PUBKEY (apt-pkg/contrib/gpgv.cc; the output quoted in public reports, e.g.
    "W: ...: The key(s) in the keyring /etc/apt/trusted.gpg.d/mysql.gpg are ignored as the file has an
    unsupported filetype." followed by "NO_PUBKEY")."""
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return "missing"
    head = p.read_bytes()[:64]
    armored = head.lstrip().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    if path.endswith(".asc"):
        return None if armored else "filetype"
    if path.endswith(".gpg"):
        return "filetype" if armored else None
    return "filetype"


def _sources(kind: str = "yum") -> list[tuple[str, str, str]]:
    """(baseurl, exclude, repo id) of the enabled yum/dnf repositories."""
    found = []
    for f in sorted(Path("/etc/yum.repos.d").glob("*.repo")) if Path("/etc/yum.repos.d").is_dir() else []:
        sect: dict[str, str] = {}
        rid = ""
        for line in f.read_text().splitlines() + ["[end]"]:
            line = line.strip()
            if line.startswith("["):
                if sect.get("baseurl") and sect.get("enabled", "1") == "1":
                    found.append((sect["baseurl"], sect.get("exclude", ""), rid))
                sect = {}
                rid = line.strip("[]")
            elif "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                sect[k.strip()] = v.strip()
    return found


def _releasever() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_ID="):
            return line.split("=", 1)[1].strip('"').split(".")[0]
    return ""


def _rpm_metadata_exists(url: str) -> bool:
    """Docker's rpm repositories are linux/{rhel,centos,fedora}/<releasever>/<arch>/stable;
    pkgs.k8s.io's rpm repository is under /rpm/ (a /deb/ baseurl has no repodata/repomd.xml)."""
    url = url.replace("$releasever", _releasever()).replace("$basearch", "x86_64")
    if "download.docker.com" in url:
        m = re.fullmatch(r"https://download\.docker\.com/linux/(rhel|centos)/(\d+)/x86_64/stable/?", url)
        return bool(m) and m.group(2) in RPM_RELEASES
    if "pkgs.k8s.io" in url:
        k = K8S_REPO_RE.fullmatch(url if url.endswith("/") else url + "/")
        return bool(k) and k.group(2) == "rpm"
    return True


# Distro packages that provide binaries the probe and kubeadm look for (made visible as stubs).
TOOL_BINS = {"ebtables": ["/usr/sbin/ebtables"], "conntrack": ["/usr/sbin/conntrack"],
             "conntrack-tools": ["/usr/sbin/conntrack"], "socat": ["/usr/bin/socat"],
             "ethtool": ["/usr/sbin/ethtool"], "iptables": ["/usr/sbin/iptables"],
             "iptables-nft": ["/usr/sbin/iptables", "/usr/sbin/ebtables"], "iproute2": ["/usr/sbin/ip", "/usr/sbin/tc"],
             "iproute": ["/usr/sbin/ip"], "iproute-tc": ["/usr/sbin/tc"], "mount": ["/usr/bin/mount"],
             "util-linux": ["/usr/bin/mount", "/usr/bin/nsenter"], "coreutils": ["/usr/bin/touch"]}
FILE_PROVIDES = {b: p for p in ("iptables-nft", "iproute", "iproute-tc", "conntrack-tools", "socat", "ethtool",
                                "util-linux", "coreutils") for b in TOOL_BINS[p]}


def _catalog(repos: list) -> dict[str, list[str]]:
    """Package name -> versions offered by these repositories (apt: {uri, suite}; dnf: baseurl),
    plus the distribution's own."""
    fam = "deb" if family() == "debian" else "rpm"
    cat: dict[str, list[str]] = {p: ["1.0"] for p in ("apt-transport-https", "ca-certificates", "curl",
                                                      "gpg", "gnupg", "gnupg2", *TOOL_BINS)}
    for repo in repos:
        url = repo["uri"] if isinstance(repo, dict) else repo
        if "download.docker.com" in url:
            if fam == "deb" and isinstance(repo, dict):
                m = re.fullmatch(r"https://download\.docker\.com/linux/(ubuntu|debian)/?", url)
                code = repo.get("suite", "")
                if m and code in DOCKER_DISTS[m.group(1)]:
                    cat["containerd.io"] = [_docker_version(v, m.group(1), code) for v in CONTAINERD_OFFERED
                                            if code in DOCKER_BUILDS[v]]
            elif fam == "rpm":
                el = RPM_RELEASES.get(_releasever())
                if el and _rpm_metadata_exists(url):
                    cat["containerd.io"] = [f"{v}-1.{el}" for v in CONTAINERD_OFFERED]
        m = K8S_REPO_RE.match(url)
        if m and m.group(2) == fam:
            minor = m.group(1)
            vs = [v for v in KUBE_OFFERED if v.startswith(minor + ".")]
            for p in ("kubelet", "kubeadm", "kubectl"):
                cat[p] = [f"{v}-1.1" if fam == "deb" else f"{v}-150500.1.1" for v in vs]
            cat["cri-tools"] = [f"{minor}.0-1.1" if fam == "deb" else f"{minor}.0-150500.1.1"]
            cat["kubernetes-cni"] = ["1.7.1-1.1" if fam == "deb" else "1.7.1-150500.1.1"]
    return cat


def _installed() -> dict[str, str]:
    f = STATE / "packages.json"
    return json.loads(f.read_text()) if f.exists() else {}


def _install(name: str, version: str) -> None:
    """Make a package's files and units visible, like dpkg/rpm would."""
    fam = family()
    plain = version.split("-")[0]
    pk = _installed()
    pk[name] = version
    write(STATE / "packages.json", json.dumps(pk, indent=1) + "\n")
    if name in ("curl", "gpg", "gnupg", "gnupg2"):
        tool = "curl" if name == "curl" else "gpg"
        symlink(f"/usr/bin/{tool}", f"{SIM}/{tool}")
    elif name == "containerd.io":
        (STATE / "containerd").mkdir(parents=True, exist_ok=True)
        write(STATE / "containerd" / "version_line", fx.containerd_version_line(plain) + "\n")
        write(STATE / "containerd" / "default.toml", native_default(plain))
        write(STATE / "versions" / "runc", "1.3.0\n")
        for tool in ("containerd", "runc"):
            symlink(f"/usr/bin/{tool}", f"{SIM}/{tool}")
        if not CONTAINERD_CONFIG.exists():   # the package's conffile
            write(CONTAINERD_CONFIG, fx.DOCKER_CONTAINERD_CONFIG)
        st = ("active", "enabled") if fam == "debian" else ("inactive", "disabled")
        if "containerd.service" not in units():
            set_unit("containerd.service", *st)
    elif name in ("kubelet", "kubeadm", "kubectl"):
        write(STATE / "versions" / name, plain + "\n")
        symlink(f"/usr/bin/{name}", f"{SIM}/{name}")
        if name == "kubelet" and "kubelet.service" not in units():
            st = ("activating", "enabled") if fam == "debian" else ("inactive", "disabled")
            set_unit("kubelet.service", *st)
    elif name in TOOL_BINS:
        for b in TOOL_BINS[name]:
            if not os.path.exists(b):
                symlink(b, f"{SIM}/stub")
    elif name == "cri-tools":
        write(STATE / "versions" / "crictl", plain + "\n")
        symlink("/usr/bin/crictl", f"{SIM}/crictl")


def native_default(version: str) -> str:
    """`containerd config default` of this build: the real output of that release (fixture's
    containerd_default_config: 2.0.0-2.0.6 and 2.1.0-2.1.4 omit SystemdCgroup, 2.2 adds the
    conf.d import, 2.3 writes version 4)."""
    return fx.containerd_default_config(version)


DEPENDS = {"kubeadm": ["cri-tools", "kubelet", "kubectl"], "kubelet": ["kubernetes-cni"]}


def _resolve(requests: list[tuple[str, str | None]], cat: dict[str, list[str]], *, apt: bool
             ) -> list[tuple[str, str]]:
    picks: list[tuple[str, str]] = []
    missing = []
    for name, want in requests:
        if name not in cat:
            if apt:
                raise Exit(100, f"E: Unable to locate package {name}")
            missing.append(name + (f"-{want}" if want else ""))
            continue
        offered = cat[name]
        if want is None:
            picks.append((name, offered[-1]))
            continue
        match = [v for v in offered if fnmatch.fnmatchcase(v, want)]
        if not match:
            if apt:
                raise Exit(100, f"E: Version '{want}' for '{name}' was not found")
            missing.append(f"{name}-{want}")
            continue
        picks.append((name, match[-1]))
    if missing:
        raise Exit(1, "".join(f"No match for argument: {m}\n" for m in missing)
                   + f"Error: Unable to find a match: {' '.join(missing)}")
    names = {n for n, _ in picks}
    for n, _ in list(picks):
        for d in DEPENDS.get(n, []):
            if d not in names and d in cat and d not in _installed():
                picks.append((d, cat[d][-1]))
                names.add(d)
    return picks


def _vkey(v: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", v))


def apt_get(args: list[str]) -> int:
    opts = [a for a in args if a.startswith("-")]
    words = [a for a in args if not a.startswith("-")]
    if not words:
        out("apt 2.7.14 (amd64)\nUsage: apt-get [options] command")
        return 0
    cmd, pkgs = words[0], words[1:]
    if cmd in ("update", "install", "upgrade", "remove", "purge") and not is_root():
        raise Exit(100, "E: Could not open lock file /var/lib/dpkg/lock-frontend - open (13: Permission denied)\n"
                        "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), are you root?")
    if cmd == "update":
        lists = []
        errs = []
        for n, src in enumerate(_apt_sources(), 1):
            uri = src["uri"]
            if "download.docker.com" not in uri and "pkgs.k8s.io" not in uri:
                continue       # the distribution's own archives: not simulated (their packages are built in)
            if not _apt_release_exists(src):
                errs.append(f"Err:{n} {_apt_name(src, 'InRelease')}\n  404  Not Found [IP: 198.51.100.7 443]\n"
                            f"E: The repository '{_apt_name(src, 'Release')}' does not have a Release file.\n"
                            "N: Updating from such a repository can't be done securely, and is therefore disabled "
                            "by default.\nN: See apt-secure(8) manpage for repository creation and user "
                            "configuration details.")
                continue
            key = src["key"]
            why = _keyring_problem(key) if key else "missing"
            if why:
                keyid = "7EA0A9C3F273FCD8" if "docker" in uri else "234654DA9A296436"
                where = uri.rstrip("/") + ("" if src["suite"] == "/" else f"/dists/{src['suite']}") + "/InRelease"
                warn = (f"W: {where}: The key(s) in the keyring {key} are ignored as the file has an unsupported "
                        "filetype.\n") if why == "filetype" else ""
                errs.append(warn + f"W: GPG error: {_apt_name(src, 'InRelease')}: The following signatures couldn't "
                            f"be verified because the public key is not available: NO_PUBKEY {keyid}\n"
                            f"E: The repository '{_apt_name(src, 'InRelease')}' is not signed.")
                continue
            lists.append({"uri": uri, "suite": src["suite"]})
            if "-qq" not in opts:
                out(f"Get:{n} {_apt_name(src, 'InRelease')} [1,477 B]")
        write(STATE / "apt" / "lists.json", json.dumps(lists) + "\n")
        if errs:
            raise Exit(100, "\n".join(errs))
        if "-qq" not in opts and "-q" not in opts:
            out("Reading package lists... Done")
        return 0
    if cmd == "install":
        if not {"-y", "--yes", "--assume-yes"} & set(opts):
            raise Exit(1, "", "Do you want to continue? [Y/n] Abort.")
        try:
            lists = json.loads((STATE / "apt" / "lists.json").read_text())
        except OSError:
            lists = []
        cat = _catalog(lists)
        reqs = []
        for p in pkgs:
            name, _, ver = p.partition("=")
            reqs.append((name, ver or None))
        picks = _resolve(reqs, cat, apt=True)
        have = _installed()
        held = _held()
        for name, ver in picks:
            if name in have and have[name] != ver:
                if name in held and "--allow-change-held-packages" not in opts:
                    raise Exit(100, "E: Held packages were changed and -y was used without "
                                    "--allow-change-held-packages.")
                if _vkey(ver) < _vkey(have[name]) and "--allow-downgrades" not in opts:
                    raise Exit(100, "E: Packages were downgraded and -y was used without --allow-downgrades.")
        for name, ver in picks:
            if have.get(name) == ver:
                if "-qq" not in opts:
                    out(f"{name} is already the newest version ({ver}).")
                continue
            out(f"Selecting previously unselected package {name}." if name not in have
                else f"Preparing to unpack .../{name}_{ver}_amd64.deb ...")
            out(f"Unpacking {name} ({ver}) ...")
            _install(name, ver)
            out(f"Setting up {name} ({ver}) ...")
        return 0
    raise Exit(100, f"E: Invalid operation {cmd} (not simulated by the gpuk8s lab)")


def _held() -> list[str]:
    f = STATE / "apt" / "held"
    return f.read_text().split() if f.exists() else []


def apt_mark(args: list[str]) -> int:
    words = [a for a in args if not a.startswith("-")]
    if not words:
        raise Exit(100, "E: No command given")
    cmd, pkgs = words[0], words[1:]
    held = _held()
    if cmd == "showhold":
        out("\n".join(held)) if held else None
        return 0
    if cmd not in ("hold", "unhold"):
        raise Exit(100, f"E: Invalid operation {cmd}")
    if not is_root():
        raise Exit(100, "E: Could not create temporary file for /var/lib/apt/extended_states - "
                        "mkstemp (13: Permission denied)")
    have = _installed()
    for p in pkgs:
        if p not in have:
            raise Exit(100, f"E: Can't select installed nor candidate version from package '{p}' "
                            "as it has neither of them")
        if cmd == "hold":
            out(f"{p} was already set on hold." if p in held else f"{p} set on hold.")
            if p not in held:
                held.append(p)
        else:
            out(f"Canceled hold on {p}." if p in held else f"{p} was already not on hold.")
            if p in held:
                held.remove(p)
    write(STATE / "apt" / "held", "".join(h + "\n" for h in held))
    return 0


def dnf(args: list[str]) -> int:
    opts = [a for a in args if a.startswith("-")]
    words = [a for a in args if not a.startswith("-")]
    if not words:
        raise Exit(1, "usage: dnf [options] COMMAND")
    cmd, pkgs = words[0], words[1:]
    if cmd in ("makecache", "check-update"):
        cmd = "makecache"
    if cmd not in ("install", "makecache"):
        raise Exit(1, f"No such command: {cmd}. (not simulated by the gpuk8s lab)")
    if cmd == "install" and not is_root():
        raise Exit(1, "Error: This command has to be run with superuser privileges (under the root user "
                      "on most systems).")
    repos = _sources("yum")
    for url, _, rid in repos:
        if not _rpm_metadata_exists(url):
            shown = url.replace("$releasever", _releasever()).replace("$basearch", "x86_64").rstrip("/")
            raise Exit(1, f"Errors during downloading metadata for repository '{rid}':\n  - Status code: 404 for "
                          f"{shown}/repodata/repomd.xml (IP: 198.51.100.7)\nError: Failed to download metadata for "
                          f"repo '{rid}': Cannot download repomd.xml: Cannot download repodata/repomd.xml: All "
                          "mirrors were tried")
    if cmd == "makecache":
        out("Metadata cache created.")
        return 0
    if not {"-y", "--assumeyes"} & set(opts):
        raise Exit(1, "", "Is this ok [y/N]: Operation aborted.")
    disable = any(o.startswith("--disableexcludes=") and o.split("=", 1)[1] in ("kubernetes", "all")
                  for o in opts)
    cat = _catalog([u for u, _, _ in repos])
    if not disable:
        for _, exclude, _ in repos:
            for name in exclude.split():
                cat.pop(name, None)
    reqs = []
    for p in pkgs:
        p = FILE_PROVIDES.get(p, p)
        name = p
        ver = None
        for cand in sorted(cat, key=len, reverse=True):
            if p == cand or p.startswith(cand + "-"):
                name, ver = cand, (p[len(cand) + 1:] or None) if p != cand else None
                break
        if ver is not None and not ver.endswith("*"):
            ver += "*"   # `kubelet-1.36.2` matches 1.36.2-150500.1.1
        reqs.append((name, ver))
    picks = _resolve(reqs, cat, apt=False)
    out("Dependencies resolved.")
    have = _installed()
    for name, ver in picks:
        if have.get(name) == ver:
            out(f"Package {name}-{ver}.x86_64 is already installed.")
            continue
        out(f"  Installing       : {name}-{ver}.x86_64")
        _install(name, ver)
    out("Complete!")
    return 0


# --------------------------------------------------------------------------- small tools

KNOWN_HOSTS = ("download.docker.com", "pkgs.k8s.io", "raw.githubusercontent.com", "github.com",
               "prod-cdn.packages.k8s.io")


def gpg(args: list[str]) -> int:
    if "--dearmor" not in args:
        raise Exit(2, "gpg: gpuk8s lab simulator handles only --dearmor")
    outfile = args[args.index("-o") + 1] if "-o" in args else None
    data = sys.stdin.buffer.read()
    if b"BEGIN PGP" not in data:
        raise Exit(2, "gpg: no valid OpenPGP data found.")
    binary = b"\x99\x01\x0d" + hashlib.sha256(data).digest()
    if outfile:
        if Path(outfile).exists() and "--yes" not in args:
            raise Exit(2, f"File '{outfile}' exists. Overwrite? (y/N) gpg: signal Interrupt caught ... exiting")
        write(outfile, binary)
    else:
        sys.stdout.buffer.write(binary)
    return 0


def _bridge_tmpfs_mounted() -> bool:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if line.split()[4] == "/proc/sys/net/bridge":
            return True
    return False


def modprobe(args: list[str]) -> int:
    mods = [a for a in args if not a.startswith("-")]
    if not is_root():
        raise Exit(1, f"modprobe: ERROR: could not insert '{mods[0] if mods else ''}': Operation not permitted")
    for m in mods:
        m = m.replace("-", "_")
        if m not in ("overlay", "br_netfilter", "nf_conntrack", "ip_vs", "nvidia", "nouveau"):
            raise Exit(1, f"modprobe: FATAL: Module {m} not found in directory /lib/modules/{os.uname().release}")
        if m in ("nvidia",):
            raise Exit(1, f"modprobe: FATAL: Module {m} not found in directory /lib/modules/{os.uname().release}")
        d = Path("/sys/module") / m
        d.mkdir(parents=True, exist_ok=True)
        (d / "initstate").write_text("live\n")
        if m == "overlay":
            fs = Path("/proc/filesystems").read_text()
            if "\toverlay\n" not in fs:
                Path("/proc/filesystems").write_text(fs + "nodev\toverlay\n")
        if m == "br_netfilter" and _bridge_tmpfs_mounted():
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.umount2(b"/proc/sys/net/bridge", 2) != 0:  # MNT_DETACH
                raise Exit(1, f"modprobe: lab could not expose bridge sysctls (errno {ctypes.get_errno()})")
    return 0


SYSCTL_ALLOWED = ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables",
                  "net.bridge.bridge-nf-call-ip6tables", "net.ipv6.conf.all.forwarding")


def _sysctl_set(key: str, value: str) -> str | None:
    key = key.strip().replace("/", ".")
    if key not in SYSCTL_ALLOWED:
        return f"sysctl: the gpuk8s lab does not apply {key} (only {', '.join(SYSCTL_ALLOWED)})"
    p = Path("/proc/sys/" + key.replace(".", "/"))
    if not p.exists():
        return f"sysctl: cannot stat {p}: No such file or directory"
    if not is_root():
        return f"sysctl: permission denied on key \"{key}\""
    p.write_text(value.strip() + "\n")
    return None


def sysctl(args: list[str]) -> int:
    """`sysctl KEY`, `sysctl -w KEY=VALUE` (`--system` is the sh wrapper's, sim/sysctl)."""
    names = [a for a in args if not a.startswith("-")]
    quiet = "-n" in args or "--values" in args
    write_mode = "-w" in args or any("=" in a for a in names)
    rc = 0
    for a in names:
        if write_mode and "=" in a:
            k, v = a.split("=", 1)
            e = _sysctl_set(k, v)
            if e:
                err(e)
                rc = 255
            else:
                out(f"{k.strip()} = {v.strip()}")
        else:
            v = read_sysctl(a)
            if v is None:
                err(f"sysctl: cannot stat /proc/sys/{a.replace('.', '/')}: No such file or directory")
                rc = 255
            else:
                out(v if quiet else f"{a} = {v}")
    return rc


def swapoff(args: list[str]) -> int:
    if not is_root():
        raise Exit(1, "swapoff: Not superuser.")
    if "-a" in args or "--all" in args:
        lines = Path("/proc/swaps").read_text().splitlines()
        Path("/proc/swaps").write_text(lines[0] + "\n")
        mi = Path("/proc/meminfo").read_text()
        mi = re.sub(r"^(Swap(?:Total|Free):\s+)\d+", lambda m: m.group(1) + "0", mi, flags=re.M)
        Path("/proc/meminfo").write_text(mi)
        return 0
    raise Exit(1, "swapoff: the gpuk8s lab simulates only `swapoff -a`")


CONTAINERD_CONFIG = Path("/etc/containerd/config.toml")


def _containerd_file(major: int) -> dict | None:
    """The config file as this containerd loads it (None when absent), migrated to the version
    the binary runs with; Exit (the daemon does not start) where the real one refuses it."""
    if not CONTAINERD_CONFIG.exists():
        return None
    try:
        data = tomllib.loads(CONTAINERD_CONFIG.read_text())
    except tomllib.TOMLDecodeError as e:
        raise Exit(1, f"containerd: failed to load TOML: {CONTAINERD_CONFIG}: {e}")
    version = data.get("version", 0)
    if not isinstance(version, int):
        raise Exit(1, f"containerd: failed to load TOML: {CONTAINERD_CONFIG}: toml: cannot decode TOML "
                      f"{type(version).__name__} into struct field config.Config.Version of type int")
    if major >= 2:
        return _load_v2x(data, version)
    return _load_17(data, version)


def _load_v2x(data: dict, version: int) -> dict:
    """containerd 2.x (cmd/containerd/server/config/config.go, v2.1.x): files of an older version
    are migrated, never refused: version 0 counts as 1, and v1Migrate gives short plugin names
    their full URI ("cri" -> "io.containerd.grpc.v1.cri", ...) in `plugins`, `disabled_plugins`
    and `required_plugins`; then ValidateVersion refuses a newer version and any disabled or
    required plugin name without a dot (which a version 2 or 3 file keeps as written)."""
    top = _containerd_config_version()
    if version > top:
        raise Exit(1, f"containerd: failed to load TOML from {CONTAINERD_CONFIG}: expected containerd config "
                      f"version equal to or less than `{top}`, got `{version}`")
    if version <= 1:
        data["plugins"] = {_v1_plugin_uri(k): v for k, v in (data.get("plugins") or {}).items()}
        for key in ("disabled_plugins", "required_plugins"):
            if isinstance(data.get(key), list):
                data[key] = [_v1_plugin_uri(str(p)) for p in data[key]]
    for key, what in (("disabled_plugins", "disabled"), ("required_plugins", "required")):
        for p in data.get(key) or []:
            if "." not in str(p):
                raise Exit(1, f"containerd: failed to load TOML from {CONTAINERD_CONFIG}: invalid {what} plugin "
                              f"URI \"{p}\" expect io.containerd.x.vx")
    if version <= 2:
        _migrate_v2_to_v3(data.setdefault("plugins", {}))
    if version <= 3 < top:
        _service_migrate(data)
    data["version"] = top
    return data


def _service_migrate(data: dict) -> None:
    """containerd 2.3's migration of a version 3 (or older) file to 4 (serviceMigrate in
    cmd/containerd/server/config/config.go, v2.3.4): the top-level [grpc], [ttrpc], [debug]
    address and [metrics] move into the io.containerd.server.v1.* plugins (and grpc_histogram into
    io.containerd.metrics.v1.grpc-prometheus) unless the file already configures those plugins;
    an unset ttrpc address becomes the grpc address + ".ttrpc" with its uid/gid."""
    plugins = data.setdefault("plugins", {})
    grpc, ttrpc = data.pop("grpc", None) or {}, data.pop("ttrpc", None) or {}
    metrics, debug = data.pop("metrics", None) or {}, data.get("debug") or {}
    if debug.get("address") and "io.containerd.server.v1.debug" not in plugins:
        plugins["io.containerd.server.v1.debug"] = {k: debug.pop(k, 0 if k != "address" else "")
                                                    for k in ("address", "uid", "gid")}
    addr, uid, gid = grpc.get("address", ""), grpc.get("uid", 0), grpc.get("gid", 0)
    sizes = {k: grpc[k] for k in ("max_recv_message_size", "max_send_message_size") if grpc.get(k)}
    if (addr or uid or gid or sizes) and "io.containerd.server.v1.grpc" not in plugins:
        plugins["io.containerd.server.v1.grpc"] = (
            {"address": addr, "uid": uid, "gid": gid} if addr else
            {k: v for k, v in (("uid", uid), ("gid", gid)) if v}) | sizes
    if grpc.get("tcp_address") and "io.containerd.server.v1.grpc-tcp" not in plugins:
        plugins["io.containerd.server.v1.grpc-tcp"] = {"address": grpc["tcp_address"]} | {
            new: grpc[old] for old, new in (("tcp_tls_ca", "tls_ca"), ("tcp_tls_cert", "tls_cert"),
                                            ("tcp_tls_key", "tls_key"),
                                            ("tcp_tls_common_name", "tls_common_name")) if grpc.get(old)} | sizes
    if "io.containerd.server.v1.ttrpc" not in plugins:
        t_addr, t_uid, t_gid = ttrpc.get("address", ""), ttrpc.get("uid", 0), ttrpc.get("gid", 0)
        if not t_addr and addr:
            t_addr, t_uid, t_gid = addr + ".ttrpc", t_uid or uid, t_gid or gid
        if t_addr or t_uid or t_gid:
            plugins["io.containerd.server.v1.ttrpc"] = {"address": t_addr, "uid": t_uid, "gid": t_gid}
    if metrics.get("grpc_histogram") and "io.containerd.metrics.v1.grpc-prometheus" not in plugins:
        plugins["io.containerd.metrics.v1.grpc-prometheus"] = {"grpc_histogram": True}
    if metrics.get("address") and "io.containerd.server.v1.metrics" not in plugins:
        plugins["io.containerd.server.v1.metrics"] = {"address": metrics["address"]}


# v1MigratePluginName's table (cmd/containerd/server/config/config.go, containerd v2.1): the plugin
# ids version 1 files used; other short names become io.containerd.grpc.v1.<name>.
_V1_PLUGINS = {"cri": "io.containerd.grpc.v1.cri", "cgroups": "io.containerd.monitor.v1.cgroups",
               "linux": "io.containerd.runtime.v1.linux", "scheduler": "io.containerd.gc.v1.scheduler",
               "bolt": "io.containerd.metadata.v1.bolt", "task": "io.containerd.runtime.v2.task",
               "opt": "io.containerd.internal.v1.opt", "restart": "io.containerd.internal.v1.restart",
               "tracing": "io.containerd.internal.v1.tracing", "overlayfs": "io.containerd.snapshotter.v1.overlayfs",
               "native": "io.containerd.snapshotter.v1.native", "devmapper": "io.containerd.snapshotter.v1.devmapper",
               "btrfs": "io.containerd.snapshotter.v1.btrfs", "zfs": "io.containerd.snapshotter.v1.zfs",
               "aufs": "io.containerd.snapshotter.v1.aufs"}


def _v1_plugin_uri(name: str) -> str:
    if "." in name:
        return name
    if name in _V1_PLUGINS:
        return _V1_PLUGINS[name]
    return ("io.containerd.service.v1." if name.endswith("-service") else "io.containerd.grpc.v1.") + name


def _load_17(data: dict, version: int) -> dict:
    """containerd 1.7 (services/server/config/config.go, v1.7.x): version 1 files are read with
    their short plugin ids (a deprecation warning); in a version 2 file ValidateV2 refuses any
    plugin key, disabled or required plugin with fewer than four dot-separated parts ("invalid
    plugin key URI ... expect io.containerd.x.vx") and containerd exits; version 3 is refused
    ("containerd config version `3` is not supported, the max version is `2`", as quoted in
    canonical/microk8s#4921)."""
    if version > 2:
        raise Exit(1, f"containerd: containerd config version `{version}` is not supported, the max version is `2`, "
                      "use `containerd config default` to generate a new config or manually revert to version `2`")
    if version <= 1:
        data["plugins"] = {("io.containerd.grpc.v1." + k if k == "cri" else k): v
                           for k, v in (data.get("plugins") or {}).items()}
        data["disabled_plugins"] = [_V1_PLUGINS.get(str(p), str(p)) for p in data.get("disabled_plugins") or []]
        data["version"] = 2
        return data
    for key, what in (("disabled_plugins", "disabled plugin URI"), ("required_plugins", "required plugin URI"),
                      ("plugins", "plugin key URI"), ("proxy_plugins", "proxy plugin key URI")):
        for p in data.get(key) or []:
            if len(str(p).split(".")) < 4:
                raise Exit(1, f"containerd: failed to load TOML from {CONTAINERD_CONFIG}: invalid {what} \"{p}\" "
                              "expect io.containerd.x.vx")
    return data


def _toml_kind(v) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "table"
    return type(v).__name__


def _type_mismatch(have: dict, default: dict, path: str) -> str | None:
    """The first key whose TOML type differs from the default's (runtimes are checked against
    the default runc runtime's table)."""
    for k, v in have.items():
        ref = default.get(k)
        if ref is None and path.endswith(".runtimes") and isinstance(default.get("runc"), dict):
            ref = default["runc"]
        if ref is None:
            continue
        if isinstance(ref, dict) and isinstance(v, dict):
            bad = _type_mismatch(v, ref, f"{path}.{k}")
            if bad:
                return bad
        elif _toml_kind(v) != _toml_kind(ref):
            return (f"toml: cannot decode TOML {_toml_kind(v)} into struct field {path}.{k} "
                    f"of type {_toml_kind(ref)}")
    return None


def cri_plugin_error(data: dict | None, major: int) -> str | None:
    """Why containerd, running, skips its CRI plugin (None when CRI is served).

    - the plugin is disabled (the containerd.io package's own config.toml: disabled_plugins = ["cri"]);
    - its configuration does not decode: containerd logs "failed to load plugin
      io.containerd.grpc.v1.cri" and carries on without CRI (containerd/containerd#4574 and #5306
      quote it, with kubeadm's "[ERROR CRI] ... unknown service" that follows). A value of the wrong
      type (`SystemdCgroup = 'true'`, `enable_cdi = "true"`) is such a value: the plugin's config
      struct has typed fields. Inside a runtime's `options` containerd 1.x decodes the value only
      when a pod starts ("failed to generate runtime options", pkg/cri/server/sandbox_run.go), so
      the node is as broken; the lab reports it at start-up for every version.
    """
    if data is None:
        return None
    cri_ids = ("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images")
    for p in data.get("disabled_plugins") or []:
        if p in cri_ids:
            return f'msg="failed to load plugin" error="disabled" id={p}'
    default = _native_default_data(major)
    # runc's options decode into a proto message whose systemd_cgroup is a bool in every release
    # (api/types/runc/options/oci.proto), also where `config default` does not print the key
    # (2.0.0-2.0.6, 2.1.0-2.1.4).
    for pid in cri_ids[:2]:
        runc = ((((default.get("plugins") or {}).get(pid) or {}).get("containerd") or {})
                .get("runtimes") or {}).get("runc")
        if isinstance(runc, dict) and isinstance(runc.setdefault("options", {}), dict):
            runc["options"].setdefault("SystemdCgroup", False)
    plugins = data.get("plugins") or {}
    for pid in (cri_ids if major >= 2 else cri_ids[:1]):
        have, ref = plugins.get(pid), (default.get("plugins") or {}).get(pid) or {}
        if have is not None and not isinstance(have, dict):
            return f'msg="failed to load plugin" error="toml: cannot decode TOML {_toml_kind(have)} into a table" id={pid}'
        bad = _type_mismatch(have or {}, ref, "plugins." + pid)
        if bad:
            return f'level=warning msg="failed to load plugin {pid}" error="invalid plugin config: {bad}"'
    return None


def _native_default_data(major: int) -> dict:
    try:
        return tomllib.loads((STATE / "containerd" / "default.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def containerd_check() -> int:
    """Used by the systemctl simulator on (re)start of containerd: does the config load? What it
    loaded (CRI served or skipped) is kept until the next start, as a running daemon keeps it."""
    major = _containerd_major()
    try:
        data = _containerd_file(major)
    except Exit as e:
        _journal("containerd", e.err)
        return 1
    why = cri_plugin_error(data, major)
    if why:
        _journal("containerd", why)
    write(STATE / "containerd" / "loaded.json", json.dumps({"cri_error": why}) + "\n")
    return 0


_CRI_V2 = "io.containerd.grpc.v1.cri"
_CRI_RUNTIME = "io.containerd.cri.v1.runtime"
_CRI_IMAGES = "io.containerd.cri.v1.images"
# Keys of the version 2 CRI table that containerd 2.x moves to the images plugin; what stays in
# io.containerd.grpc.v1.cri is the CRI server's own configuration.
_TO_IMAGES = ("registry", "image_decryption", "max_concurrent_downloads", "image_pull_progress_timeout",
              "image_pull_with_sync_fs", "stats_collect_period")
_SERVER_KEYS = ("disable_tcp_service", "stream_server_address", "stream_server_port", "stream_idle_timeout",
                "enable_tls_streaming", "x509_key_pair_streaming")
_SNAPSHOT_KEYS = ("snapshotter", "disable_snapshot_annotations", "discard_unpacked_layers")


def _containerd_config_version() -> int:
    """The newest config version this containerd reads and writes: ConfigVersion of
    version/version.go (3 in v2.0.0-v2.2.x, 4 from v2.3.0); 1.x: 2 (services/server/config)."""
    p = STATE / "containerd" / "version_line"
    line = p.read_text() if p.exists() else ""
    m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", line.split(" ", 2)[-1] if line else "")
    major, minor = (int(m.group(1)), int(m.group(2))) if m else (2, 1)
    return 2 if major < 2 else 4 if (major, minor) >= (2, 3) else 3


def _containerd_major() -> int:
    p = STATE / "containerd" / "version_line"
    line = p.read_text() if p.exists() else ""
    m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", line.split(" ", 2)[-1] if line else "")
    return int(m.group(1)) if m else 2


def _migrate_v2_to_v3(plugins: dict) -> None:
    """What containerd 2.x does to a version 2 file when it loads it (its runtime and images
    plugins' config migrations): the CRI table is split into io.containerd.cri.v1.runtime and
    io.containerd.cri.v1.images; a value already in the new tables wins."""
    src = plugins.get(_CRI_V2)
    if not isinstance(src, dict):
        return
    runtime = plugins.setdefault(_CRI_RUNTIME, {})
    for k, v in src.items():
        if k not in ("cni", "containerd", "sandbox_image") + _TO_IMAGES + _SERVER_KEYS:
            runtime.setdefault(k, v)
    if isinstance(src.get("cni"), dict):
        cni = runtime.setdefault("cni", {})
        for k, v in src["cni"].items():
            if k == "bin_dir":
                if not cni.get("bin_dirs"):
                    cni["bin_dirs"] = [v]
            else:
                cni.setdefault(k, v)
    # The images plugin's migration (plugins/cri/images/plugin.go configMigration/migrateConfig,
    # containerd v2.1): sandbox_image -> pinned_images.sandbox and the image keys move whatever
    # else the table holds; only the snapshotter keys need its containerd section.
    images = plugins.setdefault(_CRI_IMAGES, {})
    if "sandbox_image" in src:
        images.setdefault("pinned_images", {})["sandbox"] = src["sandbox_image"]
    for k in _TO_IMAGES:
        if k in src:
            images[k] = src[k]
    ctrd = src.get("containerd")
    if isinstance(ctrd, dict):
        new = runtime.setdefault("containerd", {})
        for k, v in ctrd.items():
            if k not in _SNAPSHOT_KEYS:
                new.setdefault(k, v)
        for rt in (new.get("runtimes") or {}).values():
            if isinstance(rt, dict) and "sandbox_mode" in rt and "sandboxer" not in rt:
                rt["sandboxer"] = rt.pop("sandbox_mode")
        for k in _SNAPSHOT_KEYS:
            if k in ctrd:
                images[k] = ctrd[k]
    plugins[_CRI_V2] = {k: v for k, v in src.items() if k in _SERVER_KEYS}


def _merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def containerd_effective() -> dict | None:
    """The configuration containerd runs with (defaults + migrated file), None when it would not start."""
    major = _containerd_major()
    try:
        default = tomllib.loads((STATE / "containerd" / "default.toml").read_text())
        data = _containerd_file(major)
    except (OSError, tomllib.TOMLDecodeError, Exit):
        return None
    return _merged(default, data) if data is not None else default


def containerd_sandbox_image(eff: dict) -> str | None:
    plugins = eff.get("plugins") or {}
    return (((plugins.get(_CRI_IMAGES) or {}).get("pinned_images") or {}).get("sandbox")
            or (plugins.get(_CRI_V2) or {}).get("sandbox_image"))


def containerd_systemd_cgroup(eff: dict) -> bool:
    plugins = eff.get("plugins") or {}
    for pid in (_CRI_RUNTIME, _CRI_V2):
        runc = (((plugins.get(pid) or {}).get("containerd") or {}).get("runtimes") or {}).get("runc") or {}
        if "options" in runc:
            return (runc.get("options") or {}).get("SystemdCgroup") is True
    return False


def containerd_dump() -> int:
    """`containerd config dump`: the configuration the daemon runs with — its defaults with the
    file laid over them, an older file migrated (version 0/1 and 2 to 3 by containerd 2.x), and
    `version` set to the binary's own (drop-ins under `imports` are not simulated)."""
    major = _containerd_major()
    default = (STATE / "containerd" / "default.toml").read_text()
    data = _containerd_file(major)
    if data is None:
        out(default)
        return 0
    dumped = _merged(tomllib.loads(default), data)
    dumped["version"] = _containerd_config_version()
    patterns: list[str] = []
    if data.get("imports"):   # drop-ins (the GPU Operator's toolkit writes one): gpuop.py
        import gpuop
        gpuop.sync_node()
        if not Path(gpuop.DROP_IN).exists():
            patterns = None   # type: ignore[assignment]  # the toolkit may still write it: no memo
        root_version = tomllib.loads(CONTAINERD_CONFIG.read_text()).get("version", 0)
        dumped = gpuop.containerd_imports(dumped, root_version if isinstance(root_version, int) else 0)
        if patterns is not None:
            patterns = [x if os.path.isabs(x) else os.path.join(str(CONTAINERD_CONFIG.parent), x)
                        for x in data.get("imports") or [] if isinstance(x, str)]
    text = importlib.import_module("tomli_w").dumps(dumped)
    if patterns is not None and all("\n" not in x and " " not in x for x in patterns):
        _memo_dump(patterns, text)
    out(text)
    return 0


DUMP_MEMO = STATE / "containerd" / "dump-memo"


def _memo_dump(patterns: list[str], text: str) -> None:
    """Remember this dump with what it was computed from, for the sh wrapper (sim/containerd) to
    print again while none of it changed: the dump is a function of the binary's version, its
    defaults, config.toml and the files its `imports` globs match now (containerd v2.1.4
    cmd/containerd/server/config/config.go LoadConfig reads nothing else). The wrapper recomputes
    the key (cksum over those files and the glob matches) on every call, so an edited, added or
    removed file is a miss and comes here again. It saves this simulator's Python start-up, which
    costs more than the real Go binary's `config dump`."""
    DUMP_MEMO.mkdir(parents=True, exist_ok=True)
    (DUMP_MEMO / "patterns").write_text("".join(x + "\n" for x in patterns))
    (DUMP_MEMO / "out").write_text(text)
    (DUMP_MEMO / "key").unlink(missing_ok=True)   # the wrapper writes the key it computes


def _journal(unit: str, line: str) -> None:
    f = STATE / "journal" / unit
    f.parent.mkdir(parents=True, exist_ok=True)
    with open(f, "a") as fh:
        fh.write(f"{time.strftime('%b %d %H:%M:%S')} {host_state().get('hostname') or host_name()} "
                 f"{unit}[{os.getpid()}]: {line}\n")


def journalctl(args: list[str]) -> int:
    unit = None
    n = 10
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-u", "--unit"):
            unit = args[i + 1]
            i += 1
        elif a.startswith("--unit="):
            unit = a.split("=", 1)[1]
        elif a in ("-n", "--lines"):
            n = int(args[i + 1])
            i += 1
        elif a.startswith("--lines="):
            n = int(a.split("=", 1)[1])
        i += 1
    if not unit:
        raise Exit(1, "journalctl: the gpuk8s lab simulates only `journalctl -u UNIT`")
    unit = unit.removesuffix(".service")
    lines = []
    f = STATE / "journal" / unit
    if f.exists():
        lines = f.read_text().splitlines()
    if unit == "kubelet":
        lines += _kubelet_journal()
    if not lines:
        out("-- No entries --")
        return 0
    out("\n".join(lines[-n:]))
    return 0


def _kubelet_journal() -> list[str]:
    ts = time.strftime("%b %d %H:%M:%S")
    me = host_state().get("hostname") or host_name()
    pre = f"{ts} {me} kubelet[2107]: "
    if not Path("/usr/bin/kubelet").exists() and not version_file("kubelet"):
        return []
    if swap_on():
        return [pre + 'E0820 10:00:01.000000    2107 run.go:72] "command failed" err="failed to run Kubelet: '
                'running with swap on is not supported, please disable swap or set --fail-swap-on flag to false"']
    if not Path("/etc/kubernetes/kubelet.conf").exists():
        return [pre + 'E0820 10:00:01.000000    2107 run.go:72] "command failed" err="failed to load kubelet '
                'config file, path: /var/lib/kubelet/config.yaml, error: failed to load Kubelet config file '
                '/var/lib/kubelet/config.yaml, error failed to read kubelet config file '
                '\\"/var/lib/kubelet/config.yaml\\", error: open /var/lib/kubelet/config.yaml: no such file or directory"']
    with cluster_lock(shared=True) as c:
        node = next((nd for nd in c.get("nodes", {}).values() if nd.get("host") == host_name()), None)
        ready = bool(node) and node_ready(c, node)[0] == "True"
    if ready:
        return [pre + 'I0820 10:00:05.000000    2107 kubelet_node_status.go:75] "Successfully registered node"',
                pre + 'I0820 10:00:09.000000    2107 kubelet_node_status.go:497] "Fast updating node status as it just became ready"']
    return [pre + 'E0820 10:00:05.000000    2107 kubelet.go:3117] "Container runtime network not ready" '
            'networkReady="NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns '
            'error: cni plugin not initialized"',
            pre + 'E0820 10:00:06.000000    2107 pod_workers.go:1301] "Error syncing pod, skipping" '
            'err="network is not ready: container runtime network not ready: NetworkReady=false '
            'reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"']


# --------------------------------------------------------------------------- the shared cluster

@contextmanager
def cluster_lock(shared: bool = False):
    SHARED.mkdir(parents=True, exist_ok=True)
    with open(CLUSTER_LOCK, "a+") as lk:
        fcntl.flock(lk, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        c = json.loads(CLUSTER.read_text()) if CLUSTER.exists() else {}
        before = None if shared else json.dumps(c, sort_keys=True)   # a shared lock never writes
        yield c
        if not shared and json.dumps(c, sort_keys=True) != before:
            tmp = CLUSTER.with_name(f"cluster.json.{os.getpid()}")
            tmp.write_text(json.dumps(c, indent=1, sort_keys=True))
            os.replace(tmp, CLUSTER)


def new_ca(name: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    t = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(t - dt.timedelta(minutes=5)).not_valid_after(t + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=True, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=True, crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()).decode())


def ca_hash(pem: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    cert = x509.load_pem_x509_certificate(pem.encode())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def host_units_of(host: str) -> dict[str, list[str]]:
    f = other_host_dir(host) / "gpuk8s-lab" / "units"
    u = {}
    if f.exists():
        for line in f.read_text().splitlines():
            p = line.split()
            if len(p) == 3:
                u[p[0]] = p[1:]
    return u


def host_fixture_of(host: str) -> dict:
    try:
        return json.loads((other_host_dir(host) / "gpuk8s-lab" / "state.json").read_text())
    except OSError:
        return {}


def calico_status(c: dict) -> dict:
    """{'ok': bool, 'items': {name: (available, degraded, message)}} from the applied objects."""
    objs = c.get("objects", {})
    inst = objs.get("installation")
    if not objs.get("operator") or not objs.get("crds") or not inst:
        return {"ok": False, "items": {}, "reason": "no Installation" if objs.get("operator") else "no operator"}
    pod_nets = [ipaddress.ip_network(p.strip(), strict=False) for p in c.get("pod_subnet", "").split(",") if p.strip()]
    pools = (((inst.get("spec") or {}).get("calicoNetwork") or {}).get("ipPools")) or []
    bad = None
    for p in pools:
        try:
            net = ipaddress.ip_network(p.get("cidr", ""), strict=False)
        except ValueError:
            bad = f"IPPool {p.get('cidr')} is not a valid CIDR"
            break
        if not any(net.version == pn.version and net.subnet_of(pn) for pn in pod_nets):
            bad = (f"Could not resolve CalicoNetwork IPPool and kubeadm configuration: IPPool {p.get('cidr')} "
                   f"is not within the platform's configured pod network CIDR(s) "
                   f"[{' '.join(str(n) for n in pod_nets)}]")
            break
    settled = now() - objs.get("installation_applied", 0) >= calico_delay()
    items = {}
    names = ["apiserver", "calico", "ippools"] + [n for n in ("goldmane", "whisker") if objs.get(n)]
    for n in names:
        if bad and n in ("calico", "ippools"):
            items[n] = ("False", "True", bad)
        elif bad and n != "calico":
            items[n] = ("False", "False", "Waiting for calico to be available")
        elif not settled:
            items[n] = ("False", "False", "Not all pods are running")
        else:
            items[n] = ("True", "False", "All Objects Available")
    return {"ok": not bad and settled, "items": items, "bad": bad}


def node_ready(c: dict, node: dict) -> tuple[str, str, str]:
    """(status, reason, message) of the node's Ready condition."""
    u = host_units_of(node["host"])
    fxs = host_fixture_of(node["host"])
    if u.get("kubelet.service", ["inactive"])[0] != "active":
        return "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status."
    if u.get("containerd.service", ["inactive"])[0] != "active":
        return ("False", "KubeletNotReady", "container runtime is down, PLEG is not healthy: pleg was last seen "
                "active 3m0s ago; threshold is 3m0s")
    if node.get("pods_broken"):
        return ("False", "KubeletNotReady", node["pods_broken"])
    if fxs.get("kubelet_never_ready"):
        return ("False", "KubeletNotReady", "container runtime network not ready: NetworkReady=false "
                "reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized")
    if not calico_status(c)["ok"]:
        return ("False", "KubeletNotReady", "container runtime network not ready: NetworkReady=false "
                "reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized")
    return "True", "KubeletReady", "kubelet is posting ready status"


# --------------------------------------------------------------------------- kubeadm

V1BETA4_FIELDS = {
    "InitConfiguration": {"apiVersion", "kind", "bootstrapTokens", "certificateKey", "localAPIEndpoint",
                          "nodeRegistration", "skipPhases", "patches", "dryRun", "timeouts"},
    "ClusterConfiguration": {"apiVersion", "kind", "etcd", "networking", "kubernetesVersion",
                             "controlPlaneEndpoint", "apiServer", "controllerManager", "scheduler", "dns",
                             "proxy", "certificatesDir", "imageRepository", "featureGates", "clusterName",
                             "encryptionAlgorithm", "certificateValidityPeriod",
                             "caCertificateValidityPeriod"},
    "JoinConfiguration": {"apiVersion", "kind", "dryRun", "nodeRegistration", "caCertPath", "discovery",
                          "controlPlane", "skipPhases", "patches", "timeouts"},
    "ResetConfiguration": {"apiVersion", "kind", "cleanupTmpDir", "certificatesDir", "criSocket", "dryRun",
                           "force", "ignorePreflightErrors", "skipPhases", "unmountFlags"},
    "UpgradeConfiguration": {"apiVersion", "kind", "apply", "diff", "node", "plan", "timeouts"},
}
# v1beta4 (cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go, k8s v1.31+): the upgrade settings are their
# own kind (no ClusterConfiguration.upgrade) and discovery's timeout moved to timeouts.discovery.
V1BETA3_FIELDS = {
    "InitConfiguration": V1BETA4_FIELDS["InitConfiguration"] - {"dryRun", "timeouts"},
    "ClusterConfiguration": V1BETA4_FIELDS["ClusterConfiguration"] - {"encryptionAlgorithm",
                                                                      "certificateValidityPeriod",
                                                                      "caCertificateValidityPeriod"},
    "JoinConfiguration": V1BETA4_FIELDS["JoinConfiguration"] - {"dryRun", "timeouts"},
}
SUB_FIELDS = {
    "nodeRegistration": {"name", "criSocket", "taints", "kubeletExtraArgs", "ignorePreflightErrors",
                         "imagePullPolicy", "imagePullSerial"},
    "localAPIEndpoint": {"advertiseAddress", "bindPort"},
    "networking": {"serviceSubnet", "podSubnet", "dnsDomain"},
    "discovery": {"bootstrapToken", "file", "tlsBootstrapToken"},            # + "timeout" in v1beta3
    "bootstrapToken": {"token", "apiServerEndpoint", "caCertHashes", "unsafeSkipCAVerification"},
    "controlPlane": {"localAPIEndpoint", "certificateKey"},
    "bootstrapTokens[]": {"token", "description", "ttl", "expires", "usages", "groups"},
    "taints[]": {"key", "value", "effect", "timeAdded"},
}
OTHER_KINDS = {("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"),
               ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration")}


# constants.PauseVersion of each kubeadm minor (cmd/kubeadm/app/constants/constants.go at
# v1.33.0: "3.10"; v1.34.0 onwards: "3.10.1"). The etcd and CoreDNS tags are not modelled per minor.
PAUSE_BY_MINOR = {33: "3.10"}


def kubeadm_pause_image() -> str:
    return f"registry.k8s.io/pause:{PAUSE_BY_MINOR.get(_kubeadm_minor(), '3.10.1')}"


# KubeletConfiguration (kubelet.config.k8s.io/v1beta1, staging/src/k8s.io/kubelet/config/v1beta1/types.go
# at v1.35): field -> JSON type. kubeadm decodes the document into it (a value of another type is
# fatal: "json: cannot unmarshal ...") and checks it strictly, where an unknown field is only a
# warning (cmd/kubeadm/app/componentconfigs: strict.VerifyUnmarshalStrict + klog.Warning).
_S, _B, _I, _M, _L, _F = "string", "bool", "number", "object", "array", "float"
KUBELET_FIELDS = {
    "apiVersion": _S, "kind": _S, "enableServer": _B, "staticPodPath": _S, "podLogsDir": _S, "syncFrequency": _S,
    "fileCheckFrequency": _S, "httpCheckFrequency": _S, "staticPodURL": _S, "staticPodURLHeader": _M,
    "address": _S, "port": _I, "readOnlyPort": _I, "tlsCertFile": _S, "tlsPrivateKeyFile": _S,
    "tlsCipherSuites": _L, "tlsMinVersion": _S, "rotateCertificates": _B, "serverTLSBootstrap": _B,
    "authentication": _M, "authorization": _M, "registryPullQPS": _I, "registryBurst": _I,
    "imagePullCredentialsVerificationPolicy": _S, "preloadedImagesVerificationAllowlist": _L,
    "eventRecordQPS": _I, "eventBurst": _I, "enableDebuggingHandlers": _B, "enableContentionProfiling": _B,
    "healthzPort": _I, "healthzBindAddress": _S, "oomScoreAdj": _I, "clusterDomain": _S, "clusterDNS": _L,
    "streamingConnectionIdleTimeout": _S, "nodeStatusUpdateFrequency": _S, "nodeStatusReportFrequency": _S,
    "nodeLeaseDurationSeconds": _I, "imageMinimumGCAge": _S, "imageMaximumGCAge": _S,
    "imageGCHighThresholdPercent": _I, "imageGCLowThresholdPercent": _I, "volumeStatsAggPeriod": _S,
    "kubeletCgroups": _S, "systemCgroups": _S, "cgroupRoot": _S, "cgroupsPerQOS": _B, "cgroupDriver": _S,
    "cpuManagerPolicy": _S, "singleProcessOOMKill": _B, "cpuManagerPolicyOptions": _M,
    "cpuManagerReconcilePeriod": _S, "memoryManagerPolicy": _S, "topologyManagerPolicy": _S,
    "topologyManagerScope": _S, "topologyManagerPolicyOptions": _M, "qosReserved": _M,
    "runtimeRequestTimeout": _S, "hairpinMode": _S, "maxPods": _I, "podCIDR": _S, "podPidsLimit": _I,
    "resolvConf": _S, "runOnce": _B, "cpuCFSQuota": _B, "cpuCFSQuotaPeriod": _S, "nodeStatusMaxImages": _I,
    "maxOpenFiles": _I, "contentType": _S, "kubeAPIQPS": _I, "kubeAPIBurst": _I, "serializeImagePulls": _B,
    "maxParallelImagePulls": _I, "evictionHard": _M, "evictionSoft": _M, "evictionSoftGracePeriod": _M,
    "evictionPressureTransitionPeriod": _S, "evictionMaxPodGracePeriod": _I, "evictionMinimumReclaim": _M,
    "mergeDefaultEvictionSettings": _B, "podsPerCore": _I, "enableControllerAttachDetach": _B,
    "protectKernelDefaults": _B, "makeIPTablesUtilChains": _B, "iptablesMasqueradeBit": _I,
    "iptablesDropBit": _I, "featureGates": _M, "failSwapOn": _B, "memorySwap": _M, "containerLogMaxSize": _S,
    "containerLogMaxFiles": _I, "containerLogMaxWorkers": _I, "containerLogMonitorInterval": _S,
    "configMapAndSecretChangeDetectionStrategy": _S, "systemReserved": _M, "kubeReserved": _M,
    "reservedSystemCPUs": _S, "showHiddenMetricsForVersion": _S, "systemReservedCgroup": _S,
    "kubeReservedCgroup": _S, "enforceNodeAllocatable": _L, "allowedUnsafeSysctls": _L, "volumePluginDir": _S,
    "providerID": _S, "kernelMemcgNotification": _B, "logging": _M, "enableSystemLogHandler": _B,
    "enableSystemLogQuery": _B, "shutdownGracePeriod": _S, "shutdownGracePeriodCriticalPods": _S,
    "shutdownGracePeriodByPodPriority": _L, "crashLoopBackOff": _M, "reservedMemory": _L,
    "enableProfilingHandler": _B, "enableDebugFlagsHandler": _B, "seccompDefault": _B,
    "memoryThrottlingFactor": _F, "registerWithTaints": _L, "registerNode": _B, "tracing": _M,
    "localStorageCapacityIsolation": _B, "containerRuntimeEndpoint": _S, "imageServiceEndpoint": _S,
    "failCgroupV1": _B, "userNamespaces": _M,
}
KUBELET_GVK = 'schema.GroupVersionKind{Group:"kubelet.config.k8s.io", Version:"v1beta1", Kind:"KubeletConfiguration"}'


def _json_kind(v) -> str:
    if isinstance(v, bool):
        return _B
    if isinstance(v, (int, float)):
        return _I
    if isinstance(v, str):
        return _S
    if isinstance(v, list):
        return _L
    if isinstance(v, dict):
        return _M
    return "null"


def _check_kubelet_config(doc: dict) -> None:
    for k, v in doc.items():
        want = KUBELET_FIELDS.get(k)
        if want is None:
            err(f'W0820 10:00:00.000000 {os.getpid()} strict.go:54] error unmarshaling configuration {KUBELET_GVK}: '
                f'strict decoding error: unknown field "{k}"')
            continue
        have = _json_kind(v)
        if v is not None and have != want and not (want == _F and have == _I):
            go = {_S: "string", _B: "bool", _I: "int32", _M: "map", _L: "slice", _F: "float64"}[want]
            raise Exit(1, f"error unmarshaling configuration {KUBELET_GVK}: json: cannot unmarshal {have} into Go "
                          f"struct field KubeletConfiguration.{k} of type {go}")


def kubelet_config(kinds: dict) -> dict:
    """/var/lib/kubelet/config.yaml: kubeadm's defaults (cgroupDriver systemd since v1.22) with the
    KubeletConfiguration document laid over them."""
    cfg = {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
           "cgroupDriver": "systemd", "clusterDNS": ["10.96.0.10"], "clusterDomain": "cluster.local",
           "staticPodPath": "/etc/kubernetes/manifests", "rotateCertificates": True}
    cfg.update(kinds.get("KubeletConfiguration") or {})
    return cfg


def _kubeadm_minor() -> int:
    v = version_file("kubeadm") or "1.36.0"
    return int(v.split(".")[1])


def _strict(kind: str, api: str, doc: dict, allowed: set[str]) -> None:
    gvk = f'schema.GroupVersionKind{{Group:"kubeadm.k8s.io", Version:"{api}", Kind:"{kind}"}}'

    def unknown(path: str) -> Exit:
        return Exit(1, f"error unmarshaling configuration {gvk}: strict decoding error: unknown field \"{path}\"")

    for k in doc:
        if k not in allowed:
            raise unknown(k)
    for sub, prefix in (("nodeRegistration", "nodeRegistration"), ("localAPIEndpoint", "localAPIEndpoint"),
                        ("networking", "networking"), ("discovery", "discovery"), ("controlPlane", "controlPlane")):
        val = doc.get(sub)
        if isinstance(val, dict):
            allowed_sub = SUB_FIELDS[sub] | ({"timeout"} if sub == "discovery" and api == "v1beta3" else set())
            for k in val:
                if k not in allowed_sub:
                    raise unknown(f"{prefix}.{k}")
    d = doc.get("discovery") or {}
    if isinstance(d.get("bootstrapToken"), dict):
        for k in d["bootstrapToken"]:
            if k not in SUB_FIELDS["bootstrapToken"]:
                raise unknown(f"discovery.bootstrapToken.{k}")
    cp = doc.get("controlPlane") or {}
    if isinstance(cp.get("localAPIEndpoint"), dict):
        for k in cp["localAPIEndpoint"]:
            if k not in SUB_FIELDS["localAPIEndpoint"]:
                raise unknown(f"controlPlane.localAPIEndpoint.{k}")
    for t in doc.get("bootstrapTokens") or []:
        for k in t:
            if k not in SUB_FIELDS["bootstrapTokens[]"]:
                raise unknown(f"bootstrapTokens[0].{k}")
    nr = doc.get("nodeRegistration") or {}
    for t in nr.get("taints") or []:
        for k in t:
            if k not in SUB_FIELDS["taints[]"]:
                raise unknown(f"nodeRegistration.taints[0].{k}")
        if t.get("effect") not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise Exit(1, f"nodeRegistration.taints[0].effect: Unsupported value: \"{t.get('effect')}\": "
                          'supported values: "NoExecute", "NoSchedule", "PreferNoSchedule"')
    kea = nr.get("kubeletExtraArgs")
    if kea is not None:
        if api == "v1beta4" and not isinstance(kea, list):
            raise Exit(1, f"error unmarshaling configuration {gvk}: json: cannot unmarshal object into Go "
                          "struct field NodeRegistrationOptions.nodeRegistration.kubeletExtraArgs of type "
                          "[]v1beta4.Arg")
        if api == "v1beta3" and not isinstance(kea, dict):
            raise Exit(1, f"error unmarshaling configuration {gvk}: json: cannot unmarshal array into Go "
                          "struct field NodeRegistrationOptions.nodeRegistration.kubeletExtraArgs of type "
                          "map[string]string")


def _validate_certificate_key(kind: str, doc: dict) -> None:
    """ValidateCertificateKey (cmd/kubeadm/app/apis/kubeadm/validation/validation.go): the key must
    hex-decode to constants.CertificateKeySize (32) bytes."""
    for path, key in (("certificateKey", doc.get("certificateKey")),
                      ("controlPlane.certificateKey", (doc.get("controlPlane") or {}).get("certificateKey"))):
        if not key:
            continue
        key = str(key)
        bad = next((ch for ch in key if ch not in "0123456789abcdefABCDEF"), None)
        if bad is not None:
            raise Exit(1, f'{path}: Invalid value: "{key}": certificate key decoding error: '
                          f"encoding/hex: invalid byte: U+{ord(bad):04X} {bad!r}")
        if len(key) % 2:
            raise Exit(1, f'{path}: Invalid value: "{key}": certificate key decoding error: '
                          "encoding/hex: odd length hex string")
        if len(key) // 2 != 32:
            raise Exit(1, f'{path}: Invalid value: "{key}": invalid certificate key size {len(key) // 2}, the key '
                          "must be an AES key of size 32")


def load_config(path: str, want: str) -> dict[str, dict]:
    """Parse a kubeadm --config file strictly; returns {kind: doc}."""
    try:
        text = Path(path).read_text()
        mode = os.stat(path).st_mode & 0o777
    except OSError as e:
        raise Exit(1, f"unable to read config from \"{path}\" : open {path}: {e.strerror.lower()}")
    # Test record of what gpuk8s wrote (it removes the file after use): text and file mode.
    seen = Path("/etc/gpuk8s-lab/kubeadm-seen")
    seen.mkdir(parents=True, exist_ok=True)
    n = len(list(seen.glob("*.json")))
    (seen / f"{n:03d}-{want}.json").write_text(json.dumps({"path": path, "mode": mode, "text": text}))
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise Exit(1, f"error converting YAML to JSON: {e}")
    minor = _kubeadm_minor()
    kinds: dict[str, dict] = {}
    for d in docs:
        if not isinstance(d, dict) or "apiVersion" not in d or "kind" not in d:
            raise Exit(1, "error decoding \"kind\" or \"apiVersion\" from config: Object 'Kind' is missing in "
                          f"'{json.dumps(d)[:200]}'")
        api_full, kind = d["apiVersion"], d["kind"]
        if (api_full, kind) in OTHER_KINDS:
            if kind == "KubeletConfiguration":
                _check_kubelet_config(d)
            kinds[kind] = d
            continue
        group, _, api = api_full.partition("/")
        if group != "kubeadm.k8s.io":
            raise Exit(1, f'no kind "{kind}" is registered for version "{api_full}" in scheme '
                          '"k8s.io/kubernetes/cmd/kubeadm/app/util/config/strict/strict.go:38"')
        table = {"v1beta4": V1BETA4_FIELDS, "v1beta3": V1BETA3_FIELDS if minor < 36 else {}}.get(api)
        if table is None or kind not in table:
            if api in ("v1beta1", "v1beta2"):
                raise Exit(1, f"your configuration file uses an old API spec: \"{api_full}\" (kind: "
                              f"\"{kind}\"). Please use kubeadm v1.22 instead and run 'kubeadm config migrate "
                              "--old-config old.yaml --new-config new.yaml', which will write the new, similar spec "
                              "using a newer API version.")
            raise Exit(1, f'no kind "{kind}" is registered for version "{api_full}" in scheme '
                          '"k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/scheme/scheme.go:31"')
        if api == "v1beta3":
            err(f"W0820 10:00:00.000000 {os.getpid()} common.go:101] your configuration file uses a deprecated API "
                f"spec: \"{api_full}\" (kind: \"{kind}\"). Please use 'kubeadm config migrate --old-config "
                "old-config-file --new-config new-config-file', which will write the new, similar spec using a "
                "newer API version.")
        _strict(kind, api, d, table[kind])
        if kind in kinds:
            raise Exit(1, f"duplicate {kind} document in {path}")
        kinds[kind] = d
    # validation runs once every document is decoded (component configs included)
    for kind, d in kinds.items():
        _validate_certificate_key(kind, d)
    if want == "init":
        if "JoinConfiguration" in kinds:
            raise Exit(1, "unexpected JoinConfiguration in the init configuration")
        if "InitConfiguration" not in kinds and "ClusterConfiguration" not in kinds:
            raise Exit(1, "no InitConfiguration or ClusterConfiguration kind was found in the YAML file")
    if want == "join" and "JoinConfiguration" not in kinds:
        raise Exit(1, f"no JoinConfiguration kind was found in the YAML file {path}")
    return kinds


# The flags kubeadm accepts beside --config (init, join, token create, init phase upload-certs all
# call it): cmd/kubeadm/app/apis/kubeadm/validation/validation.go `ValidateMixedArguments` /
# `isAllowedFlag` (kubernetes commit 00d24de699fe, as in v1.36): config, ignore-preflight-errors,
# dry-run, kubeconfig, node-name, kubeconfig-dir, upload-certs, print-join-command, rootfs, v,
# log-file, yes, and every "--skip-*". Not --certificate-key, --token, --ttl, --description...:
# "can not mix '--config' with arguments %v" lists the others in pflag's (sorted) Visit order.
ALLOWED_WITH_CONFIG = {"config", "ignore-preflight-errors", "dry-run", "kubeconfig", "node-name", "kubeconfig-dir",
                       "upload-certs", "print-join-command", "rootfs", "v", "log-file", "yes"}


def parse_flags(args: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    flags: dict[str, str | bool] = {}
    pos: list[str] = []
    takes_value = {"config", "v", "ignore-preflight-errors", "kubeconfig", "node-name", "rootfs", "log-file",
                   "certificate-key", "skip-phases", "token", "discovery-token-ca-cert-hash",
                   "pod-network-cidr", "control-plane-endpoint", "apiserver-advertise-address",
                   "service-cidr", "kubernetes-version", "cri-socket", "ttl", "description", "groups",
                   "usages", "discovery-token", "tls-bootstrap-token", "apiserver-bind-port"}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and a != "-":
            name = a.lstrip("-")
            if "=" in name:
                name, val = name.split("=", 1)
                flags[name] = val
            elif name in takes_value and i + 1 < len(args):
                flags[name] = args[i + 1]
                i += 1
            else:
                flags[name] = True
        else:
            pos.append(a)
        i += 1
    return flags, pos


def _mixed(flags: dict) -> None:
    if "config" in flags:
        bad = sorted(f for f in flags if f not in ALLOWED_WITH_CONFIG and not f.startswith("skip-"))
        if bad:
            raise Exit(1, "can not mix '--config' with arguments [" + " ".join(bad) + "]")


def _is_ipv4(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).version == 4
    except ValueError:
        return False


def _fatal(phase: str, msg: str) -> Exit:
    return Exit(1, f"error execution phase {phase}: {msg}\nTo see the stack trace of this error execute with "
                   "--v=5 or higher")


def _listening_ports() -> set[int]:
    ports = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            for line in Path(f).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A":
                    ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


def _cri_error() -> str | None:
    u = units()
    have = (STATE / "containerd" / "version_line").exists() and Path("/usr/bin/containerd").exists() \
        or (STATE / "containerd" / "version_line").exists() and Path("/usr/local/bin/containerd").exists()
    sock = "unix:///var/run/containerd/containerd.sock"
    if not have or u.get("containerd.service", ["inactive"])[0] != "active":
        return (f"[ERROR CRI]: could not connect to the container runtime: failed to create new CRI runtime "
                f"service: validate service connection: validate CRI v1 runtime API for endpoint \"{sock}\": "
                f"rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while "
                f"dialing: dial unix /var/run/containerd/containerd.sock: connect: no such file or directory\"")
    loaded = STATE / "containerd" / "loaded.json"
    if loaded.exists():     # what the running daemon loaded at its last start
        why = json.loads(loaded.read_text()).get("cri_error")
    else:                   # never restarted in the lab: it runs with the file as it is
        try:
            why = cri_plugin_error(_containerd_file(_containerd_major()), _containerd_major())
        except Exit:
            why = "config"
    if why:
        return (f"[ERROR CRI]: container runtime is not running: output: time=\"2026-08-20T10:00:00Z\" "
                f"level=fatal msg=\"validate service connection: validate CRI v1 runtime API for endpoint "
                f"\\\"{sock}\\\": rpc error: code = Unimplemented desc = unknown service "
                f"runtime.v1.RuntimeService\"\n, error: exit status 1")
    return None


def _cgroup_v1() -> bool:
    return not Path("/sys/fs/cgroup/cgroup.controllers").exists()


def _minor_of(v: str | None) -> int | None:
    m = re.match(r"v?(\d+)\.(\d+)", v or "")
    return int(m.group(2)) if m else None


def _no_proxy_match(host: str, entries: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None and ip.is_loopback or host == "localhost":
        return True          # httpproxy never proxies loopback
    for e in (x.strip().lower() for x in entries):
        if not e:
            continue
        if e == "*":
            return True
        if ip is not None and "/" in e:
            try:
                if ip in ipaddress.ip_network(e, strict=False):
                    return True
            except ValueError:
                pass
            continue
        e = e.rsplit(":", 1)[0] if e.count(":") == 1 else e
        h = host.lower()
        if h == e.lstrip(".") or (h.endswith("." + e.lstrip(".")) and ip is None):
            return True
    return False


def _proxy_for(host: str) -> str | None:
    """The proxy net/http's ProxyFromEnvironment picks for https://host (golang.org/x/net/http/httpproxy:
    HTTPS_PROXY or https_proxy; NO_PROXY or no_proxy entries: "*", a CIDR, a host, a domain)."""
    env = os.environ
    proxy = env.get("HTTPS_PROXY") or env.get("https_proxy")
    if not proxy:
        return None
    if _no_proxy_match(host, (env.get("NO_PROXY") or env.get("no_proxy") or "").split(",")):
        return None
    return proxy if "://" in proxy else "http://" + proxy


# IsQualifiedName (staging/src/k8s.io/apimachinery/pkg/util/validation/validation.go)
_QNAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def _qualified_name_errors(name: str) -> list[str]:
    part = name.rsplit("/", 1)[-1]
    msgs = []
    if not part:
        msgs.append("name part must be non-empty")
    elif len(part) > 63:
        msgs.append("name part must be no more than 63 characters")
    if part and not _QNAME_RE.fullmatch(part):
        msgs.append("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
    return msgs


def _preflight_checks(kind: str, info: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The checks of cmd/kubeadm/app/preflight/checks.go (v1.35) beyond the basic ones:
    SystemVerification (cgroups), Hostname, KubeletVersion, HTTPProxy and HTTPProxyCIDR."""
    errors: list[tuple[str, str]] = []
    warns: list[tuple[str, str]] = []
    kubelet = version_file("kubelet")
    kminor = _minor_of(kubelet)
    # SystemVerification: k8s.io/system-validators v1.12.1 CgroupsValidator, vendored by
    # kubernetes/kubernetes#134744: cgroups v1 is an error for a kubelet >= 1.35, a warning before
    # (the messages as kubernetes/minikube#22315 and system-validators#38 quote them).
    if _cgroup_v1():
        if kminor is not None and kminor >= 35:
            errors.append(("SystemVerification", "cgroups v1 support is deprecated and will be removed in a future "
                           "release. Please migrate to cgroups v2. To explicitly enable cgroups v1 support for kubelet "
                           "v1.35 or newer, you must set the kubelet configuration option 'FailCgroupV1' to 'false'. "
                           "You must also explicitly skip this validation. For more information, see "
                           "https://git.k8s.io/enhancements/keps/sig-node/5573-remove-cgroup-v1"))
        else:
            warns.append(("SystemVerification", "cgroups v1 support is in maintenance mode, please migrate to cgroups v2"))
    # Hostname: warnings only (IsQualifiedName, then net.LookupHost).
    node = info.get("node_name") or socket.gethostname()
    for msg in _qualified_name_errors(node):
        warns.append(("Hostname", f'invalid node name format "{node}": {msg}'))
    try:
        socket.getaddrinfo(node, None)
    except OSError:
        warns.append(("Hostname", f'hostname "{node}" could not be reached'))
        warns.append(("Hostname", f'hostname "{node}": lookup {node} on 127.0.0.1:53: read udp '
                                  "127.0.0.1:41234->127.0.0.1:53: read: connection refused"))
    # KubeletVersion: not older than kubeadm's minor - 3 (constants.MinimumKubeletVersion), and on
    # init not newer than the control plane.
    if kubelet and kminor is not None:
        if kminor < _kubeadm_minor() - 3:
            errors.append(("KubeletVersion", f'Kubelet version "{kubelet}" is lower than kubeadm can support. '
                                             "Please upgrade kubelet"))
        cpv = info.get("k8s_version")
        if kind == "init" and cpv and _minor_of(cpv) is not None and kminor > _minor_of(cpv):
            errors.append(("KubeletVersion", "the kubelet version is higher than the control plane version. This is "
                           "not a supported version skew and may lead to a malfunctional cluster. Kubelet version: "
                           f'"{kubelet}" Control plane version: "{cpv.lstrip("v")}"'))
    # HTTPProxy / HTTPProxyCIDR: warnings when the API server or the cluster's ranges go via a proxy.
    host = info.get("proxy_host")
    if host:
        proxy = _proxy_for(host)
        if proxy:
            warns.append(("HTTPProxy", f'Connection to "https://{host}" uses proxy "{proxy}". If that is not '
                                       "intended, adjust your proxy settings"))
    for cidr in info.get("cidrs") or []:
        try:
            first = str(ipaddress.ip_network(cidr.strip(), strict=False).network_address + 1)
        except ValueError:
            continue
        proxy = _proxy_for(first)
        if proxy:
            warns.append(("HTTPProxyCIDR", f'connection to "{cidr.strip()}" uses proxy "{proxy}". This may lead to '
                          "malfunctional cluster setup. Make sure that Pod and Services IP ranges specified correctly "
                          "as exceptions in proxy configuration"))
    return errors, warns


def _preflight(kind: str, cp: bool, bind_port: int, ignore: set[str], info: dict | None = None
               ) -> tuple[list[str], list[str]]:
    """(errors, warnings) of kubeadm's own preflight for init / join."""
    errors: list[tuple[str, str]] = []
    warns: list[tuple[str, str]] = []
    if not is_root():
        raise Exit(1, "error execution phase preflight: [preflight] Some fatal errors occurred:\n"
                      "\t[ERROR IsPrivilegedUser]: user is not running as root\n"
                      "[preflight] If you know what you are doing, you can make a check non-fatal with "
                      "`--ignore-preflight-errors=...`")
    if cp:
        try:
            cpus = Path("/sys/devices/system/cpu/online").read_text().strip()
            n = sum((int(b) - int(a) + 1) if "-" in r else 1
                    for r in cpus.split(",") for a, _, b in [r.partition("-")])
        except OSError:
            n = 8
        if n < 2:
            errors.append(("NumCPU", f"the number of available CPUs {n} is less than the required 2"))
        m = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        mb = int(m.group(1)) // 1024 if m else 32768
        if mb < 1700:
            errors.append(("Mem", f"the system RAM ({mb} MB) is less than the minimum 1700 MB"))
    e = _cri_error()
    if e:
        errors.append(("CRI", e.split("]: ", 1)[1]))
    if swap_on():
        warns.append(("Swap", "swap is supported for cgroup v2 only. The kubelet must be properly configured "
                              "to use swap. Please refer to https://kubernetes.io/docs/concepts/architecture/"
                              "nodes/#swap-memory, or disable swap on the node"))
    # cmd/kubeadm/app/preflight/checks.go (kubernetes commit 00b6a4c7afdb): init adds
    # addIPv4Checks (FileContentCheck ipv4Forward = "1") for its IPv4 service/pod CIDRs or
    # advertise address; `JoinNodeChecks` adds it when discovery's APIServerEndpoint host is an
    # IPv4 literal (a DNS name adds none; a control-plane join's init checks skip it as
    # isSecondaryControlPlane). Then `[ERROR FileContent--proc-sys-net-ipv4-ip_forward]`.
    if (kind == "init" or _is_ipv4((info or {}).get("proxy_host"))) and read_sysctl("net.ipv4.ip_forward") != "1":
        errors.append(("FileContent--proc-sys-net-ipv4-ip_forward",
                       "/proc/sys/net/ipv4/ip_forward contents are not set to 1"))
    listening = _listening_ports()
    ports = [10250] + ([bind_port, 10259, 10257, 2379, 2380] if cp else [])
    for p in ports:
        if p in listening:
            errors.append((f"Port-{p}", f"Port {p} is in use"))
    if cp:
        for comp in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"):
            f = f"/etc/kubernetes/manifests/{comp}.yaml"
            if Path(f).exists():
                errors.append((f"FileAvailable--etc-kubernetes-manifests-{comp}.yaml", f"{f} already exists"))
        if Path("/var/lib/etcd").is_dir() and any(Path("/var/lib/etcd").iterdir()):
            errors.append(("DirAvailable--var-lib-etcd", "/var/lib/etcd is not empty"))
    if kind == "join":
        # RunJoinNodeChecks (cmd/kubeadm/app/preflight/checks.go): DirAvailableCheck on the manifests
        # directory, "<dir> is not empty" (a kube-vip manifest goes in after join: sim/kubevip.py)
        mdir = Path("/etc/kubernetes/manifests")
        if mdir.is_dir() and any(mdir.iterdir()):
            errors.append(("DirAvailable--etc-kubernetes-manifests", f"{mdir} is not empty"))
        for f in ("/etc/kubernetes/kubelet.conf", "/etc/kubernetes/bootstrap-kubelet.conf"):
            if Path(f).exists():
                name = "FileAvailable-" + f.replace("/", "-").replace(".", ".")
                errors.append((name, f"{f} already exists"))
        if not cp and Path("/etc/kubernetes/pki/ca.crt").exists():
            errors.append(("FileAvailable--etc-kubernetes-pki-ca.crt", "/etc/kubernetes/pki/ca.crt already exists"))
        knob = host_state().get("fail_join")
        if knob:
            errors.append(("Port-10250", "Port 10250 is in use") if knob is True or knob == "port"
                          else ("KubeletVersion", str(knob)))
    for b in ("ip", "iptables", "mount", "nsenter"):
        if not any(os.access(f"{d}/{b}", os.X_OK) for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin")):
            errors.append((f"FileExisting-{b}", f"{b} not found in system path"))
    kv = version_file("kubelet")
    if not kv or not (Path("/usr/bin/kubelet").exists() or Path("/usr/local/bin/kubelet").exists()):
        errors.append(("KubeletVersion", "couldn't get kubelet version: cannot execute 'kubelet --version': "
                                         'exec: "kubelet": executable file not found in $PATH'))
    more_errors, more_warns = _preflight_checks(kind, info or {})
    errors += more_errors
    warns += more_warns
    if "kubelet.service" not in units() or units()["kubelet.service"][1] != "enabled":
        warns.append(("Service-Kubelet", "kubelet service is not enabled, please run 'systemctl enable "
                                         "kubelet.service'"))
    ign = {i.lower() for i in ignore}
    fatal = [f"\t[ERROR {n}]: {m}" for n, m in errors if n.lower() not in ign and "all" not in ign]
    warn = [f"\t[WARNING {n}]: {m}" for n, m in warns] + \
           [f"\t[WARNING {n}]: {m}" for n, m in errors if n.lower() in ign or "all" in ign]
    return fatal, warn


def _run_preflight(kind: str, cp: bool, bind_port: int, ignore: set[str], info: dict | None = None) -> None:
    out("[preflight] Running pre-flight checks")
    fatal, warns = _preflight(kind, cp, bind_port, ignore, info)
    if any("[ERROR SystemVerification]" in f for f in fatal):
        out("[preflight] The system verification failed. Printing the output from the verification:\n"
            f"KERNEL_VERSION: {(STATE / 'kernel').read_text().strip() if (STATE / 'kernel').exists() else ''}\n"
            "OS: Linux\nCGROUPS_CPU: enabled\nCGROUPS_MEMORY: enabled")
    for w in warns:
        err(w)
    if fatal:
        raise Exit(1, "error execution phase preflight: [preflight] Some fatal errors occurred:\n"
                   + "\n".join(fatal)
                   + "\n[preflight] If you know what you are doing, you can make a check non-fatal with "
                     "`--ignore-preflight-errors=...`\nTo see the stack trace of this error execute with "
                     "--v=5 or higher")


def _kubeconfig(cluster: str, server: str, ca_pem: str, user: str) -> str:
    fake = base64.b64encode(b"-----BEGIN LAB FAKE-----\n" + secrets.token_bytes(48) + b"\n-----END LAB FAKE-----\n").decode()
    doc = {"apiVersion": "v1", "clusters": [{"cluster": {
        "certificate-authority-data": base64.b64encode(ca_pem.encode()).decode(), "server": server},
        "name": cluster}],
        "contexts": [{"context": {"cluster": cluster, "user": user}, "name": f"{user}@{cluster}"}],
        "current-context": f"{user}@{cluster}", "kind": "Config", "preferences": {},
        "users": [{"name": user, "user": {"client-certificate-data": fake, "client-key-data": fake}}]}
    return yaml.safe_dump(doc, sort_keys=False)


def _kubelet_args(nr: dict) -> dict[str, str]:
    kea = nr.get("kubeletExtraArgs") or []
    if isinstance(kea, dict):
        return {str(k): str(v) for k, v in kea.items()}
    return {str(a.get("name")): str(a.get("value")) for a in kea}


def _register(c: dict, nr: dict, cp: bool, address: str) -> dict:
    name = nr.get("name") or socket.gethostname()
    args = _kubelet_args(nr)
    labels = {"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    for kv in filter(None, args.get("node-labels", "").split(",")):
        k, _, v = kv.partition("=")
        labels[k] = v
    if cp:
        labels["node-role.kubernetes.io/control-plane"] = ""
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
    if "taints" in nr and nr["taints"] is not None:
        taints = [{k: t[k] for k in ("key", "value", "effect") if t.get(k) not in (None, "")}
                  for t in nr["taints"]]
    else:
        taints = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}] if cp else []
    kernel = (STATE / "kernel").read_text().strip() if (STATE / "kernel").exists() else os.uname().release
    vl = (STATE / "containerd" / "version_line").read_text().split() if (STATE / "containerd" / "version_line").exists() else []
    node = {"name": name, "host": host_name(), "address": args.get("node-ip") or address, "labels": labels,
            "taints": taints, "cp": cp, "created": now(), "kubelet": version_file("kubelet") or "",
            "uid": str(__import__("uuid").uuid4()), "os": os_pretty(), "kernel": kernel or os.uname().release,
            "runtime": "containerd://" + (vl[2].lstrip("v") if len(vl) >= 3 else "unknown"),
            "index": len(c.get("nodes", {}))}
    c.setdefault("nodes", {})[name] = node
    return node


def _write_node_files(c: dict, cp: bool, node: str, kcfg: dict | None = None) -> None:
    server = f"https://{c['endpoint']}"
    pki = Path("/etc/kubernetes/pki")
    pki.mkdir(parents=True, exist_ok=True)
    write(pki / "ca.crt", c["ca_cert"])
    if cp:
        write(pki / "ca.key", c["ca_key"], 0o600)
        for n in ("apiserver", "apiserver-kubelet-client", "front-proxy-ca", "front-proxy-client"):
            write(pki / f"{n}.crt", c["ca_cert"])
            write(pki / f"{n}.key", "-----BEGIN RSA PRIVATE KEY-----\nlab\n-----END RSA PRIVATE KEY-----\n", 0o600)
        write(pki / "sa.pub", "-----BEGIN PUBLIC KEY-----\nlab\n-----END PUBLIC KEY-----\n")
        write(pki / "sa.key", "-----BEGIN RSA PRIVATE KEY-----\nlab\n-----END RSA PRIVATE KEY-----\n", 0o600)
        for conf, user in (("admin.conf", "kubernetes-admin"), ("super-admin.conf", "kubernetes-super-admin"),
                           ("controller-manager.conf", "system:kube-controller-manager"),
                           ("scheduler.conf", "system:kube-scheduler")):
            # super-admin.conf only where `kubeadm init` runs (kubeadm 1.29 CHANGELOG, "a separate
            # super-admin.conf ... is deployed only on the node where kubeadm init was called";
            # aws/eks-anywhere#7368); a joining control plane gets admin.conf (init: not initialized yet)
            if conf == "super-admin.conf" and c.get("initialized"):
                continue
            write(f"/etc/kubernetes/{conf}", _kubeconfig(c["cluster_name"], server, c["ca_cert"], user), 0o600)
        for comp in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            write(f"/etc/kubernetes/manifests/{comp}.yaml", yaml.safe_dump({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": comp, "namespace": "kube-system", "labels": {"component": comp, "tier": "control-plane"}},
                "spec": {"hostNetwork": True, "containers": [{"name": comp, "image": f"registry.k8s.io/{comp}:{c['version']}"}]}},
                sort_keys=False), 0o600)
        Path("/var/lib/etcd/member").mkdir(parents=True, exist_ok=True)
    write("/etc/kubernetes/kubelet.conf", _kubeconfig(c["cluster_name"], server, c["ca_cert"], f"system:node:{node}"), 0o600)
    kcfg = kcfg or kubelet_config({})
    if cp and "kubelet_config" not in c:
        c["kubelet_config"] = kcfg      # uploaded as the kubelet-config ConfigMap; joining nodes get it
    write("/var/lib/kubelet/config.yaml", yaml.safe_dump(kcfg, sort_keys=False))
    write("/var/lib/kubelet/kubeadm-flags.env", 'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint='
                                                'unix:///var/run/containerd/containerd.sock"\n')


def _parse_ttl(s: str | None) -> float:
    if not s:
        return 24 * 3600
    total = 0.0
    for num, unit in re.findall(r"([\d.]+)(h|m|s)", str(s)):
        total += float(num) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


def _add_tokens(c: dict, tokens: list[dict], fail_if_exists: bool) -> list[str]:
    made = []
    for t in tokens or [{}]:
        tok = t.get("token") or f"{secrets.token_hex(3)}.{secrets.token_hex(8)}"
        m = TOKEN_RE.match(tok)
        if not m:
            raise Exit(1, f'the bootstrap token "{tok}" was not of the form "\\\\A([a-z0-9]{{6}})\\\\.([a-z0-9]{{16}})\\\\z"')
        tid, sec = m.groups()
        ttl = _parse_ttl(t.get("ttl"))
        old = c.setdefault("tokens", {}).get(tid)
        if old and fail_if_exists and old["expires"] > now():
            raise Exit(1, f'failed to create or update bootstrap token with name bootstrap-token-{tid}: '
                          f'a token with id "{tid}" already exists\nTo see the stack trace of this error '
                          "execute with --v=5 or higher")
        c["tokens"][tid] = {"secret": sec, "expires": now() + ttl if ttl > 0 else 1e12,
                            "usages": t.get("usages") or ["signing", "authentication"],
                            "description": t.get("description") or ""}
        made.append(tok)
    return made


def kubeadm(args: list[str]) -> int:
    if not args:
        raise Exit(1, "kubeadm: missing command")
    cmd = args[0]
    if cmd == "init":
        if len(args) > 1 and args[1] == "phase":
            return kubeadm_phase(args[2:])
        return kubeadm_init(args[1:])
    if cmd == "join":
        return kubeadm_join(args[1:])
    if cmd == "token":
        return kubeadm_token(args[1:])
    if cmd == "kubeconfig":
        import nodeops   # `kubeadm kubeconfig user` (nodeops.py)
        return nodeops.kubeadm_kubeconfig(args[1:])
    if cmd == "reset":
        return kubeadm_reset(args[1:])
    if cmd == "config" and args[1:3] == ["images", "list"]:
        v = "v" + (version_file("kubeadm") or "1.36.2")
        out("\n".join(f"registry.k8s.io/{i}:{v}" for i in ("kube-apiserver", "kube-controller-manager",
                                                           "kube-scheduler", "kube-proxy"))
            + f"\nregistry.k8s.io/coredns/coredns:v1.12.1\n{kubeadm_pause_image()}\nregistry.k8s.io/etcd:3.6.5-0")
        return 0
    raise Exit(1, f"kubeadm: the gpuk8s lab does not simulate: kubeadm {' '.join(args)}")


def _cp_address() -> str:
    return host_state().get("address", "127.0.0.1")


def kubeadm_init(args: list[str]) -> int:
    flags, _ = parse_flags(args)
    _mixed(flags)
    if "config" not in flags:
        raise Exit(1, "the gpuk8s lab kubeadm needs --config (gpuk8s always passes one)")
    kinds = load_config(str(flags["config"]), "init")
    ic = kinds.get("InitConfiguration", {})
    cc = kinds.get("ClusterConfiguration", {})
    nr = ic.get("nodeRegistration") or {}
    ver = cc.get("kubernetesVersion") or "v" + (version_file("kubeadm") or "1.36.2")
    out(f"[init] Using Kubernetes version: {ver}")
    kminor = _kubeadm_minor()
    vm = re.match(r"v?(\d+)\.(\d+)", ver)
    if vm and int(vm.group(2)) > kminor:
        err(f"\t[WARNING KubernetesVersion]: Kubernetes version is greater than kubeadm version. Please consider "
            f"to upgrade kubeadm. Kubernetes version: {ver.lstrip('v')}. Kubeadm version: 1.{kminor}.x")
    bind = int((ic.get("localAPIEndpoint") or {}).get("bindPort") or 6443)
    ignore = set(str(flags.get("ignore-preflight-errors", "")).split(",")) - {""}
    ignore |= set(nr.get("ignorePreflightErrors") or [])
    net0 = cc.get("networking") or {}
    _run_preflight("init", True, bind, ignore, {
        "node_name": nr.get("name"), "k8s_version": ver,
        "proxy_host": (ic.get("localAPIEndpoint") or {}).get("advertiseAddress") or _cp_address(),
        "cidrs": [x for x in (str(net0.get("serviceSubnet") or "10.96.0.0/12") + "," + str(net0.get("podSubnet") or ""))
                  .split(",") if x.strip()]})
    out("[preflight] Pulling images required for setting up a Kubernetes cluster\n"
        "[preflight] This might take a minute or two, depending on the speed of your internet connection\n"
        "[preflight] You can also perform this action beforehand using 'kubeadm config images pull'")
    _sandbox_image_warning(cc.get("imageRepository"))
    kcfg = kubelet_config(kinds)
    endpoint = cc.get("controlPlaneEndpoint") or f"{(ic.get('localAPIEndpoint') or {}).get('advertiseAddress') or _cp_address()}:{bind}"
    if ":" not in endpoint.rsplit("]", 1)[-1]:
        endpoint += f":{bind}"
    name = nr.get("name") or socket.gethostname()
    net = cc.get("networking") or {}
    with cluster_lock() as c:
        if c.get("initialized"):
            raise _fatal("preflight", "[preflight] Some fatal errors occurred:\n\t[ERROR lab]: the lab cluster is "
                         "already initialised from another host (`kubeadm reset -f` there first)")
        ca, key = new_ca(cc.get("clusterName") or "kubernetes")
        c.clear()
        c.update({"initialized": False, "cluster_name": cc.get("clusterName") or "kubernetes", "endpoint": endpoint,
                  "pod_subnet": net.get("podSubnet") or "", "service_subnet": net.get("serviceSubnet") or "10.96.0.0/12",
                  "version": ver, "ca_cert": ca, "ca_key": key, "tokens": {}, "nodes": {}, "objects": {},
                  "first_cp": host_name(), "created": now(), "admin_binding": False})
        out('[certs] Using certificateDir folder "/etc/kubernetes/pki"\n[certs] Generating "ca" certificate and key\n'
            '[certs] Generating "apiserver" certificate and key\n'
            f'[certs] apiserver serving cert is signed for DNS names [{endpoint.rsplit(":", 1)[0]} kubernetes '
            f'kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local {name}]\n'
            '[certs] Generating "apiserver-kubelet-client" certificate and key\n[certs] Generating "etcd/ca" certificate and key\n'
            '[certs] Generating "sa" key and public key\n[kubeconfig] Using kubeconfig folder "/etc/kubernetes"\n'
            f'[kubeconfig] Writing "admin.conf" kubeconfig file\n[kubeconfig] Writing "super-admin.conf" kubeconfig file\n'
            '[kubeconfig] Writing "kubelet.conf" kubeconfig file\n[kubeconfig] Writing "controller-manager.conf" kubeconfig file\n'
            '[kubeconfig] Writing "scheduler.conf" kubeconfig file\n[etcd] Creating static Pod manifest for local etcd in "/etc/kubernetes/manifests"\n'
            '[control-plane] Using manifest folder "/etc/kubernetes/manifests"\n'
            '[control-plane] Creating static Pod manifest for "kube-apiserver"\n'
            '[control-plane] Creating static Pod manifest for "kube-controller-manager"\n'
            '[control-plane] Creating static Pod manifest for "kube-scheduler"\n'
            '[kubelet-start] Writing kubelet environment file with flags to file "/var/lib/kubelet/kubeadm-flags.env"\n'
            '[kubelet-start] Writing kubelet configuration to file "/var/lib/kubelet/config.yaml"\n'
            '[kubelet-start] Starting the kubelet\n'
            '[wait-control-plane] Waiting for the kubelet to boot up the control plane as static Pods from directory "/etc/kubernetes/manifests"\n'
            '[kubelet-check] Waiting for a healthy kubelet at http://127.0.0.1:10248/healthz. This can take up to 4m0s')
        _write_node_files(c, True, name, kcfg)
        kubelet_err = _kubelet_start_error(kcfg, _kubelet_args(nr))
        if kubelet_err:
            if not swap_on() or node_labels_error(_kubelet_args(nr)):
                _journal("kubelet", kubelet_err)
            set_unit("kubelet.service", "activating")
            c["initialized"] = False
            c["failed_init"] = True
            out("[kubelet-check] The kubelet is not healthy after 4m0.000s\n\nUnfortunately, an error has occurred, "
                "likely caused by:\n\t- The kubelet is not running\n\t- The kubelet is unhealthy due to a "
                "misconfiguration of the node in some way (required cgroups disabled)\n\nIf you are on a "
                "systemd-powered system, you can try to troubleshoot the error with the following commands:\n"
                "\t- 'systemctl status kubelet'\n\t- 'journalctl -xeu kubelet'\n")
            raise _fatal("wait-control-plane", "failed while waiting for the kubelet to start: The HTTP call equal "
                         "to 'curl -sSL http://127.0.0.1:10248/healthz' returned error: Get "
                         "\"http://127.0.0.1:10248/healthz\": dial tcp 127.0.0.1:10248: connect: connection refused")
        set_unit("kubelet.service", "active")
        broken = _cgroup_driver_mismatch(kcfg)
        if broken:   # the static pods never start: the control plane does not come up
            _journal("kubelet", broken)
            c["initialized"] = False
            c["failed_init"] = True
            out("[kubelet-check] The kubelet is healthy after 1.00123s\n"
                "[control-plane-check] Waiting for healthy control plane components. This can take up to 4m0s\n"
                "[control-plane-check] kube-apiserver is not healthy after 4m0.000s")
            raise _fatal("wait-control-plane", "failed while waiting for the control plane to start: kube-apiserver "
                         f"check failed at https://{_cp_address()}:{bind}/livez: Get \"https://{_cp_address()}:{bind}"
                         f"/livez?timeout=10s\": dial tcp {_cp_address()}:{bind}: connect: connection refused")
        import kubevip   # cluster.vip: init's client reaches a VIP endpoint once kube-vip holds it (kubevip.py)
        kubevip.init_gate(c, endpoint)
        c["admin_binding"] = True   # kubeadm >= 1.29: admin.conf's ClusterRoleBinding (kubevip.py)
        out("[kubelet-check] The kubelet is healthy after 1.00123s\n"
            "[control-plane-check] Waiting for healthy control plane components. This can take up to 4m0s\n"
            f"[control-plane-check] Checking kube-apiserver at https://{_cp_address()}:{bind}/livez\n"
            "[control-plane-check] kube-controller-manager is healthy after 1.5s\n"
            "[control-plane-check] kube-scheduler is healthy after 2.1s\n"
            "[control-plane-check] kube-apiserver is healthy after 3.0s\n"
            '[upload-config] Storing the configuration used in ConfigMap "kubeadm-config" in the "kube-system" Namespace\n'
            '[kubelet] Creating a ConfigMap "kubelet-config" in namespace kube-system with the configuration for the kubelets in the cluster')
        c["initialized"] = True
        apiserver_start(bind, _cluster_id(c))   # kube-apiserver now listens on its bindPort
        kubevip.ensure_running()   # the kubelet runs the static pods, kube-vip's too (kubevip.py)
        key_hex = ic.get("certificateKey") or secrets.token_hex(32)
        if "upload-certs" in flags:
            c["certs"] = {"key": key_hex, "uploaded": now()}
            out('[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace\n'
                f"[upload-certs] Using certificate key:\n{key_hex}")
        _register(c, nr, True, (ic.get("localAPIEndpoint") or {}).get("advertiseAddress") or _cp_address())
        tokens = _add_tokens(c, ic.get("bootstrapTokens") or [], False)
        out(f"[mark-control-plane] Marking the node {name} as control-plane by adding the labels: "
            "[node-role.kubernetes.io/control-plane node.kubernetes.io/exclude-from-external-load-balancers]")
        ts = c["nodes"][name]["taints"]
        if ts:
            out(f"[mark-control-plane] Marking the node {name} as control-plane by adding the taints "
                f"[{' '.join(t['key'] + ':' + t['effect'] for t in ts)}]")
        out(f"[bootstrap-token] Using token: {tokens[0]}\n"
            "[bootstrap-token] Configuring bootstrap tokens, cluster-info ConfigMap, RBAC Roles\n"
            '[bootstrap-token] Creating the "cluster-info" ConfigMap in the "kube-public" namespace\n'
            "[kubelet-finalize] Updating \"/etc/kubernetes/kubelet.conf\" to point to a rotatable kubelet client certificate and key\n"
            "[addons] Applied essential addon: CoreDNS\n[addons] Applied essential addon: kube-proxy\n\n"
            "Your Kubernetes control-plane has initialized successfully!\n\n"
            "To start using your cluster, you need to run the following as a regular user:\n\n"
            "  mkdir -p $HOME/.kube\n  sudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config\n"
            "  sudo chown $(id -u):$(id -g) $HOME/.kube/config\n\n"
            "Alternatively, if you are the root user, you can run:\n\n  export KUBECONFIG=/etc/kubernetes/admin.conf\n\n"
            "You should now deploy a pod network to the cluster.\n"
            'Run "kubectl apply -f [podnetwork].yaml" with one of the options listed at:\n'
            "  https://kubernetes.io/docs/concepts/cluster-administration/addons/\n\n"
            "You can now join any number of control-plane nodes running the following command on each as root:\n\n"
            f"  kubeadm join {endpoint} --token {tokens[0]} \\\n"
            f"\t--discovery-token-ca-cert-hash {ca_hash(c['ca_cert'])} \\\n"
            f"\t--control-plane --certificate-key {key_hex}\n\n"
            "Please note that the certificate-key gives access to cluster sensitive data, keep it secret!\n"
            "As a safeguard, uploaded-certs will be deleted in two hours; If necessary, you can use\n"
            '"kubeadm init phase upload-certs --upload-certs" to reload certs afterward.\n\n'
            "Then you can join any number of worker nodes by running the following on each as root:\n\n"
            f"kubeadm join {endpoint} --token {tokens[0]} \\\n"
            f"\t--discovery-token-ca-cert-hash {ca_hash(c['ca_cert'])}")
    return 0


def _sandbox_image_warning(image_repository: str | None) -> None:
    """ImagePullCheck (cmd/kubeadm/app/preflight/checks.go, v1.35): a klog warning, not a preflight
    error, when the CRI's sandbox image is not kubeadm's pause image."""
    eff = containerd_effective()
    have = containerd_sandbox_image(eff) if eff else None
    want = kubeadm_pause_image()
    if image_repository:
        want = f"{str(image_repository).rstrip('/')}/{want.rsplit('/', 1)[1]}"
    if have and have != want:
        err(f"W0820 10:00:00.000000 {os.getpid()} checks.go:846] detected that the sandbox image \"{have}\" of the "
            "container runtime is inconsistent with that used by kubeadm. It is recommended to use "
            f"\"{want}\" as the CRI sandbox image.")


# k8s.io/kubelet/pkg/apis/well_known_labels.go (kubeletLabels, kubeletLabelNamespaces), v0.35.0.
KUBELET_LABELS = ["beta.kubernetes.io/arch", "beta.kubernetes.io/instance-type", "beta.kubernetes.io/os",
                  "failure-domain.beta.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone",
                  "kubernetes.io/arch", "kubernetes.io/hostname", "kubernetes.io/os", "node.kubernetes.io/instance-type",
                  "topology.kubernetes.io/region", "topology.kubernetes.io/zone"]
KUBELET_LABEL_NAMESPACES = ["kubelet.kubernetes.io", "node.kubernetes.io"]


def _in_namespace(ns: str, domain: str) -> bool:
    return ns == domain or ns.endswith("." + domain)


def node_labels_error(args: dict[str, str]) -> str | None:
    """The kubelet refuses --node-labels in the kubernetes.io / k8s.io namespaces that it may not
    set itself (cmd/kubelet/app/options/options.go, ValidateKubeletFlags, v1.35.0): it exits before
    anything else, so kubeadm waits for a healthy kubelet that never comes."""
    bad = []
    for kv in filter(None, args.get("node-labels", "").split(",")):
        key = kv.partition("=")[0]
        ns = key.split("/", 1)[0] if "/" in key else ""
        if (_in_namespace(ns, "kubernetes.io") or _in_namespace(ns, "k8s.io")) and key not in KUBELET_LABELS \
                and not any(_in_namespace(ns, d) for d in KUBELET_LABEL_NAMESPACES):
            bad.append(key)
    if not bad:
        return None
    return ('E0820 10:00:01.000000    2107 run.go:72] "command failed" err="failed to validate kubelet flags: '
            f"unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: [{' '.join(sorted(set(bad)))}]"
            "\\n--node-labels in the 'kubernetes.io' namespace must begin with an allowed prefix "
            f"({', '.join(KUBELET_LABEL_NAMESPACES)}) or be in the specifically allowed set ({', '.join(KUBELET_LABELS)})\"")


def _kubelet_start_error(kcfg: dict, args: dict[str, str] | None = None) -> str | None:
    """Why the kubelet exits at start-up (kubeadm then waits 4m for its healthz and fails)."""
    labels = node_labels_error(args or {})
    if labels:
        return labels
    pre = 'E0820 10:00:01.000000    2107 run.go:72] "command failed" err="failed to run Kubelet: '
    if swap_on() and kcfg.get("failSwapOn", True) is not False:
        return pre + 'running with swap on is not supported, please disable swap or set --fail-swap-on flag to false"'
    if _cgroup_v1() and (_minor_of(version_file("kubelet")) or 0) >= 35 and kcfg.get("failCgroupV1", True) is not False:
        # KEP-5573 (kubelet v1.35): failCgroupV1 defaults to true
        return pre + ('kubelet is configured to not run on a host using cgroup v1. cgroup v1 support is unsupported '
                      'and will be removed in a future release"')
    if kcfg.get("cgroupDriver") not in ("systemd", "cgroupfs"):
        return pre + f'misconfiguration: kubelet cgroup driver: \\"{kcfg.get("cgroupDriver")}\\" is not supported"'
    return None


def _cgroup_driver_mismatch(kcfg: dict) -> str | None:
    """A kubelet and containerd on different cgroup drivers: pod sandboxes fail to start, so static
    pods never run and the node does not turn Ready. A kubelet >= 1.31 on containerd 2.x takes
    the driver from the CRI (KubeletCgroupDriverFromCRI, KEP-4033; containerd 2.0 implements
    RuntimeConfig), so only older pairs can disagree."""
    eff = containerd_effective()
    if eff is None:
        return None
    ctrd = "systemd" if containerd_systemd_cgroup(eff) else "cgroupfs"
    if _containerd_major() >= 2 and (_minor_of(version_file("kubelet")) or 0) >= 31:
        return None
    kub = kcfg.get("cgroupDriver") or "systemd"
    if kub == ctrd:
        return None
    return (f'E0820 10:00:07.000000    2107 pod_workers.go:1301] "Error syncing pod, skipping" err="failed to '
            f'\\"CreatePodSandbox\\": rpc error: code = Unknown desc = failed to create containerd task: '
            f'cgroup driver mismatch: kubelet uses \\"{kub}\\", containerd uses \\"{ctrd}\\" (SystemdCgroup = '
            f'{"true" if ctrd == "systemd" else "false"})"')


def _need_admin(flags: dict) -> dict:
    kc = str(flags.get("kubeconfig") or "/etc/kubernetes/admin.conf")
    if not Path(kc).exists():
        raise Exit(1, f"failed to load admin kubeconfig: open {kc}: no such file or directory\n"
                      "To see the stack trace of this error execute with --v=5 or higher")
    return {"kubeconfig": kc}


def kubeadm_phase(args: list[str]) -> int:
    if not args or args[0] != "upload-certs":
        raise Exit(1, f"kubeadm: the gpuk8s lab does not simulate: kubeadm init phase {' '.join(args)}")
    flags, _ = parse_flags(args[1:])
    _mixed(flags)
    if "upload-certs" not in flags:
        out("[upload-certs] Skipping phase. Please see --upload-certs")
        return 0
    key_hex = None
    if "config" in flags:
        ic = load_config(str(flags["config"]), "init").get("InitConfiguration", {})
        key_hex = ic.get("certificateKey")
    key_hex = key_hex or str(flags.get("certificate-key") or "") or secrets.token_hex(32)
    _need_admin(flags)
    if not is_root():
        raise Exit(1, "open /etc/kubernetes/admin.conf: permission denied")
    server = _admin_server(flags)
    with cluster_lock() as c:
        why = api_dial(server, c) if c.get("initialized") else "dial tcp: connect: connection refused"
        if why is not None:
            raise _fatal("upload-certs", f"error uploading certs: Get \"https://{server}"
                         f"/api/v1/namespaces/kube-system/secrets/kubeadm-certs\": {why}")
        c["certs"] = {"key": key_hex, "uploaded": now()}
    out('[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace\n'
        f"[upload-certs] Using certificate key:\n{key_hex}")
    return 0


def kubeadm_token(args: list[str]) -> int:
    if not args:
        raise Exit(1, "kubeadm token: missing subcommand")
    sub = args[0]
    flags, pos = parse_flags(args[1:])
    if sub == "create":   # cmd/kubeadm/app/cmd/token.go: createCmd runs ValidateMixedArguments
        _mixed(flags)
    _need_admin(flags)
    if not is_root():
        raise Exit(1, "failed to load admin kubeconfig: open /etc/kubernetes/admin.conf: permission denied")
    server = _admin_server(flags)
    with cluster_lock() as c:
        why = api_dial(server, c) if c.get("initialized") else "dial tcp: connect: connection refused"
        if why is not None:
            raise Exit(1, f"failed to list bootstrap tokens: Get \"https://{server}"
                          f"/api/v1/namespaces/kube-system/secrets\": {why}")
        if sub == "create":
            toks = []
            if "config" in flags:
                toks = load_config(str(flags["config"]), "init").get("InitConfiguration", {}).get("bootstrapTokens") or []
            if pos:
                toks = [{**(toks[0] if toks else {}), "token": pos[0]}]
            if "ttl" in flags:
                toks = [{**(toks[0] if toks else {}), "ttl": flags["ttl"]}]
            made = _add_tokens(c, toks[:1], True)
            if "print-join-command" in flags:
                out(f"kubeadm join {c['endpoint']} --token {made[0]} --discovery-token-ca-cert-hash {ca_hash(c['ca_cert'])} ")
            else:
                out(made[0])
            return 0
        if sub == "delete":
            if not pos:
                raise Exit(1, "missing argument; 'token delete' is missing token of form "
                              '"[a-z0-9]{6}.[a-z0-9]{16}" or "[a-z0-9]{6}"')
            for t in pos:
                tid = t.split(".", 1)[0]
                if tid not in c.get("tokens", {}):
                    raise Exit(1, f'failed to delete bootstrap token with name bootstrap-token-{tid}: secrets '
                                  f'"bootstrap-token-{tid}" not found')
                del c["tokens"][tid]
                out(f'bootstrap token "{tid}" deleted')
            return 0
        if sub == "list":
            rows = [("TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA GROUPS")]
            for tid, t in sorted(c.get("tokens", {}).items()):
                left = t["expires"] - now()
                if left <= 0:
                    continue
                rows.append((f"{tid}.{t['secret']}", f"{int(left // 3600)}h", iso(t["expires"]),
                             ",".join(t.get("usages") or []), t.get("description") or "<none>",
                             "system:bootstrappers:kubeadm:default-node-token"))
            for r in rows:
                out("   ".join(f"{x:<24}" for x in r).rstrip())
            return 0
    raise Exit(1, f"kubeadm: the gpuk8s lab does not simulate: kubeadm token {sub}")


# --------------------------------------------------------------------------- the API server's socket
#
# While the simulated kube-apiserver runs on a control plane (from `kubeadm init` or a control-plane
# `kubeadm join` until `kubeadm reset`), a real TCP socket listens on its bindPort there, held by a
# small process forked from the simulator (its own session, stdio on /dev/null; the lab's teardown
# kills every process of the host). kubectl, kubeadm join's discovery and kubeadm's admin commands
# dial the endpoint they are given, resolved as the host resolves it (/etc/hosts, then a DNS server
# that does not answer), so a wrong address or port fails as with the real tools. The listener
# answers each connection with one line naming the cluster it serves (lab-internal: the real
# server speaks TLS after the client's hello), so the dialer tells an API server of this cluster
# from anything else listening there (sshd, a fixture's port).

APISERVER_PID = STATE / "apiserver.pid"
APISERVER_BANNER = b"gpuk8s-lab-apiserver "


def apiserver_start(port: int, cluster_id: str) -> None:
    """Listen on `port` (all addresses, dual-stack as kube-apiserver's default --bind-address)."""
    apiserver_stop()
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        addr = ("::", port)
    except OSError:
        s, addr = socket.socket(socket.AF_INET, socket.SOCK_STREAM), ("0.0.0.0", port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr)
    s.listen(256)
    banner = APISERVER_BANNER + cluster_id.encode() + b"\n"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:   # the listener: detached from the session that ran kubeadm
        try:
            os.setsid()
            import signal
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            keep = {0, 1, 2, s.fileno()}
            for fd in range(3, 1024):
                if fd not in keep:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            while True:   # lives until `kubeadm reset` (SIGTERM) or the lab's teardown
                try:
                    conn, _ = s.accept()
                except OSError:
                    continue
                try:
                    conn.settimeout(1)
                    conn.sendall(banner)
                except OSError:
                    pass
                finally:
                    conn.close()
        finally:
            os._exit(0)
    s.close()
    write(APISERVER_PID, f"{pid}\n")


def apiserver_stop() -> None:
    try:
        pid = int(APISERVER_PID.read_text().strip())
    except (OSError, ValueError):
        return
    import signal
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        APISERVER_PID.unlink()
    except FileNotFoundError:
        pass


def _split_hostport(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    if not host:
        host, port = hostport, "443"
    return host.strip("[]"), int(port or 443)


def api_dial(hostport: str, c: dict) -> str | None:
    """TCP-connect to hostport as this host resolves it: None when an API server of cluster `c`
    answered, else the Go error text the real clients print (net.Dial's, then crypto/tls's).
    Dial errors: Go `net` (`dial tcp 1.2.3.4:6443: connect: connection refused`, `i/o timeout`,
    `dial tcp: lookup NAME on 127.0.0.1:53: ...` where the host's resolv.conf names a server that
    does not answer); a listener that is not an API server: `net/http: TLS handshake timeout`
    when it says nothing, `tls: first record does not look like a TLS handshake` when it speaks
    first (sshd's banner); another cluster's: x509 `certificate signed by unknown authority`."""
    host, port = _split_hostport(hostport)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return (f"dial tcp: lookup {host} on 127.0.0.1:53: read udp 127.0.0.1:41234->127.0.0.1:53: "
                "read: connection refused")
    last = ""
    for family_, _type, _proto, _canon, sockaddr in infos:
        ip = sockaddr[0]
        shown = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        s = socket.socket(family_, socket.SOCK_STREAM)
        s.settimeout(3)
        try:
            s.connect(sockaddr)
        except ConnectionRefusedError:
            last = f"dial tcp {shown}: connect: connection refused"
            s.close()
            continue
        except socket.timeout:
            last = f"dial tcp {shown}: i/o timeout"
            s.close()
            continue
        except OSError as e:
            last = f"dial tcp {shown}: connect: {(e.strerror or str(e)).lower()}"
            s.close()
            continue
        try:
            s.settimeout(1)
            data = s.recv(128)
        except OSError:
            data = b""
        finally:
            s.close()
        if not data:
            return "net/http: TLS handshake timeout"
        if not data.startswith(APISERVER_BANNER):
            return "tls: first record does not look like a TLS handshake"
        if data[len(APISERVER_BANNER):].strip().decode(errors="replace") != _cluster_id(c):
            return ('tls: failed to verify certificate: x509: certificate signed by unknown authority '
                    '(possibly because of "crypto/rsa: verification error" while trying to verify '
                    'candidate authority certificate "kubernetes")')
        return None
    return last or f"dial tcp {host}:{port}: connect: connection refused"


def _cluster_id(c: dict) -> str:
    return f"{c.get('created', 0):.6f}"


def _admin_server(flags: dict) -> str:
    """host:port of the admin kubeconfig's server (what kubeadm's admin commands dial)."""
    try:
        kdoc = yaml.safe_load(Path(str(flags.get("kubeconfig") or "/etc/kubernetes/admin.conf")).read_text())
        return kdoc["clusters"][0]["cluster"]["server"].split("://", 1)[-1]
    except (OSError, KeyError, IndexError, TypeError):
        return "localhost:6443"


def kubeadm_join(args: list[str]) -> int:
    flags, pos = parse_flags(args)
    _mixed(flags)
    if "config" not in flags:
        raise Exit(1, "the gpuk8s lab kubeadm needs --config (gpuk8s always passes one)")
    jc = load_config(str(flags["config"]), "join")["JoinConfiguration"]
    nr = jc.get("nodeRegistration") or {}
    cpcfg = jc.get("controlPlane")
    cp = cpcfg is not None
    bt = (jc.get("discovery") or {}).get("bootstrapToken") or {}
    bind = int(((cpcfg or {}).get("localAPIEndpoint") or {}).get("bindPort") or 6443)
    ignore = set(str(flags.get("ignore-preflight-errors", "")).split(",")) - {""}
    ignore |= set(nr.get("ignorePreflightErrors") or [])
    endpoint = str(bt.get("apiServerEndpoint") or "")
    _run_preflight("join", cp, bind, ignore, {
        "node_name": nr.get("name"),
        "proxy_host": endpoint.rsplit(":", 1)[0].strip("[]") if ":" in endpoint else None})
    if cp:
        _sandbox_image_warning(None)
    kcfg = kubelet_config({})   # a joining node gets the cluster's (the kubelet-config ConfigMap)
    token = str(bt.get("token") or "")
    hashes = [str(h) for h in bt.get("caCertHashes") or []]
    name = nr.get("name") or socket.gethostname()
    with cluster_lock() as c:
        # discovery: cluster-info through the endpoint, JWS for the token, CA pinning
        why = api_dial(endpoint, c) if c.get("initialized") else None
        if not c.get("initialized") and why is None:
            why = f"dial tcp {endpoint}: connect: connection refused"
        if why is not None:
            # cmd/kubeadm/app/discovery/token/token.go: "failed to request the cluster-info ConfigMap",
            # the client's Get error after the discovery timeout (kubeadm retries until then).
            raise _fatal("preflight", f"couldn't validate the identity of the API Server: failed to request the "
                         f"cluster-info ConfigMap: client rate limiter Wait returned an error: context deadline "
                         f"exceeded - error from a previous attempt: Get \"https://{endpoint}/api/v1/namespaces/"
                         f"kube-public/configmaps/cluster-info?timeout=10s\": {why}")
        m = TOKEN_RE.match(token)
        t = c.get("tokens", {}).get(m.group(1)) if m else None
        if not m or not t or t["secret"] != m.group(2) or t["expires"] < now():
            tid = m.group(1) if m else token.split(".", 1)[0]
            raise _fatal("preflight", "couldn't validate the identity of the API Server: could not find a JWS "
                         f"signature in the cluster-info ConfigMap for token ID \"{tid}\"")
        actual = ca_hash(c["ca_cert"])
        if not bt.get("unsafeSkipCAVerification") and actual not in hashes:
            raise _fatal("preflight", "couldn't validate the identity of the API Server: cluster CA found in "
                         f"cluster-info ConfigMap is invalid: none of the public keys \"{actual}\" are pinned")
        out('[preflight] Reading configuration from the "kubeadm-config" ConfigMap in namespace "kube-system"...\n'
            "[preflight] Use 'kubeadm init phase upload-config kubeadm --config your-config-file' to re-upload it.")
        if cp:
            ep = c.get("endpoint", "")
            if not ep:
                raise _fatal("preflight", "\nOne or more conditions for hosting a new control plane instance is not "
                             "satisfied.\n\nunable to add a new control plane instance to a cluster that doesn't "
                             "have a stable controlPlaneEndpoint address")
            certs = c.get("certs")
            if not certs or now() - certs["uploaded"] > 2 * 3600:
                raise _fatal("control-plane-prepare/download-certs", "error downloading certs: error downloading "
                             "the secret: Secret \"kubeadm-certs\" was not found in the \"kube-system\" Namespace. "
                             "This Secret might have expired. Please, run `kubeadm init phase upload-certs "
                             "--upload-certs` on a control plane to generate a new one")
            if certs["key"] != cpcfg.get("certificateKey"):
                raise _fatal("control-plane-prepare/download-certs", "error downloading certs: error decoding "
                             "secret data with provided key: cipher: message authentication failed")
            out("[download-certs] Downloading the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace\n"
                "[download-certs] Saving the certificates to the folder: \"/etc/kubernetes/pki\"\n"
                "[certs] Using certificateDir folder \"/etc/kubernetes/pki\"\n"
                "[control-plane] Creating static Pod manifest for \"kube-apiserver\"\n"
                "[check-etcd] Checking that the etcd cluster is healthy")
        existing = c.get("nodes", {}).get(name)
        if existing and node_ready(c, existing)[0] == "True":
            raise _fatal("kubelet-start", f"a Node with name \"{name}\" and status \"Ready\" already exists in the "
                         "cluster. You must delete the existing Node or change the name of this new joining Node")
        out('[kubelet-start] Writing kubelet configuration to file "/var/lib/kubelet/config.yaml"\n'
            '[kubelet-start] Writing kubelet environment file with flags to file "/var/lib/kubelet/kubeadm-flags.env"\n'
            "[kubelet-start] Starting the kubelet\n"
            "[kubelet-check] Waiting for a healthy kubelet at http://127.0.0.1:10248/healthz. This can take up to 4m0s")
        kcfg = c.get("kubelet_config") or kcfg
        if _kubelet_start_error(kcfg, _kubelet_args(nr)):
            if not swap_on() or node_labels_error(_kubelet_args(nr)):
                _journal("kubelet", _kubelet_start_error(kcfg, _kubelet_args(nr)))
            write("/etc/kubernetes/bootstrap-kubelet.conf",
                  _kubeconfig(c["cluster_name"], f"https://{endpoint}", c["ca_cert"], "tls-bootstrap-token-user"), 0o600)
            write(Path("/etc/kubernetes/pki/ca.crt"), c["ca_cert"])
            set_unit("kubelet.service", "activating")
            out("[kubelet-check] The kubelet is not healthy after 4m0.000s")
            raise _fatal("kubelet-start", "failed while waiting for the kubelet to start: The HTTP call equal to "
                         "'curl -sSL http://127.0.0.1:10248/healthz' returned error: Get "
                         "\"http://127.0.0.1:10248/healthz\": dial tcp 127.0.0.1:10248: connect: connection refused")
        _write_node_files(c, cp, name, kcfg)
        set_unit("kubelet.service", "active")
        addr = ((cpcfg or {}).get("localAPIEndpoint") or {}).get("advertiseAddress") or host_state().get("address", "")
        reg = _register(c, nr, cp, addr)
        broken = _cgroup_driver_mismatch(kcfg)
        if broken:
            _journal("kubelet", broken)
            reg["pods_broken"] = broken
        out("[kubelet-check] The kubelet is healthy after 1.001s\n"
            "[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap\n")
        if cp:
            apiserver_start(bind, _cluster_id(c))
            import kubevip   # the kubelet runs kube-vip once gpuk8s writes its manifest (kubevip.py)
            kubevip.ensure_running(expected=bool(c.get("kube_vip")))
            out("[etcd] Announced new etcd member joining to the existing etcd cluster\n"
                f"[mark-control-plane] Marking the node {name} as control-plane by adding the labels: "
                "[node-role.kubernetes.io/control-plane node.kubernetes.io/exclude-from-external-load-balancers]\n\n"
                "This node has joined the cluster and a new control plane instance was created:\n\n"
                "* Certificate signing request was sent to apiserver and approval was received.\n"
                "* The Kubelet was informed of the new secure connection details.\n"
                "* Control plane label and taint were applied to the new node.\n"
                "* The Kubernetes control plane instances scaled up.\n* A new etcd member was added to the local/stacked etcd cluster.\n\n"
                "To start administering your cluster from this node, you need to run the following as a regular user:\n\n"
                "\tmkdir -p $HOME/.kube\n\tsudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config\n"
                "\tsudo chown $(id -u):$(id -g) $HOME/.kube/config\n\n"
                "Run 'kubectl get nodes' to see this node join the cluster.")
        else:
            out("This node has joined the cluster:\n* Certificate signing request was sent to apiserver and a response "
                "was received.\n* The Kubelet was informed of the new secure connection details.\n\n"
                "Run 'kubectl get nodes' on the control-plane to see this node join the cluster.")
    return 0


def kubeadm_reset(args: list[str]) -> int:
    flags, _ = parse_flags(args)
    if not ({"f", "force"} & set(flags)):
        raise Exit(1, "[reset] Are you sure you want to proceed? [y/N]: error execution phase preflight: "
                      "won't proceed; the user didn't answer (Y|y) in order to continue")
    if not is_root():
        raise Exit(1, "error execution phase preflight: [preflight] Some fatal errors occurred:\n"
                      "\t[ERROR IsPrivilegedUser]: user is not running as root")
    out("[preflight] Running pre-flight checks")
    me = host_name()
    with cluster_lock() as c:
        mine = [n for n, v in c.get("nodes", {}).items() if v.get("host") == me]
        was_cp = Path("/etc/kubernetes/manifests/kube-apiserver.yaml").exists()
        if was_cp:
            out("[reset] Deleted contents of the etcd data directory: /var/lib/etcd")
            for n in mine:
                c["nodes"].pop(n, None)   # its etcd member and (as the docs advise) its Node go
            if not any(v.get("cp") for v in c.get("nodes", {}).values()):
                c.clear()                 # the last control plane: the cluster is gone
    apiserver_stop()   # the static pods are gone with their manifests
    import shutil
    for p in ("/etc/kubernetes/manifests", "/etc/kubernetes/pki", "/var/lib/etcd", "/var/lib/kubelet"):
        shutil.rmtree(p, ignore_errors=True)
    for f in ("admin.conf", "super-admin.conf", "kubelet.conf", "bootstrap-kubelet.conf",
              "controller-manager.conf", "scheduler.conf"):
        try:
            os.unlink(f"/etc/kubernetes/{f}")
        except FileNotFoundError:
            pass
    if "kubelet.service" in units():
        set_unit("kubelet.service", "activating" if family() == "debian" else "inactive")
    out("[reset] Stopping the kubelet service\n[reset] Unmounting mounted directories in \"/var/lib/kubelet\"\n"
        "[reset] Deleting contents of directories: [/etc/kubernetes/manifests /var/lib/kubelet /etc/kubernetes/pki]\n"
        "[reset] Deleting files: [/etc/kubernetes/admin.conf /etc/kubernetes/super-admin.conf "
        "/etc/kubernetes/kubelet.conf /etc/kubernetes/bootstrap-kubelet.conf /etc/kubernetes/controller-manager.conf "
        "/etc/kubernetes/scheduler.conf]\n\nThe reset process does not clean CNI configuration. To do so, you must "
        "remove /etc/cni/net.d\n\nThe reset process does not reset or clean up iptables rules or IPVS tables.\n"
        "The reset process does not clean your kubeconfig files and you must remove them manually.\n"
        "Please, check the contents of the $HOME/.kube/config file.")
    return 0


# --------------------------------------------------------------------------- kubectl

# Calico's manifests per release, from the projectcalico/calico tags v3.26.0 ... v3.32.1 (git ls-tree
# <tag> manifests/): operator-crds.yaml exists in every release gpuk8s accepts (3.26+), but
# tigera-operator.yaml carries the CRDs itself only up to 3.29 (from v3.30.0 it has none);
# v1_crd_projectcalico_org.yaml and calico-v3-crds.yaml appear in v3.32.0. Any other file, or a tag
# that was never released, is a 404 on raw.githubusercontent.com.
CALICO_PATCHES = {(3, 26): 5, (3, 27): 5, (3, 28): 5, (3, 29): 7, (3, 30): 7, (3, 31): 7, (3, 32): 1}
_CRDS_OLD = ["bgpconfigurations", "bgpfilters", "bgppeers", "blockaffinities", "caliconodestatuses",
             "clusterinformations", "felixconfigurations", "globalnetworkpolicies", "globalnetworksets",
             "hostendpoints", "ipamblocks", "ipamconfigs", "ipamhandles", "ippools", "ipreservations",
             "kubecontrollersconfigurations", "networkpolicies", "networksets"]
_STAGED = ["stagedglobalnetworkpolicies", "stagedkubernetesnetworkpolicies", "stagednetworkpolicies"]


def calico_crds(minor: tuple[int, int]) -> list[str]:
    """The CRD names in a release's operator-crds.yaml (the CRDs of each tag, counted: 22 up to 3.28,
    24 in 3.29, 32 from 3.30)."""
    if minor <= (3, 28):
        op, cal, pol = ["apiservers", "imagesets", "installations", "tigerastatuses"], _CRDS_OLD, []
    elif minor == (3, 29):
        op, cal = ["apiservers", "imagesets", "installations", "tigerastatuses"], _CRDS_OLD + ["tiers"]
        pol = ["adminnetworkpolicies"]
    else:
        op = ["apiservers", "gatewayapis", "goldmanes", "imagesets", "installations",
              "managementclusterconnections", "tigerastatuses", "whiskers"]
        cal = _CRDS_OLD + _STAGED + ["tiers"]
        pol = ["adminnetworkpolicies", "baselineadminnetworkpolicies"]
        if minor >= (3, 32):
            op = sorted(op + ["istios"])
            pol = ["clusternetworkpolicies"]
    return ([f"{n}.operator.tigera.io" for n in op] + [f"{n}.crd.projectcalico.org" for n in cal]
            + [f"{n}.policy.networking.k8s.io" for n in pol])


CRD_PREFIX = "customresourcedefinition.apiextensions.k8s.io/"
OPERATOR_OBJECTS = ["namespace/tigera-operator", "serviceaccount/tigera-operator",
                    "clusterrole.rbac.authorization.k8s.io/tigera-operator-secrets",
                    "clusterrole.rbac.authorization.k8s.io/tigera-operator",
                    "clusterrolebinding.rbac.authorization.k8s.io/tigera-operator",
                    "rolebinding.rbac.authorization.k8s.io/tigera-operator-secrets",
                    "deployment.apps/tigera-operator"]
# The field of each object that changes from release to release (what a conflict names).
_RELEASE_FIELD = {"customresourcedefinition": ".spec.versions", "clusterrole": ".rules",
                  "deployment": '.spec.template.spec.containers[name="tigera-operator"].image'}
_API_OF = {"customresourcedefinition": "apiextensions.k8s.io/v1", "namespace": "v1", "serviceaccount": "v1",
           "clusterrole": "rbac.authorization.k8s.io/v1", "clusterrolebinding": "rbac.authorization.k8s.io/v1",
           "rolebinding": "rbac.authorization.k8s.io/v1", "deployment": "apps/v1"}

# Custom resources and the CRD that serves them.
CR_KINDS = {("operator.tigera.io/v1", k): f"{p}.operator.tigera.io"
            for k, p in (("Installation", "installations"), ("APIServer", "apiservers"), ("Goldmane", "goldmanes"),
                         ("Whisker", "whiskers"), ("ImageSet", "imagesets"), ("TigeraStatus", "tigerastatuses"))}
CR_KINDS |= {("crd.projectcalico.org/v1", k): f"{p}.crd.projectcalico.org"
             for k, p in (("IPPool", "ippools"), ("BGPConfiguration", "bgpconfigurations"), ("BGPPeer", "bgppeers"),
                          ("FelixConfiguration", "felixconfigurations"), ("NetworkPolicy", "networkpolicies"),
                          ("GlobalNetworkPolicy", "globalnetworkpolicies"), ("HostEndpoint", "hostendpoints"),
                          ("IPReservation", "ipreservations"))}


def crd_delay() -> float:
    """Seconds from a CRD's creation to Established. The apiserver queues the CRD for establishing
    once its names are accepted, at once on a single apiserver and 5 s later with several
    (apiextensions-apiserver/pkg/apiserver/customresource_handler.go, updateCustomResourceDefinition);
    either way it is asynchronous, and until then discovery does not list the kind. The lab's 2 s
    (within that 0..5 s range) makes a caller that does not wait for Established fail every time
    rather than now and then, as it would on a loaded or HA control plane."""
    return float(os.environ.get("GPUK8S_LAB_CRD_DELAY", "2"))


def crd_served(c: dict, crd: str) -> bool:
    """The CRD exists and is Established (its kind is in discovery)."""
    t = c.get("objects", {}).get("crd_created", {}).get(crd)
    return t is not None and t + crd_delay() <= now()


def _url_objects(source: str) -> tuple[list[tuple[str, dict]], dict]:
    """[(object, {field: value})], state changes of a Calico manifest URL (a 404 unless released)."""
    not_found = Exit(1, f"error: unable to read URL \"{source}\", server reported 404 Not Found, status code=404")
    m = re.fullmatch(r"https://raw\.githubusercontent\.com/projectcalico/calico/v(\d+)\.(\d+)\.(\d+)/manifests/"
                     r"([A-Za-z0-9_.-]+)", source)
    if not m:
        raise not_found
    major, minor, patch, base = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
    if patch > CALICO_PATCHES.get((major, minor), -1):
        raise not_found
    rel = f"v{major}.{minor}.{patch}"
    crds = [CRD_PREFIX + n for n in calico_crds((major, minor))]
    if base in ("v1_crd_projectcalico_org.yaml", "calico-v3-crds.yaml") and (major, minor) < (3, 32):
        raise not_found
    if base in ("operator-crds.yaml", "v1_crd_projectcalico_org.yaml"):
        names, changes = crds, {"crds": True}
    elif base == "tigera-operator.yaml":
        old = (major, minor) <= (3, 29)
        names = (crds if old else []) + OPERATOR_OBJECTS
        changes = ({"crds": True} if old else {}) | {"operator": True, "calico_version": rel}
    else:
        raise not_found
    objs = []
    for n in names:
        kind = n.split("/", 1)[0].split(".", 1)[0]
        objs.append((n, {_RELEASE_FIELD.get(kind, ".metadata.labels"): rel if kind in _RELEASE_FIELD else "-"}))
    return objs, changes


# Applied objects are validated against their kind's schema: the API server refuses a missing required
# field or a value outside an enum ("Required value", "Unsupported value") and, with kubectl's default
# --validate=strict, an unknown field. The Calico kinds follow the openAPIV3Schema of
# installations/apiservers/goldmanes/whiskers.operator.tigera.io in manifests/operator-crds.yaml at v3.30.4,
# v3.31.3 and v3.32.0 (ipPools[].cidr is required; encapsulation, natOutgoing and
# nodeAddressAutodetectionV4.kubernetes are enums); core kinds follow k8s.io/api validation
# (pkg/apis/core/validation: a Pod needs containers with name and image; node.k8s.io RuntimeClass a handler).
_ENCAP = ["IPIPCrossSubnet", "IPIP", "VXLAN", "VXLANCrossSubnet", "None"]
_AUTODETECT = {"firstFound": "boolean", "kubernetes": ["NodeInternalIP"], "interface": "string",
               "skipInterface": "string", "canReach": "string", "cidrs": "array"}
_POOL = {"!required": ["cidr"], "name": "string", "cidr": "string", "blockSize": "integer",
         "encapsulation": _ENCAP, "natOutgoing": ["Enabled", "Disabled"], "nodeSelector": "string",
         "disableBGPExport": "boolean", "disableNewAllocations": "boolean", "allowedUses": "array",
         "assignmentMode": "string"}
_CALICO_NETWORK = {"ipPools": [_POOL], "nodeAddressAutodetectionV4": _AUTODETECT,
                   "nodeAddressAutodetectionV6": _AUTODETECT, "bgp": ["Enabled", "Disabled"], "mtu": "integer",
                   "linuxDataplane": ["Iptables", "BPF", "VPP", "Nftables"], "hostPorts": ["Enabled", "Disabled"],
                   "containerIPForwarding": ["Enabled", "Disabled"], "multiInterfaceMode": "string",
                   "linuxPolicySetupTimeoutSeconds": "integer", "sysctl": "array", "windowsDataplane": "string",
                   "bpfNetworkBootstrap": "string", "kubeProxyManagement": "string", "clusterRoutingMode": "string"}
_INSTALLATION_SPEC = {"calicoNetwork": _CALICO_NETWORK, "variant": ["Calico", "TigeraSecureEnterprise"],
                      "registry": "string", "imagePath": "string", "imagePrefix": "string",
                      "imagePullSecrets": "array", "kubernetesProvider": "string", "cni": "object",
                      "controlPlaneNodeSelector": "object", "controlPlaneTolerations": "array",
                      "controlPlaneReplicas": "integer", "nodeMetricsPort": "integer", "typhaMetricsPort": "integer",
                      "flexVolumePath": "string", "kubeletVolumePluginPath": "string", "nodeUpdateStrategy": "object",
                      "componentResources": "array", "certificateManagement": "object", "nonPrivileged": "string",
                      "calicoNodeDaemonSet": "object", "calicoKubeControllersDeployment": "object",
                      "typhaDeployment": "object", "csiNodeDriverDaemonSet": "object", "typhaAffinity": "object",
                      "logging": "object", "fipsMode": "string", "serviceCIDRs": "array", "proxy": "object",
                      "azure": "object", "windowsNodes": "object", "calicoNodeWindowsDaemonSet": "object",
                      "calicoWindowsUpgradeDaemonSet": "object", "tlsCipherSuites": "array"}
_CONTAINER = {"!required": ["name", "image"], "!open": True}
SCHEMAS = {
    ("operator.tigera.io/v1", "Installation"): {"spec": _INSTALLATION_SPEC, "status": "object"},
    ("operator.tigera.io/v1", "APIServer"): {"spec": {"!open": True}, "status": "object"},
    ("operator.tigera.io/v1", "Goldmane"): {"spec": {"!open": True}, "status": "object"},
    ("operator.tigera.io/v1", "Whisker"): {"spec": {"!open": True}, "status": "object"},
    ("v1", "Pod"): {"!required": ["spec"], "spec": {"!required": ["containers"], "!open": True,
                                                     "containers": [_CONTAINER]}, "status": "object"},
    ("node.k8s.io/v1", "RuntimeClass"): {"!required": ["handler"], "handler": "string", "overhead": "object",
                                         "scheduling": "object"},
    ("v1", "Namespace"): {"spec": "object", "status": "object"},
    ("v1", "ConfigMap"): {"data": "object", "binaryData": "object", "immutable": "boolean"},
    ("v1", "Secret"): {"data": "object", "stringData": "object", "type": "string", "immutable": "boolean"},
    ("v1", "ServiceAccount"): {"secrets": "array", "imagePullSecrets": "array",
                               "automountServiceAccountToken": "boolean"},
}
_PY_TYPE = {"string": str, "integer": int, "boolean": bool, "array": list, "object": dict}


def _json_type(v) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(v), "null")


def validate_object(doc: dict, schema: dict, path: str, errors: list[str], unknown: list[str]) -> None:
    """Collect field errors (API server wording) and unknown fields of doc against schema."""
    for req in schema.get("!required", []):
        if req not in doc or doc[req] in (None, ""):
            errors.append(f"{path}{req}: Required value")
    for k, v in doc.items():
        spec = schema.get(k)
        where = f"{path}{k}"
        if spec is None:
            if not schema.get("!open") and k not in ("apiVersion", "kind", "metadata"):
                unknown.append(where)
            continue
        if isinstance(spec, list) and spec and isinstance(spec[0], dict):   # a list of objects
            if not isinstance(v, list):
                errors.append(f'{where}: Invalid value: "{_json_type(v)}": {where} in body must be of type array: '
                              f'"{_json_type(v)}"')
                continue
            for i, item in enumerate(v):
                if isinstance(item, dict):
                    validate_object(item, spec[0], f"{where}[{i}].", errors, unknown)
        elif isinstance(spec, list):                                           # an enum of strings
            if v not in spec:
                errors.append(f'{where}: Unsupported value: {json.dumps(v)}: supported values: '
                              + ", ".join(f'"{s}"' for s in spec))
        elif isinstance(spec, dict):
            if not isinstance(v, dict):
                errors.append(f'{where}: Invalid value: "{_json_type(v)}": {where} in body must be of type object: '
                              f'"{_json_type(v)}"')
            else:
                validate_object(v, spec, where + ".", errors, unknown)
        elif not isinstance(v, _PY_TYPE[spec]) or (spec == "integer" and isinstance(v, bool)):
            errors.append(f'{where}: Invalid value: "{_json_type(v)}": {where} in body must be of type {spec}: '
                          f'"{_json_type(v)}"')


def _leaves(doc: dict, prefix: str = "") -> dict[str, str]:
    """The fields server-side apply tracks: every scalar, and each list as one atomic field (the
    Calico CRDs declare no x-kubernetes-list-type, so their lists are atomic)."""
    out: dict[str, str] = {}
    for k, v in doc.items():
        if not prefix and k in ("apiVersion", "kind", "status"):
            continue
        if not prefix and k == "metadata":
            v = {mk: mv for mk, mv in (v or {}).items() if mk not in ("name", "namespace")}
        p = f"{prefix}.{k}"
        if isinstance(v, dict) and v:
            out |= _leaves(v, p)
        else:
            out[p] = json.dumps(v, sort_keys=True)
    return out


_BUILTIN_OPEN = {("apps/v1", "Deployment"), ("apps/v1", "DaemonSet"), ("v1", "Service"),
                 ("policy/v1", "PodDisruptionBudget"),   # nodeops.py keeps the whole object
                 ("rbac.authorization.k8s.io/v1", "ClusterRole"), ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
                 ("rbac.authorization.k8s.io/v1", "Role"), ("rbac.authorization.k8s.io/v1", "RoleBinding")}


def _resource_name(api: str, kind: str) -> str:
    group = api.split("/", 1)[0] if "/" in api else ""
    return f"{kind.lower()}.{group}" if group else kind.lower()


def _file_objects(source: str) -> list[dict]:
    """The objects of a local YAML file, each with its kind's schema check done later."""
    try:
        docs = [d for d in yaml.safe_load_all(Path(source).read_text()) if d]
    except FileNotFoundError:
        raise Exit(1, f"error: the path \"{source}\" does not exist")
    except yaml.YAMLError as e:
        raise Exit(1, f"error: error parsing {source}: error converting YAML to JSON: {e}")
    items = []
    for d in docs:
        api, kind = d.get("apiVersion"), d.get("kind")
        missing = [f"{f} not set" for f, v in (("apiVersion", api), ("kind", kind)) if not v]
        if missing:   # kubectl's schema check (--validate=strict) before anything is sent
            raise Exit(1, f"error: error validating \"{source}\": error validating data: [{', '.join(missing)}]; "
                          "if you choose to ignore these errors, turn validation off with --validate=false")
        name = (d.get("metadata") or {}).get("name", "")
        it = {"obj": f"{_resource_name(api, kind)}/{name}", "api": api, "kind": kind, "name": name, "doc": d,
              "leaves": _leaves(d), "source": source}
        if (api, kind) in CR_KINDS:
            it["crd"] = CR_KINDS[(api, kind)]
        elif (api, kind) == ("apiextensions.k8s.io/v1", "CustomResourceDefinition"):
            it["obj"] = CRD_PREFIX + name
            it["defines"] = name
        elif (api, kind) not in SCHEMAS and (api, kind) not in _BUILTIN_OPEN:
            it["unmapped"] = True
        items.append(it)
    return items


def _conflict_message(conflicts: list[tuple[str, str, str]]) -> str:
    """apimachinery/pkg/util/managedfields/internal/conflict.go (getConflictMessage, printManager):
    an Update manager is printed with the apiVersion it used; kubectl adds its advice
    (staging/src/k8s.io/kubectl/pkg/cmd/apply/apply.go, applyOneObject)."""
    def who(manager: str, api: str) -> str:
        return f'"{manager}"' + (f" using {api}" if manager != "kubectl" and not manager.startswith("ssa:") else "")
    if len(conflicts) == 1:
        m, api, path = conflicts[0]
        msg = f"Apply failed with 1 conflict: conflict with {who(m, api)}: {path}"
    else:
        by: dict[str, list[str]] = {}
        apis = {}
        for m, api, path in conflicts:
            by.setdefault(m, []).append(path)
            apis[m] = api
        parts = []
        for m in sorted(by):
            parts.append(f"conflicts with {who(m, apis[m])}:")
            parts += [f"- {p}" for p in by[m]]
        msg = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(parts)
    return ("error: " + msg + "\nPlease review the fields above--they currently have other managers. Here\n"
            "are the ways you can resolve this warning:\n"
            "* If you intend to manage all of these fields, please re-run the apply\n"
            "  command with the `--force-conflicts` flag.\n"
            "* If you do not intend to manage all of the fields, please edit your\n"
            "  manifest to remove references to the fields that should keep their\n"
            "  current managers.\n"
            "* You may co-own fields by updating your manifest to match the existing\n"
            "  value; in this case, you'll become the manager if the other manager(s)\n"
            "  stop managing the field (remove it from their configuration).\n"
            "See https://kubernetes.io/docs/reference/using-api/server-side-apply/#conflicts")


def _flag_value(rest: list[str], name: str) -> str | None:
    for j, a in enumerate(rest):
        if a == name and j + 1 < len(rest):
            return rest[j + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def kubectl_apply(c: dict, verb: str, rest: list[str], flags: list[str]) -> int:
    """kubectl apply / create -f: objects mapped first (a custom resource whose CRD is not Established
    fails, including one created by this same call), validated, then written with field ownership."""
    files = [rest[j + 1] for j, a in enumerate(rest) if a in ("-f", "--filename") and j + 1 < len(rest)]
    files += [a.split("=", 1)[1] for a in rest if a.startswith(("-f=", "--filename="))]
    if not files:
        raise Exit(1, "error: must specify one of -f and -k")
    server_side = verb == "apply" and ("--server-side" in flags or "--server-side=true" in flags)
    force = "--force-conflicts" in flags or "--force-conflicts=true" in flags
    if verb == "apply" and force and not server_side:
        raise Exit(1, "error: --force-conflicts only works with --server-side")
    manager = _flag_value(rest, "--field-manager") or (
        "kubectl-create" if verb == "create" else "kubectl" if server_side else "kubectl-client-side-apply")
    objs = c.setdefault("objects", {})
    store = objs.setdefault("fields", {})       # object -> {field: [value, [managers]]}
    apis = objs.setdefault("managers", {})      # manager -> apiVersion of its last Update (for messages)
    created = objs.setdefault("created", [])
    crd_at = objs.setdefault("crd_created", {})
    started = now()

    def established(crd: str) -> bool:
        return crd in crd_at and crd_at[crd] + crd_delay() <= started

    batches = []
    for f in files:
        if f.startswith(("http://", "https://")):
            items, changes = _url_objects(f)
            batches.append((f, [{"obj": n, "leaves": leaves, "api": _API_OF[n.split("/")[0].split(".")[0]],
                                 "kind": n.split("/")[0].split(".")[0], "name": n.split("/", 1)[1],
                                 "defines": n[len(CRD_PREFIX):] if n.startswith(CRD_PREFIX) else None}
                                for n, leaves in items], changes))
        else:
            batches.append((f, _file_objects(f), None))
    errors: list[str] = []
    for f, items, url_changes in batches:
        for it in items:
            obj, api, kind, name = it["obj"], it["api"], it["kind"], it["name"]
            if it.get("unmapped") or (it.get("crd") and not established(it["crd"])):
                errors.append(f"error: resource mapping not found for name: \"{name}\" namespace: \"\" from \"{f}\": "
                              f"no matches for kind \"{kind}\" in version \"{api}\"\nensure CRDs are installed first")
                continue
            if not name:
                errors.append("error: resource name may not be empty")
                continue
            if "doc" in it:
                schema = SCHEMAS.get((api, kind), {"!open": True})
                errs: list[str] = []
                unknown: list[str] = []
                validate_object(it["doc"], schema, "", errs, unknown)
                if unknown:
                    if server_side:
                        errors.append(f"Error from server (BadRequest): failed to create typed patch object "
                                      f"(/{name}; {api}, Kind={kind}): .{unknown[0]}: field not declared in schema")
                    else:
                        errors.append(f"Error from server (BadRequest): error when creating \"{f}\": {kind} in "
                                      f"version \"{api.rsplit('/', 1)[-1]}\" cannot be handled as a {kind}: strict "
                                      f"decoding error: unknown field \"{unknown[0]}\"")
                    continue
                if errs:
                    errors.append(f"The {kind} \"{name}\" is invalid: " + (
                        errs[0] if len(errs) == 1 else "\n" + "".join(f"* {e}\n" for e in errs).rstrip("\n")))
                    continue
            have = store.get(obj)
            leaves = it["leaves"]
            if verb == "create":
                if have is not None:
                    errors.append(f"Error from server (AlreadyExists): error when creating \"{f}\": "
                                  f"{obj.split('/')[0].split('.')[0]}s \"{name}\" already exists")
                    continue
                store[obj] = {p: [v, [manager]] for p, v in leaves.items()}
                apis[manager] = api
                out(f"{obj} created")
            elif not server_side:
                if it.get("defines") in ("installations.operator.tigera.io", "felixconfigurations.crd.projectcalico.org"):
                    # the last-applied-configuration annotation would hold the whole CRD
                    errors.append(f"The CustomResourceDefinition \"{it['defines']}\" is invalid: "
                                  "metadata.annotations: Too long: must have at most 262144 bytes")
                    continue
                same = have is not None and all(have.get(p, [None])[0] == v for p, v in leaves.items())
                rec = have if have is not None else {}
                for p, v in leaves.items():   # an Update owns the fields it changed
                    if rec.get(p, [None])[0] != v:
                        rec[p] = [v, [manager]]
                store[obj] = rec
                apis[manager] = api
                out(f"{obj} {'created' if have is None else 'unchanged' if same else 'configured'}")
            else:
                rec = have if have is not None else {}
                conflicts = []
                for p, v in leaves.items():
                    cur = rec.get(p)
                    if cur is not None and cur[0] != v:
                        conflicts += [(m, apis.get(m, api), p) for m in cur[1] if m != manager]
                if conflicts and not force:
                    errors.append(_conflict_message(conflicts))
                    continue
                for p, v in leaves.items():
                    cur = rec.get(p)
                    rec[p] = [v, [manager]] if cur is None or cur[0] != v else [v, sorted(set(cur[1]) | {manager})]
                for p in [p for p in rec if p not in leaves and manager in rec[p][1]]:
                    rec[p][1].remove(manager)       # fields this manager no longer applies
                    if not rec[p][1]:
                        del rec[p]
                if manager == "kubectl":            # kubectl migrates client-side apply ownership (migrateToSSAIfNecessary)
                    for cur in rec.values():
                        if "kubectl-client-side-apply" in cur[1]:
                            cur[1] = sorted(set(cur[1]) - {"kubectl-client-side-apply"} | {"kubectl"})
                store[obj] = rec
                out(f"{obj} serverside-applied")
            if obj not in created:
                created.append(obj)
            if it.get("defines"):
                crd_at.setdefault(it["defines"], now())
                if it["defines"] == "installations.operator.tigera.io":
                    objs["crds"] = True
            if url_changes is not None and obj == "deployment.apps/tigera-operator":
                _apply(c, {k: v for k, v in url_changes.items() if k != "crds"})
            if "doc" in it and api == "operator.tigera.io/v1":
                _apply(c, {"installation": it["doc"]} if kind == "Installation" else {kind.lower(): True})
    if errors:
        raise Exit(1, "\n".join(errors))
    return 0


def _apply(c: dict, changes: dict) -> None:
    objs = c.setdefault("objects", {})
    for k, v in changes.items():
        if k == "installation":
            old = objs.get("installation")
            if old != v:
                objs["installation"] = v
                objs["installation_applied"] = now()
        else:
            objs[k] = v


def _node_json(c: dict, n: dict) -> dict:
    st, reason, msg = node_ready(c, n)
    taints = [dict(t) for t in n["taints"]]
    if st == "False":
        taints.append({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})
    elif st == "Unknown":
        taints.append({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"})
    t0 = iso(n["created"])
    spec: dict = {"podCIDR": f"10.244.{n.get('index', 0)}.0/24"}
    if taints:
        spec["taints"] = taints
    conds = [{"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": m, "lastHeartbeatTime": iso(now()),
              "lastTransitionTime": t0}
             for t, r, m in (("MemoryPressure", "SufficientMemory", "kubelet has sufficient memory available"),
                             ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
                             ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available"))]
    conds.append({"type": "Ready", "status": st, "reason": reason, "message": msg, "lastHeartbeatTime": iso(now()),
                  "lastTransitionTime": t0})
    doc = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n["name"], "uid": n["uid"], "creationTimestamp": t0, "labels": dict(n["labels"]),
                         "annotations": {"kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock",
                                         "node.alpha.kubernetes.io/ttl": "0",
                                         "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
            "spec": spec,
            "status": {"addresses": [{"type": "InternalIP", "address": n["address"]},
                                     {"type": "Hostname", "address": n["name"]}],
                       "conditions": conds,
                       "nodeInfo": {"architecture": "amd64", "containerRuntimeVersion": n["runtime"],
                                    "kernelVersion": n["kernel"], "kubeProxyVersion": "",
                                    "kubeletVersion": "v" + n["kubelet"], "operatingSystem": "linux",
                                    "osImage": n["os"]}}}
    import gpuop   # NFD/GFD labels and allocatable GPUs from the GPU Operator (gpuop.py)
    gpuop.node_overlay(c, n, doc)
    import nodeops   # a cordoned node (nodeops.py)
    nodeops.node_overlay(n, doc)
    return doc


def _age(t: float) -> str:
    s = int(now() - t)
    return f"{s}s" if s < 120 else f"{s // 60}m"


def _table(rows: list[list[str]]) -> str:
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(x.ljust(w[i]) for i, x in enumerate(r)).rstrip() for r in rows)


def _tigerastatus_items(c: dict) -> list[dict]:
    st = calico_status(c)
    items = []
    for name, (avail, degraded, msg) in st["items"].items():
        t = iso(c.get("objects", {}).get("installation_applied", now()))
        prog = "True" if avail == "False" and degraded == "False" else "False"
        items.append({"apiVersion": "operator.tigera.io/v1", "kind": "TigeraStatus",
                      "metadata": {"name": name}, "spec": {},
                      "status": {"conditions": [
                          {"type": "Available", "status": avail, "reason": "AllObjectsAvailable" if avail == "True" else "ResourceNotReady",
                           "message": msg if avail == "True" else "", "lastTransitionTime": t},
                          {"type": "Progressing", "status": prog, "reason": "ResourceNotReady" if prog == "True" else "AllObjectsAvailable",
                           "message": msg if prog == "True" else "", "lastTransitionTime": t},
                          {"type": "Degraded", "status": degraded,
                           "reason": "ResourceReadError" if degraded == "True" else "AllObjectsAvailable",
                           "message": msg if degraded == "True" else "", "lastTransitionTime": t}]}})
    return items


def kubectl(args: list[str]) -> int:
    kc = os.environ.get("KUBECONFIG") or None
    ns = "default"
    output = None
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--kubeconfig":
            kc = args[i + 1]
            i += 1
        elif a.startswith("--kubeconfig="):
            kc = a.split("=", 1)[1]
        elif a in ("-n", "--namespace"):
            ns = args[i + 1]
            i += 1
        elif a.startswith("--namespace="):
            ns = a.split("=", 1)[1]
        elif a in ("-o", "--output"):
            output = args[i + 1]
            i += 1
        elif a.startswith(("-o=", "--output=")):
            output = a.split("=", 1)[1]
        elif a.startswith("-o") and len(a) > 2:
            output = a[2:]
        else:
            rest.append(a)
        i += 1
    if kc is None:
        home = os.path.expanduser("~/.kube/config")
        kc = home if os.path.exists(home) else None
    if kc is None:
        raise Exit(1, "E0820 10:00:00.000000    1234 memcache.go:265] \"Unhandled Error\" err=\"couldn't get current "
                      "server API group list: Get \\\"http://localhost:8080/api?timeout=32s\\\": dial tcp "
                      "127.0.0.1:8080: connect: connection refused\"\nThe connection to the server localhost:8080 was "
                      "refused - did you specify the right host or port?")
    try:
        kdoc = yaml.safe_load(Path(kc).read_text())
    except FileNotFoundError:
        raise Exit(1, f"error: stat {kc}: no such file or directory")
    except PermissionError:
        raise Exit(1, f"error: error loading config file \"{kc}\": open {kc}: permission denied")
    server = kdoc["clusters"][0]["cluster"]["server"]
    ca_data = kdoc["clusters"][0]["cluster"].get("certificate-authority-data", "")
    hostport = server.split("://", 1)[-1]
    write_ops = rest and rest[0] in ("apply", "create", "label", "taint", "delete", "patch", "replace", "rollout",
                                     "cordon", "uncordon", "drain")
    with cluster_lock(shared=not write_ops) as c:
        why = api_dial(hostport, c) if c.get("initialized") else f"dial tcp {hostport}: connect: connection refused"
        if why is not None:
            # staging/src/k8s.io/kubectl/pkg/cmd/util/helpers.go `StandardErrorMessage`: a *url.Error
            # whose error contains "connection refused" -> "The connection to the server H was refused
            # - did you specify the right host or port?"; any other -> "Unable to connect to the server: %v".
            if "connection refused" in why:
                raise Exit(1, f"The connection to the server {hostport} was refused - did you specify the right host or port?")
            raise Exit(1, f"Unable to connect to the server: {why}")
        if base64.b64decode(ca_data).decode(errors="replace") != c["ca_cert"]:
            raise Exit(1, "Unable to connect to the server: tls: failed to verify certificate: x509: certificate "
                          "signed by unknown authority (possibly because of \"crypto/rsa: verification error\" while "
                          "trying to verify candidate authority certificate \"kubernetes\")")
        return _kubectl(c, rest, ns, output)


def kubectl_wait(c: dict, words: list[str], flags: list[str]) -> int:
    """`kubectl wait --for=condition=Established crd/NAME [--timeout=60s]` (the other conditions are
    not simulated)."""
    cond = next((f.split("=", 1)[1] for f in flags if f.startswith("--for=")), "")
    timeout = _parse_ttl(next((f.split("=", 1)[1] for f in flags if f.startswith("--timeout=")), "30s"))
    if cond.lower() != "condition=established" or not words:
        raise Exit(1, "error: the gpuk8s lab kubectl simulates `wait --for=condition=Established crd/NAME` only")
    if "--all" in flags and words and "/" not in words[0]:
        words = [f"crd/{n}" for n in sorted(c.get("objects", {}).get("crd_created", {}))]
    for w in words:
        kind, _, name = w.partition("/")
        if kind not in ("crd", "crds", "customresourcedefinition", "customresourcedefinitions",
                        "customresourcedefinition.apiextensions.k8s.io"):
            raise Exit(1, "error: the gpuk8s lab kubectl simulates `wait --for=condition=Established crd/NAME` only")
        t = c.get("objects", {}).get("crd_created", {}).get(name)
        if t is None:
            raise Exit(1, f"Error from server (NotFound): customresourcedefinitions.apiextensions.k8s.io \"{name}\" "
                          "not found")
        left = t + crd_delay() - now()
        if left > timeout:
            time.sleep(timeout)
            raise Exit(1, f"error: timed out waiting for the condition on customresourcedefinitions/{name}")
        if left > 0:
            time.sleep(left)
        out(f"customresourcedefinition.apiextensions.k8s.io/{name} condition met")
    return 0


def _list_items(c: dict, kind: str, ns: str | None = "default") -> list[dict]:
    """The objects of one resource type, as in a List (for `kubectl get A,B,C -o json`); ns None:
    every namespace (-A)."""
    if ns is None and kind in ("pods", "pod", "po"):
        return all_pods(c)
    import gpuop   # the GPU layer's types (ClusterPolicy, the operator namespace's objects)
    theirs = gpuop.list_items(c, kind, ns)
    if theirs is not None:
        return theirs
    if kind in ("nodes", "node", "no"):
        return [_node_json(c, n) for n in sorted(c.get("nodes", {}).values(), key=lambda n: n["created"])]
    calico = ("tigerastatus", "tigerastatuses", "tigerastatuses.operator.tigera.io",
              "installations.operator.tigera.io", "installation", "installations")
    crd = "tigerastatuses.operator.tigera.io" if kind.startswith("tigerastatus") else "installations.operator.tigera.io"
    if kind not in calico or not c.get("objects", {}).get("crds") or not crd_served(c, crd):
        raise Exit(1, f"error: the server doesn't have a resource type \"{kind.split('.')[0]}\"")
    if kind.startswith("tigerastatus"):
        return _tigerastatus_items(c)
    inst = c.get("objects", {}).get("installation")
    if not inst:
        return []
    doc = json.loads(json.dumps(inst))
    doc.setdefault("apiVersion", "operator.tigera.io/v1")
    doc.setdefault("kind", "Installation")
    doc.setdefault("metadata", {})["creationTimestamp"] = iso(c["objects"].get("installation_applied", now()))
    doc["status"] = {"variant": "Calico", "calicoVersion": c["objects"].get("calico_version", "")} \
        if calico_status(c)["ok"] else {}
    return [doc]


def _sim_pod(ns: str, name: str, node: dict | None, *, running: bool, ready: bool, labels: dict | None = None,
             waiting: str = "ContainerCreating") -> dict:
    cs = {"name": name.split("-")[0], "ready": ready, "restartCount": 0,
          "state": {"running": {"startedAt": iso(node["created"]) if node else iso(now())}} if running else
          {"waiting": {"reason": waiting}}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": dict(labels or {})},
            "spec": {"nodeName": node["name"]} if node else {},
            "status": {"phase": "Running" if running else "Pending",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [cs]}}


def all_pods(c: dict) -> list[dict]:
    """`kubectl get pods -A -o json` (as far as the lab simulates pods):
    - kubeadm's static pods on each control plane, named <component>-<node> (the kubelet's mirror
      pods: kubernetes pkg/kubelet/pod/mirror_client.go; cmd/kubeadm/app/phases/controlplane, etcd);
    - kube-proxy on every node (kubeadm's DaemonSet addon) and CoreDNS, kubeadm's Deployment of 2
      replicas (cmd/kubeadm/app/phases/addons/dns/manifests.go), Pending until the pod network works;
    - the Tigera operator, and calico-node on every node once the Installation is applied
      (Init until Calico is available, as the table form above);
    - the GPU Operator's operand pods (gpuop.operand_pods).
    A pod on a node that is not Ready keeps phase Running with its Ready condition False: the node
    lifecycle controller's MarkPodsNotReady (kubernetes pkg/controller/util/node/controller_utils.go)."""
    nodes = sorted(c.get("nodes", {}).values(), key=lambda n: n["created"])
    ready = {n["name"]: node_ready(c, n)[0] == "True" for n in nodes}
    cal = calico_status(c)
    pods = []
    for n in nodes:
        if "node-role.kubernetes.io/control-plane" in n["labels"]:
            for comp in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
                pods.append(_sim_pod("kube-system", f"{comp}-{n['name']}", n, running=True, ready=ready[n["name"]],
                                     labels={"component": comp, "tier": "control-plane"}))
    for n in nodes:
        sfx = hashlib.sha1(n["name"].encode()).hexdigest()[:5]
        pods.append(_sim_pod("kube-system", f"kube-proxy-{sfx}", n, running=True, ready=ready[n["name"]],
                             labels={"k8s-app": "kube-proxy"}))
    first = nodes[0] if nodes else None
    for i in range(2 if first else 0):
        up = cal["ok"] and ready[first["name"]]
        pods.append(_sim_pod("kube-system", f"coredns-7c65d6cfc9-{'ab'[i]}x2x7", first if up else None, running=up,
                             ready=up, labels={"k8s-app": "kube-dns"}))
    if c.get("objects", {}).get("operator") and first:
        pods.append(_sim_pod("tigera-operator", "tigera-operator-5f9c8d7b6-q8w2x", first, running=True,
                             ready=ready[first["name"]], labels={"name": "tigera-operator"}))
    if c.get("objects", {}).get("installation") and not cal.get("bad"):
        for n in nodes:
            sfx = hashlib.sha1(n["name"].encode()).hexdigest()[:5]
            pods.append(_sim_pod("calico-system", f"calico-node-{sfx}", n, running=cal["ok"],
                                 ready=cal["ok"] and ready[n["name"]], labels={"k8s-app": "calico-node"},
                                 waiting="PodInitializing"))
    import gpuop
    if gpuop.release(c) is not None:
        pods += [p for p, _, _ in gpuop.operand_pods(c)]
    import nodeops   # controllers (ownerReferences) and the pods tests applied (nodeops.py)
    return nodeops.with_owners(pods) + nodeops.workload_pods(c)


def _kubectl(c: dict, rest: list[str], ns: str, output: str | None) -> int:
    if not rest:
        raise Exit(1, "kubectl controls the Kubernetes cluster manager.")
    verb = rest[0]
    flags = [a for a in rest[1:] if a.startswith("-")]
    words = [a for a in rest[1:] if not a.startswith("-")]
    import gpuop   # the GPU layer's objects (helm release, operator, smoke Jobs): gpuop.py
    rc = gpuop.kubectl_hook(c, rest, ns, output)
    if rc is not None:
        return rc
    import nodeops   # cordon, drain (PDBs), delete node, pods, PDBs, RBAC reads (nodeops.py)
    rc = nodeops.kubectl_hook(c, rest, ns, output)
    if rc is not None:
        return rc
    if verb in ("apply", "create"):
        rc = kubectl_apply(c, verb, rest, flags)
        gpuop.record_applied(c, [rest[j + 1] for j, a in enumerate(rest) if a in ("-f", "--filename") and j + 1 < len(rest)])
        nodeops.record_applied(c, [rest[j + 1] for j, a in enumerate(rest) if a in ("-f", "--filename") and j + 1 < len(rest)])
        return rc
    if verb == "get":
        if not words:
            raise Exit(1, "You must specify the type of resource to get.")
        kind, names = words[0].lower(), words[1:]
        if "," in kind:  # several types: all resolved first (one unknown fails the call), one List
            if names or "/" in kind:
                raise Exit(1, "error: arguments in resource/name form must have a single resource and name")
            if output != "json":
                raise Exit(1, "error: the gpuk8s lab kubectl simulates several types with -o json only")
            # -A/--all-namespaces: namespaced types from every namespace (ns None below)
            lns = None if ("-A" in flags or "--all-namespaces" in flags) else ns
            items = [x for k in kind.split(",") for x in _list_items(c, k, lns)]
            out(json.dumps({"apiVersion": "v1", "kind": "List", "items": items,
                            "metadata": {"resourceVersion": ""}}, indent=4))
            return 0
        if "/" in kind:
            kind, n = kind.split("/", 1)
            names = [n]
        if kind in ("nodes", "node", "no"):
            nodes = [_node_json(c, n) for n in sorted(c.get("nodes", {}).values(), key=lambda n: n["created"])]
            if names:
                nodes = [n for n in nodes if n["metadata"]["name"] in names]
                if not nodes:
                    raise Exit(1, f"Error from server (NotFound): nodes \"{names[0]}\" not found")
            if output == "json":
                doc = nodes[0] if names else {"apiVersion": "v1", "kind": "List", "items": nodes,
                                              "metadata": {"resourceVersion": ""}}
                out(json.dumps(doc, indent=4))
                return 0
            if output == "name":
                out("\n".join(f"node/{n['metadata']['name']}" for n in nodes))
                return 0
            rows = [["NAME", "STATUS", "ROLES", "AGE", "VERSION"]]
            wide = output == "wide"
            if wide:
                rows[0] += ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
            for n, raw in zip(nodes, sorted(c.get("nodes", {}).values(), key=lambda n: n["created"])):
                ready = next(x for x in n["status"]["conditions"] if x["type"] == "Ready")["status"]
                roles = ",".join(sorted(k.split("/", 1)[1] for k in n["metadata"]["labels"]
                                        if k.startswith("node-role.kubernetes.io/"))) or "<none>"
                row = [n["metadata"]["name"], "Ready" if ready == "True" else "NotReady", roles, _age(raw["created"]),
                       n["status"]["nodeInfo"]["kubeletVersion"]]
                if wide:
                    row += [raw["address"], "<none>", raw["os"], raw["kernel"], raw["runtime"]]
                rows.append(row)
            if len(rows) == 1:
                err("No resources found")
                return 0
            out(_table(rows))
            return 0
        if kind in ("tigerastatus", "tigerastatuses", "tigerastatuses.operator.tigera.io"):
            if not c.get("objects", {}).get("crds") or not crd_served(c, "tigerastatuses.operator.tigera.io"):
                raise Exit(1, f"error: the server doesn't have a resource type \"{words[0]}\"")
            items = _tigerastatus_items(c)
            if names:
                items = [x for x in items if x["metadata"]["name"] in names]
                if not items:
                    raise Exit(1, f"Error from server (NotFound): tigerastatuses.operator.tigera.io \"{names[0]}\" not found")
            if output == "json":
                out(json.dumps(items[0] if names else {"apiVersion": "v1", "kind": "List", "items": items,
                                                        "metadata": {"resourceVersion": ""}}, indent=4))
                return 0
            if not items:
                err("No resources found")
                return 0
            rows = [["NAME", "AVAILABLE", "PROGRESSING", "DEGRADED", "SINCE"]]
            for x in items:
                cd = {k["type"]: k["status"] for k in x["status"]["conditions"]}
                rows.append([x["metadata"]["name"], cd["Available"], cd["Progressing"], cd["Degraded"],
                             _age(c["objects"].get("installation_applied", now()))])
            out(_table(rows))
            return 0
        if kind in ("installations.operator.tigera.io", "installation", "installations"):
            if not c.get("objects", {}).get("crds") or not crd_served(c, "installations.operator.tigera.io"):
                raise Exit(1, f"error: the server doesn't have a resource type \"{words[0]}\"")
            inst = c.get("objects", {}).get("installation")
            if not inst or (names and names[0] != (inst.get("metadata") or {}).get("name")):
                raise Exit(1, f"Error from server (NotFound): installations.operator.tigera.io "
                              f"\"{names[0] if names else 'default'}\" not found")
            doc = json.loads(json.dumps(inst))
            doc.setdefault("metadata", {})["creationTimestamp"] = iso(c["objects"].get("installation_applied", now()))
            doc["status"] = {"variant": "Calico", "calicoVersion": c["objects"].get("calico_version", "")} \
                if calico_status(c)["ok"] else {}
            out(json.dumps(doc, indent=4) if output == "json" else f"NAME      AGE\n{doc['metadata'].get('name')}   1m")
            return 0
        if kind in ("pods", "pod", "po"):
            pods = []
            st = calico_status(c)
            if ns == "calico-system" and c.get("objects", {}).get("installation") and not st.get("bad"):
                phase = "Running" if st["ok"] else "Init:0/2"
                ready = "1/1" if st["ok"] else "0/1"
                for n in sorted(c.get("nodes", {}).values(), key=lambda n: n["created"]):
                    suffix = hashlib.sha1(n["name"].encode()).hexdigest()[:5]
                    pods.append([f"calico-node-{suffix}", ready, phase, "0", "1m", n["address"], n["name"], "<none>", "<none>"])
                first = sorted(c.get("nodes", {}).values(), key=lambda n: n["created"])[0]
                pods.append(["calico-kube-controllers-6d7f8b9c4-x2x7q", ready, "Running" if st["ok"] else "Pending",
                             "0", "1m", "10.244.0.3" if st["ok"] else "<none>",
                             first["name"] if st["ok"] else "<none>", "<none>", "<none>"])
                pods.append(["calico-typha-5b8c6d7f9-k4mzn", ready, phase, "0", "1m", first["address"], first["name"],
                             "<none>", "<none>"])
            if not pods:
                err(f"No resources found in {ns} namespace.")
                return 0
            hdr = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
            if output == "wide":
                hdr += ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
            out(_table([hdr] + [p[:len(hdr)] for p in pods]))
            return 0
        raise Exit(1, f"error: the server doesn't have a resource type \"{words[0]}\"")
    if verb == "label" and len(words) >= 3 and words[0] in ("node", "nodes", "no"):
        # Several nodes in one call: kubectl label's args are resources, then KEY=VAL / KEY- pairs
        # (kubectl pkg/cmd/label/label.go, GetResourcesAndPairs; one "node/NAME labeled" line per
        # object). Every name must exist here (stricter than kubectl, which labels the others).
        names = [w for w in words[1:] if "=" not in w and not w.endswith("-")]
        pairs = words[1 + len(names):]
        if not pairs or any("=" not in w and not w.endswith("-") for w in pairs):
            raise Exit(1, "error: all resources must be specified before label changes: "
                          + " ".join(words[1:]))
        missing = [n for n in names if n not in c.get("nodes", {})]
        if missing:
            raise Exit(1, f"Error from server (NotFound): nodes \"{missing[0]}\" not found")
        if len(names) > 1:
            rc = 0
            for n in names:
                rc = _kubectl(c, ["label", "node", n, *pairs, *flags], ns, output) or rc
            return rc
    if verb in ("label", "taint"):
        if len(words) < 3 or words[0] not in ("node", "nodes", "no"):
            raise Exit(1, f"error: the gpuk8s lab kubectl simulates `{verb} node NAME ...` only")
        name = words[1]
        node = c.get("nodes", {}).get(name)
        if not node:
            raise Exit(1, f"Error from server (NotFound): nodes \"{name}\" not found")
        overwrite = "--overwrite" in flags or "--overwrite=true" in flags
        changed = False
        for spec in words[2:]:
            if verb == "label":
                if spec.endswith("-"):
                    changed |= node["labels"].pop(spec[:-1], None) is not None
                    continue
                k, _, v = spec.partition("=")
                if k in node["labels"] and node["labels"][k] != v and not overwrite:
                    raise Exit(1, f"error: '{k}' already has a value ({node['labels'][k]}), and --overwrite is false")
                changed |= node["labels"].get(k) != v
                node["labels"][k] = v
            else:
                remove = spec.endswith("-")
                s = spec[:-1] if remove else spec
                kv, _, effect = s.rpartition(":") if ":" in s else (s, "", "")
                k, _, v = kv.partition("=")
                if not remove and effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
                    raise Exit(1, f"error: invalid taint spec: {spec}, unknown taint effect: {effect}")
                same = [t for t in node["taints"] if t["key"] == k and (not effect or t["effect"] == effect)]
                if remove:
                    if not same:
                        raise Exit(1, f"error: taint \"{s}\" not found")
                    node["taints"] = [t for t in node["taints"] if t not in same]
                    changed = True
                    continue
                if same and not overwrite:
                    raise Exit(1, f"error: node {name} already has {k} taint(s) with same effect(s) and "
                                  "--overwrite is false")
                new = {"key": k, "effect": effect} | ({"value": v} if v else {})
                node["taints"] = [t for t in node["taints"] if t not in same] + [new]
                changed = True
        if verb == "label":
            out(f"node/{name} {'labeled' if changed else 'not labeled'}")
        else:
            out(f"node/{name} {'untainted' if any(w.endswith('-') for w in words[2:]) else 'modified' if False else 'tainted'}")
        return 0
    if verb == "wait":
        return kubectl_wait(c, words, flags)
    if verb == "cluster-info":
        out(f"Kubernetes control plane is running at https://{c['endpoint']}\n"
            f"CoreDNS is running at https://{c['endpoint']}/api/v1/namespaces/kube-system/services/kube-dns:dns/proxy")
        return 0
    raise Exit(1, f"error: the gpuk8s lab kubectl does not simulate: kubectl {' '.join(rest)}")


# --------------------------------------------------------------------------- main

TOOLS = {"apt-get": apt_get, "apt-mark": apt_mark, "dnf": dnf, "yum": dnf, "gpg": gpg,
         "modprobe": modprobe, "sysctl": sysctl, "swapoff": swapoff, "journalctl": journalctl,
         "kubeadm": kubeadm, "kubectl": kubectl}


def main(argv: list[str]) -> int:
    tool, args = argv[1], argv[2:]
    try:
        if tool == "containerd-check":
            return containerd_check()
        if tool == "containerd-dump":
            return containerd_dump()
        if tool == "helm":
            import gpuop   # helm's release commands (gpuop.py)
            return gpuop.helm(args)
        if tool == "netfilter":
            import nodeops   # iptables-save/-restore, nft, ipvsadm (nodeops.py)
            return nodeops.netfilter(args)
        if tool == "kube-vip-daemon":
            import kubevip   # the kube-vip static pod's process (kubevip.py)
            return kubevip.daemon(args)
        if tool == "kube-vip-ensure":
            import kubevip
            kubevip.ensure_running()
            return 0
        return TOOLS[tool](args)
    except Exit as e:
        sys.stdout.flush()
        if e.out:
            out(e.out)
        if e.err:
            err(e.err)
        return e.code
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    sys.exit(main(sys.argv))
