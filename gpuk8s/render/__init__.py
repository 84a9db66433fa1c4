"""Render every file gpuk8s puts on a host or applies to the cluster: pure, no network, no SSH.

One module per artifact: kubeadm, containerd, packages (repositories), calico, host (sysctl,
modules, NetworkManager), gpu (GPU Operator values, device-plugin ConfigMap, CUDA smoke Jobs), tree (everything, and writing it out); base holds what they share and
placeholders what a dry run or offline render uses instead of live values.

Templates live in templates/ (Jinja2, StrictUndefined). User values reach a YAML template only
through the `yaml` filter, which emits a quoted scalar that round-trips through yaml.safe_load;
plain-text templates (apt/yum repositories) only take values through `line`, which refuses
control characters. Secrets go into file content only; RenderedFile.masked() shows them as ***.

The names callers use are re-exported here.
"""

from __future__ import annotations

from gpuk8s.inventory import API_SERVER_PORT
from gpuk8s.paths import (CNI_BIN_DIR, CNI_CONF_DIR, CONTAINERD_CONFIG, KUBEADM_INIT_CONFIG,
                          KUBEADM_JOIN_CONFIG, MODULES_FILE, SYSCTL_FILE)
from gpuk8s.render.base import (ClusterSecrets, RenderedFile, plain_line, render_template,
                                template_text, yaml_scalar)
from gpuk8s.render.calico import CALICO_INSTALLATION, calico_installation, calico_manifest_urls
from gpuk8s.render.containerd import containerd_config, containerd_config_file, tomllib
from gpuk8s.render.gpu import (CUDA_SMOKE_DIR, DEVICE_PLUGIN_CONFIG, GPU_OPERATOR_VALUES, GPUNode,
                               cuda_smoke_job, device_plugin_config, gpu_files, gpu_node,
                               gpu_node_labels, gpu_operator_namespace, gpu_operator_values,
                               offline_gpu_nodes)
from gpuk8s.render.host import modules_file, networkmanager_calico_file, sysctl_file
from gpuk8s.render.kubeadm import (CONTROL_PLANE_TAINT_KEY, kubeadm_init_config, kubeadm_join_config,
                                   kubeadm_token_config,
                                   node_labels_after_join, node_labels_for_kubelet)
from gpuk8s.render.packages import (docker_key_url, docker_repo_file, os_family_of,
                                    package_key_url, package_repo_file, package_repo_url)
from gpuk8s.render.placeholders import PLACEHOLDER_CA_HASH, PLACEHOLDER_SECRETS, containerd_default
from gpuk8s.render.tree import render_all, write_tree
from gpuk8s.versions import native_config_version



__all__ = [
    "API_SERVER_PORT", "CALICO_INSTALLATION", "CNI_BIN_DIR", "CUDA_SMOKE_DIR",
    "DEVICE_PLUGIN_CONFIG", "GPUNode", "GPU_OPERATOR_VALUES", "cuda_smoke_job",
    "device_plugin_config", "gpu_files", "gpu_node", "gpu_node_labels", "gpu_operator_namespace",
    "gpu_operator_values", "offline_gpu_nodes",
    "CNI_CONF_DIR", "CONTAINERD_CONFIG", "CONTROL_PLANE_TAINT_KEY", "ClusterSecrets",
    "KUBEADM_INIT_CONFIG", "KUBEADM_JOIN_CONFIG", "MODULES_FILE", "PLACEHOLDER_CA_HASH",
    "PLACEHOLDER_SECRETS", "RenderedFile", "SYSCTL_FILE", "calico_installation",
    "calico_manifest_urls", "containerd_config", "containerd_config_file", "containerd_default",
    "docker_key_url", "docker_repo_file", "kubeadm_init_config",
    "kubeadm_join_config", "kubeadm_token_config", "modules_file", "native_config_version",
    "networkmanager_calico_file", "node_labels_after_join", "node_labels_for_kubelet",
    "os_family_of", "package_key_url", "package_repo_file", "package_repo_url", "plain_line",
    "render_all", "render_template",
    "sysctl_file", "template_text", "tomllib", "write_tree", "yaml_scalar",
]
