"""The standard-library producers: sync and async twins, each with its own task class."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TypedDict

import pytest
from taskhop.static_contracts import (
    AsyncProducer,
    AsyncProducerTask,
    Envelope,
    Producer,
    ProducerTask,
    static_contract,
)


class Greet(TypedDict):
    name: str


greet = static_contract("greet", input=Greet, output=dict)


class ListTransport:
    """A sync transport that keeps what it is sent, one list entry per request."""

    def __init__(self) -> None:
        self.requests: list[list[Envelope]] = []
        self.closed = False

    def send(self, envelope: Envelope) -> None:
        self.requests.append([envelope])

    def send_many(self, envelopes: Sequence[Envelope]) -> None:
        self.requests.append(list(envelopes))

    def close(self) -> None:
        self.closed = True


class AsyncListTransport:
    """The async twin of ``ListTransport``."""

    def __init__(self) -> None:
        self.requests: list[list[Envelope]] = []
        self.closed = False

    async def asend(self, envelope: Envelope) -> None:
        self.requests.append([envelope])

    async def asend_many(self, envelopes: Sequence[Envelope]) -> None:
        self.requests.append(list(envelopes))

    async def aclose(self) -> None:
        self.closed = True


def test_a_sync_producer_dispatches_one_and_many() -> None:
    """dispatch sends one request per job, dispatch_many one for all; both return the ids."""
    transport = ListTransport()
    producer = Producer(transport)
    task = producer.register(greet)
    one = task.dispatch({"name": "a"}, idempotency_key="k", headers={"h": "v"})
    many = task.dispatch_many([{"name": "b"}, {"name": "c"}])
    producer.close()
    assert [[e.id for e in request] for request in transport.requests] == [[one], many]
    first = transport.requests[0][0]
    assert (first.task, first.input, first.idempotency_key) == ("greet", {"name": "a"}, "k")
    assert first.headers == {"h": "v"}
    assert [e.input for e in transport.requests[1]] == [{"name": "b"}, {"name": "c"}]
    assert transport.closed


def test_an_async_producer_dispatches_one_and_many() -> None:
    """adispatch and adispatch_many send through the async transport and return the ids."""
    transport = AsyncListTransport()
    producer = AsyncProducer(transport)
    task = producer.register(greet)

    async def main() -> tuple[str, list[str]]:
        one = await task.adispatch({"name": "a"}, delay=5, trace={"traceparent": "t"})
        many = await task.adispatch_many([{"name": "b"}, {"name": "c"}])
        await producer.aclose()
        return one, many

    one, many = asyncio.run(main())
    assert [[e.id for e in request] for request in transport.requests] == [[one], many]
    first = transport.requests[0][0]
    assert first.not_before is not None
    assert first.trace == {"traceparent": "t"}
    assert transport.closed


def test_each_producer_gives_its_own_task_class() -> None:
    """A sync producer's task only dispatches, an async producer's only adispatches."""
    sync_task = Producer(ListTransport()).register(greet)
    async_task = AsyncProducer(AsyncListTransport()).register(greet)
    assert type(sync_task) is ProducerTask
    assert type(async_task) is AsyncProducerTask
    for name in ("adispatch", "adispatch_many"):
        assert not hasattr(sync_task, name), name
    for name in ("dispatch", "dispatch_many"):
        assert not hasattr(async_task, name), name


@pytest.mark.parametrize(
    "task",
    [
        Producer(ListTransport()).register(greet),
        AsyncProducer(AsyncListTransport()).register(greet),
    ],
    ids=["sync", "async"],
)
def test_both_tasks_build_the_same_envelope(
    task: ProducerTask[Greet, dict[str, object]] | AsyncProducerTask[Greet, dict[str, object]],
) -> None:
    """``envelope`` is shared: the same options give the same fields on either kind of task."""
    envelope = task.envelope({"name": "a"}, idempotency_key="k", headers={"h": "v"})
    assert (envelope.task, envelope.version, envelope.input) == ("greet", 1, {"name": "a"})
    assert (envelope.idempotency_key, envelope.headers) == ("k", {"h": "v"})
    with pytest.raises(ValueError, match="idempotency_key"):
        task.envelope({"name": "a"}, idempotency_key="")
