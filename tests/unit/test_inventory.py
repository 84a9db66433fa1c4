"""Inventory loader: valid files give the right dataclasses; each problem has file, line, path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gpuk8s import versions
from gpuk8s.errors import EXIT_INVENTORY, InventoryError, Problem, UsageError
from gpuk8s.inventory import (
    API_SERVER_PORT,
    Bastion,
    ClusterSpec,
    GPUSpec,
    HostSpec,
    Inventory,
    MIGSpec,
    NetworkSpec,
    SSHSettings,
    Taint,
    TimeSlicing,
    Versions,
    load_inventory,
    local_inventory,
    parse_inventory,
)

REPO = Path(__file__).resolve().parents[2]

FULL = """\
cluster:
  name: gpu-lab
  kubernetes_version: "1.35.6"
  control_plane_endpoint: k8s-api.example.com:6443
  pod_cidr: 10.244.0.0/16
  service_cidr: 10.96.0.0/12
  dns_domain: cluster.local
ssh:
  user: ubuntu
  port: 22
  identity_file: ~/.ssh/id_ed25519
  known_hosts: ~/.ssh/known_hosts
  accept_new_host_keys: true
  sudo: true
  bastion: {address: jump.example.com, user: ops, port: 2200, identity_file: ~/.ssh/ops}
  connect_timeout: 5
  command_timeout: 120.5
versions:
  containerd: 2.1
  calico: "3.32.0"
  gpu_operator: v26.7.0
  cuda_image: nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0-ubuntu22.04
  pause_image: registry.k8s.io/pause:3.10.1
network:
  encapsulation: None
gpu:
  driver: host
  driver_version: "595.91.07"
  time_slicing: {replicas: 4, rename_by_default: true}
  mig: {strategy: mixed, config: all-1g.10gb}
  smoke_test: false
hosts:
  - name: cp-1
    address: 10.0.0.11
    roles: [control-plane]
  - name: cp-2
    address: 10.0.0.12
    roles: [control-plane]
    ssh: {bastion: null, identity_file: null}
  - name: cp-3
    address: fd00::13
    roles: [control-plane]
  - name: gpu-1
    address: gpu-1.example.com
    roles: [worker]
    connection: ssh
    node_ip: 192.168.100.21
    gpu: true
    ssh:
      port: 2222
      user: admin
      bastion: {address: 10.0.0.1}
    labels:
      team: vision
      example.com/rack: "r12"
      fast: true
      slots: 8
    taints:
      - nvidia.com/gpu=present:NoSchedule
      - dedicated:NoExecute
      - {key: k, value: v, effect: PreferNoSchedule}
"""


def problems_of(text: str, path: str = "inv.yaml") -> list[str]:
    with pytest.raises(InventoryError) as info:
        parse_inventory(textwrap.dedent(text), path)
    return [str(p) for p in info.value.problems]


# ---- valid inventories ---------------------------------------------------------------------

def test_full_inventory_parses_into_dataclasses():
    inv = parse_inventory(FULL, "full.yaml")
    assert inv.path == "full.yaml"
    assert inv.cluster == ClusterSpec(
        name="gpu-lab", kubernetes_version="1.35.6",
        control_plane_endpoint="k8s-api.example.com:6443", pod_cidr="10.244.0.0/16",
        service_cidr="10.96.0.0/12", dns_domain="cluster.local")
    assert inv.cluster.endpoint_host == "k8s-api.example.com"
    assert inv.cluster.endpoint_port == 6443
    assert inv.versions == Versions(
        containerd="2.1", calico="3.32.0", gpu_operator="v26.7.0",
        cuda_image="nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0-ubuntu22.04",
        pause_image="registry.k8s.io/pause:3.10.1")
    assert inv.network == NetworkSpec(encapsulation="None")
    assert inv.gpu == GPUSpec(driver="host", driver_version="595.91.07",
                              time_slicing=TimeSlicing(4, True),
                              mig=MIGSpec("mixed", "all-1g.10gb"), smoke_test=False)
    assert [h.name for h in inv.hosts] == ["cp-1", "cp-2", "cp-3", "gpu-1"]
    assert [h.line for h in inv.hosts] == [33, 36, 40, 43]
    assert [h.name for h in inv.control_planes] == ["cp-1", "cp-2", "cp-3"]
    assert [h.name for h in inv.workers] == ["gpu-1"]
    assert inv.first_control_plane.name == "cp-1"


def test_ssh_defaults_are_merged_with_host_overrides():
    inv = parse_inventory(FULL, "full.yaml")
    jump = Bastion("jump.example.com", "ops", 2200, "~/.ssh/ops")
    defaults = SSHSettings(user="ubuntu", port=22, identity_file="~/.ssh/id_ed25519",
                           known_hosts="~/.ssh/known_hosts", accept_new_host_keys=True,
                           sudo=True, bastion=jump, connect_timeout=5.0, command_timeout=120.5)
    assert inv.host("cp-1").ssh == defaults
    # null resets identity_file (ssh-agent) and bastion (direct connection)
    assert inv.host("cp-2").ssh == SSHSettings(**{**defaults.__dict__, "bastion": None,
                                                  "identity_file": None})
    gpu1 = inv.host("gpu-1")
    # per-host keys override; the bastion is replaced whole, not merged key by key
    assert gpu1.ssh == SSHSettings(**{**defaults.__dict__, "port": 2222, "user": "admin",
                                      "bastion": Bastion("10.0.0.1")})
    assert gpu1.ssh.bastion.user is None and gpu1.ssh.bastion.port == 22


def test_host_fields_labels_and_taints():
    gpu1 = parse_inventory(FULL).host("gpu-1")
    assert gpu1 == HostSpec(
        name="gpu-1", address="gpu-1.example.com", roles=("worker",), ssh=gpu1.ssh,
        connection="ssh", node_ip="192.168.100.21", gpu=True,
        labels={"team": "vision", "example.com/rack": "r12", "fast": "true", "slots": "8"},
        taints=(Taint("nvidia.com/gpu", "present", "NoSchedule"),
                Taint("dedicated", None, "NoExecute"),
                Taint("k", "v", "PreferNoSchedule")),
        line=43)
    assert [str(t) for t in gpu1.taints] == [
        "nvidia.com/gpu=present:NoSchedule", "dedicated:NoExecute", "k=v:PreferNoSchedule"]
    assert gpu1.is_worker and not gpu1.is_control_plane


def test_minimal_inventory_gets_every_default():
    inv = parse_inventory("cluster: {name: c1}\nhosts:\n"
                          "  - {name: n1, address: h1, roles: [control-plane, worker]}\n")
    assert inv.path == "<inventory>"
    assert inv.cluster == ClusterSpec(name="c1")
    assert inv.cluster.kubernetes_version == versions.DEFAULT_KUBERNETES_MINOR
    assert inv.versions == Versions() and inv.network == NetworkSpec() and inv.gpu == GPUSpec()
    (host,) = inv.hosts
    assert host == HostSpec(name="n1", address="h1", roles=("control-plane", "worker"),
                            ssh=SSHSettings(), line=3)
    assert host.ssh.user == "root" and host.ssh.known_hosts == "~/.ssh/known_hosts"


@pytest.mark.parametrize("raw, stored", [
    ('"1.36"', "1.36"),
    ("1.35", "1.35"),            # unquoted: a YAML float, read from the raw text
    ("v1.34", "1.34"),
    ("1.33.12", "1.33.12"),
    ('"v1.36.2"', "1.36.2"),
])
def test_kubernetes_version_accepted(raw, stored):
    inv = parse_inventory(f"cluster:\n  name: c\n  kubernetes_version: {raw}\n"
                          "hosts: [{name: a, address: a, roles: [control-plane]}]\n")
    assert inv.cluster.kubernetes_version == stored


@pytest.mark.parametrize("raw, shown", [
    ("1.30", "1.30"),            # the float 1.3 would say "1.3": the raw text is used
    ("1.3", "1.3"),
    ('"1.37"', "1.37"),
    ("1.40", "1.40"),
])
def test_kubernetes_version_unsupported_uses_raw_text(raw, shown):
    supported = ", ".join(versions.supported_minors())
    assert problems_of(f"""\
        cluster:
          name: c
          kubernetes_version: {raw}
        hosts: [{{name: a, address: a, roles: [control-plane]}}]
        """) == [f"inv.yaml:3: cluster.kubernetes_version: Kubernetes {shown} is not supported "
                 f"(supported minors: {supported})"]


def test_shipped_example_inventories_load():
    example = load_inventory(REPO / "inventories" / "example.yaml")
    assert example.path == str(REPO / "inventories" / "example.yaml")
    assert [h.name for h in example.control_planes] == ["cp-1"]
    assert len(example.workers) == 2 and all(h.gpu for h in example.workers)
    assert example.host("gpu-2").ssh.port == 2222
    assert example.host("gpu-1").ssh.port == 22

    local = load_inventory(str(REPO / "inventories" / "local.yaml"))
    (host,) = local.hosts
    assert host.connection == "local" and host.address == "localhost"
    assert host.roles == ("control-plane", "worker")


def test_example_ha_block_is_valid_when_uncommented():
    text = (REPO / "inventories" / "example.yaml").read_text()
    head, _, ha = text.partition("# High availability")
    ha_hosts = "\n".join(line[1:] for line in ha.splitlines() if line.startswith("#  "))
    text = head.replace("# control_plane_endpoint:", "control_plane_endpoint:")
    text = text.replace("hosts:\n", "hosts:\n" + ha_hosts + "\n", 1)
    text = text.replace("  - name: cp-1\n    address: 10.0.0.11\n    roles: [control-plane]\n\n",
                        "", 1)
    inv = parse_inventory(text)
    assert [h.name for h in inv.control_planes] == ["cp-1", "cp-2", "cp-3"]
    assert inv.cluster.control_plane_endpoint == "k8s-api.example.com:6443"


def test_local_inventory():
    inv = local_inventory("My-Box")
    (host,) = inv.hosts
    assert host.name == "my-box"
    assert host.address == "localhost" and host.connection == "local"
    assert host.roles == ("control-plane", "worker")
    assert inv.cluster == ClusterSpec(name="local")
    assert isinstance(inv, Inventory) and inv.gpu == GPUSpec()


def test_local_inventory_defaults_to_sanitised_hostname(monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "GPU_Box01")
    assert local_inventory().hosts[0].name == "gpu-box01"


# ---- versions resolved once, at load -------------------------------------------------------

def _with_versions(block: str, kubernetes: str = "1.36") -> str:
    return (f"cluster:\n  name: c\n  kubernetes_version: \"{kubernetes}\"\nversions:\n{block}"
            "hosts: [{name: a, address: 10.0.0.1, roles: [control-plane]}]\n")


def test_release_has_every_override_applied():
    inv = parse_inventory(FULL, "full.yaml")
    r = inv.release
    assert (r.minor, r.patch, r.containerd, r.containerd_pinned) == ("1.35", "1.35.6", "2.1", True)
    assert (r.calico, r.gpu_operator, r.pause_image) == (
        "3.32.0", "v26.7.0", "registry.k8s.io/pause:3.10.1")
    assert r.cuda_image == "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0-ubuntu22.04"
    assert inv.release is r                    # computed once


def test_release_without_overrides_is_the_matrix_row():
    inv = parse_inventory(_with_versions("  containerd: null\n"))
    assert inv.release == versions.MATRIX["1.36"]
    assert not inv.release.containerd_pinned and inv.release.containerd == "2.1"
    assert inv.release.cuda_image == versions.CUDA_SMOKE_IMAGE


def test_containerd_override_is_what_up_installs(tmp_path):
    """The defect: preflight said `up` installs containerd 2.1 while `up` installed 2.0."""
    path = tmp_path / "inv.yaml"
    path.write_text(_with_versions('  containerd: "2.0"\n'))
    release = load_inventory(path).release
    assert release.containerd == "2.0" and release.containerd_pinned
    assert release.containerd == "2.0"


@pytest.mark.parametrize("value, stored", [("2.0", "2.0"), ("2.0.5", "2.0.5"), ("v2.1", "2.1"),
                                           ("2.3", "2.3")])
def test_containerd_override_accepted(value, stored):
    inv = parse_inventory(_with_versions(f'  containerd: "{value}"\n'))
    assert inv.release.containerd == stored


def test_patch_comes_from_the_kubernetes_version():
    assert parse_inventory(_with_versions("", "1.36.2")).release.patch == "1.36.2"
    matrix_patch = versions.MATRIX["1.34"].patch
    assert parse_inventory(_with_versions("", "1.34")).release.patch == matrix_patch


@pytest.mark.parametrize("block, expected", [
    ('  pause_image: "bad image!"\n',
     "inv.yaml:5: versions.pause_image: 'bad image!' is not an image reference like "
     "registry.k8s.io/pause:3.10"),
    ('  cuda_image: "nvcr.io/x y"\n',
     "inv.yaml:5: versions.cuda_image: 'nvcr.io/x y' is not an image reference like "
     f"{versions.CUDA_SMOKE_IMAGE}"),
    ("  calico: latest\n",
     "inv.yaml:5: versions.calico: 'latest' is not a Calico release like 3.31.3"),
    ('  calico: "3.31"\n',
     "inv.yaml:5: versions.calico: '3.31' is not a Calico release like 3.31.3"),
    ('  calico: "3.25.1"\n',
     "inv.yaml:5: versions.calico: Calico 3.25.1 is older than 3.26, the oldest gpuk8s installs"),
    ("  gpu_operator: stable\n",
     "inv.yaml:5: versions.gpu_operator: 'stable' is not a GPU Operator chart version like "
     "v26.7.0"),
    ("  containerd: abc\n",
     "inv.yaml:5: versions.containerd: 'abc' is not a containerd version like 2.1 or 1.7.27"),
    ('  containerd: "1.7.27"\n',
     "inv.yaml:5: versions.containerd: containerd 1.7.27 is too old for Kubernetes 1.36: it needs "
     "containerd 2.0 or newer"),
])
def test_bad_override_is_reported_at_load_with_line(block, expected):
    assert problems_of(_with_versions(block)) == [expected]


def test_containerd_minimum_follows_the_kubernetes_minor():
    inv = parse_inventory(_with_versions('  containerd: "1.7"\n', "1.35"))
    assert inv.release.containerd == "1.7"


def test_overrides_are_checked_even_when_the_cluster_is_invalid():
    found = problems_of(_with_versions('  containerd: "1.7"\n  calico: x\n', "1.20"))
    assert found == [
        "inv.yaml:3: cluster.kubernetes_version: Kubernetes 1.20 is not supported "
        f"(supported minors: {', '.join(versions.supported_minors())})",
        "inv.yaml:6: versions.calico: 'x' is not a Calico release like 3.31.3"]


def test_release_of_a_directly_built_inventory_checks_its_overrides():
    inv = Inventory("x", ClusterSpec(name="c"), (HostSpec("a", "10.0.0.1", ("control-plane",),
                                                           SSHSettings()),),
                    versions=Versions(pause_image="bad image!"))
    with pytest.raises(UsageError, match="versions.pause_image"):
        inv.release


# ---- topology ------------------------------------------------------------------------------

def _cp(address: str = "10.0.0.5", **kw) -> HostSpec:
    return HostSpec("cp", address, ("control-plane",), SSHSettings(), **kw)


@pytest.mark.parametrize("address, node_ip, internal", [
    ("10.0.0.5", None, "10.0.0.5"),
    ("cp.example.com", None, None),
    ("cp.example.com", "192.168.1.5", "192.168.1.5"),
    ("127.0.0.1", None, None),
    ("fd00:0::5", None, "fd00::5"),
])
def test_internal_ip(address, node_ip, internal):
    assert _cp(address, node_ip=node_ip).internal_ip == internal


@pytest.mark.parametrize("endpoint, address, expected", [
    (None, "10.0.0.5", "10.0.0.5:6443"),
    (None, "fd00::5", "[fd00::5]:6443"),
    (None, "cp.example.com", "cp.example.com:6443"),
    ("api.example.com", "10.0.0.5", "api.example.com:6443"),
    ("[fd00::10]:8443", "10.0.0.5", "[fd00::10]:8443"),
    ("fd00::10", "10.0.0.5", "[fd00::10]:6443"),
])
def test_control_plane_endpoint(endpoint, address, expected):
    inv = Inventory("x", ClusterSpec(name="c", control_plane_endpoint=endpoint), (_cp(address),))
    assert inv.control_plane_endpoint == expected


def test_bind_port_is_the_endpoint_port_only_on_the_endpoint_host():
    cp = _cp("10.0.0.5")
    on_host = Inventory("x", ClusterSpec(name="c", control_plane_endpoint="10.0.0.5:8443"), (cp,))
    balancer = Inventory("x", ClusterSpec(name="c", control_plane_endpoint="10.0.0.100:8443"),
                         (cp,))
    assert on_host.bind_port(cp) == 8443 and balancer.bind_port(cp) == API_SERVER_PORT == 6443


# ---- problems: one case each, exact line and path ------------------------------------------

# Appended to an indented case after its closing 8-space line, so the first line has no indent.
BASE_HOSTS = """hosts:
          - name: cp-1
            address: 10.0.0.11
            roles: [control-plane]
        """

ERROR_CASES = [
    pytest.param("""\
        cluster: {name: c}
        hosts:
          - name: cp-1
            adress: 10.0.0.11
            roles: [control-plane]
        """, ["inv.yaml:3: hosts[0].address: required",
              "inv.yaml:4: hosts[0].adress: unknown key (did you mean 'address'?)"],
        id="host-key-typo"),
    pytest.param("""\
        cluster: {name: c}
        ssh: {usr: ubuntu}
        """ + BASE_HOSTS, ["inv.yaml:2: ssh.usr: unknown key (did you mean 'user'?)"],
        id="ssh-key-typo"),
    pytest.param("""\
        cluster: {name: c}
        gpus: {driver: auto}
        """ + BASE_HOSTS, ["inv.yaml:2: gpus: unknown key (did you mean 'gpu'?)"],
        id="top-level-typo"),
    pytest.param("""\
        cluster: {name: c}
        zzz: 1
        """ + BASE_HOSTS,
        ["inv.yaml:2: zzz: unknown key (expected one of: cluster, ssh, versions, network, "
         "gpu, hosts)"], id="top-level-unknown"),
    pytest.param("""\
        cluster:
          name: c
          name: d
        """ + BASE_HOSTS, ["inv.yaml:3: cluster.name: duplicate key (first at line 2)"],
        id="duplicate-key"),
    pytest.param("""\
        cluster: {name: c}
        hosts:
          - name: cp-1
            address: 10.0.0.11
            roles: [control-plane]
          - name: cp-1
            address: 10.0.0.12
            roles: [worker]
        """, ["inv.yaml:6: hosts[1].name: duplicate host name 'cp-1' (also hosts[0], line 3)"],
        id="duplicate-name"),
    pytest.param("""\
        cluster: {name: c}
        hosts:
          - name: cp-1
            address: Node.Example.com
            roles: [control-plane]
          - name: w-1
            address: node.example.com.
            roles: [worker]
        """, ["inv.yaml:7: hosts[1].address: duplicate address 'node.example.com.' "
              "(also hosts[0] 'cp-1', line 4)"], id="duplicate-address"),
    pytest.param("""\
        cluster: {name: c}
        hosts:
          - {name: a, address: "fd00::1", roles: [control-plane]}
          - {name: b, address: "fd00:0::1", roles: [worker]}
        """, ["inv.yaml:4: hosts[1].address: duplicate address 'fd00:0::1' "
              "(also hosts[0] 'a', line 3)"], id="duplicate-ipv6-address"),
    pytest.param("""\
        cluster: {name: c}
        hosts:
          - name: w-1
            address: 10.0.0.11
            roles: [worker]
        """, ["inv.yaml:2: hosts: no host has role 'control-plane' (give one host, or three "
              "for HA, roles: [control-plane])"], id="no-control-plane"),
    pytest.param("""\
        cluster:
          name: c
          pod_cidr: 10.96.0.0/16
        """ + BASE_HOSTS,
        ["inv.yaml:3: cluster.pod_cidr: pod_cidr 10.96.0.0/16 and service_cidr 10.96.0.0/12 "
         "overlap"], id="cidr-overlap-default-service"),
    pytest.param("""\
        cluster:
          name: c
          pod_cidr: 10.0.0.0/8
          service_cidr: 10.96.0.0/12
        """ + BASE_HOSTS,
        ["inv.yaml:4: cluster.service_cidr: pod_cidr 10.0.0.0/8 and service_cidr 10.96.0.0/12 "
         "overlap"], id="cidr-overlap"),
    pytest.param("""\
        cluster:
          name: c
          service_cidr: 10.96.0.0/33
        """ + BASE_HOSTS,
        ["inv.yaml:3: cluster.service_cidr: '10.96.0.0/33' is not a network in CIDR notation "
         "(e.g. 10.244.0.0/16)"], id="bad-cidr"),
    pytest.param("""\
        cluster:
          name: c
        hosts:
          - {name: cp-1, address: 10.0.0.11, roles: [control-plane]}
          - {name: cp-2, address: 10.0.0.12, roles: [control-plane, worker]}
        """, ["inv.yaml:2: cluster.control_plane_endpoint: required with more than one control "
              "plane (2: cp-1, cp-2); point it at a load balancer or virtual IP in front of "
              "every API server, e.g. k8s-api.example.com:6443, or give cluster.vip: "
              "{address, interface} and gpuk8s runs kube-vip on the control planes (docs/ha.md)"], id="ha-without-endpoint"),
    pytest.param("""\
        cluster:
          name: c
          control_plane_endpoint: "https://api:6443"
        """ + BASE_HOSTS,
        ["inv.yaml:3: cluster.control_plane_endpoint: 'https://api:6443' must be host[:port] "
         "without a scheme (e.g. k8s-api.example.com:6443)"], id="endpoint-scheme"),
    pytest.param("""\
        cluster:
          name: c
          control_plane_endpoint: api.example.com:70000
        """ + BASE_HOSTS,
        ["inv.yaml:3: cluster.control_plane_endpoint: port '70000' is not a number from 1 "
         "to 65535"], id="endpoint-port"),
    pytest.param("""\
        cluster:
          name: c
          control_plane_endpoint: "[10.0.0.1]:6443"
        """ + BASE_HOSTS,
        ["inv.yaml:3: cluster.control_plane_endpoint: '10.0.0.1' in brackets is not an IPv6 "
         "address"], id="endpoint-brackets"),
    pytest.param("""\
        cluster: {name: c}
        hosts:
          - name: cp-1
            address: 10.0.0.300
            roles: [control-plane]
          - name: w-1
            address: bad_host!
            node_ip: gpu-1.example.com
            roles: [worker]
        """, ["inv.yaml:4: hosts[0].address: '10.0.0.300' is not an IP address or hostname",
              "inv.yaml:7: hosts[1].address: 'bad_host!' is not an IP address or hostname",
              "inv.yaml:8: hosts[1].node_ip: 'gpu-1.example.com' is not an IP address"],
        id="bad-addresses"),
    pytest.param("""\
        cluster: {name: c}
        hosts:
        """, ["inv.yaml:2: hosts: must list at least one host"], id="hosts-null"),
    pytest.param("""\
        cluster: {name: c}
        hosts: []
        """, ["inv.yaml:2: hosts: must list at least one host"], id="hosts-empty"),
    pytest.param("""\
        cluster: {name: c}
        """, ["inv.yaml:1: hosts: required: list at least one host"], id="hosts-missing"),
    pytest.param("""\
        cluster: {name: c}
        hosts: {name: cp-1}
        """, ["inv.yaml:2: hosts: expected a list of hosts, got a mapping"], id="hosts-not-list"),
    pytest.param(BASE_HOSTS, ["inv.yaml:1: cluster: required section missing (at least "
                              "cluster.name)"], id="cluster-missing"),
    pytest.param("""\
        cluster:
          dns_domain: cluster.local
        """ + BASE_HOSTS, ["inv.yaml:2: cluster.name: required"], id="cluster-name-missing"),
    pytest.param("""\
        cluster:
          name: GPU_Lab
        """ + BASE_HOSTS,
        ["inv.yaml:2: cluster.name: 'GPU_Lab' is not a valid DNS-1123 label (lowercase letters, "
         "digits and '-', starting and ending with a letter or digit)"], id="cluster-name"),
    pytest.param("""\
        cluster:
          name: c
          kubernetes_version: latest
        """ + BASE_HOSTS,
        ["inv.yaml:3: cluster.kubernetes_version: 'latest' is not a Kubernetes version like 1.36 "
         "or 1.36.2 (supported minors: " + ", ".join(versions.supported_minors()) + ")"],
        id="version-garbage"),
    pytest.param("""\
        cluster: {name: c}
        ssh:
          port: "22"
          sudo: yes please
          connect_timeout: 0
          command_timeout: [1]
          accept_new_host_keys: 1
        """ + BASE_HOSTS,
        ["inv.yaml:3: ssh.port: expected an integer, got a string",
         "inv.yaml:4: ssh.sudo: expected true or false, got a string",
         "inv.yaml:5: ssh.connect_timeout: 0 must be a number of seconds greater than 0",
         "inv.yaml:6: ssh.command_timeout: expected a number of seconds, got a list",
         "inv.yaml:7: ssh.accept_new_host_keys: expected true or false, got an integer"],
        id="ssh-types"),
    pytest.param("""\
        cluster: {name: c}
        ssh:
          bastion:
            user: ops
            port: 65536
        """ + BASE_HOSTS,
        ["inv.yaml:4: ssh.bastion.address: required",
         "inv.yaml:5: ssh.bastion.port: 65536 is out of range (must be from 1 to 65535)"],
        id="bastion"),
    pytest.param("""\
        cluster: {name: c}
        hosts:
          - name: cp-1
            address: 10.0.0.11
            roles: [control-plane]
            ssh: {port: 0, user: yes}
        """,
        ["inv.yaml:6: hosts[0].ssh.port: 0 is out of range (must be from 1 to 65535)",
         'inv.yaml:6: hosts[0].ssh.user: expected a string, got a boolean (quote it: "yes")'],
        id="host-ssh-override"),
    pytest.param("""\
        cluster: {name: c}
        hosts:
          - name: cp-1
            address: 10.0.0.11
            roles: control-plane
          - name: w-1
            address: 10.0.0.12
            roles: [worker, wrker, worker]
          - name: w-2
            address: 10.0.0.13
            roles: []
        """,
        ["inv.yaml:5: hosts[0].roles: expected a list of roles (e.g. [control-plane, worker]), "
         "got a string",
         "inv.yaml:8: hosts[1].roles[1]: 'wrker' is not one of control-plane, worker "
         "(did you mean 'worker'?)",
         "inv.yaml:8: hosts[1].roles[2]: duplicate role 'worker'",
         "inv.yaml:11: hosts[2].roles: must list at least one role (control-plane, worker)"],
        id="roles"),
    pytest.param("""\
        cluster: {name: c}
        hosts:
          - name: cp-1
            address: 10.0.0.11
            roles: [control-plane]
            connection: winrm
            gpu: maybe
        """,
        ["inv.yaml:6: hosts[0].connection: 'winrm' is not one of ssh, local",
         "inv.yaml:7: hosts[0].gpu: expected true or false, got a string"],
        id="connection-gpu"),
    pytest.param("""\
        cluster: {name: c}
        hosts:
          - name: cp-1
            address: 10.0.0.11
            roles: [control-plane]
            labels:
              example.com/ok: fine
              -bad: x
              good: "bad value!"
              a/b/c: x
              nested: {a: 1}
        """,
        ["inv.yaml:8: hosts[0].labels[\"-bad\"]: label key name '-bad' must be letters, digits, "
         "'-', '_' or '.', starting and ending with a letter or digit",
         "inv.yaml:9: hosts[0].labels.good: label value 'bad value!' must be letters, digits, "
         "'-', '_' or '.', starting and ending with a letter or digit",
         "inv.yaml:10: hosts[0].labels[\"a/b/c\"]: label key 'a/b/c' has more than one '/'",
         "inv.yaml:11: hosts[0].labels.nested: expected a label value (text), got a mapping"],
        id="labels"),
    pytest.param("""\
        cluster: {name: c}
        hosts:
          - name: cp-1
            address: 10.0.0.11
            roles: [control-plane]
            taints:
              - nvidia.com/gpu=present:NoSchedul
              - no-effect
              - {key: k, effect: Never}
              - {value: v, effect: NoExecute}
              - {key: "a b", value: v, efect: NoExecute}
        """,
        ["inv.yaml:7: hosts[0].taints[0]: taint effect 'NoSchedul' is not one of NoSchedule, "
         "PreferNoSchedule, NoExecute (did you mean 'NoSchedule'?)",
         "inv.yaml:8: hosts[0].taints[1]: 'no-effect' is not key[=value]:Effect (Effect is one "
         "of NoSchedule, PreferNoSchedule, NoExecute)",
         "inv.yaml:9: hosts[0].taints[2].effect: 'Never' is not one of NoSchedule, "
         "PreferNoSchedule, NoExecute",
         "inv.yaml:10: hosts[0].taints[3].key: required",
         "inv.yaml:11: hosts[0].taints[4].efect: unknown key (did you mean 'effect'?)",
         "inv.yaml:11: hosts[0].taints[4].effect: required",
         "inv.yaml:11: hosts[0].taints[4].key: label key name 'a b' must be letters, digits, "
         "'-', '_' or '.', starting and ending with a letter or digit"],
        id="taints"),
    pytest.param("""\
        cluster: {name: c}
        network:
          encapsulation: vxlan
        gpu:
          driver: containr
          time_slicing: {replicas: 1}
          mig: {strategy: both}
          smoke_test: "true"
        """ + BASE_HOSTS,
        ["inv.yaml:3: network.encapsulation: 'vxlan' is not one of IPIP, VXLAN, IPIPCrossSubnet, "
         "VXLANCrossSubnet, None (did you mean 'VXLAN'?)",
         "inv.yaml:5: gpu.driver: 'containr' is not one of auto, container, host "
         "(did you mean 'container'?)",
         "inv.yaml:6: gpu.time_slicing.replicas: 1 is out of range (must be at least 2)",
         "inv.yaml:7: gpu.mig.strategy: 'both' is not one of single, mixed",
         "inv.yaml:8: gpu.smoke_test: expected true or false, got a string"],
        id="network-gpu"),
    pytest.param("""\
        cluster: {name: c}
        gpu:
          time_slicing: {rename_by_default: true}
        versions:
          calico: [3]
        """ + BASE_HOSTS,
        ["inv.yaml:3: gpu.time_slicing.replicas: required",
         "inv.yaml:5: versions.calico: expected a string, got a list"],
        id="time-slicing-versions"),
    pytest.param("""\
        - cluster
        """, ["inv.yaml:1: expected a mapping, got a list"], id="top-level-list"),
]


@pytest.mark.parametrize("text, expected", ERROR_CASES)
def test_each_problem_has_line_and_path(text, expected):
    assert problems_of(text) == expected


def test_many_problems_reported_at_once():
    found = problems_of("""\
        cluster:
          name: gpu-lab
          kubernetes_version: 1.30
          pod_cidr: 10.96.0.0/16
        ssh:
          port: 0
        hosts:
          - name: cp-1
            adress: 10.0.0.11
            roles: [control-plane]
          - name: cp-1
            address: 10.0.0.300
            roles: [worker]
        """)
    assert found == [
        "inv.yaml:3: cluster.kubernetes_version: Kubernetes 1.30 is not supported "
        f"(supported minors: {', '.join(versions.supported_minors())})",
        "inv.yaml:4: cluster.pod_cidr: pod_cidr 10.96.0.0/16 and service_cidr 10.96.0.0/12 "
        "overlap",
        "inv.yaml:6: ssh.port: 0 is out of range (must be from 1 to 65535)",
        "inv.yaml:8: hosts[0].address: required",
        "inv.yaml:9: hosts[0].adress: unknown key (did you mean 'address'?)",
        "inv.yaml:11: hosts[1].name: duplicate host name 'cp-1' (also hosts[0], line 8)",
        "inv.yaml:12: hosts[1].address: '10.0.0.300' is not an IP address or hostname",
    ]


def test_problem_objects_and_error_string():
    with pytest.raises(InventoryError) as info:
        parse_inventory("cluster: {name: c}\nhosts:\n  - {name: a, adress: h, roles: [worker]}\n",
                        "site.yaml")
    err = info.value
    assert err.exit_code == EXIT_INVENTORY == 3
    # sorted by line; each problem is file:line: path: message
    assert str(err) == "\n".join([
        "site.yaml:2: hosts: no host has role 'control-plane' (give one host, or three for HA, "
        "roles: [control-plane])",
        "site.yaml:3: hosts[0].adress: unknown key (did you mean 'address'?)",
        "site.yaml:3: hosts[0].address: required",
    ])
    missing = err.problems[2]
    assert (missing.file, missing.line, missing.path, missing.message) == (
        "site.yaml", 3, "hosts[0].address", "required")
    assert missing == Problem("site.yaml", 3, "hosts[0].address", "required")


# ---- files and YAML syntax -----------------------------------------------------------------

def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InventoryError) as info:
        load_inventory(missing)
    (p,) = info.value.problems
    assert (p.file, p.line, p.path) == (str(missing), None, "")
    assert str(p) == f"{missing}: inventory file not found"


def test_directory_is_not_an_inventory(tmp_path):
    with pytest.raises(InventoryError) as info:
        load_inventory(tmp_path)
    assert info.value.problems[0].message.startswith("cannot read the inventory")


def test_yaml_syntax_error_has_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("cluster:\n  name: c\nhosts:\n  - name: a\n   address: b\n")
    with pytest.raises(InventoryError) as info:
        load_inventory(f)
    (p,) = info.value.problems
    assert p.file == str(f) and p.line == 5 and p.path == ""
    assert p.message.startswith("invalid YAML: ")
    assert str(p).startswith(f"{f}:5: invalid YAML: ")


def test_unclosed_flow_mapping():
    (p,) = problems_of("cluster: {name: c\nhosts: []\n")
    assert p.startswith("inv.yaml:") and "invalid YAML" in p


def test_empty_file():
    assert problems_of("# only a comment\n") == [
        "inv.yaml: the inventory is empty; it needs at least a cluster: and a hosts: section"]


def test_merge_keys_and_anchors():
    inv = parse_inventory("""\
cluster: {name: c}
hosts:
  - &gpu {name: w-1, address: 10.0.0.21, roles: [worker], gpu: true}
  - <<: *gpu
    name: w-2
    address: 10.0.0.22
  - {name: cp-1, address: 10.0.0.11, roles: [control-plane]}
""")
    assert [(h.name, h.address, h.gpu) for h in inv.hosts] == [
        ("w-1", "10.0.0.21", True), ("w-2", "10.0.0.22", True), ("cp-1", "10.0.0.11", None)]


def test_local_connection_ignores_ssh_but_validates_it():
    inv = parse_inventory("""\
cluster: {name: c}
hosts:
  - {name: box, address: 127.0.0.1, connection: local, roles: [control-plane, worker]}
""")
    assert inv.hosts[0].connection == "local"
    assert problems_of("""\
        cluster: {name: c}
        hosts:
          - {name: box, address: localhost, connection: local, roles: [control-plane],
             ssh: {prot: 22}}
        """) == ["inv.yaml:4: hosts[0].ssh.prot: unknown key (did you mean 'port'?)"]


@pytest.mark.parametrize("endpoint, host, port", [
    ("10.0.0.10", "10.0.0.10", 6443),
    ("10.0.0.10:8443", "10.0.0.10", 8443),
    ("api.example.com", "api.example.com", 6443),
    ('"[fd00::10]:6443"', "fd00::10", 6443),
    ('"fd00::10"', "fd00::10", 6443),
])
def test_valid_endpoints(endpoint, host, port):
    inv = parse_inventory(f"cluster:\n  name: c\n  control_plane_endpoint: {endpoint}\n"
                          "hosts: [{name: a, address: a, roles: [control-plane]}]\n")
    assert (inv.cluster.endpoint_host, inv.cluster.endpoint_port) == (host, port)
