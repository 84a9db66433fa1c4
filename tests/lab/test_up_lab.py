"""`gpuk8s up` end to end in the lab: bare hosts to a Ready cluster, idempotence, dry run,
HA joins, a failing join, resume, containerd 1.7 and 2.x, Ubuntu and Rocky.

Each test reads what gpuk8s actually wrote on the hosts (containerd config with tomllib, the
kubeadm configs as YAML) and what the simulated tools were asked to do (invocation logs).
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from gpuk8s.facts import parse_containerd_config
from tests.lab.fixture import HostFixture

TOKEN_RE = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
KEY_RE = re.compile(r"(?<!sha256:)\b[0-9a-f]{64}\b")  # a CA hash is public
ADMIN = "/etc/kubernetes/admin.conf"

# Simulated tools a dry run may call, with the subcommands that only read.
READ_ONLY = {
    "uname": None, "lspci": None, "nvidia-smi": None, "mokutil": None, "timedatectl": {"show"},
    "systemctl": {"show", "is-active", "is-enabled"}, "containerd": {"--version", "config"},
    "kubeadm": {"version"}, "kubelet": {"--version"}, "helm": {"version"}, "crictl": {"--version"},
    "journalctl": None,
}


def up(inv: str, tmp: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpuk8s", "up", "-i", inv, "--kubeconfig", str(tmp / "kubeconfig"),
         "--wait-timeout", "60", "--log-file", str(tmp / f"up-{len(list(tmp.glob('up-*.log')))}.log"),
         *args], capture_output=True, text=True, timeout=timeout)


def invocations(lab, name: str) -> list[str]:
    return [ln for ln in lab.read_file(name, "/etc/gpuk8s-lab/invocations.log").splitlines() if ln.strip()]


def clear_invocations(lab) -> None:
    for n in lab.names():
        lab.exec(n, ": > /etc/gpuk8s-lab/invocations.log")


def is_read_only(line: str) -> bool:
    words = line.split()
    tool, args = words[0].rsplit("/", 1)[-1], words[1:]
    if tool == "kubectl":
        return "get" in args or "version" in args
    if tool == "sysctl":
        return "--system" not in args and "-w" not in args
    if tool not in READ_ONLY:
        return False
    allowed = READ_ONLY[tool]
    return allowed is None or (bool(args) and args[0] in allowed)


def nodes(lab, cp: str = "cp-1") -> dict[str, dict]:
    r = lab.exec(cp, f"kubectl --kubeconfig {ADMIN} get nodes -o json")
    assert r.returncode == 0, r.stderr
    return {i["metadata"]["name"]: i for i in json.loads(r.stdout)["items"]}


def ready(node: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])


def kubeadm_seen(lab, name: str) -> list[dict]:
    r = lab.exec(name, "cat /etc/gpuk8s-lab/kubeadm-seen/*.json 2>/dev/null | tr '\\n' ' '")
    return [json.loads(x) for x in re.findall(r"\{.*?\"text\": \".*?[^\\]\"\}", r.stdout)]


def secrets_absent(*texts: str) -> None:
    for t in texts:
        assert not TOKEN_RE.search(t), TOKEN_RE.search(t)
        assert not KEY_RE.search(t), KEY_RE.search(t)


# --------------------------------------------------------------------------- 1 CP + 2 workers


@pytest.fixture(scope="module")
def small(lab_factory):
    return lab_factory([HostFixture.bare("cp-1", roles=("control-plane",)),
                        HostFixture.bare("w-1"),
                        HostFixture.bare("w-2", os="rocky-9")])


@pytest.fixture(scope="module")
def small_inv(small, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small")
    inv = small.write_inventory(tmp / "inv.yaml", host_overrides={
        "w-1": {"labels": {"team": "vision", "node-role.kubernetes.io/gpu": "true"},
                "taints": ["nvidia.com/gpu=present:NoSchedule"]}})
    return inv, tmp


def test_dry_run_changes_nothing(small, small_inv):
    inv, tmp = small_inv
    clear_invocations(small)
    r = up(inv, tmp, "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "would change" in r.stdout and "kubeadm init" in r.stdout and "***" in r.stdout
    secrets_absent(r.stdout, r.stderr)
    for n in small.names():
        changing = [ln for ln in invocations(small, n) if not is_read_only(ln)]
        assert changing == [], (n, changing)
        assert small.exec(n, "test -e /etc/containerd/config.toml").returncode != 0
        # the bare hosts' swap is still on: /proc/swaps lists a device after its header line
        assert len(small.read_file(n, "/proc/swaps").strip().splitlines()) >= 2, n
    assert not (tmp / "kubeconfig").exists()


def test_up_from_bare_hosts(small, small_inv):
    inv, tmp = small_inv
    r = up(inv, tmp)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    secrets_absent(r.stdout, r.stderr, *(p.read_text() for p in tmp.glob("up-*.log")))
    got = nodes(small)
    assert sorted(got) == ["cp-1", "w-1", "w-2"] and all(ready(n) for n in got.values())
    assert got["w-1"]["metadata"]["labels"]["team"] == "vision"
    assert got["w-1"]["metadata"]["labels"]["node-role.kubernetes.io/gpu"] == "true"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in got["w-1"]["spec"]["taints"]

    # The admin kubeconfig: private, pointing at the control-plane endpoint.
    kc = tmp / "kubeconfig"
    assert stat.S_IMODE(kc.stat().st_mode) == 0o600
    assert yaml.safe_load(kc.read_text())["clusters"][0]["cluster"]["server"] == "https://k8s-api.lab:6443"

    for n in small.names():
        # containerd: native version 3 for 2.x, SystemdCgroup in the right table, pause image.
        text = small.read_file(n, "/etc/containerd/config.toml")
        cfg = tomllib.loads(text)
        assert cfg["version"] == 3
        runc = cfg["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]
        assert runc["options"]["SystemdCgroup"] is True
        assert cfg["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == \
            "registry.k8s.io/pause:3.10.1"
        assert "cri" not in (cfg.get("disabled_plugins") or [])
        assert parse_containerd_config(text).systemd_cgroup is True
        # swap off now and after reboot; sysctls and modules persisted; secrets files gone.
        assert small.read_file(n, "/proc/swaps").strip().count("\n") == 0
        fstab = small.read_file(n, "/etc/fstab")
        assert not [ln for ln in fstab.splitlines() if " swap " in ln and not ln.lstrip().startswith("#")]
        assert "net.ipv4.ip_forward = 1" in small.read_file(n, "/etc/sysctl.d/99-kubernetes.conf")
        assert "br_netfilter" in small.read_file(n, "/etc/modules-load.d/kubernetes.conf")
        assert small.exec(n, "ls /etc/gpuk8s/kubeadm-init.yaml /etc/gpuk8s/kubeadm-join.yaml").returncode != 0
        # kubeadm got every setting from a 0600 file, never from flags.
        seen = kubeadm_seen(small, n)
        assert seen and all(s["mode"] == 0o600 for s in seen)
        kubeadm_calls = [ln for ln in invocations(small, n) if ln.startswith("kubeadm ") and
                         (" init " in f" {ln} " or " join " in f" {ln} ")]
        assert all(re.search(r"--config /etc/gpuk8s/kubeadm-(init|join)\.yaml", ln) for ln in kubeadm_calls)

    init = [yaml.safe_load_all(s["text"]) for s in kubeadm_seen(small, "cp-1") if "kubeadm-init" in s["path"]]
    docs = {d["kind"]: d for d in list(init[0])}
    assert docs["InitConfiguration"]["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert docs["ClusterConfiguration"]["networking"]["podSubnet"] == "10.244.0.0/16"
    assert docs["ClusterConfiguration"]["controlPlaneEndpoint"] == "k8s-api.lab:6443"
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "systemd"
    join = [s for s in kubeadm_seen(small, "w-2") if "kubeadm-join" in s["path"]]
    jc = yaml.safe_load(join[0]["text"])
    assert jc["kind"] == "JoinConfiguration" and "controlPlane" not in jc
    assert jc["discovery"]["bootstrapToken"]["caCertHashes"][0].startswith("sha256:")

    # Calico: the Installation's pool is the pod CIDR; packages held (apt) on Ubuntu.
    inst = json.loads(small.exec("cp-1", f"kubectl --kubeconfig {ADMIN} get installations.operator.tigera.io "
                                         "default -o json").stdout)
    assert [p["cidr"] for p in inst["spec"]["calicoNetwork"]["ipPools"]] == ["10.244.0.0/16"]
    assert "kubeadm" in small.exec("w-1", "apt-mark showhold").stdout
    calico_calls = [ln for ln in invocations(small, "cp-1") if ln.startswith("kubectl") and " apply " in ln]
    assert calico_calls and all("--server-side" in ln for ln in calico_calls)
    # The join token made for this run is gone.
    assert any("token delete" in ln for ln in invocations(small, "cp-1"))


def test_second_up_changes_nothing(small, small_inv):
    inv, tmp = small_inv
    clear_invocations(small)
    r = up(inv, tmp)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "nothing to do" in r.stdout
    for n in small.names():
        changing = [ln for ln in invocations(small, n) if not is_read_only(ln)]
        assert changing == [], (n, changing)
    # one read of the cluster: nodes, Calico's Installation and tigerastatus together
    assert [ln for ln in invocations(small, "cp-1") if ln.startswith("kubectl --kubeconfig")] == [
        f"kubectl --kubeconfig {ADMIN} get nodes,installations.operator.tigera.io,"
        "tigerastatuses.operator.tigera.io -o json"]


# --------------------------------------------------------------------------- HA, failures, resume


def test_ha_failed_join_then_resume(lab_factory, tmp_path):
    lab = lab_factory([HostFixture.bare("cp-1", roles=("control-plane",)),
                       HostFixture.bare("cp-2", roles=("control-plane",)),
                       HostFixture.bare("cp-3", roles=("control-plane",), os="rocky-9"),
                       HostFixture.bare("w-1"), HostFixture.bare("w-2", fail_join=True),
                       HostFixture.bare("w-3", os="rocky-9")])
    inv = lab.write_inventory(tmp_path / "inv.yaml")
    r = up(inv, tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 5, out[-4000:]
    assert "w-2" in out and "Port-10250" in out
    secrets_absent(out)
    got = nodes(lab)
    assert sorted(got) == ["cp-1", "cp-2", "cp-3", "w-1", "w-3"]
    assert all(ready(n) for n in got.values())
    roles = {n: "node-role.kubernetes.io/control-plane" in g["metadata"]["labels"] for n, g in got.items()}
    assert roles == {"cp-1": True, "cp-2": True, "cp-3": True, "w-1": False, "w-3": False}
    # Control planes joined one at a time, each after a fresh certificate upload.
    cp1 = invocations(lab, "cp-1")
    assert sum("upload-certs" in ln and "phase" in ln for ln in cp1) == 2
    for cp in ("cp-2", "cp-3"):
        cfg = yaml.safe_load([s for s in kubeadm_seen(lab, cp) if "join" in s["path"]][0]["text"])
        assert cfg["controlPlane"]["certificateKey"] and cfg["controlPlane"]["localAPIEndpoint"]

    # Fix the broken worker, run again: only w-2 is worked on, init and CP joins are not redone.
    lab.exec("w-2", "rm -f /etc/gpuk8s-lab/fail_join; "
                    "python3 - <<'E'\nimport json;p='/etc/gpuk8s-lab/state.json';d=json.load(open(p));"
                    "d['fail_join']=False;json.dump(d,open(p,'w'))\nE")
    clear_invocations(lab)
    r = up(inv, tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert sorted(nodes(lab)) == ["cp-1", "cp-2", "cp-3", "w-1", "w-2", "w-3"]
    assert not [ln for ln in invocations(lab, "cp-1") if "kubeadm init " in ln and "phase" not in ln]
    for n in ("cp-2", "cp-3", "w-1", "w-3"):
        assert not [ln for ln in invocations(lab, n) if ln.startswith("kubeadm join")], n


def test_interrupted_after_init_resumes(lab_factory, tmp_path):
    """A run that dies right after init (here: Calico never becomes available) is resumed."""
    lab = lab_factory([HostFixture.bare("cp-1", roles=("control-plane", "worker")),
                       HostFixture.bare("w-1", os="ubuntu-22.04")])
    inv = lab.write_inventory(tmp_path / "inv.yaml")
    lab.exec("cp-1", "echo 3600 > /etc/gpuk8s-lab/calico_delay")
    r = subprocess.run([sys.executable, "-m", "gpuk8s", "up", "-i", inv, "--kubeconfig",
                        str(tmp_path / "kc"), "--wait-timeout", "3", "--log-file", str(tmp_path / "a.log")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 5, (r.stdout + r.stderr)[-3000:]
    out = r.stdout + r.stderr
    assert "waiting for Calico available" in out and "log (secrets redacted)" in out
    assert "tigerastatus" in out  # the diagnosis, not just a timeout
    assert lab.exec("cp-1", f"test -e {ADMIN}").returncode == 0       # init happened
    lab.exec("cp-1", "rm -f /etc/gpuk8s-lab/calico_delay")
    clear_invocations(lab)
    r = subprocess.run([sys.executable, "-m", "gpuk8s", "up", "-i", inv, "--kubeconfig",
                        str(tmp_path / "kc"), "--wait-timeout", "60", "--log-file", str(tmp_path / "b.log")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert not [ln for ln in invocations(lab, "cp-1") if "kubeadm init " in ln and "phase" not in ln]
    got = nodes(lab)
    assert sorted(got) == ["cp-1", "w-1"] and all(ready(n) for n in got.values())
    # control plane that is also a worker carries no NoSchedule control-plane taint
    assert not [t for t in got["cp-1"]["spec"].get("taints") or [] if t["effect"] == "NoSchedule"]


def test_containerd_17_on_kubernetes_135(lab_factory, tmp_path):
    lab = lab_factory([HostFixture.bare("cp-1", roles=("control-plane",)), HostFixture.bare("w-1", os="rocky-9")])
    inv = lab.write_inventory(tmp_path / "inv.yaml", cluster={"kubernetes_version": "1.35"},
                              versions={"containerd": "1.7"})
    r = up(inv, tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    for n in ("cp-1", "w-1"):
        cfg = tomllib.loads(lab.read_file(n, "/etc/containerd/config.toml"))
        assert cfg["version"] == 2
        runc = cfg["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["runc"]
        assert runc["options"]["SystemdCgroup"] is True
    got = nodes(lab)
    assert {g["status"]["nodeInfo"]["kubeletVersion"] for g in got.values()} == {"v1.35.6"}


def test_rhel_selinux_permissive_and_networkmanager_left_off_calico(lab_factory, tmp_path):
    lab = lab_factory([
        HostFixture.bare("cp-1", roles=("control-plane",)),
        HostFixture.bare("w-1", os="rocky-9", selinux="enforcing",
                         services={"NetworkManager.service": ("active", "enabled")}),
    ])
    inv = lab.write_inventory(tmp_path / "inv.yaml")
    r = up(inv, tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert lab.read_file("w-1", "/sys/fs/selinux/enforce").strip() == "0"
    conf = lab.read_file("w-1", "/etc/NetworkManager/conf.d/calico.conf")
    assert "unmanaged-devices=interface-name:cali*;interface-name:tunl*" in conf
    assert lab.exec("cp-1", "test -e /etc/NetworkManager/conf.d/calico.conf").returncode != 0
    assert all(ready(n) for n in nodes(lab).values())
