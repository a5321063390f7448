"""The producer-side seam: something that accepts envelopes for delivery.

A transport only *sends*. Receiving is the worker host's business (the Lambda event source
mapping, the memory backend's loop), so a producer needs nothing but this protocol and one
implementation of it. Sync and async are separate protocols, as in httpx.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ._envelope import Envelope

__all__ = ["AsyncTransport", "PayloadStore", "Transport"]


@runtime_checkable
class Transport(Protocol):
    """Delivers envelopes to a queue or a worker endpoint.

    ``send_many`` must either accept every envelope or raise ``TransportError`` listing the
    job ids it could not deliver: a transport never drops a job silently. Delays come from
    ``Envelope.not_before``.
    """

    def send(self, envelope: Envelope) -> None:
        """Deliver one envelope."""
        ...

    def send_many(self, envelopes: Sequence[Envelope]) -> None:
        """Deliver several envelopes, batching where the service allows."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class AsyncTransport(Protocol):
    """The async twin of ``Transport``, for producers inside an event loop."""

    async def asend(self, envelope: Envelope) -> None:
        """Deliver one envelope."""
        ...

    async def asend_many(self, envelopes: Sequence[Envelope]) -> None:
        """Deliver several envelopes."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class PayloadStore(Protocol):
    """Where inputs too large for a queue message go (S3 on AWS, a dict in memory).

    A transport ``put``s the input and sends the envelope with ``input_ref`` set; the worker
    ``get``s it back before validation and ``delete``s it once the job has succeeded.
    """

    def put(self, job_id: str, body: bytes) -> str:
        """Store ``body`` (the input as JSON bytes) and return its reference (a URI)."""
        ...

    def get(self, ref: str) -> bytes:
        """The bytes stored under ``ref``."""
        ...

    def delete(self, ref: str) -> None:
        """Remove what ``ref`` points to (a missing one is not an error)."""
        ...
