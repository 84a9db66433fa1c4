"""kube-vip in the lab: the static pod gpuk8s writes (cluster.vip), ARP mode, control plane only.

What the real kube-vip does, and the source of each behaviour simulated here:
- It runs as a static pod (the kubelet starts every manifest in /etc/kubernetes/manifests:
  kubelet --pod-manifest-path / staticPodPath). The lab has no kubelet daemon, so
  `daemon()` is that pod's process: started by `kubeadm init` / `kubeadm join --control-plane` /
  `systemctl start kubelet` on a control plane, in the host's namespaces, reading the manifest
  again every retry period (a changed manifest is a restarted pod: kubelet's static pod sync).
- Leader election through the Kubernetes API (env vip_leaderelection, Lease vip_leasename in
  cp_namespace, vip_leaseduration / vip_renewdeadline / vip_retryperiod seconds:
  kube-vip.io/docs/installation/static, "Generating a Manifest"; client-go's leaderelection). The
  API it asks is its own node's (hostAliases `kubernetes` -> 127.0.0.1), through the kubeconfig
  mounted at /etc/kubernetes/admin.conf. Simulated: the lease in shared/kube-vip-lease.json (one
  per lease name), renewed each retry period; a candidate takes it only when it is free or
  expired (lease duration), so the first to start leads and keeps leading while it renews.
- It cannot lead, and holds no VIP, when: its interface does not exist (kube-vip fails to find
  vip_interface), the kubeconfig file is missing (a hostPath without a type makes an empty
  directory: no kubeconfig), no API server runs on its node (no kube-apiserver manifest, or the
  node is not a control plane of the cluster), or the kubeconfig has no rights: admin.conf before
  kubeadm init created its ClusterRoleBinding, on Kubernetes >= 1.29 (kube-vip/kube-vip#684,
  "kube-vip requires super-admin.conf with Kubernetes 1.29": leases.coordination.k8s.io is
  forbidden for kubernetes-admin until then; super-admin.conf is in system:masters).
- The leader adds the VIP (/32, or /128: vip_subnet) to vip_interface and announces it with
  gratuitous ARP (kube-vip pkg/vip/arp.go: ARP requests and replies for the address), so the
  neighbours' caches move at once; on leaving (pod stopped: kubeadm reset removes the manifests,
  or leadership lost) it deletes the address. A stopped kubelet leaves running pods running,
  as the real kubelet does (containers outlive `systemctl stop kubelet`).
Not simulated: BGP, services (svc_enable), the load balancer (lb_enable), DNS addresses, IPv6 NDP.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import labsim

MANIFESTS = Path("/etc/kubernetes/manifests")
APISERVER = MANIFESTS / "kube-apiserver.yaml"
KUBELET_CONF = Path("/etc/kubernetes/kubelet.conf")
PIDFILE = Path("/run/gpuk8s-lab-kube-vip.pid")
STATE = Path("/run/gpuk8s-lab-kube-vip.json")     # the address this host added, to remove it
LOG = Path("/var/log/gpuk8s-lab-kube-vip.log")
IMAGE = "kube-vip/kube-vip:"
MAX_LIFETIME = 6 * 3600.0                           # the daemon's bound (a lab lives minutes)


def _lease_file(name: str) -> Path:
    return labsim.SHARED / f"kube-vip-lease-{name}.json"


def _log(msg: str) -> None:
    try:
        LOG.parent.mkdir(parents=True, exist_ok=True)
        with open(LOG, "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")
    except OSError:
        pass


def pod_config() -> dict | None:
    """This host's kube-vip static pod, as the kubelet would read it; None without one."""
    if not MANIFESTS.is_dir():
        return None
    import yaml
    for p in sorted(MANIFESTS.glob("*.yaml")):
        try:
            doc = yaml.safe_load(p.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(doc, dict) or doc.get("kind") != "Pod":
            continue
        containers = (doc.get("spec") or {}).get("containers") or []
        if not containers or IMAGE not in str(containers[0].get("image", "")):
            continue
        c = containers[0]
        env = {e.get("name"): e.get("value") for e in c.get("env") or [] if isinstance(e, dict)}
        mounts = {m.get("name"): m.get("mountPath") for m in c.get("volumeMounts") or []}
        vols = {v.get("name"): (v.get("hostPath") or {}).get("path") for v in (doc.get("spec") or {}).get("volumes") or []}
        kubeconfig = next((vols.get(n) for n, mp in mounts.items() if mp == "/etc/kubernetes/admin.conf"), None)
        def num(key: str, default: float) -> float:
            try:
                return float(env.get(key) or default)
            except ValueError:
                return default
        return {"file": str(p), "address": env.get("address") or env.get("vip_address"),
                "interface": env.get("vip_interface"), "arp": env.get("vip_arp") == "true",
                "cp": env.get("cp_enable") == "true", "election": env.get("vip_leaderelection") == "true",
                "lease": env.get("vip_leasename") or "plndr-cp-lock",
                "subnet": env.get("vip_subnet") or env.get("vip_cidr") or "32",
                "duration": num("vip_leaseduration", 5), "retry": num("vip_retryperiod", 1),
                "kubeconfig": kubeconfig}
    return None


def _kube_minor(c: dict) -> int:
    v = labsim._minor_of(c.get("version")) if c.get("version") else None
    return v if v is not None else labsim._kubeadm_minor()


def why_not_leader(cfg: dict, c: dict, me: str) -> str | None:
    """Why this host's kube-vip cannot hold the VIP now (None: it can)."""
    if not (cfg["arp"] and cfg["cp"] and cfg["election"]) or not cfg["address"]:
        return "the lab simulates ARP mode with cp_enable and vip_leaderelection only"
    iface = cfg["interface"] or ""
    if not iface or "/" in iface or not Path(f"/sys/class/net/{iface}").exists():
        return f"unable to find interface {iface!r}"
    kc = cfg["kubeconfig"]
    if not kc or not Path(kc).is_file():
        return f"no kubeconfig at {kc} (the hostPath volume is an empty directory)"
    if not APISERVER.exists() or not c.get("endpoint"):
        return "no API server on this node (dial tcp 127.0.0.1: connection refused)"
    member = any(n.get("host") == me and n.get("cp") for n in c.get("nodes", {}).values())
    if not member and c.get("first_cp") != me:
        return "no API server on this node (not a control plane of the cluster)"
    if os.path.basename(kc) == "admin.conf" and not c.get("admin_binding", True) and _kube_minor(c) >= 29:
        return ('leases.coordination.k8s.io "%s" is forbidden: User "kubernetes-admin" cannot get resource '
                '"leases" in API group "coordination.k8s.io" in the namespace "kube-system"' % cfg["lease"])
    return None


def _lease(cfg: dict, me: str, can: bool) -> bool:
    """One leader-election step; returns whether this host holds the lease afterwards."""
    f = _lease_file(cfg["lease"])
    f.parent.mkdir(parents=True, exist_ok=True)
    with open(str(f) + ".lock", "a+") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        try:
            lease = json.loads(f.read_text())
        except (OSError, ValueError):
            lease = {}
        t = time.monotonic()          # one clock for every host of this machine
        mine = lease.get("holder") == me
        expired = t - float(lease.get("renew", -1e18)) > cfg["duration"]
        if not can:
            return False              # cannot reach the API: no renewal, the lease runs out
        if mine or not lease.get("holder") or expired:
            lease = {"holder": me, "renew": t, "transitions": lease.get("transitions", 0) + (0 if mine else 1)}
            tmp = f.with_name(f.name + f".{os.getpid()}")
            tmp.write_text(json.dumps(lease))
            os.replace(tmp, f)
            return True
        return False


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


def _has_address(iface: str, cidr: str) -> bool:
    r = _ip("-o", "addr", "show", "dev", iface)
    return r.returncode == 0 and f" {cidr} " in r.stdout + " "


def _garp(iface: str, address: str) -> None:
    """Gratuitous ARP, a request and a reply, as kube-vip's ARP mode sends them."""
    try:
        mac = bytes.fromhex(Path(f"/sys/class/net/{iface}/address").read_text().strip().replace(":", ""))
        ip = socket.inet_aton(address)
    except (OSError, ValueError):
        return
    bcast = b"\xff" * 6
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((iface, 0))
        for op in (1, 2):
            arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac + ip + (b"\x00" * 6 if op == 1 else bcast) + ip
            s.send(bcast + mac + struct.pack("!H", 0x0806) + arp)


def _set_vip(cfg: dict | None, hold: bool) -> None:
    """Add the VIP (and announce it) or remove what this host added."""
    try:
        held = json.loads(STATE.read_text())
    except (OSError, ValueError):
        held = None
    if hold and cfg:
        cidr = f"{cfg['address']}/{cfg['subnet']}"
        if held and (held["cidr"], held["iface"]) != (cidr, cfg["interface"]):
            _set_vip(None, False)
        if not _has_address(cfg["interface"], cidr):
            r = _ip("addr", "add", cidr, "dev", cfg["interface"])
            if r.returncode != 0 and "File exists" not in r.stderr:
                _log(f"ip addr add {cidr} dev {cfg['interface']}: {r.stderr.strip()}")
                return
            STATE.write_text(json.dumps({"cidr": cidr, "iface": cfg["interface"]}))
            _log(f"added {cidr} to {cfg['interface']}")
            if ":" not in cfg["address"]:
                _garp(cfg["interface"], cfg["address"])
        return
    if held:
        _ip("addr", "del", held["cidr"], "dev", held["iface"])
        _log(f"removed {held['cidr']} from {held['iface']}")
        STATE.unlink(missing_ok=True)


def step(c: dict | None = None) -> tuple[bool, str | None]:
    """One pass of this host's kube-vip: (holds the VIP, why it cannot lead)."""
    cfg = pod_config()
    if cfg is None:
        _set_vip(None, False)
        return False, "no kube-vip static pod"
    me = labsim.host_name()
    if c is None:
        with labsim.cluster_lock(shared=True) as snap:
            c = snap
    why = why_not_leader(cfg, c, me)
    holds = _lease(cfg, me, why is None)
    _set_vip(cfg, holds)
    return holds, why


def init_gate(c: dict, endpoint: str) -> None:
    """During `kubeadm init` (wait-control-plane): with a kube-vip pod for the endpoint's address,
    init's client reaches the endpoint only once kube-vip holds the VIP. When it cannot, init
    fails as kubeadm does when its first client cannot reach controlPlaneEndpoint
    (cmd/kubeadm/app/cmd/init.go Client(): EnsureAdminClusterRoleBinding retries until its
    timeout, then "could not bootstrap the admin user in file admin.conf")."""
    cfg = pod_config()
    host = endpoint.rsplit(":", 1)[0].strip("[]")
    if cfg is None:
        return
    c["kube_vip"] = True          # the cluster runs kube-vip: joining control planes start it too
    if cfg["address"] != host:
        return
    holds, why = step(c)
    _log(f"init: holds={holds} why={why}")
    if not holds:
        labsim.set_unit("kubelet.service", "active")
        raise labsim._fatal("wait-control-plane", "cannot obtain client without bootstrap: could not bootstrap the "
                            "admin user in file admin.conf: unable to create ClusterRoleBinding: client rate "
                            "limiter Wait returned an error: context deadline exceeded")


def ensure_running(expected: bool = False) -> None:
    """Start this host's kube-vip pod process unless it runs (the kubelet's static pod start).

    Only where a kube-vip manifest is, or `expected` (a control plane joining a cluster whose
    first control plane ran kube-vip: gpuk8s writes the manifest right after the join), so other
    clusters' hosts carry no idle process."""
    if not expected and pod_config() is None:
        return
    try:
        pid = int(PIDFILE.read_text())
        os.kill(pid, 0)
        if Path(f"/proc/{pid}/cmdline").read_bytes().find(b"kube-vip-daemon") >= 0:
            return
    except (OSError, ValueError):
        pass
    code = ('import sys; sys.path.insert(0, "/run/gpuk8s-lab/sim"); '
            'sys.path.append(open("/run/gpuk8s-lab/pypath").read().strip()); import labsim; '
            'sys.exit(labsim.main(["labsim.py", "kube-vip-daemon"]))')
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(os.devnull, "rb") as null, open(LOG, "ab") as log:
        p = subprocess.Popen([sys.executable, "-S", "-c", code, "kube-vip-daemon"], stdin=null, stdout=log,
                             stderr=log, start_new_session=True, close_fds=True, cwd="/")
    PIDFILE.write_text(str(p.pid))


def daemon(args: list[str]) -> int:
    """The pod's process: one step each retry period while the node is a node (kubelet.conf)."""
    PIDFILE.write_text(str(os.getpid()))
    start = time.monotonic()
    while time.monotonic() - start < MAX_LIFETIME:
        if not KUBELET_CONF.exists() and not MANIFESTS.is_dir():
            break                                       # kubeadm reset: the pods are gone
        try:
            holds, why = step()
        except Exception as e:  # noqa: BLE001 - a bad pass is retried, as a restarted pod would
            _log(f"step failed: {type(e).__name__}: {e}")
            holds, why = False, str(e)
        cfg = pod_config()
        time.sleep(cfg["retry"] if cfg else 1.0)
    _set_vip(None, False)
    PIDFILE.unlink(missing_ok=True)
    return 0
