"""The SNS event carrier: events published to one topic, fanned out to subscriber queues.

Each subscribing task has its own SQS queue subscribed to the topic with raw message delivery
and a filter policy on the ``taskhop-event`` message attribute (``filter_policy``), so an event
reaches only the queues of tasks that take it, and a non-matching event invokes nothing. The
worker turns each delivered event envelope into that subscriber's job
(``taskhop.lambda_worker``), whose id derives from the event's: a redelivery is a no-op.

- ``publish`` uses PublishBatch: at most 10 entries and 256 KiB in total per request (SNS
  limits both). Entries reported in ``Failed`` are sent once more unless SNS blames the entry
  (``SenderFault``); what still fails raises ``TransportError`` naming every event id not
  accepted. No event is dropped silently.
- FIFO topics (``.fifo``): ``MessageGroupId`` is the event's key (its name when it has none),
  ``MessageDeduplicationId`` its id, so a producer's retry within SNS's 5-minute window is
  deduplicated by SNS as well.
- An event over 256 KiB goes to ``payloads`` (S3): the stored body is the subscriber job's
  input, and the published envelope carries ``payload_ref`` instead of the payload. Without a
  payload store it is refused before any request.

AWS requests: one PublishBatch per 10 events (or per 256 KiB); one PutObject per offloaded
event.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.config import Config
from taskhop.static_contracts import (
    EVENT_ATTRIBUTE,
    EventEnvelope,
    PayloadStore,
    TransportError,
    filter_policy,
)
from taskhop.static_contracts.limits import SNS_MAX_BATCH_ENTRIES, SNS_MAX_MESSAGE_BYTES

from ._aws import aws_errors, make_client
from ._sqs_entries import entry_retryable, sized_batches

__all__ = [
    "EVENT_ATTRIBUTE",
    "SnsCarrier",
    "filter_policy",
    "subscribe_queue",
]

_WIRE_ONLY = ("taskhop_event", "trace", "payload_ref")
_SNS_ID = re.compile(r"[!-~]{1,128}")  # group and deduplication ids: printable ASCII, <= 128


@dataclass(frozen=True, slots=True)
class _Entry:
    event: EventEnvelope
    fields: dict[str, Any]
    size: int


class SnsCarrier:
    """An ``EventCarrier`` publishing event envelopes to one SNS topic.

    Args:
        topic_arn: the topic (a ``.fifo`` suffix makes it a FIFO topic).
        client: a boto3 SNS client to use as is.
        session: a boto3 session to make the client from (otherwise the environment's).
        config: botocore config merged over taskhop's default (standard retries, 8 tries).
        payloads: where events too large for a message go (``taskhop.backends.s3.S3Payloads``);
            subscribers read them back with the same store (``create_app(payloads=...)``).
        max_bytes: the largest message to publish (SNS's 256 KiB at most).

    """

    def __init__(
        self,
        topic_arn: str,
        *,
        client: Any | None = None,
        session: Any | None = None,
        config: Config | None = None,
        payloads: PayloadStore | None = None,
        max_bytes: int = SNS_MAX_MESSAGE_BYTES,
    ) -> None:
        if not topic_arn.startswith("arn:"):
            raise ValueError(f"topic_arn: expected an SNS topic ARN, got {topic_arn!r}")
        if not 0 < max_bytes <= SNS_MAX_MESSAGE_BYTES:
            raise ValueError(f"max_bytes: SNS takes 1..{SNS_MAX_MESSAGE_BYTES}, got {max_bytes}")
        self.topic_arn = topic_arn
        self.fifo = topic_arn.endswith(".fifo")
        self.payloads = payloads
        self.max_bytes = max_bytes
        with aws_errors(TransportError, f"SNS topic {topic_arn}"):
            self.client: Any = make_client(  # mypy-boto3-sns is not a dev requirement
                "sns", client=client, session=session, config=config
            )

    def __repr__(self) -> str:
        return f"SnsCarrier({self.topic_arn!r})"

    def publish(self, events: Sequence[EventEnvelope]) -> None:
        """Publish events in batches of up to 10 (and 256 KiB); raise naming any not accepted.

        Every event is checked (size, offload) before the first request, so an event that can
        never be sent fails the call before any other is published.
        """
        entries = [self._entry(event) for event in events]
        not_sent: list[str] = []
        reasons: list[str] = []
        retryable = False
        held: set[str | None] = set()  # FIFO groups with an event not accepted
        batches = list(self._batches(entries))
        for index, batch in enumerate(batches):
            # SNS orders a FIFO group as it accepts its events: one accepted after an earlier
            # one was refused would run before the caller's retry of it. It waits, not sent.
            waiting = [entry.event.id for entry in batch if _group(entry) in held]
            if waiting:
                not_sent += waiting
                reasons.append("held back behind an earlier event of its FIFO message group")
                batch = batches[index] = [entry for entry in batch if _group(entry) not in held]
            try:
                failed = self._send(batch) if batch else []
            except TransportError as exc:  # the request failed whole: this and later batches
                rest = [entry.event.id for later in batches[index:] for entry in later]
                raise self._error(not_sent + rest, [*reasons, str(exc)], exc.retryable) from exc
            for entry, reason, again in failed:
                not_sent.append(entry.event.id)
                reasons.append(reason)
                retryable = retryable or again
                if self.fifo:
                    held.add(_group(entry))
        if not_sent:
            raise self._error(not_sent, reasons, retryable)

    def check(self, events: Sequence[EventEnvelope]) -> None:
        """Raise as ``publish`` would for an event too large to send, uploading nothing."""
        for event in events:
            body = event.encode()
            if _size(body, event.name) > self.max_bytes:
                self._refuse_large(event, len(body))

    async def apublish(self, events: Sequence[EventEnvelope]) -> None:
        """``publish`` for async code: the requests run off the event loop."""
        import asyncio

        await asyncio.to_thread(self.publish, events)

    def close(self) -> None:
        """Close the client's connection pool."""
        self.client.close()

    # -- entries ----------------------------------------------------------------------------

    def _entry(self, event: EventEnvelope) -> _Entry:
        body = event.encode()
        if _size(body, event.name) > self.max_bytes:
            event, body = self._offload(event, len(body))
        fields: dict[str, Any] = {
            "Message": body.decode(),
            "MessageAttributes": {
                EVENT_ATTRIBUTE: {"DataType": "String", "StringValue": event.name}
            },
        }
        if self.fifo:
            fields["MessageGroupId"] = _sns_id(event.key if event.key is not None else event.name)
            fields["MessageDeduplicationId"] = _sns_id(event.id)
        return _Entry(event, fields, _size(body, event.name))

    def _offload(self, event: EventEnvelope, size: int) -> tuple[EventEnvelope, bytes]:
        """Store the subscriber job's input; return the slim envelope pointing to it."""
        payloads = self._refuse_large(event, size)
        data = event.to_dict()
        for wire_only in _WIRE_ONLY:  # what the subscriber's job input is made of
            data.pop(wire_only, None)
        stored = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
        slim = event.replace(payload=None, payload_ref=payloads.put(event.id, stored))
        body = slim.encode()
        if _size(body, slim.name) > self.max_bytes:  # the trace alone is too large
            raise TransportError(
                f"event {event.id}: even without its payload the envelope is {len(body)} bytes",
                job_ids=(event.id,),
                retryable=False,
            )
        return slim, body

    def _refuse_large(self, event: EventEnvelope, size: int) -> PayloadStore:
        """The store a too-large event goes to; raise if it has none to go to."""
        if self.payloads is None or event.payload_ref is not None:
            raise TransportError(
                f"event {event.id}: envelope of {size} bytes is over the {self.max_bytes}-byte"
                " SNS message limit; pass payloads=S3Payloads(bucket) to SnsCarrier to offload"
                " large events",
                job_ids=(event.id,),
                retryable=False,
            )
        return self.payloads

    def _batches(self, entries: list[_Entry]) -> Iterator[list[_Entry]]:
        """Entries in groups PublishBatch accepts: 10 at most, 256 KiB in total.

        On a FIFO topic, one event per message group in each (see ``sized_batches``).
        """
        apart = _group if self.fifo else None
        return sized_batches(entries, SNS_MAX_BATCH_ENTRIES, self.max_bytes, apart=apart)

    # -- requests ---------------------------------------------------------------------------

    def _send(self, batch: list[_Entry]) -> list[tuple[_Entry, str, bool]]:
        """Publish one batch, once more for failed entries worth it; return what never went."""
        pending = {str(i): entry for i, entry in enumerate(batch)}
        lost: list[tuple[_Entry, str, bool]] = []
        for attempt in range(2):  # the batch, then its retryable failures once
            ids = tuple(entry.event.id for entry in pending.values())
            given: Any = [{"Id": i, **entry.fields} for i, entry in pending.items()]
            with aws_errors(TransportError, f"publish to {self.topic_arn}", job_ids=ids):
                answer = self.client.publish_batch(
                    TopicArn=self.topic_arn, PublishBatchRequestEntries=given
                )
            retry: dict[str, _Entry] = {}
            for failure in answer.get("Failed", []):
                entry = pending[failure["Id"]]
                code = str(failure.get("Code", ""))
                reason = f"{code}: {failure.get('Message') or ''}".rstrip(": ")
                again = entry_retryable(code, bool(failure.get("SenderFault")))
                if again and attempt == 0:
                    retry[failure["Id"]] = entry
                else:
                    lost.append((entry, reason, again))
            pending = retry
            if not pending:
                break
        return lost

    def _error(self, not_sent: list[str], reasons: list[str], retryable: bool) -> TransportError:
        return TransportError(
            f"{len(not_sent)} events were not accepted by {self.topic_arn}"
            f" ({', '.join(not_sent)}): " + "; ".join(sorted(set(reasons))),
            job_ids=tuple(not_sent),
            retryable=retryable,
        )


def subscribe_queue(
    topic_arn: str, queue_arn: str, event_names: Sequence[str], *, client: Any
) -> str:
    """Subscribe an SQS queue to the topic for these events; return the subscription's ARN.

    Raw message delivery: the queue's message body is the event envelope itself, not SNS's
    notification JSON. (The queue's access policy must let the topic send to it; infra sets
    it, moto does not check it.)
    """
    with aws_errors(TransportError, f"subscribe {queue_arn} to {topic_arn}"):
        answer = client.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={
                "RawMessageDelivery": "true",
                "FilterPolicy": json.dumps(filter_policy(event_names)),
            },
            ReturnSubscriptionArn=True,
        )
    return str(answer["SubscriptionArn"])


def _group(entry: _Entry) -> str | None:
    """The entry's FIFO message group (None on a standard topic)."""
    return entry.fields.get("MessageGroupId")


def _size(body: bytes, name: str) -> int:
    """Bytes counted against SNS's limit: the body and the attribute (name, type, value)."""
    return len(body) + len(EVENT_ATTRIBUTE) + len("String") + len(name.encode())


def _sns_id(value: str) -> str:
    """``value`` if SNS takes it as a group or deduplication id, else a digest of it."""
    if _SNS_ID.fullmatch(value):
        return value
    return hashlib.sha256(value.encode()).hexdigest()
