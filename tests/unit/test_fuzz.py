"""One host never breaks the fleet: fuzzed probe output, crashing parsers and checks.

Every host's processing is isolated: a parser that fails on a host's output leaves that host's
facts unknown (with the reason in `facts.parse_errors`), a check that fails on odd facts is a
failed check with the reason, and the other hosts' reports stay complete. The fuzz tests mutate
real probe output (truncation, flipped bytes, sections dropped, duplicated, replaced or made huge)
and assert that every host's report is produced, no exception escapes, the JSON document is
complete and the human report renders. Hypothesis runs derandomized, without a database, with a
bounded number of examples: the same inputs on every run, a few seconds in all.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from gpuk8s import cli, ui
from gpuk8s.actions.preflight import run_preflight
from gpuk8s.checks import CHECK_IDS, PREFLIGHT
from gpuk8s.facts import Facts, parse_probe, split_sections
from gpuk8s.facts import probe as probe_mod
from gpuk8s.facts.network import parse_addrs, parse_fib_trie, parse_getent, parse_listen
from gpuk8s.facts.runtime import parse_containerd_config
from gpuk8s.facts.system import parse_meminfo, parse_secure_boot
from tests.unit.fake import opener
from tests.unit.test_preflight import make_inventory, outputs_for

DATA = Path(__file__).parent / "data"
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=120,
                suppress_health_check=list(HealthCheck))
FLEET_CHECKS = {"hostname-unique", "product-uuid-unique", "mac-unique", "endpoint-resolves",
                "gpu-os-consistent"}

INV = make_inventory("cp-1", "gpu-1", "w-2")
BASE = outputs_for(INV, {"gpu-1"})
RECORDED = (DATA / "h100-ubuntu2404-probe.txt").read_text()
BASELINE = {h.name: h for h in run_preflight(INV, open_transport=opener(BASE, [])).hosts}


# --------------------------------------------------------------------------- the reported defects

@pytest.mark.parametrize("old,new", [
    ("10.0.0.100 STREAM k8s-api", "not-an-address STREAM k8s-api"),   # getent prints a non-address
    ("inet 10.0.0.12/24", "inet 999.1.2.3/24"),                       # ip prints a non-address
    ("inet 10.0.0.12/24", "inet 10.0.0.12/99"),
])
def test_malformed_address_makes_the_fact_unknown_and_never_breaks_the_run(old, new):
    outs = dict(BASE)
    outs["gpu-1"] = outs["gpu-1"].replace(old, new)
    assert new in outs["gpu-1"]
    report = run_preflight(INV, open_transport=opener(outs, []))
    by = {h.name: h for h in report.hosts}
    assert [h.name for h in report.hosts] == ["cp-1", "gpu-1", "w-2"]
    assert all(len(h.checks) == len(CHECK_IDS) for h in report.hosts)
    assert new.split()[0] not in by["gpu-1"].facts.endpoint_addresses + by["gpu-1"].facts.addresses
    assert not any("could not run" in c.message for h in report.hosts for c in h.checks)
    for name in ("cp-1", "w-2"):
        assert _non_fleet(by[name]) == _non_fleet(BASELINE[name])


def test_unresolvable_endpoint_fails_endpoint_check_with_reason():
    outs = dict(BASE)
    outs["gpu-1"] = outs["gpu-1"].replace("10.0.0.100 STREAM k8s-api", "garbage STREAM k8s-api")
    report = run_preflight(INV, open_transport=opener(outs, []))
    c = next(c for c in report.hosts[1].checks if c.id == "endpoint-resolves")
    assert c.status == "fail" and "does not resolve" in c.message


@pytest.mark.parametrize("old,new", [
    ("inet 10.0.0.12/24", "inet 999.1.2.3/24"),
    ("10.0.0.100 STREAM k8s-api", "not-an-address STREAM k8s-api"),
])
def test_cli_json_prints_the_full_document_with_malformed_output(monkeypatch, old, new):
    outs = dict(BASE)
    outs["gpu-1"] = outs["gpu-1"].replace(old, new)
    monkeypatch.setattr("gpuk8s.cli._load", lambda *a: INV)
    monkeypatch.setattr("gpuk8s.transport.open_transport", opener(outs, []))
    res = CliRunner().invoke(cli.app, ["preflight", "-i", "x.yaml", "--json"])
    doc = json.loads(res.stdout)
    assert [h["name"] for h in doc["hosts"]] == ["cp-1", "gpu-1", "w-2"]
    assert all(len(h["checks"]) == len(CHECK_IDS) for h in doc["hosts"])
    assert res.exit_code in (0, 1)


# --------------------------------------------------------------------------- the isolation guards

def test_a_parser_that_raises_leaves_its_fields_unknown_with_the_reason(monkeypatch):
    rows = list(probe_mod.SECTION_PARSERS)
    i = next(i for i, r in enumerate(rows) if r.fills == ("macs", "addresses", "routes", "default_route"))

    def boom(*_):
        raise ValueError("bad\nline")

    rows[i] = probe_mod.SectionParser(rows[i].reads, rows[i].fills, boom, rows[i].uses)
    monkeypatch.setattr(probe_mod, "SECTION_PARSERS", tuple(rows))
    facts = parse_probe(BASE["cp-1"])
    assert (facts.macs, facts.addresses, facts.routes, facts.default_route) == ({}, [], [], False)
    why = facts.parse_errors["macs addresses routes default_route"]
    assert "ValueError: bad line" in why and "links" in why and "\n" not in why
    assert facts.hostname == "cp-1" and facts.cgroup_version == 2   # the other rows are parsed


def test_a_parser_returning_the_wrong_shape_is_caught(monkeypatch):
    rows = [r if r.fills != ("kernel", "arch") else
            probe_mod.SectionParser(r.reads, r.fills, lambda _t: ("only one",), r.uses)
            for r in probe_mod.SECTION_PARSERS]
    monkeypatch.setattr(probe_mod, "SECTION_PARSERS", tuple(rows))
    facts = parse_probe(BASE["cp-1"])
    assert facts.kernel is None and "kernel arch" in facts.parse_errors


def test_a_check_that_raises_fails_on_that_host_only_with_the_reason(monkeypatch):
    entry = PREFLIGHT._entries["cgroup-v2"]
    orig = entry.fn

    def crashes_on_gpu_1(ctx):
        if ctx.host.name == "gpu-1":
            raise KeyError("odd\x1b[2J fact")
        return orig(ctx)

    monkeypatch.setitem(PREFLIGHT._entries, "cgroup-v2", entry._replace(fn=crashes_on_gpu_1))
    report = run_preflight(INV, open_transport=opener(BASE, []))
    by = {h.name: h for h in report.hosts}
    c = next(c for c in by["gpu-1"].checks if c.id == "cgroup-v2")
    assert c.status == "fail" and "could not run" in c.message and "KeyError" in c.message
    assert "gpu-1" in c.fix
    assert [x.id for x in by["gpu-1"].checks] == list(CHECK_IDS)
    for name in ("cp-1", "w-2"):
        assert by[name].checks == BASELINE[name].checks


def test_a_host_whose_context_cannot_be_built_fails_every_check_not_the_run(monkeypatch):
    import gpuk8s.checks.base as base

    orig = base.CheckContext.for_host.__func__

    def for_host(cls, inventory, host, facts, fleet):
        if host.name == "w-2":
            raise TypeError("unexpected facts")
        return orig(cls, inventory, host, facts, fleet)

    monkeypatch.setattr(base.CheckContext, "for_host", classmethod(for_host))
    report = run_preflight(INV, open_transport=opener(BASE, []))
    w2 = report.hosts[2]
    assert [c.id for c in w2.checks] == list(CHECK_IDS)
    assert all(c.status == "fail" and "TypeError" in c.message for c in w2.checks)
    assert report.hosts[0].checks == BASELINE["cp-1"].checks


def test_fleet_checks_tolerate_odd_facts_of_other_hosts():
    odd = Facts(hostname="", product_uuid="", macs={"eth0": ""}, endpoint_addresses=[],
                os=BASELINE["cp-1"].facts.os)
    odd.gpus = []
    from gpuk8s.checks import run_checks

    good = BASELINE["cp-1"].facts
    results = run_checks(INV, INV.hosts[0], good, {"cp-1": good, "gpu-1": odd, "w-2": Facts()})
    assert [r.id for r in results] == list(CHECK_IDS)
    assert not any("could not run" in r.message for r in results)


# --------------------------------------------------------------------------- parsers on odd values

@pytest.mark.parametrize("parse,text,expected", [
    (parse_getent, "not-an-address STREAM x\n10.0.0.1 STREAM x\n::1 STREAM x", ["10.0.0.1", "::1"]),
    (parse_addrs, "2: e inet 999.1.2.3/24 scope global\n2: e inet 10.1.1.1/33 scope global\n"
                  "2: e inet 10.1.1.1/24 scope global", ["10.1.1.1/24"]),
    (parse_listen, "LISTEN 0 1 *:²\nLISTEN 0 1 *:99999\nLISTEN 0 1 *:22 *:*", [22]),
    (parse_meminfo, "MemTotal: " + "9" * 5000 + " kB", None),
    (parse_secure_boot, "efivar= 6 0 0 0 ²", (None, True)),
    (lambda t: parse_fib_trie(t, []), "  |-- 999.1.2.3\n     /32 host LOCAL\n", []),
])
def test_parsers_drop_malformed_values(parse, text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("text", ['version = "3"\n', "version = true\n", "disabled_plugins = 1\n",
                                  "[plugins.cri]\nsandbox_image = 3\n", "x = " + "[" * 3000])
def test_containerd_config_with_odd_types_is_a_parse_error_or_ignored(text):
    cfg = parse_containerd_config(text)
    assert cfg.present and (cfg.parse_error or cfg.sandbox_image is None)


# --------------------------------------------------------------------------- fuzzing

def _sections(text: str) -> list[tuple[str, str]]:
    return list(split_sections(text).items())


def _join(sections: list[tuple[str, str]]) -> str:
    return "".join(f"\n@@gpuk8s:{k}\n{v}\n" for k, v in sections)


_JUNK = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)


@st.composite
def mutated(draw, text: str) -> str:
    """Probe output after a few random mutations of `text`."""
    secs = _sections(text)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "drop", "dup", "replace", "huge", "splice"]))
        if kind == "truncate":
            joined = _join(secs)
            secs = _sections(joined[: draw(st.integers(0, len(joined)))])
        elif kind == "flip":
            joined = list(_join(secs))
            for _ in range(draw(st.integers(1, 20))):
                if joined:
                    joined[draw(st.integers(0, len(joined) - 1))] = draw(st.characters(codec="utf-8",
                                                                         exclude_categories=("Cs",)))
            secs = _sections("".join(joined))
        elif secs and kind == "drop":
            secs.pop(draw(st.integers(0, len(secs) - 1)))
        elif secs and kind == "dup":
            secs.append(secs[draw(st.integers(0, len(secs) - 1))])
        elif secs and kind == "replace":
            i = draw(st.integers(0, len(secs) - 1))
            secs[i] = (secs[i][0], draw(_JUNK))
        elif secs and kind == "huge":
            i = draw(st.integers(0, len(secs) - 1))
            body = secs[i][1] or "x"
            secs[i] = (secs[i][0], "\n".join([body] * max(1, 200_000 // len(body))))
        elif secs and kind == "splice":   # one section's body under another's name
            i, j = (draw(st.integers(0, len(secs) - 1)) for _ in range(2))
            secs[i] = (secs[i][0], secs[j][1])
    return _join(secs)


def _non_fleet(host) -> list:
    return [c for c in host.checks if c.id not in FLEET_CHECKS]


def _assert_complete(report, fuzzed: str) -> None:
    assert [h.name for h in report.hosts] == ["cp-1", "gpu-1", "w-2"]
    for h in report.hosts:
        assert h.reachable and h.facts is not None
        assert [c.id for c in h.checks] == list(CHECK_IDS)
    by = {h.name: h for h in report.hosts}
    # Nothing the fuzzer made should crash a check: the parsers keep facts well typed.
    crashed = [(c.id, c.message) for c in by[fuzzed].checks if "could not run" in c.message]
    assert not crashed, (crashed, by[fuzzed].facts.parse_errors)
    for name, h in by.items():
        if name != fuzzed:
            assert _non_fleet(h) == _non_fleet(BASELINE[name])
    doc = json.loads(json.dumps(report.to_dict()))
    assert [h["name"] for h in doc["hosts"]] == ["cp-1", "gpu-1", "w-2"]
    out = io.StringIO()
    ui.render_preflight(report, Console(file=out, width=160, force_terminal=True, color_system=None))
    # Rich writes its own ESC sequences for styles; none can come from a host (no OSC, no BEL).
    assert "\x07" not in out.getvalue() and "\x1b]" not in out.getvalue()


@FUZZ
@given(st.data())
def test_fuzzed_probe_output_never_breaks_any_host_report(data):
    fuzzed = data.draw(st.sampled_from(["cp-1", "gpu-1", "w-2"]))
    outs = dict(BASE)
    outs[fuzzed] = data.draw(mutated(BASE[fuzzed]))
    report = run_preflight(INV, open_transport=opener(outs, []))
    _assert_complete(report, fuzzed)


@FUZZ
@given(mutated(RECORDED))
def test_fuzzed_recorded_h100_output_parses_to_well_typed_facts(text):
    facts = parse_probe(text)
    assert isinstance(facts.addresses, list) and isinstance(facts.macs, dict)
    assert all(isinstance(a, str) for a in facts.addresses + (facts.endpoint_addresses or []))
    assert facts.kernel is None or isinstance(facts.kernel, str)
    outs = dict(BASE)
    outs["gpu-1"] = text
    _assert_complete(run_preflight(INV, open_transport=opener(outs, [])), "gpu-1")


@settings(derandomize=True, database=None, deadline=None, max_examples=60,
          suppress_health_check=list(HealthCheck))
@given(st.text(max_size=2000))
def test_arbitrary_text_as_probe_output(text):
    facts = parse_probe(text)
    assert re.fullmatch(r"[a-z_ ]*", " ".join(facts.parse_errors))
    outs = dict(BASE)
    outs["w-2"] = text
    _assert_complete(run_preflight(INV, open_transport=opener(outs, [])), "w-2")
