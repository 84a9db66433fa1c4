"""cluster.vip (kube-vip) and where the endpoint leads: validation, the manifest, `up`, preflight."""

import dataclasses
import textwrap

import pytest
import yaml

from gpuk8s import inventory as inventory_mod
from gpuk8s.actions.up import run_up
from gpuk8s.checks import run_checks
from gpuk8s.checks.endpoint import BALANCER, NO_BALANCER, UNRESOLVED, WORKER, classify_endpoint
from gpuk8s.errors import InventoryError
from gpuk8s.facts.network import parse_endpoint_tcp, parse_interfaces
from gpuk8s.facts.probe import probe_command
from gpuk8s.inventory import local_inventory, parse_inventory
from gpuk8s.paths import ADMIN_CONF, KUBE_VIP_MANIFEST, KUBELET_CONF, SUPER_ADMIN_CONF
from gpuk8s.phases.base import RunOptions
from gpuk8s.render.kubevip import kube_vip_files, kube_vip_manifest
from gpuk8s.runlog import RunLog
from tests.unit.fake import bare_probe, opener
from tests.unit.test_checks import healthy_facts, worker_facts
from tests.unit.test_up import SECRETS

HOSTS = """\
hosts:
  - {name: cp-1, address: 10.0.0.11, roles: [control-plane]}
  - {name: cp-2, address: 10.0.0.12, roles: [control-plane]}
  - {name: cp-3, address: 10.0.0.13, roles: [control-plane]}
  - {name: w-1, address: 10.0.0.21, roles: [worker]}
"""


def inv_text(cluster: str, hosts: str = HOSTS) -> str:
    return "cluster:\n  name: c\n" + textwrap.indent(textwrap.dedent(cluster), "  ") + hosts


def load(cluster: str, hosts: str = HOSTS):
    return parse_inventory(inv_text(cluster, hosts), "inv.yaml")


def problems(cluster: str, hosts: str = HOSTS) -> list[str]:
    with pytest.raises(InventoryError) as e:
        load(cluster, hosts)
    return [str(p) for p in e.value.problems]


VIP = "vip: {address: 10.0.0.100, interface: eth0}\n"
FAKE_VIP = "vip: {address: 10.0.0.100, interface: eno1}\n"     # tests/unit/fake.py hosts have eno1


# --------------------------------------------------------------------------- inventory

def test_vip_gives_the_endpoint_and_the_bind_port():
    inv = load(VIP)
    assert inv.cluster.vip.address == "10.0.0.100" and inv.cluster.vip.interface == "eth0"
    assert inv.control_plane_endpoint == "10.0.0.100:6443"
    assert {inv.bind_port(h) for h in inv.control_planes} == {6443}
    # an endpoint that agrees (the VIP with another port): the API servers bind that port
    inv = load(VIP + "control_plane_endpoint: 10.0.0.100:8443\n")
    assert inv.control_plane_endpoint == "10.0.0.100:8443"
    assert {inv.bind_port(h) for h in inv.control_planes} == {8443}
    # a name may stand for the VIP (preflight checks what it resolves to)
    assert load(VIP + "control_plane_endpoint: k8s.example.com\n").control_plane_endpoint == \
        "k8s.example.com:6443"
    v6 = load("vip: {address: 'fd00::0064', interface: bond0.100}\n")
    assert v6.control_plane_endpoint == "[fd00::64]:6443" and v6.cluster.vip.address == "fd00::64"


@pytest.mark.parametrize("cluster, hosts, expected", [
    ("vip: {address: k8s.example.com, interface: eth0}\n", HOSTS,
     "inv.yaml:3: cluster.vip.address: 'k8s.example.com' is not an IP address"),
    ("vip: {address: 127.0.0.5, interface: eth0}\n", HOSTS,
     "inv.yaml:3: cluster.vip.address: 127.0.0.5 is a loopback address"),
    ("vip: {address: 224.0.0.9, interface: eth0}\n", HOSTS,
     "inv.yaml:3: cluster.vip.address: 224.0.0.9 is a multicast address"),
    ("vip: {address: 169.254.3.3, interface: eth0}\n", HOSTS,
     "inv.yaml:3: cluster.vip.address: 169.254.3.3 is a link-local address"),
    ("vip: {address: 10.96.0.10, interface: eth0}\n", HOSTS,
     "inv.yaml:3: cluster.vip.address: 10.96.0.10 lies inside the cluster's network 10.96.0.0/12"),
    ("vip: {address: 10.0.0.100, interface: 'eth 0'}\n", HOSTS,
     "inv.yaml:3: cluster.vip.interface: 'eth 0' is not a network interface name"),
    ("vip: {address: 10.0.0.100, interface: averyveryverylongname}\n", HOSTS,
     "inv.yaml:3: cluster.vip.interface: 'averyveryverylongname' is not a network interface name"),
    ("vip: {address: 10.0.0.100, interface: lo}\n", HOSTS,
     "inv.yaml:3: cluster.vip.interface: 'lo' cannot hold the VIP"),
    ("vip: {address: 10.0.0.100}\n", HOSTS, "inv.yaml:3: cluster.vip.interface: required"),
    ("vip: {address: 10.0.0.100, interface: eth0, mode: bgp}\n", HOSTS, "inv.yaml:3: cluster.vip.mode"),
    ("vip: 10.0.0.100\n", HOSTS, "inv.yaml:3: cluster.vip: expected a mapping"),
    (VIP + "control_plane_endpoint: 10.0.0.9:6443\n", HOSTS,
     "inv.yaml:4: cluster.control_plane_endpoint: '10.0.0.9:6443' names 10.0.0.9, not the VIP "
     "10.0.0.100"),
    ("vip: {address: 10.0.0.12, interface: eth0}\n", HOSTS,
     "inv.yaml:6: hosts[1].address: 10.0.0.12 is the VIP (cluster.vip.address, line 3)"),
    (VIP, HOSTS + "  - {name: w-2, address: w2.example.com, node_ip: 10.0.0.100, roles: [worker]}\n",
     "inv.yaml:9: hosts[4].node_ip: 10.0.0.100 is the VIP"),
])
def test_vip_problems_name_file_line_and_field(cluster, hosts, expected):
    found = problems(cluster, hosts)
    assert any(p.startswith(expected) for p in found), found
    # the VIP is the endpoint: no second complaint that three control planes lack one
    assert not any("required with more than one control plane" in p for p in found), found


def test_kube_vip_version_override_is_validated_and_pinned():
    assert load(VIP).release.kube_vip == "v1.0.4"
    inv = parse_inventory(inv_text(VIP) + "versions: {kube_vip: 1.0.1}\n", "inv.yaml")
    assert inv.release.kube_vip == "v1.0.1"
    assert kube_vip_manifest(inv, inv.release).content.count("ghcr.io/kube-vip/kube-vip:v1.0.1") == 1
    with pytest.raises(InventoryError) as e:
        parse_inventory(inv_text(VIP) + "versions: {kube_vip: latest}\n", "inv.yaml")
    assert [str(p) for p in e.value.problems] == [
        "inv.yaml:9: versions.kube_vip: 'latest' is not a kube-vip release like v1.0.4"]


def test_local_inventory_endpoint_is_this_machines_address(monkeypatch):
    monkeypatch.setattr(inventory_mod, "primary_address", lambda: "192.168.7.20")
    inv = local_inventory("box")
    assert inv.control_plane_endpoint == "192.168.7.20:6443"
    # inventories/local.yaml says the same: localhost over connection: local
    from pathlib import Path
    shipped = inventory_mod.load_inventory(Path(__file__).parents[2] / "inventories" / "local.yaml")
    assert shipped.control_plane_endpoint == "192.168.7.20:6443"
    # no route out: the name, never a loopback address other nodes cannot use
    monkeypatch.setattr(inventory_mod, "primary_address", lambda: None)
    assert local_inventory("box").control_plane_endpoint == "localhost:6443"  # preflight fails it
    # an SSH host named localhost is not this machine's: nothing is guessed for it
    ssh_local = dataclasses.replace(inv.hosts[0], connection="ssh")
    assert dataclasses.replace(inv, hosts=(ssh_local,)).control_plane_endpoint == "localhost:6443"


def test_primary_address_is_not_loopback():
    addr = inventory_mod.primary_address.__wrapped__()
    assert addr is None or not addr.startswith("127.")


# --------------------------------------------------------------------------- the manifest

def _pod(f):
    doc = yaml.safe_load(f.content)
    c = doc["spec"]["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    return doc, c, env


def test_manifest_has_kube_vips_static_pod_fields():
    inv = load(VIP)
    f = kube_vip_manifest(inv, inv.release, host="cp-2")
    assert (f.path, f.mode, f.host) == (KUBE_VIP_MANIFEST, 0o600, "cp-2")
    doc, c, env = _pod(f)
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]["namespace"]) == ("v1", "Pod", "kube-system")
    assert c["image"] == "ghcr.io/kube-vip/kube-vip:v1.0.4" and c["args"] == ["manager"]
    assert env["vip_arp"] == "true" and env["cp_enable"] == "true" and env["svc_enable"] == "false"
    assert env["address"] == "10.0.0.100" and env["vip_interface"] == "eth0"
    assert env["port"] == "6443" and env["vip_subnet"] == "32"
    assert env["vip_leaderelection"] == "true" and env["vip_leasename"] == "plndr-cp-lock"
    assert env["vip_nodename"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert c["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    assert doc["spec"]["hostNetwork"] is True
    assert doc["spec"]["hostAliases"] == [{"hostnames": ["kubernetes"], "ip": "127.0.0.1"}]
    assert c["volumeMounts"] == [{"mountPath": ADMIN_CONF, "name": "kubeconfig"}]
    assert doc["spec"]["volumes"] == [{"name": "kubeconfig", "hostPath": {"path": ADMIN_CONF}}]
    assert all(isinstance(e.get("value", ""), str) for e in c["env"])   # env values are strings


def test_super_admin_conf_only_while_kubeadm_init_runs():
    inv = load(VIP)
    during = yaml.safe_load(kube_vip_manifest(inv, inv.release, during_init=True).content)
    after = yaml.safe_load(kube_vip_manifest(inv, inv.release).content)
    assert during["spec"]["volumes"][0]["hostPath"]["path"] == SUPER_ADMIN_CONF
    assert after["spec"]["volumes"][0]["hostPath"]["path"] == ADMIN_CONF
    # the pod still reads the file at admin.conf: only the host file behind it differs
    assert during["spec"]["containers"] == after["spec"]["containers"]
    # `gpuk8s render` lists each control plane's lasting copy (admin.conf), none for workers
    files = kube_vip_files(inv, inv.release)
    assert [f.host for f in files] == ["cp-1", "cp-2", "cp-3"]
    assert all(SUPER_ADMIN_CONF not in f.content.split("hostPath:", 1)[1] for f in files)
    assert kube_vip_files(load("control_plane_endpoint: lb.example.com:6443\n"), inv.release) == []


def test_ipv6_vip_is_a_128_subnet():
    inv = load("vip: {address: 'fd00::64', interface: eth0}\n")
    assert _pod(kube_vip_manifest(inv, inv.release))[2]["vip_subnet"] == "128"


# --------------------------------------------------------------------------- up

def _up(inv, tmp_path, calls, fake=None):
    probes = {h.name: bare_probe(h.name, i, h.address) for i, h in enumerate(inv.hosts)}
    fake = fake or opener(probes, calls)
    opts = RunOptions(kubeconfig_path=tmp_path / "kc", poll_interval=0, wait_timeout=5)
    return run_up(inv, opts, log=RunLog(None), open_transport=fake, secrets=SECRETS), fake


def _steps(calls, host):
    """What happened on one host, in order: kube-vip writes (with the kubeconfig they mount),
    kubeadm init/join."""
    out = []
    for h, cmd, stdin, _ in calls:
        if h != host:
            continue
        if "gpuk8s-put" in cmd and KUBE_VIP_MANIFEST in cmd:
            out.append("kube-vip " + yaml.safe_load(stdin)["spec"]["volumes"][0]["hostPath"]["path"])
        elif " kubeadm init --config" in cmd or " kubeadm join --config" in cmd:
            out.append("kubeadm " + cmd.split(" kubeadm ", 1)[1].split()[0])
    return out


def test_up_puts_kube_vip_in_the_order_kubeadm_and_kube_vip_require(tmp_path):
    inv = load(FAKE_VIP)
    calls = []
    report, fake = _up(inv, tmp_path, calls)
    assert not report.error and not report.failed_hosts
    # first control plane: before init with super-admin.conf, then admin.conf
    assert _steps(calls, "cp-1") == [f"kube-vip {SUPER_ADMIN_CONF}", "kubeadm init",
                                     f"kube-vip {ADMIN_CONF}"]
    # joining control planes: after join (its preflight wants an empty manifests directory)
    for cp in ("cp-2", "cp-3"):
        assert _steps(calls, cp) == ["kubeadm join", f"kube-vip {ADMIN_CONF}"]
    assert _steps(calls, "w-1") == ["kubeadm join"]
    # a second run writes nothing for kube-vip
    calls.clear()
    report, _ = _up(inv, tmp_path, calls, fake)
    assert not any("gpuk8s-put" in c and KUBE_VIP_MANIFEST in c for _, c, *_ in calls)
    assert "install kube-vip" in [p.name for p in report.phases]


def test_dry_run_shows_the_kube_vip_writes_and_executes_none(tmp_path):
    from tests.unit.test_up import assert_only_reads
    inv = load(FAKE_VIP)
    calls = []
    probes = {h.name: bare_probe(h.name, i, h.address) for i, h in enumerate(inv.hosts)}
    report = run_up(inv, RunOptions(dry_run=True, kubeconfig_path=tmp_path / "kc"), log=RunLog(None),
                    open_transport=opener(probes, calls, read_exit=1), secrets=SECRETS)
    vip_changes = [(c.host, c.description) for c in report.plan.changes if "kube-vip" in c.description]
    assert [h for h, _ in vip_changes] == ["cp-1", "cp-1", "cp-2", "cp-3"]
    assert "super-admin.conf" in vip_changes[0][1]
    assert_only_reads(calls)


def test_without_vip_up_writes_no_kube_vip(tmp_path):
    calls = []
    report, _ = _up(load("control_plane_endpoint: lb.example.com:6443\n"), tmp_path, calls)
    assert not any(KUBE_VIP_MANIFEST in c for _, c, *_ in calls)
    assert "install kube-vip" not in [p.name for p in report.phases if p.notes]


# --------------------------------------------------------------------------- probe facts

def test_probe_asks_for_a_tcp_connect_with_a_vip_everywhere_else_on_nodes():
    assert " 10.0.0.100 'tcp!:6443' " in probe_command(load(VIP)).render()
    assert " lb.example.com tcp:8443 " in probe_command(
        load("control_plane_endpoint: lb.example.com:8443\n")).render()


@pytest.mark.parametrize("text, expected", [
    ("rc=0\n", "open"),
    ("rc=1\nbash: connect: Connection refused\nbash: line 1: /dev/tcp/10.0.0.100/6443: "
     "Connection refused\n", "refused"),
    ("rc=124\n", "timeout"),
    ("rc=1\nbash: connect: No route to host\n", "unreachable"),
    ("rc=1\nbash: connect: Network is unreachable\n", "unreachable"),
    ("rc=1\nbash: lb.example.com: Name or service not known\n",
     "error: bash: lb.example.com: Name or service not known"),
    ("nobash\n", "error: no bash on the host to test a TCP connection with"),
    ("", None), (None, None),
])
def test_endpoint_tcp_parse(text, expected):
    assert parse_endpoint_tcp(text) == expected


def test_interfaces_parse_keeps_virtual_interfaces_and_prefixes():
    links = ("1: lo: <LOOPBACK,UP> mtu 65536 qdisc noqueue state UNKNOWN link/loopback 00:00:00:00:00:00\n"
             "2: eth0@if7: <BROADCAST,UP> mtu 1500 link/ether 52:54:00:12:34:56 brd ff:ff:ff:ff:ff:ff\n"
             "3: bond0.100@bond0: <UP> mtu 1500 link/ether 52:54:00:12:34:57 brd ff:ff:ff:ff:ff:ff\n")
    addrs = ("1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n"
             "2: eth0    inet 10.0.0.11/24 brd 10.0.0.255 scope global eth0\\       valid_lft forever\n"
             "2: eth0    inet6 fe80::1/64 scope link \\       valid_lft forever\n"
             "3: bond0.100    inet 192.168.100.5/24 scope global bond0.100\n")
    assert parse_interfaces(links + addrs, links + addrs) == {
        "lo": [], "eth0": ["10.0.0.11/24"], "bond0.100": ["192.168.100.5/24"]}


# --------------------------------------------------------------------------- preflight

def _facts(address, **kw):
    base = healthy_facts if kw.pop("cp", True) else worker_facts
    return base(addresses=[f"{address}/24"], interfaces={"eth0": [f"{address}/24"]}, **kw)


def _fleet(inv, **kw):
    return {h.name: _facts(h.address, cp=h.is_control_plane, **kw) for h in inv.hosts}


def _result(inv, name, fleet, check_id):
    return {r.id: r for r in run_checks(inv, inv.host(name), fleet[name], fleet)}[check_id]


def test_classify_endpoint_cases():
    inv = load("control_plane_endpoint: k8s.example.com:6443\n")
    fleet = _fleet(inv)
    assert classify_endpoint(inv, ["10.0.0.11"], fleet).kind == NO_BALANCER
    assert classify_endpoint(inv, ["10.0.0.11"], fleet).hosts == ("cp-1",)
    assert classify_endpoint(inv, ["10.0.0.200"], fleet).kind == BALANCER
    assert classify_endpoint(inv, ["10.0.0.21"], fleet).kind == WORKER
    assert classify_endpoint(inv, [], fleet).kind == UNRESOLVED
    # an address only the facts know (a second NIC) still names its host
    fleet["cp-2"].addresses.append("172.16.0.12/16")
    assert classify_endpoint(inv, ["172.16.0.12"], fleet).hosts == ("cp-2",)


def test_endpoint_target_balancer_no_balancer_worker():
    lb = load("control_plane_endpoint: k8s.example.com:8443\n")
    r = _result(lb, "w-1", _fleet(lb, endpoint_addresses=["10.0.0.200"]), "endpoint-target")
    assert r.status == "pass" and "balancer" in r.message and "forward port 8443 to 6443" in r.message
    # the name resolves to a control plane: no balancer; with three control planes, not HA
    r = _result(lb, "w-1", _fleet(lb, endpoint_addresses=["10.0.0.11"]), "endpoint-target")
    assert r.status == "fail" and "would bind 6443" in r.message and "10.0.0.11:8443" in r.fix
    same = load("control_plane_endpoint: 10.0.0.11:8443\n")
    r = _result(same, "w-1", _fleet(same), "endpoint-target")
    assert r.status == "warn" and "binds port 8443" in r.message and "not HA" in r.message
    single = load("control_plane_endpoint: 10.0.0.11:8443\n",
                  "hosts:\n  - {name: cp-1, address: 10.0.0.11, roles: [control-plane]}\n")
    r = _result(single, "cp-1", _fleet(single), "endpoint-target")
    assert r.status == "pass" and "no balancer" in r.message
    r = _result(lb, "cp-1", _fleet(lb, endpoint_addresses=["10.0.0.21"]), "endpoint-target")
    assert r.status == "fail" and "worker w-1" in r.message


def test_endpoint_target_needs_an_answer_once_the_cluster_runs():
    lb = load("control_plane_endpoint: k8s.example.com:6443\n")
    fleet = _fleet(lb, endpoint_addresses=["10.0.0.200"])
    fleet["cp-1"].kubernetes_files = [ADMIN_CONF, KUBELET_CONF]
    fleet["w-1"].kubernetes_files = [KUBELET_CONF]
    fleet["w-1"].endpoint_tcp = "timeout"
    r = _result(lb, "w-1", fleet, "endpoint-target")
    assert r.status == "fail" and "does not reach an API server" in r.message and "timeout" in r.message
    fleet["w-1"].endpoint_tcp = "open"
    assert _result(lb, "w-1", fleet, "endpoint-target").message.endswith("(it answers)")


def test_vip_free_before_init():
    inv = load(VIP)
    fleet = _fleet(inv, endpoint_tcp="timeout")
    r = _result(inv, "cp-2", fleet, "vip-free")
    assert r.status == "pass" and "free" in r.message
    assert _result(inv, "w-1", fleet, "vip-free").status == "skip"
    for answer in ("refused", "open"):
        fleet = _fleet(inv, endpoint_tcp=answer)
        r = _result(inv, "cp-1", fleet, "vip-free")
        assert r.status == "fail" and "in use" in r.message and answer in r.message
    fleet = _fleet(inv, endpoint_tcp="timeout")
    fleet["w-1"].addresses.append("10.0.0.100/24")
    r = _result(inv, "cp-1", fleet, "vip-free")
    assert r.status == "fail" and "already an address of w-1" in r.message


def test_vip_must_answer_once_the_cluster_runs():
    inv = load(VIP)
    fleet = _fleet(inv, endpoint_tcp="timeout")
    fleet["cp-1"].kubernetes_files = [ADMIN_CONF, KUBELET_CONF]
    r = _result(inv, "cp-3", fleet, "vip-free")
    assert r.status == "fail" and "no kube-vip holds it" in r.message and "crictl" in r.fix
    fleet = _fleet(inv, endpoint_tcp="open")
    fleet["cp-1"].kubernetes_files = [ADMIN_CONF, KUBELET_CONF]
    fleet["cp-1"].addresses.append("10.0.0.100/32")
    r = _result(inv, "cp-3", fleet, "vip-free")
    assert r.status == "pass" and "held by cp-1" in r.message


def test_vip_interface_exists_and_holds_the_vip_subnet():
    inv = load(VIP)
    fleet = _fleet(inv)
    r = _result(inv, "cp-1", fleet, "vip-interface")
    assert r.status == "pass" and "10.0.0.0/24" in r.message
    fleet["cp-2"].interfaces = {"ens3": ["10.0.0.12/24"], "lo": []}
    r = _result(inv, "cp-2", fleet, "vip-interface")
    assert r.status == "fail" and "no interface eth0 (has ens3, lo)" in r.message
    fleet["cp-3"].interfaces = {"eth0": ["192.168.1.13/24"]}
    r = _result(inv, "cp-3", fleet, "vip-interface")
    assert r.status == "fail" and "outside every subnet of eth0" in r.message
    assert _result(inv, "w-1", fleet, "vip-interface").status == "skip"
    assert _result(inv, "cp-1", fleet, "endpoint-target").status == "skip"


def test_a_named_endpoint_must_resolve_to_the_vip():
    inv = load(VIP + "control_plane_endpoint: k8s.example.com:6443\n")
    fleet = _fleet(inv, endpoint_addresses=["10.0.0.11"])
    r = _result(inv, "w-1", fleet, "endpoint-target")
    assert r.status == "fail" and "not to the VIP 10.0.0.100" in r.message
    fleet = _fleet(inv, endpoint_addresses=["10.0.0.100"])
    assert _result(inv, "w-1", fleet, "endpoint-target").status == "skip"


def test_render_lists_each_control_planes_kube_vip_manifest(tmp_path):
    from gpuk8s.actions.render import run_render

    written = run_render(load(VIP), "debian", tmp_path)
    got = sorted(p.relative_to(tmp_path).as_posix() for p in written if p.name == "kube-vip.yaml")
    assert got == [f"{cp}/etc/kubernetes/manifests/kube-vip.yaml" for cp in ("cp-1", "cp-2", "cp-3")]
    assert (tmp_path / "cp-2/etc/kubernetes/manifests/kube-vip.yaml").stat().st_mode & 0o777 == 0o600
    assert not any(p.name == "kube-vip.yaml" for p in
                   run_render(load("control_plane_endpoint: lb.example.com:6443\n"), "debian",
                              tmp_path / "lb"))


def test_a_localhost_endpoint_warns(monkeypatch):
    monkeypatch.setattr(inventory_mod, "primary_address", lambda: None)
    inv = local_inventory("box")
    fleet = {"box": healthy_facts()}
    r = {x.id: x for x in run_checks(inv, inv.hosts[0], fleet["box"], fleet)}["endpoint-target"]
    assert r.status == "warn" and "localhost:6443" in r.message and "control_plane_endpoint" in r.fix
    monkeypatch.setattr(inventory_mod, "primary_address", lambda: "192.168.7.20")
    r = {x.id: x for x in run_checks(inv, inv.hosts[0], fleet["box"], fleet)}["endpoint-target"]
    assert r.status == "skip" and "192.168.7.20:6443" in r.message


def test_a_control_plane_added_by_join_gets_kube_vip_after_its_join(tmp_path):
    """`gpuk8s join` of a control plane months later: the same kube-vip manifest as `up` gives
    the others, written after kubeadm join; the nodes join leaves alone get nothing."""
    from dataclasses import replace

    from gpuk8s.actions.join import run_join

    inv = load(FAKE_VIP)
    calls: list = []
    first = replace(inv, hosts=tuple(h for h in inv.hosts if h.name in ("cp-1", "cp-2", "w-1")))
    probes = {h.name: bare_probe(h.name, i, h.address) for i, h in enumerate(inv.hosts)}
    _, fake = _up(first, tmp_path, calls, opener(probes, calls))
    calls.clear()
    opts = RunOptions(poll_interval=0, wait_timeout=5)
    report = run_join(inv, opts, log=RunLog(None), open_transport=fake, secrets=SECRETS)
    assert not report.error and "cp-3" in report.joined
    assert _steps(calls, "cp-3") == ["kubeadm join", f"kube-vip {ADMIN_CONF}"]
    assert _steps(calls, "cp-2") == [] and _steps(calls, "cp-1") == []


def test_the_address_map_is_built_once_per_fleet_not_once_per_host(monkeypatch):
    """endpoint-target asks every host's check which host owns an address: the map is built once
    for the fleet (it was N x N address parses, most of preflight's client CPU at 50 hosts) and
    again when a host's addresses change."""
    from gpuk8s.checks import endpoint

    calls = []
    real = endpoint._compute_addresses_of
    monkeypatch.setattr(endpoint, "_compute_addresses_of", lambda i, f: calls.append(1) or real(i, f))
    inv = load("control_plane_endpoint: k8s.example.com:6443\n")
    fleet = _fleet(inv, endpoint_addresses=["10.0.0.11"])
    for h in inv.hosts:
        _result(inv, h.name, fleet, "endpoint-target")
    assert len(calls) == 1
    fleet["cp-2"].addresses.append("172.16.0.12/16")
    assert classify_endpoint(inv, ["172.16.0.12"], fleet).hosts == ("cp-2",) and len(calls) == 2
