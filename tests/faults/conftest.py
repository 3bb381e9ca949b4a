"""Fault tests: each parametrized matrix runs its first case by default, the rest
with --slow (CI). The default run stays quick; every case still runs in CI."""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)  # before tests/conftest.py turns 'slow' into a skip
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seen: set[str] = set()
    for item in items:
        if "/faults/" not in str(item.path) or not hasattr(item, "callspec"):
            continue
        name = f"{item.path}::{item.originalname}"  # type: ignore[attr-defined]
        if name in seen:
            item.add_marker(pytest.mark.slow)
        seen.add(name)
