"""The SQS transport: envelopes as SQS messages, sent one by one or in batches.

- Standard and FIFO queues (a ``.fifo`` URL). FIFO messages get ``MessageGroupId`` from
  ``message_group`` (default: the envelope's ``group`` header, else the task name) and
  ``MessageDeduplicationId`` from the idempotency key, else the job id: never a random value,
  so SQS's 5-minute deduplication works for retries of the same dispatch. (A second job
  with the same key inside those 5 minutes is dropped by SQS itself, so its handle never
  gets a record; on standard queues the worker's key claim answers it instead.)
- ``send_many`` uses SendMessageBatch in groups of at most 10 entries and at most
  ``max_message_bytes`` per request (SQS limits both). Entries reported in ``Failed`` are
  retried with capped exponential backoff unless SQS blames the entry (``SenderFault``, and
  no throttling code); entries still failing raise ``TransportError`` listing every job id not
  accepted, retryable when any of them may succeed later. Nothing is dropped silently.
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

Entries, batches, offload and the retry decisions are ``_sqs_entries``'s, shared with the
standard-library ``SqsHttpQueue``; this module only makes the boto3 calls.

AWS requests: one per ``send``; one per 10 envelopes (or per 1 MiB) for ``send_many``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from taskhop.static_contracts import Envelope, PayloadStore, TransportError
from taskhop.static_contracts.limits import SQS_MAX_MESSAGE_BYTES

from ._aws import aws_errors, make_client
from ._sqs_entries import SqsEntries, lambda_trace

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

__all__ = ["SqsQueue"]


class SqsQueue:
    """A ``Transport`` that sends envelopes to one SQS queue.

    ``entries`` is the shared ``SqsEntries`` that builds and batches the messages (the same
    one ``SqsHttpQueue`` uses).

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
        max_message_bytes: int = SQS_MAX_MESSAGE_BYTES,
        batch_retries: int = 5,
        payloads: PayloadStore | None = None,
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"url: expected an SQS queue URL, got {url!r}")
        self.url = url
        self.entries = SqsEntries(
            url,
            message_group=message_group,
            max_message_bytes=max_message_bytes,
            batch_retries=batch_retries,
            payloads=payloads,
            transport="SqsQueue",
        )
        self.fifo = self.entries.fifo
        with aws_errors(TransportError, f"SQS queue {url}"):
            self.client: SQSClient = make_client(
                "sqs", client=client, session=session, config=config
            )

    def __repr__(self) -> str:
        return f"SqsQueue({self.url!r})"

    def send(self, envelope: Envelope) -> None:
        """Send one envelope with SendMessage."""
        entry = self.entries.entry(envelope, lambda_trace())
        with aws_errors(TransportError, f"send to {self.url}", job_ids=(envelope.id,)):
            self.client.send_message(QueueUrl=self.url, **entry.fields)

    def send_many(self, envelopes: Sequence[Envelope]) -> None:
        """Send envelopes in batches of up to 10 (and 1 MiB); raise listing any not accepted."""
        self.entries.send_many(envelopes, self._send_batch)

    def close(self) -> None:
        """Close the client's connection pool."""
        self.client.close()

    def _send_batch(
        self, entries: list[dict[str, Any]], job_ids: tuple[str, ...]
    ) -> Mapping[str, Any]:
        """One SendMessageBatch request (botocore retries throttling and 5xx itself)."""
        given: Any = entries  # the TypedDict botocore-stubs expects is the same shape
        with aws_errors(TransportError, f"send batch to {self.url}", job_ids=job_ids):
            return self.client.send_message_batch(QueueUrl=self.url, Entries=given)
