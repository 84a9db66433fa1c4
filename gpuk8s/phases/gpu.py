"""The GPU layer of `up`: Helm, the NVIDIA GPU Operator, its rollout (with diagnosis), CUDA smoke tests.

Every phase decides from facts and the cluster's own state (helm list / get values, the
ConfigMap, node labels), so a second `up` on a finished GPU cluster makes no Helm call and no
change. Background: ../shared/docs/DOMAIN.md 3.3-3.4, 5 and 6; docs/gpu.md.

- `InstallHelm`: the pinned Helm on the first control plane (download or the inventory's local
  archive over stdin), checksum-verified, in /usr/local/bin/helm.
- `InstallGPUOperator`: namespace (privileged), device-plugin ConfigMap, values file under
  /etc/gpuk8s/, `helm upgrade --install`; per-node labels (driver mode, device-plugin config,
  MIG); after a ConfigMap change the device plugin is restarted (the operator does not watch it).
- `LabelGPUNodes`: the same labels on GPU nodes that joined after the operator was installed.
- `WaitGPUOperator`: ClusterPolicy `ready` and the validator done on every GPU node; a failure is
  diagnosed from the operand pods' logs and events (known signatures -> a concrete fix); then
  `containerd config dump` must show the `nvidia` runtime on every GPU node.
- `SmokeTestGPUs`: one CUDA Job per GPU node, all at once; "Test PASSED" and `nvidia-smi -L`
  lines == the GPUs preflight found (or the MIG devices); the Jobs are deleted in the cleanup.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import yaml

from gpuk8s import gpu_models
from gpuk8s.checks.gpu import driver_mode as facts_driver_mode
from gpuk8s.errors import UsageError, VerificationError, WaitTimeout
from gpuk8s.facts.runtime import has_nvidia_runtime
from gpuk8s.facts.cluster import (allocatable, clusterpolicy_state, get_objects, helm,
                                  helm_release, helm_values, kubectl, list_objects, name_of, node_labels)
from gpuk8s.gate import Change
from gpuk8s.host import Host
from gpuk8s.paths import GPUK8S_DIR, KUBELET_CONF
from gpuk8s.phases.base import Context, Phase, PhaseResult, poll
from gpuk8s.phases.cluster import _bootstrapped, cluster
from gpuk8s.render.base import RenderedFile
from gpuk8s.runner import call_in_thread, for_each_host, wait_thread
from gpuk8s.render.gpu import (DEVICE_PLUGIN_CONFIGMAP, LABEL_DEPLOY_DRIVER, SMOKE_PASS_LINE,
                               GPUNode, cuda_smoke_job, device_plugin_config, gpu_node,
                               gpu_node_labels, gpu_operator_namespace, gpu_operator_values,
                               smoke_job_name, smoke_resource)
from gpuk8s.shell import Cmd
from gpuk8s.versions import (GPU_OPERATOR_DEFAULT_DRIVER, GPU_OPERATOR_NAMESPACE,
                             GPU_OPERATOR_RELEASE_NAME, GPU_OPERATOR_REPO, helm_arch,
                             helm_archive_url, helm_checksum)

NS = GPU_OPERATOR_NAMESPACE
HELM_BIN = "/usr/local/bin/helm"
HELM_ARCHIVE_TMP = f"{GPUK8S_DIR}/helm-archive.b64"          # temporary: removed after the install
CHART_ARCHIVE = f"{GPUK8S_DIR}/gpu-operator-chart.tgz"
NAMESPACE_FILE = f"{GPUK8S_DIR}/gpu-operator-namespace.yaml"
CONFIGMAP_FILE = f"{GPUK8S_DIR}/device-plugin-config.yaml"
VALUES_FILE = f"{GPUK8S_DIR}/gpu-operator-values.yaml"
SMOKE_DIR = f"{GPUK8S_DIR}/cuda-smoke"
DEVICE_PLUGIN_DS = "nvidia-device-plugin-daemonset"   # NVIDIA/gpu-operator state-device-plugin
VALIDATOR_APP = "nvidia-operator-validator"            # app= label of the validator DaemonSet's pods
CLUSTER_POLICY = "clusterpolicies.nvidia.com"
HELM_TIMEOUT = 600.0
SMOKE_LABEL = "app.kubernetes.io/name=gpuk8s-cuda-smoke"
# GFD's driver version labels (NVIDIA/k8s-device-plugin docs/gfd_labels.md)
GFD_DRIVER = ("nvidia.com/cuda.driver.major", "nvidia.com/cuda.driver.minor", "nvidia.com/cuda.driver.rev")
GFD_PRODUCT = "nvidia.com/gpu.product"
GPU_PRESENT = "nvidia.com/gpu.present"

# Download ($1 url), verify ($2 sha256), unpack and install linux-$3/helm as $4; a temporary
# directory removed whatever happens. Arguments, never spliced into the script.
_HELM_FETCH = ('set -e; t=$(mktemp -d); trap \'rm -rf -- "$t"\' EXIT; '
               'curl -fsSL -o "$t/helm.tgz" -- "$1"; '
               'printf "%s  %s\\n" "$2" "$t/helm.tgz" | sha256sum -c - >/dev/null; '
               'tar -xzf "$t/helm.tgz" -C "$t"; install -m 0755 "$t/linux-$3/helm" "$4"')
# The same from the base64 archive gpuk8s wrote at $1 (the inventory's versions.helm_archive).
_HELM_LOCAL = ('set -e; t=$(mktemp -d); trap \'rm -rf -- "$t"\' EXIT; '
               'base64 -d < "$1" > "$t/helm.tgz"; '
               'printf "%s  %s\\n" "$2" "$t/helm.tgz" | sha256sum -c - >/dev/null; '
               'tar -xzf "$t/helm.tgz" -C "$t"; install -m 0755 "$t/linux-$3/helm" "$4"')
# A chart archive from base64 ($1) to $2.
_CHART_LOCAL = 'set -e; umask 022; base64 -d < "$1" > "$2.gpuk8s-new"; mv -f -- "$2.gpuk8s-new" "$2"'


# ---- which nodes, in which mode --------------------------------------------------------------

def is_gpu_host(host: Host) -> bool:
    """A GPU node: declared (`gpu: true` or a mapping) or GPUs found, unless `gpu: false`."""
    if host.spec.gpu is False:
        return False
    return bool(host.spec.gpu or (host.facts is not None and host.facts.gpus))


def gpu_hosts(ctx: Context) -> list[Host]:
    return [h for h in ctx.live() if is_gpu_host(h)]


def _managed_by_operator(node: dict | None) -> bool:
    """The operator already runs its driver container here: a loaded nvidia module on such a node
    is the container's, not a host driver (our own label says which nodes have a host driver)."""
    labels = node_labels(node) if node else {}
    return labels.get(GPU_PRESENT) == "true" and labels.get(LABEL_DEPLOY_DRIVER) != "false"


def _facts_at_start(ctx: Context, host: Host):
    """The host's facts as this run's preflight found them, before anything here changed it."""
    report = ctx.state.preflight
    first = next((h.facts for h in report.hosts if h.name == host.name), None) if report else None
    return first or host.facts


def node_of(ctx: Context, host: Host, nodes: dict[str, dict]) -> GPUNode:
    """The GPUNode of a host from its facts (driver mode per node, DOMAIN 5.2).

    The mode is decided from the facts at the start of the run: a host that joins in this run
    may get the operator's labels before gpuk8s labels it, and its host driver must not be
    mistaken for the operator's. Only a host that was already a node is judged by its labels."""
    f = host.facts
    first = _facts_at_start(ctx, host)
    spec = ctx.inventory.gpu_for(host.spec)
    node = nodes.get(host.name)
    was_node = first is not None and KUBELET_CONF in first.kubernetes_files
    if spec.driver in ("host", "container") or f is None:
        mode = spec.driver if spec.driver in ("host", "container") else "container"
    elif was_node and _managed_by_operator(node):
        mode = "container"
    else:
        mode = facts_driver_mode(ctx.inventory, first, host.spec)
    models = [m.name for g in (f.gpus if f else []) if (m := gpu_models.model_by_device_id(g.device_id))]
    return gpu_node(ctx.inventory, host.spec, driver_mode=mode,
                    gpu_count=len(f.gpus) if f and f.gpus else None, models=models,
                    driver_version=f.nvidia_driver_version if f else None)


def _nodes(ctx: Context) -> dict[str, dict]:
    if ctx.dry_run and not _bootstrapped(ctx):
        return {}
    return cluster(ctx).nodes()


def _helm_ok(ctx: Context) -> bool:
    f = ctx.first_cp.facts
    return f is not None and f.helm_version == ctx.release.helm


def _on_cp(f: RenderedFile, path: str, host: Host) -> RenderedFile:
    return RenderedFile(path, f.content, host=host.name)


def _archive_file(path: str, data: bytes) -> RenderedFile:
    """A local archive as the stdin of a Change (base64; a plan shows *** rather than megabytes)."""
    text = base64.b64encode(data).decode()
    return RenderedFile(path, text, mode=0o600, secret_values=(text,))


# ---- Helm -----------------------------------------------------------------------------------

class GPUPhase(Phase):
    """A phase of the GPU layer: it runs only when the inventory or the facts have GPU nodes."""

    def applies(self, ctx: Context) -> bool:
        return bool(gpu_hosts(ctx))


class InstallHelm(GPUPhase):
    title = "install Helm"

    def run(self, ctx: Context) -> PhaseResult:
        host = ctx.first_cp
        rel = ctx.release
        if _helm_ok(ctx):
            return PhaseResult(self.title, notes=[f"{host.name}: helm {rel.helm} installed"])
        arch = helm_arch(host.facts.arch if host.facts else None)
        if arch is None:
            raise UsageError(f"{host.name}: no Helm build for architecture "
                             f"{(host.facts.arch if host.facts else None) or 'unknown'}")
        sha = helm_checksum(rel, arch)
        if not sha:
            raise UsageError(f"no sha256 known for Helm {rel.helm} linux-{arch}: set versions.helm_sha256")
        hint = (f"the Helm {rel.helm} archive's sha256 must be {sha} (versions.helm_sha256 / the pin "
                "in gpuk8s/versions.py); a mismatch means a corrupt or substituted download")
        what = f"install Helm {rel.helm} (linux-{arch}, sha256 verified) to {HELM_BIN}"
        if rel.helm_archive:
            data = Path(rel.helm_archive).expanduser().read_bytes()
            host.apply(Change(host.name, what + f" from {rel.helm_archive}",
                              Cmd("sh", "-c", _HELM_LOCAL, "gpuk8s-helm", HELM_ARCHIVE_TMP, sha, arch, HELM_BIN),
                              file=_archive_file(HELM_ARCHIVE_TMP, data), temporary=True,
                              timeout=300, hint=hint))
        else:
            host.change(what, Cmd("sh", "-c", _HELM_FETCH, "gpuk8s-helm", helm_archive_url(rel.helm, arch),
                                  sha, arch, HELM_BIN), timeout=300, hint=hint)
        if not ctx.dry_run:
            from gpuk8s.facts.runtime import parse_kube_version

            got = parse_kube_version(host.read(Cmd(HELM_BIN, "version", "--short")).stdout)
            if got != rel.helm:
                raise VerificationError(host.name, f"`{HELM_BIN} version --short`", str(got),
                                        f"expected Helm {rel.helm}")
            if host.facts is not None:
                host.facts.helm_version = got
        return PhaseResult(self.title)


# ---- the operator ---------------------------------------------------------------------------

def _values_of(f: RenderedFile) -> dict:
    return yaml.safe_load(f.content) or {}


def _chart_version(entry: dict | None) -> str | None:
    """`gpu-operator-v26.7.0` (helm list's chart column) -> `v26.7.0`."""
    chart = (entry or {}).get("chart") or ""
    prefix = "gpu-operator-"
    return chart[len(prefix):] if chart.startswith(prefix) else None


def _nfd_running(nodes: dict[str, dict], current: dict | None) -> bool:
    """NFD already runs: keep what our release said (its own NFD labels the nodes); else any
    feature.node.kubernetes.io/ label on a node (DOMAIN 5.1)."""
    if current is not None and isinstance(current.get("nfd"), dict) and "enabled" in current["nfd"]:
        return not current["nfd"]["enabled"]
    return any(k.startswith("feature.node.kubernetes.io/") for n in nodes.values() for k in node_labels(n))


def label_gpu_nodes(ctx: Context, gnodes: list[GPUNode], nodes: dict[str, dict]) -> int:
    """Set the labels gpuk8s owns on GPU nodes that are registered; only what differs. Nodes that
    need the same changes get them in one `kubectl label node A B ... K=V` (kubectl label takes
    several resources before its pairs); returns how many node labels changed."""
    cp = ctx.first_cp
    groups: dict[tuple[str, ...], list[str]] = {}
    for gn in gnodes:
        if gn.name not in nodes:
            continue   # not joined yet: LabelGPUNodes labels it after the joins
        have = node_labels(nodes[gn.name])
        pairs = []
        for key, value in sorted(gpu_node_labels(ctx.inventory, gn).items()):
            if value is None and key in have:
                pairs.append(f"{key}-")
            elif value is not None and have.get(key) != value:
                pairs.append(f"{key}={value}")
        if pairs:
            groups.setdefault(tuple(pairs), []).append(gn.name)
    count = 0
    for pairs, names in groups.items():
        cp.change(f"label node{'s' if len(names) > 1 else ''} {', '.join(names)}: {' '.join(pairs)}",
                  kubectl("label", "node", *names, *pairs, "--overwrite"))
        count += len(names) * len(pairs)
    return count


def _helm_state(cp: Host, major: int) -> tuple[dict | None, dict | None]:
    """(the release's `helm list` entry, its user-supplied values): both reads at once (a
    re-run's only Helm calls); the values count only when the release exists."""
    t, box = call_in_thread(lambda: helm_values(cp, GPU_OPERATOR_RELEASE_NAME, NS), name="gpuk8s-helm-values")
    try:
        entry = helm_release(cp, GPU_OPERATOR_RELEASE_NAME, NS, major)
    finally:
        wait_thread(t)
    if "error" in box:
        raise box["error"]
    return entry, (box.get("value") if entry else None)


def _namespace_and_configmap(ctx: Context) -> dict[tuple[str, str], dict]:
    """The operator's Namespace and the device-plugin ConfigMap, keyed (kind, name), from the
    run's one cluster read (facts/cluster.py GPU_TYPES)."""
    view = cluster(ctx)
    if view.gpu_namespace != NS:   # a view made without the GPU types: ask for the two objects
        return {(o.get("kind"), name_of(o)): o for o in
                get_objects(ctx.first_cp, NS, f"namespace/{NS}", f"configmap/{DEVICE_PLUGIN_CONFIGMAP}")}
    objs = view.objects()
    found = {}
    for o in objs.get("Namespace", []):
        if name_of(o) == NS:
            found[("Namespace", NS)] = o
    for o in objs.get("ConfigMap", []):
        if name_of(o) == DEVICE_PLUGIN_CONFIGMAP and ((o.get("metadata") or {}).get("namespace") or NS) == NS:
            found[("ConfigMap", DEVICE_PLUGIN_CONFIGMAP)] = o
    return found


def operator_objects(ctx: Context, fresh: bool) -> tuple[list[dict], list[dict]]:
    """(ClusterPolicies, the operator namespace's pods) from the run's cluster read; fresh=True
    reads the cluster again (one call: waiting loops)."""
    view = cluster(ctx)
    if view.gpu_namespace != NS:
        return list_objects(ctx.first_cp, CLUSTER_POLICY), list_objects(ctx.first_cp, "pods", NS)
    if fresh:
        view.invalidate()
    objs = view.objects()
    return objs.get("ClusterPolicy", []), objs.get("Pod", [])


class InstallGPUOperator(GPUPhase):
    title = "install GPU Operator"

    def run(self, ctx: Context) -> PhaseResult:
        cp, rel = ctx.first_cp, ctx.release
        live = _bootstrapped(ctx) or not ctx.dry_run
        nodes = _nodes(ctx)
        gnodes = [node_of(ctx, h, nodes) for h in gpu_hosts(ctx)]
        readable = live and _helm_ok(ctx)
        major = int(rel.helm.split(".", 1)[0])
        entry, current = _helm_state(cp, major) if readable else (None, None)
        values = gpu_operator_values(ctx.inventory, rel, gnodes, nfd_running=_nfd_running(nodes, current))
        ns_file = gpu_operator_namespace()
        cm_file = device_plugin_config(ctx.inventory, gnodes)
        notes: list[str] = []
        before = len(ctx.gate.plan.changes)

        have = _namespace_and_configmap(ctx) if live else {}
        ns_want = yaml.safe_load(ns_file.content)
        ns_have = have.get(("Namespace", NS))
        ns_labels = node_labels(ns_have) if ns_have else {}
        if ns_have is None or any(ns_labels.get(k) != v for k, v in ns_want["metadata"]["labels"].items()):
            cp.put_file(_on_cp(ns_file, NAMESPACE_FILE, cp), f"write {NAMESPACE_FILE}")
            cp.change(f"apply namespace {NS} (pod security: privileged)",
                      kubectl("apply", "--server-side", "--force-conflicts", "-f", NAMESPACE_FILE))
        cm_want = yaml.safe_load(cm_file.content)
        cm_have = have.get(("ConfigMap", DEVICE_PLUGIN_CONFIGMAP))
        if cm_have is None or (cm_have.get("data") or {}) != cm_want.get("data"):
            cp.put_file(_on_cp(cm_file, CONFIGMAP_FILE, cp), f"write {CONFIGMAP_FILE}")
            cp.change(f"apply ConfigMap {DEVICE_PLUGIN_CONFIGMAP} (device-plugin configs)",
                      kubectl("apply", "--server-side", "--force-conflicts", "-f", CONFIGMAP_FILE))
            if cm_have is not None and entry is not None:
                # The operator does not watch the ConfigMap (gpu-sharing.rst): restart the plugin.
                cp.apply(Change(cp.name, f"restart the device plugin (daemonset/{DEVICE_PLUGIN_DS}) "
                                "for the new config",
                                kubectl("rollout", "restart", f"daemonset/{DEVICE_PLUGIN_DS}", "-n", NS),
                                accept_stderr="not found"))
                notes.append("device-plugin config changed (time-slicing): device plugin restarted")

        want_values = _values_of(values)
        version_ok = _chart_version(entry) == rel.gpu_operator
        status_ok = (entry or {}).get("status") == "deployed"
        if entry is not None and version_ok and status_ok and current == want_values:
            notes.append(f"release {GPU_OPERATOR_RELEASE_NAME} {rel.gpu_operator} deployed, values unchanged")
        else:
            cp.put_file(_on_cp(values, VALUES_FILE, cp), f"write {VALUES_FILE}")
            if rel.gpu_operator_chart:
                data = Path(rel.gpu_operator_chart).expanduser().read_bytes()
                cp.apply(Change(cp.name, f"copy the chart archive {rel.gpu_operator_chart} to {CHART_ARCHIVE}",
                                Cmd("sh", "-c", _CHART_LOCAL, "gpuk8s-chart", HELM_ARCHIVE_TMP, CHART_ARCHIVE),
                                file=_archive_file(HELM_ARCHIVE_TMP, data), temporary=True, timeout=300))
                chart = [CHART_ARCHIVE]
            else:
                chart = ["gpu-operator", "--repo", GPU_OPERATOR_REPO, "--version", rel.gpu_operator]
            why = ("install" if entry is None else
                   f"upgrade from {_chart_version(entry) or '?'}" if not version_ok else
                   f"repair ({entry.get('status')})" if not status_ok else "update values")
            cp.change(f"helm upgrade --install {GPU_OPERATOR_RELEASE_NAME} {rel.gpu_operator} ({why})",
                      helm("upgrade", "--install", GPU_OPERATOR_RELEASE_NAME, *chart, "-n", NS,
                           "--values", VALUES_FILE),
                      timeout=HELM_TIMEOUT,
                      hint=f"`helm status {GPU_OPERATOR_RELEASE_NAME} -n {NS}` on {cp.name} shows the release")
            if not ctx.dry_run:
                cluster(ctx).gpu_crds = None   # the chart installs the ClusterPolicy CRD: read it again
        label_gpu_nodes(ctx, gnodes, nodes)
        if len(ctx.gate.plan.changes) > before and not ctx.dry_run:
            ctx.cluster_changed()
        modes = ", ".join(f"{g.name}: {g.driver_mode} driver" for g in gnodes)
        return PhaseResult(self.title, notes=notes + ([modes] if modes else []))


class LabelGPUNodes(GPUPhase):
    """GPU workers that joined after the operator was installed get their labels now."""

    title = "label GPU nodes"

    def run(self, ctx: Context) -> PhaseResult:
        nodes = _nodes(ctx)
        gnodes = [node_of(ctx, h, nodes) for h in gpu_hosts(ctx)]
        if label_gpu_nodes(ctx, gnodes, nodes) and not ctx.dry_run:
            ctx.cluster_changed()
        return PhaseResult(self.title)


# ---- waiting, with diagnosis ----------------------------------------------------------------

# Known failure signatures in operand logs and events (DOMAIN 6): (id, regex, fix).
SIGNATURES: tuple[tuple[str, re.Pattern, str], ...] = (
    ("driver-in-use", re.compile(r"driver is in use|driver module is already loaded|Could not unload NVIDIA driver", re.I),
     "the host already has an NVIDIA driver loaded: set `gpu: {driver: host}` for this node in the "
     "inventory (gpuk8s labels it nvidia.com/gpu.deploy.driver=false) or uninstall the host driver "
     "and reboot, then run `gpuk8s up` again"),
    # not a bare "kernel headers": every driver container logs "Installing Linux kernel headers..."
    ("kernel-headers", re.compile(r"Could not resolve Linux kernel version|Unable to find a match: kernel-headers|"
                                  r"Unable to locate package linux-headers|Could not locate Linux kernel version "
                                  r"string", re.I),
     "the driver container cannot get kernel headers for the running kernel: boot a kernel the "
     "driver container supports (hold kernel upgrades), use precompiled drivers, or install the "
     "driver on the host (`gpu: {driver: host}`)"),
    ("secure-boot", re.compile(r"Key was rejected by service|not signed by a key that is trusted|"
                               r"Required key not available|Kernel module load error: Operation not permitted|"
                               r"could not insert 'nvidia[^']*': Operation not permitted", re.I),
     "UEFI Secure Boot rejects the unsigned module built in the driver container: disable Secure "
     "Boot, or install a signed driver on the host and set `gpu: {driver: host}`"),
    # k8s-driver-manager unloads nouveau before the driver container runs; it fails when nouveau
    # is in use ("failed to unload nouveau driver: resource temporarily unavailable")
    ("nouveau", re.compile(r"nouveau\S* .*(loaded|in use|bound)|Failed to enable MSI-X|"
                           r"failed to unload nouveau driver", re.I),
     "the nouveau driver holds the GPU: blacklist it (`blacklist nouveau` and `options nouveau "
     "modeset=0` in /etc/modprobe.d/blacklist-nouveau.conf), rebuild the initramfs, reboot"),
    ("no-nvidia-runtime", re.compile(r'no runtime for "?nvidia"? is configured', re.I),
     "containerd has no `nvidia` runtime: check the toolkit pod's logs, that /etc/containerd/config.toml "
     "imports /etc/containerd/conf.d/*.toml, and `containerd config dump | grep -A3 runtimes.nvidia` "
     "on the node; then restart containerd"),
    ("drop-in-version", re.compile(r"drop-in config version \d+ higher than root config version \d+", re.I),
     "the toolkit's drop-in has a higher config version than /etc/containerd/config.toml: let `gpuk8s "
     "up` write the root file in containerd's native version (RUNTIME_CONFIG_SOURCE=file)"),
    # the operator names the driver image <driver.version>-<os><version> from the GPU nodes' OS
    # (NFD's system-os_release labels); NVIDIA publishes it for a few distributions only
    ("driver-image-missing", re.compile(r'failed to resolve reference "[^"]*/driver:[^"]+"[^\n]*'
                                        r'(: not found|manifest unknown)', re.I),
     "no NVIDIA driver image exists for this node's OS (the GPU Operator appends the OS of the GPU "
     "nodes to driver.version, e.g. 595.91.07-ubuntu24.04; images exist for Ubuntu 22.04/24.04/26.04, "
     "RHEL and Rocky 8-10): run a supported OS on the GPU nodes, or install the driver on the host "
     "and set `gpu: {driver: host}`"),
    ("image-pull", re.compile(r"ErrImagePull|ImagePullBackOff|Failed to pull image|manifest unknown", re.I),
     "an operand image cannot be pulled: check the node reaches nvcr.io (proxy, DNS, mirror) and that "
     "a driver image exists for the node's OS and kernel"),
    ("cuda-too-new", re.compile(r"unsatisfied condition: cuda>=\S+", re.I),
     "the CUDA image is newer than the node's driver supports: set versions.cuda_image to an older "
     "image (or drop it: gpuk8s then picks the newest image each node's driver runs) or update the "
     "driver (the host's, or gpu.driver_version for the driver container)"),
)


def match_signatures(text: str) -> list[tuple[str, list[str], str]]:
    """(signature id, the log lines that matched (at most 3), fix) for each signature found."""
    found = []
    lines = text.splitlines()
    for sig, rx, fix in SIGNATURES:
        hits = [ln.strip() for ln in lines if rx.search(ln)]
        if hits:
            found.append((sig, list(dict.fromkeys(hits))[:3], fix))
    return found


def _pod_node(pod: dict) -> str:
    return (pod.get("spec") or {}).get("nodeName") or ""


def _pod_ok(pod: dict) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Succeeded":
        return True
    if phase != "Running":
        return False
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all(s.get("ready") for s in statuses)


def _validator_done(pods: list[dict], node: str) -> bool:
    """The operator validator on the node: its init containers (driver, toolkit, cuda, plugin
    validation) ran and its main container is ready (NVIDIA/gpu-operator
    assets/state-operator-validation/0500_daemonset.yaml)."""
    for p in pods:
        labels = node_labels(p)
        if labels.get("app") == VALIDATOR_APP and _pod_node(p) == node and _pod_ok(p):
            return True
    return False


def _pod_state_lines(pod: dict) -> list[str]:
    """`<container>: <reason> <message>` of each waiting or terminated container (init ones too);
    a message of several lines gives several lines."""
    text: list[str] = []
    st = pod.get("status") or {}
    for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        for k in ("waiting", "terminated"):
            s = (cs.get("state") or {}).get(k) or {}
            if s.get("reason") or s.get("message"):
                text += f"{cs.get('name')}: {s.get('reason', '')} {s.get('message', '')}".strip().splitlines()
    return text


def diagnose_gpu(ctx: Context, pods: list[dict] | None = None) -> str:
    """The failing operand pods' logs and events, matched against the known signatures."""
    cp = ctx.first_cp
    pods = list_objects(cp, "pods", NS) if pods is None else pods
    events = list_objects(cp, "events", NS)
    parts: list[str] = []
    unknown: list[tuple[str, str]] = []   # (node, part) of pods without a known signature
    diagnosed: set[str] = set()
    bad = [p for p in pods if not _pod_ok(p)]
    bad.sort(key=lambda p: not _stuck(p))   # the failing pods (the causes) before those waiting on them
    for p in bad[:12]:
        name = (p.get("metadata") or {}).get("name") or "?"
        st = p.get("status") or {}
        text = _pod_state_lines(p)
        res = cp.read(kubectl("logs", "-n", NS, name, "--all-containers", "--tail", "40"), check=False)
        text += (res.stdout or "").splitlines()
        text += [f"event {e.get('reason', '')}: {e.get('message', '')}" for e in events
                 if ((e.get("involvedObject") or {}).get("name")) == name]
        joined = "\n".join(text)
        hits = match_signatures(joined)
        node = _pod_node(p) or "-"
        head = f"[{node}] pod {name} ({st.get('phase', '?')})"
        if hits:
            diagnosed.add(node)
            for sig, lines, fix in hits:
                quoted = "\n".join(f"    | {ln}" for ln in lines)
                parts.insert(0, f"{head}: {sig}\n{quoted}\n  fix: {fix}")   # diagnoses first
        elif text:
            tail = "\n".join(f"    | {ln}" for ln in text[-5:])
            unknown.append((node, f"{head}: no known signature; last lines:\n{tail}"))
        else:
            unknown.append((node, f"{head}: not ready, no logs yet"))
    # a diagnosed node's other pods wait on its failing one: one line for them, not their logs
    for node in sorted({n for n, _ in unknown if n in diagnosed}):
        k = sum(1 for n, _ in unknown if n == node)
        parts.append(f"[{node}] {k} more pod{'s' if k > 1 else ''} not ready (waiting on the above)")
    parts += [part for n, part in unknown if n not in diagnosed]
    if not parts:
        parts.append(f"no failing pod in {NS}; `kubectl get pods -n {NS} -o wide` on {cp.name}")
    return ctx.log.redact("\n".join(parts))


# `containerd config dump` has a runtimes.nvidia entry in a CRI runtime table (shared with verify).
_has_nvidia_runtime = has_nvidia_runtime


class WaitGPUOperator(GPUPhase):
    title = "wait for GPU Operator"

    def run(self, ctx: Context) -> PhaseResult:
        if ctx.dry_run:
            return PhaseResult(self.title, notes=["dry run: not waiting"])
        want = [h.name for h in gpu_hosts(ctx)]
        state, pods = "", []
        again = False

        def ready() -> bool:
            nonlocal state, pods, again
            policies, pods = operator_objects(ctx, fresh=again)
            again = True
            policy = clusterpolicy_state(policies)
            waiting = [n for n in want if not _validator_done(pods, n)]
            if policy == "ready" and not waiting:
                return True
            state = f"ClusterPolicy {policy or 'absent'}" + \
                (f"; validator not done on {', '.join(waiting)}" if waiting else "")
            stuck = [p for p in pods if _stuck(p)]
            if stuck:   # crash-looping or unpullable: waiting longer will not help
                names = ", ".join((p.get("metadata") or {}).get("name") or "?" for p in stuck)
                raise WaitTimeout(f"the GPU Operator's rollout is failing ({names}): {state}\n"
                                  f"{diagnose_gpu(ctx, pods)}")
            return False

        if not poll(ctx, ready, timeout=ctx.options.wait_timeout, interval=ctx.options.poll_interval,
                    what="the GPU Operator"):
            raise WaitTimeout(f"timed out after {ctx.options.wait_timeout:g}s waiting for the GPU "
                              f"Operator: {state}\n{diagnose_gpu(ctx, pods)}")
        checked = self._check_containerd(ctx)
        return PhaseResult(self.title, notes=[f"ClusterPolicy ready; validator done on {len(want)} GPU nodes; " + (
            "containerd has the nvidia runtime" if checked else
            "nothing changed and containerd is active: its running config not re-read (`gpuk8s verify` does)")])

    def _check_containerd(self, ctx: Context) -> int:
        """`containerd config dump` on the GPU nodes after a run that changed something (the
        toolkit may have rewritten its drop-in and restarted containerd); in a run that changed
        nothing, only on the nodes whose facts do not show containerd active. Returns how many
        nodes were read."""
        hosts = gpu_hosts(ctx)
        if not ctx.gate.plan.changes:
            hosts = [h for h in hosts if h.facts is None or not h.facts.service_active("containerd")]
        if not hosts:
            return 0
        def check(host: Host) -> None:
            active = host.read(Cmd("systemctl", "is-active", "containerd"), check=False).stdout.strip()
            if active != "active":
                raise VerificationError(host.name, "containerd after the toolkit rollout", active or "inactive",
                                        "`journalctl -u containerd -n 50` (a toolkit drop-in with a higher "
                                        "config version than config.toml stops containerd)")
            dump = host.read(Cmd("containerd", "config", "dump"), check=False).stdout
            if not _has_nvidia_runtime(dump):
                raise VerificationError(host.name, "`containerd config dump`", "no `nvidia` runtime",
                                        "the toolkit's drop-in is not loaded: check that config.toml "
                                        "imports /etc/containerd/conf.d/*.toml and the toolkit pod's logs")
        ctx.parallel(hosts, check, "check containerd on GPU nodes")
        return len(hosts)


_STUCK = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
          "CreateContainerConfigError")
STUCK_RESTARTS = 3


def _stuck(pod: dict) -> bool:
    """A pod that will not get better by itself: an image that cannot be pulled, or a container
    (init containers too) in CrashLoopBackOff after STUCK_RESTARTS restarts."""
    st = pod.get("status") or {}
    for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason") or ""
        if reason in _STUCK and (reason != "CrashLoopBackOff" or (cs.get("restartCount") or 0) >= STUCK_RESTARTS):
            return True
    return False


# ---- CUDA smoke tests -----------------------------------------------------------------------

_GPU_LINE = re.compile(r"^GPU \d+: ")
_MIG_LINE = re.compile(r"^\s+MIG \S+\s+Device\s+\d+: ")
# Devices per GPU of a uniform MIG layout `all-<g>g.*` (MIG User Guide: 7 slices).
_MIG_PER_GPU = {1: 7, 2: 3, 3: 2, 4: 1, 7: 1}


def expected_devices(gn: GPUNode) -> tuple[int | None, bool]:
    """(devices `nvidia-smi -L` must list, whether they are MIG devices); None: unknown."""
    mig = gn.spec.mig
    if mig is not None and gpu_models.mig_enabled(mig.config):
        profile = gpu_models.mig_config_profile(mig.config)
        per = _MIG_PER_GPU.get(int(profile.split("g", 1)[0])) if profile else None
        return ((gn.gpu_count * per) if (gn.gpu_count and per) else None), True
    return gn.gpu_count, False


def smoke_verdict(log: str, expected: int | None, mig: bool) -> tuple[bool, str]:
    """Pass on "Test PASSED" and the device count; the reason either way."""
    lines = log.splitlines()
    seen = sum(1 for ln in lines if (_MIG_LINE if mig else _GPU_LINE).match(ln))
    what = "MIG devices" if mig else "GPUs"
    if SMOKE_PASS_LINE not in log:
        tail = " | ".join(ln.strip() for ln in lines[-3:] if ln.strip())
        return False, f"vectorAdd did not print '{SMOKE_PASS_LINE}' ({tail or 'no output'})"
    if expected is not None and seen != expected:
        return False, f"nvidia-smi -L lists {seen} {what}, preflight found {expected}"
    return True, f"passed ({seen} {what})"


ALLOCATABLE_WAIT = 60.0


def _replicas(g: GPUNode, mig: bool) -> int:
    ts = g.spec.time_slicing
    return ts.replicas if ts and ts.replicas and not mig else 1


def _job_done(job: dict) -> bool | None:
    """True: succeeded; False: failed; None: still running."""
    st = job.get("status") or {}
    if (st.get("succeeded") or 0) >= 1:
        return True
    for c in st.get("conditions") or []:
        if c.get("type") == "Failed" and c.get("status") == "True":
            return False
    return None


class SmokeTestGPUs(GPUPhase):
    title = "CUDA smoke test"
    cleanup_title = "delete CUDA smoke Jobs"

    def __init__(self, always: bool = False) -> None:
        self.created: list[str] = []   # the Jobs this run created (deleted by the cleanup)
        self.always = always           # run even when nothing changed (`gpuk8s verify`)

    def run(self, ctx: Context) -> PhaseResult:
        cp, inv = ctx.first_cp, ctx.inventory
        nodes = _nodes(ctx)
        gnodes = [node_of(ctx, h, nodes) for h in gpu_hosts(ctx)]
        rows = {g.name: _row(ctx, g, nodes.get(g.name)) for g in gnodes}
        ctx.state.gpu_summary = list(rows.values())
        todo = [g for g in gnodes if g.spec.smoke_test]
        if not todo:
            return PhaseResult(self.title, notes=["smoke_test is off"])
        if not ctx.dry_run and not ctx.gate.plan.changes and not self.always:
            for r in rows.values():
                r["smoke"] = "not rerun (nothing changed)"
            return PhaseResult(self.title, notes=["nothing changed: smoke tests not rerun"])
        failures: dict[str, str] = {}
        jobs: dict[str, GPUNode] = {}
        paths: list[str] = []
        if not ctx.dry_run:
            nodes = self._wait_allocatable(ctx, todo, nodes)
            for g in gnodes:
                rows[g.name]["allocatable"] = allocatable(nodes.get(g.name) or {}, rows[g.name]["resource"])
        for g in todo:
            expected, mig = expected_devices(g)
            resource = smoke_resource(inv, g)
            have = allocatable(nodes.get(g.name) or {}, resource)
            replicas = _replicas(g, mig)
            if not ctx.dry_run and expected is not None and have < expected * replicas:
                failures[g.name] = (f"allocatable {resource} is {have}, but {expected} "
                                    f"{'MIG devices' if mig else 'GPUs'}" +
                                    (f" x {replicas} replicas" if replicas > 1 else "") +
                                    " were found: the device plugin does not advertise every GPU "
                                    f"(`kubectl describe node {g.name}`, device-plugin logs)")
                continue
            job = cuda_smoke_job(inv, ctx.release, g, gpus=expected or None)
            path = f"{SMOKE_DIR}/{g.name}.yaml"
            cp.put_file(RenderedFile(path, job.content, host=cp.name), f"write {path}")
            jobs[smoke_job_name(g.name)] = g
            paths.append(path)
        if jobs:
            # every Job in one call (a Job's spec.template is immutable: a previous run's Job of
            # the same name is deleted first), so 20 GPU nodes cost one kubectl call, not 20
            names = list(jobs)
            self.created.extend(names)
            cp.change(f"start the CUDA smoke Job{'s' if len(names) > 1 else ''} on "
                      f"{', '.join(g.name for g in jobs.values())}",
                      kubectl("delete", "job", *names, "-n", NS, "--ignore-not-found").then(
                          "&&", kubectl("apply", *(a for path in paths for a in ("-f", path)))))
        if not ctx.dry_run and jobs:
            self._wait(ctx, jobs, failures)
        for n, why in failures.items():
            rows[n]["smoke"] = f"failed: {why}"
        for name, g in jobs.items():
            if g.name not in failures:
                rows[g.name]["smoke"] = "planned" if ctx.dry_run else "passed"
        if failures:
            raise VerificationError(", ".join(sorted(failures)), "the CUDA smoke test",
                                    "; ".join(f"{n}: {w}" for n, w in sorted(failures.items())))
        return PhaseResult(self.title, notes=[f"CUDA smoke test passed on {len(jobs)} GPU nodes"]
                           if not ctx.dry_run else [])

    def _wait_allocatable(self, ctx: Context, todo: list[GPUNode], nodes: dict[str, dict]) -> dict[str, dict]:
        """Allocatable GPUs lag a device-plugin restart: wait (at most ALLOCATABLE_WAIT) until
        every node advertises what it should; the caller judges what it then sees."""
        def short(ns: dict[str, dict]) -> list[str]:
            out = []
            for g in todo:
                expected, mig = expected_devices(g)
                if expected is not None and \
                        allocatable(ns.get(g.name) or {}, smoke_resource(ctx.inventory, g)) < expected * _replicas(g, mig):
                    out.append(g.name)
            return out

        again = False

        def advertised() -> bool:
            nonlocal nodes, again
            if again:
                nodes = cluster(ctx).fresh_nodes()
            again = True
            return not short(nodes)

        poll(ctx, advertised, timeout=min(ctx.options.wait_timeout, ALLOCATABLE_WAIT),
             interval=ctx.options.poll_interval, what="allocatable GPUs")
        return nodes

    def _wait(self, ctx: Context, jobs: dict[str, GPUNode], failures: dict[str, str]) -> None:
        cp = ctx.first_cp
        pending = dict(jobs)

        def finished() -> bool:
            items = {(j.get("metadata") or {}).get("name"): j
                     for j in list_objects(cp, "jobs", NS, "-l", SMOKE_LABEL)}
            ended = {n: d for n in pending if (d := _job_done(items.get(n) or {})) is not None}
            # the ended Jobs' logs at once (sessions of the one connection), not one after another
            logs = for_each_host(list(ended), lambda n: cp.read(
                kubectl("logs", "-n", NS, f"job/{n}", "--tail", "200"), check=False),
                name=str, parallel=min(8, ctx.options.parallel), stop=ctx.gate.interrupted)
            for name, done in ended.items():
                g = pending.pop(name)
                outcome = logs[name]
                if not outcome.ok:
                    raise outcome.error
                text = outcome.value.stdout or outcome.value.stderr
                expected, mig = expected_devices(g)
                ok, why = smoke_verdict(text, expected, mig)
                if not ok or not done:
                    # a container that never started (the toolkit's hook refused the image) has
                    # no log: its pods' state says why
                    states = [ln for p in list_objects(cp, "pods", NS, "-l", f"job-name={name}")
                              for ln in _pod_state_lines(p)]
                    hits = match_signatures("\n".join([text, *states]))
                    extra = "".join(f"; {sig}: {' / '.join(lines)} -> {fix}" for sig, lines, fix in hits)
                    failures[g.name] = (why if ok is False else "the Job failed") + extra
            return not pending

        if not poll(ctx, finished, timeout=ctx.options.wait_timeout,
                    interval=min(ctx.options.poll_interval, 1.0), what="the CUDA smoke Jobs"):
            for g in pending.values():
                failures[g.name] = f"the Job did not finish within {ctx.options.wait_timeout:g}s"

    def cleanup(self, ctx: Context) -> None:
        if not self.created or ctx.dry_run:
            return
        cp = ctx.first_cp
        names = list(dict.fromkeys(self.created))
        cp.change(f"delete the CUDA smoke Jobs ({len(names)})",
                  kubectl("delete", "job", *names, "-n", NS, "--ignore-not-found"))
        self.created.clear()


def _row(ctx: Context, g: GPUNode, node: dict | None) -> dict[str, Any]:
    """One GPU node of the summary at the end of `up`."""
    labels = node_labels(node) if node else {}
    if g.driver_mode == "host":
        driver = g.driver_version
    elif all(k in labels for k in GFD_DRIVER):
        driver = ".".join(labels[k] for k in GFD_DRIVER)
    else:
        driver = g.spec.driver_version or GPU_OPERATOR_DEFAULT_DRIVER
    ts, mig = g.spec.time_slicing, g.spec.mig
    sharing = (f"MIG {mig.config}" if mig and gpu_models.mig_enabled(mig.config) else
               f"time-slicing x{ts.replicas}" if ts and ts.replicas else "none")
    resource = smoke_resource(ctx.inventory, g)
    return {"node": g.name, "model": labels.get(GFD_PRODUCT) or ", ".join(g.models) or "?",
            "gpus": g.gpu_count or 0, "driver_mode": g.driver_mode, "driver_version": driver or "?",
            "allocatable": allocatable(node or {}, resource) if node else None,
            "resource": resource, "sharing": sharing,
            "smoke": "off" if not g.spec.smoke_test else "planned"}

