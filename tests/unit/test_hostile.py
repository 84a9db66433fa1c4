"""Hostile input and hostile output are made harmless.

Input: any YAML document gives a valid inventory or problems with file, line and field, within
bounded time and memory (alias and merge-key bombs, recursive aliases, deep nesting); every
free-text value is refused at load when it holds a control character; messages and copy-paste
hints quote or escape the values they contain.

Output: strings from hosts (os-release, hostname, kernel, tool versions, file names, stderr)
reach the terminal and the run log escaped (shell.printable); JSON stays exact.
"""

from __future__ import annotations

import io
import json
import shlex
import textwrap
import time
import tracemalloc

import paramiko
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from gpuk8s import cli, ui
from gpuk8s.actions.preflight import run_preflight
from gpuk8s.errors import InventoryError, TransportError
from gpuk8s.inventory import Inventory, parse_inventory
from gpuk8s.runlog import RunLog
from gpuk8s.shell import printable
from tests.unit.fake import opener
from tests.unit.test_preflight import make_inventory, outputs_for

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=150,
                suppress_health_check=list(HealthCheck))

VALID = """\
cluster:
  name: lab
  kubernetes_version: "1.36"
ssh:
  user: ubuntu
  identity_file: ~/.ssh/id_ed25519
  known_hosts: ~/.ssh/known_hosts
hosts:
  - name: cp-1
    address: 10.0.0.11
    roles: [control-plane, worker]
"""

# Terminal attacks: set the title (OSC ... BEL), clear the screen (CSI 2J), an OSC left open
# (swallows what follows), the 8-bit CSI (C1 U+009B), DEL, and a bidi override.
ATTACKS = ["\x1b]0;pwned\x07", "\x1b[2J\x1b[H", "\x1b]8;;http://x\x1b\\", "\x1b]0;open", "\x9b2J",
           "a\x7fb", "\u202egnp.exe", "\x90dcs\x9c", "x\ry"]
RAW_CONTROL = [chr(c) for c in range(0x20) if c not in (0x0a,)] + ["\x7f"] + \
    [chr(c) for c in range(0x80, 0xa0)]


def _raw_controls(text: str, allow_newline: bool = True) -> list[str]:
    return [c for c in text if c in RAW_CONTROL or (not allow_newline and c == "\n")
            or c in "\u202a\u202b\u202c\u202d\u202e"]


# --------------------------------------------------------------------------- the inventory loader

def _check_outcome(text: str, path: str = "fuzz.yaml") -> None:
    """parse_inventory gives an Inventory or InventoryError problems with file, line, one line each."""
    n_lines = sum(text.count(c) for c in "\n\r\x85\u2028\u2029") + 2   # YAML's line breaks
    try:
        inv = parse_inventory(text, path)
    except InventoryError as e:
        assert e.problems
        for p in e.problems:
            assert p.file == path
            assert p.line is None or 1 <= p.line <= n_lines, (p.line, str(p))
            assert isinstance(p.path, str) and p.message
            assert "\n" not in str(p) and not _raw_controls(str(p)), repr(str(p))
            # Problems about the document's content name the field and the line.
            if not p.message.startswith(("invalid YAML", "the inventory is empty")):
                assert p.line is not None, str(p)
        return
    assert isinstance(inv, Inventory) and inv.hosts


_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(["1.36", "10.0.0.1", "cp-1", "worker",
                                                           "control-plane", "0x_", "9" * 5000]))
_KEYS = st.sampled_from(["cluster", "ssh", "hosts", "name", "address", "roles", "versions", "gpu",
                         "labels", "taints", "port", "user", "bastion", "known_hosts", "<<",
                         "kubernetes_version", "containerd", "driver_version", "node_ip"]) | st.text(max_size=8)
_VALUES = st.recursive(_SCALAR, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(_KEYS, inner, max_size=5), max_leaves=25)


@FUZZ
@given(st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_any_yaml_document_gives_an_inventory_or_located_problems(doc):
    _check_outcome(yaml.safe_dump(doc, allow_unicode=True))


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("abc:-[]{}&*<!|>'\"#\n ,.?%@`\t\x1b\x85\u2028\\0123")),
               max_size=300))
def test_any_text_gives_an_inventory_or_located_problems(text):
    _check_outcome(text)


@FUZZ
@given(st.data())
def test_a_valid_inventory_with_one_value_replaced(data):
    lines = VALID.splitlines()
    i = data.draw(st.sampled_from([i for i, ln in enumerate(lines) if ": " in ln]))
    key = lines[i].split(": ")[0]
    value = data.draw(st.one_of(st.text(max_size=40).map(json.dumps), _SCALAR.map(json.dumps),
                                st.sampled_from(["*x", "!!int abc", "!!bool maybe", "!!float x",
                                                 "&y [*y]", "{<<: 3}", "[[[[[]]]]]", "0b_"])))
    lines[i] = f"{key}: {value}"
    _check_outcome("\n".join(lines) + "\n")


def _billion_laughs(levels: int = 9, width: int = 9) -> str:
    out = ["a0: &a0 [lol]"]
    for i in range(1, levels + 1):
        out.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(out) + "\n"


def _merge_bomb(levels: int = 30) -> str:
    out = ["m0: &m0 {k: v}"]
    for i in range(1, levels + 1):
        out.append(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: v}}")
    out.append(f"cluster: {{<<: *m{levels}, name: x}}")
    return "\n".join(out) + "\n"


def _merge_chain_bomb(levels: int = 40) -> str:
    """Each level merges the previous twice through a host's ssh block (walked by the loader)."""
    out = ["cluster: {name: lab}", "x0: &x0 {user: a}"]
    for i in range(1, levels + 1):
        out.append(f"x{i}: &x{i} {{<<: [*x{i - 1}, *x{i - 1}]}}")
    out.append(f"hosts: [{{name: a, address: 10.0.0.1, roles: [control-plane], ssh: *x{levels}}}]")
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("text,expect", [
    (_billion_laughs(), "more than"),
    (_billion_laughs(30, 2), "more than"),
    (_merge_bomb(), "more than"),
    (_merge_chain_bomb(), "more than"),
    ("hosts: &h [*h]\n", "recursive alias"),
    ("cluster: &c {name: x, <<: *c}\n", "recursive alias"),
    ("a: &a {b: &b {c: *a}}\n", "recursive alias"),
    ("[" * 20_000, "nested"),
    ("".join("  " * i + "- \n" for i in range(3000)), "nested"),
    ("cluster: {name: x}\nhosts:\n  - " + "[" * 5000, "nested"),
], ids=["billion-laughs", "deep-laughs", "merge-bomb", "merge-chain", "recursive-list",
        "recursive-merge", "recursive-nested", "flow-nesting", "block-nesting", "host-nesting"])
def test_alias_bombs_recursion_and_nesting_are_refused_quickly(text, expect):
    assert len(text) < 10_000 or expect == "nested"
    tracemalloc.start()
    start = time.process_time()
    try:
        with pytest.raises(InventoryError) as e:
            parse_inventory(text, "bomb.yaml")
        cpu = time.process_time() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert cpu < 3, cpu              # under load on 2 shared cores; alone it is milliseconds
    assert peak < 150 * 2**20, peak
    assert any(expect in p.message for p in e.value.problems), [str(p) for p in e.value.problems]
    assert all(p.file == "bomb.yaml" and p.line for p in e.value.problems)


def test_aliases_within_the_bound_still_work():
    inv = parse_inventory(VALID.replace("ssh:\n", "ssh: &s\n") + "  - name: w-1\n    address: 10.0.0.12\n"
                          "    roles: [worker]\n    ssh: {<<: *s, port: 2222}\n", "inv.yaml")
    assert inv.hosts[1].ssh.port == 2222 and inv.hosts[1].ssh.user == "ubuntu"


# --------------------------------------------------------------------------- values validated where read

FIELDS = [
    # (YAML line to add or replace, field path in the problem)
    ("cluster", "  name: {v}", "cluster.name"),
    ("ssh", "  user: {v}", "ssh.user"),
    ("ssh", "  identity_file: {v}", "ssh.identity_file"),
    ("ssh", "  known_hosts: {v}", "ssh.known_hosts"),
    ("ssh", "  bastion: {{address: {v}}}", "ssh.bastion.address"),
    ("ssh", "  bastion: {{address: jump, user: {v}}}", "ssh.bastion.user"),
    ("ssh", "  bastion: {{address: jump, identity_file: {v}}}", "ssh.bastion.identity_file"),
    ("hosts", "    ssh: {{known_hosts: {v}}}", "hosts[0].ssh.known_hosts"),
    ("hosts", "    ssh: {{user: {v}}}", "hosts[0].ssh.user"),
    ("hosts", "    labels: {{team: {v}}}", "hosts[0].labels.team"),
    ("hosts", "    taints: [{v}]", "hosts[0].taints[0]"),
    ("hosts", "    taints: [{{key: k, value: {v}, effect: NoSchedule}}]", "hosts[0].taints[0].value"),
    ("hosts", "    node_ip: {v}", "hosts[0].node_ip"),
    ("top", "gpu: {{driver_version: {v}}}", "gpu.driver_version"),
    ("top", "versions: {{containerd: {v}}}", "versions.containerd"),
    ("top", "versions: {{calico: {v}}}", "versions.calico"),
    ("top", "versions: {{cuda_image: {v}}}", "versions.cuda_image"),
]


def _with_field(where: str, line: str) -> tuple[str, int]:
    lines = VALID.splitlines()
    if where == "top":
        lines.insert(3, line)
        return "\n".join(lines) + "\n", 4
    at = {"cluster": 1, "ssh": 4, "hosts": len(lines)}[where]
    key = line.strip().split(":")[0]
    for j in range(at, len(lines)):
        if lines[j].strip().startswith(key + ":") and lines[j].startswith(line[: len(line) - len(line.lstrip())]):
            lines[j] = line
            return "\n".join(lines) + "\n", j + 1
    lines.insert(at, line)
    return "\n".join(lines) + "\n", at + 1


@pytest.mark.parametrize("where,template,field", FIELDS, ids=[f[2] for f in FIELDS])
@pytest.mark.parametrize("bad", ["a\nb", "a\x1b[2Jb", "a\tb", "a\x00b", "a\u0085b", "a\x9bb"],
                         ids=["newline", "esc", "tab", "nul", "nel", "csi"])
def test_control_characters_are_refused_at_load_with_file_line_field(where, template, field, bad):
    text, line = _with_field(where, template.format(v=json.dumps(bad)))
    with pytest.raises(InventoryError) as e:
        parse_inventory(text, "inv.yaml")
    mine = [p for p in e.value.problems if p.path == field]
    assert mine, ([str(p) for p in e.value.problems], text)
    assert mine[0].file == "inv.yaml" and mine[0].line == line
    for p in e.value.problems:            # no problem forges a line or carries a raw control
        assert "\n" not in str(p) and not _raw_controls(str(p)), repr(str(p))


def test_a_newline_in_a_key_does_not_forge_a_message_line():
    text = VALID.replace("    roles:", '    "adr\\ninv.yaml:1: cluster.name: forged": x\n    roles:')
    with pytest.raises(InventoryError) as e:
        parse_inventory(text, "inv.yaml")
    printed = "\n".join(str(p) for p in e.value.problems)
    assert [ln for ln in printed.splitlines() if ln.startswith("inv.yaml:1:")] == []
    assert "\\n" in printed


def test_cli_prints_inventory_problems_one_line_each(tmp_path):
    p = tmp_path / "inv.yaml"
    p.write_text(VALID.replace("  user: ubuntu", '  user: "ops\\n\\u001b]0;pwned\\u0007"'))
    res = CliRunner().invoke(cli.app, ["preflight", "-i", str(p)])
    assert res.exit_code == 3
    assert "\x1b" not in res.stderr and "\x07" not in res.stderr
    assert f"{p}:5: ssh.user: must not contain control characters" in res.stderr


def _keyscan_hint(known_hosts: str, address: str = "10.0.0.11") -> str:
    from gpuk8s.inventory import HostSpec, SSHSettings
    from gpuk8s.transport import ssh

    spec = HostSpec(name="cp-1", address=address, roles=("control-plane",),
                    ssh=SSHSettings(user="root", known_hosts=known_hosts))
    t = ssh.SSHTransport(spec)

    class Client:
        def connect(self, *a, **kw):
            raise ssh._HostKeyUnknown(address, paramiko.ECDSAKey.generate())

    with pytest.raises(TransportError) as e:
        t._connect_client(Client(), address, 22, "root", None, sock=object())
    return str(e.value)


@pytest.mark.parametrize("path", ["/tmp/kh; touch /tmp/pwned", "/tmp/$(id)", "/tmp/a b`id`", "/tmp/x'y"])
def test_keyscan_hint_quotes_the_known_hosts_path(path):
    msg = _keyscan_hint(path)
    cmd = msg.split("add it with `", 1)[1].rsplit("` or set", 1)[0]
    assert shlex.split(cmd) == ["ssh-keyscan", "-p", "22", "10.0.0.11", ">>", path]


# --------------------------------------------------------------------------- hostile output

@pytest.mark.parametrize("attack", ATTACKS)
def test_printable_escapes_every_control_character(attack):
    out = printable(attack)
    assert not _raw_controls(out, allow_newline=False)
    assert printable(out) == out                      # escaped text is stable


def test_printable_is_exact_for_plain_text_and_keeps_lines_when_asked():
    assert printable("Ubuntu 24.04.1 LTS · H100") == "Ubuntu 24.04.1 LTS · H100"
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("a\nb\tc") == "a\\nb\\tc"
    assert printable("a\nb\x9b", lines=True) == "a\nb\\x9b"


def _hostile_outputs(inv):
    outs = outputs_for(inv)
    o = outs["w-1"]
    o = o.replace('PRETTY_NAME="Ubuntu 24.04.1 LTS"', 'PRETTY_NAME="Ubuntu\x1b]0;pwned\x07 \x1b[2J\x9b31m"')
    o = o.replace("6.8.0-49-generic\nx86_64", "3.10.0\x1b]0;open\nx86_64")   # too old, unterminated OSC
    o = o.replace("v2.1.4 75cb2b7", "v1.6.0\x1b[2J\x07 75cb2b7")            # too old: in a message
    o = o.replace("\n@@gpuk8s:hostname\nw-1\n", "\n@@gpuk8s:hostname\nW_1\x1b[2J\n")
    o = o.replace("\n@@gpuk8s:secure_boot", "\n@@gpuk8s:cni\n10-evil\x1b]0;x\x07.conf\n@@gpuk8s:secure_boot")
    outs["w-1"] = o
    return outs


def test_host_strings_are_escaped_in_the_human_report_and_exact_in_json(monkeypatch):
    inv = make_inventory("cp-1", "w-1")
    outs = _hostile_outputs(inv)
    monkeypatch.setattr("gpuk8s.cli._load", lambda *a: inv)
    monkeypatch.setattr("gpuk8s.transport.open_transport", opener(outs, []))
    human = CliRunner().invoke(cli.app, ["preflight", "-i", "x.yaml"], env={"COLUMNS": "300"})
    assert "\x1b" not in human.stdout and "\x07" not in human.stdout and "\x9b" not in human.stdout
    for shown in ("Ubuntu\\x1b]0;pwned\\x07", "\\x1b[2J", "3.10.0\\x1b]0;open", "10-evil\\x1b]0;x"):
        assert shown in human.stdout, shown
    js = CliRunner().invoke(cli.app, ["preflight", "-i", "x.yaml", "--json"])
    doc = json.loads(js.stdout)
    w1 = doc["hosts"][1]["facts"]
    assert w1["os"]["pretty_name"] == "Ubuntu\x1b]0;pwned\x07 \x1b[2J\x9b31m"
    assert w1["kernel"] == "3.10.0\x1b]0;open" and w1["hostname"] == "W_1\x1b[2J"
    assert "\\u009b" in js.stdout and "\\u001b" in js.stdout   # JSON's own escapes: exact on load


def test_render_preflight_on_a_terminal_emits_no_host_escape_sequence():
    inv = make_inventory("cp-1", "w-1")
    report = run_preflight(inv, open_transport=opener(_hostile_outputs(inv), []))
    buf = io.StringIO()
    ui.render_preflight(report, Console(file=buf, width=250, force_terminal=True, color_system="truecolor"))
    text = buf.getvalue()
    assert "\x1b]" not in text and "\x07" not in text and "\x9b" not in text and "\x1b[2J" not in text
    assert "\\x1b]0;pwned\\x07" in text


def test_errors_phase_lines_and_up_report_are_escaped():
    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=False)
    orig = ui.err_console
    ui.err_console = console
    try:
        ui.print_error("w-1: `kubeadm join` failed: stderr: \x1b]0;x\x07\nline two\x9b")
    finally:
        ui.err_console = orig
    on_phase = ui.phase_printer(console)

    class R:
        error, seconds, changes, notes = None, 0.1, [], ["note \x1b[2J"]

    on_phase("prepare \x1b]0;t\x07", None)
    on_phase("prepare \x1b]0;t\x07", R())

    class Up:
        dry_run, phases, failed_hosts = False, [], {"w-1": "apt-get: \x1b]0;pwn\x07 failed"}
        error, log_path, changed, kubeconfig = "join failed: \x1b[2J", None, False, None

    ui.render_up(Up(), console)
    text = buf.getvalue()
    assert not _raw_controls(text), repr(text)
    assert "line two" in text and "\\x1b]0;pwn\\x07" in text and "note \\x1b[2J" in text


def test_run_log_escapes_controls_and_indents_continuation_lines(tmp_path):
    log = RunLog(tmp_path / "run.log")
    log.write("w-1\x1b[2J", "stderr: E: \x1b]0;pwned\x07 failed\n12:00:00 [cp-1] change: forged")
    log.close()
    text = (tmp_path / "run.log").read_text()
    assert not _raw_controls(text), repr(text)
    lines = text.splitlines()
    assert len(lines) == 2 and lines[1].startswith("    | ") and "[w-1\\x1b[2J]" in lines[0]
    assert "\\x1b]0;pwned\\x07" in lines[0]


def test_escaping_is_cheap():
    text = "plain ascii text of a check message, as most are " * 4
    start = time.perf_counter()
    for _ in range(20_000):
        printable(text)
    assert time.perf_counter() - start < 1.0     # ~1 µs each: nothing next to 14 ms per host


def test_example_inventories_still_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "inventories"
    for p in root.glob("*.yaml"):
        from gpuk8s.inventory import load_inventory

        load_inventory(p)


def test_valid_inventory_fixture_loads():
    inv = parse_inventory(textwrap.dedent(VALID), "inv.yaml")
    assert inv.hosts[0].ssh.user == "ubuntu"
