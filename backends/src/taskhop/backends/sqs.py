"""The SQS transport: envelopes as SQS messages, sent one by one or in batches.

- Standard and FIFO queues (a ``.fifo`` URL). FIFO messages get ``MessageGroupId`` from
  ``message_group`` (default: the envelope's ``group`` header, else the task name) and
  ``MessageDeduplicationId`` from the idempotency key, else the job id: never a random value,
  so SQS's 5-minute deduplication works for retries of the same dispatch. (A second job
  with the same key inside those 5 minutes is dropped by SQS itself, so its handle never
  gets a record; on standard queues the worker's key claim answers it instead.)
- ``send_many`` uses SendMessageBatch in groups of at most 10 entries and at most
  ``max_message_bytes`` per request (SQS limits both). Entries reported in ``Failed`` are
  retried with capped exponential backoff; entries still failing raise ``TransportError``
  listing every job id not accepted. Nothing is dropped silently.
- Delays: SQS holds a message back for at most 900 s (``DelaySeconds``), and FIFO queues
  take no per-message delay at all. The envelope's ``not_before`` is the truth: SQS delays
  what it can, and a worker that receives a job early defers it again (re-enqueues it for the
  rest of the wait) in hops of up to 900 s, without using an attempt: the deferral is a new
  message, so SQS's receive count (the attempt number) does not grow while a job waits.
  FIFO queues cannot take a delayed copy; there the worker extends the message's visibility
  instead (up to 12 hours), which holds its group in order but counts as a receive.
- Inputs too large for a message go to ``payloads`` (S3) and the envelope carries
  ``input_ref`` instead; without a payload store they are refused by job id.
- Trace propagation: the envelope's ``trace["xray"]`` (or the Lambda environment's
  ``_X_AMZN_TRACE_ID``) goes in the ``AWSTraceHeader`` system attribute.

AWS requests: one per ``send``; one per 10 envelopes (or per 1 MiB) for ``send_many``.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from taskhop.static_contracts import Envelope, PayloadStore, TransportError, dumps

from ._aws import aws_errors, make_client

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

__all__ = ["SqsQueue"]

MAX_DELAY = 900
"""SQS DelaySeconds maximum (15 minutes)."""
MAX_BATCH = 10
"""SendMessageBatch takes at most 10 entries."""
MAX_MESSAGE_BYTES = 1024 * 1024
"""SQS's maximum message size (1 MiB since 2025; it was 256 KiB); also the batch total."""


class SqsQueue:
    """A ``Transport`` that sends envelopes to one SQS queue.

    Args:
        url: the queue URL (a ``.fifo`` suffix makes it a FIFO queue).
        client: a boto3 SQS client to use as is.
        session: a boto3 session to make the client from (otherwise the environment's).
        config: botocore config merged over taskhop's default (standard retries, 8 tries).
        message_group: FIFO only: a group id, or a function of the envelope returning one.
        max_message_bytes: the queue's maximum message size (set it to match the queue's
            ``MaximumMessageSize`` attribute if you lowered it).
        batch_retries: how many times entries SQS reports as failed are sent again.
        payloads: where inputs too large for a message go (``taskhop.backends.s3.S3Payloads``); the
            envelope then carries ``input_ref`` and the worker loads the input from there.

    """

    def __init__(
        self,
        url: str,
        *,
        client: Any | None = None,
        session: Any | None = None,
        config: Config | None = None,
        message_group: str | Callable[[Envelope], str] | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        batch_retries: int = 5,
        payloads: PayloadStore | None = None,
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"url: expected an SQS queue URL, got {url!r}")
        self.url = url
        self.fifo = url.endswith(".fifo")
        with aws_errors(TransportError, f"SQS queue {url}"):
            self.client: SQSClient = make_client(
                "sqs", client=client, session=session, config=config
            )
        self.message_group = message_group
        self.max_message_bytes = max_message_bytes
        self.batch_retries = batch_retries
        self.payloads = payloads

    def __repr__(self) -> str:
        return f"SqsQueue({self.url!r})"

    def send(self, envelope: Envelope) -> None:
        """Send one envelope with SendMessage."""
        entry, _ = self._entry(envelope, "0", os.environ.get("_X_AMZN_TRACE_ID"))
        del entry["Id"]
        with aws_errors(TransportError, f"send to {self.url}", job_ids=(envelope.id,)):
            self.client.send_message(QueueUrl=self.url, **entry)

    def send_many(self, envelopes: Sequence[Envelope]) -> None:
        """Send envelopes in batches of up to 10 (and 1 MiB); raise listing any not accepted."""
        failed: list[str] = []
        reasons: list[str] = []
        sent = 0
        try:
            for batch in self._batches(envelopes):
                not_sent, why = self._send_batch(batch)
                failed += not_sent
                reasons += why
                sent += len(batch)
        except TransportError as exc:  # a whole request failed: it and every later batch
            failed += [e.id for e in envelopes[sent:]]
            reasons.append(str(exc))
            raise TransportError(
                f"{len(failed)} of {len(envelopes)} envelopes were not accepted by {self.url}: "
                + "; ".join(sorted(set(reasons))),
                job_ids=tuple(failed),
                retryable=exc.retryable,
            ) from exc
        if failed:
            raise TransportError(
                f"{len(failed)} of {len(envelopes)} envelopes were not accepted by {self.url}: "
                + "; ".join(sorted(set(reasons))),
                job_ids=tuple(failed),
            )

    def close(self) -> None:
        """Close the client's connection pool."""
        self.client.close()

    # -- batching ---------------------------------------------------------------------------

    def _batches(
        self, envelopes: Sequence[Envelope]
    ) -> Iterator[list[tuple[Envelope, dict[str, Any]]]]:
        batch: list[tuple[Envelope, dict[str, Any]]] = []
        size = 0
        lambda_trace = os.environ.get("_X_AMZN_TRACE_ID")  # once: it is per invocation
        for envelope in envelopes:
            entry, entry_size = self._entry(envelope, str(len(batch)), lambda_trace)
            if batch and (len(batch) == MAX_BATCH or size + entry_size > self.max_message_bytes):
                yield batch
                batch, size = [], 0
                entry["Id"] = "0"
            batch.append((envelope, entry))
            size += entry_size
        if batch:
            yield batch

    def _send_batch(
        self, batch: list[tuple[Envelope, dict[str, Any]]]
    ) -> tuple[list[str], list[str]]:
        """Send one batch, again for entries SQS failed on its side; return what never went."""
        pending = {entry["Id"]: (envelope, entry) for envelope, entry in batch}
        given_up: list[str] = []
        reasons: list[str] = []
        for attempt in range(self.batch_retries + 1):
            ids = tuple(envelope.id for envelope, _ in pending.values())
            entries: Any = [entry for _, entry in pending.values()]
            with aws_errors(TransportError, f"send batch to {self.url}", job_ids=ids):
                answer = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)
            retry: dict[str, tuple[Envelope, dict[str, Any]]] = {}
            for failure in answer.get("Failed", []):
                envelope, entry = pending[failure["Id"]]
                reasons.append(f"{failure['Code']}: {failure.get('Message', '')}".rstrip(": "))
                if failure["SenderFault"]:  # the request itself is wrong: resending cannot help
                    given_up.append(envelope.id)
                else:
                    retry[failure["Id"]] = (envelope, entry)
            pending = retry
            if not pending:
                break
            if attempt < self.batch_retries:
                time.sleep(min(0.05 * 2**attempt, 2.0) * random.uniform(0.5, 1.0))
        return given_up + [envelope.id for envelope, _ in pending.values()], reasons

    # -- one message ------------------------------------------------------------------------

    def _entry(
        self, envelope: Envelope, entry_id: str, lambda_trace: str | None
    ) -> tuple[dict[str, Any], int]:
        """The SendMessage(Batch) entry, and the bytes it counts against the request limit."""
        body = envelope.encode()
        if len(body) > self.max_message_bytes:
            body = self._offload(envelope, len(body))
        entry: dict[str, Any] = {"Id": entry_id, "MessageBody": body.decode()}
        if self.fifo:
            entry["MessageGroupId"] = self._group(envelope)
            dedupe = envelope.idempotency_key or envelope.id
            # 128 characters at most, from a restricted set: a digest fits any key.
            entry["MessageDeduplicationId"] = hashlib.sha256(dedupe.encode()).hexdigest()
        else:
            delay = min(MAX_DELAY, math.ceil(envelope.delay_seconds()))  # never early
            if delay > 0:
                entry["DelaySeconds"] = delay
        size = len(body)
        trace = (envelope.trace or {}).get("xray") or lambda_trace
        if trace:
            entry["MessageSystemAttributes"] = {
                "AWSTraceHeader": {"DataType": "String", "StringValue": trace}
            }
            size += len(trace.encode())
        return entry, size

    def _offload(self, envelope: Envelope, size: int) -> bytes:
        """Put the input in the payload store; return the slim envelope pointing to it."""
        limit = f"{size} bytes is over the queue's {self.max_message_bytes}-byte message limit"
        if self.payloads is None or envelope.input_ref is not None:
            raise TransportError(
                f"job {envelope.id}: envelope of {limit}; pass payloads=S3Payloads(bucket) to"
                " SqsQueue to offload large inputs",
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
