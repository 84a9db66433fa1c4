"""The preflight action against fake transports: one round trip, failures isolated, JSON shape."""

import json

import pytest
from typer.testing import CliRunner

from gpuk8s import cli
from gpuk8s.actions.preflight import run_preflight
from gpuk8s.errors import EXIT_CHECKS_FAILED, EXIT_OK, EXIT_UNREACHABLE
from gpuk8s.facts import probe_script
from gpuk8s.facts.probe import probe_command
from gpuk8s.inventory import ClusterSpec, HostSpec, Inventory, SSHSettings
from tests.unit.fake import opener, probe_output

def make_inventory(*names, endpoint="k8s-api.example.com:6443"):
    ssh = SSHSettings(user="root")
    hosts = []
    for i, n in enumerate(names):
        roles = ("control-plane",) if i == 0 else ("worker",)
        hosts.append(HostSpec(name=n, address=f"10.0.0.{11 + i}", roles=roles, ssh=ssh))
    return Inventory(path="inv.yaml", cluster=ClusterSpec(name="t", control_plane_endpoint=endpoint),
                     hosts=tuple(hosts))


def outputs_for(inv, gpu_hosts=()):
    return {h.name: probe_output(h.name, f"uuid-{i}", f"52:54:00:00:00:{i:02x}", h.address,
                                 gpus=2 if h.name in gpu_hosts else 0)
            for i, h in enumerate(inv.hosts)}


def test_one_round_trip_per_host_with_probe_on_stdin():
    inv = make_inventory("cp-1", "gpu-1", "gpu-2")
    log = []
    report = run_preflight(inv, open_transport=opener(outputs_for(inv, {"gpu-1", "gpu-2"}), log))
    assert sorted(h for h, *_ in log) == ["cp-1", "gpu-1", "gpu-2"]
    assert all(cmd == probe_command(inv).render() for _, cmd, _, _ in log)
    assert all(cmd.startswith("sh -s -- k8s-api.example.com ") for _, cmd, _, _ in log)
    assert all(stdin == probe_script() for _, _, stdin, _ in log)
    assert all(h.reachable and h.facts is not None for h in report.hosts)
    gpu1 = next(h for h in report.hosts if h.name == "gpu-1")
    assert [(g.vendor_id, g.device_id) for g in gpu1.facts.gpus] == [("0x10de", "0x27b8")] * 2


def test_unreachable_host_never_hides_the_others():
    inv = make_inventory("cp-1", "gpu-1", "gpu-2")
    report = run_preflight(inv, open_transport=opener(outputs_for(inv), [], refuse={"gpu-1"}))
    by = {h.name: h for h in report.hosts}
    assert not by["gpu-1"].reachable and "refused" in by["gpu-1"].error
    assert by["gpu-1"].error_kind == "refused"
    assert by["cp-1"].checks and by["gpu-2"].checks
    assert report.exit_code == EXIT_UNREACHABLE and not report.ok


def test_sudo_password_reported_and_other_facts_still_checked():
    inv = make_inventory("cp-1", "w-1")
    log = []
    report = run_preflight(inv, open_transport=opener(outputs_for(inv), log, sudo_pw={"w-1"}))
    w = next(h for h in report.hosts if h.name == "w-1")
    assert w.reachable and "password" in w.error
    assert [s for h, _, _, s in log if h == "w-1"] == [True, False]
    assert {c.id for c in w.checks} >= {"swap-off", "os-supported"}
    assert report.exit_code == EXIT_CHECKS_FAILED


def test_duplicate_product_uuid_fails_on_both_hosts():
    inv = make_inventory("cp-1", "w-1")
    outs = outputs_for(inv)
    outs["w-1"] = outs["w-1"].replace("uuid-1", "uuid-0")
    report = run_preflight(inv, open_transport=opener(outs, []))
    for h in report.hosts:
        c = next(c for c in h.checks if c.id == "product-uuid-unique")
        assert c.status == "fail"


def test_json_document_shape():
    inv = make_inventory("cp-1", "gpu-1")
    report = run_preflight(inv, open_transport=opener(outputs_for(inv, {"gpu-1"}), []))
    doc = json.loads(json.dumps(report.to_dict()))
    assert set(doc) == {"ok", "hosts"}
    h = doc["hosts"][1]
    assert {"name", "address", "reachable", "error", "facts", "checks"} <= set(h)
    f = h["facts"]
    assert {"os", "kernel", "cgroup_version", "cpus", "memory_mib", "swap_enabled", "gpus",
            "nvidia_driver_version", "nouveau_loaded", "secure_boot"} <= set(f)
    assert set(f["os"]) >= {"id", "version_id", "pretty_name"}
    assert f["gpus"][0]["vendor_id"] == "0x10de" and f["gpus"][0]["device_id"] == "0x27b8"
    assert all(set(c) == {"id", "status", "message", "fix"} for c in h["checks"])
    assert all(c["status"] in ("pass", "warn", "fail", "skip") for c in h["checks"])


def test_cli_json_and_exit_code(monkeypatch, tmp_path):
    inv = make_inventory("cp-1", "gpu-1")
    monkeypatch.setattr("gpuk8s.cli._load", lambda *a: inv)
    monkeypatch.setattr("gpuk8s.transport.open_transport", opener(outputs_for(inv, {"gpu-1"}), []))
    res = CliRunner().invoke(cli.app, ["preflight", "-i", "x.yaml", "--json"])
    doc = json.loads(res.stdout)
    assert [h["name"] for h in doc["hosts"]] == ["cp-1", "gpu-1"]
    expected = EXIT_OK if doc["ok"] else EXIT_CHECKS_FAILED
    assert res.exit_code == expected


def test_cli_human_output_lists_failures_with_fix(monkeypatch):
    inv = make_inventory("cp-1", "w-1")
    outs = outputs_for(inv)
    outs["w-1"] = outs["w-1"].replace("Filename\tType\tSize\tUsed\tPriority",
                                      "Filename\tType\tSize\tUsed\tPriority\n/swap.img file 2097148 0 -2")
    monkeypatch.setattr("gpuk8s.cli._load", lambda *a: inv)
    monkeypatch.setattr("gpuk8s.transport.open_transport", opener(outs, []))
    res = CliRunner().invoke(cli.app, ["preflight", "-i", "x.yaml"], terminal_width=200)
    assert res.exit_code == EXIT_CHECKS_FAILED
    assert "swap-off" in res.stdout and "swapoff -a" in res.stdout
    assert "not ready" in res.stdout


@pytest.mark.parametrize("args,code", [(["preflight"], 2), (["preflight", "--local", "-i", "x"], 2)])
def test_cli_usage_errors(args, code):
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == code


def test_cli_bad_inventory_exit_3(tmp_path):
    p = tmp_path / "inv.yaml"
    p.write_text("cluster:\n  name: x\nhosts:\n  - name: a\n    adress: 10.0.0.1\n    roles: [control-plane]\n")
    res = CliRunner().invoke(cli.app, ["preflight", "-i", str(p)])
    assert res.exit_code == 3
    assert f"{p}:5" in res.stderr and "adress" in res.stderr


class _Out:
    def __init__(self, tty: bool) -> None:
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("tty", [True, False])
def test_print_json_one_document_indented_only_for_a_terminal(monkeypatch, tty):
    from gpuk8s.jsonout import print_json
    out = _Out(tty)
    monkeypatch.setattr("sys.stdout", out)
    doc = {"ok": False, "hosts": [{"name": "gpu-1", "checks": [{"id": "swap-off", "fix": None}]}]}
    print_json(doc)
    assert json.loads(out.text) == doc and out.text.endswith("}\n")
    assert out.text.count("\n") == (len(json.dumps(doc, indent=2).splitlines()) if tty else 1)


def test_cli_internal_error_exits_70_with_one_redacted_line(monkeypatch):
    inv = make_inventory("cp-1")

    def boom(*a, **k):
        raise RuntimeError("kaboom with token abcdef.0123456789abcdef\nsecond line")

    monkeypatch.setattr("gpuk8s.cli._load", lambda *a: inv)
    monkeypatch.setattr("gpuk8s.actions.preflight.run_preflight", boom)
    res = CliRunner().invoke(cli.app, ["preflight", "-i", "x.yaml"])
    assert res.exit_code == 70
    assert "internal error: RuntimeError: kaboom" in res.stderr and "--debug" in res.stderr
    assert "0123456789abcdef" not in res.stderr and "second line" not in res.stderr
    assert "Traceback" not in res.stderr
    res = CliRunner().invoke(cli.app, ["preflight", "-i", "x.yaml", "--debug"])
    assert res.exit_code == 70 and "Traceback" in res.stderr
    assert "0123456789abcdef" not in res.stderr


def test_a_malformed_containerd_config_is_a_failed_check_not_an_unreachable_host():
    inv = make_inventory("cp-1", "w-1")
    outs = outputs_for(inv)
    outs["w-1"] = outs["w-1"].replace("version = 3\n", "version = 3\n[plugins.'broken\n")
    report = run_preflight(inv, open_transport=opener(outs, []))
    w = next(h for h in report.hosts if h.name == "w-1")
    assert w.reachable and w.error is None
    c = next(c for c in w.checks if c.id == "containerd-systemd-cgroup")
    assert c.status == "fail" and "not valid TOML" in c.message
    assert report.exit_code == EXIT_CHECKS_FAILED
