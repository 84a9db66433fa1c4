"""The preflight action against fake transports: one round trip, failures isolated, JSON shape."""

import json

import pytest
from typer.testing import CliRunner

from gpuk8s import cli
from gpuk8s.errors import EXIT_CHECKS_FAILED, EXIT_OK, EXIT_UNREACHABLE, TransportError
from gpuk8s.facts import probe_script
from gpuk8s.inventory import ClusterSpec, HostSpec, Inventory, SSHSettings
from gpuk8s.preflight import run_preflight
from gpuk8s.transport.base import Result

OS_UBUNTU = ('NAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\n'
             'VERSION_CODENAME=noble\n')
CONTAINERD_V3 = """version = 3
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = true
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = 'registry.k8s.io/pause:3.10.1'
"""


def probe_output(name, uuid, mac, address, gpus=0):
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
        "containerd_version": "containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7",
        "containerd_config": CONTAINERD_V3, "helm_version": "v3.19.0+g3d8990f",
        "secure_boot": "efivar= 6 0 0 0 0", "auto_upgrades": 'APT::Periodic::Unattended-Upgrade "0";',
    }
    pci = []
    for i in range(gpus):
        d = f"/sys/bus/pci/devices/0000:{0x18 + i:02x}:00.0"
        pci += [f"{d}/vendor:0x10de", f"{d}/device:0x27b8", f"{d}/class:0x030200"]
    sections["pci"] = "\n".join(pci)
    return "".join(f"\n@@gpuk8s:{k}\n{v}\n" for k, v in sections.items()) + "\n@@gpuk8s:end\n"


class FakeTransport:
    def __init__(self, host, outputs, log, sudo_needs_password=False):
        self.host_name, self.outputs, self.log = host.name, outputs, log
        self.sudo_needs_password = sudo_needs_password
        self.privileged = True

    def connect(self):
        pass

    def run(self, cmd, *, stdin=None, timeout=None, sudo=True):
        self.log.append((self.host_name, cmd.render(), stdin, sudo))
        if sudo and self.sudo_needs_password:
            raise TransportError("sudo-password", f"{self.host_name}: sudo asks for a password")
        out = self.outputs[self.host_name]
        if sudo is False:
            out = out.replace("@@gpuk8s:uid\n0", "@@gpuk8s:uid\n1000")
        return Result(cmd.masked(), 0, out, "", 0.01)

    def close(self):
        pass


def make_inventory(*names, endpoint="k8s-api.example.com:6443"):
    ssh = SSHSettings(user="root")
    hosts = []
    for i, n in enumerate(names):
        roles = ("control-plane",) if i == 0 else ("worker",)
        hosts.append(HostSpec(name=n, address=f"10.0.0.{11 + i}", roles=roles, ssh=ssh))
    return Inventory(path="inv.yaml", cluster=ClusterSpec(name="t", control_plane_endpoint=endpoint),
                     hosts=tuple(hosts))


def outputs_for(inv, gpu_hosts=()):
    return {h.name: probe_output(h.name, f"uuid-{i}", f"52:54:00:00:00:{i:02x}", h.address,
                                 gpus=2 if h.name in gpu_hosts else 0)
            for i, h in enumerate(inv.hosts)}


def opener(outputs, log, refuse=(), sudo_pw=()):
    def open_transport(host, accept_new_host_keys=False):
        if host.name in refuse:
            raise TransportError("refused", f"{host.name}: connection refused")
        return FakeTransport(host, outputs, log, sudo_needs_password=host.name in sudo_pw)
    return open_transport


def test_one_round_trip_per_host_with_probe_on_stdin():
    inv = make_inventory("cp-1", "gpu-1", "gpu-2")
    log = []
    report = run_preflight(inv, open_transport=opener(outputs_for(inv, {"gpu-1", "gpu-2"}), log))
    assert sorted(h for h, *_ in log) == ["cp-1", "gpu-1", "gpu-2"]
    assert all(cmd == "sh -s -- k8s-api.example.com" for _, cmd, _, _ in log)
    assert all(stdin == probe_script() for _, _, stdin, _ in log)
    assert all(h.reachable and h.facts is not None for h in report.hosts)
    gpu1 = next(h for h in report.hosts if h.name == "gpu-1")
    assert [(g.vendor_id, g.device_id) for g in gpu1.facts.gpus] == [("0x10de", "0x27b8")] * 2


def test_unreachable_host_never_hides_the_others():
    inv = make_inventory("cp-1", "gpu-1", "gpu-2")
    report = run_preflight(inv, open_transport=opener(outputs_for(inv), [], refuse={"gpu-1"}))
    by = {h.name: h for h in report.hosts}
    assert not by["gpu-1"].reachable and "refused" in by["gpu-1"].error
    assert by["gpu-1"].error_kind == "refused"
    assert by["cp-1"].checks and by["gpu-2"].checks
    assert report.exit_code == EXIT_UNREACHABLE and not report.ok


def test_sudo_password_reported_and_other_facts_still_checked():
    inv = make_inventory("cp-1", "w-1")
    log = []
    report = run_preflight(inv, open_transport=opener(outputs_for(inv), log, sudo_pw={"w-1"}))
    w = next(h for h in report.hosts if h.name == "w-1")
    assert w.reachable and "password" in w.error
    assert [s for h, _, _, s in log if h == "w-1"] == [True, False]
    assert {c.id for c in w.checks} >= {"swap-off", "os-supported"}
    assert report.exit_code == EXIT_CHECKS_FAILED


def test_duplicate_product_uuid_fails_on_both_hosts():
    inv = make_inventory("cp-1", "w-1")
    outs = outputs_for(inv)
    outs["w-1"] = outs["w-1"].replace("uuid-1", "uuid-0")
    report = run_preflight(inv, open_transport=opener(outs, []))
    for h in report.hosts:
        c = next(c for c in h.checks if c.id == "product-uuid-unique")
        assert c.status == "fail"


def test_json_document_shape():
    inv = make_inventory("cp-1", "gpu-1")
    report = run_preflight(inv, open_transport=opener(outputs_for(inv, {"gpu-1"}), []))
    doc = json.loads(json.dumps(report.to_dict()))
    assert set(doc) == {"ok", "hosts"}
    h = doc["hosts"][1]
    assert {"name", "address", "reachable", "error", "facts", "checks"} <= set(h)
    f = h["facts"]
    assert {"os", "kernel", "cgroup_version", "cpus", "memory_mib", "swap_enabled", "gpus",
            "nvidia_driver_version", "nouveau_loaded", "secure_boot"} <= set(f)
    assert set(f["os"]) >= {"id", "version_id", "pretty_name"}
    assert f["gpus"][0]["vendor_id"] == "0x10de" and f["gpus"][0]["device_id"] == "0x27b8"
    assert all(set(c) == {"id", "status", "message", "fix"} for c in h["checks"])
    assert all(c["status"] in ("pass", "warn", "fail", "skip") for c in h["checks"])


def test_cli_json_and_exit_code(monkeypatch, tmp_path):
    inv = make_inventory("cp-1", "gpu-1")
    monkeypatch.setattr("gpuk8s.cli._load", lambda *a: inv)
    monkeypatch.setattr("gpuk8s.transport.open_transport", opener(outputs_for(inv, {"gpu-1"}), []))
    res = CliRunner().invoke(cli.app, ["preflight", "-i", "x.yaml", "--json"])
    doc = json.loads(res.stdout)
    assert [h["name"] for h in doc["hosts"]] == ["cp-1", "gpu-1"]
    expected = EXIT_OK if doc["ok"] else EXIT_CHECKS_FAILED
    assert res.exit_code == expected


def test_cli_human_output_lists_failures_with_fix(monkeypatch):
    inv = make_inventory("cp-1", "w-1")
    outs = outputs_for(inv)
    outs["w-1"] = outs["w-1"].replace("Filename\tType\tSize\tUsed\tPriority",
                                      "Filename\tType\tSize\tUsed\tPriority\n/swap.img file 2097148 0 -2")
    monkeypatch.setattr("gpuk8s.cli._load", lambda *a: inv)
    monkeypatch.setattr("gpuk8s.transport.open_transport", opener(outs, []))
    res = CliRunner().invoke(cli.app, ["preflight", "-i", "x.yaml"], terminal_width=200)
    assert res.exit_code == EXIT_CHECKS_FAILED
    assert "swap-off" in res.stdout and "swapoff -a" in res.stdout
    assert "not ready" in res.stdout


@pytest.mark.parametrize("args,code", [(["preflight"], 2), (["preflight", "--local", "-i", "x"], 2)])
def test_cli_usage_errors(args, code):
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == code


def test_cli_bad_inventory_exit_3(tmp_path):
    p = tmp_path / "inv.yaml"
    p.write_text("cluster:\n  name: x\nhosts:\n  - name: a\n    adress: 10.0.0.1\n    roles: [control-plane]\n")
    res = CliRunner().invoke(cli.app, ["preflight", "-i", str(p)])
    assert res.exit_code == 3
    assert f"{p}:5" in res.stderr and "adress" in res.stderr


class _Out:
    def __init__(self, tty: bool) -> None:
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("tty", [True, False])
def test_print_json_one_document_indented_only_for_a_terminal(monkeypatch, tty):
    from gpuk8s.jsonout import print_json
    out = _Out(tty)
    monkeypatch.setattr("sys.stdout", out)
    doc = {"ok": False, "hosts": [{"name": "gpu-1", "checks": [{"id": "swap-off", "fix": None}]}]}
    print_json(doc)
    assert json.loads(out.text) == doc and out.text.endswith("}\n")
    assert out.text.count("\n") == (len(json.dumps(doc, indent=2).splitlines()) if tty else 1)
