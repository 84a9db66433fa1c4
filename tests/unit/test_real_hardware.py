"""Parsers against probe output recorded on a real NVIDIA H100 server (docs/real-hardware.md)."""

from pathlib import Path

from gpuk8s.facts import parse_fib_trie, parse_probe, parse_proc_route, parse_sys_net

DATA = Path(__file__).parent / "data"


def test_h100_ubuntu_2404():
    f = parse_probe((DATA / "h100-ubuntu2404-probe.txt").read_text())
    assert (f.os.id, f.os.version_id) == ("ubuntu", "24.04")
    assert f.cgroup_version == 2 and f.cpus == 16 and f.uid == 0
    assert [(g.pci_address, g.vendor_id, g.device_id, g.name, g.class_id, g.driver) for g in f.gpus] == [
        ("0000:00:06.0", "0x10de", "0x2330", "NVIDIA H100 80GB HBM3", "0x030200", "nvidia")]
    assert f.nvidia_driver_version == "580.159.04"
    assert f.nvidia_kernel_module == "open"
    assert f.nvidia_smi_ok is True and f.nouveau_loaded is False
    assert f.secure_boot is False and f.uefi is False
    assert "nvidia" in f.modules and "nvidia_uvm" in f.modules
    assert 2024 in f.listening_ports


def test_no_iproute2_fallbacks():
    routes, default = parse_proc_route(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "eno1\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eno1\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    assert routes == ["10.0.0.0/24"] and default
    trie = ("Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n"
            "     +-- 10.0.0.0/24 2 0 2\n        |-- 10.0.0.11\n           /32 host LOCAL\n"
            "     |-- 127.0.0.1\n        /32 host LOCAL\n")
    assert parse_fib_trie(trie, routes) == ["10.0.0.11/24"]
    assert parse_sys_net("/sys/class/net/eno1/address:3C:EC:EF:00:11:22\n"
                         "/sys/class/net/lo/address:00:00:00:00:00:00\n"
                         "/sys/class/net/docker0/address:02:42:ac:11:00:01") == {"eno1": "3c:ec:ef:00:11:22"}


def test_h100_second_run_without_iproute2():
    """The same server after the fixes: network facts from /sys and /proc (it has no `ip`)."""
    f = parse_probe((DATA / "h100-ubuntu2404-probe-v2.txt").read_text())
    assert "ip" not in f.binaries
    assert f.macs == {"eth0": "02:fc:00:00:00:01"}
    assert f.addresses == ["192.0.2.2/24"] and f.routes == ["192.0.2.0/24"] and f.default_route
    assert f.nvidia_kernel_module == "open" and f.unattended_upgrades is False
    assert [(g.device_id, g.name) for g in f.gpus] == [("0x2330", "NVIDIA H100 80GB HBM3")]
