"""What `gpuk8s kubeconfig --user` puts on a control plane: kubeadm's config and the user's
ClusterRoleBinding (templates/kubeconfig/)."""

from __future__ import annotations

from typing import Any

from gpuk8s.paths import GPUK8S_DIR
from gpuk8s.render.base import RenderedFile, render_template
from gpuk8s.render.kubeadm import _kubeadm_api

# The file `kubeadm kubeconfig user --config` reads (temporary: removed after the command).
KUBEADM_USER_CONFIG = f"{GPUK8S_DIR}/kubeadm-kubeconfig-user.yaml"


def binding_name(user: str) -> str:
    return f"gpuk8s:user:{user}"


def binding_path(user: str) -> str:
    return f"{GPUK8S_DIR}/rbac/user-{user}.yaml"


def user_binding(user: str, role: str, host: str | None = None) -> RenderedFile:
    """The ClusterRoleBinding of `user` to the ClusterRole `role`."""
    return RenderedFile(binding_path(user), render_template(
        "kubeconfig/user-binding.yaml.j2", binding=binding_name(user), role=role, user=user), host=host)


def kubeadm_user_config(inv: Any, host: str | None = None) -> RenderedFile:
    """A ClusterConfiguration naming the cluster and its endpoint for `kubeadm kubeconfig user`."""
    release = inv.release
    return RenderedFile(KUBEADM_USER_CONFIG, render_template(
        "kubeconfig/user-config.yaml.j2", api_version=f"kubeadm.k8s.io/{_kubeadm_api(release)}", cluster_name=inv.cluster.name,
        endpoint=inv.control_plane_endpoint, kubernetes_version="v" + release.patch),
        mode=0o600, host=host)
