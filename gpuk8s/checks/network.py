"""Network checks: forwarding and bridge sysctls, ports, firewall, CIDRs, node IP, endpoint."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from gpuk8s.checks.base import FAIL, PASS, SKIP, WARN, CheckContext, CheckResult
from gpuk8s.checks.fixes import SYSCTL_FIX
from gpuk8s.checks.preflight import PREFLIGHT
from gpuk8s.paths import KUBELET_CONF
from gpuk8s.shell import quote

PORT_NAMES = {
    6443: "kube-apiserver",
    2379: "etcd client",
    2380: "etcd peer",
    10250: "kubelet",
    10256: "kube-proxy",
    10257: "kube-controller-manager",
    10259: "kube-scheduler",
}
CONTROL_PLANE_PORTS = (6443, 2379, 2380, 10250, 10256, 10257, 10259)
WORKER_PORTS = (10250, 10256)
# Tried in order when suggesting a pod/service CIDR that overlaps nothing on the host.
CIDR_CANDIDATES = ("10.244.0.0/16", "10.96.0.0/12", "172.20.0.0/16", "10.200.0.0/16",
                   "100.64.0.0/16", "172.31.0.0/16")


@PREFLIGHT.check("ip-forward", "IPv4 forwarding",
                 "kubeadm's FileContent--proc-sys-net-ipv4-ip_forward check fails unless it is 1.",
                 repaired_by_up=True)
def check_ip_forward(ctx: CheckContext) -> CheckResult:
    keys = ["net.ipv4.ip_forward"]
    if _is_ipv6(ctx.inventory.cluster.pod_cidr):
        keys.append("net.ipv6.conf.all.forwarding")
    fix = SYSCTL_FIX
    if len(keys) > 1:
        fix += ("\nprintf 'net.ipv6.conf.all.forwarding = 1\\n' > /etc/sysctl.d/k8s-ipv6.conf "
                "&& sysctl --system")
    bad = {k: ctx.facts.sysctls.get(k) for k in keys if ctx.facts.sysctls.get(k) != "1"}
    if not bad:
        return CheckResult("ip-forward", PASS, " and ".join(f"{k} = 1" for k in keys))
    desc = ", ".join(f"{k} = {v}" if v is not None else f"{k} unreadable" for k, v in bad.items())
    return CheckResult("ip-forward", FAIL, f"{desc}: kubeadm's preflight requires 1", fix)


def _is_ipv6(cidr: str) -> bool:
    """True for a valid IPv6 network; False for IPv4 and for text that is no network."""
    try:
        return ipaddress.ip_network(cidr, strict=False).version == 6
    except ValueError:
        return False


@PREFLIGHT.check("bridge-netfilter", "Bridged traffic passes iptables",
                 "kubeadm stopped checking it in 1.30, but Calico NetworkPolicy and many CNIs "
                 "assume it.", repaired_by_up=True)
def check_bridge_netfilter(ctx: CheckContext) -> CheckResult:
    keys = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables")
    values = {k: ctx.facts.sysctls.get(k) for k in keys}
    if all(v == "1" for v in values.values()):
        return CheckResult("bridge-netfilter", PASS, " and ".join(f"{k} = 1" for k in keys))
    if all(v is None for v in values.values()):
        return CheckResult("bridge-netfilter", WARN,
                           "net.bridge.* sysctls do not exist (br_netfilter not loaded)",
                           SYSCTL_FIX)
    desc = ", ".join(f"{k} = {v if v is not None else 'missing'}" for k, v in values.items()
                     if v != "1")
    return CheckResult("bridge-netfilter", WARN, desc, SYSCTL_FIX)


@PREFLIGHT.check("ports-free", "Kubernetes ports free",
                 "kubeadm fails when 6443, 2379-2380, 10250, 10257 or 10259 is already in use.")
def check_ports_free(ctx: CheckContext) -> CheckResult:
    if ctx.is_k8s_node:
        return CheckResult("ports-free", SKIP,
                           f"already a Kubernetes node ({KUBELET_CONF} exists): its ports are in "
                           "use by its own components")
    wanted = set(WORKER_PORTS)
    if ctx.host.is_control_plane:
        wanted |= set(CONTROL_PLANE_PORTS)
    busy = sorted(p for p in wanted if p in ctx.facts.listening_ports)
    if not busy:
        return CheckResult("ports-free", PASS,
                           f"TCP {', '.join(str(p) for p in sorted(wanted))} are free")
    desc = ", ".join(f"{p} ({PORT_NAMES[p]})" for p in busy)
    sport = " or ".join(f"sport = :{p}" for p in busy)
    fix = f"ss -ltnp '( {sport} )'   # find the owner, then stop it: systemctl disable --now <unit>"
    if ctx.facts.kubernetes_files:
        fix = ("kubeadm reset -f   # leftovers of an earlier init/join: "
               f"{', '.join(quote(p) for p in ctx.facts.kubernetes_files)}\n" + fix)
    return CheckResult("ports-free", FAIL, f"TCP port(s) already in use: {desc}", fix)


@PREFLIGHT.check("firewall", "Host firewall",
                 "firewalld/ufw drop forwarded pod traffic, VXLAN and BGP; Calico recommends "
                 "disabling them (DOMAIN 6 #12).")
def check_firewall(ctx: CheckContext) -> CheckResult:
    f = ctx.facts
    firewalld = f.service_active("firewalld")
    ufw = bool(f.ufw_enabled)
    if not firewalld and not ufw:
        return CheckResult("firewall", PASS, "firewalld is not active and ufw is not enabled")
    tcp, udp = _firewall_ports(ctx)
    cidrs = [ctx.inventory.cluster.pod_cidr, ctx.inventory.cluster.service_cidr]
    ipip = ctx.inventory.network.encapsulation.startswith("IPIP")
    if firewalld:
        lines = ["systemctl disable --now firewalld",
                 "# or keep firewalld and open the ports:"]
        lines += [f"firewall-cmd --permanent --add-port={p}/tcp" for p in tcp]
        lines += [f"firewall-cmd --permanent --add-port={p}/udp" for p in udp]
        if ipip:
            lines.append("firewall-cmd --permanent --add-protocol=ipencap   # IP-in-IP (proto 4)")
        lines += [f"firewall-cmd --permanent --zone=trusted {quote(f'--add-source={c}')}"
                  for c in cidrs]
        lines.append("firewall-cmd --reload")
        return CheckResult("firewall", WARN,
                           "firewalld is active: it drops pod, VXLAN and BGP traffic unless ports "
                           "and the pod/service CIDRs are opened", "\n".join(lines))
    lines = ["ufw disable", "# or keep ufw and open the ports:"]
    lines += [f"ufw allow {p.replace('-', ':')}/tcp" for p in tcp]
    lines += [f"ufw allow {p.replace('-', ':')}/udp" for p in udp]
    if ipip:
        lines.append("# ufw cannot allow IP-in-IP (protocol 4): with IPIP encapsulation use "
                     "`ufw disable`")
    lines += [f"ufw allow from {quote(c)}" for c in cidrs]
    lines.append("sed -i 's/^DEFAULT_FORWARD_POLICY=.*/DEFAULT_FORWARD_POLICY=\"ACCEPT\"/' "
                 "/etc/default/ufw && ufw reload")
    return CheckResult("firewall", WARN,
                       "ufw is enabled: it drops forwarded pod traffic and Calico's VXLAN/BGP "
                       "unless opened", "\n".join(lines))


def _firewall_ports(ctx: CheckContext) -> tuple[list[str], list[str]]:
    """The TCP and UDP ports (or ranges) the host's roles and Calico need open."""
    tcp = ["10250", "10256", "179", "5473"]
    if ctx.host.is_control_plane:
        tcp = ["6443", "2379-2380", "10257", "10259"] + tcp
    if ctx.host.is_worker:
        tcp.append("30000-32767")
    udp = ["4789"] + (["30000-32767"] if ctx.host.is_worker else [])
    return tcp, udp


@PREFLIGHT.check("cidr-overlap", "Pod/service CIDRs do not overlap host networks",
                 "A pod CIDR overlapping a LAN makes pods unable to reach those hosts "
                 "(DOMAIN 6 #10).")
def check_cidr_overlap(ctx: CheckContext) -> CheckResult:
    cluster = ctx.inventory.cluster
    nets: dict[str, Any] = {}
    for label, value in (("pod_cidr", cluster.pod_cidr), ("service_cidr", cluster.service_cidr)):
        try:
            nets[label] = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return CheckResult("cidr-overlap", FAIL, f"{label} {value!r} is not a valid CIDR",
                               f"set cluster.{label} in {ctx.inventory.path} to a CIDR such as "
                               f"{'10.244.0.0/16' if label == 'pod_cidr' else '10.96.0.0/12'}")
    host_nets = _host_networks(ctx)
    problems = []
    pod, svc = nets["pod_cidr"], nets["service_cidr"]
    if pod.version == svc.version and pod.overlaps(svc):
        problems.append(f"pod_cidr {pod} overlaps service_cidr {svc}")
    bad_labels = set()
    for label, net in nets.items():
        hits = [desc for desc, hnet in host_nets
                if hnet.version == net.version and hnet.overlaps(net)
                and not (ctx.is_k8s_node and hnet.subnet_of(net))]   # the cluster's own routes
        if hits:
            bad_labels.add(label)
            problems.append(f"{label} {net} overlaps {', '.join(hits)}")
    if not problems:
        return CheckResult("cidr-overlap", PASS,
                           f"pod_cidr {pod} and service_cidr {svc} overlap no host address or "
                           f"route ({len(host_nets)} checked)")
    fixes = []
    for label in sorted(bad_labels) or ["pod_cidr"]:
        taken = [n for _, n in host_nets] + [n for lab, n in nets.items() if lab != label]
        free = _free_cidr(taken, exclude=nets[label])
        fixes.append(f"set cluster.{label}: {free or '<a private range unused on your network>'}"
                     f" in {ctx.inventory.path}")
    return CheckResult("cidr-overlap", FAIL, "; ".join(problems), "\n".join(fixes))


def _host_networks(ctx: CheckContext) -> list[tuple[str, Any]]:
    """(description, network) for every parsable host address and route."""
    out = []
    for addr in ctx.facts.addresses:
        try:
            out.append((f"host address {addr}", ipaddress.ip_interface(addr).network))
        except ValueError:
            continue
    for route in ctx.facts.routes:
        try:
            out.append((f"route {route}", ipaddress.ip_network(route, strict=False)))
        except ValueError:
            continue
    return out


def _free_cidr(taken: list[Any], exclude: Any) -> str | None:
    """The first CIDR_CANDIDATES entry that overlaps nothing taken (and is not `exclude`)."""
    for cand in CIDR_CANDIDATES:
        net = ipaddress.ip_network(cand)
        if net == exclude:
            continue
        if not any(t.version == net.version and t.overlaps(net) for t in taken):
            return cand
    return None


@PREFLIGHT.check("node-ip", "Node IP present on the host",
                 "On multi-NIC servers the kubelet node-ip and Calico autodetection must use the "
                 "cluster network (DOMAIN 2.1, 6 #11).")
def check_node_ip(ctx: CheckContext) -> CheckResult:
    mine = {a.split("/")[0]: a for a in ctx.facts.addresses}
    wanted = ctx.host.node_ip
    if wanted:
        if wanted in mine:
            return CheckResult("node-ip", PASS, f"node_ip {wanted} is configured ({mine[wanted]})")
        return CheckResult("node-ip", FAIL,
                           f"node_ip {wanted} is not an address of {ctx.host.name} "
                           f"(found {', '.join(ctx.facts.addresses) or 'none'})",
                           f"set node_ip for {ctx.host.name} in {ctx.inventory.path} to one of: "
                           f"{', '.join(mine) or '<an address of the host>'}")
    if ctx.host.address in mine:
        return CheckResult("node-ip", PASS,
                           f"node IP defaults to the inventory address {ctx.host.address}")
    v4 = [a for a in mine if ipaddress.ip_address(a).version == 4
          and not ipaddress.ip_address(a) in ipaddress.ip_network("172.17.0.0/16")]  # docker0
    if len(v4) <= 1:
        return CheckResult("node-ip", PASS,
                           f"one IPv4 address ({v4[0]})" if v4 else "no global IPv4 address: "
                           "the kubelet picks the default-route address")
    return CheckResult("node-ip", WARN,
                       f"{len(v4)} IPv4 addresses ({', '.join(v4)}) and no node_ip: the kubelet and "
                       "Calico may pick the wrong network",
                       f"set node_ip: <one of {', '.join(v4)}> for {ctx.host.name} in "
                       f"{ctx.inventory.path}")


@PREFLIGHT.check("endpoint-resolves", "controlPlaneEndpoint resolves",
                 "Every node must resolve the controlPlaneEndpoint name to the VIP/load balancer; "
                 "kubeadm never checks it.")
def check_endpoint_resolves(ctx: CheckContext) -> CheckResult:
    name = ctx.inventory.cluster.endpoint_host
    if not name:
        return CheckResult("endpoint-resolves", SKIP,
                           "no control_plane_endpoint set: nodes join the first control plane's "
                           "address")
    try:
        ipaddress.ip_address(name)
        return CheckResult("endpoint-resolves", PASS,
                           f"control_plane_endpoint {name} is an IP address")
    except ValueError:
        pass
    addrs = ctx.facts.endpoint_addresses
    if addrs is None:
        return CheckResult("endpoint-resolves", SKIP, f"the probe did not resolve {name}")
    hosts_line = quote(f"<vip-or-load-balancer-ip> {name}")
    if not addrs:
        return CheckResult("endpoint-resolves", FAIL,
                           f"{name} does not resolve on {ctx.host.name} (getent ahosts found "
                           "nothing)",
                           f"add {quote(name)} to DNS, or: echo {hosts_line} >> /etc/hosts")
    loop = [a for a in addrs if ipaddress.ip_address(a).is_loopback]
    if loop and not ctx.host.is_control_plane:
        drop = quote(f"/\\s{re.escape(name)}\\b/d")
        return CheckResult("endpoint-resolves", FAIL,
                           f"{name} resolves to loopback {', '.join(loop)} on a worker: it cannot "
                           "reach the API server there",
                           f"sed -i {drop} /etc/hosts && echo {hosts_line} >> /etc/hosts")
    differ = [n for n, f in ctx.others()
              if f.endpoint_addresses and not set(f.endpoint_addresses) & set(addrs)]
    if differ:
        return CheckResult("endpoint-resolves", WARN,
                           f"{name} resolves to {', '.join(addrs)} here but to other addresses on "
                           f"{', '.join(differ)}",
                           f"getent ahosts {quote(name)}   # on every host; make DNS or "
                           "/etc/hosts agree")
    return CheckResult("endpoint-resolves", PASS, f"{name} resolves to {', '.join(addrs)}")
