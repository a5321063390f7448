"""A batch's jobs side by side (``BatchRunner``): what overlaps, what never does, and order.

The Lambda runtime overlaps a batch's store round trips where that pays off; these tests run
the real ``make_handler`` on moto queues with a store that takes a little time per call, and
check what the module docstring of ``taskhop.sdk._batch`` promises: store calls overlap, sync
handlers run one at a time on the calling thread (unless ``handler_threads``), ``async def``
handlers run side by side each under its own timeout, FIFO groups and jobs sharing a key keep
their order, the deadline leaves what has not started, and a crash stops the batch.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from conftest import FAST_RETRY, EmailSent, SendEmail, send_email
from taskhop.lambda_worker import LocalContext, LocalEventSourceMapping, make_handler
from taskhop.sdk import App, Envelope, JobContext, JobStatus, create_app, static_contract
from taskhop.sdk.memory import MemoryQueue, MemoryStore


class SlowStore(MemoryStore):
    """A memory store whose calls take ``pause`` seconds, counting how many run at once."""

    def __init__(self, pause: float = 0.02) -> None:
        super().__init__()
        self.pause = pause
        self.in_flight = 0
        self.most_in_flight = 0
        self._count = threading.Lock()

    def _slowly(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        with self._count:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.pause)
            return call(*args, **kwargs)
        finally:
            with self._count:
                self.in_flight -= 1

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        return self._slowly(super().begin, *args, **kwargs)

    def complete(self, *args: Any, **kwargs: Any) -> Any:
        return self._slowly(super().complete, *args, **kwargs)


class Crash(BaseException):
    """What ends a process: nothing in taskhop catches it."""


@pytest.fixture
def sqs(mocked_aws: None) -> Any:
    return boto3.client("sqs")


def event(sqs: Any, bodies: list[bytes], *, fifo_groups: list[str] | None = None) -> dict[str, Any]:
    """Send the bodies through a moto queue and receive them as one Lambda SQS event."""
    name = "jobs.fifo" if fifo_groups else "jobs"
    attributes = {"FifoQueue": "true"} if fifo_groups else {}
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    for n, body in enumerate(bodies):
        extra = {} if not fifo_groups else {
            "MessageGroupId": fifo_groups[n], "MessageDeduplicationId": str(n)
        }  # fmt: skip
        sqs.send_message(QueueUrl=url, MessageBody=body.decode(), **extra)
    esm = LocalEventSourceMapping(lambda e, c: None, url, sqs)
    messages: list[dict[str, Any]] = []
    while len(messages) < len(bodies):
        got = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        ).get("Messages", [])
        assert got, "the queue ran dry"
        messages += got
    return {"Records": [esm._record(m) for m in messages]}


def jobs(*names: str, **fields: Any) -> list[bytes]:
    return [Envelope(task="send-email", input={"to": n, "subject": "s"}, **fields).encode()
            for n in names]  # fmt: skip


def failed_to(answer: dict[str, Any], batch: dict[str, Any]) -> list[str]:
    to_of = {r["messageId"]: json.loads(r["body"])["input"]["to"] for r in batch["Records"]}
    return sorted(to_of[f["itemIdentifier"]] for f in answer["batchItemFailures"])


@pytest.fixture
def app() -> Iterator[App]:
    app = create_app(queue=MemoryQueue(), store=SlowStore())
    yield app
    app.close()


def test_a_batch_s_store_calls_overlap(app: App, sqs: Any) -> None:
    store = app.store
    assert isinstance(store, SlowStore)
    app.implement(send_email, lambda data, ctx: EmailSent(f"m-{data['to']}"))
    batch = event(sqs, jobs(*"abcdefghij"))
    answer = make_handler(app, sqs_client=sqs, concurrency=10)(batch, LocalContext())
    assert answer == {"batchItemFailures": []}
    assert store.most_in_flight >= 2  # begins (and ends) of several jobs at once
    assert all(r.status is JobStatus.SUCCEEDED for r in store.records())


def test_with_concurrency_1_one_job_at_a_time(app: App, sqs: Any) -> None:
    store = app.store
    assert isinstance(store, SlowStore)
    app.implement(send_email, lambda data, ctx: EmailSent("ok"))
    answer = make_handler(app, sqs_client=sqs, concurrency=1)(
        event(sqs, jobs(*"abcd")), LocalContext()
    )
    assert answer == {"batchItemFailures": []}
    assert store.most_in_flight == 1


def test_sync_handlers_run_one_at_a_time_on_the_calling_thread(app: App, sqs: Any) -> None:
    threads: set[int] = set()
    running = [0, 0]  # now, most

    def handler(data: SendEmail, ctx: JobContext) -> EmailSent:
        threads.add(threading.get_ident())
        running[0] += 1
        running[1] = max(running)
        time.sleep(0.01)
        running[0] -= 1
        return EmailSent("ok")

    app.implement(send_email, handler)
    answer = make_handler(app, sqs_client=sqs, concurrency=10)(
        event(sqs, jobs(*"abcdef")), LocalContext()
    )
    assert answer == {"batchItemFailures": []}
    assert threads == {threading.get_ident()}
    assert running[1] == 1


def test_handler_threads_run_sync_handlers_side_by_side(app: App, sqs: Any) -> None:
    together = threading.Barrier(3, timeout=10)  # broken unless three run at once

    def handler(data: SendEmail, ctx: JobContext) -> EmailSent:
        together.wait()
        return EmailSent("ok")

    app.implement(send_email, handler)
    handler_fn = make_handler(app, sqs_client=sqs, concurrency=10, handler_threads=3)
    answer = handler_fn(event(sqs, jobs(*"abcdef")), LocalContext())
    assert answer == {"batchItemFailures": []}
    handler_fn.batches.close()


def test_async_handlers_run_side_by_side_each_under_its_own_timeout(app: App, sqs: Any) -> None:
    started: list[str] = []
    all_started = asyncio.Event()

    async def handler(data: SendEmail, ctx: JobContext) -> EmailSent:
        started.append(data["to"])
        if len(started) == 4:
            all_started.set()
        if data["to"] == "slow":
            await asyncio.sleep(30)  # past its timeout: stopped, retried
        await asyncio.wait_for(all_started.wait(), 10)  # only if all four run at once
        return EmailSent("ok")

    app.implement(static_contract("send-email", input=SendEmail, output=EmailSent,
                                  retry=FAST_RETRY, timeout=1), handler)  # fmt: skip
    batch = event(sqs, jobs("a", "b", "c", "slow"))
    started_at = time.monotonic()
    answer = make_handler(app, sqs_client=sqs, concurrency=10)(batch, LocalContext())
    assert failed_to(answer, batch) == ["slow"]
    assert time.monotonic() - started_at < 10  # the slow one was stopped at its timeout
    (slow,) = [r for r in app.store.records() if r.status is JobStatus.RETRYING]  # type: ignore[union-attr]
    assert slow.error is not None
    assert slow.error.type == "HandlerTimeout"


def test_a_fifo_group_keeps_its_order_and_stops_at_its_failure(app: App, sqs: Any) -> None:
    ran: list[str] = []

    def handler(data: SendEmail, ctx: JobContext) -> EmailSent:
        ran.append(data["to"])
        if data["to"] == "a2":
            raise ConnectionError("down")
        return EmailSent("ok")

    app.implement(send_email, handler)
    names = ["a1", "b1", "a2", "b2", "a3", "b3"]
    batch = event(sqs, jobs(*names), fifo_groups=[n[0].upper() for n in names])
    answer = make_handler(app, sqs_client=sqs, concurrency=10)(batch, LocalContext())
    assert failed_to(answer, batch) == ["a2", "a3"]  # a3 waits behind a2, never run
    assert [n for n in ran if n.startswith("a")] == ["a1", "a2"]
    assert [n for n in ran if n.startswith("b")] == ["b1", "b2", "b3"]


def test_jobs_sharing_a_key_run_one_after_another(app: App, sqs: Any) -> None:
    ran: list[str] = []

    def handler(data: SendEmail, ctx: JobContext) -> EmailSent:
        ran.append(data["to"])
        return EmailSent("once")

    app.implement(send_email, handler)
    batch = event(sqs, [*jobs("x", idempotency_key="K"), *jobs("x", idempotency_key="K")])
    answer = make_handler(app, sqs_client=sqs, concurrency=10)(batch, LocalContext())
    assert answer == {"batchItemFailures": []}  # neither waited for the other's claim
    assert ran == ["x"]
    assert [r.result for r in app.store.records()] == [{"message_id": "once"}] * 2  # type: ignore[union-attr]


def test_a_sync_handler_may_run_its_own_event_loop(app: App, sqs: Any) -> None:
    async def inner() -> str:
        await asyncio.sleep(0)
        return "from asyncio.run"

    app.implement(send_email, lambda data, ctx: EmailSent(asyncio.run(inner())))
    answer = make_handler(app, sqs_client=sqs, concurrency=10)(
        event(sqs, jobs("a", "b")), LocalContext()
    )
    assert answer == {"batchItemFailures": []}


def test_records_not_started_by_the_deadline_are_left(app: App, sqs: Any) -> None:
    store = app.store
    assert isinstance(store, SlowStore)

    async def handler(data: SendEmail, ctx: JobContext) -> EmailSent:
        await asyncio.sleep(0.4)
        return EmailSent("ok")

    app.implement(send_email, handler)
    batch = event(sqs, jobs(*"abcdef"))
    handler_fn = make_handler(app, sqs_client=sqs, concurrency=2, safety_margin=0)
    answer = handler_fn(batch, LocalContext(timeout=0.7))
    left = failed_to(answer, batch)
    begun = {r.id for r in store.records()}
    ids = {
        json.loads(r["body"])["id"]: json.loads(r["body"])["input"]["to"] for r in batch["Records"]
    }
    never_begun = sorted(to for job_id, to in ids.items() if job_id not in begun)
    assert never_begun, "two at a time, 0.4 s each: some cannot start within 0.7 s"
    assert set(never_begun) <= set(left)  # left on the queue, unprocessed
    succeeded = [r for r in store.records() if r.status is JobStatus.SUCCEEDED]
    assert len(succeeded) >= 1


def test_a_crash_in_one_job_stops_the_batch_and_is_raised(app: App, sqs: Any) -> None:
    store = app.store
    assert isinstance(store, SlowStore)
    original = store.complete

    def complete(record: Any, *args: Any, **kwargs: Any) -> Any:
        if record.status is JobStatus.SUCCEEDED and len(store.records()) >= 1:
            raise Crash
        return original(record, *args, **kwargs)

    store.complete = complete  # type: ignore[method-assign]
    app.implement(send_email, lambda data, ctx: EmailSent("ok"))
    handler_fn = make_handler(app, sqs_client=sqs, concurrency=4)
    with pytest.raises(Crash):
        handler_fn(event(sqs, jobs(*"abcdefgh")), LocalContext())
    # Stopped between steps: no job has an end recorded, none ran past the crash unseen.
    assert not [r for r in store.records() if r.status is JobStatus.SUCCEEDED]


def test_copies_of_one_job_in_a_batch_run_it_once(app: App, sqs: Any) -> None:
    ran: list[str] = []
    app.implement(send_email, lambda data, ctx: ran.append(ctx.job_id) or EmailSent("ok"))
    (body,) = jobs("x")
    answer = make_handler(app, sqs_client=sqs, concurrency=10)(
        event(sqs, [body, body, body]), LocalContext()
    )
    assert answer == {"batchItemFailures": []}  # the copies found it done, not busy
    assert len(ran) == 1


def test_lanes_tie_groups_jobs_and_keys_together_in_order() -> None:
    from taskhop.sdk._batch import BatchItem, _lanes

    def envelope(job_id: str, key: str | None = None) -> Envelope:
        return Envelope(task="t", input={}, id=job_id, idempotency_key=key)

    items = [BatchItem(str(n), b"", lane=g) for n, g in enumerate([None, "G", None, None, "G"])]
    bodies: list[Any] = [
        envelope("1", "K"), envelope("2"), envelope("3"), envelope("4", "K"), envelope("3")
    ]  # fmt: skip
    # 0 and 3 share K; 1 and 4 share group G; 2 and 4 are one job, which ties 2 to G's lane.
    assert sorted(_lanes(items, bodies)) == [[0, 3], [1, 2, 4]]


def test_a_batch_with_a_redelivery_runs_one_after_another(app: App, sqs: Any) -> None:
    """A crashed batch comes back with receive counts above 1: then a job begins only as it
    runs, so a job that kills its process costs its batch-mates at most one attempt, once."""
    store = app.store
    assert isinstance(store, SlowStore)
    app.implement(send_email, lambda data, ctx: EmailSent("ok"))
    batch = event(sqs, jobs(*"abcd"))
    batch["Records"][2]["attributes"]["ApproximateReceiveCount"] = "2"
    answer = make_handler(app, sqs_client=sqs, concurrency=10)(batch, LocalContext())
    assert answer == {"batchItemFailures": []}
    assert store.most_in_flight == 1
