"""The lab's simulators of what `gpuk8s up` drives, exercised directly (not through gpuk8s).

One lab of two bare hosts: packages, kernel settings, containerd, kubeadm init/join against the
shared simulated cluster, kubectl and Calico.
"""

from __future__ import annotations

import json
import os
import re
import time
import tomllib

import pytest

from gpuk8s.inventory import load_inventory
from gpuk8s.pki import ca_cert_hash
from gpuk8s.render import (ClusterSecrets, calico_installation, calico_manifest_urls, kubeadm_init_config,
                           kubeadm_join_config)
from tests.lab.fixture import GPU, HostFixture, containerd_config

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
    return inv, inv.release, ClusterSecrets.generate()


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
    sh(lab, "cp-1", KUBECTL + "wait --for=condition=Established --timeout=60s crd --all")
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


# --------------------------------------------------------------------------- fidelity (issue 11)
# Each test below pins one behaviour of a real tool that a kinder simulator once hid. The source of
# each behaviour is cited next to its simulation (tests/lab/sim, tests/lab/FIDELITY.md).


@pytest.fixture(scope="module")
def fid(lab_factory):
    lab = lab_factory([
        HostFixture.bare("f-bare"),
        HostFixture("f-nv", modules=("overlay",), nouveau=True, gpus=[GPU("L4")]),
        HostFixture("f-c17", containerd="1.7.27", kube="1.35.6"),
        HostFixture("f-c2", containerd="2.1.4", kube="1.36.2"),
        HostFixture("f-cd", containerd="1.7.28-0ubuntu1~24.04.1", containerd_build="distro"),
        HostFixture("f-cp", roles=("control-plane",), containerd="2.1.4", kube="1.36.2"),
        HostFixture("f-w17", containerd="1.7.27", kube="1.33.12",
                    containerd_config=containerd_config("1.7.27", systemd_cgroup=False)),
        HostFixture("f-cg1", cgroup=1, containerd="2.1.4", kube="1.35.6"),
    ])
    yield lab
    lab.close()


def _module_names(text: str) -> list[str]:
    return sorted(line.split()[0] for line in text.splitlines() if line.strip())


def test_proc_modules_is_the_hosts_own(fid):
    """/proc/modules comes from the fixture: never this machine's list (br_netfilter or nouveau loaded
    on a CI runner would otherwise show on every host)."""
    want = {"f-bare": [], "f-nv": ["nouveau", "overlay"]}
    for name, mods in want.items():
        rendered = (fid.host(name).dir / "proc" / "modules").read_text()
        assert _module_names(rendered) == mods
        assert all(re.fullmatch(r"\S+ \d+ \d+ \S+ Live 0x0{16}( \(\w+\))?", ln) for ln in rendered.splitlines())
        r = sh(fid, name, "ls /sys/module")
        assert sorted(r.stdout.split()) == mods
        if os.path.exists("/proc/modules"):
            assert _module_names(fid.read_file(name, "/proc/modules")) == mods
        else:   # a kernel without module support has no /proc/modules: neither do the hosts
            assert fid.exec(name, "test -e /proc/modules").returncode != 0
    sh(fid, "f-bare", "modprobe br_netfilter")
    assert fid.exec("f-bare", "test -d /sys/module/br_netfilter").returncode == 0
    if os.path.exists("/proc/modules"):
        assert _module_names(fid.read_file("f-bare", "/proc/modules")) == ["br_netfilter"]
    assert _module_names(fid.read_file("f-nv", "/proc/modules") if os.path.exists("/proc/modules")
                         else (fid.host("f-nv").dir / "proc" / "modules").read_text()) == ["nouveau", "overlay"]


def test_sysctl_system_reads_a_stock_servers_files_and_fails_like_procps(fid):
    h = "f-nv"    # br_netfilter not loaded: no /proc/sys/net/bridge
    r = sh(fid, h, "sysctl --system")
    applying = [ln for ln in r.stdout.splitlines() if ln.startswith("* Applying")]
    assert applying == ["* Applying /usr/lib/sysctl.d/50-pid-max.conf ...",       # sorted by file name
                        "* Applying /usr/lib/sysctl.d/99-protect-links.conf ...",
                        "* Applying /etc/sysctl.d/99-sysctl.conf ...",
                        "* Applying /etc/sysctl.conf ..."]
    # --system ignores keys the kernel lacks (procps-ng IgnoreError), and a line without '=' is a warning
    fid.write_file(h, "/etc/sysctl.d/99-kubernetes.conf",
                   "net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\nnot a setting\n")
    r = sh(fid, h, "sysctl --system")
    assert "net.ipv4.ip_forward = 1" in r.stdout and "bridge-nf-call" not in r.stdout + r.stderr
    assert "sysctl: /etc/sysctl.d/99-kubernetes.conf(3): invalid syntax, continuing..." in r.stderr
    out = r.stdout.splitlines()
    assert max(i for i, ln in enumerate(out) if ln.startswith("* Applying")) < out.index("net.ipv4.ip_forward = 1")
    # a value the kernel refuses fails the whole call, "-" prefix or not
    for line in ("net.ipv4.ip_forward = yes", "-net.ipv4.ip_forward = yes"):
        fid.write_file(h, "/etc/sysctl.d/99-kubernetes.conf", line + "\n")
        r = sh(fid, h, "sysctl --system", ok=False)
        assert r.returncode == 1, (line, r.stdout, r.stderr)
        assert 'sysctl: setting key "net.ipv4.ip_forward": Invalid argument' in r.stderr
    # a file that cannot be opened (here a dangling symlink) fails it too
    fid.write_file(h, "/etc/sysctl.d/99-kubernetes.conf", "net.ipv4.ip_forward = 1\n")
    sh(fid, h, "ln -s /nonexistent /etc/sysctl.d/10-gone.conf")
    r = sh(fid, h, "sysctl --system", ok=False)
    assert r.returncode == 1
    assert 'sysctl: cannot open "/etc/sysctl.d/10-gone.conf": No such file or directory' in r.stderr
    assert "net.ipv4.ip_forward = 1" in r.stdout
    sh(fid, h, "rm /etc/sysctl.d/10-gone.conf")
    assert sh(fid, h, "sysctl --system").returncode == 0


JOIN_NO_CLUSTER = """apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: k8s-api.lab:6443
    token: abcdef.0123456789abcdef
    unsafeSkipCAVerification: true
"""


def _join_preflight(lab, host: str) -> str:
    """kubeadm join's preflight output (the fid lab has no cluster: discovery then fails, nothing changes)."""
    lab.write_file(host, "/root/join.yaml", JOIN_NO_CLUSTER, 0o600)
    r = sh(lab, host, "kubeadm join --config /root/join.yaml", ok=False)
    assert r.returncode == 1
    return r.stderr


def _restart_with(lab, host: str, config: str):
    lab.write_file(host, "/etc/containerd/config.toml", config)
    return sh(lab, host, "systemctl restart containerd", ok=False)


def test_containerd_2_migrates_old_files_and_refuses_short_names(fid):
    from tests.lab.fixture import DOCKER_CONTAINERD_CONFIG
    h = "f-c2"
    good = containerd_config("2.1.4", sandbox_image="registry.k8s.io/pause:3.10.1")
    try:
        # The containerd.io package's own file has no `version`: 2.x migrates it (version 0 = 1), and
        # its short "cri" becomes io.containerd.grpc.v1.cri: containerd runs, CRI does not.
        assert _restart_with(fid, h, DOCKER_CONTAINERD_CONFIG).returncode == 0
        assert sh(fid, h, "systemctl is-active containerd").stdout.strip() == "active"
        dump = tomllib.loads(sh(fid, h, "containerd config dump").stdout)
        assert dump["version"] == 3 and dump["disabled_plugins"] == ["io.containerd.grpc.v1.cri"]
        assert "[ERROR CRI]: container runtime is not running" in _join_preflight(fid, h)
        # A version 3 file keeps its names as written: a short disabled plugin stops containerd.
        r = _restart_with(fid, h, 'version = 3\ndisabled_plugins = ["cri"]\n')
        assert r.returncode == 1 and "containerd.service failed" in r.stderr
        assert ('invalid disabled plugin URI "cri" expect io.containerd.x.vx'
                in fid.read_file(h, "/etc/gpuk8s-lab/journal/containerd"))
        # v2 -> v3: sandbox_image and registry move to the images plugin without a containerd section
        fid.write_file(h, "/etc/containerd/config.toml",
                       'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "example.com/pause:9"\n'
                       '[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n')
        images = tomllib.loads(sh(fid, h, "containerd config dump").stdout)["plugins"]["io.containerd.cri.v1.images"]
        assert images["pinned_images"]["sandbox"] == "example.com/pause:9"
        assert images["registry"]["config_path"] == "/etc/containerd/certs.d"
        # A value of the wrong type: containerd runs, its CRI plugin does not load, kubeadm's CRI check fails.
        assert _restart_with(fid, h, good.replace("SystemdCgroup = true", "SystemdCgroup = 'true'")).returncode == 0
        assert sh(fid, h, "systemctl is-active containerd").stdout.strip() == "active"
        assert "[ERROR CRI]: container runtime is not running" in _join_preflight(fid, h)
        assert "failed to load plugin" in fid.read_file(h, "/etc/gpuk8s-lab/journal/containerd")
        assert _restart_with(fid, h, good).returncode == 0
        assert "[ERROR CRI]" not in _join_preflight(fid, h)
    finally:
        _restart_with(fid, h, good)


def test_containerd_17_refuses_short_plugin_names(fid):
    h = "f-c17"
    good = containerd_config("1.7.27", sandbox_image="registry.k8s.io/pause:3.10.1")
    try:
        for cfg, msg in (('version = 2\n[plugins.cri]\n  sandbox_image = "registry.k8s.io/pause:3.8"\n',
                          'invalid plugin key URI "cri" expect io.containerd.x.vx'),
                         ('version = 2\ndisabled_plugins = ["cri"]\n',
                          'invalid disabled plugin URI "cri" expect io.containerd.x.vx'),
                         ("version = 3\n", "containerd config version `3` is not supported, the max version is `2`")):
            r = _restart_with(fid, h, cfg)
            assert r.returncode == 1, cfg
            assert sh(fid, h, "systemctl is-active containerd", ok=False).stdout.strip() == "failed"
            assert msg in fid.read_file(h, "/etc/gpuk8s-lab/journal/containerd"), cfg
        # version 1 (no `version`): 1.7 still reads short names
        assert _restart_with(fid, h, '[plugins.cri]\n  sandbox_image = "registry.k8s.io/pause:3.8"\n').returncode == 0
        assert _restart_with(fid, h, good).returncode == 0
        assert "[ERROR CRI]" not in _join_preflight(fid, h)
    finally:
        _restart_with(fid, h, good)


def test_containerd_version_lines_of_each_build(fid):
    from gpuk8s.facts import parse_containerd_version
    lines = {h: sh(fid, h, "containerd --version").stdout.strip() for h in ("f-c17", "f-c2", "f-cd")}
    assert lines["f-c17"] == "containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da"
    assert lines["f-c2"] == "containerd containerd.io v2.1.4 75cb2b7193e4e490e9fbdc236c0e811ccaba3376"
    assert lines["f-cd"] == "containerd github.com/containerd/containerd 1.7.28-0ubuntu1~24.04.1"
    assert parse_containerd_version(lines["f-c2"]) == "2.1.4"
    assert (parse_containerd_version(lines["f-cd"]) or "").startswith("1.7.28")


# containerd release on a lab host -> the release whose real `containerd config default` output
# (tests/unit/data/containerd-default-<release>.toml, built from that tag) it must print.
CTRD_RELEASES = {"1.7.27": "1.7.34", "2.0.5": "2.0.6", "2.1.4": "2.1.4", "2.1.6": "2.1.9",
                 "2.2.7": "2.2.7", "2.3.4": "2.3.4"}


@pytest.fixture(scope="module")
def ctrd(lab_factory):
    lab = lab_factory([HostFixture(f"c-{v.replace('.', '')}", containerd=v) for v in CTRD_RELEASES])
    yield lab
    lab.close()


def _real_default(release: str) -> str:
    from pathlib import Path
    text = (Path(__file__).parents[1] / "unit" / "data" / f"containerd-default-{release}.toml").read_text()
    return "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith("#")).lstrip("\n")


def test_containerd_config_default_is_the_real_output_of_each_release(ctrd):
    """Per release, what gpuk8s reads or rewrites: version, CRI tables, runc's SystemdCgroup
    (absent in 2.0.0-2.0.6 and 2.1.0-2.1.4), the sandbox image, cni bin_dir(s), imports."""
    from gpuk8s.facts import parse_containerd_config
    seen = {}
    for version, release in CTRD_RELEASES.items():
        text = sh(ctrd, f"c-{version.replace('.', '')}", "containerd config default").stdout
        assert text == _real_default(release), version
        cfg = parse_containerd_config(text)
        data = tomllib.loads(text)
        runtime = data["plugins"]["io.containerd.grpc.v1.cri" if cfg.version == 2 else "io.containerd.cri.v1.runtime"]
        seen[version] = (cfg.version, cfg.systemd_cgroup, cfg.sandbox_image, list(cfg.imports),
                         sorted(k for k in runtime["cni"] if k.startswith("bin_dir")))
    conf_d = ["/etc/containerd/conf.d/*.toml"]
    assert seen == {
        "1.7.27": (2, False, "registry.k8s.io/pause:3.8", [], ["bin_dir"]),
        "2.0.5": (3, None, "registry.k8s.io/pause:3.10", [], ["bin_dir"]),
        "2.1.4": (3, None, "registry.k8s.io/pause:3.10", [], ["bin_dir", "bin_dirs"]),
        "2.1.6": (3, False, "registry.k8s.io/pause:3.10", [], ["bin_dir", "bin_dirs"]),
        "2.2.7": (3, False, "registry.k8s.io/pause:3.10.1", conf_d, ["bin_dir", "bin_dirs"]),
        "2.3.4": (4, False, "registry.k8s.io/pause:3.10.2", conf_d, ["bin_dir", "bin_dirs"]),
    }


def test_containerd_config_versions_accepted_per_release(ctrd):
    """ValidateVersion (cmd/containerd/server/config/config.go): 2.2 refuses version 4, 2.3
    reads it and migrates a version 3 file's [grpc]/[ttrpc] into its server plugins."""
    v3 = containerd_config("2.2.7", sandbox_image="registry.k8s.io/pause:3.10.1")
    try:
        r = _restart_with(ctrd, "c-227", "version = 4\n")
        assert r.returncode == 1
        assert ("expected containerd config version equal to or less than `3`, got `4`"
                in ctrd.read_file("c-227", "/etc/gpuk8s-lab/journal/containerd"))
        assert _restart_with(ctrd, "c-227", v3).returncode == 0
        r = _restart_with(ctrd, "c-234", "version = 5\n")
        assert r.returncode == 1
        assert ("expected containerd config version equal to or less than `4`, got `5`"
                in ctrd.read_file("c-234", "/etc/gpuk8s-lab/journal/containerd"))
        assert _restart_with(ctrd, "c-234", v3).returncode == 0
        dump = tomllib.loads(sh(ctrd, "c-234", "containerd config dump").stdout)
        assert dump["version"] == 4 and "grpc" not in dump and "ttrpc" not in dump
        assert dump["plugins"]["io.containerd.server.v1.grpc"]["address"] == "/run/containerd/containerd.sock"
        assert dump["plugins"]["io.containerd.server.v1.ttrpc"]["address"] == "/run/containerd/containerd.sock.ttrpc"
        runc = dump["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]
        assert runc["options"]["SystemdCgroup"] is True
        v4 = _real_default("2.3.4")
        assert _restart_with(ctrd, "c-234", v4).returncode == 0
        assert tomllib.loads(sh(ctrd, "c-234", "containerd config dump").stdout)["version"] == 4
    finally:
        _restart_with(ctrd, "c-227", v3)
        _restart_with(ctrd, "c-234", v3)


def test_containerd_dump_memo_never_outlives_a_change_of_its_inputs(ctrd):
    """sim/containerd answers a repeated `config dump` from labsim's memo only while the version,
    the defaults, config.toml and every file its imports' globs match are unchanged: an edited,
    added or removed drop-in is seen at once (the memo only saves the simulator's start-up)."""
    h = "c-227"
    base = containerd_config("2.2.7", sandbox_image="registry.k8s.io/pause:3.10.1")
    root = base.replace("imports = []", "imports = ['/etc/containerd/conf.d/*.toml']")
    assert "conf.d" in root
    toolkit = ("version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.nvidia]\n"
               "  runtime_type = 'io.containerd.runc.v2'\n")
    site = "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.site]\n" \
           "  runtime_type = 'io.containerd.runc.v2'\n"

    def runtimes() -> set[str]:
        dump = tomllib.loads(sh(ctrd, h, "containerd config dump").stdout)
        return set(dump["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"])

    try:
        assert _restart_with(ctrd, h, root).returncode == 0
        ctrd.write_file(h, "/etc/containerd/conf.d/99-nvidia.toml", toolkit)
        assert "nvidia" in runtimes() and "nvidia" in runtimes()   # computed, then from the memo
        assert ctrd.exec(h, "test -s /etc/gpuk8s-lab/containerd/dump-memo/key").returncode == 0
        ctrd.write_file(h, "/etc/containerd/conf.d/50-site.toml", site)          # a file added
        assert {"nvidia", "site"} <= runtimes()
        ctrd.write_file(h, "/etc/containerd/conf.d/50-site.toml", site.replace("site]", "other]"))
        got = runtimes()                                                          # a file edited
        assert "other" in got and "site" not in got
        sh(ctrd, h, "rm -f /etc/containerd/conf.d/50-site.toml /etc/containerd/conf.d/99-nvidia.toml")
        assert not {"nvidia", "other"} & runtimes()                              # files removed
        assert _restart_with(ctrd, h, root.replace("pause:3.10.1", "pause:3.9")).returncode == 0
        dump = tomllib.loads(sh(ctrd, h, "containerd config dump").stdout)        # config.toml edited
        assert dump["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"].endswith("pause:3.9")
    finally:
        sh(ctrd, h, "rm -f /etc/containerd/conf.d/50-site.toml /etc/containerd/conf.d/99-nvidia.toml")
        _restart_with(ctrd, h, base)


def test_containerd_systemd_cgroup_of_the_wrong_type_where_the_default_omits_it(ctrd):
    """runc's SystemdCgroup is a bool (api/types/runc/options/oci.proto) also in a release whose
    default does not print it: a string there still leaves CRI unloaded."""
    h = "c-205"
    good = containerd_config("2.0.5", sandbox_image="registry.k8s.io/pause:3.10")
    try:
        assert _restart_with(ctrd, h, good.replace("SystemdCgroup = true", "SystemdCgroup = 'true'")).returncode == 0
        assert "failed to load plugin" in ctrd.read_file(h, "/etc/gpuk8s-lab/journal/containerd")
    finally:
        _restart_with(ctrd, h, good)


KEY = "0123456789abcdef" * 4


def _init_config(name: str, *, version: str = "v1.36.2", key: str = KEY, extra_cluster: str = "",
                 kubelet: str = "cgroupDriver: systemd\n", first: str = "") -> str:
    return (first + f"""apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
  - token: abcdef.0123456789abcdef
certificateKey: "{key}"
nodeRegistration:
  name: {name}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {version}
controlPlaneEndpoint: k8s-api.lab:6443
networking:
  podSubnet: 10.244.0.0/16
{extra_cluster}---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
""" + kubelet)


def _kubeadm(lab, host: str, verb: str, config: str, env: str = ""):
    lab.write_file(host, f"/root/{verb}.yaml", config, 0o600)
    return sh(lab, host, f"{env}kubeadm {verb} --config /root/{verb}.yaml", ok=False)


def test_kubeadm_v1beta4_fields_certificate_key_and_kubelet_configuration(fid):
    h = "f-cp"
    cases = [
        (_init_config(h, extra_cluster="upgrade:\n  apply:\n    forceUpgrade: true\n"), 'unknown field "upgrade"'),
        (_init_config(h, key="abc"), 'certificateKey: Invalid value: "abc": certificate key decoding error: '
                                     "encoding/hex: odd length hex string"),
        (_init_config(h, key="ab" * 16), "invalid certificate key size 16, the key must be an AES key of size 32"),
        (_init_config(h, kubelet="cgroupDriver: 5\n"),
         "json: cannot unmarshal number into Go struct field KubeletConfiguration.cgroupDriver of type string"),
    ]
    for cfg, msg in cases:
        r = _kubeadm(fid, h, "init", cfg)
        assert r.returncode == 1 and msg in r.stderr, (msg, r.stderr)
    # an unknown KubeletConfiguration field is a warning (here the bad key after it stops init)
    r = _kubeadm(fid, h, "init", _init_config(h, key="abc", kubelet="cgroupDrivr: systemd\n"))
    assert 'strict decoding error: unknown field "cgroupDrivr"' in r.stderr
    join = JOIN_NO_CLUSTER.replace("    unsafeSkipCAVerification: true\n",
                                   "    unsafeSkipCAVerification: true\n  timeout: 5m0s\n")
    r = _kubeadm(fid, "f-c2", "join", join)
    assert r.returncode == 1 and 'unknown field "discovery.timeout"' in r.stderr
    # the pause image of each kubeadm minor
    assert "registry.k8s.io/pause:3.10\n" in sh(fid, "f-w17", "kubeadm config images list").stdout
    assert "registry.k8s.io/pause:3.10.1\n" in sh(fid, "f-c2", "kubeadm config images list").stdout


def test_kubeadm_preflight_system_verification_hostname_kubelet_version_and_proxy(fid):
    # cgroup v1: an error for a 1.35 kubelet, a warning before
    r = _kubeadm(fid, "f-cg1", "join", JOIN_NO_CLUSTER)
    assert "[ERROR SystemVerification]: cgroups v1 support is deprecated" in r.stderr
    assert "The system verification failed" in r.stdout
    sh(fid, "f-cg1", "echo 1.34.9 > /etc/gpuk8s-lab/versions/kubelet")
    r = _kubeadm(fid, "f-cg1", "join", JOIN_NO_CLUSTER)
    assert "[WARNING SystemVerification]: cgroups v1 support is in maintenance mode" in r.stderr
    assert "[ERROR SystemVerification]" not in r.stderr
    sh(fid, "f-cg1", "echo 1.35.6 > /etc/gpuk8s-lab/versions/kubelet")
    # Hostname: a node name that is not a qualified name and does not resolve: warnings only
    r = _kubeadm(fid, "f-c2", "join", JOIN_NO_CLUSTER + "nodeRegistration:\n  name: -bad-\n")
    assert '[WARNING Hostname]: invalid node name format "-bad-"' in r.stderr
    assert '[WARNING Hostname]: hostname "-bad-" could not be reached' in r.stderr
    assert "[ERROR Hostname]" not in r.stderr
    # KubeletVersion: older than kubeadm's minor - 3; newer than the control plane on init
    sh(fid, "f-c2", "echo 1.32.4 > /etc/gpuk8s-lab/versions/kubelet")
    r = _kubeadm(fid, "f-c2", "join", JOIN_NO_CLUSTER)
    assert '[ERROR KubeletVersion]: Kubelet version "1.32.4" is lower than kubeadm can support' in r.stderr
    sh(fid, "f-c2", "echo 1.36.2 > /etc/gpuk8s-lab/versions/kubelet")
    r = _kubeadm(fid, "f-cp", "init", _init_config("f-cp", version="v1.35.0"))
    assert r.returncode == 1
    assert ("[ERROR KubeletVersion]: the kubelet version is higher than the control plane version" in r.stderr)
    # HTTPProxy / HTTPProxyCIDR: warnings when the proxy would carry cluster traffic
    proxy = "HTTPS_PROXY=http://proxy.example:3128 "
    r = _kubeadm(fid, "f-c2", "join", JOIN_NO_CLUSTER, env=proxy)
    assert ('[WARNING HTTPProxy]: Connection to "https://k8s-api.lab" uses proxy "http://proxy.example:3128"'
            in r.stderr)
    r = _kubeadm(fid, "f-c2", "join", JOIN_NO_CLUSTER, env=proxy + "NO_PROXY=.lab,10.0.0.0/8 ")
    assert "HTTPProxy" not in r.stderr
    r = _kubeadm(fid, "f-cp", "init", _init_config("f-cp", version="v1.35.0"), env=proxy)
    assert '[WARNING HTTPProxyCIDR]: connection to "10.244.0.0/16" uses proxy' in r.stderr


def test_kubeadm_sandbox_image_warning_and_cgroup_driver_mismatch(fid):
    # kubeadm 1.33 + containerd 1.7 with SystemdCgroup = false, kubelet on systemd: the control
    # plane's static pods never start.
    r = _kubeadm(fid, "f-w17", "init", _init_config("f-w17", version="v1.33.12"))
    assert r.returncode == 1 and "error execution phase wait-control-plane" in r.stderr
    assert "cgroup driver mismatch" in sh(fid, "f-w17", "journalctl -u kubelet -n 20 --no-pager").stdout
    sh(fid, "f-w17", "kubeadm reset -f")
    # containerd 2.1's own default pins pause 3.10: kubeadm 1.36 warns (and carries on)
    r = _kubeadm(fid, "f-cp", "init", _init_config("f-cp"))
    assert r.returncode == 0, r.stderr
    assert ('detected that the sandbox image "registry.k8s.io/pause:3.10" of the container runtime is inconsistent '
            'with that used by kubeadm. It is recommended to use "registry.k8s.io/pause:3.10.1"') in r.stderr
    # the same mismatch on a joining worker: it joins, and stays NotReady
    r = _kubeadm(fid, "f-w17", "join", JOIN_NO_CLUSTER + "nodeRegistration:\n  name: f-w17\n")
    assert r.returncode == 0, r.stderr
    nodes = json.loads(sh(fid, "f-cp", KUBECTL + "get nodes -o json").stdout)["items"]
    w = next(n for n in nodes if n["metadata"]["name"] == "f-w17")
    cond = next(c for c in w["status"]["conditions"] if c["type"] == "Ready")
    assert cond["status"] == "False" and "cgroup driver mismatch" in cond["message"]


# --------------------------------------------------------------------------- kubectl (issue 11, item 5)

CALICO = "https://raw.githubusercontent.com/projectcalico/calico/v{}/manifests/{}"
INSTALLATION = """apiVersion: operator.tigera.io/v1
kind: Installation
metadata:
  name: default
spec:
  calicoNetwork:
    ipPools:
      - name: default-ipv4-ippool
        cidr: {cidr}
        encapsulation: {encap}
"""


@pytest.fixture(scope="module")
def kc(lab_factory):
    """One initialized control plane and a worker that joins it (kubectl against a fresh cluster)."""
    lab = lab_factory([HostFixture("k-cp", roles=("control-plane",), containerd="2.1.4", kube="1.36.2"),
                       HostFixture("k-w", containerd="2.1.4", kube="1.36.2")])
    r = _kubeadm(lab, "k-cp", "init", _init_config("k-cp"))
    assert r.returncode == 0, r.stderr
    yield lab
    lab.close()


def _kubectl(lab, args: str, *, input: str | None = None, env: str = ""):
    if input is not None:
        lab.write_file("k-cp", "/root/obj.yaml", input)
    return sh(lab, "k-cp", env + KUBECTL + args, ok=False)


def test_calico_manifest_urls_exist_only_in_the_releases_that_have_them(kc):
    # the product's URLs of every supported Kubernetes minor exist
    from gpuk8s.versions import MATRIX
    for release in MATRIX.values():
        for url in calico_manifest_urls(release):
            r = _kubectl(kc, f"apply --server-side -f {url}")
            assert r.returncode == 0, (url, r.stderr)
    missing = [("3.31.3", "v1_crd_projectcalico_org.yaml"), ("3.31.9", "operator-crds.yaml"),
               ("3.30.4", "crds-for-everyone.yaml"), ("3.25.0", "tigera-operator.yaml")]
    for version, name in missing:
        r = _kubectl(kc, f"apply --server-side -f {CALICO.format(version, name)}")
        assert r.returncode == 1 and "server reported 404 Not Found, status code=404" in r.stderr, (version, name)
    # up to 3.29 tigera-operator.yaml carries the CRDs (24 in 3.29); from 3.30 it has none
    r = _kubectl(kc, f"apply --server-side -f {CALICO.format('3.29.7', 'tigera-operator.yaml')}")
    crds = [ln for ln in r.stdout.splitlines() if ln.startswith("customresourcedefinition")]
    assert len(crds) == 24 and any("tiers.crd.projectcalico.org" in ln for ln in crds)
    r = _kubectl(kc, f"apply --server-side -f {CALICO.format('3.30.4', 'tigera-operator.yaml')}")
    assert r.returncode == 0 and "customresourcedefinition" not in r.stdout
    r = _kubectl(kc, f"apply --server-side -f {CALICO.format('3.30.4', 'operator-crds.yaml')}")
    assert len(r.stdout.splitlines()) == 32 and "goldmanes.operator.tigera.io" in r.stdout


def test_custom_resource_refused_until_its_crd_is_established(kc):
    inst = INSTALLATION.format(cidr="10.244.0.0/16", encap="VXLAN")
    kc.write_file("k-cp", "/root/inst.yaml", inst)
    # in the same call as its CRD: kubectl maps every object before it sends any
    kc.write_file("k-cp", "/root/crd.yaml", "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
                  "metadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n")
    r = _kubectl(kc, "apply --server-side -f /root/crd.yaml -f /root/obj.yaml",
                 input="apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n")
    assert r.returncode == 1
    assert "customresourcedefinition.apiextensions.k8s.io/widgets.example.com serverside-applied" in r.stdout
    assert ('resource mapping not found for name: "w" namespace: "" from "/root/obj.yaml": no matches for kind '
            '"Widget" in version "example.com/v1"\nensure CRDs are installed first') in r.stderr
    # created, not yet Established (a slow establishing controller): still refused; wait times out
    slow = "GPUK8S_LAB_CRD_DELAY=3600 "
    r = _kubectl(kc, "apply --server-side -f /root/inst.yaml", env=slow)
    assert r.returncode == 1 and 'no matches for kind "Installation" in version "operator.tigera.io/v1"' in r.stderr
    r = _kubectl(kc, "wait --for=condition=Established crd/installations.operator.tigera.io --timeout=1s", env=slow)
    assert r.returncode == 1 and "timed out waiting for the condition" in r.stderr
    r = _kubectl(kc, "get installations.operator.tigera.io default", env=slow)
    assert r.returncode == 1 and "doesn't have a resource type" in r.stderr
    r = _kubectl(kc, "wait --for=condition=Established crd/installations.operator.tigera.io --timeout=60s")
    assert "customresourcedefinition.apiextensions.k8s.io/installations.operator.tigera.io condition met" in r.stdout
    r = _kubectl(kc, "wait --for=condition=Established crd/nothings.example.com")
    assert r.returncode == 1 and '"nothings.example.com" not found' in r.stderr
    r = _kubectl(kc, "apply --server-side -f /root/inst.yaml")
    assert r.returncode == 0 and "installation.operator.tigera.io/default serverside-applied" in r.stdout


def test_applied_objects_are_validated_against_their_kinds_schema(kc):
    cases = [
        (INSTALLATION.format(cidr="10.244.0.0/16", encap="VXLAN").replace("        cidr: 10.244.0.0/16\n", ""),
         'The Installation "default" is invalid: spec.calicoNetwork.ipPools[0].cidr: Required value'),
        (INSTALLATION.format(cidr="10.244.0.0/16", encap="vxlan"),
         'spec.calicoNetwork.ipPools[0].encapsulation: Unsupported value: "vxlan": supported values: '
         '"IPIPCrossSubnet", "IPIP", "VXLAN", "VXLANCrossSubnet", "None"'),
        (INSTALLATION.format(cidr="10.244.0.0/16", encap="VXLAN").replace("ipPools:", "ipPool:"),
         'failed to create typed patch object (/default; operator.tigera.io/v1, Kind=Installation): '
         '.spec.calicoNetwork.ipPool: field not declared in schema'),
        ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: c\n",
         'The Pod "p" is invalid: spec.containers[0].image: Required value'),
        ("apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: nvidia\n",
         'The RuntimeClass "nvidia" is invalid: handler: Required value'),
        ("metadata:\n  name: x\n", "error validating data: [apiVersion not set, kind not set]"),
        ("apiVersion: example.com/v9\nkind: Gadget\nmetadata:\n  name: g\n", 'no matches for kind "Gadget"'),
    ]
    for doc, msg in cases:
        r = _kubectl(kc, "apply --server-side --force-conflicts -f /root/obj.yaml", input=doc)
        assert r.returncode == 1 and msg in r.stderr, (msg, r.stderr)
    r = _kubectl(kc, "create -f /root/obj.yaml", input=cases[2][0].replace("name: default", "name: other"))
    assert ('Installation in version "v1" cannot be handled as a Installation: strict decoding error: unknown field '
            '"spec.calicoNetwork.ipPool"') in r.stderr
    # what gpuk8s renders passes, for each Calico release it installs
    from gpuk8s.versions import MATRIX
    inv = load_inventory(kc.write_inventory(kc.host("k-cp").dir.parent / "inv-validate.yaml"))
    for release in MATRIX.values():
        r = _kubectl(kc, "apply --server-side --force-conflicts -f /root/obj.yaml",
                     input=calico_installation(inv, release).content)
        assert r.returncode == 0, (release.calico, r.stderr)


def test_server_side_apply_conflicts_with_another_field_manager(kc):
    inst = INSTALLATION.format(cidr="10.244.0.0/16", encap="VXLAN")
    moved = INSTALLATION.format(cidr="10.245.0.0/16", encap="VXLAN")
    # an object created by `kubectl create` (manager kubectl-create, an Update)
    r = _kubectl(kc, "create -f /root/obj.yaml", input=inst.replace("name: default", "name: created"))
    assert r.returncode == 0 and "installation.operator.tigera.io/created created" in r.stdout
    r = _kubectl(kc, "apply --server-side -f /root/obj.yaml", input=moved.replace("name: default", "name: created"))
    assert r.returncode == 1
    assert ('error: Apply failed with 1 conflict: conflict with "kubectl-create" using operator.tigera.io/v1: '
            '.spec.calicoNetwork.ipPools\nPlease review the fields above--they currently have other managers.'
            in r.stderr)
    # the same values: co-owned, no conflict; --force-conflicts takes the fields over
    r = _kubectl(kc, "apply --server-side -f /root/obj.yaml", input=inst.replace("name: default", "name: created"))
    assert r.returncode == 0, r.stderr
    r = _kubectl(kc, "apply --server-side --force-conflicts -f /root/obj.yaml",
                 input=moved.replace("name: default", "name: created"))
    assert r.returncode == 0, r.stderr
    # another applier (an Apply manager: no apiVersion in the message)
    r = _kubectl(kc, "apply --server-side --field-manager=ci -f /root/obj.yaml",
                 input=inst.replace("name: default", "name: created"))
    assert r.returncode == 1 and 'Apply failed with 1 conflict: conflict with "kubectl": .spec.calicoNetwork' in r.stderr
    r = _kubectl(kc, "apply --force-conflicts -f /root/obj.yaml", input=inst)
    assert r.returncode == 1 and "error: --force-conflicts only works with --server-side" in r.stderr
    # client-side apply (kubectl-client-side-apply) then server-side: a changed value conflicts; the same
    # value succeeds and kubectl migrates the client-side ownership to "kubectl" (migrateToSSAIfNecessary)
    csa = inst.replace("name: default", "name: csa")
    assert "installation.operator.tigera.io/csa created" in _kubectl(kc, "apply -f /root/obj.yaml", input=csa).stdout
    assert "unchanged" in _kubectl(kc, "apply -f /root/obj.yaml", input=csa).stdout
    r = _kubectl(kc, "apply --server-side -f /root/obj.yaml", input=moved.replace("name: default", "name: csa"))
    assert r.returncode == 1
    assert 'conflict with "kubectl-client-side-apply" using operator.tigera.io/v1: .spec.calicoNetwork.ipPools' in r.stderr
    assert _kubectl(kc, "apply --server-side -f /root/obj.yaml", input=csa).returncode == 0
    r = _kubectl(kc, "apply --server-side -f /root/obj.yaml", input=moved.replace("name: default", "name: csa"))
    assert r.returncode == 0, r.stderr
    # a Calico upgrade by another applier over what kubectl applied: the operator's image conflicts
    r = _kubectl(kc, f"apply --server-side --field-manager=ci -f {CALICO.format('3.31.3', 'tigera-operator.yaml')}")
    assert r.returncode == 1
    assert ('conflict with "kubectl": .spec.template.spec.containers[name="tigera-operator"].image' in r.stderr)
    assert "namespace/tigera-operator serverside-applied" in r.stdout      # unchanged objects: co-owned
    r = _kubectl(kc, f"apply --server-side --force-conflicts -f {CALICO.format('3.31.3', 'tigera-operator.yaml')}")
    assert r.returncode == 0, r.stderr


def test_kubelet_refuses_node_labels_it_may_not_set(kc):
    from gpuk8s.render import node_labels_for_kubelet
    join = JOIN_NO_CLUSTER + ("nodeRegistration:\n  name: k-w\n  kubeletExtraArgs:\n    - name: node-labels\n"
                              "      value: {}\n")
    r = _kubeadm(kc, "k-w", "join", join.format("node-role.kubernetes.io/worker=,gpu=true"))
    assert r.returncode == 1 and "error execution phase kubelet-start" in r.stderr
    journal = sh(kc, "k-w", "journalctl -u kubelet -n 5 --no-pager").stdout
    assert ("failed to validate kubelet flags: unknown 'kubernetes.io' or 'k8s.io' labels specified with "
            "--node-labels: [node-role.kubernetes.io/worker]") in journal
    assert "must begin with an allowed prefix (kubelet.kubernetes.io, node.kubernetes.io)" in journal
    sh(kc, "k-w", "kubeadm reset -f")
    # what gpuk8s passes to the kubelet is accepted (node-role.* is labelled with kubectl after the join)
    inv = load_inventory(kc.write_inventory(
        kc.host("k-cp").dir.parent / "inv-labels.yaml",
        host_overrides={"k-w": {"labels": {"node-role.kubernetes.io/worker": "", "nvidia.com/gpu.present": "true",
                                           "node.kubernetes.io/pool": "gpu", "topology.kubernetes.io/zone": "a",
                                           "k8s.io/team": "x"}}}))
    labels = node_labels_for_kubelet(inv.host("k-w"))
    assert "node-role.kubernetes.io/worker" not in labels and "k8s.io/team" not in labels
    value = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    r = _kubeadm(kc, "k-w", "join", join.format(value))
    assert r.returncode == 0, r.stderr
    node = json.loads(sh(kc, "k-cp", KUBECTL + "get nodes k-w -o json").stdout)
    assert node["metadata"]["labels"]["node.kubernetes.io/pool"] == "gpu"


# --------------------------------------------------------------------------- day-2: drain, PDBs, users (issue 10)

WEB = """apiVersion: v1
kind: Pod
metadata:
  name: web-5f6d-abcde
  labels: {app: web}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: web-5f6d, uid: 1a2b, controller: true}
spec:
  nodeName: k-w
  containers:
  - {name: web, image: nginx}
  volumes:
  - {name: scratch, emptyDir: {}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  {budget}
  selector: {matchLabels: {app: web}}
"""


NOW = "GPUK8S_LAB_CALICO_DELAY=0 "   # Calico Available at once


def test_drain_refuses_like_kubectl_and_honours_pod_disruption_budgets(kc):
    inv = load_inventory(kc.write_inventory(kc.host("k-cp").dir.parent / "inv-drain.yaml"))
    for url in calico_manifest_urls(inv.release):   # Calico, so that the nodes are Ready
        assert _kubectl(kc, f"apply --server-side --force-conflicts -f {url}").returncode == 0
    _kubectl(kc, "wait --for=condition=Established --timeout=60s crd --all")
    r = _kubectl(kc, "apply --server-side --force-conflicts -f /root/obj.yaml",
                 input=calico_installation(inv, inv.release).content)
    assert r.returncode == 0, r.stderr
    nodes = json.loads(_kubectl(kc, "get nodes -o json", env=NOW).stdout)["items"]
    assert {n["metadata"]["name"] for n in nodes} == {"k-cp", "k-w"}
    assert all(next(c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready") == "True"
               for n in nodes)
    r = _kubectl(kc, "apply --server-side -f /root/obj.yaml", env=NOW,
                 input=WEB.replace("{budget}", "minAvailable: 1"))
    assert r.returncode == 0, r.stderr
    # calico-node is a DaemonSet pod on every node; the web pod has an emptyDir
    r = _kubectl(kc, "drain k-w --timeout=2s", env=NOW)
    assert r.returncode == 1 and "node/k-w cordoned" in r.stdout
    assert "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): kube-system/kube-proxy-" \
        in r.stderr and ", calico-system/calico-node-" in r.stderr
    assert "There are pending nodes to be drained:\n k-w" in r.stderr
    r = _kubectl(kc, "drain k-w --ignore-daemonsets --timeout=2s", env=NOW)
    assert r.returncode == 1 and "node/k-w already cordoned" in r.stdout
    assert "cannot delete Pods with local storage (use --delete-emptydir-data to override): default/web-5f6d-abcde" \
        in r.stderr
    pdb = json.loads(_kubectl(kc, "get pdb -A -o json", env=NOW).stdout)["items"][0]
    assert pdb["status"]["disruptionsAllowed"] == 0 and pdb["status"]["currentHealthy"] == 1
    r = _kubectl(kc, "drain k-w --ignore-daemonsets --delete-emptydir-data --timeout=2s", env=NOW)
    assert r.returncode == 1
    assert ("error when evicting pods/\"web-5f6d-abcde\" -n \"default\" (will retry after 5s): Cannot evict pod "
            "as it would violate the pod's disruption budget.") in r.stderr
    assert "global timeout reached: 2s" in r.stderr and "Warning: ignoring DaemonSet-managed Pods" in r.stderr
    node = json.loads(_kubectl(kc, "get nodes k-w -o json", env=NOW).stdout)
    assert node["spec"]["unschedulable"] is True
    assert {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}.items() <= \
        next(t for t in node["spec"]["taints"] if t["key"] == "node.kubernetes.io/unschedulable").items()
    # a budget that allows one disruption: the pod is evicted; its ReplicaSet's replacement has nowhere to
    # go (k-cp is tainted, k-w cordoned) and stays Pending
    r = _kubectl(kc, "apply --server-side -f /root/obj.yaml", env=NOW,
                 input=WEB.replace("{budget}", "maxUnavailable: 1"))
    assert r.returncode == 0, r.stderr
    r = _kubectl(kc, "drain k-w --ignore-daemonsets --delete-emptydir-data --timeout=10s", env=NOW)
    assert r.returncode == 0, r.stderr
    assert "evicting pod default/web-5f6d-abcde" in r.stdout and "pod/web-5f6d-abcde evicted" in r.stdout
    assert r.stdout.rstrip().endswith("node/k-w drained")
    on = json.loads(_kubectl(kc, "get pods -A --field-selector spec.nodeName=k-w -o json",
                             env=NOW).stdout)["items"]
    assert [p["metadata"]["name"] for p in on if p["metadata"]["namespace"] == "default"] == []
    pods = json.loads(_kubectl(kc, "get pods -A -o json", env=NOW).stdout)["items"]
    web = [p for p in pods if p["metadata"]["name"].startswith("web-5f6d-")]
    assert len(web) == 1 and web[0]["status"]["phase"] == "Pending" and "nodeName" not in web[0]["spec"]
    assert "node/k-w uncordoned" in _kubectl(kc, "uncordon k-w", env=NOW).stdout
    assert _kubectl(kc, "delete pdb web", env=NOW).returncode == 0


def test_kubeadm_kubeconfig_user_signs_with_the_cluster_ca(kc):
    import base64

    import yaml
    from cryptography import x509

    cfg = ("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: lab\n"
           "controlPlaneEndpoint: k8s-api.lab:6443\nkubernetesVersion: v1.36.2\n")
    kc.write_file("k-cp", "/root/user.yaml", cfg, 0o600)
    r = sh(kc, "k-cp", "kubeadm kubeconfig user --config /root/user.yaml", ok=False)
    assert r.returncode == 1 and 'required flag(s) "client-name" not set' in r.stderr
    r = sh(kc, "k-cp", "kubeadm kubeconfig user --config /root/user.yaml --client-name bob --validity-period 30d",
           ok=False)
    assert 'invalid argument "30d" for "--validity-period" flag: time: unknown unit "d" in duration "30d"' in r.stderr
    r = sh(kc, "k-cp", "kubeadm kubeconfig user --config /root/user.yaml --client-name bob --validity-period 1h")
    doc = yaml.safe_load(r.stdout)
    assert doc["current-context"] == "bob@lab" and doc["clusters"][0]["cluster"]["server"] == "https://k8s-api.lab:6443"
    cert = x509.load_pem_x509_certificate(base64.b64decode(doc["users"][0]["user"]["client-certificate-data"]))
    ca = x509.load_pem_x509_certificate(kc.read_file("k-cp", "/etc/kubernetes/pki/ca.crt").encode())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == "CN=bob"
    # a worker has no CA key: kubeadm cannot sign there
    kc.write_file("k-w", "/root/user.yaml", cfg, 0o600)
    r = sh(kc, "k-w", "kubeadm kubeconfig user --config /root/user.yaml --client-name bob", ok=False)
    assert r.returncode == 1 and "the CA files couldn't be loaded" in r.stderr


def test_cluster_role_binding_role_ref_is_immutable_and_nodes_can_be_deleted(kc):
    crb = ("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: b}\n"
           "roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ROLE}\n"
           "subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}]\n")
    assert _kubectl(kc, "apply --server-side -f /root/obj.yaml", input=crb.replace("ROLE", "view")).returncode == 0
    r = _kubectl(kc, "apply --server-side -f /root/obj.yaml", input=crb.replace("ROLE", "edit"))
    assert r.returncode == 1 and "cannot change roleRef" in r.stderr
    assert json.loads(_kubectl(kc, "get clusterrolebinding/b -o json").stdout)["roleRef"]["name"] == "view"
    assert _kubectl(kc, "get clusterrole/view -o json").returncode == 0
    r = _kubectl(kc, "get clusterrole/nope -o json")
    assert r.returncode == 1 and 'clusterroles.rbac.authorization.k8s.io "nope" not found' in r.stderr
    assert 'node "k-w" deleted' in _kubectl(kc, "delete node k-w").stdout
    r = _kubectl(kc, "delete node k-w")
    assert r.returncode == 1 and 'nodes "k-w" not found' in r.stderr
    assert _kubectl(kc, "delete node k-w --ignore-not-found").returncode == 0


def test_iptables_save_and_restore_refuse_what_iptables_refuses(kc):
    assert sh(kc, "k-w", "iptables-save").stdout.splitlines()[1:3] == ["*filter", ":INPUT ACCEPT [0:0]"]
    r = sh(kc, "k-w", "iptables-restore", input="*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n", ok=False)
    assert r.returncode == 1 and "iptables-restore: COMMIT expected at line 4" in r.stderr
    r = sh(kc, "k-w", "iptables-restore", input="*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j KUBE-FW\nCOMMIT\n",
           ok=False)
    assert r.returncode == 1 and "Couldn't load target `KUBE-FW':No such file or directory" in r.stderr
    good = "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-FW - [0:0]\n-A INPUT -j KUBE-FW\nCOMMIT\n"
    sh(kc, "k-w", "iptables-restore", input=good)
    assert "-A INPUT -j KUBE-FW" in sh(kc, "k-w", "iptables-save").stdout
    assert sh(kc, "k-w", "ip6tables-save").stdout.count("KUBE-") == 0   # its own table set
    # nft and ipvsadm only where the fixture installs them
    assert sh(kc, "k-w", "command -v nft || command -v ipvsadm", ok=False).returncode != 0
    sh(kc, "k-w", "iptables-restore", input="*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")


# --------------------------------------------------------------------------- package repositories (issue 11, item 3)

@pytest.fixture(scope="module")
def repos(lab_factory):
    lab = lab_factory([HostFixture.bare("r-noble"), HostFixture.bare("r-jammy", os="ubuntu-22.04"),
                       HostFixture.bare("r-rocky", os="rocky-9")])
    for h in ("r-noble", "r-jammy"):
        sh(lab, h, "apt-get update -qq && apt-get install -y -qq curl gpg ca-certificates")
    yield lab
    lab.close()


def _docker_list(codename: str, keyring: str = "/etc/apt/keyrings/docker.asc", distro: str = "ubuntu") -> str:
    return f"deb [signed-by={keyring}] https://download.docker.com/linux/{distro} {codename} stable\n"


def test_curl_fail_on_a_missing_path_exits_22(repos):
    h = "r-noble"
    r = sh(repos, h, "curl -fsSL https://pkgs.k8s.io/core:/stable:/v1.36/deb/Release.key")
    assert "BEGIN PGP PUBLIC KEY BLOCK" in r.stdout
    for url in ("https://pkgs.k8s.io/core:/stable:/v1.36/rpm/Release.key",          # the deb key path under /rpm/
                "https://pkgs.k8s.io/core:/stable:/v1.99/deb/Release.key",          # a minor never published
                "https://download.docker.com/linux/ubuntu/gpg.asc"):
        r = sh(repos, h, f"curl -fsSL {url} -o /tmp/key", ok=False)
        assert r.returncode == 22 and r.stderr.strip() == "curl: (22) The requested URL returned error: 404", url
        assert repos.exec(h, "test -e /tmp/key").returncode != 0
    r = sh(repos, h, "curl -fs https://download.docker.com/linux/ubuntu/nope", ok=False)
    assert r.returncode == 22 and r.stderr == ""                                  # -s without -S: silent
    r = sh(repos, h, "curl -sL https://download.docker.com/linux/ubuntu/nope")    # no -f: the error page, exit 0
    assert r.stdout.strip() == "404 page not found"
    # in a pipe to gpg --dearmor, nothing valid reaches gpg
    r = sh(repos, h, "curl -fsSL https://pkgs.k8s.io/core:/stable:/v1.36/rpm/Release.key | "
                     "gpg --batch --yes --dearmor -o /tmp/k.gpg", ok=False)
    assert r.returncode != 0 and "curl: (22)" in r.stderr


def test_apt_keyring_format_must_match_its_name(repos):
    h = "r-noble"
    sh(repos, h, "install -m 0755 -d /etc/apt/keyrings && "
                 "curl -fsSL https://pkgs.k8s.io/core:/stable:/v1.36/deb/Release.key -o /etc/apt/keyrings/k8s.gpg")
    repos.write_file(h, "/etc/apt/sources.list.d/kubernetes.list",
                     "deb [signed-by=/etc/apt/keyrings/k8s.gpg] https://pkgs.k8s.io/core:/stable:/v1.36/deb/ /\n")
    try:
        r = sh(repos, h, "apt-get update -qq", ok=False)      # armoured key saved as .gpg: ignored
        assert r.returncode == 100
        assert ("W: https://pkgs.k8s.io/core:/stable:/v1.36/deb/InRelease: The key(s) in the keyring "
                "/etc/apt/keyrings/k8s.gpg are ignored as the file has an unsupported filetype.") in r.stderr
        assert "NO_PUBKEY 234654DA9A296436" in r.stderr
        assert "E: The repository 'https://pkgs.k8s.io/core:/stable:/v1.36/deb  InRelease' is not signed." in r.stderr
        r = sh(repos, h, "apt-get install -y -qq kubeadm=1.36.2-1.1", ok=False)
        assert r.returncode == 100 and "Unable to locate package kubeadm" in r.stderr
        sh(repos, h, "curl -fsSL https://pkgs.k8s.io/core:/stable:/v1.36/deb/Release.key | "
                     "gpg --batch --yes --dearmor -o /etc/apt/keyrings/k8s.gpg")
        sh(repos, h, "apt-get update -qq")                    # dearmoured: accepted
        # and a binary keyring saved as .asc is refused the same way
        sh(repos, h, "cp /etc/apt/keyrings/k8s.gpg /etc/apt/keyrings/k8s.asc")
        repos.write_file(h, "/etc/apt/sources.list.d/kubernetes.list",
                         "deb [signed-by=/etc/apt/keyrings/k8s.asc] https://pkgs.k8s.io/core:/stable:/v1.36/deb/ /\n")
        r = sh(repos, h, "apt-get update -qq", ok=False)
        assert r.returncode == 100 and "unsupported filetype" in r.stderr
    finally:
        sh(repos, h, "rm -f /etc/apt/sources.list.d/kubernetes.list && apt-get update -qq")


def test_apt_repository_paths_and_codenames(repos):
    h = "r-jammy"
    sh(repos, h, "install -m 0755 -d /etc/apt/keyrings && "
                 "curl -fsSL https://download.docker.com/linux/ubuntu/gpg -o /etc/apt/keyrings/docker.asc")
    try:
        # /rpm/ in an apt list: no Release file there
        repos.write_file(h, "/etc/apt/sources.list.d/kubernetes.list",
                         "deb [signed-by=/etc/apt/keyrings/docker.asc] https://pkgs.k8s.io/core:/stable:/v1.36/rpm/ /\n")
        r = sh(repos, h, "apt-get update -qq", ok=False)
        assert r.returncode == 100
        assert ("E: The repository 'https://pkgs.k8s.io/core:/stable:/v1.36/rpm  Release' does not have a Release "
                "file.") in r.stderr
        sh(repos, h, "rm /etc/apt/sources.list.d/kubernetes.list")
        # a Debian codename under linux/ubuntu does not exist
        repos.write_file(h, "/etc/apt/sources.list.d/docker.list", _docker_list("bookworm"))
        r = sh(repos, h, "apt-get update -qq", ok=False)
        assert r.returncode == 100
        assert ("E: The repository 'https://download.docker.com/linux/ubuntu bookworm Release' does not have a "
                "Release file.") in r.stderr
        # versions per codename: jammy's 2.1.4 build carries its distribution
        repos.write_file(h, "/etc/apt/sources.list.d/docker.list", _docker_list("jammy"))
        sh(repos, h, "apt-get update -qq")
        r = sh(repos, h, "apt-get install -y -qq 'containerd.io=2.1.4-1'", ok=False)
        assert r.returncode == 100 and "E: Version '2.1.4-1' for 'containerd.io' was not found" in r.stderr
        r = sh(repos, h, "apt-get install -y -qq 'containerd.io=2.1.*'")
        assert "Setting up containerd.io (2.1.4-1~ubuntu.22.04~jammy)" in r.stdout
        assert json.loads(repos.read_file(h, "/etc/gpuk8s-lab/packages.json"))["containerd.io"] == \
            "2.1.4-1~ubuntu.22.04~jammy"
        # focal has 1.7.27 (one build for every codename) and no 2.1.4
        repos.write_file(h, "/etc/apt/sources.list.d/docker.list", _docker_list("focal"))
        sh(repos, h, "apt-get update -qq")
        r = sh(repos, h, "apt-get install -y -qq --allow-downgrades 'containerd.io=2.1.*'", ok=False)
        assert r.returncode == 100 and "E: Version '2.1.*' for 'containerd.io' was not found" in r.stderr
        r = sh(repos, h, "apt-get install -y -qq --allow-downgrades 'containerd.io=1.7.27-1'")
        assert "Unpacking containerd.io (1.7.27-1)" in r.stdout
    finally:
        sh(repos, h, "rm -f /etc/apt/sources.list.d/*.list")


def test_dnf_repository_paths(repos):
    from gpuk8s.render import docker_repo_file, package_repo_file
    from gpuk8s.versions import MATRIX
    h = "r-rocky"
    release = MATRIX["1.36"]
    good = package_repo_file(None, release, "rhel").content
    try:
        repos.write_file(h, "/etc/yum.repos.d/kubernetes.repo", good.replace("/rpm/", "/deb/"))
        r = sh(repos, h, "dnf install -y kubeadm-1.36.2 --disableexcludes=kubernetes", ok=False)
        assert r.returncode == 1
        assert ("Status code: 404 for https://pkgs.k8s.io/core:/stable:/v1.36/deb/repodata/repomd.xml" in r.stderr
                and "Error: Failed to download metadata for repo 'kubernetes'" in r.stderr)
        repos.write_file(h, "/etc/yum.repos.d/kubernetes.repo", good)
        repos.write_file(h, "/etc/yum.repos.d/docker-ce.repo",
                         docker_repo_file(release, "rhel").content.replace("/rhel/", "/ubuntu/"))
        r = sh(repos, h, "dnf makecache", ok=False)
        assert r.returncode == 1 and "repository 'docker-ce-stable'" in r.stderr
        repos.write_file(h, "/etc/yum.repos.d/docker-ce.repo", docker_repo_file(release, "rhel").content)
        r = sh(repos, h, "dnf install -y 'containerd.io-2.1.*' kubeadm-1.36.2 --disableexcludes=kubernetes")
        assert "containerd.io-2.1.4-1.el9" in r.stdout and "kubeadm-1.36.2-150500.1.1" in r.stdout
    finally:
        sh(repos, h, "rm -f /etc/yum.repos.d/kubernetes.repo /etc/yum.repos.d/docker-ce.repo")


# --------------------------------------------------------------------------- NVIDIA (issue 11 item 6)

@pytest.fixture(scope="module")
def nv(lab_factory):
    lab = lab_factory([
        HostFixture("n-mm", gpus=[GPU("H100")], nvidia_driver="580.95.05", nvml_mismatch="595.91.07",
                    nvidia_kernel_module="proprietary"),
        HostFixture("n-mig", gpus=[GPU("H100", mig="Enabled"), GPU("A100", mig="Disabled", mig_pending="Enabled"),
                                   GPU("L4")], nvidia_driver="595.91.07"),
    ])
    yield lab
    lab.close()


def test_nvidia_smi_nvml_mismatch_prints_the_real_lines_and_exits_18(nv):
    # anderskm/gputil#55, mozilla/translations#1167: two lines on stdout, exit 18, library major.minor
    for args in ("", "-L", "-q", "--query-gpu=index,name,mig.mode.current --format=csv,noheader"):
        r = sh(nv, "n-mm", f"nvidia-smi {args}", ok=False)
        assert r.returncode == 18, (args, r)
        assert r.stdout == ("Failed to initialize NVML: Driver/library version mismatch\n"
                            "NVML library version: 595.91\n"), (args, r.stdout)
    # the kernel module is still the old one, in the proprietary module's wording
    # (zzzhouuu/truenas-nvidia-drivers#19)
    text = sh(nv, "n-mm", "cat /proc/driver/nvidia/version").stdout
    assert text.startswith("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  "), text
    assert "Open Kernel Module" not in text and "\nGCC version:  gcc version" in text
    assert sh(nv, "n-mig", "cat /proc/driver/nvidia/version").stdout.startswith(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  595.91.07  Release Build  ")


def test_nvidia_smi_mig_modes_in_query_and_q(nv):
    out = sh(nv, "n-mig", "nvidia-smi --query-gpu=index,mig.mode.current,mig.mode.pending "
                          "--format=csv").stdout
    assert out == ("index, mig.mode.current, mig.mode.pending\n"
                   "0, Enabled, Enabled\n1, Disabled, Enabled\n2, [N/A], [N/A]\n"), out
    r = sh(nv, "n-mig", "nvidia-smi -q")
    assert r.stderr == "", r.stderr          # no stray shell errors where nothing is mismatched
    q = r.stdout
    blocks = re.findall(r"^    MIG Mode\n        Current +: (\S+)\n        Pending +: (\S+)$", q, re.M)
    assert blocks == [("Enabled", "Enabled"), ("Disabled", "Enabled"), ("N/A", "N/A")], q
    # 42-column keys, as the real -q lays them out (NVIDIA/DCGM#152)
    assert "        Pending                           : Enabled\n" in q
    assert re.search(r"^Attached GPUs {29}: 3$", q, re.M), q
    with pytest.raises(ValueError):
        GPU("L4", mig="Enabled")      # no MIG on an L4: the fixture refuses rather than invent it


# --------------------------------------------------------------------------- the API endpoint (issue 10)
# The simulated API server is a real TCP listener on its bindPort from init / control-plane join
# until reset; kubectl and kubeadm dial the endpoint as the host resolves it (labsim `api_dial`).

def _join_config(name: str, endpoint: str, *, token: str = "abcdef.0123456789abcdef",
                 ca_hash: str = "sha256:" + "1" * 64, control_plane: str = "") -> str:
    return f"""apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: {endpoint}
    token: {token}
    caCertHashes: ["{ca_hash}"]
nodeRegistration:
  name: {name}
{control_plane}"""


def _tcp(lab, host: str, target: str) -> int:
    h, port = target.rsplit(":", 1)
    return sh(lab, host, f"timeout 5 bash -c 'exec 3<>/dev/tcp/{h}/{port}'", ok=False).returncode


@pytest.fixture(scope="module")
def api(lab_factory):
    lab = lab_factory([HostFixture("a-cp", roles=("control-plane",), containerd="2.1.4", kube="1.36.2"),
                       HostFixture("a-cp2", roles=("control-plane",), containerd="2.1.4", kube="1.36.2"),
                       HostFixture("a-w", containerd="2.1.4", kube="1.36.2", ip_forward=False)])
    yield lab
    lab.close()


def test_flags_beside_config_are_refused_as_real_kubeadm_refuses_them(api):
    lab = api
    lab.write_file("a-w", "/root/join.yaml", _join_config("a-w", "k8s-api.lab:6443"), 0o600)
    for cmd, bad in (("kubeadm join --config /root/join.yaml --certificate-key " + KEY, "[certificate-key]"),
                     ("kubeadm join --config /root/join.yaml --token abcdef.0123456789abcdef "
                      "--discovery-token-ca-cert-hash sha256:00", "[discovery-token-ca-cert-hash token]"),
                     ("kubeadm join --config /root/join.yaml --control-plane", "[control-plane]")):
        r = sh(lab, "a-w", cmd, ok=False)
        assert r.returncode == 1 and f"can not mix '--config' with arguments {bad}" in r.stderr, (cmd, r.stderr)
    lab.write_file("a-cp", "/root/init.yaml", _init_config("a-cp"), 0o600)
    for cmd in ("kubeadm init phase upload-certs --upload-certs --config /root/init.yaml --certificate-key " + KEY,
                "kubeadm token create --config /root/init.yaml --certificate-key " + KEY):
        r = sh(lab, "a-cp", cmd, ok=False)
        assert "can not mix '--config' with arguments [certificate-key]" in r.stderr, (cmd, r.stderr)
    r = sh(lab, "a-cp", "kubeadm token create --config /root/init.yaml --ttl 1h --description x", ok=False)
    assert "can not mix '--config' with arguments [description ttl]" in r.stderr
    # the allowed ones pass the check (and fail later for their own reasons, if at all)
    r = sh(lab, "a-w", "kubeadm join --config /root/join.yaml --ignore-preflight-errors=all --v=5 "
                       "--skip-phases=addon/kube-proxy", ok=False)
    assert "can not mix" not in r.stderr


def test_join_checks_ip_forward_when_discovery_names_an_ipv4_address(api):
    lab = api
    addr = lab.address("a-cp")
    r = _kubeadm(lab, "a-w", "join", _join_config("a-w", f"{addr}:6443"))
    assert r.returncode == 1
    assert ("[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward contents are "
            "not set to 1") in r.stderr
    # a DNS name adds no IPv4 check (JoinNodeChecks parses the host as an IP): discovery fails instead
    r = _kubeadm(lab, "a-w", "join", _join_config("a-w", "k8s-api.lab:6443"))
    assert r.returncode == 1 and "ip_forward" not in r.stderr and "cluster-info" in r.stderr


def test_the_endpoint_listens_only_while_the_api_server_runs(api):
    lab = api
    addr = lab.address("a-cp")
    assert _tcp(lab, "a-w", "k8s-api.lab:6443") != 0          # nothing listens before init
    r = _kubeadm(lab, "a-cp", "init", _init_config("a-cp"))
    assert r.returncode == 0, r.stderr
    assert _tcp(lab, "a-w", "k8s-api.lab:6443") == 0          # from another host, by name and by address
    assert _tcp(lab, "a-w", f"{addr}:6443") == 0
    assert _tcp(lab, "a-w", "k8s-api.lab:7443") != 0          # another port: refused
    tcp6 = lab.read_file("a-cp", "/proc/net/tcp6")
    assert any(ln.split()[1].endswith(":192B") and ln.split()[3] == "0A" for ln in tcp6.splitlines()[1:])
    sh(lab, "a-cp", KUBECTL + "get nodes")
    admin = lab.read_file("a-cp", "/etc/kubernetes/admin.conf")
    for server, want in (
            ("k8s-api.lab:7443", "The connection to the server k8s-api.lab:7443 was refused - did you specify "
                                 "the right host or port?"),
            (f"{lab.address('a-w')}:6443", f"The connection to the server {lab.address('a-w')}:6443 was refused"),
            (f"{addr}:22", "Unable to connect to the server: tls: first record does not look like a TLS handshake")):
        lab.write_file("a-cp", "/root/kc", admin.replace("https://k8s-api.lab:6443", f"https://{server}"))
        r = sh(lab, "a-cp", "kubectl --kubeconfig /root/kc get nodes", ok=False)
        assert r.returncode == 1 and want in r.stderr, (server, r.stderr)
    # kubeadm join's discovery dials the endpoint it is given
    ca = ca_cert_hash(lab.read_file("a-cp", "/etc/kubernetes/pki/ca.crt"))
    sh(lab, "a-w", "sysctl -w net.ipv4.ip_forward=1")
    r = _kubeadm(lab, "a-w", "join", _join_config("a-w", "k8s-api.lab:7443", ca_hash=ca))
    assert r.returncode == 1
    assert ("failed to request the cluster-info ConfigMap" in r.stderr
            and f"dial tcp {addr}:7443: connect: connection refused" in r.stderr), r.stderr


def test_tokens_and_uploaded_certificates_expire_on_the_lab_clock(api):
    lab = api
    ca = ca_cert_hash(lab.read_file("a-cp", "/etc/kubernetes/pki/ca.crt"))
    lab.write_file("a-cp", "/root/token.yaml", "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n"
                   "bootstrapTokens:\n  - token: zyxwvu.0123456789zyxwvu\n    ttl: 15m0s\n"
                   "    description: gpuk8s join test\n", 0o600)
    sh(lab, "a-cp", "kubeadm token create --config /root/token.yaml")
    listed = sh(lab, "a-cp", "kubeadm token list").stdout
    assert "zyxwvu." in listed and "gpuk8s join test" in listed
    sh(lab, "a-cp", "kubeadm init phase upload-certs --upload-certs --config /root/init.yaml")
    lab.advance_clock(3 * 3600)                                 # three hours later
    assert "zyxwvu." not in sh(lab, "a-cp", "kubeadm token list").stdout
    r = _kubeadm(lab, "a-w", "join", _join_config("a-w", "k8s-api.lab:6443", token="zyxwvu.0123456789zyxwvu",
                                                  ca_hash=ca))
    assert 'could not find a JWS signature in the cluster-info ConfigMap for token ID "zyxwvu"' in r.stderr
    # init's own token (24 h by default) still works; the certificates uploaded 3 h ago are gone
    cp = (f"controlPlane:\n  localAPIEndpoint:\n    advertiseAddress: {lab.address('a-cp2')}\n"
          f"    bindPort: 6443\n  certificateKey: \"{KEY}\"\n")
    r = _kubeadm(lab, "a-cp2", "join", _join_config("a-cp2", "k8s-api.lab:6443", ca_hash=ca, control_plane=cp))
    assert r.returncode == 1 and 'Secret "kubeadm-certs" was not found' in r.stderr, r.stderr
    sh(lab, "a-cp", "kubeadm init phase upload-certs --upload-certs --config /root/init.yaml")
    sh(lab, "a-cp2", "kubeadm reset -f")
    r = _kubeadm(lab, "a-cp2", "join", _join_config("a-cp2", "k8s-api.lab:6443", ca_hash=ca, control_plane=cp))
    assert r.returncode == 0, r.stderr
    assert _tcp(lab, "a-w", f"{lab.address('a-cp2')}:6443") == 0   # the new API server listens too


def test_reset_stops_the_api_server(api):
    lab = api
    sh(lab, "a-cp2", "kubeadm reset -f")
    assert _tcp(lab, "a-w", f"{lab.address('a-cp2')}:6443") != 0
    sh(lab, "a-cp", "kubeadm reset -f")                           # the last control plane: no cluster
    assert _tcp(lab, "a-w", "k8s-api.lab:6443") != 0
    kc = re.sub(r"server: https://\S+", "server: https://k8s-api.lab:6443", lab.read_file("a-cp", "/root/kc"))
    lab.write_file("a-cp", "/root/kc", kc)
    r = sh(lab, "a-cp", "kubectl --kubeconfig /root/kc get nodes", ok=False)
    assert r.returncode == 1 and ("The connection to the server k8s-api.lab:6443 was refused - did you "
                                  "specify the right host or port?") in r.stderr


# --------------------------------------------------------------------------- verify's host reads

@pytest.fixture(scope="module")
def pkgdb(lab_factory):
    """A Debian and a RHEL host with the Kubernetes tools installed; the Debian one has an Xid."""
    lab = lab_factory([HostFixture("deb-1", os="ubuntu-24.04", containerd="2.1.4", kube="1.36.2"),
                       HostFixture("rpm-1", os="rocky-9", containerd="2.1.4", kube="1.36.2")])
    yield lab
    lab.close()


def test_dpkg_query_show_formats_status_with_holds_and_refuses_unknown_names(pkgdb):
    fmt = "'${Package} ${Status} ${Version}\\n'"
    r = sh(pkgdb, "deb-1", f"dpkg-query -W -f {fmt} kubelet kubectl")
    assert r.stdout == "kubelet install ok installed 1.36.2-1.1\nkubectl install ok installed 1.36.2-1.1\n"
    sh(pkgdb, "deb-1", "apt-mark hold kubelet")
    r = sh(pkgdb, "deb-1", f"dpkg-query -W -f {fmt} kubelet nosuch kubeadm", ok=False)
    assert r.returncode == 1
    assert r.stdout == "kubelet hold ok installed 1.36.2-1.1\nkubeadm install ok installed 1.36.2-1.1\n"
    assert r.stderr == "dpkg-query: no packages found matching nosuch\n"
    r = sh(pkgdb, "deb-1", "dpkg-query -W kubeadm")   # default format: name TAB version
    assert r.stdout == "kubeadm\t1.36.2-1.1\n"
    assert sh(pkgdb, "deb-1", "command -v rpm", ok=False).returncode != 0


def test_rpm_query_format_and_not_installed_count(pkgdb):
    r = sh(pkgdb, "rpm-1", "rpm -q --queryformat '%{NAME} %{VERSION} %{RELEASE}\\n' kubelet nosuch kubectl other",
           ok=False)
    assert r.returncode == 2
    assert r.stdout == ("kubelet 1.36.2 150500.1.1\npackage nosuch is not installed\n"
                        "kubectl 1.36.2 150500.1.1\npackage other is not installed\n")
    assert sh(pkgdb, "rpm-1", "rpm -q --quiet kubelet").stdout == ""
    assert sh(pkgdb, "rpm-1", "command -v dpkg-query", ok=False).returncode != 0


def test_kernel_log_in_journalctl_and_dmesg_needs_root(pkgdb):
    assert sh(pkgdb, "deb-1", "journalctl -k -b --no-pager").stdout == "-- No entries --\n"
    assert sh(pkgdb, "deb-1", "journalctl -k -b -q --no-pager").stdout == ""
    msg = pkgdb.add_xid("deb-1", 79)   # a GPU-less host: PCI address 0000:00:00
    assert msg.startswith("NVRM: Xid (PCI:0000:00:00): 79, pid=")
    r = sh(pkgdb, "deb-1", "journalctl -k -b -q --no-pager")
    assert r.stdout.endswith(f" deb-1 kernel: {msg}\n")
    assert re.fullmatch(r"\[\s*\d+\.\d{6}\] " + re.escape(msg) + "\n", sh(pkgdb, "deb-1", "dmesg").stdout)
    as_ops = "su -s /bin/sh ops -c "
    r = sh(pkgdb, "deb-1", as_ops + "'journalctl -k -b -q --no-pager'")
    assert r.stdout == ""                                  # no adm group: nothing, exit 0
    r = sh(pkgdb, "deb-1", as_ops + "dmesg", ok=False)
    assert r.returncode == 1 and "Operation not permitted" in r.stderr
    assert sh(pkgdb, "deb-1", "journalctl -k --since today", ok=False).returncode == 1


def test_systemd_marker_and_systemctl_show(pkgdb):
    sh(pkgdb, "deb-1", "test -d /run/systemd/system/")
    r = sh(pkgdb, "deb-1", "systemctl show containerd")
    assert "ActiveState=active" in r.stdout and "UnitFileState=enabled" in r.stdout
    r = sh(pkgdb, "deb-1", "systemctl show nosuch")
    assert "LoadState=not-found" in r.stdout


def test_kubectl_label_takes_several_nodes_then_pairs(kc):
    """kubectl label: resources first, then KEY=VAL / KEY- (pkg/cmd/label/label.go
    GetResourcesAndPairs); a missing node is NotFound; a resource after a pair is refused."""
    r = _kubectl(kc, "label node k-cp k-nope gpuk8s.test/a=1 --overwrite")
    assert r.returncode == 1 and 'nodes "k-nope" not found' in r.stderr
    r = _kubectl(kc, "label node k-cp gpuk8s.test/a=1 k-cp")
    assert r.returncode == 1 and "all resources must be specified before label changes" in r.stderr
    r = _kubectl(kc, "label node k-cp gpuk8s.test/a=1 gpuk8s.test/b=2 --overwrite")
    assert r.returncode == 0 and r.stdout.strip() == "node/k-cp labeled", r
    labels = json.loads(_kubectl(kc, "get nodes k-cp -o json").stdout)["metadata"]["labels"]
    assert labels["gpuk8s.test/a"] == "1" and labels["gpuk8s.test/b"] == "2"
    assert _kubectl(kc, "label node k-cp gpuk8s.test/a- gpuk8s.test/b-").returncode == 0
    labels = json.loads(_kubectl(kc, "get nodes k-cp -o json").stdout)["metadata"]["labels"]
    assert "gpuk8s.test/a" not in labels and "gpuk8s.test/b" not in labels
