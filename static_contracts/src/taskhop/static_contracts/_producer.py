"""Dispatch with nothing but ``static_contracts`` and a transport.

This is the smallest producer: no schemas, no job store, no third-party import. It turns a
typed payload into an envelope and hands it to a transport; the worker validates.
Sync and async are twins, as in httpx: a ``Producer`` gives ``ProducerTask``s that
``dispatch``, an ``AsyncProducer`` gives ``AsyncProducerTask``s that ``adispatch``.
The sdk's ``App`` builds its envelopes with the same ``make_envelope``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

from ._contract import StaticContract
from ._durations import Duration, parse_duration
from ._envelope import Envelope
from ._errors import EnvelopeError
from ._json import JsonValue, to_json_value
from ._reasons import Reason

if TYPE_CHECKING:
    from ._transport import AsyncTransport, Transport

__all__ = ["AsyncProducer", "AsyncProducerTask", "Producer", "ProducerTask", "make_envelope"]

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
        raise EnvelopeError(
            f"idempotency_key: expected a non-empty string, got {type(idempotency_key).__name__}",
            reason=Reason.INVALID_FIELD,
            field="idempotency_key",
        )
    envelope = Envelope(
        task=contract.name,
        input=input,
        version=contract.version,
        idempotency_key=idempotency_key,
        trace=dict(trace) if trace else None,
        headers=dict(headers) if headers else None,
    )
    return envelope.with_delay(parse_duration(delay, field="delay")) if delay else envelope


class _ContractTask(Generic[I, O]):
    """What both producer tasks share: the contract, and how a payload becomes an envelope.

    The sending lives in the two subclasses, one per kind of producer, so a task bound to an
    ``AsyncProducer`` has no ``dispatch`` at all: calling the wrong one is a type error, not
    a run-time surprise.
    """

    def __init__(self, contract: StaticContract[I, O]) -> None:
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
        """The envelope a dispatch would send (for batching or inspection)."""
        return make_envelope(
            self.contract,
            to_json_value(payload),
            delay=delay,
            idempotency_key=idempotency_key,
            trace=trace,
            headers=headers,
        )

    def _envelopes(self, payloads: Iterable[I]) -> list[Envelope]:
        """One envelope per payload, all built before anything is sent."""
        return [self.envelope(p) for p in payloads]


class ProducerTask(_ContractTask[I, O]):
    """A contract bound to a sync ``Producer``: ``dispatch`` is typed by the contract's input."""

    def __init__(self, producer: Producer, contract: StaticContract[I, O]) -> None:
        super().__init__(contract)
        self._producer = producer

    def dispatch(
        self,
        payload: I,
        *,
        delay: Duration | None = None,
        idempotency_key: str | None = None,
        trace: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Send one job and return its id."""
        envelope = self.envelope(
            payload, delay=delay, idempotency_key=idempotency_key, trace=trace, headers=headers
        )
        self._producer.transport.send(envelope)
        return envelope.id

    def dispatch_many(self, payloads: Iterable[I]) -> list[str]:
        """Send several jobs in as few requests as the transport allows; return their ids."""
        envelopes = self._envelopes(payloads)
        self._producer.transport.send_many(envelopes)
        return [e.id for e in envelopes]


class AsyncProducerTask(_ContractTask[I, O]):
    """A contract bound to an ``AsyncProducer``: ``adispatch`` is typed by the contract's input."""

    def __init__(self, producer: AsyncProducer, contract: StaticContract[I, O]) -> None:
        super().__init__(contract)
        self._producer = producer

    async def adispatch(
        self,
        payload: I,
        *,
        delay: Duration | None = None,
        idempotency_key: str | None = None,
        trace: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Send one job without blocking the event loop; return its id."""
        envelope = self.envelope(
            payload, delay=delay, idempotency_key=idempotency_key, trace=trace, headers=headers
        )
        await self._producer.transport.asend(envelope)
        return envelope.id

    async def adispatch_many(self, payloads: Iterable[I]) -> list[str]:
        """Async ``dispatch_many``: send several jobs, return their ids."""
        envelopes = self._envelopes(payloads)
        await self._producer.transport.asend_many(envelopes)
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
    """The minimal async producer, over an ``AsyncTransport``: its tasks ``adispatch``."""

    def __init__(self, transport: AsyncTransport) -> None:
        self.transport = transport

    def register(self, contract: StaticContract[I, O]) -> AsyncProducerTask[I, O]:
        """Bind a contract so its ``adispatch`` is typed by the contract's input."""
        return AsyncProducerTask(self, contract)

    async def aclose(self) -> None:
        """Close the transport."""
        await self.transport.aclose()
