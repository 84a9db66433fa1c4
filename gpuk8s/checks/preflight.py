"""The preflight check set: what `gpuk8s preflight` (and `up` before it changes anything) runs.

The area modules (host, fleet, network, runtime, gpu) register into PREFLIGHT; this order is
the order of `preflight --json` and of docs/checks.md.
"""

from __future__ import annotations

from gpuk8s.checks.base import CheckSet

PREFLIGHT_ORDER = (
    "privileged-access", "os-supported", "kernel-version", "cgroup-v2", "cpu-memory", "swap-off",
    "hostname-valid", "hostname-unique", "product-uuid-unique", "mac-unique",
    "kernel-modules", "ip-forward", "bridge-netfilter", "required-binaries", "time-sync",
    "ports-free", "firewall", "cidr-overlap", "node-ip", "endpoint-resolves",
    "endpoint-target", "vip-free", "vip-interface",
    "containerd-version", "containerd-cri-enabled", "containerd-systemd-cgroup",
    "containerd-config-version", "containerd-sandbox-image", "kube-tools-version", "helm",
    "cni-config-clean",
    "gpu-present", "nouveau-off", "secure-boot", "nvidia-driver", "gpu-driver-branch", "gpu-mig",
    "gpu-os-consistent", "gpu-driver-image", "unattended-upgrades",
)

PREFLIGHT = CheckSet("preflight", PREFLIGHT_ORDER)
