"""What every check set shares: result types, the context a check reads, and the registry.

A check is a pure function from a `CheckContext` to one `CheckResult`. A `CheckSet` (preflight,
and later verify) holds its checks and reports them in a fixed order, so its `--json` output has
the same ids for every host whichever module registered them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

from gpuk8s.facts import Facts
from gpuk8s.inventory import HostSpec, Inventory
from gpuk8s.packages import os_family
from gpuk8s.paths import KUBELET_CONF
from gpuk8s.shell import quote
from gpuk8s.versions import Release, release_for, supported_minors

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
STATUSES = (PASS, WARN, FAIL, SKIP)


# --------------------------------------------------------------------------- results

class CheckInfo(NamedTuple):
    id: str
    title: str
    why: str


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one host."""

    id: str
    status: str
    message: str
    fix: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"invalid check status {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "message": self.message, "fix": self.fix}


def overall_status(results: list[CheckResult]) -> str:
    """The worst status among results: fail > warn > pass (skip alone counts as pass)."""
    statuses = {r.status for r in results}
    if FAIL in statuses:
        return FAIL
    if WARN in statuses:
        return WARN
    return PASS


# --------------------------------------------------------------------------- context

def is_gpu_host(host: HostSpec, facts: Facts | None) -> bool:
    """True when the host is (or is detected as) a GPU node: inventory `gpu:` wins over detection."""
    if host.gpu is not None:
        return bool(host.gpu)
    return bool(facts is not None and facts.gpus)


@dataclass(frozen=True)
class CheckContext:
    """Everything a check may read about one host, derived once per host."""

    inventory: Inventory
    host: HostSpec
    facts: Facts
    fleet: Mapping[str, Facts]
    release: Release | None
    family: str | None          # "debian" | "rhel" | None
    gpu: bool

    @classmethod
    def for_host(cls, inventory: Inventory, host: HostSpec, facts: Facts,
                 fleet: Mapping[str, Facts]) -> CheckContext:
        """The context of `host`; `fleet` maps host name -> Facts (including this host's)."""
        return cls(inventory=inventory, host=host, facts=facts, fleet=fleet,
                   release=inventory.release if release_for(inventory.cluster.kubernetes_version) else None,
                   family=os_family(facts), gpu=is_gpu_host(host, facts))

    @property
    def k8s_version(self) -> str:
        return self.inventory.cluster.kubernetes_version

    @property
    def is_k8s_node(self) -> bool:
        return KUBELET_CONF in self.facts.kubernetes_files

    def others(self) -> list[tuple[str, Facts]]:
        return [(n, f) for n, f in sorted(self.fleet.items()) if n != self.host.name]


def not_supported(ctx: CheckContext, check_id: str) -> CheckResult:
    """The failure of a check that needs the version matrix when kubernetes_version is not in it."""
    return CheckResult(
        check_id, FAIL,
        f"kubernetes_version {ctx.k8s_version} is not supported "
        f"(supported minors: {', '.join(supported_minors())})",
        f"set cluster.kubernetes_version in {ctx.inventory.path} to one of: "
        f"{', '.join(supported_minors())}")


# --------------------------------------------------------------------------- registry

Check = Callable[[CheckContext], CheckResult]


class _Entry(NamedTuple):
    info: CheckInfo
    fn: Check
    repaired_by_up: bool


class CheckSet:
    """A named set of checks, reported in the order given; area modules register into it."""

    def __init__(self, name: str, order: tuple[str, ...]):
        self.name = name
        self._order = order
        self._entries: dict[str, _Entry] = {}

    def check(self, check_id: str, title: str, why: str,
              repaired_by_up: bool = False) -> Callable[[Check], Check]:
        """Decorator registering a check; `repaired_by_up`: `gpuk8s up` fixes what it finds."""
        if check_id not in self._order:
            raise ValueError(f"{self.name}: check {check_id!r} has no place in the set's order")
        if check_id in self._entries:
            raise ValueError(f"{self.name}: check {check_id!r} is registered twice")

        def register(fn: Check) -> Check:
            self._entries[check_id] = _Entry(CheckInfo(check_id, title, why), fn, repaired_by_up)
            return fn
        return register

    def _ordered(self) -> list[_Entry]:
        # An id without a check means an area module was never imported.
        missing = [i for i in self._order if i not in self._entries]
        if missing:
            raise RuntimeError(f"{self.name}: no check registered for {', '.join(missing)}")
        return [self._entries[i] for i in self._order]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(e.info.id for e in self._ordered())

    @property
    def infos(self) -> list[CheckInfo]:
        return [e.info for e in self._ordered()]

    def checks(self) -> list[tuple[CheckInfo, Check]]:
        """(info, function) of every check, in order: for a caller that runs them itself
        (verify's host checks run concurrently, phases/verify.py)."""
        return [(e.info, e.fn) for e in self._ordered()]

    @property
    def repaired_by_up(self) -> frozenset[str]:
        return frozenset(e.info.id for e in self._ordered() if e.repaired_by_up)

    def run(self, inventory: Inventory, host: HostSpec, facts: Facts,
            fleet: Mapping[str, Facts]) -> list[CheckResult]:
        """Every check of the set for one host, in order; `fleet` maps host name -> Facts."""
        ctx = CheckContext.for_host(inventory, host, facts, fleet)
        return [_run_one(e, ctx) for e in self._ordered()]

    def run_on(self, ctx: Any, crash: Callable[[str, Exception], CheckResult]) -> list[CheckResult]:
        """Every check of the set on a context of the set's own type (verify's cluster checks
        read one cluster-wide context, not a host's); a check that raises reports crash(id, e)."""
        out = []
        for e in self._ordered():
            try:
                out.append(e.fn(ctx))
            except Exception as ex:  # noqa: BLE001 - one odd object never breaks the other checks
                out.append(crash(e.info.id, ex))
        return out


def _run_one(entry: _Entry, ctx: CheckContext) -> CheckResult:
    """One check, isolated: a check that raises on odd facts fails on this host, with the reason."""
    try:
        return entry.fn(ctx)
    except Exception as e:  # noqa: BLE001 - one host's odd facts never break the run
        return crashed(entry.info.id, e, ctx.host.name, ctx.facts)


def crashed(check_id: str, e: BaseException, host: str, facts: Facts | None = None) -> CheckResult:
    """The failure of a check that raised: the error, and which probe output was not understood."""
    why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
    unknown = "; ".join(sorted(facts.parse_errors)) if facts is not None and facts.parse_errors else ""
    return CheckResult(
        check_id, FAIL,
        f"the check could not run on this host's facts ({why})"
        + (f"; facts not understood: {unknown}" if unknown else ""),
        f"gpuk8s preflight --json --host {quote(host)}   # report its facts and this message as "
        "a gpuk8s bug")
