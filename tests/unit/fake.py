"""The one fake transport of the unit tests: a small in-memory cluster of hosts.

Each `FakeHost` answers the probe from its probe text (its Kubernetes state files follow what
kubeadm did), keeps the files gpuk8s writes, and answers the reads `up` makes (containerd,
kubeadm, kubectl, the CA certificate) from a shared `FakeCluster`. Every call is recorded as
(host, rendered command, stdin, sudo). It is deliberately small: the lab (tests/lab) is where
real shells and simulated tools meet gpuk8s.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Callable

from gpuk8s.errors import TransportError
from gpuk8s.facts.cluster import NO_SUCH_TYPE
from gpuk8s.gate import PUT_SCRIPT, SECRET_SCRIPT
from gpuk8s.paths import ADMIN_CONF, CA_CERT, CONTAINERD_CONFIG, KUBELET_CONF
from gpuk8s.transport.base import Result

OS_UBUNTU = ('NAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\n'
             'VERSION_CODENAME=noble\n')
CONTAINERD_V3 = """version = 3
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = true
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = 'registry.k8s.io/pause:3.10.1'
"""
CONTAINERD_VERSION = "containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7"
ADMIN_KUBECONFIG = ("apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n"
                    "    server: https://10.0.0.11:6443\n    certificate-authority-data: QUJD\n"
                    "users: []\ncontexts: []\n")


def probe_output(name, uuid, mac, address, gpus=0):
    """A healthy Ubuntu 24.04 host with containerd 2.1 (no Kubernetes tools)."""
    sections = {
        "probe": "1", "uid": "0", "os_release": OS_UBUNTU, "uname": "6.8.0-49-generic\nx86_64",
        "hostname": name, "cgroup": "cgroup2fs", "cpus": "16",
        "meminfo": "MemTotal:       65536000 kB\nSwapTotal:      0 kB",
        "swaps": "Filename\tType\tSize\tUsed\tPriority", "fstab": "UUID=abc / ext4 defaults 0 1",
        "links": f"2: eno1: <BROADCAST,MULTICAST,UP> mtu 1500 state UP\\    link/ether {mac} brd ff:ff:ff:ff:ff:ff",
        "addrs": f"2: eno1    inet {address}/24 brd 10.0.0.255 scope global eno1",
        "routes": "default via 10.0.0.1 dev eno1\n10.0.0.0/24 dev eno1 proto kernel scope link",
        "product_uuid": uuid, "modules": "overlay\nbr_netfilter", "filesystems": "nodev\toverlay",
        "sysctl": "net/ipv4/ip_forward=1\nnet/bridge/bridge-nf-call-iptables=1\nnet/bridge/bridge-nf-call-ip6tables=1",
        "binaries": "\n".join(f"{b}=/usr/sbin/{b}" for b in
                              "ip iptables mount nsenter ethtool socat tc conntrack touch ebtables containerd helm".split()),
        "services": ("Id=containerd.service\nLoadState=loaded\nActiveState=active\nUnitFileState=enabled\n\n"
                     "Id=systemd-timesyncd.service\nLoadState=loaded\nActiveState=active\nUnitFileState=enabled\n\n"
                     "Id=firewalld.service\nLoadState=not-found\nActiveState=inactive\nUnitFileState="),
        "timedatectl": "NTP=yes\nNTPSynchronized=yes", "listen": "", "endpoint": "10.0.0.100 STREAM k8s-api",
        "containerd_version": CONTAINERD_VERSION,
        "containerd_config": CONTAINERD_V3, "helm_version": "v3.19.0+g3d8990f",
        "secure_boot": "efivar= 6 0 0 0 0", "auto_upgrades": 'APT::Periodic::Unattended-Upgrade "0";',
    }
    pci = []
    for i in range(gpus):
        d = f"/sys/bus/pci/devices/0000:{0x18 + i:02x}:00.0"
        pci += [f"{d}/vendor:0x10de", f"{d}/device:0x27b8", f"{d}/class:0x030200"]
    sections["pci"] = "\n".join(pci)
    return "".join(f"\n@@gpuk8s:{k}\n{v}\n" for k, v in sections.items()) + "\n@@gpuk8s:end\n"


def bare_probe(name, i, address, swap=True):
    """A bare host: no containerd, no Kubernetes tools, swap on, ip_forward off."""
    out = probe_output(name, f"uuid-{i}", f"52:54:00:00:01:{i:02x}", address)
    out = out.replace("containerd=/usr/sbin/containerd\n", "").replace("helm=/usr/sbin/helm", "")
    out = re.sub(r"@@gpuk8s:containerd_version\n[^\n]*\n", "@@gpuk8s:containerd_version\n\n", out)
    out = re.sub(r"@@gpuk8s:containerd_config\n(.|\n)*?\n\n@@", "@@gpuk8s:containerd_config\n\n@@", out)
    out = out.replace("net/ipv4/ip_forward=1", "net/ipv4/ip_forward=0")
    out = out.replace("\n@@gpuk8s:binaries\n", "\n@@gpuk8s:binaries\napt-get=/usr/bin/apt-get\n")
    if swap:
        out = out.replace("Filename\tType\tSize\tUsed\tPriority",
                          "Filename\tType\tSize\tUsed\tPriority\n/swap.img file 2097148 0 -2")
    return out


def _ca_pem() -> str:
    """A self-signed CA certificate (the CA hash is computed from it)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class FakeCluster:
    """What the API server of the fake cluster knows."""

    nodes: list[str] = field(default_factory=list)
    calico_applied: bool = False
    ca_pem: str = ""
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    # join's TCP connect to the endpoint from each host: refused from the hosts named here
    endpoint_refused_from: set[str] = field(default_factory=set)

    not_ready: set[str] = field(default_factory=set)         # nodes whose Ready is False (reset)
    rbac: dict[str, dict] = field(default_factory=dict)      # "clusterrole/view" -> object (kubeconfig)
    node_status: dict[str, dict] = field(default_factory=dict)  # more status per node (verify: nodeInfo, allocatable)

    def node_list(self) -> list[dict]:
        def ready(n: str) -> list[dict]:
            return [{"type": "Ready", "status": "False" if n in self.not_ready else "True"}]
        return [{"kind": "Node", "metadata": {"name": n, "labels": dict(self.labels.get(n, {}))},
                 "spec": {}, "status": {"conditions": ready(n), **self.node_status.get(n, {})}}
                for n in self.nodes]

    def calico_objects(self, pod_cidr: str = "10.244.0.0/16") -> list[dict]:
        if not self.calico_applied:
            return []
        avail = [{"type": "Available", "status": "True"}]
        return [{"kind": "Installation", "metadata": {"name": "default"},
                 "spec": {"calicoNetwork": {"ipPools": [{"cidr": pod_cidr}]}}},
                {"kind": "TigeraStatus", "metadata": {"name": "calico"}, "status": {"conditions": avail}}]


def _items(items: list[dict]) -> str:
    return json.dumps({"kind": "List", "items": items})


KUBE_DEB = "1.36.2-1.1"


@dataclass
class FakeNode:
    """A node as verify's host checks see it through testinfra (a healthy Ubuntu node by default).

    Answers the exact commands testinfra's modules and gpuk8s/checks/verify_host.py send; any
    other command exits 127 (not found), so a check that starts sending something new fails here
    until the fake learns it. `hang`: command prefixes that time out; `lose`: command prefixes at
    which the connection is lost (TransportError "lost", as SSHTransport raises it)."""

    systemd: bool = True
    units: dict[str, tuple[str, str, str]] = field(default_factory=lambda: {   # active, sub, enabled
        "containerd": ("active", "running", "enabled"), "kubelet": ("active", "running", "enabled")})
    swaps: list[str] = field(default_factory=list)
    fstab: str = "UUID=abc / ext4 defaults 0 1\n"
    modules: set[str] = field(default_factory=lambda: {"overlay", "br_netfilter"})
    sysctls: dict[str, str] = field(default_factory=lambda: {
        "net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1",
        "net.bridge.bridge-nf-call-ip6tables": "1"})
    packages: dict[str, tuple[str, str]] = field(default_factory=lambda: {   # name -> (want, version)
        p: ("hold", KUBE_DEB) for p in ("kubelet", "kubeadm", "kubectl")})
    files: dict[str, str] = field(default_factory=dict)   # more files `cat` reads
    containerd_dump: str | None = None    # None: the host's config.toml (or CONTAINERD_V3)
    containerd_dump_rc: int = 0
    smi_gpus: int = 0                     # GPUs nvidia-smi lists
    smi_failure: tuple[int, str] | None = None   # (exit code, output)
    kernel_log: list[str] = field(default_factory=list)
    kernel_log_readable: bool = True
    hang: tuple[str, ...] = ()
    lose: tuple[str, ...] = ()
    seen: list[str] = field(default_factory=list)      # every command answered, in order
    batches: list[list[str]] = field(default_factory=list)   # the commands of each batch
    batch_reply: str | None = None    # the whole answer to a batch (None: each command's)

    def answer(self, cmd: str, host: "FakeHost") -> tuple[int, str, str]:
        import shlex

        self.seen.append(cmd)
        if any(cmd.startswith(p) for p in self.lose):
            raise TransportError("lost", f"{host.host_name}: connection lost during `{cmd}`")
        if any(cmd.startswith(p) for p in self.hang):
            raise TransportError("timeout", f"{host.host_name}: `{cmd}` did not finish within 30s")
        if cmd.startswith("{ journalctl -k -b"):
            keep = shlex.split(cmd.split("| awk", 1)[1])[1].split("=", 1)[1]
            return self._kernel_log(int(keep))
        w = shlex.split(cmd)
        if w[:2] == ["test", "-d"]:
            path = w[2]
            ok = (path == "/run/systemd/system/" and self.systemd) or (
                path.startswith("/sys/module/") and path.rsplit("/", 1)[1] in self.modules)
            return (0 if ok else 1), "", ""
        if w[:2] == ["systemctl", "show"]:
            unit = w[2]
            if unit not in self.units:
                return 0, (f"Id={unit}.service\nLoadState=not-found\nActiveState=inactive\n"
                           "SubState=dead\nUnitFileState=\n"), ""
            a, sub, e = self.units[unit]
            return 0, (f"Id={unit}.service\nLoadState={'masked' if e == 'masked' else 'loaded'}\n"
                       f"ActiveState={a}\nSubState={sub}\nUnitFileState={e}\n"), ""
        if w[:2] == ["cat", "--"]:
            text = self._file(w[2], host)
            return (0, text, "") if text is not None else (1, "", f"cat: {w[2]}: No such file or directory")
        if w[:3] == ["containerd", "config", "dump"]:
            if self.containerd_dump_rc:
                return self.containerd_dump_rc, "", "containerd: failed to load TOML"
            dump = self.containerd_dump
            return 0, dump if dump is not None else host.files.get(CONTAINERD_CONFIG, CONTAINERD_V3), ""
        if w[:2] == ["dpkg-query", "-W"]:
            fmt, names = w[3], w[4:]
            out, err = "", ""
            for n in names:
                if n not in self.packages:
                    err += f"dpkg-query: no packages found matching {n}\n"
                    continue
                want, version = self.packages[n]
                out += (fmt.replace("${Package}", n).replace("${Status}", f"{want} ok installed")
                        .replace("${Version}", version).replace("\\n", "\n"))
            return (1 if err else 0), out, err
        if w[0] == "nvidia-smi":
            if self.smi_failure:
                return self.smi_failure[0], self.smi_failure[1], ""
            return 0, "".join(f"{i}, 00000000:{0x18 + i:02X}:00.0, NVIDIA L4\n" for i in range(self.smi_gpus)), ""
        return 127, "", f"sh: 1: {w[0]}: not found"

    def _file(self, path: str, host: "FakeHost") -> str | None:
        if path == "/proc/swaps":
            return "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n" + "".join(
                f"{d}                               partition\t2097148\t\t0\t\t-2\n" for d in self.swaps)
        if path == "/etc/fstab":
            return self.fstab
        if path.startswith("/proc/sys/"):
            key = path[len("/proc/sys/"):].replace("/", ".")
            return self.sysctls[key] + "\n" if key in self.sysctls else None
        return self.files.get(path, host.files.get(path))

    def _kernel_log(self, keep: int) -> tuple[int, str, str]:
        if not self.kernel_log_readable:
            return 0, "@@gpuk8s:nolog\n@@gpuk8s:xids 0\n", ""
        xids = [ln for ln in self.kernel_log if "NVRM: Xid" in ln]
        return 0, "".join(ln + "\n" for ln in xids[:keep]) + f"@@gpuk8s:xids {len(xids)}\n", ""


class FakeHost:
    """A transport to one fake host (see the module docstring)."""

    def __init__(self, name: str, probe: str, calls: list, cluster: FakeCluster | None = None, *,
                 sudo_needs_password: bool = False, read_exit: int | None = None):
        self.host_name, self.probe, self.calls = name, probe, calls
        self.cluster = cluster or FakeCluster()
        self.sudo_needs_password = sudo_needs_password
        self.read_exit = read_exit      # answer every non-probe command with this status
        self.node = FakeNode()          # what verify's host checks read through testinfra
        self.privileged = True
        self.files: dict[str, str] = {}
        self.state_files: list[str] = []
        self.leftovers: list[str] = []   # what `gpuk8s reset`'s read finds after kubeadm reset
        self.timeouts: list[float | None] = []   # the timeout of each call, in order

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, cmd, *, stdin=None, timeout=None, sudo=True) -> Result:
        rendered = cmd.render()
        self.calls.append((self.host_name, rendered, stdin, sudo))
        self.timeouts.append(timeout)
        if sudo and self.sudo_needs_password:
            raise TransportError("sudo-password", f"{self.host_name}: sudo asks for a password")
        if rendered.startswith("sh -s --"):
            return self._result(cmd, 0, self._probe(sudo))
        if self.read_exit is not None:
            return self._result(cmd, self.read_exit, "", "not found")
        status, out, err = self._answer(rendered, stdin)
        return self._result(cmd, status, out, err)

    @staticmethod
    def _result(cmd, status: int, out: str, err: str = "") -> Result:
        return Result(cmd.masked(), status, out, err, 0.0)

    def _probe(self, sudo: bool) -> str:
        out = self.probe if sudo else self.probe.replace("@@gpuk8s:uid\n0", "@@gpuk8s:uid\n1000")
        if self.state_files:
            out = out.replace("\n@@gpuk8s:end\n",
                              "\n@@gpuk8s:k8s_state\n" + "\n".join(self.state_files) + "\n\n@@gpuk8s:end\n")
        return out

    def _answer(self, rendered: str, stdin) -> tuple[int, str, str]:
        for prefix, handler in self._handlers():
            if rendered.startswith(prefix) or prefix in rendered:
                return handler(rendered, stdin)
        return 0, "", ""

    def _handlers(self) -> list[tuple[str, Callable]]:
        return [
            ("gpuk8s-testinfra", self._testinfra),   # first: its command may hold others' prefixes
            ("kubectl --kubeconfig /etc/kubernetes/admin.conf get clusterrole", self._rbac_get),
            ("kubectl --kubeconfig /etc/kubernetes/admin.conf delete node", self._delete_node),
            ("kubeadm reset -f", self._reset),
            ("gpuk8s-leftovers", lambda r, s: (0, "".join(f"{x}\n" for x in self.leftovers), "")),
            ("gpuk8s-cleanup", self._cleanup),
            (_quoted(SECRET_SCRIPT), self._with_secret),
            (_quoted(PUT_SCRIPT), self._put),
            ("kubectl --kubeconfig /etc/kubernetes/admin.conf get", self._kubectl_get),
            ("kubectl --kubeconfig /etc/kubernetes/admin.conf apply", self._kubectl_apply),
            ("kubectl --kubeconfig /etc/kubernetes/admin.conf label", self._kubectl_label),
            (f"cat {CA_CERT}", lambda r, s: (0, self.cluster.ca_pem, "")),
            (f"cat {ADMIN_CONF}", lambda r, s: (0, ADMIN_KUBECONFIG, "")),
            ("containerd --version", lambda r, s: (0, CONTAINERD_VERSION, "")),
            ("containerd config default", lambda r, s: (0, CONTAINERD_V3, "")),
            ("containerd config dump", lambda r, s: (0, self.files.get(CONTAINERD_CONFIG, CONTAINERD_V3), "")),
            ("sha256sum", self._sha256),
            ("getent passwd", lambda r, s: (0, "ubuntu:x:1000:1000::/home/ubuntu:/bin/bash\n", "")),
            ("gpuk8s-kubeconfig", lambda r, s: (0, "1\n" + ADMIN_KUBECONFIG, "")),
            ("gpuk8s-endpoint", self._endpoint),
        ]

    def _endpoint(self, rendered: str, stdin) -> tuple[int, str, str]:
        """join's TCP connect to the endpoint ($1 $2 after the script), as bash's /dev/tcp reports it."""
        host, port = rendered.rsplit(" gpuk8s-endpoint ", 1)[1].split()[:2]
        if self.host_name in self.cluster.endpoint_refused_from:
            return 1, f"bash /dev/tcp/{host}/{port}\n", (f"gpuk8s-endpoint: connect: Connection refused\n"
                                                        f"gpuk8s-endpoint: line 1: /dev/tcp/{host}/{port}: Connection refused")
        return 0, f"bash /dev/tcp/{host}/{port}\n", ""

    def _rbac_get(self, rendered: str, stdin) -> tuple[int, str, str]:
        ref = rendered.split(" get ", 1)[1].split()[0]
        obj = self.cluster.rbac.get(ref)
        return 0, (json.dumps(obj) if obj else ""), ""

    def _delete_node(self, rendered: str, stdin) -> tuple[int, str, str]:
        name = rendered.split(" delete node ", 1)[1].split()[0]
        if name in self.cluster.nodes:
            self.cluster.nodes.remove(name)
        return 0, f'node "{name}" deleted', ""

    def _reset(self, rendered: str, stdin) -> tuple[int, str, str]:
        """kubeadm reset -f: the node's kubeadm files go (a control plane's etcd member with them)."""
        self.state_files.clear()
        self.leftovers = ["cni", "kubelet-state", "link:cali0123456789a"]   # what kubeadm reset leaves
        return 0, "[reset] Deleting contents of directories: [/etc/kubernetes/manifests]", ""

    def _cleanup(self, rendered: str, stdin) -> tuple[int, str, str]:
        import shlex

        items = shlex.split(rendered)[7:]   # sh -c SCRIPT gpuk8s-cleanup CNI KUBELET DROP-IN items...
        self.leftovers = [x for x in self.leftovers if x not in items]
        return 0, "", ""

    def _testinfra(self, rendered: str, stdin) -> tuple[int, str, str]:
        """Commands testinfra built (gpuk8s/testinfra_backend.py): one (`sh -c 'eval "$1"'
        gpuk8s-testinfra CMD`) or a batch (`sh -c BATCH gpuk8s-testinfra CMD...`), answered
        from self.node; a batch in the backend's framing (marker lines)."""
        import shlex

        from gpuk8s.testinfra_backend import _BATCH

        words = shlex.split(rendered)
        i = words.index("gpuk8s-testinfra")
        script, args = words[i - 1], words[i + 1:]
        if script != _BATCH:
            return self.node.answer(args[0], self)
        marker, cmds = args[0], args[1:]
        self.node.batches.append(cmds)
        if self.node.batch_reply is not None:   # a host that answers the batch with nonsense
            return 0, self.node.batch_reply, ""
        out = ""
        for n, c in enumerate(cmds, 1):
            rc, o, e = self.node.answer(c, self)
            out += f"{marker} {n} {rc}\n{o}\n{marker} stderr\n{e}\n"
        return 0, out + f"{marker} end {len(cmds)}\n", ""

    def _with_secret(self, rendered: str, stdin) -> tuple[int, str, str]:
        if " kubeadm kubeconfig user " in rendered:
            return 0, user_kubeconfig(rendered.split("--client-name ", 1)[1].split()[0]), ""
        if " kubeadm init --config" in rendered and "upload-certs --upload-certs --config" not in rendered:
            if not self.cluster.ca_pem:
                self.cluster.ca_pem = _ca_pem()
            self._joined(ADMIN_CONF, KUBELET_CONF, CA_CERT)
        elif " kubeadm join " in rendered:
            self._joined(KUBELET_CONF)
        return 0, "", ""

    def _joined(self, *files: str) -> None:
        self.state_files += [f for f in files if f not in self.state_files]
        if self.host_name not in self.cluster.nodes:
            self.cluster.nodes.append(self.host_name)

    def _put(self, rendered: str, stdin) -> tuple[int, str, str]:
        path = rendered.split(" gpuk8s-put ", 1)[1].split()[0]
        self.files[path] = stdin if isinstance(stdin, str) else (stdin or b"").decode()
        return 0, "changed\n", ""

    def _sha256(self, rendered: str, stdin) -> tuple[int, str, str]:
        path = rendered.split()[-1]
        if path not in self.files:
            return 1, "", f"sha256sum: {path}: No such file or directory"
        return 0, f"{hashlib.sha256(self.files[path].encode()).hexdigest()}  {path}\n", ""

    def _kubectl_get(self, rendered: str, stdin) -> tuple[int, str, str]:
        if ADMIN_CONF not in self.state_files:
            return 1, "", "The connection to the server localhost:8080 was refused"
        if "installations.operator.tigera.io" in rendered and not self.cluster.calico_applied:
            return 1, "", f'error: {NO_SUCH_TYPE} "installations"'
        if " get tigerastatus " in rendered:
            return 0, _items(self.cluster.calico_objects()[1:]), ""
        types = rendered.split(" get ", 1)[1].split()[0].split(",")
        if "clusterpolicies.nvidia.com" in types and not self.has_clusterpolicy_crd():
            return 1, "", f'error: {NO_SUCH_TYPE} "clusterpolicies"'   # kubectl refuses the whole call
        items = self.cluster.node_list()
        if "installations.operator.tigera.io" in rendered:
            items += self.cluster.calico_objects()
        return 0, _items(items + self.more_items(types)), ""

    def has_clusterpolicy_crd(self) -> bool:
        """The GPU Operator's chart installed its CRD (tests/unit/test_gpu_up.py's host says)."""
        return False

    def more_items(self, types: list[str]) -> list[dict]:
        """Objects of the other types of a `kubectl get A,B,C` (the GPU layer's; none here)."""
        return []

    def _kubectl_apply(self, rendered: str, stdin) -> tuple[int, str, str]:
        if "calico-installation.yaml" in rendered:
            self.cluster.calico_applied = True
        return 0, "", ""

    def _kubectl_label(self, rendered: str, stdin) -> tuple[int, str, str]:
        """`kubectl label node A [B ...] K=V [K2-] ...`: resources first, then the pairs."""
        words = [w for w in rendered.split()[rendered.split().index("node") + 1:] if not w.startswith("--")]
        names = [w for w in words if "=" not in w and not w.endswith("-")]
        for node in names:
            for kv in words[len(names):]:
                if kv.endswith("-"):
                    self.cluster.labels.setdefault(node, {}).pop(kv[:-1], None)
                else:
                    key, _, value = kv.partition("=")
                    self.cluster.labels.setdefault(node, {})[key] = value
        return 0, "", ""


def user_kubeconfig(user: str, days: int = 1) -> str:
    """What `kubeadm kubeconfig user --client-name USER` prints: a client certificate (CN USER)
    with its key, valid for `days` from 2026-01-01."""
    import base64
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")]))
            .public_key(key.public_key()).serial_number(2).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    crt = base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()
    return (f"apiVersion: v1\nkind: Config\nclusters:\n- name: kubernetes\n  cluster:\n"
            f"    server: https://10.0.0.11:6443\n    certificate-authority-data: QUJD\n"
            f"contexts:\n- name: {user}@kubernetes\n  context:\n    cluster: kubernetes\n    user: {user}\n"
            f"current-context: {user}@kubernetes\nusers:\n- name: {user}\n  user:\n"
            f"    client-certificate-data: {crt}\n"
            f"    client-key-data: {base64.b64encode(pem_key).decode()}\n")


def _quoted(script: str) -> str:
    """How a script constant appears in a rendered command line (one single-quoted word)."""
    import shlex

    return shlex.quote(script)


def opener(probes: dict[str, str], calls: list, *, cluster: FakeCluster | None = None,
           refuse=(), sudo_pw=(), read_exit: int | None = None):
    """An open_transport that connects to fake hosts (refusing the named ones)."""
    cluster = cluster or FakeCluster()
    hosts: dict[str, FakeHost] = {}

    def open_transport(host, accept_new_host_keys=False):
        if host.name in refuse:
            raise TransportError("refused", f"{host.name}: connection refused")
        if host.name not in hosts:
            hosts[host.name] = FakeHost(host.name, probes[host.name], calls, cluster,
                                        sudo_needs_password=host.name in sudo_pw, read_exit=read_exit)
        return hosts[host.name]

    open_transport.hosts = hosts  # type: ignore[attr-defined]
    open_transport.cluster = cluster  # type: ignore[attr-defined]
    return open_transport
