import pytest

from gpuk8s.transport.ssh import known_hosts_name


@pytest.mark.parametrize("address,port,name", [
    ("10.0.0.11", 22, "10.0.0.11"),
    ("10.0.0.11", 2222, "[10.0.0.11]:2222"),
    ("fd00::11", 22, "fd00::11"),
    ("fd00::11", 2222, "[fd00::11]:2222"),
    ("gpu-1.example.com", 2200, "[gpu-1.example.com]:2200"),
])
def test_known_hosts_names_match_openssh(address, port, name):
    assert known_hosts_name(address, port) == name
