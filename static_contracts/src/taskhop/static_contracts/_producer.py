"""Dispatch with nothing but ``static_contracts`` and a transport.

This is the smallest producer: no schemas, no job store, no third-party import. It turns a
typed payload into an envelope and hands it to a transport; the worker validates.
The sdk's ``App`` builds its envelopes with the same ``make_envelope``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

from ._contract import StaticContract
from ._durations import Duration, parse_duration
from ._envelope import Envelope
from ._json import JsonValue, to_json_value
from ._transport import AsyncTransport, Transport

__all__ = ["AsyncProducer", "Producer", "ProducerTask", "make_envelope"]

I = TypeVar("I")
O = TypeVar("O")


def make_envelope(
    contract: StaticContract[object, object] | StaticContract[I, O],
    input: JsonValue,
    *,
    delay: Duration | None = None,
    idempotency_key: str | None = None,
    trace: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Envelope:
    """Build the envelope for one job of ``contract`` whose input is already JSON data."""
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str) or not idempotency_key
    ):
        raise ValueError(f"idempotency_key: expected a non-empty string, got {idempotency_key!r}")
    envelope = Envelope(
        task=contract.name,
        input=input,
        version=contract.version,
        idempotency_key=idempotency_key,
        trace=dict(trace) if trace else None,
        headers=dict(headers) if headers else None,
    )
    return envelope.with_delay(parse_duration(delay, field="delay")) if delay else envelope


class ProducerTask(Generic[I, O]):
    """A contract bound to a producer: ``dispatch`` is typed by the contract's input."""

    def __init__(self, producer: Producer | AsyncProducer, contract: StaticContract[I, O]):
        self._producer = producer
        self.contract = contract

    def envelope(
        self,
        payload: I,
        *,
        delay: Duration | None = None,
        idempotency_key: str | None = None,
        trace: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Envelope:
        """The envelope ``dispatch`` would send (for batching or inspection)."""
        return make_envelope(
            self.contract,
            to_json_value(payload),
            delay=delay,
            idempotency_key=idempotency_key,
            trace=trace,
            headers=headers,
        )

    def dispatch(
        self,
        payload: I,
        *,
        delay: Duration | None = None,
        idempotency_key: str | None = None,
        trace: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Send one job and return its id (needs a sync ``Producer``)."""
        envelope = self.envelope(
            payload, delay=delay, idempotency_key=idempotency_key, trace=trace, headers=headers
        )
        _sync(self._producer).transport.send(envelope)
        return envelope.id

    async def adispatch(
        self,
        payload: I,
        *,
        delay: Duration | None = None,
        idempotency_key: str | None = None,
        trace: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Send one job without blocking the event loop (needs an ``AsyncProducer``)."""
        envelope = self.envelope(
            payload, delay=delay, idempotency_key=idempotency_key, trace=trace, headers=headers
        )
        await _async(self._producer).transport.asend(envelope)
        return envelope.id

    def dispatch_many(self, payloads: Iterable[I]) -> list[str]:
        """Send several jobs in as few requests as the transport allows; return their ids."""
        envelopes = [self.envelope(p) for p in payloads]
        _sync(self._producer).transport.send_many(envelopes)
        return [e.id for e in envelopes]

    async def adispatch_many(self, payloads: Iterable[I]) -> list[str]:
        """Async ``dispatch_many``."""
        envelopes = [self.envelope(p) for p in payloads]
        await _async(self._producer).transport.asend_many(envelopes)
        return [e.id for e in envelopes]


class Producer:
    """The minimal sync producer: ``Producer(transport).register(contract).dispatch(x)``."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def register(self, contract: StaticContract[I, O]) -> ProducerTask[I, O]:
        """Bind a contract so its ``dispatch`` is typed by the contract's input."""
        return ProducerTask(self, contract)

    def close(self) -> None:
        """Close the transport."""
        self.transport.close()


class AsyncProducer:
    """The minimal async producer, over an ``AsyncTransport``."""

    def __init__(self, transport: AsyncTransport) -> None:
        self.transport = transport

    def register(self, contract: StaticContract[I, O]) -> ProducerTask[I, O]:
        """Bind a contract so its ``adispatch`` is typed by the contract's input."""
        return ProducerTask(self, contract)

    async def aclose(self) -> None:
        """Close the transport."""
        await self.transport.aclose()


def _sync(producer: Producer | AsyncProducer) -> Producer:
    if not isinstance(producer, Producer):
        raise TypeError("this task is bound to an AsyncProducer: use adispatch()")
    return producer


def _async(producer: Producer | AsyncProducer) -> AsyncProducer:
    if not isinstance(producer, AsyncProducer):
        raise TypeError("this task is bound to a sync Producer: use dispatch()")
    return producer
