"""The GPU layer of `up`: containerd coexisting with the NVIDIA toolkit, the GPU phases."""

from __future__ import annotations

from types import SimpleNamespace

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import pytest

from gpuk8s.facts.runtime import parse_containerd_config
from gpuk8s.phases.prepare import containerd_config_ok
from gpuk8s.render.containerd import containerd_config, imports_drop_ins
from gpuk8s.render.gpu import CONTAINERD_DROP_IN, CONTAINERD_IMPORTS_GLOB
from gpuk8s.render.placeholders import containerd_default
from gpuk8s.versions import MATRIX, cri_plugins, native_config_version

RELEASE = MATRIX["1.36"]

# What the toolkit container leaves in the root file (nvidia-ctk: "modifies (or creates) the
# /etc/containerd/config.toml file to ensure that the imports config option is updated").
TOOLKIT_RUNTIME = {"runtime_type": "io.containerd.runc.v2",
                   "options": {"BinaryName": "/usr/local/nvidia/toolkit/nvidia-container-runtime",
                               "SystemdCgroup": True}}


def _runtimes(data: dict, native: int) -> dict:
    return data["plugins"][cri_plugins(native).runtime]["containerd"]["runtimes"]


@pytest.mark.parametrize("version", ["1.7.28", "2.1.4", "2.3.0"])
def test_rendered_config_imports_the_toolkit_drop_in_directory(version):
    data = tomllib.loads(containerd_config(containerd_default(version), RELEASE, version))
    assert data["imports"].count(CONTAINERD_IMPORTS_GLOB) == 1   # 2.3's default has it already
    assert imports_drop_ins(data["imports"])


@pytest.mark.parametrize("version", ["1.7.28", "2.1.4", "2.3.0"])
def test_rewrite_keeps_imports_and_the_toolkits_runtimes(version):
    """A later `up` that must rewrite the file (here: another pause image) never drops what the
    toolkit added (kubernetes-sigs/kubespray#12277)."""
    native = native_config_version(version)
    first = tomllib.loads(containerd_config(containerd_default(version), RELEASE, version))
    first["imports"] = [CONTAINERD_DROP_IN, "/etc/containerd/site.toml"]
    _runtimes(first, native)["nvidia"] = TOOLKIT_RUNTIME
    _runtimes(first, native)["runc"]["options"]["SystemdCgroup"] = False
    import tomli_w

    current = tomli_w.dumps(first)
    again = tomllib.loads(containerd_config(containerd_default(version), RELEASE, version, current))
    assert CONTAINERD_DROP_IN in again["imports"] and "/etc/containerd/site.toml" in again["imports"]
    assert len(again["imports"]) == len(set(again["imports"]))
    assert _runtimes(again, native)["nvidia"] == TOOLKIT_RUNTIME
    assert _runtimes(again, native)["runc"]["options"]["SystemdCgroup"] is True   # ours is fixed


def test_rewrite_ignores_a_current_file_of_another_version():
    v2 = containerd_config(containerd_default("1.7.28"), RELEASE, "1.7.28")
    data = tomllib.loads(containerd_config(containerd_default("2.1.4"), RELEASE, "2.1.4", v2 + "\n"))
    assert data["version"] == 3 and "cri" not in (data.get("plugins") or {})


def _facts(text: str):
    return SimpleNamespace(containerd=parse_containerd_config(text))


@pytest.mark.parametrize("version", ["1.7.28", "2.1.4", "2.3.0"])
def test_config_with_the_toolkits_imports_and_runtime_is_compliant(version):
    """The toolkit's edits never make `up` rewrite the file (the config-ok decision)."""
    native = native_config_version(version)
    data = tomllib.loads(containerd_config(containerd_default(version), RELEASE, version))
    data["imports"] = [CONTAINERD_IMPORTS_GLOB, CONTAINERD_DROP_IN]
    _runtimes(data, native)["nvidia"] = TOOLKIT_RUNTIME
    import tomli_w

    ctx = SimpleNamespace(release=RELEASE)
    f = _facts(tomli_w.dumps(data))
    assert f.containerd.imports == (CONTAINERD_IMPORTS_GLOB, CONTAINERD_DROP_IN)
    assert containerd_config_ok(ctx, f, version, gpu=True)
    assert containerd_config_ok(ctx, f, version, gpu=False)
    data["imports"] = [CONTAINERD_DROP_IN]      # nvidia-ctk's own form: the file itself
    assert containerd_config_ok(ctx, _facts(tomli_w.dumps(data)), version, gpu=True)


def test_gpu_node_config_without_the_drop_in_import_is_rewritten():
    version = "2.1.4"
    data = tomllib.loads(containerd_config(containerd_default(version), RELEASE, version))
    data["imports"] = []
    import tomli_w

    ctx = SimpleNamespace(release=RELEASE)
    f = _facts(tomli_w.dumps(data))
    assert not containerd_config_ok(ctx, f, version, gpu=True)
    assert containerd_config_ok(ctx, f, version, gpu=False)   # a CPU node needs no drop-in


# ---- the GPU phases of `up` against a fake cluster ------------------------------------------

import json as _json  # noqa: E402
import shlex  # noqa: E402

from gpuk8s.actions.up import run_up  # noqa: E402
from gpuk8s.errors import ActionFailed  # noqa: E402
from gpuk8s.inventory import parse_inventory  # noqa: E402
from gpuk8s.phases import gpu as gpu_phases  # noqa: E402
from gpuk8s.phases.base import RunOptions  # noqa: E402
from gpuk8s.render import ClusterSecrets  # noqa: E402
from gpuk8s.runlog import RunLog  # noqa: E402
from gpuk8s.shell import Secret  # noqa: E402
from tests.unit import fake  # noqa: E402

SECRETS = ClusterSecrets(Secret("abcdef.0123456789abcdef"), Secret("f" * 64))

GPU_INVENTORY = """
cluster:
  name: t
  kubernetes_version: "1.36"
  control_plane_endpoint: k8s-api.example.com:6443
gpu:
  time_slicing: {{replicas: {replicas}}}
ssh: {{user: root}}
hosts:
  - {{name: cp-1, address: 10.0.0.11, roles: [control-plane]}}
  - {{name: gpu-1, address: 10.0.0.21, roles: [worker], gpu: true}}
  - {{name: gpu-2, address: 10.0.0.22, roles: [worker], gpu: {{driver: host}}}}
"""

TOOLKIT_DUMP = """version = 3
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = true
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.nvidia]
  runtime_type = 'io.containerd.runc.v2'
"""


class GPUCluster(fake.FakeCluster):
    """The fake cluster plus a Helm release, the operator's objects and smoke Jobs."""

    def __init__(self, gpus: dict[str, int], replicas: int = 1, *, short: dict[str, int] | None = None):
        super().__init__()
        self.gpus, self.replicas, self.short = gpus, replicas, short or {}
        self.release: dict | None = None
        self.values: dict | None = None
        self.helm_calls: list[str] = []
        self.helm_installed = False
        self.objects: dict[tuple[str, str], dict] = {}
        self.jobs: list[str] = []
        self.restarts = 0
        self.broken: list[str] = []    # nodes whose driver pod fails with "driver in use"
        self.cuda_too_new: list[str] = []   # nodes whose smoke container the toolkit refuses to start

    def node_list(self) -> list[dict]:
        items = super().node_list()
        for n in items:
            name = n["metadata"]["name"]
            if self.release and name in self.gpus:
                n["metadata"]["labels"]["nvidia.com/gpu.present"] = "true"
                have = self.gpus[name] - self.short.get(name, 0)
                n["status"]["allocatable"] = {"nvidia.com/gpu": str(have * self.replicas)}
        return items


class GPUHost(fake.FakeHost):
    def _handlers(self):
        c = self.cluster
        k = "kubectl --kubeconfig /etc/kubernetes/admin.conf "
        return [
            ("helm version --short", lambda r, s: (0, "v4.2.3+g1\n", "") if c.helm_installed else (127, "", "not found")),
            (shlex.quote(gpu_phases._HELM_FETCH), self._install_helm),
            ("helm list", lambda r, s: (0, _json.dumps([c.release] if c.release else []), "")),
            ("helm get values", lambda r, s: (0, _json.dumps(c.values), "")),
            ("helm upgrade --install", self._helm_upgrade),
            (k + "get namespace/gpu-operator", self._get_objects),
            (k + "apply --server-side --force-conflicts -f /etc/gpuk8s/", self._apply_file),
            (k + "rollout restart", self._restart),
            (k + "get clusterpolicies.nvidia.com", lambda r, s: (0, fake._items(
                [{"kind": "ClusterPolicy", "status": {"state": "ready"}}] if c.release else []), "")),
            (k + "get pods -n gpu-operator -l job-name=", self._job_pods),
            (k + "get pods -n gpu-operator", lambda r, s: (0, fake._items(
                [_validator(n, n not in c.broken) for n in c.gpus] + ([_driver_in_use(n) for n in c.broken] if c.release else [])), "")),
            (k + "logs -n gpu-operator nvidia-driver-daemonset-", lambda r, s: (0, DRIVER_IN_USE_LOG, "")),
            (k + "get events", lambda r, s: (0, fake._items([]), "")),
            (k + "delete job", self._delete_job),
            (k + "get jobs", lambda r, s: (0, fake._items(
                [{"metadata": {"name": j}, "status": {"failed": 2, "conditions": [{"type": "Failed", "status": "True"}]}
                  if j.rsplit("cuda-smoke-", 1)[-1] in c.cuda_too_new else {"succeeded": 1}} for j in c.jobs]), "")),
            (k + "logs -n gpu-operator job/", self._job_log),
            ("systemctl is-active containerd", lambda r, s: (0, "active\n", "")),
            ("containerd config dump", lambda r, s: (0, TOOLKIT_DUMP, "")),
            *super()._handlers(),
        ]

    def has_clusterpolicy_crd(self) -> bool:
        return bool(self.cluster.release)

    def more_items(self, types: list[str]) -> list[dict]:
        c, items = self.cluster, []
        if "clusterpolicies.nvidia.com" in types:
            items += [{"kind": "ClusterPolicy", "status": {"state": "ready"}}]
        if "namespaces" in types or "configmaps" in types:
            items += [o for (kind, _), o in c.objects.items()
                      if (kind == "Namespace" and "namespaces" in types) or (kind == "ConfigMap" and "configmaps" in types)]
        if "pods" in types:
            items += [_validator(n, n not in c.broken) for n in c.gpus] + \
                ([_driver_in_use(n) for n in c.broken] if c.release else [])
        return items

    def _install_helm(self, r, s):
        self.cluster.helm_installed = True
        return 0, "", ""

    def _helm_upgrade(self, r, s):
        c = self.cluster
        c.helm_calls.append(r)
        c.values = yaml.safe_load(self.files["/etc/gpuk8s/gpu-operator-values.yaml"])
        version = r.split("--version ", 1)[1].split()[0]
        c.release = {"name": "gpu-operator", "namespace": "gpu-operator", "revision": "1",
                     "status": "deployed", "chart": f"gpu-operator-{version}", "app_version": version}
        return 0, "", ""

    def _get_objects(self, r, s):
        return 0, fake._items(list(self.cluster.objects.values())), ""

    def _apply_file(self, r, s):
        path = r.split(" -f ", 1)[1].split()[0]
        if path not in (gpu_phases.NAMESPACE_FILE, gpu_phases.CONFIGMAP_FILE):
            return self._kubectl_apply(r, s)
        doc = yaml.safe_load(self.files[path])
        self.cluster.objects[(doc["kind"], doc["metadata"]["name"])] = doc
        return 0, "", ""

    def _restart(self, r, s):
        self.cluster.restarts += 1
        return 0, "", ""

    def _delete_job(self, r, s):
        self.cluster.jobs = [j for j in self.cluster.jobs if j not in r.split()]
        if " apply -f " in r:   # kubectl apply -f A -f B ...
            words = r.split(" apply ", 1)[1].split()
            for path in (words[i + 1] for i, w in enumerate(words) if w == "-f"):
                self.cluster.jobs.append(yaml.safe_load(self.files[path])["metadata"]["name"])
        return 0, "", ""

    def _job_pods(self, r, s):
        """A Job's pods: the one whose container never started (StartError, containerd's message)."""
        job = r.split("-l job-name=", 1)[1].split()[0]
        if job.rsplit("cuda-smoke-", 1)[-1] not in self.cluster.cuda_too_new:
            return 0, fake._items([]), ""
        msg = ("failed to create containerd task: failed to create shim task: OCI runtime create failed: "
               "error running prestart hook #0: exit status 1, stdout: , stderr: Auto-detected mode as 'legacy'\n"
               "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.5, please update your "
               "driver to a newer version, or use an earlier cuda container: unknown")
        return 0, fake._items([{"kind": "Pod", "metadata": {"name": f"{job}-x1", "labels": {"job-name": job}},
                                "status": {"phase": "Failed", "containerStatuses": [
                                    {"name": "cuda-smoke", "state": {"terminated": {
                                        "exitCode": 128, "reason": "StartError", "message": msg}}}]}}]), ""

    def _job_log(self, r, s):
        node = r.split("job/gpuk8s-cuda-smoke-", 1)[1].split()[0]
        if node in self.cluster.cuda_too_new:
            return 0, "", ""   # the container never started: an empty log
        n = self.cluster.gpus[node] - self.cluster.short.get(node, 0)
        lines = [f"GPU {i}: NVIDIA L4 (UUID: GPU-{i})" for i in range(n)]
        return 0, "\n".join(["== nvidia-smi -L", *lines, "== vectorAdd", "Test PASSED", "Done"]), ""


import yaml  # noqa: E402


def _validator(node: str, done: bool = True) -> dict:
    """The validator pod: Running and ready once its init containers passed, else Init (Pending)."""
    return {"kind": "Pod", "metadata": {"name": f"nvidia-operator-validator-{node}", "labels": {"app": "nvidia-operator-validator"}},
            "spec": {"nodeName": node},
            "status": {"phase": "Running" if done else "Pending",
                       "containerStatuses": [{"name": "nvidia-operator-validator", "ready": done}]}}


# NVIDIA/gpu-driver-container nvidia-driver's _unload_driver on a host whose driver is loaded
DRIVER_IN_USE_LOG = """Stopping NVIDIA persistence daemon...
Unloading NVIDIA driver kernel modules...
nvidia_uvm           1421312  0
nvidia              54120448  1 nvidia_uvm
Could not unload NVIDIA driver kernel modules, driver is in use
"""


def _driver_in_use(node: str) -> dict:
    return {"kind": "Pod", "metadata": {"name": f"nvidia-driver-daemonset-{node}", "labels": {"app": "nvidia-driver-daemonset"}},
            "spec": {"nodeName": node},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "nvidia-driver-ctr", "ready": False, "restartCount": 4,
                 "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}}}]}}


def gpu_opener(probes, calls, cluster):
    hosts = {}

    def open_transport(host, accept_new_host_keys=False):
        if host.name not in hosts:
            hosts[host.name] = GPUHost(host.name, probes[host.name], calls, cluster)
        return hosts[host.name]
    return open_transport


def _probes(inv):
    out = {}
    for i, h in enumerate(inv.hosts):
        n = 2 if h.name.startswith("gpu") else 0
        p = fake.probe_output(h.name, f"uuid-{i}", f"52:54:00:00:01:{i:02x}", h.address, gpus=n)
        if h.name == "gpu-2":   # a working host driver
            p = p.replace("overlay\nbr_netfilter", "overlay\nbr_netfilter\nnvidia")
        out[h.name] = p.replace("v3.19.0+g3d8990f", "") if h.name == "cp-1" else p
    return out


IGNORE = ("helm", "nvidia-driver", "kube-tools-version")


def _up(inv, cluster, probes, tmp_path, calls, **kw):
    kw.setdefault("wait_timeout", 5)
    opts = RunOptions(kubeconfig_path=tmp_path / "kc", poll_interval=0.01,
                      ignore_checks=IGNORE, **kw)
    return run_up(inv, opts, log=RunLog(None), open_transport=gpu_opener(probes, calls, cluster),
                  secrets=SECRETS)


def test_up_installs_helm_operator_labels_and_smoke_tests(tmp_path):
    inv = parse_inventory(GPU_INVENTORY.format(replicas=4))
    cluster = GPUCluster({"gpu-1": 2, "gpu-2": 2}, replicas=4)
    calls = []
    report = _up(inv, cluster, _probes(inv), tmp_path, calls)
    titles = [p.name for p in report.phases]
    assert titles.index("install GPU Operator") == titles.index("install Calico") + 1 + 1
    assert titles.index("CUDA smoke test") > titles.index("wait for nodes Ready")
    assert cluster.helm_installed and len(cluster.helm_calls) == 1
    call = cluster.helm_calls[0]
    assert "helm upgrade --install gpu-operator gpu-operator --repo https://helm.ngc.nvidia.com/nvidia" in call
    assert "--version v26.7.0 -n gpu-operator --values /etc/gpuk8s/gpu-operator-values.yaml" in call
    assert cluster.values["driver"]["enabled"] is True   # gpu-1 needs the driver container
    assert cluster.labels["gpu-2"]["nvidia.com/gpu.deploy.driver"] == "false"
    assert "nvidia.com/gpu.deploy.driver" not in cluster.labels.get("gpu-1", {})
    assert ("Namespace", "gpu-operator") in cluster.objects
    rows = {r["node"]: r for r in report.gpu_nodes}
    assert rows["gpu-1"]["allocatable"] == 8 and rows["gpu-1"]["sharing"] == "time-slicing x4"
    assert rows["gpu-1"]["driver_mode"] == "container" and rows["gpu-2"]["driver_mode"] == "host"
    assert rows["gpu-1"]["smoke"] == rows["gpu-2"]["smoke"] == "passed"
    cleanups = [c for c in report.plan.changes if c.description.startswith("delete the CUDA smoke Jobs")]
    assert len(cleanups) == 1 and cluster.jobs == []   # deleted in the cleanup

    # A second run: no Helm call, no change at all.
    before = len(calls)
    installed = {n: p.replace("@@gpuk8s:helm_version\n\n", "@@gpuk8s:helm_version\nv4.2.3+g1\n")
                 for n, p in _probes(inv).items()}
    again = _up(inv, cluster, installed, tmp_path, calls)
    assert len(cluster.helm_calls) == 1
    # (the fake's probes are static, so host preparation repeats, and with it the smoke test:
    # it reruns whenever a run changed something)
    gpu_titles = {"install Helm", "install GPU Operator", "label GPU nodes", "wait for GPU Operator"}
    assert {p.name: p.changes for p in again.phases if p.name in gpu_titles and p.changes} == {}
    assert not [c for _, c, *_ in calls[before:] if c.startswith("helm upgrade")]

    # replicas 4 -> 8: ConfigMap updated, device plugin restarted and said so; values unchanged.
    inv8 = parse_inventory(GPU_INVENTORY.format(replicas=8))
    cluster.replicas = 8
    third = _up(inv8, cluster, installed, tmp_path, calls)
    assert cluster.restarts == 1 and len(cluster.helm_calls) == 1
    notes = [n for p in third.phases for n in p.notes]
    assert any("device plugin restarted" in n for n in notes)
    assert {r["node"]: r["allocatable"] for r in third.gpu_nodes}["gpu-1"] == 16


def test_up_json_is_one_document_with_phases_changes_and_gpu_rows(tmp_path, monkeypatch):
    """`up --json`: stdout is exactly one JSON document carrying what the table shows (issue 8)."""
    from typer.testing import CliRunner

    from gpuk8s import cli

    inv = parse_inventory(GPU_INVENTORY.format(replicas=4))
    cluster = GPUCluster({"gpu-1": 2, "gpu-2": 2}, replicas=4)
    monkeypatch.setattr("gpuk8s.cli._load", lambda *a, **k: inv)
    monkeypatch.setattr("gpuk8s.transport.open_transport", gpu_opener(_probes(inv), [], cluster))
    monkeypatch.setattr(ClusterSecrets, "generate", staticmethod(lambda: SECRETS))
    args = ["up", "-i", "x.yaml", "--json", "--kubeconfig", str(tmp_path / "kc"),
            "--log-file", str(tmp_path / "up.log"), *[f"--ignore={i}" for i in IGNORE]]
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == 0, res.stderr
    doc = _json.loads(res.stdout)   # nothing else on stdout
    assert doc["ok"] is True and doc["changed"] is True and doc["error"] is None
    phases = {p["name"]: p for p in doc["phases"]}
    assert phases["install GPU Operator"]["status"] == "changed"
    assert phases["CUDA smoke test"]["status"] in ("changed", "unchanged")
    rows = {r["node"]: r for r in doc["gpu_nodes"]}
    assert rows["gpu-1"]["smoke"] == "passed" and rows["gpu-1"]["allocatable"] == 8
    assert rows["gpu-2"]["driver_mode"] == "host" and rows["gpu-1"]["sharing"] == "time-slicing x4"
    assert any(c["description"].startswith("helm upgrade --install") for c in doc["changes"])
    for secret in ("abcdef.0123456789abcdef", "0123456789abcdef", "f" * 64):   # SECRETS: masked
        assert secret not in res.stdout
    assert doc["preflight"]["ok"] in (True, False) and {h["name"] for h in doc["preflight"]["hosts"]} == \
        {"cp-1", "gpu-1", "gpu-2"}


def test_smoke_fails_when_allocatable_is_short_of_the_pci_gpus(tmp_path):
    inv = parse_inventory(GPU_INVENTORY.format(replicas=2).replace("  time_slicing: {replicas: 2}\n", ""))
    cluster = GPUCluster({"gpu-1": 2, "gpu-2": 2}, short={"gpu-2": 1})
    with pytest.raises(ActionFailed) as e:
        _up(inv, cluster, _probes(inv), tmp_path, [], wait_timeout=0.3)
    report = e.value.args[0] if e.value.args else None
    assert "gpu-2" in str(e.value) and "allocatable nvidia.com/gpu is 1" in str(e.value)
    assert report is not None
    assert cluster.jobs == []   # the Jobs that did start were deleted by the cleanup


def test_dry_run_plans_helm_and_the_values_file_and_only_reads(tmp_path):
    inv = parse_inventory(GPU_INVENTORY.format(replicas=4))
    cluster = GPUCluster({"gpu-1": 2, "gpu-2": 2})
    calls = []
    report = _up(inv, cluster, _probes(inv), tmp_path, calls, dry_run=True)
    cmds = [cmd for c in report.plan.changes for cmd in c.commands]
    assert any(cmd.startswith("helm upgrade --install gpu-operator") for cmd in cmds)
    assert any("get.helm.sh/helm-v4.2.3-linux-amd64.tar.gz" in cmd for cmd in cmds)
    files = {f.path for c in report.plan.changes for f in c.files}
    assert "/etc/gpuk8s/gpu-operator-values.yaml" in files
    assert not cluster.helm_calls and not cluster.helm_installed
    assert not [c for _, c, *_ in calls if c.startswith(("helm upgrade", "sh -c 'set -e; t="))]


def test_signatures_quote_the_lines_and_give_a_fix():
    log = ("+ rmmod nvidia\nrmmod: ERROR: Module nvidia is in use\n"
           "Could not unload NVIDIA driver kernel modules, driver is in use\n")
    ((sig, lines, fix),) = gpu_phases.match_signatures(log)
    assert sig == "driver-in-use" and lines == ["Could not unload NVIDIA driver kernel modules, driver is in use"]
    assert "gpu: {driver: host}" in fix
    ev = 'Failed to create pod sandbox: rpc error: no runtime for "nvidia" is configured'
    assert [s for s, *_ in gpu_phases.match_signatures(ev)] == ["no-nvidia-runtime"]
    cuda = "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.5, please update your driver"
    assert [s for s, *_ in gpu_phases.match_signatures(cuda)] == ["cuda-too-new"]


def test_smoke_verdict_counts_gpus_and_mig_devices():
    ok = "GPU 0: NVIDIA L4 (UUID: GPU-1)\nGPU 1: NVIDIA L4 (UUID: GPU-2)\nTest PASSED\n"
    assert gpu_phases.smoke_verdict(ok, 2, False)[0]
    assert gpu_phases.smoke_verdict(ok, 3, False) == (False, "nvidia-smi -L lists 2 GPUs, preflight found 3")
    mig = "GPU 0: NVIDIA H100 (UUID: GPU-1)\n  MIG 1g.10gb     Device  0: (UUID: MIG-a)\nTest PASSED\n"
    assert gpu_phases.smoke_verdict(mig, 1, True)[0]
    assert not gpu_phases.smoke_verdict("GPU 0: x\nFAILED\n", 1, False)[0]


def test_failed_rollout_is_diagnosed_with_the_log_line_and_a_fix(tmp_path):
    inv = parse_inventory(GPU_INVENTORY.format(replicas=2).replace("gpu: {driver: host}", "gpu: true"))
    cluster = GPUCluster({"gpu-1": 2, "gpu-2": 2}, replicas=2)
    cluster.broken = ["gpu-2"]
    with pytest.raises(ActionFailed) as e:
        _up(inv, cluster, _probes(inv), tmp_path, [])
    msg = str(e.value)
    assert "nvidia-driver-daemonset-gpu-2" in msg and "driver-in-use" in msg
    assert "| Could not unload NVIDIA driver kernel modules, driver is in use" in msg
    assert "gpu: {driver: host}" in msg


def test_render_up_shows_one_row_per_gpu_node():
    from io import StringIO

    from rich.console import Console

    from gpuk8s.actions.up import UpReport
    from gpuk8s.gate import Plan
    from gpuk8s.ui import render_up

    rows = [{"node": "gpu-1\x1b[31m", "model": "NVIDIA-L4-SHARED", "gpus": 2, "driver_mode": "container",
             "driver_version": "595.91.07", "allocatable": 8, "resource": "nvidia.com/gpu",
             "sharing": "time-slicing x4", "smoke": "passed (2 GPUs)"}]
    out = StringIO()
    render_up(UpReport([], Plan(), None, gpu_nodes=rows), Console(file=out, width=200))
    text = out.getvalue()
    assert "GPU nodes" in text and "NVIDIA-L4-SHARED" in text and "8 nvidia.com/gpu" in text
    assert "time-slicing x4" in text and "passed (2 GPUs)" in text and "\x1b[31m" not in text


def test_helm_from_the_inventorys_archive_travels_on_stdin(tmp_path):
    """Air-gapped: the local archive is written from stdin (base64) to a 0600 file that is removed
    after the install; the plan shows *** instead of the archive."""
    import base64

    archive = tmp_path / "helm-v4.2.3-linux-amd64.tar.gz"
    archive.write_bytes(b"\x1f\x8b fake archive bytes")
    text = GPU_INVENTORY.format(replicas=4) + f"versions:\n  helm_archive: {archive}\n"
    inv = parse_inventory(text)
    report = _up(inv, GPUCluster({"gpu-1": 2, "gpu-2": 2}), _probes(inv), tmp_path, [], dry_run=True)
    (change,) = [c for c in report.plan.changes if c.description.startswith("install Helm")]
    assert change.temporary and change.file.mode == 0o600 and change.file.path == gpu_phases.HELM_ARCHIVE_TMP
    assert base64.b64decode(change.file.content) == archive.read_bytes()
    assert change.file.masked() == "***"
    cmd, stdin = change.remote()
    assert stdin == change.file.content and "get.helm.sh" not in cmd.render()
    assert "sha256sum -c" in cmd.render() and gpu_phases.HELM_BIN in cmd.render()


def test_a_host_driver_node_joining_after_the_operator_keeps_its_host_driver(tmp_path):
    """driver: auto, a working host driver, and the operator labels the node gpu.present before
    gpuk8s labels it: the mode comes from the facts at the start of the run, so the node still
    gets nvidia.com/gpu.deploy.driver=false (else the driver container crash-loops: driver in use)."""
    inv = parse_inventory(GPU_INVENTORY.format(replicas=2).replace(
        "gpu: {driver: host}}", "gpu: true}"))
    assert inv.host("gpu-2").gpu is True and inv.gpu_for(inv.host("gpu-2")).driver == "auto"
    cluster = GPUCluster({"gpu-1": 2, "gpu-2": 2}, replicas=2)
    report = _up(inv, cluster, _probes(inv), tmp_path, [])
    assert cluster.labels["gpu-2"]["nvidia.com/gpu.deploy.driver"] == "false"
    rows = {r["node"]: r for r in report.gpu_nodes}
    assert rows["gpu-2"]["driver_mode"] == "host" and rows["gpu-1"]["driver_mode"] == "container"


def test_cluster_read_leaves_out_a_missing_crd_until_told_and_batches_the_gpu_types():
    """One kubectl call for nodes, Calico and the operator's objects; before the chart installed
    the ClusterPolicy CRD kubectl refuses the whole call, so the type is left out (one retry,
    remembered) until the phase that installs it asks again (facts/cluster.py)."""
    from gpuk8s.facts.cluster import ClusterFacts
    from gpuk8s.gate import Gate
    from gpuk8s.host import Host
    from gpuk8s.paths import ADMIN_CONF

    inv = parse_inventory(GPU_INVENTORY.format(replicas=2))
    cluster = GPUCluster({"gpu-1": 2})
    cluster.nodes, cluster.calico_applied = ["cp-1", "gpu-1"], True
    calls: list = []
    t = GPUHost("cp-1", "", calls, cluster)
    t.state_files.append(ADMIN_CONF)
    host = Host(inv.hosts[0], Gate(False, RunLog(None)), RunLog(None))
    host.transport = t
    view = ClusterFacts(host, "gpu-operator")

    assert set(view.nodes()) == {"cp-1", "gpu-1"}
    gets = [c for _, c, *_ in calls]
    assert len(gets) == 2 and "clusterpolicies.nvidia.com" in gets[0] and "clusterpolicies" not in gets[1]
    assert "-n gpu-operator" in gets[1] and view.gpu_crds is False
    view.invalidate()
    view.objects()
    assert len(calls) == 3 and "clusterpolicies" not in calls[-1][1]   # remembered: no failing call

    cluster.release = {"name": "gpu-operator", "status": "deployed", "chart": "gpu-operator-v26.7.0"}
    view.gpu_crds = None      # what InstallGPUOperator says after `helm upgrade --install`
    view.invalidate()
    objs = view.objects()
    assert len(calls) == 4 and view.gpu_crds is True
    assert [o["status"]["state"] for o in objs["ClusterPolicy"]] == ["ready"]
    assert {o["kind"] for o in objs["Pod"]} == {"Pod"} and objs["Node"] and objs["TigeraStatus"]


# ---- the driver container's real failure logs (NVIDIA/gpu-driver-container @06a208ca
# ubuntu24.04/nvidia-driver, k8s-driver-manager v0.12.0), as the lab's sim/gpuop.py prints them

SECURE_BOOT_LOG = """Resolving Linux kernel version...
Proceeding with Linux kernel version 6.8.0-79-generic
Installing Linux kernel headers...
Installing Linux kernel module files...
Loading NVIDIA driver kernel modules...
+ modprobe nvidia
modprobe: ERROR: could not insert 'nvidia': Key was rejected by service
"""


def test_signatures_of_the_driver_containers_failures():
    def ids(text):
        return [s for s, *_ in gpu_phases.match_signatures(text)]
    # "Installing Linux kernel headers..." is in every driver log: not a kernel-headers diagnosis
    assert ids(SECURE_BOOT_LOG) == ["secure-boot"]
    assert ids("Resolving Linux kernel version...\nCould not resolve Linux kernel version\n") == ["kernel-headers"]
    # Secure Boot without signature enforcement: lockdown's EPERM, through modprobe
    assert ids("modprobe: ERROR: could not insert 'nvidia': Operation not permitted") == ["secure-boot"]
    # k8s-driver-manager cannot unload a nouveau that is in use
    assert ids("time=2026-12-02T02:19:17Z level=fatal msg=failed to unload nouveau driver: resource "
               "temporarily unavailable") == ["nouveau"]
    # no driver image for the OS: its own fix besides the generic pull failure
    ev = ('event Failed: Failed to pull image "nvcr.io/nvidia/driver:595.91.07-debian12": rpc error: code = '
          'NotFound desc = failed to pull and unpack image "nvcr.io/nvidia/driver:595.91.07-debian12": failed '
          'to resolve reference "nvcr.io/nvidia/driver:595.91.07-debian12": '
          'nvcr.io/nvidia/driver:595.91.07-debian12: not found')
    hits = {s: (lines, fix) for s, lines, fix in gpu_phases.match_signatures(ev)}
    assert set(hits) == {"driver-image-missing", "image-pull"}
    assert "gpu: {driver: host}" in hits["driver-image-missing"][1]
    # an unreachable registry is not a missing image
    assert ids('Failed to pull image "nvcr.io/nvidia/driver:595.91.07-ubuntu24.04": failed to resolve '
               'reference "nvcr.io/nvidia/driver:595.91.07-ubuntu24.04": dial tcp: i/o timeout') == ["image-pull"]


def test_failed_rollout_lists_the_failing_pod_first_and_folds_those_waiting_on_it(tmp_path):
    inv = parse_inventory(GPU_INVENTORY.format(replicas=2).replace("gpu: {driver: host}", "gpu: true"))
    cluster = GPUCluster({"gpu-1": 2, "gpu-2": 2}, replicas=2)
    cluster.broken = ["gpu-2"]
    with pytest.raises(ActionFailed) as e:
        _up(inv, cluster, _probes(inv), tmp_path, [])
    msg = str(e.value)
    report = msg[msg.index("[gpu-2]"):]
    assert report.startswith("[gpu-2] pod nvidia-driver-daemonset-gpu-2 (Running): driver-in-use"), report
    # the validator waiting on the driver: one line, not its logs
    assert "[gpu-2] 1 more pod not ready (waiting on the above)" in report
    assert "nvidia-operator-validator-gpu-2" not in report


def test_smoke_job_refused_by_the_toolkit_is_diagnosed_from_its_pod(tmp_path):
    inv = parse_inventory(GPU_INVENTORY.format(replicas=2))
    cluster = GPUCluster({"gpu-1": 2, "gpu-2": 2}, replicas=2)
    cluster.cuda_too_new = ["gpu-1"]
    with pytest.raises(ActionFailed) as e:
        _up(inv, cluster, _probes(inv), tmp_path, [])
    msg = " ".join(str(e.value).split())
    assert "gpu-1" in msg and "cuda-too-new" in msg, msg
    assert "unsatisfied condition: cuda>=12.5, please update your driver" in msg, msg
    assert "set versions.cuda_image to an older image" in msg, msg
    assert "gpu-2:" not in msg, msg
