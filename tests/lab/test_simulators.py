"""The lab's simulators of what `gpuk8s up` drives, exercised directly (not through gpuk8s).

One lab of two bare hosts: packages, kernel settings, containerd, kubeadm init/join against the
shared simulated cluster, kubectl and Calico.
"""

from __future__ import annotations

import json
import time

import pytest

from gpuk8s.inventory import load_inventory
from gpuk8s.pki import ca_cert_hash
from gpuk8s.render import (ClusterSecrets, calico_installation, calico_manifest_urls, kubeadm_init_config,
                           kubeadm_join_config, release_for_inventory)
from tests.lab.fixture import HostFixture

KUBECTL = "kubectl --kubeconfig /etc/kubernetes/admin.conf "
SEVERAL = "nodes,installations.operator.tigera.io,tigerastatuses.operator.tigera.io"
K8S_LIST = "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v1.36/deb/ /\n"
DOCKER_LIST = "deb [signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/ubuntu noble stable\n"


def sh(lab, host, cmd, *, input=None, ok=True):
    r = lab.exec(host, cmd, input=input, timeout=60)
    if ok:
        assert r.returncode == 0, f"{cmd}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def lab(lab_factory):
    lab = lab_factory([HostFixture.bare("cp-1", roles=("control-plane",)), HostFixture.bare("w-1"),
                       HostFixture.bare("w-bad", fail_join=True)])
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def ctx(lab, tmp_path_factory):
    inv_path = lab.write_inventory(tmp_path_factory.mktemp("inv") / "inv.yaml")
    inv = load_inventory(inv_path)
    return inv, release_for_inventory(inv), ClusterSecrets.generate()


def _prepare(lab, host):
    """What PrepareHosts does, by hand: swap, modules, sysctls, packages, containerd."""
    sh(lab, host, "swapoff -a && modprobe overlay && modprobe br_netfilter")
    lab.write_file(host, "/etc/sysctl.d/99-kubernetes.conf",
                   "net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\n"
                   "net.bridge.bridge-nf-call-ip6tables = 1\nkernel.panic = 10\n")
    r = sh(lab, host, "sysctl --system")
    assert "net.ipv4.ip_forward = 1" in r.stdout and "kernel.panic" not in r.stdout
    assert lab.read_file(host, "/proc/sys/net/ipv4/ip_forward").strip() == "1"
    assert lab.read_file(host, "/proc/swaps").count("\n") == 1
    sh(lab, host, "apt-get update -qq && apt-get install -y -qq apt-transport-https ca-certificates curl gpg")
    sh(lab, host, "install -m 0755 -d /etc/apt/keyrings && "
                  "curl -fsSL https://download.docker.com/linux/ubuntu/gpg -o /etc/apt/keyrings/docker.asc && "
                  "curl -fsSL https://pkgs.k8s.io/core:/stable:/v1.36/deb/Release.key | "
                  "gpg --batch --yes --dearmor -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg")
    lab.write_file(host, "/etc/apt/sources.list.d/docker.list", DOCKER_LIST)
    lab.write_file(host, "/etc/apt/sources.list.d/kubernetes.list", K8S_LIST)
    sh(lab, host, "apt-get update -qq && apt-get install -y -qq --allow-downgrades --allow-change-held-packages "
                  "'containerd.io=2.1*' kubelet=1.36.2-1.1 kubeadm=1.36.2-1.1 kubectl=1.36.2-1.1")
    sh(lab, host, "apt-mark hold kubelet kubeadm kubectl && systemctl enable kubelet")
    # The package's config disables CRI: regenerate it, with SystemdCgroup on.
    default = sh(lab, host, "containerd config default").stdout
    cfg = default.replace("SystemdCgroup = false", "SystemdCgroup = true")
    lab.write_file(host, "/etc/containerd/config.toml", cfg)
    sh(lab, host, "systemctl restart containerd && systemctl enable containerd")


def test_packages_and_host_settings(lab):
    r = sh(lab, "cp-1", "command -v kubeadm", ok=False)
    assert r.returncode != 0
    r = sh(lab, "cp-1", "apt-get install -y -qq kubeadm=1.36.2-1.1", ok=False)
    assert r.returncode == 100 and "Unable to locate package kubeadm" in r.stderr
    lab.write_file("cp-1", "/etc/apt/sources.list.d/kubernetes.list", K8S_LIST)
    r = sh(lab, "cp-1", "apt-get update -qq", ok=False)          # no keyring yet
    assert r.returncode == 100 and "NO_PUBKEY" in r.stderr
    sh(lab, "cp-1", "rm /etc/apt/sources.list.d/kubernetes.list")
    _prepare(lab, "cp-1")
    assert sh(lab, "cp-1", "kubeadm version -o short").stdout.strip() == "v1.36.2"
    assert sh(lab, "cp-1", "command -v kubeadm").stdout.strip() == "/usr/bin/kubeadm"
    assert "v2.1.4" in sh(lab, "cp-1", "containerd --version").stdout
    r = sh(lab, "cp-1", "apt-get install -y -qq kubeadm=1.36.9-1.1", ok=False)
    assert r.returncode == 100 and "E: Version '1.36.9-1.1' for 'kubeadm' was not found" in r.stderr
    r = sh(lab, "cp-1", "apt-get install -y -qq kubeadm=1.35.6-1.1", ok=False)  # not in the v1.36 repo
    assert r.returncode == 100
    assert sh(lab, "cp-1", "systemctl is-active containerd").stdout.strip() == "active"
    # A broken config: containerd refuses to restart.
    good = lab.read_file("cp-1", "/etc/containerd/config.toml")
    lab.write_file("cp-1", "/etc/containerd/config.toml", "version = 3\n[plugins\n")
    r = sh(lab, "cp-1", "systemctl restart containerd", ok=False)
    assert r.returncode == 1 and "containerd.service failed" in r.stderr
    lab.write_file("cp-1", "/etc/containerd/config.toml", good)
    sh(lab, "cp-1", "systemctl restart containerd")
    assert lab.exec("cp-1", "test -d /sys/module/br_netfilter").returncode == 0
    log = lab.read_file("cp-1", "/etc/gpuk8s-lab/invocations.log").splitlines()
    assert "swapoff -a" in log and "apt-mark hold kubelet kubeadm kubectl" in log


def test_init_join_and_calico(lab, ctx):
    inv, release, secrets = ctx
    for h in ("w-1", "w-bad"):
        _prepare(lab, h)
    cp = inv.host("cp-1")
    init = kubeadm_init_config(inv, cp, secrets, release)
    lab.write_file("cp-1", init.path, init.content, 0o600)
    # Flags next to --config are refused.
    r = sh(lab, "cp-1", f"kubeadm init --config {init.path} --pod-network-cidr 10.0.0.0/8", ok=False)
    assert r.returncode == 1 and "can not mix '--config' with arguments [pod-network-cidr]" in r.stderr
    r = sh(lab, "cp-1", f"kubeadm init --config {init.path} --upload-certs")
    assert "Your Kubernetes control-plane has initialized successfully!" in r.stdout
    assert "--discovery-token-ca-cert-hash sha256:" in r.stdout and "--certificate-key" in r.stdout
    log = lab.read_file("cp-1", "/etc/gpuk8s-lab/invocations.log")
    assert secrets.token.reveal() not in log
    # A second init: the manifests exist.
    r = sh(lab, "cp-1", f"kubeadm init --config {init.path} --upload-certs", ok=False)
    assert "[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]" in r.stderr

    ca = lab.read_file("cp-1", "/etc/kubernetes/pki/ca.crt")
    good_hash = ca_cert_hash(ca)
    w = inv.host("w-1")
    bad = kubeadm_join_config(inv, w, secrets, release, "sha256:" + "1" * 64)
    lab.write_file("w-1", bad.path, bad.content, 0o600)
    r = sh(lab, "w-1", f"kubeadm join --config {bad.path}", ok=False)
    assert r.returncode == 1
    assert f'none of the public keys "{good_hash}" are pinned' in r.stderr
    join = kubeadm_join_config(inv, w, secrets, release, good_hash)
    lab.write_file("w-1", join.path, join.content, 0o600)
    r = sh(lab, "w-1", f"kubeadm join --config {join.path}")
    assert "This node has joined the cluster" in r.stdout
    r = sh(lab, "w-1", f"kubeadm join --config {join.path}", ok=False)
    assert "[ERROR FileAvailable--etc-kubernetes-kubelet.conf]" in r.stderr
    # The fixture knob: a realistic preflight failure.
    wb = kubeadm_join_config(inv, inv.host("w-bad"), secrets, release, good_hash)
    lab.write_file("w-bad", wb.path, wb.content, 0o600)
    r = sh(lab, "w-bad", f"kubeadm join --config {wb.path}", ok=False)
    assert r.returncode == 1 and "[ERROR Port-10250]: Port 10250 is in use" in r.stderr

    nodes = json.loads(sh(lab, "cp-1", KUBECTL + "get nodes -o json").stdout)
    by_name = {n["metadata"]["name"]: n for n in nodes["items"]}
    assert set(by_name) == {"cp-1", "w-1"}
    assert by_name["w-1"]["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.2"
    assert "node-role.kubernetes.io/control-plane" in by_name["cp-1"]["metadata"]["labels"]
    ready = {n: next(c["status"] for c in d["status"]["conditions"] if c["type"] == "Ready")
             for n, d in by_name.items()}
    assert ready == {"cp-1": "False", "w-1": "False"}          # no CNI yet
    assert "cni plugin not initialized" in sh(lab, "w-1", "journalctl -u kubelet -n 5 --no-pager").stdout

    # Several types in one get: kubectl resolves them all first, so one unknown type fails the call.
    r = sh(lab, "cp-1", KUBECTL + f"get {SEVERAL} -o json", ok=False)
    assert r.returncode == 1 and r.stdout == ""
    assert 'error: the server doesn\'t have a resource type "installations"' in r.stderr
    # Calico: client-side apply of the CRD bundle overflows; server-side apply is idempotent.
    urls = calico_manifest_urls(release)
    r = sh(lab, "cp-1", KUBECTL + f"apply -f {urls[0]}", ok=False)
    assert r.returncode == 1 and "metadata.annotations: Too long: must have at most 262144 bytes" in r.stderr
    for _ in range(2):
        for url in urls:
            r = sh(lab, "cp-1", KUBECTL + f"apply --server-side --force-conflicts -f {url}")
            assert "serverside-applied" in r.stdout
    r = sh(lab, "cp-1", KUBECTL + f"create -f {urls[-1]}", ok=False)
    assert "AlreadyExists" in r.stderr
    inst = calico_installation(inv, release)
    wrong = inst.content.replace(inv.cluster.pod_cidr, "192.168.0.0/16")
    lab.write_file("cp-1", "/etc/gpuk8s/calico-installation.yaml", wrong)
    sh(lab, "cp-1", "GPUK8S_LAB_CALICO_DELAY=0 " + KUBECTL
       + "apply --server-side --force-conflicts -f /etc/gpuk8s/calico-installation.yaml")
    ts = json.loads(sh(lab, "cp-1", KUBECTL + "get tigerastatus -o json").stdout)
    calico = next(i for i in ts["items"] if i["metadata"]["name"] == "calico")
    deg = next(c for c in calico["status"]["conditions"] if c["type"] == "Degraded")
    assert deg["status"] == "True"
    assert ("IPPool 192.168.0.0/16 is not within the platform's configured pod network CIDR(s) "
            f"[{inv.cluster.pod_cidr}]") in deg["message"]
    lab.write_file("cp-1", "/etc/gpuk8s/calico-installation.yaml", inst.content)
    sh(lab, "cp-1", KUBECTL + "apply --server-side --force-conflicts -f /etc/gpuk8s/calico-installation.yaml")
    ts = json.loads(sh(lab, "cp-1", KUBECTL + "get tigerastatus -o json").stdout)
    calico = next(i for i in ts["items"] if i["metadata"]["name"] == "calico")
    assert next(c["status"] for c in calico["status"]["conditions"] if c["type"] == "Progressing") == "True"
    time.sleep(2.2)   # Available after the operator's settle time (2 s by default)
    ts = json.loads(sh(lab, "cp-1", KUBECTL + "get tigerastatus -o json").stdout)
    assert all(next(c["status"] for c in i["status"]["conditions"] if c["type"] == "Available") == "True"
               for i in ts["items"]), ts
    nodes = json.loads(sh(lab, "cp-1", KUBECTL + "get nodes -o json").stdout)
    assert all(next(c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready") == "True"
               for n in nodes["items"])
    both = json.loads(sh(lab, "cp-1", KUBECTL + f"get {SEVERAL} -o json").stdout)
    assert both["kind"] == "List"
    assert [i["kind"] for i in both["items"]] == (["Node"] * len(nodes["items"]) + ["Installation"]
                                                  + ["TigeraStatus"] * len(ts["items"]))
    assert both["items"][len(nodes["items"])]["metadata"]["name"] == "default"
    # the operator reports the release whose manifests were applied
    assert both["items"][len(nodes["items"])]["status"]["calicoVersion"] == f"v{release.calico}"
    # Labels and taints.
    sh(lab, "cp-1", KUBECTL + "label node w-1 node-role.kubernetes.io/worker= --overwrite")
    sh(lab, "cp-1", KUBECTL + "taint node w-1 gpu=true:NoSchedule --overwrite")
    n = json.loads(sh(lab, "cp-1", KUBECTL + "get nodes w-1 -o json").stdout)
    assert n["metadata"]["labels"]["node-role.kubernetes.io/worker"] == ""
    assert {"key": "gpu", "value": "true", "effect": "NoSchedule"} in n["spec"]["taints"]
    assert "calico-node-" in sh(lab, "cp-1", KUBECTL + "get pods -n calico-system -o wide").stdout
    # Tokens: deleting this run's token makes it unusable.
    tid = secrets.token.reveal().split(".")[0]
    assert f'bootstrap token "{tid}" deleted' in sh(lab, "cp-1", f"kubeadm token delete {tid}").stdout
    sh(lab, "w-1", "kubeadm reset -f")
    r = sh(lab, "w-1", f"kubeadm join --config {join.path}", ok=False)
    assert f'could not find a JWS signature in the cluster-info ConfigMap for token ID "{tid}"' in r.stderr
    assert secrets.token.reveal() not in lab.read_file("w-1", "/etc/gpuk8s-lab/invocations.log")
