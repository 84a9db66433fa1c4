"""Where the control-plane endpoint leads: a control plane itself, a balancer, or cluster.vip.

From the one probe round trip: `getent ahosts` of the endpoint name (endpoint_addresses), each
host's addresses and interfaces, and a TCP connect to the endpoint (endpoint_tcp: from nodes of a
running cluster; with cluster.vip from every host, 1 s at most). docs/ha.md says how each case
is served, docs/checks.md why each check exists.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass
from typing import Mapping

from gpuk8s.checks.base import FAIL, PASS, SKIP, WARN, CheckContext, CheckResult
from gpuk8s.checks.preflight import PREFLIGHT
from gpuk8s.facts.model import Facts
from gpuk8s.inventory import API_SERVER_PORT, Inventory, is_loopback_name
from gpuk8s.paths import ADMIN_CONF, KUBELET_CONF
from gpuk8s.shell import quote

NO_BALANCER, BALANCER, WORKER, UNRESOLVED = "control-plane", "balancer", "worker", "unresolved"
ANSWERS = ("open",)
SOMEONE_THERE = ("open", "refused")     # a refusal (RST) comes from a machine holding the address


@dataclass(frozen=True)
class EndpointTarget:
    """What the endpoint's addresses are: kind, the hosts they belong to, the addresses."""

    kind: str                      # NO_BALANCER | BALANCER | WORKER | UNRESOLVED
    hosts: tuple[str, ...]
    addresses: tuple[str, ...]


_OWNERS: list = []            # [(inventory, the fleet's addresses, owners)]: the last map, see below
_OWNERS_LOCK = threading.Lock()


def _addresses_of(inv: Inventory, fleet: Mapping[str, Facts]) -> dict[str, str]:
    """address -> host name, from the inventory (address, node_ip) and each host's facts.

    Every host's check asks it of the same inventory and fleet: it is computed once for them
    (the entry holds the inventory, so its id cannot be reused while it is kept, and every host's
    addresses as they are now), not once per host (with 50 hosts that was 2,500 address parses and
    most of preflight's client CPU)."""
    key = tuple((n, tuple(f.addresses)) for n, f in fleet.items() if f is not None)
    with _OWNERS_LOCK:
        if _OWNERS and _OWNERS[0][0] is inv and _OWNERS[0][1] == key:
            return _OWNERS[0][2]
    out = _compute_addresses_of(inv, fleet)
    with _OWNERS_LOCK:
        _OWNERS[:] = [(inv, key, out)]
    return out


def _compute_addresses_of(inv: Inventory, fleet: Mapping[str, Facts]) -> dict[str, str]:
    out: dict[str, str] = {}
    for h in inv.hosts:
        for a in (h.address, h.node_ip, h.internal_ip):
            try:
                out[ipaddress.ip_address(a or "").compressed] = h.name
            except ValueError:
                pass
        for a in (fleet.get(h.name) or Facts()).addresses:
            try:
                out[ipaddress.ip_interface(a).ip.compressed] = h.name
            except ValueError:
                pass
    return out


def classify_endpoint(inv: Inventory, addrs: list[str] | None,
                      fleet: Mapping[str, Facts]) -> EndpointTarget:
    """Does the endpoint (its name resolved to `addrs`) lead to a control plane itself (no
    balancer), to a worker (wrong), or to an address no host has (a balancer or VIP)?"""
    if not addrs:
        return EndpointTarget(UNRESOLVED, (), ())
    owners = _addresses_of(inv, fleet)
    norm = []
    for a in addrs:
        try:
            norm.append(ipaddress.ip_address(a).compressed)
        except ValueError:
            continue
    hosts = tuple(dict.fromkeys(owners[a] for a in norm if a in owners))
    if not hosts:
        return EndpointTarget(BALANCER, (), tuple(norm))
    if all(inv.host(n).is_control_plane for n in hosts):
        return EndpointTarget(NO_BALANCER, hosts, tuple(norm))
    return EndpointTarget(WORKER, tuple(n for n in hosts if not inv.host(n).is_control_plane),
                          tuple(norm))


def _endpoint_addresses(ctx: CheckContext) -> list[str] | None:
    name = ctx.inventory.cluster.endpoint_host or ""
    try:
        return [ipaddress.ip_address(name).compressed]
    except ValueError:
        return ctx.facts.endpoint_addresses


def cluster_exists(ctx: CheckContext) -> bool:
    """Some control plane of the inventory already runs (admin.conf or kubelet.conf there)."""
    for h in ctx.inventory.control_planes:
        f = ctx.fleet.get(h.name)
        if f is not None and ({ADMIN_CONF, KUBELET_CONF} & set(f.kubernetes_files)):
            return True
    return False


def _reach(ctx: CheckContext, ep: str) -> CheckResult | None:
    """With a running cluster, a node whose connect to the endpoint failed: FAIL; else None."""
    tcp = ctx.facts.endpoint_tcp
    if tcp is None or tcp in ANSWERS or not cluster_exists(ctx):
        return None
    return CheckResult("endpoint-target", FAIL,
                       f"the cluster runs, but {ep} does not reach an API server from "
                       f"{ctx.host.name} (TCP connect: {tcp})",
                       f"curl -k https://{ep}/livez   # from {ctx.host.name}; then fix the balancer "
                       "(it must forward to port 6443 of every control plane) or the DNS name")


@PREFLIGHT.check("endpoint-target", "controlPlaneEndpoint leads to the API servers",
                 "The endpoint names a balancer (API servers on 6443 behind it) or one control "
                 "plane itself (its API server binds the endpoint's port); anything else, or a "
                 "running cluster's endpoint that does not answer, breaks every join.")
def check_endpoint_target(ctx: CheckContext) -> CheckResult:
    inv, c = ctx.inventory, ctx.inventory.cluster
    if c.vip is not None:
        addrs = _endpoint_addresses(ctx)
        if addrs is not None and addrs and c.vip.address not in addrs:
            return CheckResult("endpoint-target", FAIL,
                               f"{c.endpoint_host} resolves to {', '.join(addrs)} here, not to the VIP "
                               f"{c.vip.address} that kube-vip holds",
                               f"make {quote(c.endpoint_host)} resolve to {c.vip.address} (DNS or "
                               f"/etc/hosts on every host), or drop control_plane_endpoint in "
                               f"{ctx.inventory.path} (it defaults to the VIP)")
        return CheckResult("endpoint-target", SKIP,
                           f"cluster.vip: kube-vip holds {c.vip.address} (checks vip-free, "
                           "vip-interface)")
    if not c.control_plane_endpoint:
        derived = inv.control_plane_endpoint
        if is_loopback_name(derived.rsplit(":", 1)[0].strip("[]")):
            return CheckResult("endpoint-target", WARN,
                               f"the endpoint would be {derived}: kubeadm writes it into every "
                               "kubeconfig and join, and no other node can reach this machine "
                               "through it (no default route to take an address from)",
                               f"set cluster.control_plane_endpoint in {inv.path} to this host's "
                               "address or DNS name, e.g. k8s-api.example.com:6443")
        return CheckResult("endpoint-target", SKIP,
                           "no control_plane_endpoint: nodes use the first control plane's "
                           f"address ({inv.control_plane_endpoint})")
    ep, port = inv.control_plane_endpoint, c.endpoint_port
    addrs = _endpoint_addresses(ctx)
    if addrs is None:
        return CheckResult("endpoint-target", SKIP, f"the probe did not resolve {c.endpoint_host}")
    target = classify_endpoint(inv, addrs, ctx.fleet)
    if target.kind == UNRESOLVED:
        return CheckResult("endpoint-target", SKIP,
                           f"{c.endpoint_host} does not resolve here (see endpoint-resolves)")
    if target.kind == WORKER:
        return CheckResult("endpoint-target", FAIL,
                           f"{ep} resolves to {', '.join(target.addresses)}, an address of "
                           f"worker {', '.join(target.hosts)}: no API server runs there",
                           f"point {quote(c.endpoint_host)} at a load balancer, a VIP "
                           "(cluster.vip) or a control plane")
    if (bad := _reach(ctx, ep)) is not None:
        return bad
    if target.kind == NO_BALANCER:
        names = ", ".join(target.hosts)
        cp = inv.host(target.hosts[0])
        bind = inv.bind_port(cp)
        if bind != port:
            return CheckResult(
                "endpoint-target", FAIL,
                f"{ep} resolves to control plane {names} itself (no balancer), but its API server "
                f"would bind {bind}: {c.endpoint_host} is not that host's name or address, so "
                f"gpuk8s cannot tell it serves the endpoint, and nothing would listen on {port}",
                f"set cluster.control_plane_endpoint: {cp.internal_ip or cp.address}:{port} in "
                f"{inv.path}, or use port {API_SERVER_PORT}, or put a balancer in front")
        msg = (f"no balancer: {ep} resolves to control plane {names} itself, whose API server "
               f"binds port {bind}")
        if len(inv.control_planes) > 1:
            return CheckResult("endpoint-target", WARN,
                               msg + f"; the other control planes are reached through {names} "
                               "only, so losing it takes the endpoint down (not HA)",
                               "put a load balancer in front of every control plane, or give "
                               f"cluster.vip: {{address, interface}} in {inv.path} (docs/ha.md)")
        return CheckResult("endpoint-target", PASS, msg)
    answered = ctx.facts.endpoint_tcp in ANSWERS
    return CheckResult("endpoint-target", PASS,
                       f"balancer: {ep} resolves to {', '.join(target.addresses)}, which no "
                       f"inventory host has; the API servers bind {API_SERVER_PORT} and it must "
                       f"forward port {port} to {API_SERVER_PORT} on every control plane"
                       + (" (it answers)" if answered else
                          " (cannot be tested before the first API server runs)"))


def _vip_owner(ctx: CheckContext) -> str | None:
    vip = ctx.inventory.cluster.vip
    for name, f in sorted(ctx.fleet.items()):
        for a in f.addresses:
            try:
                if ipaddress.ip_interface(a).ip.compressed == vip.address:
                    return name
            except ValueError:
                continue
    return None


@PREFLIGHT.check("vip-free", "cluster.vip is free before init",
                 "kube-vip adds the VIP to the leading control plane; an address another machine "
                 "already has answers ARP from two places, and the endpoint reaches either.")
def check_vip_free(ctx: CheckContext) -> CheckResult:
    vip = ctx.inventory.cluster.vip
    if vip is None:
        return CheckResult("vip-free", SKIP, "no cluster.vip")
    if not ctx.host.is_control_plane:
        return CheckResult("vip-free", SKIP, "judged from the control planes (the VIP's subnet)")
    tcp = ctx.facts.endpoint_tcp
    owner = _vip_owner(ctx)
    ep = ctx.inventory.control_plane_endpoint
    if cluster_exists(ctx):
        if tcp is None:
            return CheckResult("vip-free", SKIP, "the probe did not test the VIP")
        if tcp in ANSWERS:
            held = f" (held by {owner})" if owner else ""
            return CheckResult("vip-free", PASS, f"the cluster runs and its VIP {ep} answers{held}")
        return CheckResult("vip-free", FAIL,
                           f"the cluster runs but its VIP {ep} does not answer from "
                           f"{ctx.host.name} (TCP connect: {tcp}): no kube-vip "
                           "holds it",
                           "crictl ps -a --name kube-vip; crictl logs $(crictl ps -aq --name "
                           "kube-vip | head -1)   # on each control plane")
    if owner is not None:
        return CheckResult("vip-free", FAIL,
                           f"{vip.address} is already an address of {owner}: the VIP must be "
                           "free (kube-vip adds it to the leader)",
                           f"ip addr del {vip.address}/<prefix> dev <iface>   # on {owner}, or "
                           f"pick a free address for cluster.vip.address in {ctx.inventory.path}")
    if tcp is None:
        return CheckResult("vip-free", SKIP, "the probe did not test the VIP")
    if tcp in SOMEONE_THERE:
        return CheckResult("vip-free", FAIL,
                           f"something already answers at {vip.address} (TCP connect to {ep}: "
                           f"{tcp}) before the cluster exists: the address is in use",
                           f"ip neigh show {vip.address}   # the MAC that holds it; pick a free "
                           f"address for cluster.vip.address in {ctx.inventory.path}")
    if tcp.startswith("error"):
        return CheckResult("vip-free", WARN, f"could not test {vip.address}: {tcp}")
    return CheckResult("vip-free", PASS,
                       f"{vip.address} is free (no host has it; nothing answered within 1 s)")


@PREFLIGHT.check("vip-interface", "cluster.vip interface in the VIP's subnet",
                 "kube-vip puts the VIP on vip_interface of whichever control plane leads; "
                 "an interface that is missing, or outside the VIP's subnet, leaves the endpoint "
                 "unreachable after a failover.")
def check_vip_interface(ctx: CheckContext) -> CheckResult:
    vip = ctx.inventory.cluster.vip
    if vip is None:
        return CheckResult("vip-interface", SKIP, "no cluster.vip")
    if not ctx.host.is_control_plane:
        return CheckResult("vip-interface", SKIP, "kube-vip runs on control planes only")
    ifaces = ctx.facts.interfaces
    if not ifaces:
        return CheckResult("vip-interface", SKIP, "the probe found no interface list (no iproute2?)")
    if vip.interface not in ifaces:
        return CheckResult("vip-interface", FAIL,
                           f"{ctx.host.name} has no interface {vip.interface} (has "
                           f"{', '.join(sorted(ifaces))})",
                           f"set cluster.vip.interface in {ctx.inventory.path} to the interface "
                           "every control plane has in the VIP's subnet (`ip -o addr`)")
    ip = ipaddress.ip_address(vip.address)
    nets = [ipaddress.ip_interface(a).network for a in ifaces[vip.interface]]
    if not any(n.version == ip.version and ip in n for n in nets):
        return CheckResult("vip-interface", FAIL,
                           f"{vip.address} is outside every subnet of {vip.interface} on "
                           f"{ctx.host.name} ({', '.join(map(str, nets)) or 'no address'}): ARP "
                           "announces it only where the neighbours are in that subnet",
                           f"pick cluster.vip.address inside {nets[0] if nets else 'the subnet'}"
                           f", or the interface that is in the VIP's subnet ({ctx.inventory.path})")
    net = next(n for n in nets if n.version == ip.version and ip in n)
    return CheckResult("vip-interface", PASS, f"{vip.interface} is in {net}, which holds {vip.address}")
