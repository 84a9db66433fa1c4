"""SSH errors named for what they are, before any packet is sent."""

import pytest

from gpuk8s.errors import TransportError
from gpuk8s.inventory import HostSpec, SSHSettings
from gpuk8s.transport.ssh import SSHTransport


def test_a_missing_identity_file_is_named(tmp_path):
    missing = tmp_path / "no such key"
    spec = HostSpec(name="h", address="127.0.0.1", roles=("worker",),
                    ssh=SSHSettings(user="root", identity_file=str(missing),
                                    known_hosts=str(tmp_path / "known_hosts")))
    with pytest.raises(TransportError) as e:
        SSHTransport(spec).connect()
    assert e.value.kind == "auth"
    assert str(missing) in str(e.value) and "does not exist" in str(e.value)
