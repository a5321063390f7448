"""Shared fixtures: contracts used across the suite and one app per backend.

``app`` is parametrized over backends (dramatiq's conftest shape): every behaviour test that
takes it runs once per backend. The AWS backends join the list when they exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypedDict

import attrs
import pytest

from sdk import App, create_app, define_task, static_contract
from sdk.testing import MemoryHarness, in_memory


class SendEmail(TypedDict):
    to: str
    subject: str


@dataclass
class EmailSent:
    message_id: str


@attrs.define
class Address:
    city: str = attrs.field(validator=attrs.validators.min_len(2))


@attrs.define
class Resize:
    url: str = attrs.field(validator=attrs.validators.matches_re(r"https?://.+"))
    width: int = attrs.field(validator=attrs.validators.gt(0))
    tags: list[str] = attrs.Factory(list)
    ship_to: Address | None = None


@attrs.define
class Resized:
    key: str


FAST_RETRY = {"attempts": 3, "delay": 0.01, "jitter": False}

send_email = static_contract("send-email", input=SendEmail, output=EmailSent, retry=FAST_RETRY)
resize = define_task("resize", input=Resize, output=Resized, retry=FAST_RETRY)

BACKENDS = ["memory"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend a parametrized test runs on."""
    return str(request.param)


@pytest.fixture
def app(backend: str) -> Iterator[App]:
    """An app on the backend under test (a producer and worker in one process)."""
    assert backend == "memory"
    application = create_app()
    yield application
    application.close()


@pytest.fixture
def harness(app: App) -> Iterator[MemoryHarness]:
    """The app served in memory, with join() and dead_letters."""
    with in_memory(app) as running:
        yield running
