"""One behaviour suite, two backends: the in-memory backend, and AWS on the moto server.

``MemoryBackend`` and ``MotoBackend`` offer the same few methods, so a test states a behaviour
once and runs on both (dramatiq's ``stub`` and ``redis`` brokers in one ``conftest``):

- ``process(body)``: one delivery of one message, and the ``Outcome`` the worker gave it;
- ``redeliver(previous)``: the next delivery of a message the host kept (after a RETRY, or
  after the worker raised);
- ``drain(*bodies)``: send messages and run them until nothing is left;
- ``record(job_id)``, ``dead_letters()``, ``payloads()`` / ``payload_count()``.

The moto leg runs the shipped runtime, never a copy of it: each body is sent to an SQS queue
on the moto server, ``taskhop.lambda_worker.LocalEventSourceMapping`` polls it and calls the
``make_handler(app)`` handler, which records the job in a ``DynamoStore`` table and settles
the message (delete, ChangeMessageVisibility, re-send delayed, DLQ) as it does on Lambda. The
outcome a test reads is the one the handler's worker returned, taken on its way out by a tap
that changes nothing. The attempt number on that leg is SQS's ``ApproximateReceiveCount``:
``process(body, attempt=3)`` receives the message twice first, as two lost deliveries would.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from botocore.exceptions import ClientError
from taskhop.backends.dynamodb import DynamoStore
from taskhop.backends.s3 import S3Payloads
from taskhop.backends.sqs import SqsQueue
from taskhop.lambda_worker import LocalEventSourceMapping, make_handler
from taskhop.sdk import App, JobRecord, JobStore, Outcome, create_app
from taskhop.sdk.memory import MemoryPayloads, MemoryQueue, MemoryStore
from taskhop.static_contracts import PayloadStore
from taskhop.static_contracts.limits import LAMBDA_SAFETY_MARGIN, SQS_MAX_BATCH_ENTRIES

__all__ = ["BACKENDS", "Backend", "Letter", "MemoryBackend", "MotoBackend", "open_backend"]

BACKENDS = ("memory", "moto")

IN_FLIGHT = 10
"""The moto queue's visibility timeout (s): a message a handler is still running stays hidden
this long. Short, and never waited for: ``advance()`` brings kept messages back at once."""


@dataclass(frozen=True)
class Letter:
    """One dead letter: the body as it arrived and the reason the host gave."""

    body: bytes
    reason: str
    job_id: str | None


class Backend(Protocol):
    """What a behaviour test may do with the backend it runs on."""

    name: str
    app: App
    store: JobStore

    def process(
        self, body: bytes, *, attempt: int | None = None, time_left: float | None = None
    ) -> Outcome:
        """Deliver ``body`` once and return its outcome (re-raise what the worker raised).

        Args:
            body: the message body, as a producer sent it.
            attempt: the host's attempt count for this delivery (SQS's receive count).
            time_left: seconds the host has left for it (Lambda's remaining time less its
                safety margin); none means the host sets no deadline of its own.

        """
        ...

    def redeliver(self, previous: Outcome | bytes) -> Outcome:
        """The next delivery of a message the host kept: after ``previous`` was a RETRY, or
        after processing the body ``previous`` raised."""
        ...

    def drain(self, *bodies: bytes, timeout: float = 10.0) -> list[Outcome]:
        """Send ``bodies`` and run the host until no message is left; every outcome."""
        ...

    def record(self, job_id: str) -> JobRecord | None:
        """The store's record of a job."""
        ...

    def dead_letters(self) -> list[Letter]:
        """Every message the host dead-lettered so far."""
        ...

    def payloads(self) -> PayloadStore:
        """Give the app a payload store for offloaded inputs, and return it."""
        ...

    def payload_count(self) -> int:
        """How many offloaded inputs the payload store holds."""
        ...


class OutcomeTap:
    """Keeps every outcome the app's worker returns (or exception it raises), by thread.

    It wraps the worker's steps for the test's duration (``_prepare``, which may end a job
    early, and ``_succeeded`` / ``_failed``, which end the rest): both ``process`` and a
    batch's overlapped path go through them, once a job. Everything passes through unchanged,
    so the host under test (the Lambda handler, the memory queue) behaves as it would without.
    """

    def __init__(self, app: App, monkeypatch: pytest.MonkeyPatch) -> None:
        self._seen: list[tuple[int, Outcome | Exception]] = []
        self._lock = threading.Lock()
        worker = app.worker()
        for name in ("_prepare", "_succeeded", "_failed"):
            monkeypatch.setattr(worker, name, self._tapped(getattr(worker, name)))

    def _tapped(self, step: Callable[..., Any]) -> Callable[..., Any]:
        def tapped(*args: Any, **kwargs: Any) -> Any:
            try:
                answer = step(*args, **kwargs)
            except Exception as exc:
                self._keep(exc)
                raise
            # Not a job prepared to run (that ends later), nor one a nested step already kept
            # (``_prepare`` may end a job with ``_failed``).
            if isinstance(answer, Outcome) and not self._kept(answer):
                self._keep(answer)
            return answer

        return tapped

    def _kept(self, outcome: Outcome) -> bool:
        with self._lock:
            return any(seen is outcome for _, seen in self._seen[-64:])

    def _keep(self, seen: Outcome | Exception) -> None:
        with self._lock:
            self._seen.append((threading.get_ident(), seen))

    def mark(self) -> int:
        """A position to read from later."""
        with self._lock:
            return len(self._seen)

    def since(self, mark: int, *, this_thread: bool) -> list[Outcome | Exception]:
        """What was seen after ``mark`` (in this thread only, or in all)."""
        me = threading.get_ident()
        with self._lock:
            return [s for t, s in self._seen[mark:] if t == me or not this_thread]


def _single(seen: list[Outcome | Exception]) -> Outcome:
    """The one outcome of a delivery; what the worker raised is raised again here."""
    assert len(seen) == 1, f"expected one message processed, got {seen}"
    if isinstance(seen[0], Exception):
        raise seen[0]
    return seen[0]


def _outcomes(seen: list[Outcome | Exception]) -> list[Outcome]:
    return [s for s in seen if isinstance(s, Outcome)]


class MemoryBackend:
    """The in-memory backend: the worker fed by hand, ``MemoryQueue`` serving ``drain``."""

    name = "memory"

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.queue = MemoryQueue()
        self.store: JobStore = MemoryStore()
        self.app = create_app(queue=self.queue, store=self.store)
        self._payloads: MemoryPayloads | None = None
        self.tap = OutcomeTap(self.app, monkeypatch)

    def process(
        self, body: bytes, *, attempt: int | None = None, time_left: float | None = None
    ) -> Outcome:
        deadline = None if time_left is None else time.monotonic() + time_left
        return self.app.worker().process(body, attempt=attempt, deadline=deadline)

    def redeliver(self, previous: Outcome | bytes) -> Outcome:
        if isinstance(previous, bytes):
            return self.process(previous)
        assert previous.envelope is not None, previous
        # What MemoryQueue re-enqueues after a RETRY: the envelope, one attempt on.
        return self.process(previous.envelope.retried(not_before=None).encode())

    def drain(self, *bodies: bytes, timeout: float = 10.0) -> list[Outcome]:
        mark = self.tap.mark()
        for body in bodies:
            self.queue.send_raw(body)
        self.queue.serve(self.app)
        self.queue.join(timeout)
        return _outcomes(self.tap.since(mark, this_thread=False))

    def record(self, job_id: str) -> JobRecord | None:
        return self.store.get(job_id)

    def dead_letters(self) -> list[Letter]:
        return [Letter(d.body, d.reason, d.job_id) for d in self.queue.dead_letters]

    def payloads(self) -> PayloadStore:
        self._payloads = MemoryPayloads()
        self.app.payloads = self._payloads
        return self._payloads

    def payload_count(self) -> int:
        assert self._payloads is not None, "call payloads() first"
        return len(self._payloads)

    def close(self) -> None:
        self.app.close()


class MotoBackend:
    """SQS, a DLQ and a DynamoDB table on the moto server, run by the shipped Lambda runtime."""

    name = "moto"

    def __init__(self, session: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.session = session
        self.resource = f"t-{uuid.uuid4().hex[:12]}"
        self.sqs = session.client("sqs")
        self.dlq_url: str = self.sqs.create_queue(QueueName=f"{self.resource}-dlq")["QueueUrl"]
        self.queue_url: str = self.sqs.create_queue(
            QueueName=self.resource, Attributes={"VisibilityTimeout": str(IN_FLIGHT)}
        )["QueueUrl"]
        store = DynamoStore(self.resource, session=session)
        store.create_table()
        self.store: JobStore = store
        self.app = create_app(queue=SqsQueue(self.queue_url, session=session), store=store)
        self.tap = OutcomeTap(self.app, monkeypatch)
        self._receipts: dict[str, str] = {}  # message id -> its latest receipt handle
        self._receipts_lock = threading.Lock()
        self.sqs.meta.events.register("after-call.sqs.ReceiveMessage", self._remember)
        self.handler = make_handler(self.app, sqs_client=self.sqs, dlq_url=self.dlq_url)
        self.mapping = LocalEventSourceMapping(self.handler, self.queue_url, self.sqs, wait_time=0)
        self._bucket: str | None = None

    def _remember(self, parsed: dict[str, Any], **_: Any) -> None:
        with self._receipts_lock:
            for message in parsed.get("Messages", []):
                self._receipts[message["MessageId"]] = message["ReceiptHandle"]

    # -- delivering ---------------------------------------------------------------------------

    def send(self, body: bytes) -> str:
        """Put ``body`` on the queue as a producer would; its message id."""
        answer = self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body.decode())
        return str(answer["MessageId"])

    def process(
        self, body: bytes, *, attempt: int | None = None, time_left: float | None = None
    ) -> Outcome:
        message_id = self.send(body)
        for _ in range((attempt or 1) - 1):  # a delivery lost before it was processed
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=SQS_MAX_BATCH_ENTRIES,
                VisibilityTimeout=0,
            ).get("Messages", [])
            assert message_id in {m["MessageId"] for m in got}, got
        mapping = self.mapping
        if time_left is not None:  # the invocation starts with this much time
            mapping = LocalEventSourceMapping(
                self.handler,
                self.queue_url,
                self.sqs,
                wait_time=0,
                function_timeout=time_left + LAMBDA_SAFETY_MARGIN,
            )
        return self._poll(mapping)

    def redeliver(self, previous: Outcome | bytes) -> Outcome:
        self.advance()
        return self._poll(self.mapping)

    def _poll(self, mapping: LocalEventSourceMapping) -> Outcome:
        mark = self.tap.mark()
        mapping.poll_once()
        return _single(self.tap.since(mark, this_thread=True))

    def advance(self) -> None:
        """Make every message the runtime kept visible now, as if its timeout had run out.

        SQS has no clock to move, so each message received so far gets a zero visibility
        timeout; those already deleted answer with an error, which is what they should do.
        """
        with self._receipts_lock:
            handles = list(self._receipts.values())
        for handle in handles:
            with contextlib.suppress(ClientError):  # deleted already: nothing to bring back
                self.sqs.change_message_visibility(
                    QueueUrl=self.queue_url, ReceiptHandle=handle, VisibilityTimeout=0
                )

    def drain(self, *bodies: bytes, timeout: float = 10.0) -> list[Outcome]:
        mark = self.tap.mark()
        for body in bodies:
            self.send(body)
        deadline = time.monotonic() + timeout
        while self.mapping.poll_once() or not self._empty():
            if time.monotonic() > deadline:
                raise TimeoutError(f"drain: messages left on {self.queue_url} after {timeout}s")
            time.sleep(0.05)
        return _outcomes(self.tap.since(mark, this_thread=False))

    def _empty(self) -> bool:
        counts = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return all(n == "0" for n in counts.values())

    # -- reading ------------------------------------------------------------------------------

    def record(self, job_id: str) -> JobRecord | None:
        return self.store.get(job_id)

    def dead_letters(self) -> list[Letter]:
        got = self.sqs.receive_message(
            QueueUrl=self.dlq_url,
            MaxNumberOfMessages=SQS_MAX_BATCH_ENTRIES,
            VisibilityTimeout=0,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        letters: list[Letter] = []
        for message in got:
            attributes = message.get("MessageAttributes", {})
            job_id = attributes.get("taskhop-job-id", {}).get("StringValue")
            reason = attributes.get("taskhop-reason", {}).get("StringValue", "")
            letters.append(Letter(message["Body"].encode(), reason, job_id))
        return letters

    def payloads(self) -> PayloadStore:
        self._bucket = self.resource
        self.session.client("s3").create_bucket(Bucket=self._bucket)
        payloads = S3Payloads(self._bucket, session=self.session)
        self.app.payloads = payloads
        return payloads

    def payload_count(self) -> int:
        assert self._bucket is not None, "call payloads() first"
        listing = self.session.client("s3").list_objects_v2(Bucket=self._bucket)
        return int(listing.get("KeyCount", 0))

    def close(self) -> None:
        self.mapping.stop()
        self.app.close()


@contextmanager
def open_backend(name: str, request: pytest.FixtureRequest) -> Generator[Backend]:
    """The backend called ``name``, fresh for one test, closed after it."""
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    backend: MemoryBackend | MotoBackend
    if name == "moto":
        backend = MotoBackend(request.getfixturevalue("server_session"), monkeypatch)
    else:
        backend = MemoryBackend(monkeypatch)
    try:
        yield backend
    finally:
        backend.close()
