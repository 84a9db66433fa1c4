"""Bounded parallel work over hosts: every host finishes, then all outcomes are returned.

Workers are daemon threads: an interrupted run never waits for them at exit (a host whose
session froze cannot hold the process). Once `stop` is set no worker starts another host; the
hosts not started yet get an `Interrupted` outcome. The calling thread waits in short slices, so
a signal reaches it promptly.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable, Generic, Iterable, TypeVar

from gpuk8s.errors import Interrupted

T = TypeVar("T")
H = TypeVar("H")

DEFAULT_PARALLEL = 64
WAIT_SLICE = 0.1   # seconds: how long a waiting thread blocks before it looks again


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
                  on_done: Callable[[Outcome[T]], None] | None = None,
                  stop: threading.Event | None = None) -> dict[str, Outcome[T]]:
    """Run fn on every host with at most `parallel` at once; one host's failure never stops others.

    Returns outcomes keyed by host name, in the order the hosts were given. When `stop` is set,
    hosts not started yet are not started (their outcome is Interrupted) and the call returns
    once the started ones end.
    """
    hosts = list(hosts)
    results: dict[str, Outcome[T]] = {name(h): Outcome(name(h)) for h in hosts}
    if not hosts:
        return results
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for h in hosts:
        todo.put(h)
    done: queue.SimpleQueue = queue.SimpleQueue()

    def worker() -> None:
        while True:
            try:
                h = todo.get_nowait()
            except queue.Empty:
                return
            out = results[name(h)]
            if stop is not None and stop.is_set():
                out.error = Interrupted("interrupted before this host was started")
            else:
                try:
                    out.value = fn(h)
                except Exception as e:  # noqa: BLE001 - collected and reported per host
                    out.error = e
                except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt in a worker
                    out.error = Interrupted(f"interrupted ({type(e).__name__})")
            done.put(out)

    for i in range(max(1, min(parallel, len(hosts)))):
        threading.Thread(target=worker, name=f"gpuk8s-host-{i}", daemon=True).start()
    for _ in range(len(hosts)):
        while True:
            try:
                out = done.get(timeout=WAIT_SLICE)
                break
            except queue.Empty:
                continue
        if on_done is not None:
            on_done(out)
    return results


def call_in_thread(fn: Callable[[], T], *, name: str = "gpuk8s-phase") -> tuple[threading.Thread, dict]:
    """Start fn in a daemon thread; the box gets "value" or "error" when it ends."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = e

    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    return t, box


def wait_thread(t: threading.Thread, deadline: float | None = None) -> bool:
    """Join t in short slices (a signal reaches the waiting thread); False at the deadline."""
    import time

    while t.is_alive():
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return False
        t.join(WAIT_SLICE if left is None else min(WAIT_SLICE, left))
    return True
