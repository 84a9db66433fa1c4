"""The GPU Operator's failure signatures in the lab, each produced by sim/gpuop.py from the host's
own state the way the real operand fails, and diagnosed by `gpuk8s up` with its fix:

- one `up` with three faulty GPU workers (a custom kernel without headers, Secure Boot on, nouveau
  in use): one failure report naming every node with its own signature and the quoted log line;
- a CUDA smoke image newer than a host driver: the smoke Job cannot start its container and `up`
  reports the toolkit's "unsatisfied condition" with its fix; then a Debian 12 GPU worker joins,
  the operator names the driver image after it (`<version>-debian12`), which does not exist:
  ErrImagePull, diagnosed with the missing-image fix.

Two small labs (the CUDA case needs a rollout that succeeds, which the first lab's broken nodes
prevent for the whole ClusterPolicy).
"""

from __future__ import annotations

import json
import re

import pytest

from tests.lab.fixture import GPU, HostFixture
from tests.lab.test_up_lab import ADMIN, up

WAIT = ("--wait-timeout", "20")


def flat(r) -> str:
    """stdout+stderr without the terminal's box borders and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", r.stdout + "\n" + r.stderr).split())


def out_of(r) -> str:
    return r.stderr[-4000:] + "\n---stdout---\n" + r.stdout[-4000:]


def blocks(r) -> dict[str, str]:
    """The diagnosis blocks of the failure report, by node: `[node] pod NAME (...): sig ...`."""
    # the report alone (up's table on stdout, up to the log line): the last block must not run on
    # into the progress lines on stderr, whichever node the report happens to list last
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", r.stdout).split()).split("full log (secrets redacted)")[0]
    parts = re.split(r"(?=\[(?:gpu-[a-z0-9-]+|-)\] pod )", text)
    found: dict[str, str] = {}
    for p in parts[1:]:
        node = p[1:p.index("]")]
        found[node] = found.get(node, "") + " " + p
    return found


# --------------------------------------------------------------------------- three broken nodes, one up


@pytest.fixture(scope="module")
def brokenlab(lab_factory):
    return lab_factory([
        HostFixture.bare("cp-1", roles=("control-plane",), helm="4.2.3"),
        # a kernel the user built: Ubuntu's archive has no linux-headers for it
        HostFixture.bare("gpu-hdr", gpus=[GPU("L4")], kernel="6.8.0-1015-custom"),
        # UEFI Secure Boot on, no host driver: the driver container builds an unsigned module
        HostFixture.bare("gpu-sb", gpus=[GPU("L4")], secure_boot=True),
        # nouveau bound to the GPU and held by a process: k8s-driver-manager cannot unload it
        HostFixture.bare("gpu-nv", gpus=[GPU("L4")], nouveau=True, nouveau_in_use=True),
        # nouveau loaded but idle: the real k8s-driver-manager unloads it and the install goes on
        HostFixture.bare("gpu-nvok", gpus=[GPU("L4")], nouveau=True),
    ])


def test_three_driver_faults_diagnosed_per_node(brokenlab, tmp_path):
    inv = brokenlab.write_inventory(tmp_path / "inv.yaml")
    # preflight refuses Secure Boot with the driver container and a loaded nouveau: get past it
    r = up(inv, tmp_path, *WAIT, "--ignore", "secure-boot", "--ignore", "nouveau-off")
    assert r.returncode != 0, out_of(r)
    text = flat(r)
    assert "wait for GPU Operator" in text and "the GPU Operator's rollout is failing" in text, out_of(r)
    got = blocks(r)
    # one failure report: every broken node, each with its own signature, quoted line and fix
    hdr, sb, nv = got.get("gpu-hdr", ""), got.get("gpu-sb", ""), got.get("gpu-nv", "")
    assert "kernel-headers" in hdr and "| Could not resolve Linux kernel version" in hdr, out_of(r)
    assert "boot a kernel the driver container supports" in hdr, out_of(r)
    assert "secure-boot" in sb, out_of(r)
    assert "| modprobe: ERROR: could not insert 'nvidia': Key was rejected by service" in sb, out_of(r)
    assert "disable Secure Boot" in sb, out_of(r)
    assert "nouveau" in nv and "failed to unload nouveau driver: resource temporarily unavailable" in nv, \
        out_of(r)
    assert "blacklist-nouveau.conf" in nv, out_of(r)
    # and no node is blamed for another's fault
    assert "Key was rejected" not in hdr + nv and "Could not resolve" not in sb + nv, out_of(r)
    assert "kernel-headers" not in sb + nv and "secure-boot" not in hdr + nv, out_of(r)
    # the pods waiting on each failing driver pod are folded into one line per node
    for n in ("gpu-hdr", "gpu-sb", "gpu-nv"):
        assert f"[{n}] 3 more pods not ready (waiting on the above)" in text, out_of(r)
    assert "nouveau driver" not in hdr + sb, out_of(r)
    # the idle nouveau was unloaded and that node's driver installed: it is not in the report
    assert "gpu-nvok" not in got, out_of(r)
    # the cluster shows the same: driver pods crash-looping (nouveau: in the init container)
    pods = json.loads(brokenlab.exec("cp-1", f"kubectl --kubeconfig {ADMIN} get pods -n gpu-operator "
                                             "-o json").stdout)["items"]
    drv = {p["spec"]["nodeName"]: p for p in pods if p["metadata"]["labels"].get("app") == "nvidia-driver-daemonset"}
    assert set(drv) == {"gpu-hdr", "gpu-sb", "gpu-nv", "gpu-nvok"}
    assert drv["gpu-nvok"]["status"]["containerStatuses"][0]["ready"] is True
    assert drv["gpu-nv"]["status"]["initContainerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    for n in ("gpu-hdr", "gpu-sb"):
        assert drv[n]["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"


# --------------------------------------------------------------------------- a CUDA image too new, then a driver image that does not exist

CUDA_12_5 = "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0-ubuntu22.04"


@pytest.fixture(scope="module")
def oldlab(lab_factory):
    return lab_factory([
        HostFixture.bare("cp-1", roles=("control-plane",), helm="4.2.3"),
        # a host driver of the 525 branch (CUDA 12.0). Not 535: the CUDA 12.5 image's
        # NVIDIA_REQUIRE_CUDA accepts 470, 535 and 550 drivers through forward compatibility.
        HostFixture.bare("gpu-old", os="ubuntu-22.04", gpus=[GPU("T4")], nvidia_driver="525.147.05"),
    ])


def test_cuda_image_newer_than_driver_then_missing_driver_image(oldlab, tmp_path):
    inv = oldlab.write_inventory(tmp_path / "inv.yaml", versions={"cuda_image": CUDA_12_5})
    r = up(inv, tmp_path, *WAIT)
    assert r.returncode != 0, out_of(r)
    text = flat(r)
    # the rollout itself succeeded (host driver); the smoke Job's container never started
    assert "ClusterPolicy ready" in text, out_of(r)
    assert "CUDA smoke test" in text and "gpu-old" in text, out_of(r)
    assert "cuda-too-new" in text, out_of(r)
    assert "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.5, please update your " \
        "driver to a newer version, or use an earlier cuda container" in text, out_of(r)
    assert "set versions.cuda_image to an older image" in text, out_of(r)
    # the Job was cleaned up on the way out
    jobs = json.loads(oldlab.exec("cp-1", f"kubectl --kubeconfig {ADMIN} get jobs -n gpu-operator -o json")
                      .stdout)["items"]
    assert jobs == [], jobs

    # A Debian 12 GPU worker joins (no host driver). The operator names the driver image after
    # the first GPU node's OS (gpu-deb sorts before gpu-old): 595.91.07-debian12, which NVIDIA
    # does not publish.
    oldlab.add([HostFixture.bare("gpu-deb", os="debian-12", gpus=[GPU("L4")])])
    inv = oldlab.write_inventory(tmp_path / "inv-2.yaml")
    # preflight says so before any change (gpu-driver-image) ...
    r = up(inv, tmp_path, *WAIT)
    assert r.returncode == 1 and "gpu-driver-image" in flat(r), out_of(r)
    assert "595.91.07-debian12, which NVIDIA does not build" in flat(r), out_of(r)
    # ... and past it, the rollout's failure is diagnosed with the same cause
    r = up(inv, tmp_path, *WAIT, "--ignore", "gpu-driver-image")
    assert r.returncode != 0, out_of(r)
    got = blocks(r)
    deb = got.get("gpu-deb", "")
    assert "driver-image-missing" in deb and "image-pull" in deb, out_of(r)
    assert 'failed to resolve reference "nvcr.io/nvidia/driver:595.91.07-debian12": ' \
        "nvcr.io/nvidia/driver:595.91.07-debian12: not found" in deb, out_of(r)
    assert "no NVIDIA driver image exists for this node's OS" in deb, out_of(r)
    assert "gpu-old" not in got, out_of(r)
