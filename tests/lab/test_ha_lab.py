"""HA without a load balancer in the lab: `up` with cluster.vip (kube-vip static pods, ARP), the
VIP answering on the leader, and the cluster still served through the VIP after the first control
plane is reset (the simulated kube-vip: tests/lab/sim/kubevip.py).

One `up` for the module; the tests after it run in order on that cluster.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
import yaml

from tests.lab.fixture import HostFixture

ADMIN = "/etc/kubernetes/admin.conf"
MANIFEST = "/etc/kubernetes/manifests/kube-vip.yaml"
CPS = ("cp-1", "cp-2", "cp-3")


def gpuk8s(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpuk8s", *args], capture_output=True, text=True,
                          timeout=timeout)


def holders(lab, vip: str) -> list[str]:
    """The hosts that have the VIP on an interface, from their own netns (`ip -o addr`)."""
    out = []
    for n in lab.names():
        r = lab.exec(n, "ip -o -4 addr show")
        if re.search(rf"\binet {re.escape(vip)}/", r.stdout):
            out.append(n)
    return out


def wait_holder(lab, vip: str, among: tuple[str, ...], timeout: float = 40) -> list[str]:
    """Poll (bounded) until exactly one of `among` holds the VIP and no other host does."""
    deadline = time.monotonic() + timeout
    got: list[str] = []
    while time.monotonic() < deadline:
        got = holders(lab, vip)
        if len(got) == 1 and got[0] in among:
            return got
        time.sleep(0.5)
    return got


def kubectl_from(lab, name: str, kubeconfig: str, *args: str) -> subprocess.CompletedProcess:
    lab.write_file(name, "/root/vip-kubeconfig", kubeconfig, 0o600)
    return lab.exec(name, "kubectl --kubeconfig /root/vip-kubeconfig " + " ".join(args))


def mac_of(lab, name: str) -> str:
    return lab.exec(name, "cat /sys/class/net/eth0/address").stdout.strip().lower()


def neighbour_mac(lab, name: str, vip: str) -> str:
    """Connect from `name` to the VIP (any port: the SYN needs ARP), then its neighbour entry."""
    lab.exec(name, f"timeout 2 bash -c ': <>/dev/tcp/{vip}/22' 2>/dev/null; :")
    m = re.search(r"lladdr ([0-9a-f:]{17})", lab.exec(name, f"ip neigh show {vip}").stdout)
    return m.group(1) if m else ""


@pytest.fixture(scope="module")
def ha(lab_factory, tmp_path_factory):
    lab = lab_factory([HostFixture.bare("cp-1", roles=("control-plane",)),
                       HostFixture.bare("cp-2", roles=("control-plane",)),
                       HostFixture.bare("cp-3", roles=("control-plane",), os="rocky-9"),
                       HostFixture.bare("w-1")])
    tmp = tmp_path_factory.mktemp("ha")
    vip = lab.unused_address(3)
    # No control_plane_endpoint: with a VIP it defaults to <vip>:6443.
    inv = lab.write_inventory(tmp / "inv.yaml", cluster={
        "control_plane_endpoint": None, "vip": {"address": vip, "interface": "eth0"}})
    pre = gpuk8s("preflight", "-i", inv, "--json", timeout=120)
    r = gpuk8s("up", "-i", inv, "--kubeconfig", str(tmp / "kubeconfig"), "--wait-timeout", "60",
               "--log-file", str(tmp / "up.log"))
    return {"lab": lab, "inv": inv, "tmp": tmp, "vip": vip, "up": r, "preflight": pre}


def test_preflight_finds_the_vip_free_and_the_interface_in_its_subnet(ha):
    pre = ha["preflight"]
    doc = json.loads(pre.stdout)
    results = {(h["name"], c["id"]): c for h in doc["hosts"] for c in h["checks"]}
    for cp in CPS:
        assert results[(cp, "vip-free")]["status"] == "pass", results[(cp, "vip-free")]
        assert "is free" in results[(cp, "vip-free")]["message"]
        assert results[(cp, "vip-interface")]["status"] == "pass", results[(cp, "vip-interface")]
    assert results[("w-1", "vip-free")]["status"] == "skip"


def test_up_with_a_vip_builds_the_cluster_through_it(ha):
    lab, vip, r = ha["lab"], ha["vip"], ha["up"]
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    got = json.loads(lab.exec("cp-1", f"kubectl --kubeconfig {ADMIN} get nodes -o json").stdout)
    assert sorted(i["metadata"]["name"] for i in got["items"]) == ["cp-1", "cp-2", "cp-3", "w-1"]
    # kube-vip came up with the control plane during init, through super-admin.conf
    log = lab.read_file("cp-1", "/var/log/gpuk8s-lab-kube-vip.log")
    assert "init: holds=True why=None" in log, log
    # ... and reads admin.conf now, like the joined control planes' copies
    for cp in CPS:
        doc = yaml.safe_load(lab.read_file(cp, MANIFEST))
        assert doc["spec"]["volumes"][0]["hostPath"]["path"] == ADMIN, cp
        env = {e["name"]: e.get("value") for e in doc["spec"]["containers"][0]["env"]}
        assert (env["address"], env["vip_interface"]) == (vip, "eth0")
    # the first control plane leads: the VIP is on its eth0, on no other host
    assert wait_holder(lab, vip, ("cp-1",)) == ["cp-1"]
    # the endpoint every node was given is the VIP
    cfg = yaml.safe_load(lab.read_file("w-1", "/etc/kubernetes/kubelet.conf"))
    assert cfg["clusters"][0]["cluster"]["server"] == f"https://{vip}:6443"


def test_kubectl_through_the_vip_from_a_worker(ha):
    lab, vip = ha["lab"], ha["vip"]
    kubeconfig = (ha["tmp"] / "kubeconfig").read_text()
    assert f"https://{vip}:6443" in kubeconfig
    r = kubectl_from(lab, "w-1", kubeconfig, "get", "nodes", "-o", "name")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == ["node/cp-1", "node/cp-2", "node/cp-3", "node/w-1"]
    assert neighbour_mac(lab, "w-1", vip) == mac_of(lab, "cp-1")


def test_the_vip_keeps_serving_after_the_first_control_plane_is_reset(ha):
    lab, vip = ha["lab"], ha["vip"]
    # `gpuk8s reset --host cp-1`: drain, kubeadm reset (its etcd member, static pods and kube-vip
    # go), cleanup, then the Node is deleted through the VIP, which answers again once the lease
    # has moved to another control plane (reset waits for the API server, bounded).
    r = gpuk8s("reset", "-i", ha["inv"], "--host", "cp-1", "--yes", timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert lab.exec("cp-1", f"test -e {MANIFEST}").returncode != 0
    # another control plane takes the lease once cp-1's expires, and announces the VIP
    new = wait_holder(lab, vip, ("cp-2", "cp-3"))
    assert len(new) == 1 and new[0] in ("cp-2", "cp-3"), new
    # the worker's ARP entry follows (gratuitous ARP) and kubectl through the VIP still works
    assert neighbour_mac(lab, "w-1", vip) == mac_of(lab, new[0])
    r = kubectl_from(lab, "w-1", (ha["tmp"] / "kubeconfig").read_text(), "get", "nodes", "-o", "name")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == ["node/cp-2", "node/cp-3", "node/w-1"]
    ha["holder"] = new[0]


def test_kube_vip_never_holds_the_vip_without_its_interface(ha):
    """Fidelity: a manifest naming an interface the host lacks leaves kube-vip unable to lead;
    the other control plane takes over when the lease runs out."""
    lab, vip = ha["lab"], ha["vip"]
    holder = ha.get("holder") or wait_holder(lab, vip, ("cp-2", "cp-3"))[0]
    other = "cp-3" if holder == "cp-2" else "cp-2"
    text = lab.read_file(holder, MANIFEST)
    lab.write_file(holder, MANIFEST, text.replace("value: \"eth0\"", "value: \"eth9\""), 0o600)
    assert "eth9" in lab.read_file(holder, MANIFEST)
    assert wait_holder(lab, vip, (other,)) == [other]
    # super-admin.conf exists only where init ran: a joined control plane cannot use it
    text = lab.read_file(other, MANIFEST)
    lab.write_file(other, MANIFEST, text.replace(f"path: \"{ADMIN}\"",
                                                 'path: "/etc/kubernetes/super-admin.conf"'), 0o600)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and holders(lab, vip):
        time.sleep(0.5)
    assert holders(lab, vip) == []
    # put both back: the VIP returns
    for n in (holder, other):
        lab.write_file(n, MANIFEST, lab.read_file(n, MANIFEST).replace("eth9", "eth0").replace(
            "/etc/kubernetes/super-admin.conf", ADMIN), 0o600)
    assert len(wait_holder(lab, vip, ("cp-2", "cp-3"))) == 1


# --------------------------------------------------------------------------- the simulators alone

@pytest.fixture(scope="module")
def sims(lab_factory, tmp_path_factory):
    """Two prepared control planes (tools installed), driven with kubeadm directly."""
    from gpuk8s.inventory import load_inventory
    from gpuk8s.render import ClusterSecrets

    lab = lab_factory([HostFixture("v-cp", roles=("control-plane",), containerd="2.1.4", kube="1.36.2"),
                       HostFixture("v-cp2", roles=("control-plane",), containerd="2.1.4", kube="1.36.2")])
    vip = lab.unused_address(4)
    path = lab.write_inventory(tmp_path_factory.mktemp("sims") / "inv.yaml", cluster={
        "control_plane_endpoint": None, "vip": {"address": vip, "interface": "eth0"}})
    inv = load_inventory(path)
    yield lab, inv, vip, ClusterSecrets.generate()
    lab.close()


def _sh(lab, host, cmd):
    return lab.exec(host, cmd, timeout=60)


def test_kubeadm_init_needs_kube_vip_with_super_admin_conf(sims):
    """kube-vip/kube-vip#684: with admin.conf mounted during init, kube-vip cannot take its lease
    (admin.conf has no rights before init binds it), the VIP never answers, and init fails where
    its first client reaches controlPlaneEndpoint. With super-admin.conf it comes up."""
    from gpuk8s.render import kubeadm_init_config
    from gpuk8s.render.kubevip import kube_vip_manifest

    lab, inv, vip, secrets = sims
    host = inv.host("v-cp")
    init = kubeadm_init_config(inv, host, secrets, inv.release)
    lab.write_file("v-cp", "/root/init.yaml", init.content, 0o600)
    lab.write_file("v-cp", MANIFEST, kube_vip_manifest(inv, inv.release).content, 0o600)
    r = _sh(lab, "v-cp", "kubeadm init --config /root/init.yaml --upload-certs")
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("error execution phase wait-control-plane: cannot obtain client without bootstrap: could not "
            "bootstrap the admin user in file admin.conf") in r.stderr
    assert holders(lab, vip) == []
    # kubeadm reset clears the manifests; the init-time manifest (super-admin.conf) works
    assert _sh(lab, "v-cp", "kubeadm reset -f").returncode == 0
    lab.write_file("v-cp", MANIFEST, kube_vip_manifest(inv, inv.release, during_init=True).content, 0o600)
    r = _sh(lab, "v-cp", "kubeadm init --config /root/init.yaml --upload-certs")
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_holder(lab, vip, ("v-cp",)) == ["v-cp"]
    # super-admin.conf only where init ran
    assert _sh(lab, "v-cp", "test -f /etc/kubernetes/super-admin.conf").returncode == 0


def test_kubeadm_join_refuses_a_manifest_placed_before_it(sims):
    """RunJoinNodeChecks: DirAvailable--etc-kubernetes-manifests. kube-vip goes in after join."""
    from gpuk8s.pki import ca_cert_hash
    from gpuk8s.render import kubeadm_join_config
    from gpuk8s.render.kubevip import kube_vip_manifest

    lab, inv, vip, secrets = sims
    ca = ca_cert_hash(lab.read_file("v-cp", "/etc/kubernetes/pki/ca.crt"))
    assert _sh(lab, "v-cp", "kubeadm init phase upload-certs --upload-certs --config /root/init.yaml"
               ).returncode == 0
    join = kubeadm_join_config(inv, inv.host("v-cp2"), secrets, inv.release, ca)
    lab.write_file("v-cp2", "/root/join.yaml", join.content, 0o600)
    lab.write_file("v-cp2", MANIFEST, kube_vip_manifest(inv, inv.release).content, 0o600)
    r = _sh(lab, "v-cp2", "kubeadm join --config /root/join.yaml")
    assert r.returncode == 1 and \
        "[ERROR DirAvailable--etc-kubernetes-manifests]: /etc/kubernetes/manifests is not empty" in r.stderr, \
        r.stdout + r.stderr
    _sh(lab, "v-cp2", f"rm -f {MANIFEST}")
    r = _sh(lab, "v-cp2", "kubeadm join --config /root/join.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _sh(lab, "v-cp2", "test -e /etc/kubernetes/super-admin.conf").returncode != 0
    lab.write_file("v-cp2", MANIFEST, kube_vip_manifest(inv, inv.release).content, 0o600)
    # v-cp leads and keeps leading: the joined control plane's kube-vip waits for the lease
    assert wait_holder(lab, vip, ("v-cp",)) == ["v-cp"]
