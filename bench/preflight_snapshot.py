"""Snapshot of `gpuk8s preflight --json` on the lab's preflight scenarios, for before/after diffs.

A restructure must not change what preflight reports. Run this before and after a change and
diff the two files (durations and other per-run values are normalised away):

    python3 -m bench.preflight_snapshot before.json    # on the old commit
    python3 -m bench.preflight_snapshot after.json     # on the new one
    diff before.json after.json

Needs root, like the lab. Brings up the healthy and broken hosts of tests/lab/test_preflight_lab.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.lab.lab import Lab
from tests.lab.test_preflight_lab import BROKEN, HEALTHY, REPO

# Values that differ between two runs of the same lab (addresses come from the lab's pool).
VOLATILE = {"duration", "seconds", "address", "addresses", "ipv4_addresses", "routes"}


def _normalise(value):
    if isinstance(value, dict):
        return {k: ("<volatile>" if k in VOLATILE else _normalise(v)) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


# The lab draws product_uuids and MACs at random: they are replaced by one placeholder.
_RANDOM = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|"
                     r"52:54:00(?::[0-9a-f]{2}){3}|<random(?:-\d+)?>")


def _number_random(text: str) -> str:
    return _RANDOM.sub("<random>", text)


def main(out: str) -> int:
    with Lab(HEALTHY + BROKEN) as lab, tempfile.TemporaryDirectory() as tmp:
        inv = lab.write_inventory(Path(tmp) / "inv.yaml", ssh={"connect_timeout": 15})
        env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
        r = subprocess.run([sys.executable, "-m", "gpuk8s", "preflight", "-i", inv, "--json"],
                           capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
        doc = json.loads(r.stdout)
        text = json.dumps({"exit_code": r.returncode, "report": _normalise(doc)}, indent=1)
        for name in lab.names():
            text = text.replace(lab.address(name), f"<addr:{name}>")
        text = _number_random(text.replace(tmp, "<tmp>"))
        Path(out).write_text(text + "\n")
    print(f"wrote {out} (exit {r.returncode}, {len(doc['hosts'])} hosts)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "preflight-snapshot.json"))
