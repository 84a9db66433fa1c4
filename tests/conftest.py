"""Shared pytest fixtures. The lab (tests/lab) is imported lazily: unit tests never need root."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import pytest


@pytest.fixture(scope="session")
def lab_factory() -> Any:
    """`make(fixtures, **kwargs) -> Lab`: bring up simulated hosts; all are torn down at session end.

    A test may also close its lab early with `lab.close()` (idempotent). Lab tests are never
    skipped: when the machine lacks something the lab needs, `Lab()` raises LabError saying what.
    """
    from tests.lab.lab import Lab

    labs: list[Lab] = []

    def make(fixtures: Iterable[Any], **kwargs: Any) -> Lab:
        lab = Lab(list(fixtures), **kwargs)
        labs.append(lab)
        return lab

    yield make
    errors = []
    for lab in reversed(labs):
        try:
            lab.close()
        except Exception as e:  # keep closing the others
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture(scope="session")
def make_lab(lab_factory: Callable[..., Any]) -> Callable[..., Any]:
    """Alias of lab_factory."""
    return lab_factory
