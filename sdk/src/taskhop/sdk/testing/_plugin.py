"""The pytest plugin: ``taskhop_app`` (an embedded app) and ``taskhop_memory`` (its harness)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from taskhop.sdk._app import App, create_app

from . import MemoryHarness, in_memory


@pytest.fixture
def taskhop_app() -> Iterator[App]:
    """A fresh app on the in-memory backend, closed after the test."""
    app = create_app()
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def taskhop_memory(taskhop_app: App) -> Iterator[MemoryHarness]:
    """The in-memory harness of ``taskhop_app``: ``join()``, ``dead_letters``, ``records()``."""
    with in_memory(taskhop_app) as harness:
        yield harness
