"""Rendering: golden files, kubeadm/Calico/containerd content, YAML safety, secret masking.

GPUK8S_UPDATE_GOLDEN=1 rewrites tests/unit/golden/ from the current output.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import os
import re
import shutil
import stat
from pathlib import Path

import jinja2
import pytest
import yaml

from gpuk8s import paths, render, versions
from gpuk8s.render import base, placeholders, tomllib
from gpuk8s.errors import UsageError
from gpuk8s.facts import parse_containerd_config
from gpuk8s.inventory import (ClusterSpec, HostSpec, Inventory, NetworkSpec, SSHSettings, Taint,
                              Versions, parse_inventory)
from gpuk8s.render import ClusterSecrets, RenderedFile
from gpuk8s.shell import Secret

GOLDEN = Path(__file__).parent / "golden"
# The repository's templates/ (the layout rule); render reads them as package gpuk8s.templates.
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

FIXED = ClusterSecrets(Secret("abcdef.0123456789abcdef"),
                       Secret("3f2a9c1b7d4e6f80a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a7b8"))

HA_INVENTORY = """
cluster:
  name: gpu-prod
  kubernetes_version: "1.36"
  control_plane_endpoint: k8s-api.example.com:6443
  pod_cidr: 10.244.0.0/16
  service_cidr: 10.96.0.0/12
network:
  encapsulation: VXLANCrossSubnet
hosts:
  - {name: cp-1, address: 10.0.0.11, roles: [control-plane]}
  - {name: cp-2, address: 10.0.0.12, roles: [control-plane]}
  - {name: cp-3, address: cp-3.example.com, node_ip: 10.0.0.13, roles: [control-plane]}
  - name: gpu-1
    address: 10.0.0.21
    roles: [worker]
    labels:
      nvidia.com/gpu.present: "true"
      node-role.kubernetes.io/gpu: ""
      topology.kubernetes.io/zone: rack-a
    taints: ["nvidia.com/gpu=present:NoSchedule"]
  - {name: gpu-2, address: 10.0.0.22, node_ip: 192.168.50.22, roles: [worker]}
"""

SINGLE_INVENTORY = """
cluster:
  name: lab
  kubernetes_version: "1.35.4"
  pod_cidr: 172.16.0.0/16
network:
  encapsulation: IPIP
hosts:
  - {name: box, address: 10.0.0.5, roles: [control-plane, worker]}
"""

DOCKER_CONTAINERD_IO = """#   Copyright 2018-2022 Docker Inc.

#   Licensed under the Apache License, Version 2.0 (the "License");

disabled_plugins = ["cri"]

#root = "/var/lib/containerd"
#state = "/run/containerd"
#subreaper = true
#oom_score = 0

#[grpc]
#  address = "/run/containerd/containerd.sock"
#  uid = 0
#  gid = 0
"""


def _inv(text: str) -> Inventory:
    return parse_inventory(text, "inventory.yaml")


def _host(name: str, address: str = "10.0.0.9", roles=("worker",), **kw) -> HostSpec:
    return HostSpec(name=name, address=address, roles=tuple(roles), ssh=SSHSettings(), **kw)


def _docs(f: RenderedFile) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(f.content) if d}


def _file(files: list[RenderedFile], host: str | None, path: str) -> RenderedFile:
    (match,) = [f for f in files if f.host == host and f.path == path]
    return match


# ---------------------------------------------------------------------------- golden files

def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted(root.rglob("*")) if p.is_file()}


def _check_golden(name: str, files: list[RenderedFile], tmp_path: Path) -> None:
    out = tmp_path / name
    render.write_tree(files, out)
    got = _tree(out)
    golden = GOLDEN / name
    if os.environ.get("GPUK8S_UPDATE_GOLDEN") == "1":
        shutil.rmtree(golden, ignore_errors=True)
        shutil.copytree(out, golden)
        for p in golden.rglob("*"):
            if p.is_file():
                p.chmod(0o644)
    want = _tree(golden)
    assert sorted(got) == sorted(want), "rendered file set differs from golden " \
        "(GPUK8S_UPDATE_GOLDEN=1 rewrites it)"
    for rel, text in got.items():
        if text != want[rel]:
            diff = "".join(difflib.unified_diff(want[rel].splitlines(True), text.splitlines(True),
                                                f"golden/{name}/{rel}", "rendered"))
            pytest.fail(f"{rel} differs from golden (GPUK8S_UPDATE_GOLDEN=1 rewrites it):\n{diff}")


def test_golden_ha_cluster(tmp_path):
    inv = _inv(HA_INVENTORY)
    files = render.render_all(inv, os_families={"gpu-2": "rhel"}, secrets=FIXED)
    _check_golden("ha", files, tmp_path)


def test_golden_single_node_placeholder_secrets(tmp_path):
    files = render.render_all(_inv(SINGLE_INVENTORY))
    _check_golden("single", files, tmp_path)


def test_render_all_file_set():
    inv = _inv(HA_INVENTORY)
    files = render.render_all(inv)
    by_host: dict[str | None, set[str]] = {}
    for f in files:
        by_host.setdefault(f.host, set()).add(f.path)
    common = {render.MODULES_FILE, render.SYSCTL_FILE, paths.K8S_APT_SOURCE,
              render.CONTAINERD_CONFIG}
    assert by_host["cp-1"] == common | {render.KUBEADM_INIT_CONFIG}
    for h in ("cp-2", "cp-3", "gpu-1", "gpu-2"):
        assert by_host[h] == common | {render.KUBEADM_JOIN_CONFIG}
    assert by_host[None] == {render.CALICO_INSTALLATION, render.GPU_OPERATOR_VALUES,
                             render.DEVICE_PLUGIN_CONFIG, "cluster/gpu-operator-namespace.yaml"}
    for f in files:
        assert (f.mode == 0o600) == f.secret == f.path.startswith("/etc/gpuk8s/")


# ---------------------------------------------------------------------------- kubeadm

def test_init_config_fields():
    inv = _inv(HA_INVENTORY)
    release = inv.release
    f = render.kubeadm_init_config(inv, inv.host("cp-1"), FIXED, release)
    assert (f.path, f.mode, f.secret) == ("/etc/gpuk8s/kubeadm-init.yaml", 0o600, True)
    docs = _docs(f)
    assert set(docs) == {"InitConfiguration", "ClusterConfiguration", "KubeletConfiguration"}
    init, cluster, kubelet = (docs["InitConfiguration"], docs["ClusterConfiguration"],
                              docs["KubeletConfiguration"])
    assert init["apiVersion"] == cluster["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert init["bootstrapTokens"] == [{
        "token": FIXED.token.reveal(), "ttl": "2h0m0s", "usages": ["signing", "authentication"],
        "groups": ["system:bootstrappers:kubeadm:default-node-token"]}]
    assert init["certificateKey"] == FIXED.certificate_key.reveal()
    assert init["localAPIEndpoint"] == {"advertiseAddress": "10.0.0.11", "bindPort": 6443}
    reg = init["nodeRegistration"]
    assert reg["name"] == "cp-1"
    assert reg["criSocket"] == "unix:///var/run/containerd/containerd.sock"
    assert reg["kubeletExtraArgs"] == [{"name": "node-ip", "value": "10.0.0.11"}]
    assert reg["taints"] == [{"key": "node-role.kubernetes.io/control-plane",
                              "effect": "NoSchedule"}]
    assert cluster["clusterName"] == "gpu-prod"
    assert cluster["kubernetesVersion"] == "v1.36.2"
    assert cluster["controlPlaneEndpoint"] == "k8s-api.example.com:6443"
    assert cluster["networking"] == {"podSubnet": inv.cluster.pod_cidr,
                                     "serviceSubnet": "10.96.0.0/12",
                                     "dnsDomain": "cluster.local"}
    assert kubelet["apiVersion"] == "kubelet.config.k8s.io/v1beta1"
    assert kubelet["cgroupDriver"] == "systemd"


def test_everything_kubeadm_needs_is_in_the_file_not_in_flags():
    """kubeadm refuses most flags next to --config: token, key, CIDRs, endpoint all in YAML."""
    inv = _inv(HA_INVENTORY)
    release = inv.release
    init = _docs(render.kubeadm_init_config(inv, inv.host("cp-1"), FIXED, release))
    assert init["ClusterConfiguration"]["networking"]["podSubnet"] == "10.244.0.0/16"
    assert init["ClusterConfiguration"]["controlPlaneEndpoint"]
    assert init["InitConfiguration"]["certificateKey"]
    assert init["InitConfiguration"]["nodeRegistration"]["criSocket"]
    join = _docs(render.kubeadm_join_config(inv, inv.host("gpu-1"), FIXED, release,
                                            "sha256:" + "ab" * 32))
    bt = join["JoinConfiguration"]["discovery"]["bootstrapToken"]
    assert bt == {"apiServerEndpoint": "k8s-api.example.com:6443",
                  "token": FIXED.token.reveal(), "caCertHashes": ["sha256:" + "ab" * 32]}
    assert set(join) == {"JoinConfiguration"}


def test_join_worker_and_control_plane():
    inv = _inv(HA_INVENTORY)
    release = inv.release
    ca = "sha256:" + "12" * 32
    worker = render.kubeadm_join_config(inv, inv.host("gpu-1"), FIXED, release, ca)
    assert (worker.path, worker.mode, worker.secret) == ("/etc/gpuk8s/kubeadm-join.yaml",
                                                         0o600, True)
    w = _docs(worker)["JoinConfiguration"]
    assert "controlPlane" not in w
    assert FIXED.certificate_key.reveal() not in worker.content
    assert w["nodeRegistration"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    args = {a["name"]: a["value"] for a in w["nodeRegistration"]["kubeletExtraArgs"]}
    # node-role.kubernetes.io/* would make the kubelet refuse to start: applied later instead.
    assert args == {"node-ip": "10.0.0.21",
                    "node-labels": "nvidia.com/gpu.present=true,topology.kubernetes.io/zone=rack-a"}
    assert render.node_labels_after_join(inv.host("gpu-1")) == {"node-role.kubernetes.io/gpu": ""}

    cp = _docs(render.kubeadm_join_config(inv, inv.host("cp-3"), FIXED, release, ca))
    j = cp["JoinConfiguration"]
    assert j["controlPlane"] == {"localAPIEndpoint": {"advertiseAddress": "10.0.0.13",
                                                      "bindPort": 6443},
                                 "certificateKey": FIXED.certificate_key.reveal()}
    assert j["nodeRegistration"]["name"] == "cp-3"
    assert j["nodeRegistration"]["taints"] == [
        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    assert j["discovery"]["bootstrapToken"]["caCertHashes"] == [ca]


def test_worker_without_taints_has_explicit_empty_list():
    inv = _inv(HA_INVENTORY)
    f = render.kubeadm_join_config(inv, inv.host("gpu-2"), FIXED,
                                   inv.release, render.PLACEHOLDER_CA_HASH)
    reg = _docs(f)["JoinConfiguration"]["nodeRegistration"]
    assert reg["taints"] == []
    assert reg["kubeletExtraArgs"] == [{"name": "node-ip", "value": "192.168.50.22"}]


def test_control_plane_that_is_also_worker_gets_empty_taints():
    inv = _inv(SINGLE_INVENTORY)
    f = render.kubeadm_init_config(inv, inv.hosts[0], FIXED, inv.release)
    assert re.search(r"^  taints: \[\]$", f.content, re.M)
    docs = _docs(f)
    assert docs["InitConfiguration"]["nodeRegistration"]["taints"] == []
    assert docs["ClusterConfiguration"]["controlPlaneEndpoint"] == "10.0.0.5:6443"
    assert docs["ClusterConfiguration"]["kubernetesVersion"] == "v1.35.4"


def test_control_plane_worker_keeps_inventory_taints_only():
    inv = Inventory("x", ClusterSpec(name="c"), (
        _host("cp", roles=("control-plane", "worker"),
              taints=(Taint("dedicated", "infra", "PreferNoSchedule"),)),))
    f = render.kubeadm_init_config(inv, inv.hosts[0], FIXED, inv.release)
    assert _docs(f)["InitConfiguration"]["nodeRegistration"]["taints"] == [
        {"key": "dedicated", "value": "infra", "effect": "PreferNoSchedule"}]


def test_control_plane_taint_not_duplicated():
    inv = Inventory("x", ClusterSpec(name="c"), (
        _host("cp", roles=("control-plane",),
              taints=(Taint("node-role.kubernetes.io/control-plane", None, "NoSchedule"),)),))
    f = render.kubeadm_init_config(inv, inv.hosts[0], FIXED, inv.release)
    assert len(_docs(f)["InitConfiguration"]["nodeRegistration"]["taints"]) == 1


def test_v1beta3_uses_maps_for_extra_args():
    inv = _inv(HA_INVENTORY)
    release = dataclasses.replace(inv.release, kubeadm_api="v1beta3")
    init = _docs(render.kubeadm_init_config(inv, inv.host("cp-1"), FIXED, release))
    assert init["InitConfiguration"]["apiVersion"] == "kubeadm.k8s.io/v1beta3"
    assert init["ClusterConfiguration"]["apiVersion"] == "kubeadm.k8s.io/v1beta3"
    assert init["InitConfiguration"]["nodeRegistration"]["kubeletExtraArgs"] == {
        "node-ip": "10.0.0.11"}
    join = _docs(render.kubeadm_join_config(inv, inv.host("gpu-1"), FIXED, release,
                                            render.PLACEHOLDER_CA_HASH))["JoinConfiguration"]
    assert join["apiVersion"] == "kubeadm.k8s.io/v1beta3"
    assert join["nodeRegistration"]["kubeletExtraArgs"] == {
        "node-ip": "10.0.0.21",
        "node-labels": "nvidia.com/gpu.present=true,topology.kubernetes.io/zone=rack-a"}


def test_v1beta4_uses_name_value_lists():
    inv = _inv(HA_INVENTORY)
    join = _docs(render.kubeadm_join_config(inv, inv.host("gpu-1"), FIXED,
                                            inv.release,
                                            render.PLACEHOLDER_CA_HASH))["JoinConfiguration"]
    args = join["nodeRegistration"]["kubeletExtraArgs"]
    assert isinstance(args, list) and all(set(a) == {"name", "value"} for a in args)


def test_unknown_kubeadm_api_is_refused():
    inv = _inv(SINGLE_INVENTORY)
    release = dataclasses.replace(inv.release, kubeadm_api="v1")
    with pytest.raises(UsageError, match="v1"):
        render.kubeadm_init_config(inv, inv.hosts[0], FIXED, release)


def test_init_refuses_a_worker_and_join_a_bad_hash():
    inv = _inv(HA_INVENTORY)
    release = inv.release
    with pytest.raises(UsageError):
        render.kubeadm_init_config(inv, inv.host("gpu-1"), FIXED, release)
    with pytest.raises(UsageError, match="sha256"):
        render.kubeadm_join_config(inv, inv.host("gpu-1"), FIXED, release, "sha256:xyz")


def test_hostname_address_without_node_ip_omits_ip_settings():
    inv = Inventory("x", ClusterSpec(name="c", control_plane_endpoint="api.example.com"),
                    (_host("cp", address="cp.example.com", roles=("control-plane",)),))
    init = _docs(render.kubeadm_init_config(inv, inv.hosts[0], FIXED,
                                            inv.release))
    i = init["InitConfiguration"]
    assert i["localAPIEndpoint"] == {"bindPort": 6443}
    assert "kubeletExtraArgs" not in i["nodeRegistration"]
    assert init["ClusterConfiguration"]["controlPlaneEndpoint"] == "api.example.com:6443"


def test_loopback_address_is_never_the_node_ip():
    inv = Inventory("x", ClusterSpec(name="c"),
                    (_host("cp", address="127.0.0.1", roles=("control-plane", "worker")),))
    i = _docs(render.kubeadm_init_config(inv, inv.hosts[0], FIXED,
                                         inv.release))["InitConfiguration"]
    assert "advertiseAddress" not in i["localAPIEndpoint"]


def test_ipv6_endpoint_and_bind_port_on_the_host_itself():
    inv = Inventory("x", ClusterSpec(name="c"),
                    (_host("cp", address="fd00::5", roles=("control-plane",)),))
    c = _docs(render.kubeadm_init_config(inv, inv.hosts[0], FIXED,
                                         inv.release))
    assert c["ClusterConfiguration"]["controlPlaneEndpoint"] == "[fd00::5]:6443"
    # An endpoint naming the control plane itself (no load balancer): the API binds its port.
    inv = Inventory("x", ClusterSpec(name="c", control_plane_endpoint="10.0.0.5:8443"),
                    (_host("cp", address="10.0.0.5", roles=("control-plane",)),))
    c = _docs(render.kubeadm_init_config(inv, inv.hosts[0], FIXED,
                                         inv.release))
    assert c["InitConfiguration"]["localAPIEndpoint"]["bindPort"] == 8443
    assert c["ClusterConfiguration"]["controlPlaneEndpoint"] == "10.0.0.5:8443"


NASTY = [
    'a: b # c', "it's \"quoted\"", "- dash", "{braces}", "[list]", "*alias", "&anchor", "!tag",
    "%percent", "@at", "`tick", "null", "true", "yes", "~", "1.0", "0x10", "", " lead",
    "trail ", "tab\there", "new\nline", "ünïcødé ☃", "\\back\\slash", "key: value", "#hash",
    "'single'", "\"double\"", "{{ jinja }}", "${shell}", "a\u2028b", "\x00nul",
]


@pytest.mark.parametrize("value", NASTY)
def test_yaml_filter_round_trips(value):
    out = render.yaml_scalar(value)
    assert "\n" not in out
    assert yaml.safe_load(f"k: {out}\n") == {"k": value}
    assert yaml.safe_load(f"- {out}\n") == [value]


def test_yaml_filter_other_types():
    assert render.yaml_scalar(6443) == "6443"
    assert render.yaml_scalar(True) == "true"
    assert render.yaml_scalar(None) == "null"
    with pytest.raises(TypeError):
        render.yaml_scalar({"a": 1})


def test_nasty_inventory_values_round_trip():
    nasty_name = 'prod: "gpu" #1 \'x\' {y} [z] & *a'
    label_value = "v: #'\"1"
    inv = Inventory(
        "x",
        ClusterSpec(name=nasty_name, control_plane_endpoint="api.example.com:6443",
                    dns_domain="cluster.local"),
        (_host("cp-1", address="10.0.0.1", roles=("control-plane",)),
         _host("w-1", address="10.0.0.2", labels={"example.com/x": label_value,
                                                  "plain": "a#b"},
               taints=(Taint("example.com/t", "x: 'y' #z", "NoExecute"),))),
    )
    release = inv.release
    init = _docs(render.kubeadm_init_config(inv, inv.hosts[0], FIXED, release))
    assert init["ClusterConfiguration"]["clusterName"] == nasty_name
    join = _docs(render.kubeadm_join_config(inv, inv.hosts[1], FIXED, release,
                                            render.PLACEHOLDER_CA_HASH))["JoinConfiguration"]
    reg = join["nodeRegistration"]
    assert reg["taints"] == [{"key": "example.com/t", "value": "x: 'y' #z",
                              "effect": "NoExecute"}]
    args = {a["name"]: a["value"] for a in reg["kubeletExtraArgs"]}
    assert args["node-labels"] == f"example.com/x={label_value},plain=a#b"
    for f in render.render_all(inv):
        if f.path.endswith(".yaml"):
            list(yaml.safe_load_all(f.content))


def test_strict_undefined():
    with pytest.raises(jinja2.UndefinedError):
        render.render_template("kubeadm/join.yaml.j2")


# ---------------------------------------------------------------------------- secrets

def test_generated_secrets_have_the_kubeadm_formats():
    a, b = ClusterSecrets.generate(), ClusterSecrets.generate()
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", a.token.reveal())
    assert re.fullmatch(r"[0-9a-f]{64}", a.certificate_key.reveal())
    assert a != b
    p = ClusterSecrets.placeholder()
    assert p.is_placeholder() and not a.is_placeholder()
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", p.token.reveal())
    assert re.fullmatch(r"[0-9a-f]{64}", p.certificate_key.reveal())
    with pytest.raises(ValueError):
        ClusterSecrets(Secret("short"), Secret("0" * 64))


def test_secrets_never_appear_in_masked_or_repr():
    inv = _inv(HA_INVENTORY)
    s = ClusterSecrets.generate()
    files = render.render_all(inv, secrets=s)
    token, key = s.token.reveal(), s.certificate_key.reveal()
    kubeadm_files = [f for f in files if f.path.startswith("/etc/gpuk8s/")]
    assert len(kubeadm_files) == 5
    for f in files:
        masked = f.masked()
        assert token not in masked and key not in masked
        assert token not in repr(f) and key not in repr(f)
    for f in kubeadm_files:
        assert token in f.content and "***" in f.masked()
        assert f.secret and f.mode == 0o600
    init = _file(files, "cp-1", render.KUBEADM_INIT_CONFIG)
    assert key in init.content
    assert yaml.safe_load_all(init.masked())   # still readable for dry-run output


def test_placeholder_secrets_are_announced():
    files = render.render_all(_inv(HA_INVENTORY))
    init = _file(files, "cp-1", render.KUBEADM_INIT_CONFIG)
    assert "placeholders" in init.content
    join = _file(files, "gpu-1", render.KUBEADM_JOIN_CONFIG)
    assert "placeholder" in join.content and render.PLACEHOLDER_CA_HASH in join.content
    real = render.render_all(_inv(HA_INVENTORY), secrets=FIXED)
    assert "placeholder" not in _file(real, "cp-1", render.KUBEADM_INIT_CONFIG).content


# ---------------------------------------------------------------------------- containerd

def _snapshot(name: str) -> str:
    return (TEMPLATES / "containerd" / name).read_text()


def _release(**kw):
    return dataclasses.replace(_inv(SINGLE_INVENTORY).release, **kw)


CONTAINERD_CASES = [
    ("default-1.7.toml", "1.7.27", 2),
    ("default-2.1.toml", "2.1.4", 3),
    ("docker", "1.7.27", 2),
    ("docker", "2.1.4", 3),
    ("docker", "2.0.6", 3),
    ("no-systemd-key", "2.0.5", 3),
    ("v2-on-2.x", "2.1", 3),
]


def _input(kind: str) -> str:
    if kind == "docker":
        return DOCKER_CONTAINERD_IO
    if kind == "no-systemd-key":  # containerd 2.0/2.1 builds whose default omitted the key
        return "\n".join(line for line in _snapshot("default-2.1.toml").splitlines()
                         if "SystemdCgroup" not in line)
    if kind == "v2-on-2.x":
        return _snapshot("default-1.7.toml")
    return _snapshot(kind)


@pytest.mark.parametrize("kind,version,native", CONTAINERD_CASES)
def test_containerd_config_is_kubernetes_ready(kind, version, native):
    release = _release(pause_image="registry.k8s.io/pause:3.10.1")
    text = render.containerd_config(_input(kind), release, version)
    cfg = parse_containerd_config(text)
    assert cfg.parse_error is None
    assert cfg.version == native
    assert cfg.systemd_cgroup is True
    assert cfg.systemd_cgroup_misplaced is False
    assert cfg.cri_disabled is False
    assert cfg.sandbox_image == "registry.k8s.io/pause:3.10.1"
    data = tomllib.loads(text)
    assert not data["disabled_plugins"]
    plugin = "io.containerd.grpc.v1.cri" if native == 2 else "io.containerd.cri.v1.runtime"
    cri = data["plugins"][plugin]
    assert cri["cni"]["conf_dir"] == "/etc/cni/net.d"
    if native == 3 and version.startswith("2.1"):
        assert cri["cni"]["bin_dirs"] == ["/opt/cni/bin"]
        assert not cri["cni"].get("bin_dir")
    else:
        assert cri["cni"]["bin_dir"] == "/opt/cni/bin"
        assert "bin_dirs" not in cri["cni"]
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert text.startswith("# Generated by gpuk8s")


def test_containerd_config_keeps_the_rest_of_the_default():
    base = _snapshot("default-1.7.toml").replace('root = "/var/lib/containerd"',
                                                 'root = "/data/containerd"')
    text = render.containerd_config(base, _release(), "1.7.27")
    data = tomllib.loads(text)
    assert data["root"] == "/data/containerd"
    before = tomllib.loads(base)
    assert data["plugins"].keys() == before["plugins"].keys()
    assert data["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["snapshotter"] == "overlayfs"
    # Idempotent: editing our own output changes nothing.
    assert render.containerd_config(text, _release(), "1.7.27") == text


def test_containerd_config_removes_cri_from_disabled_plugins_of_a_native_file():
    base = _snapshot("default-2.1.toml").replace(
        "disabled_plugins = []", "disabled_plugins = ['io.containerd.cri.v1.runtime', 'x.y']")
    data = tomllib.loads(render.containerd_config(base, _release(), "2.1.4"))
    assert data["disabled_plugins"] == ["x.y"]


def test_containerd_config_rejects_bad_input():
    with pytest.raises(UsageError):
        render.containerd_config("version = [", _release(), "2.1.4")
    with pytest.raises(UsageError):
        render.containerd_config("", _release(), "not-a-version")


def test_containerd_config_file_uses_shipped_snapshot_per_major():
    inv = _inv(SINGLE_INVENTORY)
    release = inv.release
    for version, native in (("1.7", 2), ("2.1", 3)):
        f = render.containerd_config_file(inv, release, version)
        assert f.path == "/etc/containerd/config.toml" and f.mode == 0o644 and not f.secret
        cfg = parse_containerd_config(f.content)
        assert (cfg.version, cfg.systemd_cgroup, cfg.sandbox_image) == (
            native, True, release.pause_image)


@pytest.mark.parametrize("name,native", [("default-1.7.toml", 2), ("default-2.1.toml", 3),
                                         ("default-2.3.toml", 4)])
def test_shipped_snapshots_look_like_containerd_defaults(name, native):
    cfg = parse_containerd_config(_snapshot(name))
    assert cfg.version == native and cfg.systemd_cgroup is False and not cfg.cri_disabled
    assert cfg.sandbox_image


@pytest.mark.parametrize("version,native", [
    ("1.7.27", 2), ("2.0.5", 3), ("2.1", 3), ("2.2.7", 3), ("2.3.0", 4), ("2.3", 4), ("2.10.1", 4),
])
def test_native_config_version(version, native):
    """containerd 1.x writes version 2; 2.0-2.2 write 3; 2.3 writes 4 (version/version.go)."""
    assert versions.native_config_version(version) == native
    assert render.native_config_version is versions.native_config_version


@pytest.mark.parametrize("kind", ["default-2.3.toml", "docker", "default-2.1.toml"])
def test_containerd_2_3_config_is_edited_in_version_4(kind):
    release = _release(pause_image="registry.k8s.io/pause:3.10.1")
    text = render.containerd_config(_input(kind), release, "2.3.1")
    cfg = parse_containerd_config(text)
    assert (cfg.version, cfg.systemd_cgroup, cfg.cri_disabled, cfg.sandbox_image) == (
        4, True, False, "registry.k8s.io/pause:3.10.1")
    data = tomllib.loads(text)
    runtime = data["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert runtime["cni"]["bin_dirs"] == ["/opt/cni/bin"] and not runtime["cni"].get("bin_dir")
    # Version 4 keeps the server listeners in plugins, not in top-level [grpc]/[ttrpc] tables.
    assert "grpc" not in data and "ttrpc" not in data
    assert data["plugins"]["io.containerd.server.v1.grpc"]["address"] == \
        "/run/containerd/containerd.sock"
    assert render.containerd_config(text, release, "2.3.1") == text


def test_containerd_default_snapshot_per_config_version():
    # One snapshot per release range (tests/unit/test_containerd_defaults.py has them all).
    for version, name in (("1.7", "default-1.7.toml"), ("2.0", "default-2.0.toml"),
                          ("2.1.4", "default-2.1.4.toml"), ("2.1", "default-2.1.toml"),
                          ("2.2.1", "default-2.2.toml"), ("2.3.0", "default-2.3.toml")):
        assert placeholders.containerd_default(version) == _snapshot(name)


# ---------------------------------------------------------------------------- host files

def test_sysctl_and_modules():
    f = render.sysctl_file()
    assert f.path == "/etc/sysctl.d/99-kubernetes.conf" and f.mode == 0o644
    lines = {ln for ln in f.content.splitlines() if ln and not ln.startswith("#")}
    assert lines == {"net.ipv4.ip_forward = 1", "net.bridge.bridge-nf-call-iptables = 1",
                     "net.bridge.bridge-nf-call-ip6tables = 1"}
    inv6 = Inventory("x", ClusterSpec(name="c", pod_cidr="fd00:10::/56"),
                     (_host("cp", roles=("control-plane",)),))
    assert "net.ipv6.conf.all.forwarding = 1" in render.sysctl_file(inv6).content
    m = render.modules_file()
    assert m.path == "/etc/modules-load.d/kubernetes.conf"
    assert [ln for ln in m.content.splitlines() if not ln.startswith("#")] == [
        "overlay", "br_netfilter"]


def test_package_repositories():
    inv = _inv(HA_INVENTORY)
    release = inv.release
    deb = render.package_repo_file(inv, release, "debian")
    assert deb.path == "/etc/apt/sources.list.d/kubernetes.list"
    assert ("deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] "
            "https://pkgs.k8s.io/core:/stable:/v1.36/deb/ /") in deb.content.splitlines()
    assert render.package_repo_file(inv, release, "ubuntu").content == deb.content
    rpm = render.package_repo_file(inv, release, "rhel")
    assert rpm.path == "/etc/yum.repos.d/kubernetes.repo"
    lines = rpm.content.splitlines()
    assert "baseurl=https://pkgs.k8s.io/core:/stable:/v1.36/rpm/" in lines
    assert "gpgkey=https://pkgs.k8s.io/core:/stable:/v1.36/rpm/repodata/repomd.xml.key" in lines
    assert "exclude=kubelet kubeadm kubectl cri-tools kubernetes-cni" in lines
    assert "[kubernetes]" in lines and "gpgcheck=1" in lines
    assert render.package_key_url(release, "debian") == \
        "https://pkgs.k8s.io/core:/stable:/v1.36/deb/Release.key"
    with pytest.raises(UsageError):
        render.package_repo_file(inv, release, "windows")


def test_line_filter_refuses_control_characters():
    with pytest.raises(UsageError):
        render.plain_line("1.36\n[evil]")
    assert render.plain_line("1.36") == "1.36"


def test_networkmanager_calico_file():
    f = render.networkmanager_calico_file("gpu-1")
    assert (f.path, f.host, f.mode) == ("/etc/NetworkManager/conf.d/calico.conf", "gpu-1", 0o644)
    assert "unmanaged-devices=interface-name:cali*;interface-name:tunl*;" in f.content
    assert "[keyfile]" in f.content.splitlines()


def test_docker_repositories_for_containerd():
    release = _release()
    apt = render.docker_repo_file(release, "ubuntu", "ubuntu", "noble", host="w")
    assert (apt.path, apt.host) == ("/etc/apt/sources.list.d/docker.list", "w")
    assert ("deb [signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/ubuntu "
            "noble stable") in apt.content.splitlines()
    rpm = render.docker_repo_file(release, "rocky")
    assert rpm.path == "/etc/yum.repos.d/docker-ce.repo"
    lines = rpm.content.splitlines()
    assert "baseurl=https://download.docker.com/linux/rhel/$releasever/$basearch/stable" in lines
    assert "gpgkey=https://download.docker.com/linux/rhel/gpg" in lines
    assert render.docker_key_url("debian") == "https://download.docker.com/linux/debian/gpg"
    with pytest.raises(UsageError):
        render.docker_repo_file(release, "debian", "debian", None)
    with pytest.raises(UsageError):
        render.docker_repo_file(release, "debian", "debian", "bookworm\n[evil]")


# ---------------------------------------------------------------------------- Calico

def test_calico_installation_matches_pod_cidr():
    inv = _inv(HA_INVENTORY)
    f = render.calico_installation(inv, inv.release)
    assert f.path == "cluster/calico-installation.yaml" and f.host is None
    docs = list(yaml.safe_load_all(f.content))
    assert [d["kind"] for d in docs] == ["Installation", "APIServer", "Goldmane", "Whisker"]
    for d in docs:
        assert d["apiVersion"] == "operator.tigera.io/v1"
        assert d["metadata"] == {"name": "default"}
    net = docs[0]["spec"]["calicoNetwork"]
    assert net["ipPools"] == [{"name": "default-ipv4-ippool", "cidr": inv.cluster.pod_cidr,
                               "blockSize": 26, "encapsulation": "VXLANCrossSubnet",
                               "natOutgoing": "Enabled", "nodeSelector": "all()"}]
    assert net["nodeAddressAutodetectionV4"] == {"kubernetes": "NodeInternalIP"}
    assert "nodeAddressAutodetectionV6" not in net
    single = _inv(SINGLE_INVENTORY)
    pool = yaml.safe_load_all(render.calico_installation(
        single, single.release).content).__next__()
    assert pool["spec"]["calicoNetwork"]["ipPools"][0]["cidr"] == "172.16.0.0/16"
    assert pool["spec"]["calicoNetwork"]["ipPools"][0]["encapsulation"] == "IPIP"


def test_calico_before_3_30_has_no_goldmane_or_whisker():
    inv = dataclasses.replace(_inv(SINGLE_INVENTORY), versions=Versions(calico="v3.29.4"))
    release = inv.release
    assert release.calico == "3.29.4"
    docs = list(yaml.safe_load_all(render.calico_installation(inv, release).content))
    assert [d["kind"] for d in docs] == ["Installation", "APIServer"]


def test_calico_ipv6_and_dual_stack():
    inv = Inventory("x", ClusterSpec(name="c", pod_cidr="fd00:10::/56"),
                    (_host("cp", roles=("control-plane",)),),
                    network=NetworkSpec("VXLAN"))
    net = next(yaml.safe_load_all(render.calico_installation(
        inv, inv.release).content))["spec"]["calicoNetwork"]
    assert net["ipPools"] == [{"name": "default-ipv6-ippool", "cidr": "fd00:10::/56",
                               "blockSize": 122, "encapsulation": "VXLAN",
                               "natOutgoing": "Enabled", "nodeSelector": "all()"}]
    assert net["nodeAddressAutodetectionV6"] == {"kubernetes": "NodeInternalIP"}
    assert "nodeAddressAutodetectionV4" not in net
    dual = dataclasses.replace(inv, cluster=ClusterSpec(name="c",
                                                         pod_cidr="10.244.0.0/16,fd00:10::/56"))
    net = next(yaml.safe_load_all(render.calico_installation(
        dual, dual.release).content))["spec"]["calicoNetwork"]
    assert [p["cidr"] for p in net["ipPools"]] == ["10.244.0.0/16", "fd00:10::/56"]
    assert "nodeAddressAutodetectionV4" in net and "nodeAddressAutodetectionV6" in net
    ipip = dataclasses.replace(inv, network=NetworkSpec("IPIPCrossSubnet"))
    with pytest.raises(UsageError, match="IPv6"):
        render.calico_installation(ipip, ipip.release)


@pytest.mark.parametrize("version,names", [
    ("3.26.4", ["tigera-operator.yaml"]),
    ("3.29.4", ["tigera-operator.yaml"]),
    ("3.30.4", ["operator-crds.yaml", "tigera-operator.yaml"]),
    ("3.31.3", ["operator-crds.yaml", "tigera-operator.yaml"]),
    ("3.32.0", ["v1_crd_projectcalico_org.yaml", "tigera-operator.yaml"]),
])
def test_calico_manifest_urls(version, names):
    release = _release(calico=version)
    assert render.calico_manifest_urls(release) == [
        f"https://raw.githubusercontent.com/projectcalico/calico/v{version}/manifests/{n}"
        for n in names]


def test_calico_manifest_urls_refuse_old_calico():
    with pytest.raises(UsageError):
        render.calico_manifest_urls(_release(calico="3.25.1"))


# ---------------------------------------------------------------------------- versions

def test_inventory_release_applies_overrides():
    inv = dataclasses.replace(_inv(HA_INVENTORY), versions=Versions(
        containerd="2.0.5", calico="3.31.3", gpu_operator="v26.7.1",
        pause_image="registry.example.com/pause:3.10"))
    r = inv.release
    assert (r.containerd, r.calico, r.gpu_operator, r.pause_image) == (
        "2.0.5", "3.31.3", "v26.7.1", "registry.example.com/pause:3.10")
    assert r.minor == "1.36"
    text = render.containerd_config_file(inv, r, r.containerd).content
    assert parse_containerd_config(text).sandbox_image == "registry.example.com/pause:3.10"


def test_inventory_release_errors():
    inv = _inv(HA_INVENTORY)
    with pytest.raises(UsageError, match="1.20"):
        dataclasses.replace(
            inv, cluster=ClusterSpec(name="c", kubernetes_version="1.20")).release
    with pytest.raises(UsageError, match="containerd"):
        dataclasses.replace(inv, versions=Versions(containerd="1.7")).release
    with pytest.raises(UsageError, match="Calico"):
        dataclasses.replace(inv, versions=Versions(calico="latest")).release
    with pytest.raises(UsageError, match="pause"):
        dataclasses.replace(
            inv, versions=Versions(pause_image="bad image\nx")).release


def test_kubernetes_patch_is_resolved_with_the_release():
    inv = _inv(HA_INVENTORY)
    assert inv.release.patch == "1.36.2"
    assert _inv(SINGLE_INVENTORY).release.patch == "1.35.4"
    assert inv.release is inv.release          # resolved once


def test_render_all_installs_the_pinned_containerd():
    inv = dataclasses.replace(_inv(HA_INVENTORY), versions=Versions(containerd="1.7"))
    inv = dataclasses.replace(inv, cluster=dataclasses.replace(inv.cluster,
                                                               kubernetes_version="1.35"))
    ctr = _file(render.render_all(inv), "cp-1", render.CONTAINERD_CONFIG)
    assert "(containerd 1.7, config version 2)" in ctr.content


# ---------------------------------------------------------------------------- placeholders

def test_placeholders_in_one_place():
    assert re.fullmatch(r"sha256:0{64}", placeholders.PLACEHOLDER_CA_HASH)
    assert render.PLACEHOLDER_CA_HASH is placeholders.PLACEHOLDER_CA_HASH
    assert ClusterSecrets.placeholder() is placeholders.PLACEHOLDER_SECRETS
    assert placeholders.PLACEHOLDER_SECRETS.is_placeholder()


# ---------------------------------------------------------------------------- templates package

def test_templates_come_from_the_gpuk8s_templates_package():
    root = importlib.resources.files("gpuk8s.templates")
    assert root.joinpath("kubeadm").joinpath("init.yaml.j2").is_file()
    for path in _template_files() + sorted(TEMPLATES.glob("containerd/*.toml")):
        name = path.relative_to(TEMPLATES).as_posix()
        assert render.template_text(name) == path.read_text(encoding="utf-8"), name


def test_one_jinja_environment():
    assert base.environment() is base.environment()
    render.render_template("host/kubernetes-modules.conf.j2")
    with pytest.raises(jinja2.TemplateNotFound):
        render.render_template("host/missing.j2")


# ---------------------------------------------------------------------------- write_tree

def test_write_tree_layout_and_modes(tmp_path):
    files = render.render_all(_inv(HA_INVENTORY))
    paths = render.write_tree(files, tmp_path)
    assert len(paths) == len(files)
    init = tmp_path / "cp-1/etc/gpuk8s/kubeadm-init.yaml"
    assert stat.S_IMODE(init.stat().st_mode) == 0o600
    sysctl = tmp_path / "gpu-2/etc/sysctl.d/99-kubernetes.conf"
    assert stat.S_IMODE(sysctl.stat().st_mode) == 0o644
    assert (tmp_path / "cluster/calico-installation.yaml").is_file()
    f = render.modules_file()
    render.write_tree([f], tmp_path / "x", host_of={f: "node-9"})
    assert (tmp_path / "x/node-9/etc/modules-load.d/kubernetes.conf").is_file()
    with pytest.raises(UsageError):
        render.write_tree([f], tmp_path / "y")
    with pytest.raises(UsageError):
        render.write_tree([RenderedFile("/etc/../../x", "", host="h")], tmp_path / "z")


# ---------------------------------------------------------------------------- template rules

_EXPR_RE = re.compile(r"\{\{(.*?)\}\}", re.S)


def _template_files() -> list[Path]:
    return sorted(p for p in TEMPLATES.rglob("*.j2"))


def _quoted_placeholders(line: str) -> list[str]:
    """`{{ }}` inside '...' or "..." on a template line (comments after # are ignored)."""
    line = re.sub(r"\{%.*?%\}|\{#.*?#\}", "", line)
    bad, quote, i = [], None, 0
    while i < len(line):
        if line.startswith("{{", i):
            end = line.find("}}", i)
            end = len(line) if end < 0 else end + 2
            if quote:
                bad.append(line[i:end])
            i = end
            continue
        c = line[i]
        if quote is None and c == "#" and (i == 0 or line[i - 1].isspace()):
            break
        if c in "'\"":
            quote = None if quote == c else (c if quote is None else quote)
        i += 1
    return bad


def test_templates_exist():
    names = {p.relative_to(TEMPLATES).as_posix() for p in _template_files()}
    assert {"kubeadm/init.yaml.j2", "kubeadm/join.yaml.j2", "calico/installation.yaml.j2",
            "host/99-kubernetes.conf.j2", "packages/kubernetes.list.j2",
            "packages/kubernetes.repo.j2"} <= names


@pytest.mark.parametrize("path", _template_files(), ids=lambda p: p.name)
def test_no_placeholder_inside_quotes(path):
    bad = [(n, b) for n, line in enumerate(path.read_text().splitlines(), 1)
           for b in _quoted_placeholders(line)]
    assert not bad, f"{path}: placeholders inside quotes (use the yaml filter): {bad}"


@pytest.mark.parametrize("path", _template_files(), ids=lambda p: p.name)
def test_every_placeholder_goes_through_a_safe_filter(path):
    allowed = ("yaml",) if ".yaml" in path.name else ("yaml", "line")
    for expr in _EXPR_RE.findall(path.read_text()):
        last = expr.strip().rsplit("|", 1)
        assert len(last) == 2 and last[1].strip() in allowed, \
            f"{path.name}: {{{{{expr}}}}} must end with | {' or | '.join(allowed)}"


def test_quote_checker_catches_violations():
    assert _quoted_placeholders('name: "{{ x | yaml }}"') == ["{{ x | yaml }}"]
    assert _quoted_placeholders("name: '{{ x }}'") == ["{{ x }}"]
    assert _quoted_placeholders("name: {{ x | yaml }}  # it's fine") == []
    assert _quoted_placeholders("# it's {{ x | yaml }}") == []
