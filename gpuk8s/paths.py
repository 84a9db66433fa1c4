"""Every path on a host that gpuk8s writes, reads back or decides from: the one place they live.

The probe (facts/probe.sh) receives the managed files as arguments, so this list is the only copy.
"""

from __future__ import annotations

# kubeadm and the kubelet
KUBERNETES_DIR = "/etc/kubernetes"
ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
CA_CERT = "/etc/kubernetes/pki/ca.crt"
APISERVER_MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
ETCD_MEMBER_DIR = "/var/lib/etcd/member"
# kube-vip (cluster.vip): its static pod, and the kubeconfig it needs while `kubeadm init` runs
SUPER_ADMIN_CONF = "/etc/kubernetes/super-admin.conf"
KUBE_VIP_MANIFEST = "/etc/kubernetes/manifests/kube-vip.yaml"
# Files whose presence tells how far kubeadm got on a host (the probe reports which exist).
KUBERNETES_STATE_FILES = (ADMIN_CONF, KUBELET_CONF, CA_CERT, APISERVER_MANIFEST, ETCD_MEMBER_DIR)

# Files gpuk8s renders onto a host for kubeadm and for the Calico Installation.
GPUK8S_DIR = "/etc/gpuk8s"
KUBEADM_INIT_CONFIG = "/etc/gpuk8s/kubeadm-init.yaml"
KUBEADM_JOIN_CONFIG = "/etc/gpuk8s/kubeadm-join.yaml"
KUBEADM_TOKEN_CONFIG = "/etc/gpuk8s/kubeadm-token.yaml"   # kubeadm token create --config (temporary)
CALICO_INSTALLATION = "/etc/gpuk8s/calico-installation.yaml"

# Host preparation
MODULES_FILE = "/etc/modules-load.d/kubernetes.conf"
SYSCTL_FILE = "/etc/sysctl.d/99-kubernetes.conf"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
# The NVIDIA Container Toolkit's containerd drop-in (the GPU Operator's toolkit writes it; verify checks it)
CONTAINERD_DROP_IN = "/etc/containerd/conf.d/99-nvidia.toml"
FSTAB = "/etc/fstab"
SELINUX_CONFIG = "/etc/selinux/config"
NM_CALICO_CONF = "/etc/NetworkManager/conf.d/calico.conf"

# Package repositories
APT_KEYRINGS = "/etc/apt/keyrings"
K8S_APT_KEYRING = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg"
DOCKER_APT_KEYRING = "/etc/apt/keyrings/docker.asc"
K8S_APT_SOURCE = "/etc/apt/sources.list.d/kubernetes.list"
DOCKER_APT_SOURCE = "/etc/apt/sources.list.d/docker.list"
K8S_YUM_REPO = "/etc/yum.repos.d/kubernetes.repo"
DOCKER_YUM_REPO = "/etc/yum.repos.d/docker-ce.repo"

# CNI
CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONF_DIR = "/etc/cni/net.d"

# Files gpuk8s writes during `up` that the probe hashes (sha256), so a re-run decides without
# reading them again.
MANAGED_FILES = (
    MODULES_FILE, SYSCTL_FILE, CONTAINERD_CONFIG, K8S_APT_SOURCE, DOCKER_APT_SOURCE,
    K8S_YUM_REPO, DOCKER_YUM_REPO, NM_CALICO_CONF,
)
