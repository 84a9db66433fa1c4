"""gpuk8s's GPU Operator values against the real chart (../shared/upstream/gpu-operator-v26.7.0).

The chart has no values schema, so Helm silently ignores a misspelt key. This test renders the
values gpuk8s writes for several inventories with the real `helm template`, validates the
resulting ClusterPolicy against the chart's CRD (openAPIV3Schema, with jsonschema, plus a strict
walk that refuses any field the structural schema would prune), and asserts that every key gpuk8s
sets exists in the chart's values.yaml. It installs helm with ../shared/tools/ensure-helm-kubectl
(cached) and never skips.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest
import yaml

from gpuk8s.inventory import parse_inventory
from gpuk8s.render.gpu import gpu_node, gpu_operator_values, offline_gpu_nodes

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
CHART = SHARED / "upstream" / "gpu-operator-v26.7.0"
ENSURE = SHARED / "tools" / "ensure-helm-kubectl"

HOSTS = """
hosts:
  - {name: cp, address: 10.0.0.1, roles: [control-plane]}
  - name: g1
    address: 10.0.0.2
    roles: [worker]
    gpu: {driver: host, time_slicing: {replicas: 8}, model: H100-SXM5-80GB, mig: {config: all-1g.10gb}}
  - {name: g2, address: 10.0.0.3, roles: [worker], gpu: {model: L4}}
"""

INVENTORIES = {
    "default": "cluster: {name: a}\nhosts: [{name: cp, address: 10.0.0.1, roles: [control-plane], gpu: true}]\n",
    "mixed-driver-time-slicing": "cluster: {name: b}\ngpu: {time_slicing: {replicas: 4}}\n" + HOSTS,
    "pinned-driver-mig-mixed": ("cluster: {name: c, kubernetes_version: \"1.34\"}\n"
                                "gpu: {driver_version: \"580.105.08\", mig: {strategy: mixed}}\n"
                                + HOSTS),
    "all-host-driver": ("cluster: {name: d}\ngpu: {driver: host}\n"
                        "hosts: [{name: cp, address: 10.0.0.1, roles: [control-plane], gpu: true}]\n"),
}


@functools.cache
def helm() -> str:
    out = subprocess.run([str(ENSURE)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"ensure-helm-kubectl failed: {out.stderr}"
    return str(Path(out.stdout.strip()) / "helm")


@functools.cache
def chart_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


@functools.cache
def clusterpolicy_schema() -> dict[str, Any]:
    crd = yaml.safe_load((CHART / "crds" / "nvidia.com_clusterpolicies.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return version["schema"]["openAPIV3Schema"]


def _paths(d: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path of nested mappings (lists are leaves)."""
    if isinstance(d, dict):
        for k, v in d.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))


def _has_path(d: Any, path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return False
        d = d[key]
    return True


def _pruned(obj: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Fields the API server would drop (unknown to a structural schema): misspelt keys."""
    out: list[str] = []
    if isinstance(obj, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return out
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for k, v in obj.items():
            if props is not None and k in props:
                out += _pruned(v, props[k], f"{where}.{k}")
            elif isinstance(extra, dict):
                out += _pruned(v, extra, f"{where}.{k}")
            elif props is not None:
                out.append(f"{where}.{k}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(obj):
            out += _pruned(v, schema["items"], f"{where}[{i}]")
    return out


def _values_for(name: str, text: str) -> tuple[Any, dict[str, Any]]:
    inv = parse_inventory(text, f"{name}.yaml")
    nodes = offline_gpu_nodes(inv)
    return inv, yaml.safe_load(gpu_operator_values(inv, inv.release, nodes,
                                                   nfd_running=name == "all-host-driver").content)


def _template(values: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump(values))
    out = subprocess.run([helm(), "template", "gpu-operator", str(CHART), "-n", "gpu-operator",
                          "-f", str(f)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("name", sorted(INVENTORIES))
def test_every_key_gpuk8s_sets_exists_in_the_chart(name):
    _, values = _values_for(name, INVENTORIES[name])
    missing = [".".join(p) for p in _paths(values) if not _has_path(chart_values(), p)]
    assert not missing, f"keys the chart does not have (Helm ignores them silently): {missing}"


@pytest.mark.parametrize("name", sorted(INVENTORIES))
def test_clusterpolicy_from_the_real_chart_matches_the_crd(name, tmp_path):
    inv, values = _values_for(name, INVENTORIES[name])
    docs = _template(values, tmp_path)
    policies = [d for d in docs if d.get("kind") == "ClusterPolicy"]
    assert len(policies) == 1
    cp = policies[0]
    jsonschema.validate(cp, clusterpolicy_schema())
    assert _pruned(cp, clusterpolicy_schema()) == []
    spec = cp["spec"]
    # What gpuk8s asked for reached the ClusterPolicy.
    assert spec["driver"]["enabled"] is values["driver"]["enabled"]
    if values["driver"]["enabled"]:
        assert spec["driver"]["kernelModuleType"] == values["driver"]["kernelModuleType"]
        assert spec["driver"]["version"] == values["driver"].get("version", "595.91.07")
    env = {e["name"]: e["value"] for e in spec["toolkit"]["env"]}
    assert env == {"CONTAINERD_CONFIG": "/etc/containerd/config.toml",
                   "RUNTIME_DROP_IN_CONFIG": "/etc/containerd/conf.d/99-nvidia.toml",
                   "CONTAINERD_SOCKET": "/run/containerd/containerd.sock",
                   "RUNTIME_CONFIG_SOURCE": "file=/etc/containerd/config.toml"}
    assert spec["devicePlugin"]["config"] == {"name": "gpuk8s-device-plugin-config",
                                              "default": "default"}
    assert spec["mig"]["strategy"] == (inv.gpu.mig.strategy if inv.gpu.mig else "single")
    # NFD comes from the chart's subchart unless gpuk8s found it running.
    nfd = [d for d in docs if "node-feature-discovery" in d["metadata"]["name"]]
    assert bool(nfd) is values["nfd"]["enabled"]


def test_a_misspelt_key_is_caught(tmp_path):
    """The checks above are not vacuous: a typo is reported by both."""
    _, values = _values_for("default", INVENTORIES["default"])
    values["driver"]["kernelModuleTyp"] = "open"
    assert not _has_path(chart_values(), ("driver", "kernelModuleTyp"))
    cp = next(d for d in _template(values, tmp_path) if d.get("kind") == "ClusterPolicy")
    assert "kernelModuleTyp" not in cp["spec"]["driver"]           # silently ignored by Helm
    cp["spec"]["driver"]["kernelModuleTyp"] = "open"
    assert _pruned(cp, clusterpolicy_schema()) == [".spec.driver.kernelModuleTyp"]
    cp["spec"]["driver"]["kernelModuleType"] = "opn"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cp, clusterpolicy_schema())


def test_values_from_facts_for_a_host_driver_cluster(tmp_path):
    inv = parse_inventory(INVENTORIES["mixed-driver-time-slicing"], "inv.yaml")
    nodes = [gpu_node(inv, "g1", driver_mode="host", gpu_count=8, models=["H100-SXM5-80GB"]),
             gpu_node(inv, "g2", driver_mode="host", gpu_count=1, models=["L4"])]
    values = yaml.safe_load(gpu_operator_values(inv, inv.release, nodes, nfd_running=True).content)
    assert values["driver"] == {"enabled": False}
    cp = next(d for d in _template(values, tmp_path) if d.get("kind") == "ClusterPolicy")
    jsonschema.validate(cp, clusterpolicy_schema())
    assert cp["spec"]["driver"]["enabled"] is False
