"""Parsers of the probe's network sections: links, addresses, routes, sockets, name lookups, ufw."""

from __future__ import annotations

import ipaddress
import re

from gpuk8s.facts.text import nonblank_lines, parse_kv

# Interfaces whose MAC says nothing about the machine (bridges, CNI, tunnels, containers).
_VIRTUAL_IFACE = re.compile(
    r"^(lo|docker\d*|veth.*|cali.*|cni\d*|flannel.*|vxlan.*|tunl\d*|kube-.*|nodelocaldns|"
    r"virbr.*|br-.*|cilium.*|lxc.*|wg.*|ifb\d*|dummy\d*|nerdctl\d*|tap.*|tun\d*)$"
)
_NO_MAC = "00:00:00:00:00:00"


def parse_links(text: str | None) -> dict[str, str]:
    """`ip -o link show` -> {iface: mac} for interfaces that identify the machine."""
    macs: dict[str, str] = {}
    for line in nonblank_lines(text):
        m = re.match(r"^\d+:\s+([^:@\s]+)(?:@\S+)?:\s.*?link/ether\s+([0-9a-fA-F:]{17})", line)
        if not m:
            continue
        iface, mac = m.group(1), m.group(2).lower()
        if _VIRTUAL_IFACE.match(iface) or mac == _NO_MAC:
            continue
        macs[iface] = mac
    return macs


def parse_addrs(text: str | None) -> list[str]:
    """`ip -o addr show` -> global-scope addresses with prefix ("10.0.0.11/24")."""
    out = []
    for line in nonblank_lines(text):
        m = re.search(r"\binet6?\s+(\S+)", line)
        if not m or " scope host" in line or " scope link" in line:
            continue
        if _valid(ipaddress.ip_interface, m.group(1)):  # '999.1.2.3/24' is no address
            out.append(m.group(1))
    return out


def _valid(parse, text: str) -> bool:
    """True when `parse` (an ipaddress constructor) accepts text; odd remote output is skipped."""
    try:
        parse(text)
    except ValueError:
        return False
    return True


def parse_routes(text: str | None) -> tuple[list[str], bool]:
    """`ip -o route show` -> (destination prefixes, has default route)."""
    dests, default = [], False
    for line in nonblank_lines(text):
        first = line.split()[0]
        if first in ("default", "0.0.0.0/0", "::/0"):
            default = True
            continue
        if first in ("unreachable", "blackhole", "prohibit", "local", "broadcast", "multicast"):
            continue
        try:
            dests.append(str(ipaddress.ip_network(first, strict=False)))
        except ValueError:
            continue
    return dests, default


def parse_sys_net(text: str | None) -> dict[str, str]:
    """`grep -H '' /sys/class/net/*/address` (hosts without iproute2) -> {iface: mac}."""
    macs = {}
    for line in nonblank_lines(text):
        m = re.match(r"^/sys/class/net/([^/]+)/address:([0-9a-fA-F:]{17})$", line.strip())
        if m and not _VIRTUAL_IFACE.match(m.group(1)) and m.group(2) != _NO_MAC:
            macs[m.group(1)] = m.group(2).lower()
    return macs


def _hex_ipv4(h: str) -> str:
    return str(ipaddress.IPv4Address(int(h, 16).to_bytes(4, "little")))


def parse_proc_route(text: str | None) -> tuple[list[str], bool]:
    """/proc/net/route (hosts without iproute2) -> (destination prefixes, has default route)."""
    dests, default = [], False
    for line in nonblank_lines(text):
        cols = line.split()
        if len(cols) < 8 or cols[0] == "Iface":
            continue
        try:
            net = ipaddress.ip_network(f"{_hex_ipv4(cols[1])}/{_hex_ipv4(cols[7])}", strict=False)
        except ValueError:
            continue
        if net.prefixlen == 0:
            default = True
        else:
            dests.append(str(net))
    return dests, default


def parse_fib_trie(text: str | None, routes: list[str]) -> list[str]:
    """Local IPv4 addresses from /proc/net/fib_trie, with the prefix of the route they sit in."""
    found: list[str] = []
    prev = None
    for line in (text or "").splitlines():
        m = re.search(r"\|--\s+([0-9]{1,3}(?:\.[0-9]{1,3}){3})$", line)
        if m:
            prev = m.group(1)
            continue
        if prev and "/32 host LOCAL" in line and _valid(ipaddress.IPv4Address, prev):
            addr = ipaddress.IPv4Address(prev)
            if not addr.is_loopback:
                nets = [ipaddress.ip_network(r) for r in routes if ":" not in r]
                best = max((n for n in nets if addr in n), key=lambda n: n.prefixlen, default=None)
                entry = f"{addr}/{best.prefixlen if best else 32}"
                if entry not in found:
                    found.append(entry)
        prev = prev if "/32 host LOCAL" not in line else None
    return found


def parse_network(links: str | None, addrs: str | None, routes: str | None, sys_net: str | None,
                  proc_route: str | None, fib_trie: str | None
                  ) -> tuple[dict[str, str], list[str], list[str], bool]:
    """-> (macs, addresses, routes, default route) from `ip`, or from /sys and /proc without it."""
    if links is not None or sys_net is None:
        dests, default = parse_routes(routes)
        return parse_links(links), parse_addrs(addrs), dests, default
    dests, default = parse_proc_route(proc_route)
    return parse_sys_net(sys_net), parse_fib_trie(fib_trie, dests), dests, default


def parse_listen(text: str | None) -> list[int]:
    """Listening TCP ports: `ss -Hltn` lines, or /proc/net/tcp and tcp6 (state 0A) where ss is absent."""
    ports = set()
    for line in nonblank_lines(text):
        words = line.split()
        if len(words) >= 4 and words[0] == "LISTEN":  # LISTEN 0 4096 [::]:22 [::]:*  (ss)
            port = words[3].rsplit(":", 1)[-1]
            if port.isascii() and port.isdigit() and int(port) < 65536:
                ports.add(int(port))
            continue
        if len(words) < 4 or words[0] == "sl" or words[3] != "0A":
            continue
        try:
            ports.add(int(words[1].rsplit(":", 1)[1], 16))
        except (IndexError, ValueError):
            continue
    return sorted(ports)


def parse_getent(text: str | None) -> list[str]:
    """`getent ahosts NAME` -> its addresses, first seen first, without duplicates."""
    addrs: list[str] = []
    for line in nonblank_lines(text):
        a = line.split()[0]
        if a not in addrs and _valid(ipaddress.ip_address, a):  # a non-address is skipped
            addrs.append(a)
    return addrs


def parse_endpoint(text: str | None) -> list[str] | None:
    """The endpoint lookup (empty when no endpoint was asked); None when the section is missing."""
    return None if text is None else parse_getent(text)


def parse_ufw_conf(text: str | None) -> bool | None:
    """/etc/ufw/ufw.conf's ENABLED; None without the file."""
    kv = parse_kv(text)
    if "ENABLED" not in kv:
        return None
    return kv["ENABLED"].strip("\"'").lower() == "yes"


def parse_interfaces(links: str | None, addrs: str | None) -> dict[str, list[str]]:
    """Every interface `ip -o link` lists (virtual ones too: a VIP may sit on a bond or VLAN)
    -> its global addresses with prefix, from `ip -o addr` ("3: eth0    inet 10.0.0.5/24 ...")."""
    out: dict[str, list[str]] = {}
    for line in nonblank_lines(links):
        m = re.match(r"^\d+:\s+([^:@\s]+)(?:@\S+)?:\s", line)
        if m and "link/" in line:
            out.setdefault(m.group(1), [])
    for line in nonblank_lines(addrs):
        m = re.match(r"^\d+:\s+([^:@\s]+)\s+inet6?\s+(\S+)", line)
        if not m or " scope host" in line or " scope link" in line:
            continue
        if _valid(ipaddress.ip_interface, m.group(2)):
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def parse_endpoint_tcp(text: str | None) -> str | None:
    """The probe's TCP connect to the endpoint (bash /dev/tcp under `timeout 1`): "rc=N" then
    bash's message -> open | refused | timeout | unreachable | "error: <message>"; None when the
    probe did not try."""
    lines = nonblank_lines(text)
    if not lines:
        return None
    if lines[0] in ("nobash", "notimeout"):
        return f"error: no {lines[0][2:]} on the host to test a TCP connection with"
    m = re.fullmatch(r"rc=(\d+)", lines[0].strip())
    if not m:
        return None
    rc, message = int(m.group(1)), " ".join(lines[1:])
    if rc == 0:
        return "open"
    if "refused" in message:
        return "refused"
    if rc == 124:
        return "timeout"
    if "unreachable" in message.lower() or "no route to host" in message.lower():
        return "unreachable"
    return f"error: {message[-200:] or f'exit status {rc}'}"
