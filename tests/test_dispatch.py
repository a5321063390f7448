"""Dispatch and results, end to end on each backend: validation, delays, async, batches."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conftest import EmailSent, Resize, Resized, SendEmail, resize, send_email
from taskhop.sdk import (
    App,
    Envelope,
    JobContext,
    JobStatus,
    Middleware,
    PayloadError,
    PermanentError,
    ResultTimeout,
    TaskFailed,
    TaskRejected,
    ValidationError,
    create_app,
)


def send(data: SendEmail, ctx: JobContext) -> EmailSent:
    return EmailSent(message_id=f"m-{data['to']}")


def make_resized(data: Resize, ctx: JobContext) -> Resized:
    return Resized(key=f"{data.url}@{data.width}")


def test_dispatch_and_result_round_trip(app: App) -> None:
    """A dispatched job's typed result comes back through its handle."""
    bound = app.implement(send_email, send)
    handle = bound.dispatch({"to": "a@example.com", "subject": "hi"})
    assert handle.result(timeout=5) == EmailSent("m-a@example.com")
    assert handle.status() is JobStatus.SUCCEEDED
    assert bound.handle(handle.id).result(0) == EmailSent("m-a@example.com")
    assert repr(handle).startswith("ResultHandle(id=")


def test_define_task_validates_before_sending(app: App, harness: Any) -> None:
    """A runtime-schema contract rejects bad input at dispatch, listing every field."""
    bound = app.register(resize)
    with pytest.raises(ValidationError) as caught:
        bound.dispatch({"url": "nope", "width": "wide", "extra": 1})  # type: ignore[arg-type]
    paths = [str(e) for e in caught.value.errors]
    assert "input: unknown field(s): extra" in paths
    assert "input.width: expected integer, got string" in paths
    assert str(caught.value).startswith("invalid input for task 'resize':")
    assert harness.pending == 0


def test_attrs_validators_run_on_dispatch(app: App) -> None:
    """Validators of nested attrs classes are reported with their full path."""
    with pytest.raises(ValidationError) as caught:
        app.register(resize).dispatch(
            {"url": "https://x", "width": 1, "ship_to": {"city": "Z"}}  # type: ignore[arg-type]
        )
    assert [e.path for e in caught.value.errors] == ["input.ship_to.city"]


def test_validation_can_be_skipped_but_the_worker_still_rejects(app: App) -> None:
    """``skip_validation=True`` sends as is; the worker rejects with field paths."""
    bound = app.implement(resize, make_resized)
    handle = bound.dispatch({"url": "https://x", "width": -5}, skip_validation=True)  # type: ignore[arg-type]
    with pytest.raises(TaskRejected) as caught:
        handle.result(5)
    assert [f.path for f in caught.value.error.fields] == ["input.width"]
    assert handle.status() is JobStatus.REJECTED


def test_validate_on_dispatch_can_be_turned_off_for_the_app() -> None:
    """``create_app(validate_on_dispatch=False)`` skips producer-side validation."""
    with create_app(validate_on_dispatch=False) as producer:
        bound = producer.implement(resize, make_resized)
        handle = bound.dispatch({"url": "https://x", "width": 0})  # type: ignore[arg-type]
        with pytest.raises(TaskRejected):
            handle.result(5)


def test_dispatch_validates_with_the_implementations_input_type(app: App) -> None:
    """A producer that also implements the task checks payloads as its worker will."""
    import attrs
    from taskhop.sdk import ImplementOptions

    @attrs.define
    class Wide:
        url: str = attrs.field(validator=attrs.validators.matches_re(r"https?://.+"))
        width: int = attrs.field(validator=attrs.validators.gt(100))
        tags: list[str] = attrs.Factory(list)
        ship_to: Any = None

    bound = app.implement(resize, make_resized, ImplementOptions(input_type=Wide))
    with pytest.raises(ValidationError, match=r"input\.width"):
        bound.dispatch(Resize(url="https://x", width=5))


def test_static_contracts_are_validated_by_the_worker_only(app: App) -> None:
    """A static contract sends whatever it is given; the worker names the bad field."""
    bound = app.implement(send_email, send)
    handle = bound.dispatch({"to": 42, "subject": "hi"})  # type: ignore[typeddict-item]
    with pytest.raises(TaskRejected) as caught:
        handle.result(5)
    assert [str(f) for f in caught.value.error.fields] == ["input.to: expected string, got integer"]
    assert "ValidationError" in str(caught.value)


def test_non_json_payloads_are_refused_with_their_path(app: App) -> None:
    """Bytes, sets and NaN cannot be sent; the error names where they are."""
    bound = app.register(send_email)
    with pytest.raises(PayloadError) as caught:
        bound.dispatch({"to": "a", "subject": b"bytes"})  # type: ignore[typeddict-item]
    assert caught.value.path == "input.subject"
    with pytest.raises(PayloadError, match=r"input.subject: nan is not a JSON number"):
        bound.dispatch({"to": "a", "subject": float("nan")})  # type: ignore[typeddict-item]


def test_attrs_inputs_accept_instances_and_plain_mappings(app: App) -> None:
    """An attrs-typed task takes an instance or a JSON mapping (a request body)."""
    bound = app.implement(resize, make_resized)
    assert bound.dispatch(Resize(url="https://a", width=3)).result(5) == Resized("https://a@3")
    mapping = {"url": "https://b", "width": 4}
    assert bound.dispatch(mapping).result(5) == Resized("https://b@4")  # type: ignore[arg-type]


def test_delay_holds_the_job_back(app: App) -> None:
    """A delayed job stays queued until its time, then runs."""
    bound = app.implement(send_email, send)
    started = time.monotonic()
    handle = bound.dispatch({"to": "a", "subject": "s"}, delay="300ms")
    assert handle.status() is JobStatus.QUEUED
    assert handle.result(5) == EmailSent("m-a")
    assert time.monotonic() - started >= 0.3


def test_result_times_out_with_a_clear_error(app: App) -> None:
    """Waiting past the timeout raises ResultTimeout; the job is still there."""
    bound = app.implement(send_email, send)
    handle = bound.dispatch({"to": "a", "subject": "s"}, delay=5)
    with pytest.raises(ResultTimeout, match=r"did not finish within 0.05s"):
        handle.result(timeout=0.05)


def test_failed_jobs_raise_task_failed_with_the_remote_error(app: App, harness: Any) -> None:
    """After its retries a job raises TaskFailed carrying type and message; it is dead-lettered."""

    def broken(data: SendEmail, ctx: JobContext) -> EmailSent:
        raise LookupError(f"no mailbox on attempt {ctx.attempt}")

    bound = app.implement(send_email, broken)
    handle = bound.dispatch({"to": "a", "subject": "s"})
    with pytest.raises(TaskFailed) as caught:
        handle.result(5)
    assert caught.value.error.type == "LookupError"
    assert caught.value.error.message == "no mailbox on attempt 3"
    assert not isinstance(caught.value, TaskRejected)
    harness.join()
    assert [d.job_id for d in harness.dead_letters] == [handle.id]
    assert harness.dead_letters[0].reason == "retries_exhausted"


def test_permanent_errors_fail_without_retrying(app: App) -> None:
    """A PermanentError ends the job on its first attempt."""
    attempts: list[int] = []

    def refuse(data: SendEmail, ctx: JobContext) -> EmailSent:
        attempts.append(ctx.attempt)
        raise PermanentError("bounced")

    handle = app.implement(send_email, refuse).dispatch({"to": "a", "subject": "s"})
    with pytest.raises(TaskFailed, match="PermanentError: bounced"):
        handle.result(5)
    assert attempts == [1]


def test_flaky_handlers_succeed_on_retry(app: App) -> None:
    """A handler that fails once succeeds on attempt 2."""

    def flaky(data: SendEmail, ctx: JobContext) -> EmailSent:
        if ctx.attempt == 1:
            raise ConnectionError("blip")
        return EmailSent(f"ok on {ctx.attempt}")

    handle = app.implement(send_email, flaky).dispatch({"to": "a", "subject": "s"})
    assert handle.result(5) == EmailSent("ok on 2")


def test_idempotency_keys_deduplicate_end_to_end(app: App) -> None:
    """Two dispatches with one key: one handler run, both handles get the result."""
    runs: list[str] = []

    def once(data: SendEmail, ctx: JobContext) -> EmailSent:
        runs.append(ctx.job_id)
        return EmailSent(f"run-{len(runs)}")

    bound = app.implement(send_email, once)
    first = bound.dispatch({"to": "a", "subject": "s"}, idempotency_key="order-1")
    assert first.result(5) == EmailSent("run-1")
    second = bound.dispatch({"to": "a", "subject": "s"}, idempotency_key="order-1")
    assert second.result(5) == EmailSent("run-1")
    assert runs == [first.id]
    record = second.record()
    assert record is not None
    assert record.duplicate_of == first.id
    with pytest.raises(ValueError, match="idempotency_key: expected a non-empty string"):
        bound.dispatch({"to": "a", "subject": "s"}, idempotency_key="")


def test_dispatch_many_validates_everything_before_sending_anything(app: App, harness: Any) -> None:
    """One bad payload in a batch sends none of it."""
    bound = app.implement(resize, make_resized)
    good = Resize(url="https://a", width=1)
    with pytest.raises(ValidationError):
        bound.dispatch_many([good, {"url": "https://b", "width": 0}])  # type: ignore[list-item]
    harness.join()
    assert harness.records() == []
    handles = bound.dispatch_many([good, Resize(url="https://c", width=2)])
    assert [h.result(5) for h in handles] == [Resized("https://a@1"), Resized("https://c@2")]


def test_trace_and_headers_travel_with_the_job(app: App) -> None:
    """Trace context and headers given at dispatch reach the handler's context."""
    seen: list[JobContext] = []

    def look(data: SendEmail, ctx: JobContext) -> EmailSent:
        seen.append(ctx)
        return EmailSent("ok")

    bound = app.implement(send_email, look)
    bound.dispatch(
        {"to": "a", "subject": "s"}, trace={"traceparent": "00-abc-def-01"}, headers={"t": "1"}
    ).result(5)
    assert seen[0].headers == {"t": "1"}
    assert seen[0].envelope is not None
    assert seen[0].envelope.trace == {"traceparent": "00-abc-def-01"}


def test_dispatch_middleware_can_rewrite_the_envelope(app: App) -> None:
    """before_dispatch may return a new envelope; after_dispatch sees what was sent."""
    sent: list[Envelope] = []

    class Stamp(Middleware):
        def before_dispatch(self, envelope: Envelope) -> Envelope | None:
            return envelope.replace(headers={"stamped": "yes"})

        def after_dispatch(self, envelope: Envelope) -> None:
            sent.append(envelope)

    seen: list[dict[str, str]] = []

    def look(data: SendEmail, ctx: JobContext) -> EmailSent:
        seen.append(ctx.headers)
        return EmailSent("ok")

    app.middleware = (Stamp(),)
    handle = app.implement(send_email, look).dispatch({"to": "a", "subject": "s"})
    handle.result(5)
    assert seen == [{"stamped": "yes"}]
    assert [e.id for e in sent] == [handle.id]


def test_async_producers_dispatch_and_await_without_blocking(app: App) -> None:
    """adispatch / aresult / adispatch_many work inside an event loop."""
    bound = app.implement(send_email, send)

    async def produce() -> list[EmailSent]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        tick_task = asyncio.create_task(ticker())
        handle = await bound.adispatch({"to": "a", "subject": "s"}, delay=0.1)
        many = await bound.adispatch_many([{"to": "b", "subject": "s"}])
        status = await handle.astatus()
        results = [await handle.aresult(5), *[await h.aresult(5) for h in many]]
        tick_task.cancel()
        assert status is JobStatus.QUEUED
        assert ticks > 5  # the loop kept running while we waited
        return results

    assert asyncio.run(produce()) == [EmailSent("m-a"), EmailSent("m-b")]


def test_aresult_times_out(app: App) -> None:
    """``aresult`` raises ResultTimeout like ``result``."""
    bound = app.implement(send_email, send)

    async def wait() -> None:
        handle = await bound.adispatch({"to": "a", "subject": "s"}, delay=5)
        await handle.aresult(timeout=0.05)

    with pytest.raises(ResultTimeout):
        asyncio.run(wait())


def test_gather_waits_for_many_jobs_in_batches(app: App) -> None:
    """``gather`` returns every output in order, reading unfinished jobs in batches."""
    from taskhop.sdk import gather

    bound = app.implement(send_email, send)
    handles = bound.dispatch_many([{"to": str(n), "subject": "s"} for n in range(12)])
    assert gather(handles, timeout=10) == [EmailSent(f"m-{n}") for n in range(12)]
    assert gather([], timeout=0) == []


def test_gather_raises_the_first_failure_and_times_out(app: App) -> None:
    """A failed job raises TaskFailed; unfinished ones raise ResultTimeout."""
    from taskhop.sdk import gather

    def refuse(data: SendEmail, ctx: JobContext) -> EmailSent:
        if data["to"] == "bad":
            raise PermanentError("no")
        return EmailSent("ok")

    bound = app.implement(send_email, refuse)
    handles = bound.dispatch_many([{"to": "ok", "subject": "s"}, {"to": "bad", "subject": "s"}])
    with pytest.raises(TaskFailed, match="PermanentError: no"):
        gather(handles, timeout=10)
    late = bound.dispatch({"to": "ok", "subject": "s"}, delay=5)
    with pytest.raises(ResultTimeout, match="1 of 1 jobs did not finish"):
        gather([late], timeout=0.1)
