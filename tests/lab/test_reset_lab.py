"""`gpuk8s kubeconfig` and `gpuk8s reset` in the lab, on one cluster made by `up` in this module.

In order: kubeconfigs (admin to a 0600 file, merged into a file with other contexts, a named
user's bound to a ClusterRole); refusing the last control plane; a drain that a
PodDisruptionBudget blocks (reported: the pod and the PDB); a dry run that only reads; a worker
reset and taken back with `gpuk8s join` (then `up` finds nothing to do); a reset interrupted
after `kubeadm reset` ran, then run again.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.lab.fixture import DEFAULT_BINARIES, HostFixture
from tests.lab.test_up_lab import (ADMIN, clear_invocations, invocations, is_read_only, nodes, ready,
                                   secrets_absent, up)

KUBECTL = f"kubectl --kubeconfig {ADMIN} "
ENDPOINT = "https://k8s-api.lab:6443"
OTHER = """apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster: {server: 'https://prod.example:6443'}
users:
- name: prod-admin
  user: {token: prod-token-abcdefghijklmnop}
contexts:
- name: prod
  context: {cluster: prod, user: prod-admin}
current-context: prod
"""


def gpuk8s(*args: str, env: dict | None = None, timeout: int = 300, stdin=subprocess.DEVNULL):
    return subprocess.run([sys.executable, "-m", "gpuk8s", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, stdin=stdin)


@pytest.fixture(scope="module")
def cluster(lab_factory, tmp_path_factory):
    lab = lab_factory([HostFixture.bare("cp-1", roles=("control-plane",)),
                       HostFixture.bare("w-1", binaries=DEFAULT_BINARIES + ("nft", "ipvsadm")),
                       HostFixture.bare("w-2")])
    tmp = tmp_path_factory.mktemp("reset")
    inv = lab.write_inventory(tmp / "inv.yaml")
    r = up(inv, tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    yield lab, inv, tmp
    lab.close()


def test_kubeconfig_admin_to_a_private_file_and_merged_keeping_other_contexts(cluster):
    lab, inv, tmp = cluster
    out = tmp / "admin.kubeconfig"
    r = gpuk8s("kubeconfig", "-i", inv, "-o", str(out), "--log-file", str(tmp / "kc.log"))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and r.stdout == ""
    doc = yaml.safe_load(out.read_text())
    assert doc["clusters"][0]["cluster"]["server"] == ENDPOINT and doc["current-context"] == "lab"
    key = doc["users"][0]["user"]["client-key-data"]
    assert key not in r.stderr and key not in (tmp / "kc.log").read_text()
    # the same file `up` wrote (one code path)
    assert out.read_text() == (tmp / "kubeconfig").read_text()

    merged = tmp / "home" / "config"
    merged.parent.mkdir()
    merged.write_text(OTHER)
    merged.chmod(0o640)
    r = gpuk8s("kubeconfig", "-i", inv, "--merge", env={"KUBECONFIG": f"{merged}:{tmp / 'other'}"})
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(merged.read_text())
    assert [c["name"] for c in doc["contexts"]] == ["prod", "lab"]
    assert doc["current-context"] == "prod" and doc["users"][0]["user"]["token"] == "prod-token-abcdefghijklmnop"
    assert next(c for c in doc["clusters"] if c["name"] == "lab")["cluster"]["server"] == ENDPOINT
    assert stat.S_IMODE(merged.stat().st_mode) == 0o640
    assert not list(merged.parent.glob("*.gpuk8s-new"))
    # stdout: exactly the kubeconfig
    r = gpuk8s("kubeconfig", "-i", inv)
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["clusters"][0]["name"] == "lab"


def test_kubeconfig_for_a_user_is_signed_by_the_cluster_ca_and_bound(cluster):
    from cryptography import x509

    lab, inv, tmp = cluster
    out = tmp / "alice.kubeconfig"
    r = gpuk8s("kubeconfig", "-i", inv, "--user", "alice", "--cluster-role", "edit", "--expiry", "2h",
               "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "client certificate expires" in r.stderr
    doc = yaml.safe_load(out.read_text())
    user = doc["users"][0]
    assert user["name"] == "alice@lab" and doc["contexts"][0]["name"] == "alice@lab"
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["user"]["client-certificate-data"]))
    assert cert.subject.rfc4514_string() == "CN=alice"
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 7000 < life.total_seconds() < 7600   # 2 h (kubeadm backdates not-before by minutes)
    ca = x509.load_pem_x509_certificate(lab.read_file("cp-1", "/etc/kubernetes/pki/ca.crt").encode())
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    crb = json.loads(lab.exec("cp-1", KUBECTL + "get clusterrolebinding/gpuk8s:user:alice -o json").stdout)
    assert crb["roleRef"]["name"] == "edit" and crb["subjects"][0]["name"] == "alice"
    # kubeadm read its settings from a file that is gone afterwards, and never the admin's identity
    assert lab.exec("cp-1", "test -e /etc/gpuk8s/kubeadm-kubeconfig-user.yaml").returncode != 0
    assert "kubernetes-admin" not in out.read_text()
    # another role: the binding is replaced (roleRef cannot change in place)
    r = gpuk8s("kubeconfig", "-i", inv, "--user", "alice", "--cluster-role", "view", "-o", str(out))
    assert r.returncode == 0, r.stderr
    crb = json.loads(lab.exec("cp-1", KUBECTL + "get clusterrolebinding/gpuk8s:user:alice -o json").stdout)
    assert crb["roleRef"]["name"] == "view"
    r = gpuk8s("kubeconfig", "-i", inv, "--user", "alice", "--cluster-role", "no-such-role")
    assert r.returncode == 2 and "no such ClusterRole" in r.stderr


def test_reset_refuses_the_last_control_plane(cluster):
    lab, inv, tmp = cluster
    r = gpuk8s("reset", "-i", inv, "--host", "cp-1", "--yes")
    assert r.returncode == 2 and "last control plane" in r.stderr, r.stderr
    assert "cp-1" in nodes(lab)
    r = gpuk8s("reset", "-i", inv, "--host", "w-1")   # stdin is not a terminal, no --yes
    assert r.returncode == 2 and "without --yes" in r.stderr


POD = """apiVersion: v1
kind: Pod
metadata:
  name: web-7c9d-x2x7q
  namespace: default
  labels: {app: web}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: web-7c9d, uid: 5d1c, controller: true}
spec:
  nodeName: w-2
  containers:
  - {name: web, image: nginx}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: default}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: web}}
"""


def test_reset_drain_blocked_by_a_pod_disruption_budget_reports_the_pod_and_the_pdb(cluster):
    lab, inv, tmp = cluster
    lab.write_file("cp-1", "/root/web.yaml", POD)
    r = lab.exec("cp-1", KUBECTL + "apply --server-side -f /root/web.yaml")
    assert r.returncode == 0, r.stderr
    r = gpuk8s("reset", "-i", inv, "--host", "w-2", "--yes", "--drain-timeout", "6")
    assert r.returncode == 5, r.stdout + r.stderr
    text = r.stdout + r.stderr
    assert "pod default/web-7c9d-x2x7q (ReplicaSet/web-7c9d): PodDisruptionBudget default/web " \
           "(minAvailable 1, 0 disruptions allowed)" in text, text
    assert "global timeout reached" in text
    node = nodes(lab)["w-2"]
    assert node["spec"]["unschedulable"] is True       # cordoned, nothing else changed
    assert lab.exec("w-2", "test -e /etc/kubernetes/kubelet.conf").returncode == 0
    # the PDB relaxed: the pod goes (its ReplicaSet makes one on another node) and the reset completes
    assert lab.exec("cp-1", KUBECTL + "delete pdb web").returncode == 0


def test_reset_dry_run_only_reads(cluster):
    lab, inv, tmp = cluster
    clear_invocations(lab)
    r = gpuk8s("reset", "-i", inv, "--host", "w-1", "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cordon node w-1" in r.stdout and "$ kubeadm reset -f" in r.stdout, r.stdout   # the plan
    for n in lab.names():
        changing = [ln for ln in invocations(lab, n) if not is_read_only(ln) and not netfilter_read(ln)]
        assert changing == [], (n, changing)
    assert not nodes(lab)["w-1"]["spec"].get("unschedulable")


def netfilter_read(line: str) -> bool:
    """The leftovers read's netfilter calls (the cleanup's restore/delete/clear are changes)."""
    words = line.split()
    return words[0] in ("iptables-save", "ip6tables-save") or words[:3] == ["nft", "list", "tables"] or \
        words == ["ipvsadm", "-Sn"]


def test_reset_a_worker_then_join_takes_it_back(cluster):
    lab, inv, tmp = cluster
    # what Calico and kube-proxy leave on a node: interfaces, CNI config, netfilter rules, IPVS
    lab.exec("w-1", "ip link add cali0123456789a type veth peer name gpuk8s-peer0 && "
                    "mkdir -p /etc/cni/net.d && echo '{}' > /etc/cni/net.d/10-calico.conflist")
    lab.write_file("w-1", "/etc/gpuk8s-lab/netfilter/iptables.rules", IPTABLES)
    lab.write_file("w-1", "/etc/gpuk8s-lab/netfilter/nft.tables", "ip kube-proxy\ninet filter\nip6 kube-proxy\n")
    lab.write_file("w-1", "/etc/gpuk8s-lab/netfilter/ipvs.rules", "-A -t 10.96.0.1:443 -s rr\n")
    r = gpuk8s("reset", "-i", inv, "--host", "w-1", "--yes", "--log-file", str(tmp / "reset-w1.log"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "w-1" not in nodes(lab) and {"cp-1", "w-2"} <= set(nodes(lab))
    for path in ("/etc/kubernetes/kubelet.conf", "/var/lib/kubelet", "/etc/cni/net.d/10-calico.conflist",
                 "/sys/class/net/cali0123456789a"):
        assert lab.exec("w-1", f"test -e {path}").returncode != 0, path
    secrets_absent(r.stdout, r.stderr, (tmp / "reset-w1.log").read_text())
    rules = lab.exec("w-1", "iptables-save").stdout
    assert "KUBE-" not in rules and "cali-" not in rules
    assert "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT" in rules       # the host's own rule stays
    assert lab.exec("w-1", "nft list tables").stdout.split("\n")[:1] == ["table inet filter"]
    assert lab.exec("w-1", "ipvsadm -Sn").stdout == ""
    # a second reset finds nothing to do
    r = gpuk8s("reset", "-i", inv, "--host", "w-1", "--yes")
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stdout + r.stderr
    # `gpuk8s join` takes it back (a host that is not a node any more), with a fresh token
    r = gpuk8s("join", "-i", inv, "--host", "w-1", "--wait-timeout", "60", "--log-file", str(tmp / "join.log"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert ready(nodes(lab)["w-1"])
    # and `up` finds nothing left to do on it
    r = up(inv, tmp)
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


IPTABLES = """*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
:cali-INPUT - [0:0]
-A INPUT -j KUBE-FIREWALL
-A INPUT -m comment --comment "cali:Cz_u1IQiXIMmKD4c" -j cali-INPUT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
"""


def _slow_reset(lab, name: str) -> None:
    """kubeadm reset runs for real, then the wrapper sleeps: an interrupt lands after it."""
    real = lab.exec(name, "readlink -f /usr/bin/kubeadm").stdout.strip()
    lab.write_file(name, "/usr/local/sbin/kubeadm-slow",
                   f'#!/bin/sh\ncase "$1" in reset) {real} "$@"; rc=$?; touch /run/reset-done; sleep 30; '
                   f'exit $rc;; esac\nexec {real} "$@"\n', 0o755)
    lab.exec(name, "ln -sf /usr/local/sbin/kubeadm-slow /usr/bin/kubeadm")


def test_reset_interrupted_half_way_then_run_again(cluster):
    lab, inv, tmp = cluster
    _slow_reset(lab, "w-2")
    log = tmp / "reset-int.log"
    p = subprocess.Popen([sys.executable, "-m", "gpuk8s", "reset", "-i", inv, "--host", "w-2", "--yes",
                          "--log-file", str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for _ in range(1200):   # bounded: 120 s
        if lab.exec("w-2", "test -e /run/reset-done").returncode == 0 or p.poll() is not None:
            break
        time.sleep(0.1)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, out + err
    assert "w-2" in nodes(lab)   # the Node was not deleted yet
    lab.exec("w-2", "rm -f /run/reset-done")
    r = gpuk8s("reset", "-i", inv, "--host", "w-2", "--yes", "--log-file", str(tmp / "reset-again.log"))
    assert r.returncode == 0, r.stdout + r.stderr
    again = (tmp / "reset-again.log").read_text()
    assert "change: kubeadm reset -f" not in again       # decided from the facts: already done
    assert "change: delete node w-2" in again
    assert "w-2" not in nodes(lab)
    assert lab.exec("w-2", "test -e /etc/kubernetes/kubelet.conf").returncode != 0
    Path(tmp / "done").write_text("ok")
