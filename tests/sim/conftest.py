"""Tests marked `long` (the long sweep) run only when selected: `pytest -m long`
(`make long`); a plain `pytest tests/sim` skips them."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "long" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="long-running: run with -m long (make long)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)
