"""The GPU layer's files: GPU Operator values, device-plugin ConfigMap, namespace, CUDA smoke Jobs.

Pure functions of the inventory and, for `up`, of what preflight found per GPU node (`GPUNode`,
built by `gpu_node()` from facts; `offline_gpu_nodes()` when nothing is known: `render`). Node
labels gpuk8s sets are a pure function too (`gpu_node_labels`). Values reach the YAML through the
`yaml` filter; the values file holds only keys the chart's values.yaml has (tests/unit/
test_gpu_chart.py renders it with the real chart and validates the ClusterPolicy against the CRD).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Iterable

from gpuk8s import gpu_models
from gpuk8s.errors import UsageError
from gpuk8s.inventory import GPUSpec, Inventory, Taint
from gpuk8s.paths import CONTAINERD_CONFIG
from gpuk8s.render.base import RenderedFile, render_template
from gpuk8s.versions import GPU_OPERATOR_NAMESPACE, Release, cuda_image_for

GPU_OPERATOR_VALUES = "cluster/gpu-operator-values.yaml"
DEVICE_PLUGIN_CONFIG = "cluster/device-plugin-config.yaml"
GPU_OPERATOR_NAMESPACE_FILE = "cluster/gpu-operator-namespace.yaml"
CUDA_SMOKE_DIR = "cluster/cuda-smoke"

DEVICE_PLUGIN_CONFIGMAP = "gpuk8s-device-plugin-config"
DEVICE_PLUGIN_DEFAULT_KEY = "default"
# Where the toolkit finds containerd (DOMAIN 3.4). The drop-in directory must be in the root
# config's `imports` (render/containerd.py keeps imports; the containerd slice adds conf.d).
CONTAINERD_DROP_IN = "/etc/containerd/conf.d/99-nvidia.toml"
CONTAINERD_DROP_IN_DIR = "/etc/containerd/conf.d"
# The root config imports every drop-in there (containerd expands the glob; 2.3's own default
# carries the same entry). nvidia-ctk adds this directory to `imports` itself (DOMAIN 3.3).
CONTAINERD_IMPORTS_GLOB = CONTAINERD_DROP_IN_DIR + "/*.toml"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"

LABEL_DEPLOY_DRIVER = "nvidia.com/gpu.deploy.driver"
LABEL_DEVICE_PLUGIN_CONFIG = "nvidia.com/device-plugin.config"
LABEL_MIG_CONFIG = "nvidia.com/mig.config"

SMOKE_BACKOFF_LIMIT = 1
SMOKE_DEADLINE_S = 600
SMOKE_TTL_S = 600
SMOKE_PASS_LINE = "Test PASSED"
SMOKE_SCRIPT = ("set -e; echo '== nvidia-smi -L'; nvidia-smi -L; echo '== vectorAdd'; "
                "/cuda-samples/vectorAdd > /tmp/vectoradd.log 2>&1 || "
                "{ cat /tmp/vectoradd.log; exit 1; }; cat /tmp/vectoradd.log; "
                f"grep -q '{SMOKE_PASS_LINE}' /tmp/vectoradd.log")


@dataclass(frozen=True)
class GPUNode:
    """One GPU node as the GPU layer sees it."""

    name: str
    spec: GPUSpec                       # inventory.gpu_for(host): the merged settings
    driver_mode: str                    # "host" (working host driver) | "container"
    taints: tuple[Taint, ...] = ()
    gpu_count: int | None = None        # GPUs on the PCI bus (preflight); None: unknown
    models: tuple[str, ...] = ()        # gpu_models names found (or the inventory's hint)
    cuda_version: str | None = None     # CUDA version the host driver supports (nvidia-smi)
    driver_version: str | None = None   # host driver version

    @property
    def gpu_models(self) -> list[gpu_models.GPUModel]:
        return [m for n in self.models if (m := gpu_models.model_by_name(n))]


def gpu_node(inv: Inventory, host: Any, *, driver_mode: str, gpu_count: int | None = None,
             models: Iterable[str] = (), cuda_version: str | None = None,
             driver_version: str | None = None) -> GPUNode:
    """A GPUNode for a host (HostSpec or name) from what preflight found."""
    spec = inv.host(host) if isinstance(host, str) else host
    gpu = inv.gpu_for(spec)
    found = tuple(dict.fromkeys(models)) or ((gpu.model,) if gpu.model else ())
    return GPUNode(spec.name, gpu, driver_mode, tuple(spec.taints), gpu_count, found,
                   cuda_version, driver_version)


def offline_gpu_nodes(inv: Inventory) -> list[GPUNode]:
    """The declared GPU nodes with nothing found yet: `driver: auto` means the driver
    container unless the host says `host`."""
    return [gpu_node(inv, h, driver_mode="host" if inv.gpu_for(h).driver == "host"
                     else "container")
            for h in inv.declared_gpu_hosts]


# ---- driver ---------------------------------------------------------------------------------

def driver_enabled(nodes: list[GPUNode]) -> bool:
    """The driver container is needed unless every GPU node has a working host driver."""
    return not nodes or any(n.driver_mode != "host" for n in nodes)


def kernel_module_type(nodes: list[GPUNode]) -> str:
    """driver.kernelModuleType from the GPUs of the driver-container nodes: `open` when one
    needs the open modules (Blackwell), `proprietary` when one needs those (Volta), else `auto`
    (the driver picks). Both at once cannot be one ClusterPolicy: UsageError."""
    need = {m.kernel_module for n in nodes if n.driver_mode != "host" for m in n.gpu_models}
    need.discard("any")
    if len(need) > 1:
        raise UsageError("the driver-container GPU nodes need both the open (Blackwell) and the "
                         "proprietary (Volta) NVIDIA kernel modules; one ClusterPolicy has one "
                         "kernelModuleType: install the driver on one group (gpu: {driver: host})")
    return need.pop() if need else "auto"


# ---- device plugin --------------------------------------------------------------------------

def _plugin_config(spec: GPUSpec, mig_strategy: str) -> dict[str, Any]:
    ts = spec.time_slicing
    return {"mig_strategy": mig_strategy,
            "replicas": ts.replicas if ts else None,
            "rename_by_default": ts.rename_by_default if ts else False}


def _config_key(cfg: dict[str, Any]) -> str:
    if not cfg["replicas"]:
        return "no-sharing"
    return f"time-slicing-{cfg['replicas']}" + ("-renamed" if cfg["rename_by_default"] else "")


def mig_strategy(inv: Inventory) -> str:
    return (inv.gpu.mig.strategy if inv.gpu.mig else "single")


def device_plugin_configs(inv: Inventory, nodes: list[GPUNode]
                          ) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, str]]:
    """([(data key, config)], node name -> key for nodes whose config is not the default)."""
    strategy = mig_strategy(inv)
    default = _plugin_config(inv.gpu, strategy)
    configs = [(DEVICE_PLUGIN_DEFAULT_KEY, default)]
    per_node: dict[str, str] = {}
    for n in nodes:
        cfg = _plugin_config(n.spec, strategy)
        if cfg == default:
            continue
        key = _config_key(cfg)
        if key not in dict(configs):
            configs.append((key, cfg))
        per_node[n.name] = key
    return configs, per_node


def device_plugin_config(inv: Inventory, nodes: list[GPUNode]) -> RenderedFile:
    """cluster/device-plugin-config.yaml: the ConfigMap devicePlugin.config names."""
    configs, _ = device_plugin_configs(inv, nodes)
    content = render_template("gpu/device-plugin-config.yaml.j2", configmap=DEVICE_PLUGIN_CONFIGMAP,
                              namespace=GPU_OPERATOR_NAMESPACE, configs=configs)
    return RenderedFile(DEVICE_PLUGIN_CONFIG, content)


# ---- labels ---------------------------------------------------------------------------------

def gpu_node_labels(inv: Inventory, node: GPUNode) -> dict[str, str | None]:
    """The labels gpuk8s sets on one GPU node; None means "remove the label" (a node back at the
    default device-plugin config, or back on the driver container)."""
    _, per_node = device_plugin_configs(inv, [node])
    labels: dict[str, str | None] = {
        LABEL_DEPLOY_DRIVER: "false" if node.driver_mode == "host" else None,
        LABEL_DEVICE_PLUGIN_CONFIG: per_node.get(node.name),
    }
    if node.spec.mig is not None:
        labels[LABEL_MIG_CONFIG] = node.spec.mig.config
    return labels


# ---- values ---------------------------------------------------------------------------------

def gpu_operator_values(inv: Inventory, release: Release, nodes: list[GPUNode], *,
                        nfd_running: bool = False) -> RenderedFile:
    """cluster/gpu-operator-values.yaml for `helm upgrade --install -f`."""
    enabled = driver_enabled(nodes)
    content = render_template(
        "gpu/gpu-operator-values.yaml.j2",
        chart_version=release.gpu_operator,
        nfd_enabled=not nfd_running,
        driver_enabled=enabled,
        driver_version=inv.gpu.driver_version,
        kernel_module_type=kernel_module_type(nodes) if enabled else "auto",
        containerd_config=CONTAINERD_CONFIG,
        containerd_drop_in=CONTAINERD_DROP_IN,
        containerd_socket=CONTAINERD_SOCKET,
        device_plugin_config=DEVICE_PLUGIN_CONFIGMAP,
        device_plugin_default=DEVICE_PLUGIN_DEFAULT_KEY,
        mig_strategy=mig_strategy(inv),
    )
    return RenderedFile(GPU_OPERATOR_VALUES, content)


def gpu_operator_namespace() -> RenderedFile:
    content = render_template("gpu/namespace.yaml.j2", namespace=GPU_OPERATOR_NAMESPACE)
    return RenderedFile(GPU_OPERATOR_NAMESPACE_FILE, content)


# ---- CUDA smoke Job -------------------------------------------------------------------------

def smoke_job_name(node: str) -> str:
    """gpuk8s-cuda-smoke-<node>, shortened with a hash when the node name is long (63)."""
    base = f"gpuk8s-cuda-smoke-{node.replace('.', '-')}"
    if len(base) <= 63:
        return base
    digest = hashlib.sha256(node.encode()).hexdigest()[:8]
    return f"{base[:54].rstrip('-')}-{digest}"


def smoke_resource(inv: Inventory, node: GPUNode) -> str:
    """The extended resource the smoke pod asks for on this node."""
    mig = node.spec.mig
    if mig and gpu_models.mig_enabled(mig.config) and mig_strategy(inv) == "mixed":
        profile = gpu_models.mig_config_profile(mig.config)
        if profile:
            return f"nvidia.com/mig-{profile}"
    ts = node.spec.time_slicing
    if ts and ts.rename_by_default:
        return "nvidia.com/gpu.shared"
    return "nvidia.com/gpu"


def smoke_image(release: Release, node: GPUNode) -> str:
    image = cuda_image_for(release, cuda_version=node.cuda_version,
                           driver_version=node.driver_version if node.driver_mode == "host"
                           else node.spec.driver_version)
    if image is None:
        raise UsageError(f"{node.name}: driver {node.driver_version or '?'} (CUDA "
                         f"{node.cuda_version or '?'}) is older than every CUDA smoke image "
                         "gpuk8s knows; set versions.cuda_image or gpu.smoke_test: false")
    return image


def cuda_smoke_job(inv: Inventory, release: Release, node: GPUNode,
                   gpus: int | None = None) -> RenderedFile:
    """cluster/cuda-smoke/<node>.yaml: a Job pinned to the node (kubernetes.io/hostname),
    tolerating its taints, asking for `gpus` devices (default: every GPU found, else 1)."""
    count = gpus or node.gpu_count or 1
    label = node.name if len(node.name) <= 63 else smoke_job_name(node.name)[-63:]
    content = render_template(
        "gpu/cuda-smoke-job.yaml.j2",
        job_name=smoke_job_name(node.name), namespace=GPU_OPERATOR_NAMESPACE, node=node.name,
        node_label=re.sub(r"[^A-Za-z0-9._-]", "-", label).strip("-._"),
        hostname=node.name, tolerations=list(node.taints),
        image=smoke_image(release, node), script=SMOKE_SCRIPT,
        resource=smoke_resource(inv, node), gpus=count,
        backoff_limit=SMOKE_BACKOFF_LIMIT, deadline=SMOKE_DEADLINE_S, ttl=SMOKE_TTL_S)
    return RenderedFile(f"{CUDA_SMOKE_DIR}/{node.name}.yaml", content)


def gpu_files(inv: Inventory, release: Release, nodes: list[GPUNode] | None = None, *,
              nfd_running: bool = False) -> list[RenderedFile]:
    """Every GPU-layer file: namespace, device-plugin ConfigMap, values, one smoke Job per GPU
    node with smoke_test on."""
    nodes = offline_gpu_nodes(inv) if nodes is None else nodes
    files = [gpu_operator_namespace(), device_plugin_config(inv, nodes),
             gpu_operator_values(inv, release, nodes, nfd_running=nfd_running)]
    files += [cuda_smoke_job(inv, release, n) for n in nodes if n.spec.smoke_test]
    return files
