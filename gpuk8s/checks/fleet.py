"""Fleet checks: values that must differ between the hosts (hostname, product_uuid, MACs)."""

from __future__ import annotations

from typing import Any, Callable

from gpuk8s.checks.base import FAIL, PASS, WARN, CheckContext, CheckResult
from gpuk8s.checks.host import to_dns1123
from gpuk8s.checks.preflight import PREFLIGHT
from gpuk8s.facts import Facts
from gpuk8s.shell import quote

PLACEHOLDER_UUIDS = frozenset({
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "03000200-0400-0500-0006-000700080009",   # common unset-DMI value on whitebox boards
})


def _shared(ctx: CheckContext, value_of: Callable[[Facts], Any]) -> list[str]:
    """The other hosts whose value_of(facts) equals this host's (none when this one is None)."""
    mine = value_of(ctx.facts)
    return [n for n, f in ctx.others() if mine is not None and value_of(f) == mine]


@PREFLIGHT.check("hostname-unique", "Hostname unique across hosts",
                 "Two nodes with one hostname collide on the same Node object; kubeadm does not "
                 "compare nodes.")
def check_hostname_unique(ctx: CheckContext) -> CheckResult:
    hn = ctx.facts.hostname
    if not hn:
        return CheckResult("hostname-unique", WARN, "could not read the hostname",
                           f"hostnamectl set-hostname {quote(ctx.host.name)}")
    dupes = _shared(ctx, lambda f: f.hostname.lower() if f.hostname else None)
    if dupes:
        return CheckResult("hostname-unique", FAIL,
                           f"hostname {hn!r} is also used by {', '.join(dupes)}",
                           f"hostnamectl set-hostname {quote(to_dns1123(ctx.host.name))}")
    return CheckResult("hostname-unique", PASS,
                       f"hostname {hn!r} is unique among {len(ctx.fleet)} reachable hosts")


@PREFLIGHT.check("product-uuid-unique", "product_uuid unique across hosts",
                 "kubeadm requires a unique /sys/class/dmi/id/product_uuid per node "
                 "(cloned VMs share it).")
def check_product_uuid_unique(ctx: CheckContext) -> CheckResult:
    uuid = ctx.facts.product_uuid
    if not uuid:
        if ctx.facts.uid == 0:
            return CheckResult("product-uuid-unique", WARN,
                               "/sys/class/dmi/id/product_uuid does not exist (no SMBIOS/DMI "
                               "tables: a VM or micro-VM without them); uniqueness cannot be checked",
                               "give the machine SMBIOS data (hypervisor setting), or check by hand "
                               "that no two nodes are clones")
        return CheckResult("product-uuid-unique", WARN,
                           "could not read /sys/class/dmi/id/product_uuid (needs root)",
                           "sudo cat /sys/class/dmi/id/product_uuid")
    dupes = _shared(ctx, lambda f: f.product_uuid)
    fix = ("cloned VM: give it a new SMBIOS UUID in the hypervisor (libvirt: `virsh edit "
           "<domain>` <uuid>; VMware: uuid.bios) and reboot; bare metal: set a unique system "
           "UUID with the board vendor's DMI tool")
    if dupes:
        return CheckResult("product-uuid-unique", FAIL,
                           f"product_uuid {uuid} is also reported by {', '.join(dupes)}", fix)
    if uuid in PLACEHOLDER_UUIDS:
        return CheckResult("product-uuid-unique", WARN,
                           f"product_uuid {uuid} is a firmware placeholder; unique in this fleet "
                           "but not per machine", fix)
    return CheckResult("product-uuid-unique", PASS,
                       f"product_uuid {uuid} is unique among {len(ctx.fleet)} reachable hosts")


@PREFLIGHT.check("mac-unique", "MAC addresses unique across hosts",
                 "kubeadm requires unique MAC addresses per node; cloned VMs often share them.")
def check_mac_unique(ctx: CheckContext) -> CheckResult:
    macs = ctx.facts.macs
    if not macs:
        return CheckResult("mac-unique", WARN,
                           "no physical network interface found in `ip -o link show`",
                           "ip -o link show")
    clashes, clashing = [], []
    for iface, mac in sorted(macs.items()):
        owners = [f"{n} ({i})" for n, f in ctx.others() for i, m in sorted(f.macs.items())
                  if m == mac]
        if owners:
            clashes.append(f"{iface} {mac} is also on {', '.join(owners)}")
            clashing.append(iface)
    if clashes:
        ifaces = ", ".join(quote(i) for i in clashing)
        return CheckResult("mac-unique", FAIL, "; ".join(clashes),
                           f"cloned VM: regenerate the MAC of {ifaces} in the hypervisor; or set "
                           "one: ip link set dev <iface> address <new-mac> (persist it with "
                           "netplan `macaddress:` or nmcli `ethernet.cloned-mac-address`)")
    return CheckResult("mac-unique", PASS,
                       f"{len(macs)} MAC address(es) unique among {len(ctx.fleet)} reachable hosts")
