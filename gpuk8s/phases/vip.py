"""cluster.vip: kube-vip as a static pod on every control plane (ARP mode), docs/ha.md.

Order, as kube-vip's documentation gives it (kube-vip.io/docs/installation/static) and as
kubeadm's preflight requires (cmd/kubeadm/app/preflight/checks.go):
- first control plane: the manifest goes into /etc/kubernetes/manifests *before* `kubeadm init`
  (init's preflight checks only the files it writes itself: FileAvailable--...-kube-apiserver.yaml
  and the other three), so the kubelet starts kube-vip with the control plane and the VIP, which
  is the controlPlaneEndpoint, answers before init needs it. During init the manifest mounts
  super-admin.conf (kube-vip/kube-vip#684: from Kubernetes 1.29 admin.conf has no rights until
  init has created its ClusterRoleBinding); right after init it mounts admin.conf again.
- joining control planes: the manifest goes in *after* `kubeadm join` (join's preflight has
  DirAvailable--etc-kubernetes-manifests: the directory must be empty), with admin.conf, which
  join writes on control planes (super-admin.conf exists only where init ran).
Every write is a `put_file` (gated, idempotent: an unchanged manifest is not written again).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuk8s.paths import KUBELET_CONF
from gpuk8s.phases.base import Context, Phase, PhaseResult
from gpuk8s.render.kubevip import kube_vip_manifest

if TYPE_CHECKING:
    from gpuk8s.host import Host


def enabled(ctx: Context) -> bool:
    return ctx.inventory.cluster.vip is not None


def before_init(ctx: Context, host: "Host") -> None:
    """The first control plane, right before `kubeadm init`: the init-time manifest."""
    if not enabled(ctx):
        return
    host.put_file(kube_vip_manifest(ctx.inventory, ctx.release, during_init=True, host=host.name),
                  "write the kube-vip static pod (reads super-admin.conf while kubeadm init runs)")


def after_init(ctx: Context, host: "Host") -> None:
    """The first control plane once init is done (or found done): the manifest reads admin.conf."""
    if not enabled(ctx):
        return
    host.put_file(kube_vip_manifest(ctx.inventory, ctx.release, host=host.name),
                  "switch kube-vip to admin.conf (super-admin.conf only while kubeadm init ran)")


def install(ctx: Context, hosts: list["Host"]) -> list[str]:
    """The manifest (admin.conf) on control planes that have joined; names of those changed."""
    changed = []
    for host in ctx.live([h for h in hosts if h.is_control_plane]):
        if not ctx.dry_run and not host.has_file(KUBELET_CONF):
            continue                        # not joined (a failed join): kubeadm would refuse later
        if host.put_file(kube_vip_manifest(ctx.inventory, ctx.release, host=host.name),
                         "write the kube-vip static pod (after kubeadm join)"):
            changed.append(host.name)
    return changed


class InstallKubeVip(Phase):
    """After JoinControlPlanes: kube-vip on every control plane (the first one has it already)."""

    title = "install kube-vip"

    def applies(self, ctx: Context) -> bool:
        return enabled(ctx)

    def run(self, ctx: Context) -> PhaseResult:
        # `up` and `join` alike: every control plane of this run but the first (init's host)
        # (live: `join` leaves the nodes it does not work on alone, and connects to none of them)
        cps = [h for h in ctx.live() if h.is_control_plane and h.name != ctx.first_cp.name]
        changed = install(ctx, cps)
        vip = ctx.inventory.cluster.vip
        note = (f"kube-vip on {', '.join(changed)}" if changed else
                "kube-vip present on every control plane")
        return PhaseResult(self.title, notes=[f"{note} (VIP {vip.address} on {vip.interface})"])
