"""`gpuk8s join` end to end in the lab: a cluster made by `up` of a smaller inventory, then,
three days later (the lab clock moved on: `up`'s token and uploaded certificates long expired),
two workers and one control plane join; a host that is already a node is left alone; a second
join changes nothing; an unreachable first control plane is refused naming what was tried.
One `up` for the module.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.fixture import HostFixture
from tests.lab.test_up_lab import (ADMIN, clear_invocations, invocations, is_read_only, nodes, ready,
                                   secrets_absent, up)


def join(inv: str, tmp: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpuk8s", "join", "-i", inv, "--wait-timeout", "60",
         "--log-file", str(tmp / f"join-{len(list(tmp.glob('join-*.log')))}.log"), *args],
        capture_output=True, text=True, timeout=timeout)


def tokens(lab) -> list[str]:
    r = lab.exec("cp-1", f"kubeadm token list --kubeconfig {ADMIN}")
    assert r.returncode == 0, r.stderr
    return [ln.split()[0] for ln in r.stdout.splitlines()[1:] if ln.strip()]


@pytest.fixture(scope="module")
def grown(lab_factory, tmp_path_factory):
    """`up` of cp-1 + w-1, then the lab clock three days on."""
    lab = lab_factory([HostFixture.bare("cp-1", roles=("control-plane",)),
                       HostFixture.bare("cp-2", roles=("control-plane",)),
                       HostFixture.bare("w-1"), HostFixture.bare("w-2"),
                       HostFixture.bare("w-3", os="rocky-9"),
                       HostFixture.bare("w-4", resolve_endpoint=False)])   # the endpoint's name unknown there
    tmp = tmp_path_factory.mktemp("join")
    small = lab.write_inventory(tmp / "small.yaml", hosts=["cp-1", "w-1"])
    big = lab.write_inventory(tmp / "big.yaml", hosts=["cp-1", "cp-2", "w-1", "w-2", "w-3"])
    r = up(small, tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(nodes(lab)) == ["cp-1", "w-1"]
    lab.advance_clock(3 * 24 * 3600)
    lab.write_inventory(tmp / "odd.yaml", hosts=["cp-1", "w-4"])
    return lab, str(small), str(big), tmp


def test_up_left_nothing_join_could_rely_on(grown):
    lab, _, _, _ = grown
    assert tokens(lab) == []             # up deleted its token; init's expired anyway
    c = json.loads((lab.shared_dir / "cluster.json").read_text())
    lab_now = time.time() + float((lab.shared_dir / "clock_offset").read_text())
    assert lab_now - c["certs"]["uploaded"] > 2 * 3600      # kubeadm deleted them after 2 h


def test_dry_run_only_reads(grown):
    lab, _, big, tmp = grown
    clear_invocations(lab)
    r = join(big, tmp, "--dry-run")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "w-1: already a node (left alone)" in r.stdout
    assert "kubeadm join as control plane" in r.stdout and "kubeadm join as worker" in r.stdout
    secrets_absent(r.stdout, r.stderr)
    for n in lab.names():
        changing = [ln for ln in invocations(lab, n) if not is_read_only(ln)]
        assert changing == [], (n, changing)
    assert invocations(lab, "w-1") == []                      # never connected
    assert sorted(nodes(lab)) == ["cp-1", "w-1"]


def test_join_two_workers_and_a_control_plane_days_later(grown):
    lab, _, big, tmp = grown
    clear_invocations(lab)
    r = join(big, tmp)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    secrets_absent(r.stdout, r.stderr, *(p.read_text() for p in tmp.glob("join-*.log")))
    assert "w-1: already a node (left alone)" in r.stdout
    got = nodes(lab)
    assert sorted(got) == ["cp-1", "cp-2", "w-1", "w-2", "w-3"] and all(ready(n) for n in got.values())
    assert "node-role.kubernetes.io/control-plane" in got["cp-2"]["metadata"]["labels"]
    assert invocations(lab, "w-1") == []                      # left alone: not even probed
    cp1 = invocations(lab, "cp-1")
    create = [i for i, ln in enumerate(cp1) if "kubeadm token create --config" in ln]
    upload = [i for i, ln in enumerate(cp1) if "upload-certs --upload-certs --config" in ln]
    delete = [i for i, ln in enumerate(cp1) if "kubeadm token delete" in ln]
    assert len(create) == 1 and len(upload) == 1 and len(delete) == 1 and create[0] < delete[0]
    assert not [ln for ln in cp1 if "--certificate-key" in ln or "kubeadm join" in ln or "apt-get" in ln]
    assert tokens(lab) == []                                  # this run's token is gone
    # cp-2 serves the API on its bind port now (the lab's listener)
    assert lab.exec("w-2", f"timeout 5 bash -c 'exec 3<>/dev/tcp/{lab.address('cp-2')}/6443'").returncode == 0


def test_a_second_join_changes_nothing(grown):
    lab, _, big, tmp = grown
    clear_invocations(lab)
    r = join(big, tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "nothing to join" in r.stdout
    for name in ("cp-2", "w-1", "w-2", "w-3"):
        assert "already a node (left alone)" in r.stdout and f"{name}: already a node" in r.stdout
        assert invocations(lab, name) == [], name
    assert all(is_read_only(ln) for ln in invocations(lab, "cp-1"))


def test_a_named_host_that_is_a_node_is_left_alone(grown):
    lab, _, big, tmp = grown
    clear_invocations(lab)
    r = join(big, tmp, "--host", "w-2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "w-2: already a node (left alone)" in r.stdout and "w-3" not in r.stdout
    assert invocations(lab, "w-2") == []


def test_an_unreachable_first_control_plane_is_refused_naming_what_was_tried(grown):
    lab, _, big, tmp = grown
    lab.stop_sshd("cp-1")
    try:
        r = join(big, tmp)
    finally:
        lab.start_sshd("cp-1")
    assert r.returncode == 4, r.stdout + r.stderr
    assert "first control plane cp-1" in r.stderr and f"root@{lab.address('cp-1')}:" in r.stderr
    assert "refused" in r.stderr.lower()


def test_a_host_that_cannot_reach_the_endpoint_is_refused_before_any_change(grown):
    lab, _, _, tmp = grown
    clear_invocations(lab)
    r = join(str(tmp / "odd.yaml"), tmp)
    assert r.returncode == 1, r.stdout + r.stderr
    out = " ".join(re.sub(r"[│┃]", " ", r.stdout + r.stderr).split())   # panels wrap the message
    assert "join-endpoint-reachable" in out and "k8s-api.lab:6443" in out and "bash /dev/tcp/k8s-api.lab/6443" in out
    assert all(is_read_only(ln) for ln in invocations(lab, "w-4"))
    assert "w-4" not in nodes(lab)


def test_an_api_server_that_does_not_answer_is_refused_naming_the_endpoint(grown):
    """Last: the first control plane's API server stops (its listener is killed)."""
    lab, _, big, tmp = grown
    pid = lab.read_file("cp-1", "/etc/gpuk8s-lab/apiserver.pid").strip()
    lab.exec("cp-1", f"kill {pid}")
    r = join(big, tmp)
    assert r.returncode == 5, r.stdout + r.stderr
    err = " ".join(r.stderr.split())
    assert "the API server at k8s-api.lab:6443 does not answer kubectl on the first control plane cp-1" in err
    assert "The connection to the server k8s-api.lab:6443 was refused" in err
