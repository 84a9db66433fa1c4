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

import hashlib
import json
import os
import re
from pathlib import Path

import labsim
from labsim import Exit, now, out

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


# --------------------------------------------------------------------------- the driver container on a host
# What the driver container meets on a node, derived from the host's own state (its OS, kernel,
# Secure Boot, nouveau), in the order the real pod runs: the k8s-driver-manager init container,
# the image pull of nvidia-driver-ctr, then `nvidia-driver init`.

DRIVER_IMAGE = "nvcr.io/nvidia/driver"
# The OS tags NVIDIA builds driver images for (NVIDIA/gpu-driver-container .common-ci.yml
# @06a208ca, the `.dist-*` DIST values); any other `<version>-<os tag>` does not exist.
DRIVER_IMAGE_DISTS = ("ubuntu22.04", "ubuntu24.04", "ubuntu26.04", "rhel8", "rhel9", "rhel10",
                      "rocky8", "rocky9", "rocky10")
# Kernel series each Ubuntu release's archive ships headers for (GA and HWE kernels), and the
# flavours Canonical builds (linux-headers-<ver>-<abi>-<flavour>); a custom build is in none.
UBUNTU_KERNEL_SERIES = {"22.04": ("5.15", "6.2", "6.5", "6.8"), "24.04": ("6.8", "6.11", "6.14", "6.17"),
                        "26.04": ("6.17", "6.18", "6.19")}
UBUNTU_FLAVOURS = ("generic", "generic-64k", "lowlatency", "lowlatency-64k", "nvidia", "nvidia-64k",
                   "aws", "azure", "gcp", "gke", "oracle", "kvm", "ibm")


def host_os(host: str) -> tuple[str, str]:
    """(ID, VERSION_ID) of the host's /etc/os-release."""
    vals = {}
    for ln in _host_file(host, "os-release").splitlines():
        k, sep, v = ln.partition("=")
        if sep:
            vals[k.strip()] = v.strip().strip("\"'")
    return vals.get("ID", ""), vals.get("VERSION_ID", "")


def os_tag(host: str) -> str:
    """controllers/state_manager.go getGPUNodeOSInfo (gpu-operator v26.7.0): ID + VERSION_ID from
    NFD's system-os_release labels, the major version only for ol, rocky and rhel."""
    os_id, ver = host_os(host)
    if os_id in ("ol", "rocky", "rhel"):
        ver = ver.split(".")[0]
    return f"{os_id}{ver}"


def cluster_os_tag(c: dict) -> str:
    """One OS tag for the whole ClusterPolicy: getGPUNodeOSInfo lists the nodes labelled
    nvidia.com/gpu.present=true with Limit 1 (the API server returns them by name) and takes the
    first one's OS; resolveDriverTag appends it to every driver pod's image (object_controls.go
    `image = fmt.Sprintf("%s-%s", image, n.gpuNodeOSTag)`). Hence "the same OS on all GPU nodes"."""
    for name in sorted(c.get("nodes") or {}):
        host = c["nodes"][name].get("host") or name
        if node_gpus(host):
            return os_tag(host)
    return ""


def _host_kernel(host: str) -> str:
    return _host_file(host, "gpuk8s-lab/kernel").strip()


def headers_available(tag: str, kernel: str) -> bool:
    """Whether the driver image's package repositories have headers for the running kernel.
    ubuntu*/nvidia-driver `_resolve_kernel_version`: `apt-cache show linux-headers-$(uname -r)`
    in the image's Ubuntu archive; rhel*/nvidia-driver: `yum list available kernel-headers` of
    the image's RHEL release (NVIDIA/gpu-driver-container @06a208ca)."""
    if tag.startswith("ubuntu"):
        m = re.fullmatch(r"(\d+\.\d+)\.\d+-\d+-([a-z0-9-]+)", kernel)
        return bool(m) and m.group(2) in UBUNTU_FLAVOURS and \
            m.group(1) in UBUNTU_KERNEL_SERIES.get(tag[len("ubuntu"):], ())
    m = re.match(r"(rhel|rocky)(\d+)$", tag)
    if m:
        return re.fullmatch(rf"\d+\.\d+\.\d+-[0-9.]+\.el{m.group(2)}(_\d+)?\.(x86_64|aarch64)", kernel) is not None
    return False


def driver_container_error(c: dict, host: str, fx: dict, version: str) -> tuple[str, str] | None:
    """(fault, detail) of the driver pod on a node without a host driver; None: it installs."""
    # k8s-driver-manager uninstall_driver (NVIDIA/k8s-driver-manager v0.12.0 cmd/driver-manager/
    # main.go): with no NVIDIA driver loaded it unloads nouveau (unix.DeleteModule("nouveau", 0));
    # the kernel refuses a module whose use count is not 0 with EWOULDBLOCK (kernel/module/main.c
    # try_stop_module), and the init container exits with log.Fatal.
    if fx.get("nouveau") and fx.get("nouveau_in_use"):
        return "nouveau", ""
    tag = cluster_os_tag(c)
    image = f"{DRIVER_IMAGE}:{version}-{tag}"
    if tag not in DRIVER_IMAGE_DISTS:
        return "image-pull", image
    kernel = _host_kernel(host)
    if kernel and not headers_available(tag, kernel):   # "": the fixture shows this machine's kernel
        return "kernel-headers", kernel
    # The module the container builds is unsigned (no PRIVATE_KEY given); Ubuntu's and RHEL's
    # kernels enforce module signatures under UEFI Secure Boot, so the kernel refuses it:
    # kernel/module/signing.c module_sig_check -> "Loading of unsigned module is rejected",
    # -EKEYREJECTED ("Key was rejected by service"; NVIDIA/gpu-operator#1726 on Ubuntu 24.04).
    if fx.get("secure_boot"):
        return "secure-boot", kernel
    return None


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
        version = (values.get("driver") or {}).get("version") or DEFAULT_DRIVER
        if host_driver or "driver-in-use" in fl:
            # the host's module is loaded (the fault: loaded after preflight, e.g. by a DKMS package
            # at boot): the driver container cannot unload it
            st["driver"] = None
            st["driver_error"] = "driver-in-use"
        elif (bad := driver_container_error(c, host, fx, version)) is not None:
            st["driver"] = None
            st["driver_error"], st["driver_detail"] = bad
            st["driver_version_wanted"] = version
        else:
            st["driver"] = version
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
            elif st.get("driver_error") in DRIVER_FAULT_LOGS:
                pods.append(_failing_driver_pod(c, r, name, st))
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
        pod = _job_pod(c, name, j)
        term = ((pod["status"]["containerStatuses"][0].get("state") or {}).get("terminated") or {})
        # kubelet: a container that fails to start -> event Failed "Error: <runtime error>"
        evs = [("Failed", f"Error: {term['message']}")] if term.get("reason") == "StartError" else []
        pods.append((pod, _job_log(c, j), evs))
    return pods


def _driver_manager_log(t: float, lines: list[tuple[str, str]]) -> list[str]:
    """k8s-driver-manager's logrus TextFormatter{FullTimestamp, DisableQuote} lines."""
    return [f"time={labsim.iso(t)} level={lvl} msg={msg}" for lvl, msg in lines]


_DM_START = [("info", "Starting driver uninstallation process"),
             ("info", "No NVIDIA driver loaded, skipping eviction of GPU clients and workloads")]


def _driver_ctr_log(version: str, kernel: str) -> list[str]:
    """ubuntu24.04/nvidia-driver init() up to _resolve_kernel_version (gpu-driver-container @06a208ca):
    _unload_driver and _unmount_rootfs echo unconditionally."""
    return ["DRIVER_ARCH is x86_64", "", "========== NVIDIA Software Installer ==========", "",
            f"Starting installation of NVIDIA driver version {version} for Linux kernel version {kernel}", "",
            "Unloading NVIDIA driver kernel modules...", "Unmounting NVIDIA driver rootfs...",
            "Updating the package cache...", "Resolving Linux kernel version..."]


def _kernel_headers_log(version: str, kernel: str) -> list[str]:
    # _resolve_kernel_version: `apt-cache show linux-headers-${KERNEL_VERSION}` is empty ->
    # "Could not resolve Linux kernel version" >&2; return 1 -> `|| exit 1`; the EXIT trap's
    # _shutdown runs _unload_driver and _unmount_rootfs again.
    return _driver_ctr_log(version, kernel) + [
        "Could not resolve Linux kernel version", "Unloading NVIDIA driver kernel modules...",
        "Unmounting NVIDIA driver rootfs..."]


def _secure_boot_log(version: str, kernel: str) -> list[str]:
    # The headers install, nvidia-installer builds with --skip-module-load (branch >= 550), then
    # _load_driver runs `set -o xtrace; modprobe nvidia` and the kernel rejects the unsigned module;
    # `set -e` ends the script (kmod's "modprobe: ERROR: could not insert '%s': %s" with
    # strerror(EKEYREJECTED)).
    return _driver_ctr_log(version, kernel) + [
        f"Proceeding with Linux kernel version {kernel}", "Installing Linux kernel headers...",
        "Installing Linux kernel module files...", "Generating Linux kernel version string...",
        "Parsing kernel module parameters...",
        "Configuring the following firmware search path in '/sys/module/firmware_class/parameters/path': "
        "/run/nvidia/driver/lib/firmware",
        "Loading ipmi and i2c_core kernel modules...", "Loading NVIDIA driver kernel modules...",
        "+ modprobe nvidia", "modprobe: ERROR: could not insert 'nvidia': Key was rejected by service",
        "Unloading NVIDIA driver kernel modules...", "Unmounting NVIDIA driver rootfs..."]


DRIVER_FAULT_LOGS = {"kernel-headers": _kernel_headers_log, "secure-boot": _secure_boot_log,
                     "nouveau": None, "image-pull": None}


def _failing_driver_pod(c: dict, r: dict, name: str, st: dict) -> tuple[dict, list[str], list]:
    """The driver DaemonSet's pod on a node where it fails, with its logs and events."""
    t0 = r["installed_at"]
    restarts = min(5, 1 + int((now() - t0) / max(DELAY, 0.1)))
    pname = f"nvidia-driver-daemonset-{_suffix(name, 'drv')}"
    fault, version = st["driver_error"], st["driver_version_wanted"]
    dm_done = _container("k8s-driver-manager", ready=False, terminated=True)
    dm_logs = _driver_manager_log(t0, _DM_START + [("info", "Driver uninstallation completed successfully")])
    if fault == "nouveau":
        # k8s-driver-manager: log.Fatal(fmt.Errorf("failed to unload nouveau driver: %w", err)),
        # EWOULDBLOCK from delete_module: Go's "resource temporarily unavailable"; the init
        # container restarts (Init:CrashLoopBackOff) and nvidia-driver-ctr never starts.
        logs = _driver_manager_log(t0, _DM_START + [
            ("info", "Unloading nouveau driver"),
            ("fatal", "failed to unload nouveau driver: resource temporarily unavailable")])
        init = [_container("k8s-driver-manager", ready=False, waiting="CrashLoopBackOff",
                           message=f"back-off 5m0s restarting failed container=k8s-driver-manager pod={pname}",
                           restarts=restarts)]
        main = [_container("nvidia-driver-ctr", ready=False, running=False)]
        return _pod(pname, "nvidia-driver-daemonset", name, "Pending", main, init), logs, []
    if fault == "image-pull":
        # kubelet pkg/kubelet/images/image_manager.go (events Failed / BackOff, waiting reasons
        # ErrImagePull <-> ImagePullBackOff) with containerd v2.1.4's error (internal/cri/server/
        # images/image_pull.go "failed to pull and unpack image %q", "failed to resolve reference
        # %q"; core/remotes/docker/resolver.go: "<ref>: not found" for a tag the registry lacks).
        image = st["driver_detail"]
        why = (f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": failed to '
               f'resolve reference "{image}": {image}: not found')
        main = [_container("nvidia-driver-ctr", ready=False, waiting="ImagePullBackOff",
                           message=f'Back-off pulling image "{image}"')]
        evs = [("Failed", f'Failed to pull image "{image}": {why}'), ("Failed", "Error: ErrImagePull"),
               ("BackOff", f'Back-off pulling image "{image}"'), ("Failed", "Error: ImagePullBackOff")]
        return _pod(pname, "nvidia-driver-daemonset", name, "Pending", main, [dm_done]), dm_logs, evs
    logs = dm_logs + DRIVER_FAULT_LOGS[fault](version, st["driver_detail"])
    main = [_container("nvidia-driver-ctr", ready=False, waiting="CrashLoopBackOff",
                       message=f"back-off 5m0s restarting failed container=nvidia-driver-ctr pod={pname}",
                       restarts=restarts)]
    return _pod(pname, "nvidia-driver-daemonset", name, "Running", main, [dm_done]), logs, []


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
    if cuda_requirement_error(st, j):
        return False
    return "cuda-fail" not in st["faults"]   # the fault: vectorAdd fails on this node


# The newest CUDA each driver branch supports (CUDA Toolkit release notes, table 3).
DRIVER_CUDA = {450: (11, 0), 470: (11, 4), 515: (11, 7), 520: (11, 8), 525: (12, 0), 530: (12, 1),
               535: (12, 2), 545: (12, 3), 550: (12, 4), 555: (12, 5), 560: (12, 6), 565: (12, 7),
               570: (12, 8), 575: (12, 9), 580: (13, 0), 590: (13, 1), 595: (13, 1)}
# Branches an image's NVIDIA_REQUIRE_CUDA also accepts through its forward-compatibility
# alternatives (`brand=tesla,driver>=535,driver<536 ...`): the CUDA 12.5 images list 470, 535
# and 550 (nvidia/cuda dist/12.5.*/ubuntu2204/base/Dockerfile ENV NVIDIA_REQUIRE_CUDA).
FORWARD_COMPAT = {(12, 5): (470, 535, 550)}


def cuda_requirement_error(st: dict, j: dict) -> str | None:
    """nvidia-container-cli's check of the image's NVIDIA_REQUIRE_CUDA against the node's driver
    (libnvidia-container src/cli/common.c: "requirement error: unsatisfied condition: %s, please
    update your driver to a newer version, or use an earlier cuda container"; space-separated
    alternatives are ORed). None: satisfied."""
    image = next((x.get("image") or "" for x in j["doc"]["spec"]["template"]["spec"].get("containers") or []), "")
    m = re.search(r"cuda(\d+)\.(\d+)", image)
    try:
        branch = int(str(st.get("driver") or "").split(".")[0])
    except ValueError:
        return None
    if not m:
        return None
    need = (int(m.group(1)), int(m.group(2)))
    have = DRIVER_CUDA.get(branch) or max((v for b, v in DRIVER_CUDA.items() if b <= branch), default=(0, 0))
    if have >= need or branch in FORWARD_COMPAT.get(need, ()):
        return None
    return f"cuda>={need[0]}.{need[1]}"


def _job_log(c: dict, j: dict) -> list[str]:
    res = _job_result(c, j)
    n = _job_node(c, j)
    if res is False and n and cuda_requirement_error(node_status(c, n) or {}, j):
        return []
    if res is False:
        # cuda-samples vectorAdd.cu: "Failed to allocate device vector A (error code %s)!" with
        # cudaGetErrorString(cudaErrorInsufficientDriver); the Job's script cats its log, exits 1
        return ["== nvidia-smi -L", "== vectorAdd", "[Vector addition of 50000 elements]",
                "Failed to allocate device vector A (error code CUDA driver version is insufficient for "
                "CUDA runtime version)!"]
    if res is not True:
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


def _start_error(cuda: str) -> str:
    return ("failed to create containerd task: failed to create shim task: OCI runtime create failed: runc "
            "create failed: unable to start container process: error during container init: error running "
            "prestart hook #0: exit status 1, stdout: , stderr: Auto-detected mode as 'legacy'\n"
            f"nvidia-container-cli: requirement error: unsatisfied condition: {cuda}, please update your "
            "driver to a newer version, or use an earlier cuda container: unknown")


def _job_pod(c: dict, name: str, j: dict) -> dict:
    n = _job_node(c, j)
    res = _job_result(c, j)
    phase = "Succeeded" if res else "Failed" if res is False else "Pending"
    ctr = _container("cuda-smoke", ready=False, terminated=bool(res), waiting=None if res else "ContainerCreating")
    cuda = cuda_requirement_error(node_status(c, n) or {}, j) if res is False and n else None
    if cuda:
        # the toolkit's prestart hook fails in runc create: the container never starts and the
        # kubelet reports StartError with containerd's message (NVIDIA/nvidia-container-toolkit#152)
        ctr["state"] = {"terminated": {"exitCode": 128, "reason": "StartError", "message": _start_error(cuda)}}
    return _pod(f"{name}-{_suffix(name, str(j['created']))}", "", (n or {}).get("name", "") if res else "",
                phase, [ctr], labels={"job-name": name, "app.kubernetes.io/name": "gpuk8s-cuda-smoke"})


def _job_json(c: dict, name: str, j: dict) -> dict:
    doc = json.loads(json.dumps(j["doc"]))
    res = _job_result(c, j)
    doc.setdefault("metadata", {})["creationTimestamp"] = labsim.iso(j["created"])
    # A failed Job: backoffLimit+1 failed pods, then condition Failed / BackoffLimitExceeded
    # (kubernetes pkg/controller/job/job_controller.go: "Job has reached the specified backoff limit")
    limit = int((j["doc"].get("spec") or {}).get("backoffLimit", 6))
    doc["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]} if res else \
        {"failed": limit + 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                              "message": "Job has reached the specified backoff limit"}]} \
        if res is False else {"active": 1}
    return doc


def clusterpolicy(c: dict) -> dict:
    """controllers/clusterpolicy_controller.go: state notReady until every operand is ready."""
    nodes = _gpu_nodes(c)
    ready = bool(nodes) and all(st["ok"] for _, st in nodes)
    return {"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "metadata": {"name": "cluster-policy"},
            "spec": {}, "status": {"state": "ready" if ready else "notReady", "namespace": NS}}


# --------------------------------------------------------------------------- kubectl hook

# kube-controller-manager publishes the cluster CA as this ConfigMap in every namespace
# (kubernetes/kubernetes pkg/controller/certificates/rootcacertpublisher/publisher.go, v1.36.0).
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"


def list_items(c: dict, kind: str, ns: str) -> list[dict] | None:
    """The GPU layer's types in one `kubectl get A,B,C [-n ns] -o json` List (labsim._list_items);
    None: not a type of ours. ClusterPolicy is a CRD the chart installs: unknown before it, and
    kubectl then refuses the whole call, as for Calico's types."""
    if kind in ("clusterpolicies.nvidia.com", "clusterpolicies", "clusterpolicy", "clusterpolicy.nvidia.com"):
        if release(c) is None:
            raise Exit(1, f'error: the server doesn\'t have a resource type "{kind.split(".")[0]}"')
        return [clusterpolicy(c)]
    if kind in ("namespaces", "namespace", "ns"):   # cluster-scoped: -n does not limit them
        stored = {n: _obj(c, "Namespace", n) for n in _namespaces(c) | {
            k.split("/", 1)[1] for k in gstate(c)["objects"] if k.startswith("Namespace/")}}
        return [o or {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}, "status": {"phase": "Active"}}
                for n, o in sorted(stored.items())]
    if kind in ("configmaps", "configmap", "cm"):
        names = _namespaces(c) | {k.split("/", 1)[1] for k in gstate(c)["objects"] if k.startswith("Namespace/")}
        if ns not in names:
            return []
        items = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": ns},
                  "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\n(lab)\n-----END CERTIFICATE-----\n"}}]
        for key, o in sorted(gstate(c)["objects"].items()):
            if key.startswith("ConfigMap/") and ((o.get("metadata") or {}).get("namespace") or "default") == ns:
                items.append(o)
        return items
    if kind in ("pods", "pod", "po"):
        if ns != NS:
            raise Exit(1, "error: the gpuk8s lab kubectl lists pods of several types in the gpu-operator namespace only")
        return [p for p, _, _ in operand_pods(c)]
    return None



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
                # an event is its message (FailedCreatePodSandBox) or (reason, message)
                items = [{"kind": "Event", "reason": e[0] if isinstance(e, tuple) else "FailedCreatePodSandBox",
                          "type": "Normal" if isinstance(e, tuple) and e[0] == "BackOff" else "Warning",
                          "message": e[1] if isinstance(e, tuple) else e,
                          "involvedObject": {"kind": "Pod", "name": p["metadata"]["name"], "namespace": NS}}
                         for p, _, evs in operand_pods(c) for e in evs]
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
            n_ = _job_node(c, j)
            if not logs and _job_result(c, j) is False and n_ and cuda_requirement_error(node_status(c, n_) or {}, j):
                return 0    # the container never started: its log file is empty
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
        # `-f` may be repeated (kubectl apply: "-f, --filename=[]"), each file's objects in order
        files = [rest[j + 1] for j, a in enumerate(rest) if a in ("-f", "--filename") and j + 1 < len(rest)]
        try:
            docs = [d for f in files for d in labsim.yaml.safe_load_all(Path(f).read_text()) if isinstance(d, dict)]
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
    if Path(DROP_IN).exists():   # nothing to write (checked below too): skip reading the cluster
        return
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
    # The toolkit container writes its drop-in when it starts (nvidia-container-toolkit
    # cmd/nvidia-ctk-installer: setup at start-up, no watch): once per release here, so a drop-in
    # removed later stays gone, as on a real node, until the toolkit pod restarts.
    marker = labsim.STATE / "toolkit-drop-in"
    with labsim.cluster_lock(shared=True) as c:
        stamp = str((release(c) or {}).get("installed_at", ""))
    try:
        wrote = marker.read_text()
    except OSError:
        wrote = ""
    if p.exists() or wrote == stamp:
        return
    try:
        root = labsim.tomllib.loads(labsim.CONTAINERD_CONFIG.read_text())
    except (OSError, labsim.tomllib.TOMLDecodeError):
        root = {}
    labsim.write(p, drop_in_text(root))
    labsim.write(marker, stamp)


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
