"""Signatures, replays and retries over HTTP, designed together: a retry is re-signed, and a
replayed or retried request is answered as the job it names, never sent or run twice."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from conftest import EmailSent, SendEmail, send_email
from taskhop.backends.http import AsyncHttpTransport, HttpTransport
from taskhop.lambda_worker import HttpEndpoint
from taskhop.sdk import App, JobContext, JobStatus, create_app
from taskhop.sdk.memory import MemoryQueue, MemoryStore
from taskhop.static_contracts import Envelope, TransportError, Verifier, signed_headers
from test_http import SECRET, answer, v2_event

JOB = {"to": "ann@example.com", "subject": "hi"}


class FlakyQueue(MemoryQueue):
    """A memory queue whose first ``failures`` sends fail as a throttled queue's would."""

    def __init__(self, failures: int = 1) -> None:
        super().__init__()
        self.failures = failures

    def send_many(self, envelopes: Sequence[Envelope]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise TransportError("throttled", job_ids=tuple(e.id for e in envelopes))
        super().send_many(envelopes)


def counting_app(queue: MemoryQueue | None = None, *, store: bool = True) -> tuple[App, list[str]]:
    """An app on an unserved memory queue; the list records each handler run."""
    runs: list[str] = []

    def handler(data: SendEmail, ctx: JobContext) -> EmailSent:
        runs.append(ctx.job_id)
        return EmailSent(f"m-{data['to']}")

    app = create_app(queue=queue or MemoryQueue(), store=MemoryStore() if store else None)
    app.implement(send_email, handler)
    return app, runs


def signed(body: bytes, *, now: float | None = None) -> dict[str, Any]:
    return v2_event(body, signed_headers(SECRET, body, now=now))


def through(endpoint: HttpEndpoint) -> httpx.MockTransport:
    """An httpx transport that hands each request to ``endpoint`` as a Function URL event."""

    def respond(request: httpx.Request) -> httpx.Response:
        response = endpoint(v2_event(request.content, dict(request.headers)))
        return httpx.Response(
            response["statusCode"], headers=response["headers"], content=response["body"]
        )

    return httpx.MockTransport(respond)


# -- the producer re-signs every retry ------------------------------------------------------


def test_a_503_then_202_is_accepted_because_the_retry_is_re_signed() -> None:
    """The endpoint's 503 (queue throttled) is retried after Retry-After with a fresh signature."""
    queue = FlakyQueue(failures=1)
    app, _ = counting_app(queue)
    endpoint = HttpEndpoint(app, secrets=[SECRET], max_skew=1)  # the 1 s wait outlives it
    transport = HttpTransport("https://w.example/jobs", secret=SECRET, transport=through(endpoint))
    envelope = Envelope(task="send-email", input=JOB)
    assert transport.post(envelope) == {"job_id": envelope.id, "status": "queued"}
    assert queue.pending == 1
    record = app.store.get(envelope.id) if app.store else None
    assert record is not None
    assert record.status is JobStatus.QUEUED
    app.close()


class FakeClock:
    """Stands in for ``time`` in the signing module: each reading is 1,000 s after the last."""

    def __init__(self) -> None:
        self.now = 1_767_225_600.0

    def time(self) -> float:
        self.now += 1_000
        return self.now


def test_every_attempt_carries_a_fresh_timestamp_and_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sync and async twins sign each send anew; each signature verifies at its own time."""
    monkeypatch.setattr("taskhop.static_contracts._signing.time", FakeClock())
    sent: list[tuple[str, str, bytes]] = []

    def record(request: httpx.Request) -> httpx.Response:
        stamp = request.headers["x-taskhop-timestamp"]
        sent.append((stamp, request.headers["x-taskhop-signature"], request.content))
        Verifier([SECRET], max_skew=1).verify(
            dict(request.headers), request.content, now=int(stamp)
        )
        if len(sent) % 3:
            return httpx.Response(503, headers={"retry-after": "0"})
        return httpx.Response(202, json={"job_id": "j"})

    HttpTransport(
        "https://w.example/jobs", secret=SECRET, transport=httpx.MockTransport(record)
    ).post(Envelope(task="t", input={}))

    async def arecord(request: httpx.Request) -> httpx.Response:
        return record(request)

    async def go() -> None:
        twin = AsyncHttpTransport(
            "https://w.example/jobs", secret=SECRET, transport=httpx.MockTransport(arecord)
        )
        await twin.apost(Envelope(task="t", input={}))
        await twin.aclose()

    asyncio.run(go())
    assert len(sent) == 6
    assert len({stamp for stamp, _, _ in sent}) == 6
    assert len({signature for _, signature, _ in sent}) == 6
    assert len({body for _, _, body in sent}) == 2  # the body is encoded once per envelope


# -- enqueue mode: one send per job id ------------------------------------------------------


def test_a_replayed_request_is_answered_as_its_job_and_sent_once() -> None:
    """The same signed request twice: 202, then 200 with the job's state; one message."""
    app, _ = counting_app()
    endpoint = HttpEndpoint(app, secrets=[SECRET])
    envelope = Envelope(task="send-email", input=JOB)
    event = signed(envelope.encode())
    assert answer(endpoint(event)) == (202, {"job_id": envelope.id, "status": "queued"})
    assert answer(endpoint(event)) == (
        200,
        {"job_id": envelope.id, "status": "queued", "duplicate": True},
    )
    assert isinstance(app.transport, MemoryQueue)
    assert app.transport.pending == 1
    app.close()


def test_a_replay_reaching_another_instance_is_recognised_through_the_store() -> None:
    """Two instances (two Lambda environments) share the store: the second does not enqueue."""
    app, _ = counting_app()
    first, second = (HttpEndpoint(app, secrets=[SECRET]) for _ in range(2))
    envelope = Envelope(task="send-email", input=JOB)
    body = envelope.encode()
    assert answer(first(signed(body)))[0] == 202
    status, data = answer(second(signed(body, now=time.time() - 30)))  # re-signed retry
    assert (status, data["duplicate"], data["job_id"]) == (200, True, envelope.id)
    assert isinstance(app.transport, MemoryQueue)
    assert app.transport.pending == 1
    app.close()


def test_a_replay_after_many_other_requests_is_still_recognised() -> None:
    """No in-memory bound lets a replay through: the store remembers every accepted job."""
    app, _ = counting_app()
    endpoint = HttpEndpoint(app, secrets=[SECRET], remember=10)
    envelope = Envelope(task="send-email", input=JOB)
    event = signed(envelope.encode())
    assert answer(endpoint(event))[0] == 202
    for _ in range(20):
        assert answer(endpoint(signed(Envelope(task="send-email", input=JOB).encode())))[0] == 202
    assert answer(endpoint(event))[0] == 200
    assert isinstance(app.transport, MemoryQueue)
    assert app.transport.pending == 21
    app.close()


def test_a_duplicate_of_a_finished_job_answers_its_result() -> None:
    """Once the job has run, its replay answers its final state and result."""
    app = create_app()
    app.implement(send_email, lambda data, ctx: EmailSent(f"m-{data['to']}"))
    endpoint = HttpEndpoint(app, secrets=[SECRET])
    event = signed(Envelope(task="send-email", input=JOB).encode())
    status, data = answer(endpoint(event))
    assert status == 202
    app.get("send-email").handle(data["job_id"]).result(5)
    assert answer(endpoint(event)) == (
        200,
        {
            "job_id": data["job_id"],
            "status": "succeeded",
            "duplicate": True,
            "result": {"message_id": "m-ann@example.com"},
        },
    )
    app.close()


def test_a_failed_send_records_nothing_and_the_retry_is_sent() -> None:
    """A queue that refuses answers 503 with Retry-After; the job is not recorded as accepted."""
    queue = FlakyQueue(failures=1)
    app, _ = counting_app(queue)
    endpoint = HttpEndpoint(app, secrets=[SECRET])
    envelope = Envelope(task="send-email", input=JOB)
    response = endpoint(signed(envelope.encode()))
    status, data = answer(response)
    assert (status, data["error"]["type"]) == (503, "TransportError")
    assert response["headers"]["retry-after"] == "1"
    assert app.store is not None
    assert app.store.get(envelope.id) is None
    assert answer(endpoint(signed(envelope.encode())))[0] == 202
    assert queue.pending == 1
    app.close()


def test_without_a_store_replays_are_recognised_by_the_instance_that_accepted_them() -> None:
    """Enqueue mode with no store: the same instance answers a duplicate; another cannot."""
    app, _ = counting_app(store=False)
    first, second = (HttpEndpoint(app, secrets=[SECRET]) for _ in range(2))
    envelope = Envelope(task="send-email", input=JOB)
    event = signed(envelope.encode())
    assert answer(first(event))[0] == 202
    assert answer(first(event)) == (
        200,
        {"job_id": envelope.id, "status": "queued", "duplicate": True},
    )
    assert answer(second(event))[0] == 202  # documented: deduplicated by job id by workers
    assert isinstance(app.transport, MemoryQueue)
    assert app.transport.pending == 2
    app.close()


# -- run mode: never run twice --------------------------------------------------------------


def test_run_mode_without_a_store_refuses_to_build() -> None:
    """It could not recognise a replay, so it would run a handler twice: a ValueError says so."""
    app, _ = counting_app(store=False)
    with pytest.raises(ValueError, match=r"create_app\(queue=\.\.\., store=\.\.\.\)"):
        HttpEndpoint(app, secrets=[SECRET], mode="run")
    assert HttpEndpoint(app, secrets=[SECRET]).mode == "enqueue"
    app.close()


def test_run_mode_answers_a_replay_with_the_stored_result_without_running_it() -> None:
    """A replay and a re-signed retry, on this instance and another: one handler run."""
    app, runs = counting_app()
    first, second = (HttpEndpoint(app, secrets=[SECRET], mode="run") for _ in range(2))
    envelope = Envelope(task="send-email", input=JOB)
    body = envelope.encode()
    event = signed(body)
    status, data = answer(first(event))
    assert (status, data["status"]) == (200, "succeeded")
    expected = {
        "job_id": envelope.id,
        "status": "succeeded",
        "duplicate": True,
        "result": {"message_id": "m-ann@example.com"},
    }
    assert answer(first(event)) == (200, expected)
    assert answer(second(signed(body, now=time.time() - 10))) == (200, expected)
    assert runs == [envelope.id]
    app.close()


def test_run_mode_answers_a_busy_job_with_retry_after_and_runs_it_once() -> None:
    """While the first request's handler runs, a retry of the same job gets 503, not a run."""
    started, release = threading.Event(), threading.Event()
    runs: list[str] = []

    def slow(data: SendEmail, ctx: JobContext) -> EmailSent:
        runs.append(ctx.job_id)
        started.set()
        release.wait(10)
        return EmailSent("m")

    app = create_app(queue=MemoryQueue(), store=MemoryStore())
    app.implement(send_email, slow)
    endpoint = HttpEndpoint(app, secrets=[SECRET], mode="run")
    body = Envelope(task="send-email", input=JOB).encode()
    answers: list[dict[str, Any]] = []
    first = threading.Thread(target=lambda: answers.append(endpoint(signed(body))))
    first.start()
    assert started.wait(10)
    busy = endpoint(signed(body, now=time.time() - 1))
    release.set()
    first.join(10)
    assert busy["statusCode"] == 503
    assert int(busy["headers"]["retry-after"]) >= 1
    assert answer(answers[0])[0] == 200
    assert len(runs) == 1
    app.close()


def test_run_mode_enqueues_a_deferred_job_instead_of_dropping_it() -> None:
    """not_before in the future: 202 "deferred", on the queue and recorded; its replay is not."""
    app, runs = counting_app()
    endpoint = HttpEndpoint(app, secrets=[SECRET], mode="run")
    later = datetime.now(UTC) + timedelta(seconds=60)
    envelope = Envelope(task="send-email", input=JOB, not_before=later)
    event = signed(envelope.encode())
    status, data = answer(endpoint(event))
    assert (status, data["job_id"], data["status"]) == (202, envelope.id, "deferred")
    assert isinstance(app.transport, MemoryQueue)
    assert app.transport.pending == 1
    assert app.store is not None
    record = app.store.get(envelope.id)
    assert record is not None
    assert record.status is JobStatus.QUEUED
    assert answer(endpoint(event))[1]["duplicate"] is True
    assert app.transport.pending == 1
    assert runs == []
    app.close()


def test_run_mode_answers_a_deferred_job_it_cannot_queue_with_the_wait() -> None:
    """The queue refuses: 503 with Retry-After equal to the wait, so it is sent when due."""
    app, runs = counting_app(FlakyQueue(failures=1))
    endpoint = HttpEndpoint(app, secrets=[SECRET], mode="run")
    later = datetime.now(UTC) + timedelta(seconds=120)
    envelope = Envelope(task="send-email", input=JOB, not_before=later)
    response = endpoint(signed(envelope.encode()))
    status, data = answer(response)
    assert (status, data["job_id"], data["status"]) == (503, envelope.id, "deferred")
    assert 118 <= int(response["headers"]["retry-after"]) <= 120
    assert app.store is not None
    assert app.store.get(envelope.id) is None
    assert runs == []
    app.close()


@pytest.mark.parametrize("kind", ["fail", "lost"])
def test_a_failed_accept_after_the_send_loses_nothing_and_runs_once(kind: str) -> None:
    """The store's accept fails (or its answer is lost) after the job was sent: the job is on
    the queue (202), a replay may send it again, and the worker still runs the job once."""
    queue = MemoryQueue()
    app, runs = counting_app(queue)
    assert isinstance(app.store, MemoryStore)
    store = app.store
    real, failures = store.accept, [1]

    def flaky(job_id: str, **kwargs: Any) -> Any:
        if failures[0]:
            failures[0] -= 1
            if kind == "lost":
                real(job_id, **kwargs)
            from taskhop.sdk import StoreError

            raise StoreError("injected: accept failed")
        return real(job_id, **kwargs)

    store.accept = flaky  # type: ignore[method-assign]
    endpoint = HttpEndpoint(app, secrets=[SECRET])
    envelope = Envelope(task="send-email", input=JOB)
    assert answer(endpoint(signed(envelope.encode())))[0] == 202  # accept is best effort
    # The replay is answered as the job: from the store (lost) or this instance's memory (fail).
    assert answer(endpoint(signed(envelope.encode())))[0] == 200
    assert queue.pending == 1
    queue.serve(app)
    queue.join()
    assert runs == [envelope.id]
    record = store.get(envelope.id)
    assert record is not None
    assert record.status is JobStatus.SUCCEEDED
    app.close()
