"""gpuk8s lab: helm and the NVIDIA GPU Operator's effect on the simulated cluster.

Called from labsim.py (`helm` from main(), kubectl through `kubectl_hook`, nodes through
`node_overlay`, `containerd config dump` through `sync_node`). State lives in the shared cluster
(`c["gpu"]`, under labsim's cluster lock); everything the operator does is computed at read time
from that state, the time since the release / device-plugin restart, and each node's fixture
(its simulated GPUs: /etc/gpuk8s-lab/nvidia/gpus, nvidia_driver, gpu_faults).

Sources (cited again next to each behaviour):
- helm v4.2.3: pkg/cmd/{upgrade,list,get_values,status}.go, pkg/cmd/printer.go (status output),
  pkg/repo/v1/chartrepo.go (FindChartInRepoURL: "chart %q version %q not found in %s repository",
  `looks like %q is not a valid chart repository or cannot be reached`); the real binary
  (`../shared/tools/ensure-helm-kubectl`) for version lines and the list JSON shape.
- NVIDIA/gpu-operator v26.7.0: assets/state-* (operand DaemonSets, names, app labels),
  controllers/clusterpolicy_controller.go (status.state ready/notReady),
  validator/main.go; NVIDIA/gpu-driver-container nvidia-driver (`_unload_driver`:
  "Could not unload NVIDIA driver kernel modules, driver is in use");
  NVIDIA/k8s-device-plugin docs/gfd_labels.md and internal/lm (GFD labels, "-SHARED" product
  suffix, gpu.replicas), api/config/v1 (sharing.timeSlicing), internal/rm/health.go (XID ->
  unhealthy); NVIDIA/nvidia-container-toolkit pkg/config/engine/containerd (the drop-in's
  runtimes.nvidia table); kubelet's FailedCreatePodSandBox event text
  ('failed to get sandbox runtime: no runtime for "nvidia" is configured', troubleshooting.rst).
- CUDA samples vectorAdd output ("Test PASSED"), `nvidia-smi -L` line format.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import labsim
from labsim import Exit, err, now, out

REPO = "https://helm.ngc.nvidia.com/nvidia"
# Versions of the gpu-operator chart in NVIDIA's repository (helm.ngc.nvidia.com/nvidia/index.yaml);
# any other version is refused as helm refuses it.
CHART_VERSIONS = ("v26.7.0", "v26.3.2", "v26.3.1", "v26.3.0", "v25.10.1", "v25.10.0")
NS = "gpu-operator"
DELAY = float(os.environ.get("GPUK8S_LAB_GPU_DELAY", "1"))
SMOKE_DELAY = float(os.environ.get("GPUK8S_LAB_SMOKE_DELAY", "1"))
DEFAULT_DRIVER = "595.91.07"       # driver.version in the v26.7.0 chart's values.yaml
DROP_IN = "/etc/containerd/conf.d/99-nvidia.toml"
PLUGIN_DS = "nvidia-device-plugin-daemonset"
# (DaemonSet, app label) of the operands (gpu-operator assets/state-*/0500_daemonset.yaml)
OPERANDS = (("nvidia-driver-daemonset", "nvidia-driver-daemonset"),
            ("nvidia-container-toolkit-daemonset", "nvidia-container-toolkit-daemonset"),
            (PLUGIN_DS, "nvidia-device-plugin-daemonset"),
            ("gpu-feature-discovery", "gpu-feature-discovery"),
            ("nvidia-operator-validator", "nvidia-operator-validator"))
FAMILY = {"8.9": "ada-lovelace", "9.0": "hopper", "8.0": "ampere", "7.5": "turing", "7.0": "volta"}
# MIG devices per GPU of all-<g>g.* layouts (MIG User Guide), memory per profile of an 80 GB part
MIG_PER_GPU = {1: 7, 2: 3, 3: 2, 4: 1, 7: 1}


# --------------------------------------------------------------------------- shared state

def gstate(c: dict) -> dict:
    return c.setdefault("gpu", {"releases": {}, "objects": {}, "jobs": {}})


def release(c: dict) -> dict | None:
    return gstate(c)["releases"].get(f"{NS}/gpu-operator")


def _host_file(host: str, rel: str) -> str:
    try:
        return (labsim.other_host_dir(host) / rel).read_text()
    except OSError:
        return ""


def node_gpus(host: str) -> list[dict]:
    """The node's GPUs from its fixture (nvidia/gpus: index|bus|name|mem|mig|uuid|devid|cc|serial)."""
    gpus = []
    for ln in _host_file(host, "gpuk8s-lab/nvidia/gpus").splitlines():
        p = ln.split("|")
        if len(p) >= 8:
            gpus.append({"index": p[0], "bus": p[1], "name": p[2], "mem": p[3], "mig": p[4], "uuid": p[5],
                         "cc": p[7]})
    return gpus


def faults(host: str) -> set[str]:
    return set(labsim.host_fixture_of(host).get("gpu_faults") or ())


# --------------------------------------------------------------------------- helm

def _helm_cluster(kc: str | None) -> None:
    """helm reaches the API server as kubectl does (pkg/kube: "kubernetes cluster unreachable")."""
    if not kc or not os.path.exists(kc):
        raise Exit(1, 'Error: kubernetes cluster unreachable: Get "http://localhost:8080/version": dial tcp '
                      '127.0.0.1:8080: connect: connection refused')


def helm(args: list[str]) -> int:
    flags: dict[str, str | bool] = {}
    pos: list[str] = []
    takes = {"--kubeconfig", "-n", "--namespace", "-o", "--output", "--repo", "--version", "-f", "--values",
             "--timeout", "--template"}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and "=" in a:
            k, v = a.split("=", 1)
            flags[k] = v
        elif a in takes and i + 1 < len(args):
            flags[{"-n": "--namespace", "-o": "--output", "-f": "--values"}.get(a, a)] = args[i + 1]
            i += 1
        elif a.startswith("-"):
            flags[a] = True
        else:
            pos.append(a)
        i += 1
    if not pos:
        raise Exit(1, "Error: gpuk8s lab helm simulator needs a command")
    ns = str(flags.get("--namespace") or "default")
    _helm_cluster(flags.get("--kubeconfig") or os.environ.get("KUBECONFIG"))  # type: ignore[arg-type]
    cmd = pos[0]
    write = cmd in ("upgrade", "install", "uninstall")
    with labsim.cluster_lock(shared=not write) as c:
        if not c.get("initialized"):
            raise Exit(1, "Error: kubernetes cluster unreachable: the server has asked for the client to "
                          "provide credentials")
        rels = gstate(c)["releases"]
        if cmd in ("list", "ls"):
            # pkg/cmd/list.go releaseElement: revision is a string, updated is the time's String()
            items = [{"name": r["name"], "namespace": r["namespace"], "revision": str(r["revision"]),
                      "updated": r["updated"], "status": r["status"], "chart": f"gpu-operator-{r['version']}",
                      "app_version": r["version"]}
                     for k, r in sorted(rels.items()) if r["namespace"] == ns]
            if flags.get("--output") == "json":
                out(json.dumps(items, separators=(",", ":")))
            else:
                rows = [["NAME", "NAMESPACE", "REVISION", "UPDATED", "STATUS", "CHART", "APP VERSION"]]
                rows += [[r["name"], r["namespace"], r["revision"], r["updated"], r["status"], r["chart"],
                          r["app_version"]] for r in items]
                out("\n".join("\t".join(x.ljust(8) for x in r) for r in rows))
            return 0
        if cmd == "get" and len(pos) >= 3 and pos[1] == "values":
            r = rels.get(f"{ns}/{pos[2]}")
            if r is None:
                raise Exit(1, "Error: release: not found")
            # pkg/cmd/get_values.go: the user-supplied values; `null` when there are none
            out(json.dumps(r["values"], separators=(",", ":")) if flags.get("--output") == "json"
                else "USER-SUPPLIED VALUES:\n" + labsim.yaml.safe_dump(r["values"]))
            return 0
        if cmd == "status" and len(pos) >= 2:
            r = rels.get(f"{ns}/{pos[1]}")
            if r is None:
                raise Exit(1, "Error: release: not found")
            out(_status_text(r))
            return 0
        if cmd == "upgrade" and len(pos) >= 3 and flags.get("--install"):
            return _upgrade(c, rels, pos[1], pos[2], ns, flags)
    raise Exit(1, f"Error: gpuk8s lab helm simulator does not handle: helm {' '.join(args)}")


def _status_text(r: dict) -> str:
    """pkg/cmd/status.go (statusPrinter.WriteTo)."""
    return (f"NAME: {r['name']}\nLAST DEPLOYED: {r['deployed_text']}\nNAMESPACE: {r['namespace']}\n"
            f"STATUS: {r['status']}\nREVISION: {r['revision']}\nDESCRIPTION: {r['description']}\n"
            "TEST SUITE: None")


def _upgrade(c: dict, rels: dict, name: str, chart: str, ns: str, flags: dict) -> int:
    repo = flags.get("--repo")
    version = flags.get("--version")
    if repo:
        if repo != REPO:
            host = re.sub(r"^https?://", "", str(repo)).split("/", 1)[0]
            raise Exit(1, f'Error: looks like "{repo}" is not a valid chart repository or cannot be reached: '
                          f'Get "{str(repo).rstrip("/")}/index.yaml": dial tcp: lookup {host} on 127.0.0.53:53: '
                          "no such host")
        if chart != "gpu-operator" or version not in CHART_VERSIONS:
            what = f'chart "{chart}"' + (f' version "{version}"' if version else "")
            raise Exit(1, f"Error: {what} not found in {REPO} repository")
    else:
        m = re.search(r"gpu-operator-(v[0-9][^/]*)\.tgz$", chart)
        if not os.path.exists(chart):
            raise Exit(1, f'Error: repo {chart.split("/")[0]} not found' if "/" in chart and not chart.startswith("/")
                       else f"Error: path \"{chart}\" not found")
        if not m or m.group(1) not in CHART_VERSIONS:
            raise Exit(1, f"Error: file '{chart}' does not appear to be a gzipped archive; got "
                          "'application/octet-stream'")
        version = m.group(1)
    values: dict = {}
    vf = flags.get("--values")
    if vf:
        try:
            values = labsim.yaml.safe_load(Path(str(vf)).read_text()) or {}
        except FileNotFoundError:
            raise Exit(1, f"Error: open {vf}: no such file or directory")
    if ns not in _namespaces(c) and not flags.get("--create-namespace"):
        raise Exit(1, f'Error: create: failed to create: namespaces "{ns}" not found')
    key = f"{ns}/{name}"
    old = rels.get(key)
    t = now()
    stamp = labsim.iso(t)
    text = _time_text(t)
    if old is None:
        out(f'Release "{name}" does not exist. Installing it now.')
        r = {"name": name, "namespace": ns, "revision": 1, "description": "Install complete",
             "installed_at": t}
    else:
        r = dict(old, revision=old["revision"] + 1, description="Upgrade complete")
    r.update(version=version, values=values, status="deployed", updated=_list_time(t), deployed_text=text,
             deployed_at=t, stamp=stamp)
    rels[key] = r
    if old is None:   # the device plugin starts with the ConfigMap as it is now
        g = gstate(c)
        g["plugin_started"] = t
        g["plugin_configs"] = _configmap_data(c)
    gstate(c).setdefault("helm_calls", []).append(f"upgrade --install {name} {version}")
    if old is not None:
        out(f'Release "{name}" has been upgraded. Happy Helming!')
    out(_status_text(r))
    return 0


def _time_text(t: float) -> str:
    import time as _t
    return _t.strftime("%a %b %e %H:%M:%S %Y", _t.gmtime(t)).replace("  ", " ")


def _list_time(t: float) -> str:
    """Go's time.Time.String() as helm list prints it: 2026-08-20 10:00:00.123456789 +0000 UTC."""
    import time as _t
    return _t.strftime("%Y-%m-%d %H:%M:%S", _t.gmtime(t)) + f".{int((t % 1) * 1e9):09d} +0000 UTC"


# --------------------------------------------------------------------------- objects kubectl applied

def _namespaces(c: dict) -> set[str]:
    return {k.split("/", 1)[1] for k in (c.get("objects", {}).get("fields") or {}) if k.startswith("namespace/")} \
        | {"default", "kube-system", "kube-public", "kube-node-lease"}


def _obj(c: dict, kind: str, name: str) -> dict | None:
    return gstate(c)["objects"].get(f"{kind}/{name}")


def _configmap_data(c: dict) -> dict:
    """The device-plugin ConfigMap the release names (devicePlugin.config.name)."""
    r = release(c)
    name = (((r or {}).get("values") or {}).get("devicePlugin") or {}).get("config", {}).get("name") \
        if r else None
    cm = _obj(c, "ConfigMap", name) if name else None
    return dict((cm or {}).get("data") or {})


def record_applied(c: dict, files: list[str]) -> None:
    """After labsim's kubectl apply: keep the whole documents of Namespaces and ConfigMaps (kubectl get
    -o json shows them)."""
    for f in files:
        try:
            docs = [d for d in labsim.yaml.safe_load_all(Path(f).read_text()) if isinstance(d, dict)]
        except (OSError, labsim.yaml.YAMLError):
            continue
        for d in docs:
            if d.get("kind") in ("Namespace", "ConfigMap"):
                name = (d.get("metadata") or {}).get("name")
                doc = json.loads(json.dumps(d))
                doc["metadata"].setdefault("creationTimestamp", labsim.iso(now()))
                gstate(c)["objects"][f"{d['kind']}/{name}"] = doc


# --------------------------------------------------------------------------- the operator per node

def _deploy_driver(c: dict, labels: dict) -> bool:
    values = (release(c) or {}).get("values") or {}
    enabled = (values.get("driver") or {}).get("enabled", True)
    return enabled is not False and labels.get("nvidia.com/gpu.deploy.driver") != "false"


def _imports_drop_in(host: str) -> bool:
    """The node's root config.toml imports the toolkit's drop-in directory (or the file)."""
    text = _host_file(host, "containerd/config.toml")
    try:
        data = labsim.tomllib.loads(text) if text else {}
    except labsim.tomllib.TOMLDecodeError:
        return False
    imports = data.get("imports") or []
    return any(i in (DROP_IN, "/etc/containerd/conf.d/*.toml", "/etc/containerd/conf.d/*") for i in imports)


def node_status(c: dict, n: dict) -> dict | None:
    """What the operator has done on one node (None: not a GPU node, or no release yet)."""
    r = release(c)
    host = n["host"]
    gpus = node_gpus(host)
    if not gpus or r is None:
        return None
    fx = labsim.host_fixture_of(host)
    fl = set(fx.get("gpu_faults") or ())
    t = now()
    since = t - r["installed_at"]
    st: dict = {"gpus": gpus, "up": since >= DELAY, "faults": fl}
    host_driver = fx.get("nvidia_driver")
    container = _deploy_driver(c, n["labels"])
    values = r.get("values") or {}
    st["driver_container"] = container
    if container:
        if host_driver or "driver-in-use" in fl:
            # the host's module is loaded (the fault: loaded after preflight, e.g. by a DKMS package
            # at boot): the driver container cannot unload it
            st["driver"] = None
            st["driver_error"] = "driver-in-use"
        else:
            st["driver"] = (values.get("driver") or {}).get("version") or DEFAULT_DRIVER
    else:
        st["driver"] = host_driver
        if not host_driver:
            st["driver_error"] = "no-driver"
    st["runtime"] = "no-runtime" not in fl and _imports_drop_in(host)
    st["ok"] = st["up"] and bool(st["driver"]) and st["runtime"]
    # device plugin: the config of the node's label in the ConfigMap as it was at the last (re)start
    g = gstate(c)
    restarted = g.get("plugin_started", r["installed_at"])
    configs = g.get("plugin_configs") or {}
    if t - restarted < DELAY and g.get("plugin_previous"):
        configs = g["plugin_previous"]
    key = n["labels"].get("nvidia.com/device-plugin.config") or \
        ((values.get("devicePlugin") or {}).get("config") or {}).get("default") or ""
    replicas, rename = 1, False
    cfg_ok = True
    if key:
        try:
            cfg = labsim.yaml.safe_load(configs[key]) or {}
            ts = ((cfg.get("sharing") or {}).get("timeSlicing") or {})
            for res in ts.get("resources") or []:
                if res.get("name") == "nvidia.com/gpu":
                    replicas = int(res.get("replicas") or 1)
            rename = bool(ts.get("renameByDefault"))
        except (KeyError, labsim.yaml.YAMLError, TypeError, ValueError):
            cfg_ok = False   # config-manager: the label names a config the plugin does not have
    healthy = len(gpus) - (1 if "unhealthy-gpu" in fl and gpus else 0)
    mig = n["labels"].get("nvidia.com/mig.config")
    mig_devices = None
    m = re.fullmatch(r"all-(\d)g\.\d+gb", mig or "")
    if m and all(x["mig"] not in ("[N/A]", "") for x in gpus):
        mig_devices = healthy * MIG_PER_GPU.get(int(m.group(1)), 1)
        st["mig_profile"] = mig[4:]
    elif mig and mig != "all-disabled":
        st["mig_failed"] = True
    devices = mig_devices if mig_devices is not None else healthy
    st.update(replicas=replicas if mig_devices is None else 1, rename=rename, cfg_ok=cfg_ok,
              allocatable=(devices * (replicas if mig_devices is None else 1)) if st["ok"] and cfg_ok else 0,
              healthy=healthy, mig_devices=mig_devices)
    return st


def node_overlay(c: dict, n: dict, doc: dict) -> None:
    """Labels NFD and GFD put on the node, and its allocatable/capacity nvidia.com/gpu."""
    st = node_status(c, n)
    if st is None:
        return
    labels = doc["metadata"]["labels"]
    values = (release(c) or {}).get("values") or {}
    if (values.get("nfd") or {}).get("enabled", True) is not False and st["up"]:
        # NFD (node-feature-discovery: source/pci, kernel, system) and the operator's gpu.present
        labels.update({"feature.node.kubernetes.io/pci-10de.present": "true",
                       "feature.node.kubernetes.io/kernel-version.full": doc["status"]["nodeInfo"]["kernelVersion"]})
    if not st["up"] or not any(k.startswith("feature.node.kubernetes.io/pci-10de") for k in labels):
        return
    labels["nvidia.com/gpu.present"] = "true"
    if not st["ok"]:
        return
    g0 = st["gpus"][0]
    product = g0["name"].replace(" ", "-")
    if st.get("mig_profile"):
        product += f"-MIG-{st['mig_profile']}"
    elif st["replicas"] > 1 and not st["rename"]:
        product += "-SHARED"      # GFD: the product of a shared GPU (k8s-device-plugin gfd_labels.md)
    drv = str(st["driver"]).split(".")
    cc = g0["cc"].split(".")
    labels.update({
        "nvidia.com/gpu.product": product, "nvidia.com/gpu.count": str(len(st["gpus"])),
        "nvidia.com/gpu.memory": g0["mem"], "nvidia.com/gpu.replicas": str(st["replicas"]),
        "nvidia.com/gpu.sharing-strategy": "time-slicing" if st["replicas"] > 1 else "none",
        "nvidia.com/gpu.family": FAMILY.get(g0["cc"], "undefined"),
        "nvidia.com/gpu.compute.major": cc[0], "nvidia.com/gpu.compute.minor": cc[-1],
        "nvidia.com/cuda.driver.major": drv[0], "nvidia.com/cuda.driver.minor": drv[1] if len(drv) > 1 else "0",
        "nvidia.com/cuda.driver.rev": drv[2] if len(drv) > 2 else "",
        "nvidia.com/mig.capable": "true" if g0["mig"] not in ("[N/A]", "") else "false",
    })
    if st.get("mig_failed"):
        labels["nvidia.com/mig.config.state"] = "failed"
    elif st.get("mig_profile"):
        labels["nvidia.com/mig.config.state"] = "success"
        labels["nvidia.com/mig.strategy"] = (values.get("mig") or {}).get("strategy", "single")
    res = "nvidia.com/gpu.shared" if st["rename"] and st["replicas"] > 1 else "nvidia.com/gpu"
    for k in ("allocatable", "capacity"):
        doc["status"].setdefault(k, {})[res] = str(st["allocatable"])


# --------------------------------------------------------------------------- pods, logs, events

def _suffix(*parts: str) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()[:5]


def _gpu_nodes(c: dict) -> list[tuple[dict, dict]]:
    out_ = []
    for n in sorted(c.get("nodes", {}).values(), key=lambda n: n["created"]):
        st = node_status(c, n)
        if st is not None:
            out_.append((n, st))
    return out_


def _container(name: str, *, ready: bool, running: bool = True, waiting: str | None = None,
               message: str = "", restarts: int = 0, terminated: bool = False) -> dict:
    if terminated:
        state = {"terminated": {"exitCode": 0, "reason": "Completed"}}
    elif waiting:
        state = {"waiting": {"reason": waiting} | ({"message": message} if message else {})}
    else:
        state = {"running": {"startedAt": labsim.iso(now())}} if running else {"waiting": {"reason": "PodInitializing"}}
    return {"name": name, "ready": ready, "restartCount": restarts, "state": state, "image": "nvcr.io/nvidia/x"}


def _pod(name: str, app: str, node: str, phase: str, containers: list[dict], init: list[dict] | None = None,
         labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": app} | (labels or {})},
            "spec": {"nodeName": node},
            "status": {"phase": phase, "containerStatuses": containers, "initContainerStatuses": init or []}}


def operand_pods(c: dict) -> list[tuple[dict, list[str], list[str]]]:
    """(pod, log lines, event messages) of every operand pod."""
    r = release(c)
    if r is None:
        return []
    pods = [(_pod(f"gpu-operator-{_suffix('op')}-x7k2p", "gpu-operator", sorted(c["nodes"])[0] if c.get("nodes") else "",
                  "Running", [_container("gpu-operator", ready=True)]), ["Reconciling ClusterPolicy"], [])]
    for n, st in _gpu_nodes(c):
        name = n["name"]
        if not st["up"]:
            continue
        drv_logs: list[str] = []
        if st["driver_container"]:
            if st.get("driver_error") == "driver-in-use":
                # NVIDIA/gpu-driver-container ubuntu*/nvidia-driver: _unload_driver
                drv_logs = ["DRIVER_ARCH is x86_64", "Creating directory NVIDIA-Linux-x86_64-" + DEFAULT_DRIVER,
                            "Stopping NVIDIA persistence daemon...", "Unloading NVIDIA driver kernel modules...",
                            "nvidia_modeset       1241088  0", "nvidia              56623104  1 nvidia_modeset",
                            "Could not unload NVIDIA driver kernel modules, driver is in use"]
                restarts = min(5, 1 + int((now() - r["installed_at"]) / max(DELAY, 0.1)))
                pods.append((_pod(f"nvidia-driver-daemonset-{_suffix(name, 'drv')}", "nvidia-driver-daemonset", name,
                                  "Running", [_container("nvidia-driver-ctr", ready=False, waiting="CrashLoopBackOff",
                                                         message="back-off 5m0s restarting failed container",
                                                         restarts=restarts)]), drv_logs, []))
            else:
                drv_logs = [f"Installing NVIDIA driver kernel modules...", f"Done, now waiting for signal"]
                pods.append((_pod(f"nvidia-driver-daemonset-{_suffix(name, 'drv')}", "nvidia-driver-daemonset", name,
                                  "Running", [_container("nvidia-driver-ctr", ready=True)]), drv_logs, []))
        pods.append((_pod(f"nvidia-container-toolkit-daemonset-{_suffix(name, 'tk')}",
                          "nvidia-container-toolkit-daemonset", name, "Running",
                          [_container("nvidia-container-toolkit-ctr", ready=True)]),
                     [f'level=info msg="Config file does not exist; using empty config"' if False else
                      f'level=info msg="Wrote updated config to {DROP_IN}"',
                      'level=info msg="Sending SIGHUP signal to containerd"'], []))
        sandbox = [] if st["runtime"] else [
            'Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox runtime: '
            'no runtime for "nvidia" is configured']
        for ds, app in OPERANDS[2:]:
            pname = f"{ds}-{_suffix(name, ds)}"
            if st["ok"]:
                if ds == PLUGIN_DS and "unhealthy-gpu" in st["faults"]:
                    logs = [f"XidCriticalError: Xid=79 on Device={st['gpus'][-1]['uuid']}; marking device as unhealthy."]
                else:
                    logs = ["all validations are successful"] if app == "nvidia-operator-validator" else \
                        ["Starting GRPC server for 'nvidia.com/gpu'", "Registered device plugin for 'nvidia.com/gpu' "
                         "with Kubelet"] if ds == PLUGIN_DS else ["GFD: labels written"]
                pods.append((_pod(pname, app, name, "Running", [_container(app, ready=True)],
                                  [_container(f"{x}-validation", ready=True, terminated=True)
                                   for x in ("driver", "toolkit", "cuda", "plugin")]
                                  if app == "nvidia-operator-validator" else []), logs, []))
                continue
            reason = "ContainerCreating" if sandbox else "PodInitializing"
            pods.append((_pod(pname, app, name, "Pending", [_container(app, ready=False, waiting=reason)],
                              [_container("driver-validation", ready=False, running=st["runtime"],
                                          waiting=None if st["runtime"] else "PodInitializing")]),
                         ["waiting for the driver to be ready" if not st["driver"] else
                          "waiting for nvidia container stack to be setup"], sandbox))
    for name, j in sorted(gstate(c)["jobs"].items()):
        pods.append((_job_pod(c, name, j), _job_log(c, j), []))
    return pods


def _job_node(c: dict, j: dict) -> dict | None:
    sel = ((j["doc"].get("spec") or {}).get("template") or {}).get("spec", {}).get("nodeSelector") or {}
    return c.get("nodes", {}).get(sel.get("kubernetes.io/hostname", ""))


def _job_request(j: dict) -> tuple[str, int]:
    for ctr in j["doc"]["spec"]["template"]["spec"].get("containers") or []:
        for k, v in ((ctr.get("resources") or {}).get("limits") or {}).items():
            if k.startswith("nvidia.com/"):
                return k, int(v)
    return "", 0


def _job_result(c: dict, j: dict) -> bool | None:
    """True: pod succeeded; False: failed; None: Pending (unschedulable) or still running."""
    n = _job_node(c, j)
    if n is None:
        return None
    st = node_status(c, n)
    res, want = _job_request(j)
    if st is None or not st["ok"] or st["allocatable"] < want:
        return None     # 0/N nodes are available: Insufficient nvidia.com/gpu (stays Pending)
    if now() - j["created"] < SMOKE_DELAY:
        return None
    return True


def _job_log(c: dict, j: dict) -> list[str]:
    if _job_result(c, j) is not True:
        return []
    st = node_status(c, _job_node(c, j))
    _, want = _job_request(j)
    lines = ["== nvidia-smi -L"]
    # the container sees the devices the plugin allocated (a GPU once per request under time-slicing)
    gpus = st["gpus"][:st["healthy"]]
    if st.get("mig_devices"):
        per = st["mig_devices"] // max(1, len(gpus))
        k = 0
        for g in gpus:
            if k >= want:
                break
            lines.append(f"GPU {g['index']}: {g['name']} (UUID: {g['uuid']})")
            for d in range(per):
                if k >= want:
                    break
                lines.append(f"  MIG {st['mig_profile']}     Device  {d}: (UUID: MIG-{_suffix(g['uuid'], str(d))}"
                             f"{_suffix(str(d), g['uuid'])}-0000-0000-0000-000000000000)")
                k += 1
    else:
        for i, g in enumerate(gpus[:want]):
            lines.append(f"GPU {i}: {g['name']} (UUID: {g['uuid']})")
    # cuda-samples Samples/0_Introduction/vectorAdd/vectorAdd.cu
    lines += ["== vectorAdd", "[Vector addition of 50000 elements]",
              "Copy input data from the host memory to the CUDA device",
              "CUDA kernel launch with 196 blocks of 256 threads",
              "Copy output data from the CUDA device to the host memory", "Test PASSED", "Done"]
    return lines


def _job_pod(c: dict, name: str, j: dict) -> dict:
    n = _job_node(c, j)
    res = _job_result(c, j)
    phase = "Succeeded" if res else "Pending"
    ctr = _container("cuda-smoke", ready=False, terminated=bool(res), waiting=None if res else "ContainerCreating")
    return _pod(f"{name}-{_suffix(name, str(j['created']))}", "", (n or {}).get("name", "") if res else "",
                phase, [ctr], labels={"job-name": name, "app.kubernetes.io/name": "gpuk8s-cuda-smoke"})


def _job_json(c: dict, name: str, j: dict) -> dict:
    doc = json.loads(json.dumps(j["doc"]))
    res = _job_result(c, j)
    doc.setdefault("metadata", {})["creationTimestamp"] = labsim.iso(j["created"])
    doc["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]} if res else \
        {"active": 1}
    return doc


def clusterpolicy(c: dict) -> dict:
    """controllers/clusterpolicy_controller.go: state notReady until every operand is ready."""
    nodes = _gpu_nodes(c)
    ready = bool(nodes) and all(st["ok"] for _, st in nodes)
    return {"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "metadata": {"name": "cluster-policy"},
            "spec": {}, "status": {"state": "ready" if ready else "notReady", "namespace": NS}}


# --------------------------------------------------------------------------- kubectl hook

def _list(items: list[dict]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}},
                      indent=4)


def kubectl_hook(c: dict, rest: list[str], ns: str, output: str | None) -> int | None:
    """The GPU layer's kubectl calls; None: not ours (labsim handles it)."""
    verb = rest[0] if rest else ""
    flags = [a for a in rest[1:] if a.startswith("-")]
    words = [a for a in rest[1:] if not a.startswith("-")]
    sel = labsim._flag_value(rest, "-l") or labsim._flag_value(rest, "--selector")
    if sel:
        words = [w for w in words if w != sel]
    if verb == "get" and words:
        kind = words[0].lower()
        if kind in ("clusterpolicies.nvidia.com", "clusterpolicies", "clusterpolicy", "clusterpolicy.nvidia.com"):
            if release(c) is None:
                raise Exit(1, f'error: the server doesn\'t have a resource type "{words[0].split(".")[0]}"')
            out(_list([clusterpolicy(c)]))
            return 0
        if ns == NS and kind in ("pods", "pod", "po", "events", "event", "ev", "jobs", "job", "jobs.batch"):
            if kind.startswith("po"):
                items = [p for p, _, _ in operand_pods(c)]
            elif kind.startswith("ev"):
                items = [{"kind": "Event", "reason": "FailedCreatePodSandBox", "type": "Warning", "message": m,
                          "involvedObject": {"kind": "Pod", "name": p["metadata"]["name"], "namespace": NS}}
                         for p, _, evs in operand_pods(c) for m in evs]
            else:
                items = [_job_json(c, n, j) for n, j in sorted(gstate(c)["jobs"].items())]
            if sel:
                k, _, v = sel.partition("=")
                items = [i for i in items if ((i.get("metadata") or {}).get("labels") or {}).get(k) == v]
            if output != "json":
                raise Exit(1, "error: the gpuk8s lab kubectl simulates gpu-operator objects with -o json only")
            out(_list(items))
            return 0
        refs = [w for w in words if "/" in w]
        if refs and len(refs) == len(words) and all(w.split("/")[0].lower() in ("namespace", "configmap", "ns", "cm")
                                                   for w in refs):
            found = []
            for w in refs:
                k, name = w.split("/", 1)
                kind_ = "Namespace" if k.lower() in ("namespace", "ns") else "ConfigMap"
                o = _obj(c, kind_, name)
                if o is None and kind_ == "Namespace" and name in _namespaces(c):
                    o = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
                if o is None:
                    if "--ignore-not-found" not in flags:
                        raise Exit(1, f'Error from server (NotFound): {k.lower()}s "{name}" not found')
                    continue
                found.append(o)
            if output == "json" and found:
                out(json.dumps(found[0], indent=4) if len(refs) == 1 else _list(found))
            return 0
        return None
    if verb == "logs" and ns == NS and words:
        target = words[0]
        pods = operand_pods(c)
        if target.startswith("job/"):
            jname = target[4:]
            j = gstate(c)["jobs"].get(jname)
            if j is None:
                raise Exit(1, f'Error from server (NotFound): jobs.batch "{jname}" not found')
            logs = _job_log(c, j)
            if not logs:
                raise Exit(1, f'Error from server (BadRequest): container "cuda-smoke" in pod '
                              f'"{_job_pod(c, jname, j)["metadata"]["name"]}" is waiting to start: ContainerCreating')
        else:
            hit = [(p, lg) for p, lg, _ in pods if p["metadata"]["name"] == target]
            if not hit:
                raise Exit(1, f'Error from server (NotFound): pods "{target}" not found')
            logs = hit[0][1]
        tail = labsim._flag_value(rest, "--tail")
        if tail and tail.isdigit():
            logs = logs[-int(tail):]
        if logs:
            out("\n".join(logs))
        return 0
    if verb == "rollout" and len(words) >= 2 and words[0] == "restart" and ns == NS:
        kind, _, name = words[1].partition("/")
        if kind not in ("daemonset", "ds", "daemonsets") or release(c) is None or \
                name not in {d for d, _ in OPERANDS}:
            raise Exit(1, f'Error from server (NotFound): daemonsets.apps "{name}" not found')
        if name == PLUGIN_DS:   # the restarted plugin reads the ConfigMap as it is now
            g = gstate(c)
            g["plugin_previous"] = g.get("plugin_configs") or {}
            g["plugin_started"] = now()
            g["plugin_configs"] = _configmap_data(c)
            g.setdefault("restarts", []).append(now())
        out(f"daemonset.apps/{name} restarted")
        return 0
    if verb == "delete" and words and words[0] in ("job", "jobs", "jobs.batch") and ns == NS:
        for name in words[1:]:
            if gstate(c)["jobs"].pop(name, None) is not None:
                out(f'job.batch "{name}" deleted')
            elif "--ignore-not-found" not in flags:
                raise Exit(1, f'Error from server (NotFound): jobs.batch "{name}" not found')
        return 0
    if verb == "apply" and labsim._flag_value(rest, "-f"):
        f = labsim._flag_value(rest, "-f")
        try:
            docs = [d for d in labsim.yaml.safe_load_all(Path(f).read_text()) if isinstance(d, dict)]
        except (OSError, labsim.yaml.YAMLError):
            return None
        if docs and all((d.get("apiVersion"), d.get("kind")) == ("batch/v1", "Job") for d in docs):
            for d in docs:
                md = d.get("metadata") or {}
                name, jns = md.get("name"), md.get("namespace") or ns
                tmpl = ((d.get("spec") or {}).get("template") or {}).get("spec") or {}
                if not name or not tmpl.get("containers") or tmpl.get("restartPolicy") not in ("Never", "OnFailure"):
                    raise Exit(1, f'The Job "{name}" is invalid: spec.template.spec.restartPolicy: Required value: '
                                  'valid values: "OnFailure", "Never"')
                if jns != NS:
                    raise Exit(1, f'Error from server (NotFound): namespaces "{jns}" not found')
                jobs = gstate(c)["jobs"]
                if name in jobs:
                    out(f"job.batch/{name} unchanged")
                else:
                    jobs[name] = {"doc": d, "created": now()}
                    out(f"job.batch/{name} created")
            return 0
    return None


# --------------------------------------------------------------------------- on the node itself

def drop_in_text(root: dict) -> str:
    """What the toolkit writes (nvidia-container-toolkit pkg/config/engine/containerd, config_v2.go /
    config.go): the runtimes.nvidia table in the root file's config version, runc's options copied."""
    version = root.get("version", 1)
    plugin = "io.containerd.cri.v1.runtime" if version >= 3 else "io.containerd.grpc.v1.cri"
    runc = ((((root.get("plugins") or {}).get(plugin) or {}).get("containerd") or {}).get("runtimes") or {}).get("runc") or {}
    systemd = bool((runc.get("options") or {}).get("SystemdCgroup"))
    t = f'[plugins."{plugin}".containerd.runtimes.nvidia]'
    return (f"version = {version}\n\n{t}\n  privileged_without_host_devices = false\n"
            f'  runtime_type = "io.containerd.runc.v2"\n\n'
            f'[plugins."{plugin}".containerd.runtimes.nvidia.options]\n'
            f'  BinaryName = "/usr/local/nvidia/toolkit/nvidia-container-runtime"\n'
            f"  SystemdCgroup = {'true' if systemd else 'false'}\n")


def sync_node() -> None:
    """On a GPU node: the toolkit pod (when it runs there) has written its drop-in."""
    me = labsim.host_name()
    try:
        with labsim.cluster_lock(shared=True) as c:
            n = next((x for x in (c.get("nodes") or {}).values() if x.get("host") == me), None)
            st = node_status(c, n) if n is not None else None
    except (OSError, ValueError):
        return
    if st is None or not st["up"] or "no-runtime" in st["faults"]:
        return
    p = Path(DROP_IN)
    if p.exists():
        return
    try:
        root = labsim.tomllib.loads(labsim.CONTAINERD_CONFIG.read_text())
    except (OSError, labsim.tomllib.TOMLDecodeError):
        root = {}
    labsim.write(p, drop_in_text(root))


# --------------------------------------------------------------------------- containerd imports

def containerd_imports(dumped: dict, root_version: int) -> dict:
    """`imports` of the root file as containerd loads them (containerd v2.1.4
    cmd/containerd/server/config/config.go LoadConfig/resolveImports: each entry relative to the
    root file's directory, globs expanded in order, each file merged over what came before with
    mergeConfig (plugin tables deeply), and the dump's `imports` listing the root file and every
    file loaded). A drop-in whose version is higher than the root's is refused (the message
    DOMAIN 6 #19 quotes)."""
    import glob
    root = str(labsim.CONTAINERD_CONFIG)
    loaded = [root]
    for pattern in dumped.get("imports") or []:
        if not isinstance(pattern, str):
            continue
        if not os.path.isabs(pattern):
            pattern = os.path.join(os.path.dirname(root), pattern)
        paths = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else [pattern]
        for p in paths:
            if p in loaded:
                continue
            try:
                data = labsim.tomllib.loads(Path(p).read_text())
            except FileNotFoundError:
                raise Exit(1, f"containerd: failed to load TOML from {p}: open {p}: no such file or directory")
            except labsim.tomllib.TOMLDecodeError as e:
                raise Exit(1, f"containerd: failed to load TOML from {p}: {e}")
            v = data.get("version", 0)
            if isinstance(v, int) and v > root_version:
                raise Exit(1, f"containerd: failed to load config: drop-in config version {v} higher than "
                              f"root config version {root_version}: {p}")
            data.pop("version", None)
            data.pop("imports", None)
            dumped = labsim._merged(dumped, data)
            loaded.append(p)
    dumped["imports"] = loaded
    return dumped
