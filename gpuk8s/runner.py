"""Bounded parallel work over hosts: every host finishes, then all outcomes are returned."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")
H = TypeVar("H")

DEFAULT_PARALLEL = 64


@dataclass
class Outcome(Generic[T]):
    """What one host's work produced: a value, or the exception that stopped it."""

    name: str
    value: T | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def for_each_host(hosts: Iterable[H], fn: Callable[[H], T], *, name: Callable[[H], str],
                  parallel: int = DEFAULT_PARALLEL,
                  on_done: Callable[[Outcome[T]], None] | None = None) -> dict[str, Outcome[T]]:
    """Run fn on every host with at most `parallel` at once; one host's failure never stops others.

    Returns outcomes keyed by host name, in the order the hosts were given.
    """
    hosts = list(hosts)
    results: dict[str, Outcome[T]] = {name(h): Outcome(name(h)) for h in hosts}
    if not hosts:
        return results
    workers = max(1, min(parallel, len(hosts)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gpuk8s-host") as pool:
        futures = {pool.submit(fn, h): name(h) for h in hosts}
        for fut in as_completed(futures):
            n = futures[fut]
            try:
                results[n].value = fut.result()
            except Exception as e:  # noqa: BLE001 - collected and reported per host
                results[n].error = e
            if on_done is not None:
                on_done(results[n])
    return results
