"""Typed dispatch of untyped JSON: ``BoundTask.parse``, ``dispatch_json``, ``adispatch_json``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
from conftest import EmailSent, Resize, Resized, resize, send_email
from taskhop.sdk import (
    Envelope,
    ImplementOptions,
    JobContext,
    PayloadError,
    ValidationError,
    create_app,
)
from taskhop.sdk.memory import MemoryQueue
from taskhop.sdk.testing import in_memory


def _resized(data: Resize, ctx: JobContext) -> Resized:
    return Resized(key=f"{data.url}@{data.width}")


def test_parse_structures_a_request_body_into_the_contract_input() -> None:
    """``parse`` turns a ``dict[str, Any]`` into the attrs input, as the worker would."""
    app = create_app()
    body: dict[str, Any] = {"url": "https://x/cat.png", "width": 64}
    value = app.register(resize).parse(body)
    assert value == Resize(url="https://x/cat.png", width=64)
    assert app.register(send_email).parse({"to": "a", "subject": "s"}) == {
        "to": "a",
        "subject": "s",
    }
    app.close()


def test_parse_lists_every_bad_field_by_path() -> None:
    """Bad bodies fail with every path the worker reports, even with validate_on_dispatch off."""
    app = create_app(validate_on_dispatch=False)  # parse validates all the same
    body = {"url": "ftp://secret-host", "width": "64", "colour": "red"}
    with pytest.raises(ValidationError) as caught:
        app.register(resize).parse(body)
    paths = sorted(e.path for e in caught.value.errors)
    assert paths == ["input", "input.url", "input.width"]
    with pytest.raises(ValidationError) as missing:
        app.register(send_email).parse({"to": "a"})
    assert [e.path for e in missing.value.errors] == ["input.subject"]
    with pytest.raises(PayloadError, match=r"input\.when"):
        app.register(send_email).parse({"to": "a", "subject": "s", "when": {1, 2}})
    app.close()


def test_parse_runs_the_richer_validator_an_implementation_attaches() -> None:
    """A static contract implemented with a stricter ``input_type``: parse checks that too."""

    @attrs.define
    class StrictEmail:
        to: str = attrs.field(validator=attrs.validators.matches_re(r"[^@]+@[^@]+"))
        subject: str

    app = create_app()
    bound = app.implement(
        send_email,
        lambda data, ctx: EmailSent(message_id=data["to"]),
        ImplementOptions(input_type=StrictEmail),
    )
    assert bound.parse({"to": "a@b", "subject": "s"}) == {"to": "a@b", "subject": "s"}
    with pytest.raises(ValidationError) as caught:
        bound.parse({"to": "nobody", "subject": "s"})
    assert [e.path for e in caught.value.errors] == ["input.to"]
    app.close()


def test_dispatch_json_sends_a_valid_body_and_refuses_a_bad_one() -> None:
    """A valid body becomes one job with a typed result; a bad one sends nothing."""
    app = create_app()
    bound = app.implement(resize, _resized)
    queue = MemoryQueue()
    app.transport = queue
    with pytest.raises(ValidationError):
        bound.dispatch_json({"url": "https://x", "width": 0})
    assert queue.pending == 0
    with in_memory(app):
        handle = bound.dispatch_json({"url": "https://x", "width": 3}, idempotency_key="k-1")
        assert handle.result(5) == Resized(key="https://x@3")
    app.close()


def test_adispatch_json_sends_from_an_event_loop() -> None:
    """``adispatch_json`` parses, then sends without blocking the loop."""
    app = create_app()
    bound = app.implement(send_email, lambda data, ctx: EmailSent(message_id=data["to"]))

    async def handler_body(body: dict[str, Any]) -> EmailSent:
        handle = await bound.adispatch_json(body)
        return await handle.aresult(5)

    with in_memory(app):
        assert asyncio.run(handler_body({"to": "a", "subject": "s"})) == EmailSent("a")
        with pytest.raises(ValidationError):
            asyncio.run(handler_body({"to": 1, "subject": "s"}))
    app.close()


class Recorder:
    """A transport that keeps what it is sent."""

    def __init__(self) -> None:
        self.sent: list[Envelope] = []

    def send(self, envelope: Envelope) -> None:
        self.sent.append(envelope)

    def send_many(self, envelopes: Sequence[Envelope]) -> None:
        self.sent.extend(envelopes)

    def close(self) -> None:
        pass


def test_dispatch_json_sends_the_body_as_the_worker_will_read_it() -> None:
    """The envelope carries the validated body as JSON, at the contract's version, with options."""
    app = create_app()
    recorder = Recorder()
    app.transport = recorder
    body: dict[str, Any] = {"url": "https://x", "width": 3}
    handle = app.register(resize.replace(version=2)).dispatch_json(body, headers={"t": "1"})
    [envelope] = recorder.sent
    assert (envelope.id, envelope.input, envelope.version) == (handle.id, body, 2)
    assert envelope.headers == {"t": "1"}
    app.close()
