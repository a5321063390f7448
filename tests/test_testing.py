"""``taskhop.sdk.testing``: run handlers directly, run apps in memory, the pytest fixtures."""

from __future__ import annotations

import asyncio

import attrs
import pytest
from conftest import EmailSent, Resize, Resized, SendEmail, resize, send_email
from taskhop.sdk import (
    App,
    JobContext,
    PayloadError,
    Retry,
    UnknownTaskError,
    ValidationError,
    create_app,
    define_task,
    make_converter,
)
from taskhop.sdk.memory import MemoryQueue, MemoryStore
from taskhop.sdk.testing import MemoryHarness, arun_task, in_memory, run_task


@pytest.fixture
def backend() -> str:
    """This module tests the in-memory backend itself."""
    return "memory"


def test_run_task_calls_the_handler_with_validated_input(app: App) -> None:
    """The handler gets the structured input and its output comes back typed."""
    bound = app.implement(resize, lambda data, ctx: Resized(key=f"{type(data).__name__}"))
    assert run_task(bound, Resize(url="https://x", width=2)) == Resized("Resize")


def test_run_task_validates_like_the_worker(app: App) -> None:
    """Bad input raises ValidationError with field paths before the handler runs."""
    bound = app.implement(send_email, lambda data, ctx: EmailSent("x"))
    with pytest.raises(ValidationError, match=r"input.to: expected string, got integer"):
        run_task(bound, {"to": 5, "subject": "s"})  # type: ignore[typeddict-item]


def test_run_task_checks_the_output_fits_the_contract(app: App) -> None:
    """An output JSON cannot carry fails in the test, not in production."""
    bound = app.implement(send_email, lambda data, ctx: EmailSent(message_id=b"x"))  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match=r"output\.message_id"):
        run_task(bound, SendEmail(to="a", subject="s"))


def test_run_task_lets_handler_signals_through(app: App) -> None:
    """Control-flow errors such as Retry propagate for the test to assert on."""

    def later(data: SendEmail, ctx: JobContext) -> EmailSent:
        raise Retry(after=3)

    bound = app.implement(send_email, later)
    with pytest.raises(Retry) as caught:
        run_task(bound, SendEmail(to="a", subject="s"))
    assert caught.value.after == 3


def test_run_task_accepts_a_contract_with_its_app_and_a_custom_context(app: App) -> None:
    """``run_task(contract, input, app=...)`` with a given context (attempt 3 of 3)."""
    seen: list[JobContext] = []

    def look(data: SendEmail, ctx: JobContext) -> EmailSent:
        seen.append(ctx)
        return EmailSent("ok")

    app.implement(send_email, look)
    ctx = JobContext(job_id="j-1", task="send-email", attempt=3, max_attempts=3)
    assert run_task(send_email, SendEmail(to="a", subject="s"), app=app, ctx=ctx) == EmailSent("ok")
    assert seen[0].is_last_attempt
    with pytest.raises(TypeError, match="needs app="):
        run_task(send_email, SendEmail(to="a", subject="s"))  # type: ignore[call-overload]


def test_run_task_builds_the_job_a_dispatch_would_send(app: App) -> None:
    """The handler's context holds the envelope: the contract's version, middleware applied."""
    from taskhop.sdk import Envelope, Middleware

    class Tag(Middleware):
        def before_dispatch(self, envelope: Envelope) -> Envelope | None:
            return envelope.replace(headers={"tenant": "t1"})

    app.middleware = (Tag(),)
    seen: list[JobContext] = []

    def look(data: SendEmail, ctx: JobContext) -> EmailSent:
        seen.append(ctx)
        return EmailSent("ok")

    bound = app.implement(send_email.replace(version=2), look)
    run_task(bound, SendEmail(to="a", subject="s"))
    assert seen[0].envelope is not None
    assert (seen[0].envelope.version, seen[0].headers) == (2, {"tenant": "t1"})
    assert seen[0].job_id == seen[0].envelope.id


def test_run_task_on_an_unimplemented_task_is_an_error(app: App) -> None:
    """A registered-only task has no handler to run."""
    bound = app.register(send_email)
    with pytest.raises(UnknownTaskError):
        run_task(bound, SendEmail(to="a", subject="s"))


def test_run_task_runs_async_handlers(app: App) -> None:
    """``async def`` handlers run to completion under run_task and arun_task."""

    async def handler(data: SendEmail, ctx: JobContext) -> EmailSent:
        await asyncio.sleep(0)
        return EmailSent("async")

    bound = app.implement(send_email, handler)
    assert run_task(bound, SendEmail(to="a", subject="s")) == EmailSent("async")
    assert asyncio.run(arun_task(bound, SendEmail(to="a", subject="s"))) == EmailSent("async")
    sync_bound = app.implement(resize, lambda d, c: Resized("sync"))
    assert asyncio.run(arun_task(sync_bound, Resize(url="https://x", width=1))) == Resized("sync")


def test_in_memory_swaps_the_backends_and_restores_them() -> None:
    """A production-wired app runs in memory inside the block and is restored after."""
    queue, store = MemoryQueue(), MemoryStore()  # stand-ins for SQS and DynamoDB
    app = create_app(queue=queue, store=store)
    bound = app.implement(send_email, lambda d, c: EmailSent("in memory"))
    with in_memory(app) as mem:
        assert app.transport is mem.queue
        assert app.store is mem.store
        handle = bound.dispatch({"to": "a", "subject": "s"})
        assert handle.result(5) == EmailSent("in memory")
        mem.join()
        assert mem.record(handle.id).attempt == 1
        assert mem.dead_letters == []
    assert (app.transport, app.store) == (queue, store)
    assert queue.pending == 0


def test_harness_record_of_an_unknown_job_raises(harness: MemoryHarness) -> None:
    """Looking up a job that never ran is a JobNotFoundError."""
    from taskhop.sdk import JobNotFoundError

    with pytest.raises(JobNotFoundError):
        harness.record("nope")


def test_pytest_fixtures_give_an_embedded_app(
    taskhop_app: App, taskhop_memory: MemoryHarness
) -> None:
    """The plugin's fixtures: a fresh app and its in-memory harness."""
    bound = taskhop_app.implement(send_email, lambda d, c: EmailSent("fixture"))
    bound.dispatch({"to": "a", "subject": "s"})
    taskhop_memory.join()
    assert [r.result for r in taskhop_memory.records()] == [{"message_id": "fixture"}]


class Money:
    """A type only the app's converter hooks know: cents on the wire, no attrs, no dataclass."""

    def __init__(self, cents: int) -> None:
        self.cents = cents

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and other.cents == self.cents

    def __hash__(self) -> int:
        return hash(self.cents)


@attrs.frozen
class Charge:
    amount: Money


@attrs.frozen
class Charged:
    total: Money


def _money_app() -> App:
    converter = make_converter()
    converter.register_unstructure_hook(Money, lambda m: m.cents)
    converter.register_structure_hook(Money, lambda v, _: Money(v))
    return create_app(converter=converter)


def test_run_task_with_a_contract_uses_the_apps_converter_both_ways() -> None:
    """``run_task(contract, ..., app=)`` and ``arun_task`` write and read with the app's hooks."""
    app = _money_app()
    charge = define_task("charge", input=Charge, output=Charged)
    seen: list[Charge] = []

    def handler(data: Charge, ctx: JobContext) -> Charged:
        seen.append(data)
        return Charged(total=Money(data.amount.cents * 2))

    app.implement(charge, handler)
    assert run_task(charge, Charge(Money(150)), app=app) == Charged(Money(300))
    assert asyncio.run(arun_task(charge, Charge(Money(7)), app=app)) == Charged(Money(14))
    assert seen == [Charge(Money(150)), Charge(Money(7))]
    app.close()
