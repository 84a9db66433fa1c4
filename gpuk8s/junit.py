"""`gpuk8s verify --junit FILE`: the report as JUnit XML, as Jenkins, GitLab and GitHub reporters read it.

One <testsuite> per host plus one for the cluster, one <testcase> per check (classname
`gpuk8s.verify.<suite>`, name the check id). A failed check is a <failure message=...> whose text
holds the message and the fix; a skipped one is <skipped message=...>; a warning passes and says
so in <system-out>. An unreachable host is a suite with one failing testcase, `reachable`.
Counts are on every suite and on <testsuites> (tests, failures, errors; `skipped` on the suites
only: the Jenkins xUnit schema, junit-10.xsd, has no `skipped` on <testsuites>).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

# XML 1.0 forbids most C0 controls even escaped: a host string carrying them must not break the file.
_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: Any) -> str:
    return _BAD_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text if text is not None else ""))


def _suite(root: ET.Element, name: str, cases: Iterable[tuple[str, str, str, str | None]],
           timestamp: str, hostname: str | None = None) -> dict[str, int]:
    cases = list(cases)
    counts = {"tests": len(cases), "failures": sum(1 for c in cases if c[1] == "fail"), "errors": 0,
              "skipped": sum(1 for c in cases if c[1] == "skip")}
    attrs = {"name": _clean(name), **{k: str(v) for k, v in counts.items()}, "time": "0",
             "timestamp": timestamp}
    if hostname:
        attrs["hostname"] = _clean(hostname)
    suite = ET.SubElement(root, "testsuite", attrs)
    for check_id, status, message, fix in cases:
        case = ET.SubElement(suite, "testcase", {"classname": _clean(f"gpuk8s.verify.{name}"),
                                                 "name": _clean(check_id), "time": "0"})
        if status == "fail":
            el = ET.SubElement(case, "failure", {"message": _clean(message), "type": "fail"})
            el.text = _clean(message + (f"\nfix: {fix}" if fix else ""))
        elif status == "skip":
            ET.SubElement(case, "skipped", {"message": _clean(message)})
        elif status == "warn":
            out = ET.SubElement(case, "system-out")
            out.text = _clean(f"warn: {message}" + (f"\nfix: {fix}" if fix else ""))
    return counts


def to_junit(report: Any, now: datetime | None = None) -> str:
    """The VerifyReport (actions/verify.py) as a JUnit XML document."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S")
    root = ET.Element("testsuites", {"name": "gpuk8s verify"})
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for h in report.hosts:
        if not h.reachable:
            cases = [("reachable", "fail", f"{h.name} unreachable ({h.error_kind}): {h.error}", None)]
        else:
            cases = [(c.id, c.status, c.message, c.fix) for c in h.checks]
            if h.error:
                cases.insert(0, ("host", "fail", h.error, None))
        counts = _suite(root, h.name, cases, stamp, h.address)
        for k in totals:
            totals[k] += counts[k]
    counts = _suite(root, "cluster", [(c.id, c.status, c.message, c.fix) for c in report.cluster.checks], stamp)
    for k in totals:
        totals[k] += counts[k]
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("time", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(report: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_junit(report), encoding="utf-8")
