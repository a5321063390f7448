"""The worker path (``taskhop.sdk.Worker``): every step, one message at a time.

Each test runs on the in-memory backend and on moto, where the message goes through SQS, the
shipped ``LocalEventSourceMapping`` and ``make_handler`` runtime, and a ``DynamoStore`` table
(see ``backends.py``). The few that stay in memory say why.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from backend_legs import BACKENDS, Backend, open_backend
from conftest import FAST_RETRY, EmailSent, Resize, Resized, SendEmail, resize, send_email
from taskhop.sdk import (
    App,
    Envelope,
    ImplementOptions,
    JobContext,
    JobRecord,
    JobStatus,
    Middleware,
    Outcome,
    OutcomeKind,
    PermanentError,
    Retry,
    create_app,
    define_task,
    queue_actions,
    static_contract,
)
from taskhop.sdk.memory import MemoryQueue, MemoryStore


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The backend under test, fresh: tests deliver its messages one at a time."""
    with open_backend(str(request.param), request) as chosen:
        yield chosen


@pytest.fixture
def app(backend: Backend) -> App:
    """The app on the backend under test (a producer and worker in one process)."""
    return backend.app


MEMORY_ONLY = pytest.mark.parametrize("backend", ["memory"], indirect=True)


def envelope_for(task: str, data: Any, **fields: Any) -> bytes:
    return Envelope(task=task, input=data, **fields).encode()


def email(to: str = "a@example.com") -> dict[str, str]:
    return {"to": to, "subject": "hi"}


def ok_handler(data: SendEmail, ctx: JobContext) -> EmailSent:
    return EmailSent(message_id=f"m-{data['to']}")


def test_success_is_recorded_with_the_json_result(app: App, backend: Backend) -> None:
    """A valid job runs its handler and the store keeps the result as JSON."""
    app.implement(send_email, ok_handler)
    body = envelope_for("send-email", email())
    outcome = backend.process(body)
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.result == {"message_id": "m-a@example.com"}
    record = backend.record(Envelope.decode(body).id)
    assert record is not None
    assert record.status is JobStatus.SUCCEEDED
    assert record.result == {"message_id": "m-a@example.com"}
    assert queue_actions(outcome, has_dlq=True).delete


POISON = [
    (b"{not json", "not_json"),
    (b"[1, 2]", "not_object"),
    (b'{"Records": []}', "not_envelope"),
    (b'{"taskhop": 2, "id": "x"}', "unsupported_version"),
    (b'{"taskhop": 1, "id": "x", "task": "t", "version": 1, "attempt": 1}', "invalid_field"),
]


@pytest.mark.parametrize(
    ("backend", "body", "reason"),
    [
        # An SQS body is Unicode text, so bytes that are not UTF-8 only reach a memory queue.
        ("memory", b"\xff\xfe", "not_json"),
        *[(name, body, reason) for name in BACKENDS for body, reason in POISON],
    ],
    indirect=["backend"],
)
def test_poison_messages_are_classified_for_the_dead_letter_queue(
    backend: Backend, body: bytes, reason: str
) -> None:
    """Bytes that are not a v1 envelope become POISON with a reason, never an exception."""
    [outcome] = backend.drain(body)
    assert outcome.kind is OutcomeKind.POISON
    assert outcome.dead_letter
    assert outcome.reason == reason
    assert outcome.error is not None
    assert [(d.body, d.reason) for d in backend.dead_letters()] == [(body, reason)]


def test_unknown_task_is_rejected_and_recorded(app: App, backend: Backend) -> None:
    """A job for a task this worker does not implement is rejected, with a hint."""
    app.implement(send_email, ok_handler)
    body = envelope_for("send-emial", email())
    outcome = backend.process(body)
    assert outcome.kind is OutcomeKind.REJECTED
    assert outcome.reason == "unknown_task"
    assert outcome.error is not None
    assert "did you mean 'send-email'" in outcome.error.message
    assert not outcome.dead_letter


def test_invalid_input_is_rejected_with_every_field_path_and_never_retried(
    app: App, backend: Backend
) -> None:
    """Validation runs before the handler; each failing field is recorded by path."""
    calls: list[object] = []
    app.implement(resize, lambda data, ctx: calls.append(data) or Resized(key="k"))
    data = {"url": "ftp://x", "width": 0, "tags": ["a", 3], "ship_to": {"city": "Z"}}
    outcome = backend.process(envelope_for("resize", data))
    assert outcome.kind is OutcomeKind.REJECTED
    assert outcome.error is not None
    paths = {f.path: f.message for f in outcome.error.fields}
    assert set(paths) == {"input.url", "input.width", "input.tags[1]", "input.ship_to.city"}
    assert paths["input.tags[1]"] == "expected string, got integer"
    assert "must be > 0" in paths["input.width"]
    assert calls == []


def test_unknown_and_missing_fields_are_reported(app: App, backend: Backend) -> None:
    """A typo'd key is an unknown field and the real one is reported missing."""
    app.implement(send_email, ok_handler)
    outcome = backend.process(envelope_for("send-email", {"to": "a", "subjcet": "x"}))
    assert outcome.error is not None
    messages = [str(f) for f in outcome.error.fields]
    assert any("subject" in m and "required" in m for m in messages), messages


def test_retryable_failure_backs_off_then_fails_after_the_last_attempt(
    app: App, backend: Backend
) -> None:
    """Exceptions are retried with the policy's backoff; the last failure is dead-lettered."""

    def flaky(data: SendEmail, ctx: JobContext) -> EmailSent:
        raise ConnectionError("smtp down")

    app.implement(send_email, flaky)
    first = backend.process(envelope_for("send-email", email()))
    assert first.kind is OutcomeKind.RETRY
    assert first.retry_after == pytest.approx(0.01)
    assert first.error is not None
    assert first.error.type == "ConnectionError"
    assert first.error.retryable
    assert first.envelope is not None
    record = backend.record(first.envelope.id)
    assert record is not None
    assert record.status is JobStatus.RETRYING
    second = backend.redeliver(first)
    assert second.attempt == 2
    assert second.retry_after == pytest.approx(0.02)
    third = backend.redeliver(second)
    assert third.attempt == 3
    assert third.kind is OutcomeKind.FAILED
    assert third.dead_letter
    assert third.reason == "retries_exhausted"
    final = backend.record(first.envelope.id)
    assert final is not None
    assert final.status is JobStatus.FAILED


def test_a_job_failing_every_attempt_is_dead_lettered_once_by_its_host(
    app: App, backend: Backend
) -> None:
    """The host runs each retry after its backoff and dead-letters the last failure, once."""

    def down(data: SendEmail, ctx: JobContext) -> EmailSent:
        raise ConnectionError("smtp down")

    app.implement(send_email, down)
    body = envelope_for("send-email", email())
    outcomes = backend.drain(body)
    assert [(o.kind, o.attempt) for o in outcomes] == [
        (OutcomeKind.RETRY, 1),
        (OutcomeKind.RETRY, 2),
        (OutcomeKind.FAILED, 3),
    ]
    job_id = Envelope.decode(body).id
    assert [(d.reason, d.job_id) for d in backend.dead_letters()] == [("retries_exhausted", job_id)]
    record = backend.record(job_id)
    assert record is not None
    assert (record.status, record.attempt) == (JobStatus.FAILED, 3)


def test_retry_signal_sets_the_delay(app: App, backend: Backend) -> None:
    """``Retry(after=...)`` from a handler overrides the policy's backoff."""

    def later(data: SendEmail, ctx: JobContext) -> EmailSent:
        raise Retry("rate limited", after=7.5)

    app.implement(send_email, later)
    outcome = backend.process(envelope_for("send-email", email()))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.retry_after == 7.5


def test_permanent_error_fails_at_once_without_dead_lettering(app: App, backend: Backend) -> None:
    """``PermanentError`` records the job failed on the first attempt."""

    def refuse(data: SendEmail, ctx: JobContext) -> EmailSent:
        raise PermanentError("mailbox does not exist")

    app.implement(send_email, refuse)
    outcome = backend.process(envelope_for("send-email", email()))
    assert outcome.kind is OutcomeKind.FAILED
    assert not outcome.dead_letter
    assert outcome.error is not None
    assert outcome.error.type == "PermanentError"
    assert not outcome.error.retryable


def test_the_store_counts_attempts_and_receives_count_only_without_one(
    app: App, backend: Backend
) -> None:
    """With a store, a high receive count uses no attempt; without one, it is the attempt."""
    seen: list[int] = []

    def record_attempt(data: SendEmail, ctx: JobContext) -> EmailSent:
        seen.append(ctx.attempt)
        raise ConnectionError("again")

    app.implement(send_email, record_attempt)
    outcome = backend.process(envelope_for("send-email", email()), attempt=3)
    assert seen == [1]  # receives 1 and 2 never ran (a deferral, a busy lease, an outage)
    assert outcome.kind is OutcomeKind.RETRY
    stateless = create_app(queue=MemoryQueue())
    stateless.implement(send_email, record_attempt)
    alone = stateless.worker().process(envelope_for("send-email", email()), attempt=3)
    assert seen == [1, 3]
    assert (alone.kind, alone.dead_letter) == (OutcomeKind.FAILED, True)
    stateless.close()


def test_an_attempt_past_the_last_is_dead_lettered_without_running(app: App) -> None:
    """A job whose last attempt began and never reported is not run a fourth time."""
    app.store = MemoryStore()
    runs: list[int] = []
    app.implement(send_email, lambda d, c: runs.append(c.attempt) or EmailSent("x"))
    body = envelope_for("send-email", email())
    job_id = Envelope.decode(body).id
    for attempt in (1, 2, 3):  # three attempts began; their workers all died
        app.store.begin(job_id, task="send-email", attempt=attempt, lease_until=time.time() - 1)
    outcome = app.worker().process(body)
    assert runs == []
    assert (outcome.kind, outcome.dead_letter, outcome.reason) == (
        OutcomeKind.FAILED,
        True,
        "retries_exhausted",
    )
    assert outcome.error is not None
    assert outcome.error.type == "AttemptsExhausted"
    again = app.worker().process(body)  # its dead letter did not reach a DLQ: it goes again
    assert (again.kind, again.dead_letter, again.reason) == (
        OutcomeKind.FAILED,
        True,
        "retries_exhausted",
    )
    assert runs == []


@pytest.mark.parametrize("exit_kind", [SystemExit, KeyboardInterrupt])
def test_a_handler_cannot_end_its_host(
    app: App, backend: Backend, exit_kind: type[BaseException]
) -> None:
    """Issue 15 #7: SystemExit / KeyboardInterrupt fail the job (retryable); the batch goes on."""

    def leave(data: SendEmail, ctx: JobContext) -> EmailSent:
        if data["to"] == "exit@example.com":
            raise exit_kind(3)
        return EmailSent("ok")

    app.implement(send_email, leave)
    out = backend.process(envelope_for("send-email", email("exit@example.com")))
    assert out.kind is OutcomeKind.RETRY
    assert out.error is not None
    assert out.error.type == exit_kind.__name__
    assert "cannot end its host" in out.error.message
    after = backend.process(envelope_for("send-email", email()))
    assert after.kind is OutcomeKind.SUCCEEDED


def test_an_async_handler_cannot_end_its_host_either(app: App, backend: Backend) -> None:
    """The private loop survives a handler's KeyboardInterrupt and runs the next job."""

    async def leave(data: SendEmail, ctx: JobContext) -> EmailSent:
        if data["to"] == "exit@example.com":
            raise KeyboardInterrupt
        return EmailSent("ok")

    app.implement(send_email, leave)
    for _ in range(2):
        out = backend.process(envelope_for("send-email", email("exit@example.com")))
        assert out.kind is OutcomeKind.RETRY
        good = backend.process(envelope_for("send-email", email()))
        assert good.kind is OutcomeKind.SUCCEEDED, good


def test_a_handler_that_swallows_its_timeout_still_stops(app: App) -> None:
    """Issue 15 #5: ``except Exception`` cannot keep a handler running past its deadline."""
    app.store = MemoryStore()
    slow = static_contract("swallow", input=SendEmail, output=EmailSent, timeout=0.1, retry=2)
    finished: list[str] = []

    def stubborn(data: SendEmail, ctx: JobContext) -> EmailSent:
        for _ in range(50):
            try:
                time.sleep(0.05)
            except Exception:  # a handler that catches everything it can
                continue
        finished.append("ran to the end")
        return EmailSent("late")

    app.implement(slow, stubborn)
    for run in (lambda b: app.worker().process(b), _in_a_thread(app)):
        started = time.monotonic()
        outcome = run(envelope_for("swallow", email()))
        assert time.monotonic() - started < 1.5
        assert outcome.kind is OutcomeKind.RETRY
        assert outcome.error is not None
        assert outcome.error.type == "HandlerTimeout"
    time.sleep(0.3)
    assert finished == []  # neither the timer's nor the thread's stop was swallowed


def _in_a_thread(app: App) -> Any:
    """``process`` from a worker thread, where the deadline is a thread's, not a timer's."""

    def run(body: bytes) -> Outcome:
        box: list[Outcome] = []
        thread = threading.Thread(target=lambda: box.append(app.worker().process(body)))
        thread.start()
        thread.join(5)
        return box[0]

    return run


def test_a_result_too_large_for_the_store_fails_once_and_frees_its_key(app: App) -> None:
    """Issue 15 #3: no retry past the attempts, no record left RUNNING, no key left held."""
    from taskhop.sdk import ResultTooLarge

    class SmallStore(MemoryStore):
        def complete_key(self, key: str, job_id: str, result: Any) -> None:
            if len(str(result)) > 100:
                raise ResultTooLarge("result of 5000 bytes is over the 100-byte limit")
            super().complete_key(key, job_id, result)

        def complete(self, record: JobRecord) -> bool:
            if len(str(record.result)) > 100:
                raise ResultTooLarge("result of 5000 bytes is over the 100-byte limit")
            return super().complete(record)

    store = app.store = SmallStore()
    runs: list[int] = []
    app.implement(send_email, lambda d, c: runs.append(c.attempt) or EmailSent("x" * 5000))
    for key in (None, "K"):
        runs.clear()
        body = envelope_for("send-email", email(), idempotency_key=key)
        outcome = app.worker().process(body)
        assert outcome.kind is OutcomeKind.FAILED
        assert outcome.error is not None
        assert outcome.error.type == "ResultTooLarge"
        record = store.get(Envelope.decode(body).id)
        assert record is not None
        assert (record.status, record.lease_until) == (JobStatus.FAILED, None)
        assert app.worker().process(body).kind is OutcomeKind.SKIPPED  # never run again
        assert runs == [1]
    assert store._keys == {}  # the key was released for a later job


def test_sync_handler_past_its_timeout_is_retried(app: App, backend: Backend) -> None:
    """A handler that outlives the contract's timeout becomes a retryable HandlerTimeout."""
    release = threading.Event()
    slow = static_contract("slow", input=SendEmail, output=EmailSent, timeout=0.05, retry=2)

    def sleepy(data: SendEmail, ctx: JobContext) -> EmailSent:
        release.wait(5)
        return EmailSent("late")

    app.implement(slow, sleepy)
    started = time.monotonic()
    outcome = backend.process(envelope_for("slow", email()))
    release.set()
    assert time.monotonic() - started < 2
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.error is not None
    assert outcome.error.type == "HandlerTimeout"


def test_async_handler_past_its_timeout_is_cancelled(app: App, backend: Backend) -> None:
    """An ``async def`` handler is cancelled at its deadline."""
    cancelled = threading.Event()
    slow = static_contract("slow-async", input=SendEmail, output=EmailSent, timeout=0.05)

    async def sleepy(data: SendEmail, ctx: JobContext) -> EmailSent:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return EmailSent("late")

    app.implement(slow, sleepy)
    outcome = backend.process(envelope_for("slow-async", email()))
    assert outcome.error is not None
    assert outcome.error.type == "HandlerTimeout"
    assert cancelled.is_set()


def test_host_deadline_bounds_the_handler_timeout(app: App, backend: Backend) -> None:
    """With less time left than the contract allows, the context's deadline is the host's."""
    seen: list[float | None] = []

    def report(data: SendEmail, ctx: JobContext) -> EmailSent:
        seen.append(ctx.remaining())
        return EmailSent("ok")

    timed = static_contract("timed", input=SendEmail, output=EmailSent, timeout="30s")
    app.implement(timed, report)
    backend.process(envelope_for("timed", email()), time_left=2)
    assert seen[0] is not None
    assert 0 < seen[0] <= 2


def test_duplicate_delivery_of_a_finished_job_is_skipped(app: App, backend: Backend) -> None:
    """At-least-once delivery: a job already final is acknowledged without running again."""
    runs: list[str] = []

    def count(data: SendEmail, ctx: JobContext) -> EmailSent:
        runs.append(ctx.job_id)
        return EmailSent("once")

    app.implement(send_email, count)
    body = envelope_for("send-email", email())
    assert backend.process(body).kind is OutcomeKind.SUCCEEDED
    again = backend.process(body)
    assert again.kind is OutcomeKind.SKIPPED
    assert again.reason == "already_final"
    assert len(runs) == 1


def test_a_redelivery_waits_for_a_live_lease_whatever_its_attempt(
    app: App, backend: Backend
) -> None:
    """Issue 15 #5: a higher receive count does not run beside a live attempt."""
    gate, entered = threading.Event(), threading.Event()
    runs: list[int] = []

    def first_waits(data: SendEmail, ctx: JobContext) -> EmailSent:
        runs.append(ctx.attempt)
        entered.set()
        gate.wait(5)
        return EmailSent(f"attempt-{ctx.attempt}")

    app.implement(send_email, first_waits)
    body = envelope_for("send-email", email())
    results: list[Outcome] = []
    thread = threading.Thread(target=lambda: results.append(backend.process(body)))
    thread.start()
    assert entered.wait(5)
    for attempt in (1, 2, 3):  # a duplicate message, then redeliveries counting up
        busy = backend.process(body, attempt=attempt)
        assert busy.kind is OutcomeKind.RETRY
        assert busy.reason == "attempt_in_progress"
    gate.set()
    thread.join(5)
    assert results[0].kind is OutcomeKind.SUCCEEDED
    assert runs == [1]
    record = backend.record(Envelope.decode(body).id)
    assert record is not None
    assert record.result == {"message_id": "attempt-1"}


def test_stale_attempt_cannot_overwrite_a_newer_outcome(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt that outlived its lease finds a newer one recorded, and is dropped."""
    import taskhop.sdk._worker as worker_module

    monkeypatch.setattr(worker_module, "DEFAULT_LEASE", 0.2)
    monkeypatch.setattr(worker_module, "LEASE_MARGIN", 0.0)
    app.store = MemoryStore()
    gate, entered = threading.Event(), threading.Event()

    def first_waits(data: SendEmail, ctx: JobContext) -> EmailSent:
        if ctx.attempt == 1:
            entered.set()
            gate.wait(5)
            return EmailSent("stale")
        return EmailSent("fresh")

    app.implement(send_email, first_waits)
    body = envelope_for("send-email", email())
    worker = app.worker()
    results: list[Outcome] = []
    thread = threading.Thread(target=lambda: results.append(worker.process(body)))
    thread.start()
    assert entered.wait(5)
    time.sleep(0.3)  # attempt 1's lease runs out while its handler still runs
    newer = worker.process(body, attempt=2)
    assert newer.kind is OutcomeKind.SUCCEEDED
    assert newer.attempt == 2
    gate.set()
    thread.join(5)
    assert results[0].kind is OutcomeKind.SKIPPED
    assert results[0].reason == "stale_attempt"
    record = app.store.get(Envelope.decode(body).id)
    assert record is not None
    assert record.result == {"message_id": "fresh"}


def test_idempotency_key_runs_the_handler_once_and_shares_the_result(
    app: App, backend: Backend
) -> None:
    """Two jobs with one key: the second returns the first's result without running."""
    runs: list[str] = []

    def count(data: SendEmail, ctx: JobContext) -> EmailSent:
        runs.append(ctx.job_id)
        return EmailSent(f"m-{len(runs)}")

    app.implement(send_email, count)
    first = backend.process(envelope_for("send-email", email(), idempotency_key="K"))
    second = backend.process(envelope_for("send-email", email(), idempotency_key="K"))
    assert len(runs) == 1
    assert second.kind is OutcomeKind.SUCCEEDED
    assert second.reason == "duplicate_key"
    assert second.result == first.result
    assert second.envelope is not None
    record = backend.record(second.envelope.id)
    assert record is not None
    assert record.duplicate_of == first.job_id


def test_idempotency_key_held_by_a_running_job_is_retried(app: App, backend: Backend) -> None:
    """A duplicate of a job still running waits (RETRY), reporting DuplicateJobInProgress."""
    app.implement(send_email, ok_handler)
    backend.store.claim_key("K", "other-job", lease_until=time.time() + 60)
    outcome = backend.process(envelope_for("send-email", email(), idempotency_key="K"))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.error is not None
    assert outcome.error.type == "DuplicateJobInProgress"
    assert outcome.retry_after is not None
    assert 29 < outcome.retry_after <= 31  # the holder's deadline: its lease less the margin


def test_a_held_key_past_its_holders_deadline_waits_for_the_lease(
    app: App, backend: Backend
) -> None:
    """The holder should be done but still holds the key (crashed?): wait out its lease."""
    app.implement(send_email, ok_handler)
    backend.store.claim_key("K", "other-job", lease_until=time.time() + 20)
    outcome = backend.process(envelope_for("send-email", email(), idempotency_key="K"))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.retry_after is not None
    assert 19 < outcome.retry_after <= 21


def test_failure_releases_the_idempotency_key(app: App, backend: Backend) -> None:
    """A failed holder lets the next job with the same key run."""
    runs: list[int] = []

    def fail_first(data: SendEmail, ctx: JobContext) -> EmailSent:
        runs.append(1)
        if len(runs) == 1:
            raise PermanentError("no")
        return EmailSent("second")

    app.implement(send_email, fail_first)
    backend.process(envelope_for("send-email", email(), idempotency_key="K"))
    outcome = backend.process(envelope_for("send-email", email(), idempotency_key="K"))
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.result == {"message_id": "second"}


def test_old_versions_are_migrated_before_validation(app: App, backend: Backend) -> None:
    """A v1 job reaches a v3 handler through each migration in order."""
    v3 = static_contract("greet", input=SendEmail, output=EmailSent, version=3)
    app.implement(
        v3,
        ok_handler,
        ImplementOptions(
            migrate=[
                lambda v1: {"to": v1["email"], "subject": v1.get("title", "")},
                lambda v2: {**v2, "subject": v2["subject"] or "(none)"},
            ]
        ),
    )
    outcome = backend.process(envelope_for("greet", {"email": "a@b"}, version=1))
    assert outcome.kind is OutcomeKind.SUCCEEDED, outcome.error
    assert outcome.result == {"message_id": "m-a@b"}


def test_versions_older_than_the_migrations_are_rejected(app: App, backend: Backend) -> None:
    """Without a migration path the job is rejected, saying which versions are supported."""
    v3 = static_contract("greet", input=SendEmail, output=EmailSent, version=3)
    app.implement(v3, ok_handler, ImplementOptions(migrate=[lambda v2: v2]))
    outcome = backend.process(envelope_for("greet", email(), version=1))
    assert outcome.kind is OutcomeKind.REJECTED
    assert outcome.error is not None
    assert "versions 2..3" in outcome.error.message


def test_versions_newer_than_the_worker_are_retried(app: App, backend: Backend) -> None:
    """A job from a newer producer waits for a newer worker instead of being misread."""
    app.implement(send_email, ok_handler)
    outcome = backend.process(envelope_for("send-email", email(), version=2))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.error is not None
    assert outcome.error.type == "VersionTooNew"


def test_a_richer_input_type_can_be_attached_at_implement(app: App, backend: Backend) -> None:
    """``ImplementOptions(input_type=...)`` validates a static contract with attrs validators."""
    import attrs

    @attrs.define
    class StrictEmail:
        to: str = attrs.field(validator=attrs.validators.matches_re(r".+@.+"))
        subject: str = ""

    received: list[object] = []

    def handler(data: Any, ctx: JobContext) -> EmailSent:
        received.append(data)
        return EmailSent("ok")

    app.implement(send_email, handler, ImplementOptions(input_type=StrictEmail))
    bad = backend.process(envelope_for("send-email", {"to": "nope", "subject": "s"}))
    assert bad.kind is OutcomeKind.REJECTED
    assert bad.error is not None
    assert [f.path for f in bad.error.fields] == ["input.to"]
    good = backend.process(envelope_for("send-email", email()))
    assert good.kind is OutcomeKind.SUCCEEDED
    assert isinstance(received[0], StrictEmail)


def test_output_that_does_not_fit_the_contract_fails_permanently(
    app: App, backend: Backend
) -> None:
    """A handler returning something JSON cannot carry is a bug: failed, not retried."""
    app.implement(send_email, lambda data, ctx: EmailSent(message_id=object()))  # type: ignore[arg-type]
    outcome = backend.process(envelope_for("send-email", email()))
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None
    assert outcome.error.type == "OutputError"
    assert "output.message_id" in outcome.error.message


def test_jobs_not_yet_due_are_deferred_without_using_an_attempt(app: App, backend: Backend) -> None:
    """An envelope whose not_before is in the future is held back, untouched."""
    app.implement(send_email, ok_handler)
    body = Envelope(task="send-email", input=email()).with_delay(60).encode()
    outcome = backend.process(body)
    assert outcome.kind is OutcomeKind.DEFERRED
    assert outcome.retry_after is not None
    assert 55 < outcome.retry_after <= 60
    assert outcome.job_id is not None
    assert backend.record(outcome.job_id) is None


def test_middleware_runs_in_order_around_the_handler(app: App, backend: Backend) -> None:
    """App middleware runs before the task's; after_process sees the outcome."""
    events: list[str] = []

    class Tap(Middleware):
        def __init__(self, name: str) -> None:
            self.name = name

        def before_process(self, ctx: JobContext) -> None:
            events.append(f"{self.name}:before:{ctx.task}")

        def after_process(self, ctx: JobContext, outcome: Outcome) -> None:
            events.append(f"{self.name}:after:{outcome.kind}")

    app.middleware = (Tap("app"),)
    app.implement(send_email, ok_handler, ImplementOptions(middleware=[Tap("task")]))
    backend.process(envelope_for("send-email", email()))
    assert events == [
        "app:before:send-email",
        "task:before:send-email",
        "app:after:succeeded",
        "task:after:succeeded",
    ]


def test_a_failing_before_process_hook_fails_the_job_like_a_handler(
    app: App, backend: Backend
) -> None:
    """An exception in before_process goes through the retry policy."""

    class Broken(Middleware):
        def before_process(self, ctx: JobContext) -> None:
            raise RuntimeError("hook broke")

    app.implement(send_email, ok_handler, ImplementOptions(middleware=[Broken()]))
    outcome = backend.process(envelope_for("send-email", email()))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.error is not None
    assert outcome.error.message == "hook broke"


def test_a_failing_after_process_hook_does_not_undo_the_outcome(app: App, backend: Backend) -> None:
    """The outcome is recorded before after_process; a broken hook is only logged."""

    class Broken(Middleware):
        def after_process(self, ctx: JobContext, outcome: Outcome) -> None:
            raise RuntimeError("hook broke")

    app.implement(send_email, ok_handler, ImplementOptions(middleware=[Broken()]))
    outcome = backend.process(envelope_for("send-email", email()))
    assert outcome.kind is OutcomeKind.SUCCEEDED


def test_context_describes_the_job(app: App, backend: Backend) -> None:
    """The handler's context carries ids, attempts, deadline, headers and a logger."""
    seen: list[JobContext] = []
    timed = static_contract(
        "ctx", input=SendEmail, output=EmailSent, timeout=10, retry={"attempts": 4}
    )

    def look(data: SendEmail, ctx: JobContext) -> EmailSent:
        seen.append(ctx)
        ctx.log.info("looking")
        return EmailSent("ok")

    app.implement(timed, look)
    body = envelope_for("ctx", email(), headers={"tenant": "t1"}, trace={"traceparent": "00-x"})
    backend.process(body)
    ctx = seen[0]
    assert ctx.job_id == Envelope.decode(body).id
    assert (ctx.task, ctx.attempt, ctx.max_attempts) == ("ctx", 1, 4)
    assert not ctx.is_last_attempt
    remaining = ctx.remaining()
    assert remaining is not None
    assert 0 < remaining <= 10
    assert ctx.headers == {"tenant": "t1"}
    assert ctx.envelope is not None
    assert ctx.envelope.trace == {"traceparent": "00-x"}


def test_async_handlers_share_one_loop_across_jobs(app: App, backend: Backend) -> None:
    """``async def`` handlers run on a loop kept between jobs, as Lambda invocations need."""
    loops: list[asyncio.AbstractEventLoop] = []

    async def on_loop(data: SendEmail, ctx: JobContext) -> EmailSent:
        loops.append(asyncio.get_running_loop())
        return EmailSent("ok")

    app.implement(send_email, on_loop)
    backend.process(envelope_for("send-email", email()))
    backend.process(envelope_for("send-email", email()))
    assert len(loops) == 2
    assert loops[0] is loops[1]


@MEMORY_ONLY  # aprocess is the asyncio host's entry point; the Lambda runtime calls process
@pytest.mark.parametrize("is_async", [False, True])
def test_aprocess_runs_sync_and_async_handlers_inside_an_event_loop(
    app: App, is_async: bool
) -> None:
    """The async entry point serves both handler kinds without blocking its loop."""
    if is_async:

        async def handler(data: Resize, ctx: JobContext) -> Resized:
            return Resized(key=data.url)

        app.implement(resize, handler)
    else:
        app.implement(resize, lambda data, ctx: Resized(key=data.url))
    body = envelope_for("resize", {"url": "https://x", "width": 3})
    outcome = asyncio.run(app.worker().aprocess(body))
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.result == {"key": "https://x"}


@MEMORY_ONLY  # aprocess is the asyncio host's entry point; the Lambda runtime calls process
def test_aprocess_records_failures_too(app: App) -> None:
    """Failures through the async entry point follow the same policy."""

    async def boom(data: SendEmail, ctx: JobContext) -> EmailSent:
        raise ValueError("boom")

    app.implement(send_email, boom)
    outcome = asyncio.run(app.worker().aprocess(envelope_for("send-email", email())))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.error is not None
    assert outcome.error.type == "ValueError"


def test_define_task_contracts_run_their_validators_on_the_worker(
    app: App, backend: Backend
) -> None:
    """A producer that skipped validation still cannot get bad input past the worker."""
    app.implement(resize, lambda data, ctx: Resized(key="k"))
    body = envelope_for("resize", {"url": "https://x", "width": -1})
    outcome = backend.process(body)
    assert outcome.kind is OutcomeKind.REJECTED
    assert outcome.error is not None
    assert [str(f) for f in outcome.error.fields] == ["input.width: 'width' must be > 0: -1"]


# Configuration only: no message is processed, so no backend is involved.
def test_retry_policy_defaults_apply_to_define_task_too() -> None:
    """The contract's retry policy is what the worker enforces unless overridden."""
    contract = define_task("p", input=Resize, output=Resized, retry=FAST_RETRY)
    application = create_app(queue=MemoryQueue(), store=MemoryStore())
    application.implement(contract, lambda d, c: Resized("k"), ImplementOptions(retry=7))
    entry = application.implementation("p")
    assert entry is not None
    assert entry.policy.attempts == 7
    application.close()


def test_offloaded_inputs_are_loaded_validated_and_deleted_after_success(
    app: App, backend: Backend
) -> None:
    """An envelope with input_ref runs on the stored input, which is deleted on success."""
    payloads = backend.payloads()
    app.implement(send_email, ok_handler)
    ref = payloads.put("j", b'{"to": "big@example.com", "subject": "s"}')
    body = Envelope(task="send-email", input=None, input_ref=ref).encode()
    outcome = backend.process(body)
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.result == {"message_id": "m-big@example.com"}
    assert backend.payload_count() == 0
    bad_ref = payloads.put("k", b'{"to": 1, "subject": "s"}')
    rejected = backend.process(Envelope(task="send-email", input=None, input_ref=bad_ref).encode())
    assert rejected.kind is OutcomeKind.REJECTED
    assert backend.payload_count() == 1  # kept for inspection; a lifecycle rule expires it


def test_an_offloaded_input_without_a_payload_store_is_retried_not_run(
    app: App, backend: Backend
) -> None:
    """A worker that cannot read the input retries (then dead-letters); the handler never runs."""
    runs: list[object] = []
    app.implement(send_email, lambda d, c: runs.append(d) or EmailSent("x"))
    body = Envelope(task="send-email", input=None, input_ref="s3://b/k").encode()
    outcome = backend.process(body)
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.error is not None
    assert outcome.error.type == "PayloadUnavailable"
    assert "pass payloads= to create_app()" in outcome.error.message
    assert runs == []


def test_huge_error_messages_are_clipped_before_they_are_stored(app: App, backend: Backend) -> None:
    """A handler's giant exception text cannot overflow a job record."""

    def shout(data: SendEmail, ctx: JobContext) -> EmailSent:
        raise PermanentError("x" * 500_000)

    app.implement(send_email, shout)
    outcome = backend.process(envelope_for("send-email", email()))
    assert outcome.error is not None
    assert len(outcome.error.message) < 4200
    assert outcome.error.message.endswith("(truncated)")


def test_a_crash_between_job_and_key_completion_is_repaired_on_redelivery(
    app: App, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15 #6: a key completion that fails once costs no second run of the handler.

    The write is tried again in place; if it never lands, the job is left RUNNING with its
    key held, so neither its redelivery nor a duplicate runs the handler before the lease ends.
    """
    from taskhop.sdk import StoreError

    runs: list[str] = []

    def once(data: SendEmail, ctx: JobContext) -> EmailSent:
        runs.append(ctx.job_id)
        return EmailSent("first")

    app.implement(send_email, once)
    real = backend.store.complete_key
    failures = [1]

    def flaky(key: str, job_id: str, result: Any) -> None:
        if failures[0] > 0:
            failures[0] -= 1
            raise StoreError("lost connection")
        real(key, job_id, result)

    monkeypatch.setattr(backend.store, "complete_key", flaky)
    first = backend.process(envelope_for("send-email", email(), idempotency_key="K"))
    assert first.kind is OutcomeKind.SUCCEEDED
    duplicate = backend.process(envelope_for("send-email", email(), idempotency_key="K"))
    assert duplicate.reason == "duplicate_key"
    assert duplicate.result == {"message_id": "first"}
    assert len(runs) == 1

    failures[0] = 100  # the store stays down: every try fails
    body = envelope_for("send-email", email(), idempotency_key="K2")
    with pytest.raises(StoreError):
        backend.process(body)
    again = backend.redeliver(body)
    assert again.kind is OutcomeKind.RETRY
    assert again.reason == "attempt_in_progress"
    other = backend.process(envelope_for("send-email", email(), idempotency_key="K2"))
    assert other.kind is OutcomeKind.RETRY
    assert other.error is not None
    assert other.error.type == "DuplicateJobInProgress"
    assert len(runs) == 2
