"""The in-memory backend as a queue: delivery, delays, retries, dead letters, shutdown."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from conftest import EmailSent, SendEmail, send_email
from taskhop.sdk import App, Envelope, JobContext, create_app
from taskhop.sdk.memory import MemoryQueue, MemoryStore
from taskhop.sdk.testing import MemoryHarness
from taskhop.static_contracts import AsyncTransport, Transport, TransportError
from taskhop.static_contracts.limits import SQS_MAX_DELAY


@pytest.fixture
def backend() -> str:
    """This module tests the in-memory backend itself."""
    return "memory"


def test_memory_queue_is_a_transport() -> None:
    """MemoryQueue implements both the sync and async transport protocols."""
    queue = MemoryQueue()
    assert isinstance(queue, Transport)
    assert isinstance(queue, AsyncTransport)


def test_poison_bodies_are_dead_lettered_with_their_reason(
    app: App, harness: MemoryHarness
) -> None:
    """Raw bytes that are not envelopes never crash the worker; they are kept with a reason."""
    harness.queue.send_raw(b"not json")
    harness.queue.send_raw(b'{"Records": []}')
    harness.join()
    assert [(d.body, d.reason) for d in harness.dead_letters] == [
        (b"not json", "not_json"),
        (b'{"Records": []}', "not_envelope"),
    ]


def test_delayed_messages_run_in_due_order(app: App, harness: MemoryHarness) -> None:
    """Messages become visible at their not_before, earliest first."""
    order: list[str] = []

    def note(data: SendEmail, ctx: JobContext) -> EmailSent:
        order.append(data["to"])
        return EmailSent("ok")

    bound = app.implement(send_email, note)
    bound.dispatch({"to": "late", "subject": "s"}, delay=0.2)
    bound.dispatch({"to": "soon", "subject": "s"}, delay=0.05)
    bound.dispatch({"to": "now", "subject": "s"})
    harness.join()
    assert order == ["now", "soon", "late"]


def test_a_job_received_early_is_re_sent_as_it_arrived_for_at_most_900s() -> None:
    """As on Lambda: a deferral re-queues the body untouched (no attempt used), one SQS hop."""
    queue = MemoryQueue()
    app = create_app(queue=queue, store=MemoryStore())
    app.implement(send_email, lambda d, c: EmailSent("ok"))
    early = Envelope(task="send-email", input={"to": "a", "subject": "s"}, attempt=2)
    body = json.dumps(early.with_delay(3600).to_dict(), indent=2).encode()  # not our encoding
    queue.send_raw(body)  # visible now, an hour before it is due
    queue.serve(app)
    deadline = time.monotonic() + 5
    while not (queue._heap and queue._heap[0].ready_at > time.monotonic() + 60):
        assert time.monotonic() < deadline, "the early job was never deferred"
        time.sleep(0.01)
    [kept] = queue._heap
    assert kept.receives == 0  # a new message: its receive count starts again
    assert kept.body == body
    assert SQS_MAX_DELAY - 60 < kept.ready_at - time.monotonic() <= SQS_MAX_DELAY
    assert app.store is not None
    assert app.store.get(early.id) is None  # held back, not begun
    app.close()


def test_join_times_out_when_work_remains(app: App, harness: MemoryHarness) -> None:
    """``join`` raises TimeoutError saying how much is left."""
    app.implement(send_email, lambda d, c: EmailSent("ok")).dispatch(
        {"to": "a", "subject": "s"}, delay=5
    )
    with pytest.raises(TimeoutError, match=r"1 queued and 0 in flight"):
        harness.join(timeout=0.05)


def test_join_without_an_app_is_an_error() -> None:
    """Waiting on a queue nothing serves could never end, so it raises at once."""
    with pytest.raises(RuntimeError, match="call serve"):
        MemoryQueue().join()


def test_several_workers_process_concurrently() -> None:
    """``MemoryQueue(workers=2)`` runs two jobs at the same time."""
    queue = MemoryQueue(workers=2)
    app = create_app(queue=queue, store=MemoryStore())
    both = threading.Barrier(2, timeout=5)

    def meet(data: SendEmail, ctx: JobContext) -> EmailSent:
        both.wait()  # deadlocks (and times out) unless two handlers run at once
        return EmailSent("met")

    bound = app.implement(send_email, meet)
    queue.serve(app)
    handles = [bound.dispatch({"to": str(n), "subject": "s"}) for n in range(2)]
    assert [h.result(5) for h in handles] == [EmailSent("met"), EmailSent("met")]
    app.close()
    with pytest.raises(ValueError, match="workers: must be >= 1"):
        MemoryQueue(workers=0)


def test_close_stops_the_threads_and_refuses_new_messages() -> None:
    """Closing finishes in-flight work and is final: later sends raise TransportError."""
    queue = MemoryQueue()
    app = create_app(queue=queue, store=MemoryStore())
    bound = app.implement(send_email, lambda d, c: EmailSent("ok"))
    queue.serve(app)
    bound.dispatch({"to": "a", "subject": "s"}, delay=60)
    threads = list(queue._threads)
    assert threads
    queue.close()
    assert queue.pending == 1
    assert not [t for t in threads if t.is_alive()]
    with pytest.raises(TransportError, match="closed") as caught:
        bound.dispatch({"to": "b", "subject": "s"})
    assert len(caught.value.job_ids) == 1
    with pytest.raises(TransportError):
        queue.serve(app)


def test_lazy_serving_starts_on_the_first_send() -> None:
    """The embedded default starts its worker thread only when a job is sent."""
    app = create_app()
    bound = app.implement(send_email, lambda d, c: EmailSent("ok"))
    queue: Any = app.transport
    assert queue._threads == []
    assert bound.dispatch({"to": "a", "subject": "s"}).result(5) == EmailSent("ok")
    assert len(queue._threads) == 1
    app.close()


def test_messages_sent_before_serving_are_processed_once_served() -> None:
    """A queue filled before ``serve`` is drained when serving starts."""
    queue = MemoryQueue()
    app = create_app(queue=queue, store=MemoryStore())
    bound = app.implement(send_email, lambda d, c: EmailSent("ok"))
    handle = bound.dispatch({"to": "a", "subject": "s"})
    queue.serve(app, lazy=True)
    assert handle.result(5) == EmailSent("ok")
    app.close()


def test_a_crashing_store_redelivers_then_redrives_the_message(
    app: App, harness: MemoryHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error outside the handler brings the message back, as on SQS; the redrive keeps it."""
    app.implement(send_email, lambda d, c: EmailSent("ok"))
    calls: list[int] = []

    def explode(*args: object, **kwargs: object) -> None:
        calls.append(1)
        raise OSError("disk on fire")

    monkeypatch.setattr(harness.store, "begin", explode)
    harness.queue.visibility, harness.queue.max_receives = 0.01, 3
    envelope = Envelope(task="send-email", input={"to": "a", "subject": "s"})
    harness.queue.send(envelope)
    harness.join()
    assert len(calls) == 3  # delivered max_receives times, then moved
    assert [d.reason for d in harness.dead_letters] == ["max_receives"]
    assert Envelope.decode(harness.dead_letters[0].body).id == envelope.id


def test_a_store_outage_that_ends_loses_nothing(
    app: App, harness: MemoryHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The redelivery after an outage runs the job, once."""
    runs: list[str] = []
    bound = app.implement(send_email, lambda d, c: runs.append(c.job_id) or EmailSent("ok"))
    real, down = harness.store.begin, [2]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if down[0]:
            down[0] -= 1
            raise OSError("connection refused")
        return real(*args, **kwargs)

    monkeypatch.setattr(harness.store, "begin", flaky)
    harness.queue.visibility = 0.01
    handle = bound.dispatch({"to": "a", "subject": "s"})
    harness.join()
    assert handle.result(timeout=1) == EmailSent("ok")
    assert runs == [handle.id]
    assert harness.dead_letters == []


def test_async_send_works_inside_a_loop(app: App, harness: MemoryHarness) -> None:
    """asend / asend_many / aclose are the async twins."""
    import asyncio

    app.implement(send_email, lambda d, c: EmailSent("ok"))

    async def go() -> None:
        await harness.queue.asend(Envelope(task="send-email", input={"to": "a", "subject": "s"}))
        await harness.queue.asend_many(
            [Envelope(task="send-email", input={"to": "b", "subject": "s"})]
        )

    asyncio.run(go())
    harness.join()
    assert len(harness.records()) == 2
    started = time.monotonic()
    asyncio.run(harness.queue.aclose())
    assert time.monotonic() - started < 5
