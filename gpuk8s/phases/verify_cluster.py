"""`gpuk8s verify`, cluster side: read the cluster once, run the cluster checks, CUDA smoke Jobs.

- Where kubectl runs: on the inventory's first reachable control plane with admin.conf (as `up`
  does), or, with `--kubeconfig FILE`, on this machine with that kubeconfig (a cluster gpuk8s did
  not build): `KubeconfigTransport` runs the very commands the phases build, with the admin.conf
  path replaced by FILE and the smoke Jobs' manifests kept in a private temporary directory.
- What it reads: nodes, pods of every namespace, tigerastatus and (with GPU nodes) the
  ClusterPolicy in ONE `kubectl get a,b,c -A -o json`; kubectl refuses the whole call when one
  type does not exist (no Calico, no GPU Operator), and then each type is read alone.
- Smoke Jobs: `up`'s SmokeTestGPUs (phases/gpu.py), run always, on the GPU nodes that are Ready
  and advertise every GPU; its cleanup deletes the Jobs on every exit path. Nothing else changes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from typing import Any

from gpuk8s.checks.base import FAIL, PASS, SKIP, CheckResult
from gpuk8s.checks.verify_cluster import ClusterCheckContext, GPUExpectation, run_cluster_checks
from gpuk8s.errors import Gpuk8sError, VerificationError
from gpuk8s.facts.cluster import (NO_SUCH_TYPE, ClusterFacts, allocatable, by_kind, kubectl, node_ready,
                                  parse_list)
from gpuk8s.host import Host
from gpuk8s.inventory import HostSpec, SSHSettings
from gpuk8s.paths import ADMIN_CONF
from gpuk8s.phases.base import Context, Phase, PhaseResult, RunState
from gpuk8s.phases.gpu import SMOKE_DIR, SmokeTestGPUs, _replicas, expected_devices, is_gpu_host, node_of
from gpuk8s.render.gpu import smoke_resource
from gpuk8s.runner import call_in_thread, wait_thread
from gpuk8s.transport.local import LocalTransport

BASE_TYPES = ("nodes", "pods")
CALICO_TYPE = "tigerastatuses.operator.tigera.io"
POLICY_TYPE = "clusterpolicies.nvidia.com"
LOCAL_KUBECTL = "kubectl (local)"


class KubeconfigTransport(LocalTransport):
    """This machine's kubectl with the user's kubeconfig instead of a control plane's admin.conf."""

    def __init__(self, spec: HostSpec, kubeconfig: str):
        super().__init__(spec)
        self.kubeconfig = kubeconfig
        self.tmp = tempfile.mkdtemp(prefix="gpuk8s-verify-")

    def _word(self, w: str) -> str:
        if w == ADMIN_CONF:
            return self.kubeconfig
        if w == SMOKE_DIR or w.startswith(SMOKE_DIR + "/"):
            return self.tmp + w[len(SMOKE_DIR):]
        return w

    def run(self, cmd, *, stdin=None, timeout=None, sudo=True):  # type: ignore[override]
        return super().run(cmd.rewrite(self._word), stdin=stdin, timeout=timeout, sudo=False)

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def local_kubectl_host(ctx: Context, kubeconfig: str) -> Host:
    spec = HostSpec(name=LOCAL_KUBECTL, address="localhost", roles=("control-plane",),
                    ssh=SSHSettings(sudo=False), connection="local", gpu=False)
    host = Host(spec, ctx.gate, ctx.log)
    host.transport = KubeconfigTransport(spec, kubeconfig)
    return host


def api_host(ctx: Context) -> Host | None:
    """The first control plane that connected (its facts show admin.conf when probed)."""
    for h in ctx.hosts:
        if h.is_control_plane and h.transport is not None and h.error is None and h.failed is None:
            if h.facts is None or h.has_file(ADMIN_CONF):
                return h
    return None


def read_cluster(host: Host, gpu: bool) -> tuple[dict[str, list[dict]] | None, str, tuple[str, ...]]:
    """(objects by kind or None, error, types the API server lacks): one call when every type exists."""
    types = BASE_TYPES + (CALICO_TYPE,) + ((POLICY_TYPE,) if gpu else ())
    res = host.read(kubectl("get", ",".join(types), "-A", "-o", "json"), check=False)
    if res.exit_status == 0 and (items := parse_list(res.stdout)) is not None:
        return by_kind(items), "", ()
    if NO_SUCH_TYPE not in res.stderr:
        return None, _error(res), ()
    res = host.read(kubectl("get", ",".join(BASE_TYPES), "-A", "-o", "json"), check=False)
    items = parse_list(res.stdout) if res.exit_status == 0 else None
    if items is None:
        return None, _error(res), ()
    missing = []
    for t in types[len(BASE_TYPES):]:
        res = host.read(kubectl("get", t, "-A", "-o", "json"), check=False)
        more = parse_list(res.stdout) if res.exit_status == 0 else None
        if more is None:
            if NO_SUCH_TYPE not in res.stderr:
                return None, _error(res), ()
            missing.append(t)
            continue
        items += more
    return by_kind(items), "", tuple(missing)


def _error(res: Any) -> str:
    text = (res.stderr or res.stdout or "").strip().splitlines()
    return f"`{res.command}` exited {res.exit_status}: " + (text[-1][:300] if text else "no output")


def expectation(ctx: Context, host: Host, nodes: dict[str, dict]) -> GPUExpectation:
    """What the node should advertise: phases/gpu.py's own model of the node (devices, replicas)."""
    g = node_of(ctx, host, nodes)
    devices, mig = expected_devices(g)
    ts = g.spec.time_slicing
    replicas = _replicas(g, mig)
    why = "" if devices is not None else \
        ("no facts: the host was not reachable" if host.facts is None else "no GPUs found on its PCI bus")
    return GPUExpectation(host.name, smoke_resource(ctx.inventory, g), devices, replicas, mig,
                          shared_product=bool(replicas > 1 and ts and not ts.rename_by_default),
                          unknown_why=why)


class VerifyCluster(Phase):
    """Read the cluster, run the cluster checks and (unless --no-smoke) the CUDA smoke Jobs."""

    title = "verify cluster"
    cleanup_title = "delete CUDA smoke Jobs"

    def __init__(self, *, known: frozenset[str] | None = None, smoke: bool = True,
                 kubeconfig: str | None = None, smoke_timeout: float = 300.0,
                 control_planes: tuple[HostSpec, ...] = ()):
        self.known = known
        self.control_planes = control_planes   # the whole inventory's (when --host leaves them out)
        self.smoke_on = smoke
        self.kubeconfig = kubeconfig
        self.smoke_timeout = smoke_timeout
        self.where = ""
        self.results: list[CheckResult] = []
        self._smoke: SmokeTestGPUs | None = None
        self._sub: Context | None = None
        self._local: Host | None = None
        self._host: Host | None = None
        self._read: tuple[Any, dict] | None = None

    def start(self, ctx: Context) -> None:
        """Pick where kubectl runs and start the cluster read in the background (StartClusterRead:
        it overlaps the host checks, which use the other sessions of the same connections)."""
        if self._read is not None:
            return
        host: Host | None
        if self.kubeconfig:
            host = self._local = local_kubectl_host(ctx, self.kubeconfig)
            self.where = f"this machine (--kubeconfig {self.kubeconfig})"
        else:
            host = api_host(ctx) or self._other_control_plane(ctx)
            self.where = host.name if host is not None else ""
        self._host = host
        gpu = any(is_gpu_host(h) for h in ctx.hosts)

        def read() -> tuple[dict[str, list[dict]] | None, str, tuple[str, ...]]:
            if host is None:
                return None, "no control plane is reachable (or none has " + ADMIN_CONF + \
                    "); pass --kubeconfig FILE to verify from this machine", ()
            try:
                return read_cluster(host, gpu)
            except Gpuk8sError as e:
                return None, ctx.log.redact(str(e)), ()

        self._read = call_in_thread(read, name="gpuk8s-verify-read")

    def _objects(self, ctx: Context) -> tuple[dict[str, list[dict]] | None, str, tuple[str, ...]]:
        self.start(ctx)
        assert self._read is not None
        thread, box = self._read
        timeout = (self._host.spec.ssh.command_timeout if self._host is not None else 0) * 4 + 5
        if not wait_thread(thread, time.monotonic() + timeout):
            return None, f"kubectl on {self.where} did not answer within {timeout:g}s", ()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def run(self, ctx: Context) -> PhaseResult:
        inv = ctx.inventory
        known = self.known if self.known is not None else frozenset(h.name for h in inv.hosts)
        objects, error, missing = self._objects(ctx)
        host = self._host
        gpu_hosts = [h for h in ctx.hosts if is_gpu_host(h)]
        nodes = {(n.get("metadata") or {}).get("name") or "": n for n in (objects or {}).get("Node", [])}
        cctx = ClusterCheckContext(inventory=inv, hosts=tuple(h.spec for h in ctx.hosts), known=known,
                                   objects=objects, api_error=error, where=self.where or "-",
                                   gpu={h.name: expectation(ctx, h, nodes) for h in gpu_hosts},
                                   missing_types=missing)
        if objects is not None and gpu_hosts and host is not None:
            if self.smoke_on:
                cctx.smoke = self._run_smoke(ctx, host, objects, nodes, cctx.gpu, gpu_hosts)
            else:
                cctx.smoke_note = "--no-smoke"
        elif not self.smoke_on:
            cctx.smoke_note = "--no-smoke"
        self.results = run_cluster_checks(cctx)
        failed = [r.id for r in self.results if r.status == FAIL]
        return PhaseResult(self.title, notes=[f"kubectl on {cctx.where}; "
                                              + (f"failed: {', '.join(failed)}" if failed else "no failures")])

    def _other_control_plane(self, ctx: Context) -> Host | None:
        """--host left every control plane out: connect to one of the inventory's for kubectl."""
        mine = {h.name for h in ctx.hosts}
        for spec in self.control_planes:
            if spec.name in mine:
                continue
            host = Host(spec, ctx.gate, ctx.log)
            try:
                host.transport = ctx.open_transport(spec, accept_new_host_keys=ctx.options.accept_new_host_keys)
            except Exception as e:  # noqa: BLE001 - the next one may answer; the last error is reported
                ctx.log.write(spec.name, f"verify: no kubectl here: {e}")
                continue
            self._local = host   # closed by the cleanup
            return host
        return None

    def _run_smoke(self, ctx: Context, host: Host, objects: dict, nodes: dict[str, dict],
                   gpu: dict[str, GPUExpectation], gpu_hosts: list[Host]) -> dict[str, tuple[str, str]]:
        """SmokeTestGPUs on the GPU nodes that can run it; the others say why they were left out."""
        out: dict[str, tuple[str, str]] = {}
        todo = []
        for h in gpu_hosts:
            node, g = nodes.get(h.name), gpu[h.name]
            if not ctx.inventory.gpu_for(h.spec).smoke_test:
                out[h.name] = (SKIP, "smoke_test is off")
            elif node is None or not node_ready(node):
                out[h.name] = (SKIP, "not a Ready node")
            elif h.facts is None or g.want is None:
                out[h.name] = (SKIP, g.unknown_why or "GPU count unknown")
            elif allocatable(node, g.resource) != g.want:
                out[h.name] = (SKIP, "allocatable GPUs are wrong (gpu-allocatable)")
            else:
                todo.append(h)
        if not todo:
            return out
        others = tuple(h.spec for h in todo if h is not host)
        sub_inv = replace(ctx.inventory, hosts=(host.spec,) + others)
        view = ClusterFacts(host)
        view.seed(objects)
        self._sub = Context(inventory=sub_inv, options=replace(ctx.options, wait_timeout=self.smoke_timeout),
                            gate=ctx.gate, log=ctx.log, hosts=[host] + [h for h in todo if h is not host],
                            state=RunState(cluster=view))
        self._smoke = SmokeTestGPUs(always=True)
        error = ""
        try:
            self._smoke.run(self._sub)
        except VerificationError:
            pass   # the rows say which nodes failed and why
        except Gpuk8sError as e:
            error = ctx.log.redact(str(e)).splitlines()[0][:300]
        rows = {r["node"]: r for r in self._sub.state.gpu_summary}
        for h in todo:
            smoke = str((rows.get(h.name) or {}).get("smoke") or "")
            if smoke == "passed":
                out[h.name] = (PASS, "passed")
            elif smoke.startswith("failed: "):
                out[h.name] = (FAIL, smoke[len("failed: "):])
            else:
                out[h.name] = (FAIL, error or f"no result ({smoke or 'not run'})")
        return out

    def cleanup(self, ctx: Context) -> None:
        try:
            if self._smoke is not None and self._sub is not None:
                self._smoke.cleanup(self._sub)
        finally:
            self.release()

    def release(self) -> None:
        """Let the read end (an interrupt ends its command) and close what this phase opened."""
        if self._read is not None:
            wait_thread(self._read[0], time.monotonic() + 1.0)
        if self._local is not None:
            self._local.close()
            self._local = None


class StartClusterRead(Phase):
    """Start VerifyCluster's one kubectl read now, so that it runs while the hosts are checked."""

    title = "read cluster"
    cleanup_title = "close kubectl connection"

    def __init__(self, verify: VerifyCluster):
        self.verify = verify

    def cleanup(self, ctx: Context) -> None:
        self.verify.release()   # when the run stopped before VerifyCluster (its cleanup does it otherwise)

    def run(self, ctx: Context) -> PhaseResult:
        self.verify.start(ctx)
        return PhaseResult(self.title, notes=[f"kubectl on {self.verify.where or '-'} (in the background)"])
