"""What both SQS transports share: envelopes to SendMessage(Batch) entries, batches, retries.

``SqsQueue`` (boto3) and ``SqsHttpQueue`` (the standard library, SigV4) differ only in how a
request reaches SQS. Everything else is decided here, once, so the two cannot drift:

- the entry: body, ``DelaySeconds`` (capped at SQS's maximum; FIFO queues take none), FIFO
  ``MessageGroupId`` / ``MessageDeduplicationId``, and the X-Ray ``AWSTraceHeader``;
- offloading an input too large for a message to a ``PayloadStore`` (``input_ref``);
- batches of at most ``SQS_MAX_BATCH_ENTRIES`` entries and ``max_message_bytes`` in total;
- which failed entries are sent again (with capped, jittered backoff), which error answers are
  worth another request, and the ``TransportError`` naming every job not accepted.

The entry dictionaries are the SQS API's own parameter shapes, which are also the bodies of
its JSON protocol: boto3 takes them as keyword arguments, ``SqsHttpQueue`` posts them as JSON.

Standard library and ``taskhop.static_contracts`` only: the boto3-free producer imports this.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from taskhop.static_contracts import Envelope, PayloadStore, TransportError, dumps
from taskhop.static_contracts.limits import (
    SQS_MAX_BATCH_ENTRIES,
    SQS_MAX_DELAY,
    SQS_MAX_MESSAGE_BYTES,
)

__all__ = [
    "BACKOFF_CAP",
    "Entry",
    "RETRYABLE_CODES",
    "SendBatch",
    "SqsEntries",
    "backoff",
    "entry_retryable",
    "is_retryable",
    "lambda_trace",
]

RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException", "Throttling", "RequestThrottled", "RequestLimitExceeded",
        "ProvisionedThroughputExceededException", "TooManyRequestsException",
        "InternalServerError", "InternalFailure", "InternalError", "ServiceUnavailable",
        "KMS.ThrottlingException", "KmsThrottled",
    }
)  # fmt: skip
"""AWS error codes that say "not now" rather than "never": throttling and service faults.

The one list every AWS backend reads (``_aws`` for the boto3 ones, ``SqsHttpQueue`` for its
own requests, and failed batch entries here). ``KmsThrottled`` is SQS's code when the queue's
KMS key throttles it (SendMessage errors in the SQS API reference).
"""

BACKOFF_CAP = 2.0
"""The longest wait, in seconds, before sending anything again."""

SendBatch = Callable[[list[dict[str, Any]], tuple[str, ...]], Mapping[str, Any]]
"""A transport's SendMessageBatch: ``(entries, their job ids) -> the answer``.

The answer is SQS's (``Successful`` / ``Failed`` lists); a request that fails as a whole raises
``TransportError`` naming the job ids it was given.
"""


def is_retryable(code: str, status: int = 0) -> bool:
    """Whether an AWS error answer may succeed if sent again (throttling, a 5xx)."""
    return code in RETRYABLE_CODES or status >= 500


def entry_retryable(code: str, sender_fault: bool) -> bool:
    """Whether a SendMessageBatch entry reported in ``Failed`` is worth sending again.

    SQS sets ``SenderFault`` when the entry itself is wrong (resending cannot help); a throttling
    or service code is retried whatever the flag says.
    """
    return not sender_fault or code in RETRYABLE_CODES


def backoff(attempt: int, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait before try ``attempt + 1``: 50 ms doubling, capped, with jitter."""
    return min(cap, 0.05 * 2.0**attempt) * random.uniform(0.5, 1.0)


def lambda_trace() -> str | None:
    """The invocation's X-Ray header inside Lambda (``_X_AMZN_TRACE_ID``), else None."""
    return os.environ.get("_X_AMZN_TRACE_ID")


@dataclass(frozen=True, slots=True)
class Entry:
    """One envelope as SendMessage parameters (no ``QueueUrl``, no batch ``Id``)."""

    envelope: Envelope
    fields: dict[str, Any]
    size: int
    """Bytes it counts against the message and request limits."""


@dataclass(slots=True)
class _Report:
    """What a ``send_many`` could not deliver, and why."""

    not_sent: list[str] = field(default_factory=list[str])
    reasons: list[str] = field(default_factory=list[str])
    retryable: bool = False

    def add(self, job_ids: Sequence[str], reason: str, retryable: bool) -> None:
        self.not_sent += job_ids
        self.reasons.append(reason)
        self.retryable = self.retryable or retryable


class SqsEntries:
    """Entries, batches and batch retries for one queue; the transport sends the requests.

    Args:
        url: the queue URL (a ``.fifo`` suffix makes it a FIFO queue).
        message_group: FIFO only: a group id, or a function of the envelope returning one.
        max_message_bytes: the queue's maximum message size (and the cap on a batch's total).
        batch_retries: how many times entries SQS reports as failed are sent again.
        payloads: where inputs too large for a message go; ``None`` refuses them.
        transport: the transport's class name, for error messages.
        sleep: how to wait between retries (tests pass a recorder).

    """

    def __init__(
        self,
        url: str,
        *,
        message_group: str | Callable[[Envelope], str] | None,
        max_message_bytes: int,
        batch_retries: int,
        payloads: PayloadStore | None,
        transport: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0 < max_message_bytes <= SQS_MAX_MESSAGE_BYTES:
            raise ValueError(
                f"max_message_bytes: SQS takes 1..{SQS_MAX_MESSAGE_BYTES}, got {max_message_bytes}"
            )
        self.url = url
        self.fifo = url.endswith(".fifo")
        self.message_group = message_group
        self.max_message_bytes = max_message_bytes
        self.batch_retries = batch_retries
        self.payloads = payloads
        self.transport = transport
        self.sleep = sleep

    # -- one message ------------------------------------------------------------------------

    def entry(self, envelope: Envelope, trace: str | None) -> Entry:
        """The SendMessage(Batch) entry; ``trace`` is the ambient X-Ray header, if any.

        Raises:
            TransportError: the envelope is too large and cannot be offloaded (not retryable).

        """
        body = envelope.encode()
        if len(body) > self.max_message_bytes:
            body = self._offload(envelope, len(body))
        fields: dict[str, Any] = {"MessageBody": body.decode()}
        if self.fifo:
            fields["MessageGroupId"] = self._group(envelope)
            dedupe = envelope.idempotency_key or envelope.id
            # 128 characters at most, from a restricted set: a digest fits any key. Never
            # random, so SQS's 5-minute deduplication covers retries of the same dispatch.
            fields["MessageDeduplicationId"] = hashlib.sha256(dedupe.encode()).hexdigest()
        else:
            # SQS holds a message back SQS_MAX_DELAY (900 s) at most; the worker defers the
            # rest (not_before is the truth). Rounded up: never early. FIFO takes no delay.
            delay = min(SQS_MAX_DELAY, math.ceil(envelope.delay_seconds()))
            if delay > 0:
                fields["DelaySeconds"] = delay
        size = len(body)
        header = (envelope.trace or {}).get("xray") or trace
        if header:
            fields["MessageSystemAttributes"] = {
                "AWSTraceHeader": {"DataType": "String", "StringValue": header}
            }
            size += len(header.encode())  # counted, to stay on the safe side of the limit
        return Entry(envelope, fields, size)

    def _offload(self, envelope: Envelope, size: int) -> bytes:
        """Put the input in the payload store; return the slim envelope pointing to it."""
        limit = f"{size} bytes is over the queue's {self.max_message_bytes}-byte message limit"
        if self.payloads is None or envelope.input_ref is not None:
            raise TransportError(
                f"job {envelope.id}: envelope of {limit}; pass payloads=S3Payloads(bucket) to"
                f" {self.transport} to offload large inputs",
                job_ids=(envelope.id,),
                retryable=False,
            )
        ref = self.payloads.put(envelope.id, dumps(envelope.input))
        body = envelope.replace(input=None, input_ref=ref).encode()
        if len(body) > self.max_message_bytes:  # headers or trace alone are too large
            raise TransportError(
                f"job {envelope.id}: even without its input the envelope is {len(body)} bytes",
                job_ids=(envelope.id,),
                retryable=False,
            )
        return body

    def _group(self, envelope: Envelope) -> str:
        if callable(self.message_group):
            return self.message_group(envelope)
        return self.message_group or (envelope.headers or {}).get("group") or envelope.task

    # -- batches ----------------------------------------------------------------------------

    def batches(self, envelopes: Sequence[Envelope]) -> Iterator[list[Entry]]:
        """Entries in groups SendMessageBatch accepts: by count and by total size.

        At most SQS_MAX_BATCH_ENTRIES (10) entries, and their messages at most
        SQS_MAX_MESSAGE_BYTES (1 MiB) together; a lowered queue limit caps it too.
        """
        trace = lambda_trace()  # once: it is per invocation
        entries = (self.entry(envelope, trace) for envelope in envelopes)
        return sized_batches(entries, SQS_MAX_BATCH_ENTRIES, self.max_message_bytes)

    def send_many(self, envelopes: Sequence[Envelope], send_batch: SendBatch) -> None:
        """Send every envelope through ``send_batch``; raise naming every job not accepted.

        A request that fails as a whole stops the sending: its unsent entries and every later
        envelope are reported, with that failure's ``retryable``.
        """
        report = _Report()
        consumed = 0  # envelopes taken into batches so far
        try:
            for batch in self.batches(envelopes):
                consumed += len(batch)
                self._send_batch(batch, send_batch, report)
        except TransportError as exc:
            report.add([e.id for e in envelopes[consumed:]], str(exc), exc.retryable)
            raise self._error(report, len(envelopes)) from exc
        if report.not_sent:
            raise self._error(report, len(envelopes))

    def _send_batch(self, batch: list[Entry], send_batch: SendBatch, report: _Report) -> None:
        """Send one batch, again for entries worth it; record in ``report`` what never went."""
        pending = {str(i): entry for i, entry in enumerate(batch)}
        for attempt in range(self.batch_retries + 1):
            ids = tuple(entry.envelope.id for entry in pending.values())
            entries = [{"Id": i, **entry.fields} for i, entry in pending.items()]
            try:
                answer = send_batch(entries, ids)
            except TransportError as exc:
                report.add(ids, str(exc), exc.retryable)
                raise
            retry: dict[str, Entry] = {}
            for failure in answer.get("Failed", []):
                entry = pending[failure["Id"]]
                code = str(failure.get("Code", ""))
                reason = f"{code}: {failure.get('Message') or ''}".rstrip(": ")
                if entry_retryable(code, bool(failure.get("SenderFault"))):
                    retry[failure["Id"]] = entry
                    if attempt == self.batch_retries:
                        report.add([entry.envelope.id], reason, retryable=True)
                else:
                    report.add([entry.envelope.id], reason, retryable=False)
            pending = retry
            if not pending:
                return
            if attempt < self.batch_retries:
                self.sleep(backoff(attempt))

    def _error(self, report: _Report, total: int) -> TransportError:
        return TransportError(
            f"{len(report.not_sent)} of {total} envelopes were not accepted by {self.url}: "
            + "; ".join(sorted(set(report.reasons))),
            job_ids=tuple(report.not_sent),
            retryable=report.retryable,
        )


class _Sized(Protocol):
    @property
    def size(self) -> int:
        """Bytes the entry adds to its request."""
        ...


_S = TypeVar("_S", bound=_Sized)


def sized_batches(
    entries: Iterable[_S],
    max_entries: int,
    max_bytes: int,
    *,
    apart: Callable[[_S], object] | None = None,
) -> Iterator[list[_S]]:
    """``entries`` in order, grouped so no group passes ``max_entries`` or ``max_bytes``.

    With ``apart``, two entries it maps to the same value never share a group: a FIFO message
    group's events go one per request, so the service cannot accept a later one of them
    while it refuses an earlier one (its answers are per entry, in no promised order).
    """
    batch: list[_S] = []
    size = 0
    seen: set[object] = set()
    for entry in entries:
        mark = None if apart is None else apart(entry)
        full = len(batch) == max_entries or size + entry.size > max_bytes
        if batch and (full or (apart is not None and mark in seen)):
            yield batch
            batch, size, seen = [], 0, set[object]()
        batch.append(entry)
        size += entry.size
        seen.add(mark)
    if batch:
        yield batch
