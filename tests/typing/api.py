"""Never run: checked by mypy --strict and pyright (strict) in `make test`.

Positive cases use ``assert_type``. Negative cases carry an ignore for each checker's own
error code; both checkers fail on an ignore that suppresses nothing, so a rejection that
stops being reported fails the build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict, assert_type

import attrs
from taskhop.sdk import (
    App,
    BoundTask,
    Implementation,
    ImplementOptions,
    JobContext,
    ResultHandle,
    StaticContract,
    TaskContract,
    create_app,
    define_task,
    gather,
    input_type,
    output_type,
    static_contract,
)
from taskhop.sdk.testing import run_task
from taskhop.static_contracts import (
    AsyncProducer,
    AsyncProducerTask,
    AsyncTransport,
    Envelope,
    EnvelopeError,
    Producer,
    ProducerTask,
    Reason,
    SignatureError,
    Transport,
)


class SendEmail(TypedDict):
    to: str
    subject: str


@dataclass
class EmailSent:
    message_id: str


@attrs.define
class Resize:
    url: str
    width: int


@attrs.define
class Resized:
    key: str


send_email = static_contract("send-email", input=SendEmail, output=EmailSent)
assert_type(send_email, StaticContract[SendEmail, EmailSent])

subscript = StaticContract[SendEmail, EmailSent](name="send-email")
assert_type(subscript, StaticContract[SendEmail, EmailSent])

resize = define_task("resize", input=Resize, output=Resized, retry=3, timeout="30s")
assert_type(resize, TaskContract[Resize, Resized])

app: App = create_app()

# -- producer side: the contract's types flow to dispatch and result -----------------------

bound = app.register(send_email)
assert_type(bound, BoundTask[SendEmail, EmailSent])
handle = bound.dispatch({"to": "a@example.com", "subject": "hi"})
assert_type(handle, ResultHandle[EmailSent])
assert_type(handle.result(timeout=5), EmailSent)
assert_type(bound.dispatch_many([{"to": "a", "subject": "b"}]), list[ResultHandle[EmailSent]])
assert_type(gather([handle, handle]), list[EmailSent])


async def producer_in_an_event_loop() -> None:
    h = await bound.adispatch({"to": "a@example.com", "subject": "hi"})
    assert_type(h, ResultHandle[EmailSent])
    assert_type(await h.aresult(), EmailSent)


bound.dispatch({"to": "a@example.com", "subjet": "typo"})  # type: ignore[typeddict-unknown-key, typeddict-item]  # pyright: ignore[reportArgumentType]
bound.dispatch({"to": 42, "subject": "hi"})  # type: ignore[typeddict-item]  # pyright: ignore[reportArgumentType]
bound.dispatch({"to": "a@example.com"})  # type: ignore[typeddict-item]  # pyright: ignore[reportArgumentType]
app.register(resize).dispatch(Resized(key="wrong type"))  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
handle_str: ResultHandle[str] = bound.dispatch({"to": "a", "subject": "b"})  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]

# -- untyped JSON (a request body) becomes the contract's input by parsing, not by a cast -----


def web_handler(body: dict[str, Any]) -> None:
    resizer = app.register(resize)
    resizer.dispatch(body)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    bound.dispatch(body)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    assert_type(resizer.parse(body), Resize)
    assert_type(resizer.dispatch(resizer.parse(body)), ResultHandle[Resized])
    assert_type(resizer.dispatch_json(body), ResultHandle[Resized])
    assert_type(bound.parse(body), SendEmail)
    assert_type(bound.dispatch_json(body, idempotency_key="k"), ResultHandle[EmailSent])


async def async_web_handler(body: object) -> None:
    assert_type(await bound.adispatch_json(body), ResultHandle[EmailSent])
    assert_type(await app.register(resize).adispatch_json(body), ResultHandle[Resized])
    bound.adispatch_json(body)  # type: ignore[unused-coroutine]  # pyright: ignore[reportUnusedCoroutine]
    bound.dispatch_json(body, skip_validation=True)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]


# -- worker side: handlers are checked against the contract --------------------------------


def resize_handler(data: Resize, ctx: JobContext) -> Resized:
    return Resized(key=f"{data.url}@{data.width}")


async def resize_async(data: Resize, ctx: JobContext) -> Resized:
    return Resized(key=data.url)


def wrong_output(data: Resize, ctx: JobContext) -> int:
    return data.width


def wrong_input(data: SendEmail, ctx: JobContext) -> Resized:
    return Resized(key=data["to"])


worker = create_app()
assert_type(worker.implement(resize, resize_handler), BoundTask[Resize, Resized])
assert_type(worker.implement(resize, resize_async), BoundTask[Resize, Resized])
assert_type(
    worker.implement(resize, resize_handler, ImplementOptions(retry=5)), BoundTask[Resize, Resized]
)
assert_type(worker.implement(resize, Implementation(resize_handler)), BoundTask[Resize, Resized])
# pyright names an overload failure reportCallIssue or reportArgumentType depending on which
# one is suppressed, so these two lines take a bare pyright ignore (still checked for use).
worker.implement(resize, wrong_output)  # type: ignore[arg-type]  # pyright: ignore
worker.implement(resize, wrong_input)  # type: ignore[arg-type]  # pyright: ignore


@worker.implement(send_email)
def send(data: SendEmail, ctx: JobContext) -> EmailSent:
    return EmailSent(message_id=data["to"])


assert_type(send, BoundTask[SendEmail, EmailSent])

# -- inline tasks: types from the handler's annotations, or given --------------------------


@worker.task("inline-sync")
def inline_sync(data: Resize, ctx: JobContext) -> Resized:
    return Resized(key=data.url)


@worker.task("inline-async")
async def inline_async(data: Resize, ctx: JobContext) -> Resized:
    return Resized(key=data.url)


assert_type(inline_sync, BoundTask[Resize, Resized])
assert_type(inline_async, BoundTask[Resize, Resized])
assert_type(
    worker.task("inline-call", resize_handler, input=Resize, output=Resized),
    BoundTask[Resize, Resized],
)
# mypy rejects a handler whose output differs from output=; pyright instead widens the
# output type to the union (Resized | int), which then fails wherever a Resized is expected.
worker.task("inline-bad", wrong_output, input=Resize, output=Resized)  # type: ignore[arg-type]
bad: BoundTask[Resize, Resized] = worker.task("b", wrong_output, input=Resize, output=Resized)  # type: ignore[arg-type]  # pyright: ignore[reportAssignmentType]

# -- runtime helpers return the carrier's types ---------------------------------------------

assert_type(input_type(send_email), type[SendEmail])
assert_type(output_type(send_email), type[EmailSent])
assert_type(input_type(bound), type[SendEmail])
assert_type(output_type(handle), type[EmailSent])
assert_type(run_task(inline_sync, Resize(url="u", width=1)), Resized)
assert_type(run_task(send, SendEmail(to="a", subject="b")), EmailSent)
run_task(inline_sync, SendEmail(to="a", subject="b"))  # type: ignore[misc]  # pyright: ignore[reportArgumentType]

# -- the standard-library producer ---------------------------------------------------------


def edge_producer(transport: Transport) -> None:
    task = Producer(transport).register(send_email)
    assert_type(task, ProducerTask[SendEmail, EmailSent])
    assert_type(task.dispatch({"to": "a", "subject": "b"}), str)
    assert_type(task.dispatch_many([{"to": "a", "subject": "b"}]), list[str])
    assert_type(task.envelope({"to": "a", "subject": "b"}), Envelope)
    task.dispatch({"to": 1, "subject": "b"})  # type: ignore[typeddict-item]  # pyright: ignore[reportArgumentType]
    # A sync producer's task has no async methods: there is nothing to await.
    task.adispatch({"to": "a", "subject": "b"})  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
    task.adispatch_many([])  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]


async def async_edge_producer(transport: AsyncTransport) -> None:
    task = AsyncProducer(transport).register(send_email)
    assert_type(task, AsyncProducerTask[SendEmail, EmailSent])
    assert_type(await task.adispatch({"to": "a", "subject": "b"}), str)
    assert_type(await task.adispatch_many([{"to": "a", "subject": "b"}]), list[str])
    assert_type(task.envelope({"to": "a", "subject": "b"}), Envelope)
    await task.adispatch({"to": 1, "subject": "b"})  # type: ignore[typeddict-item]  # pyright: ignore[reportArgumentType]
    # An async producer's task has no sync methods, and its coroutines must be awaited.
    task.dispatch({"to": "a", "subject": "b"})  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
    task.dispatch_many([])  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
    task.adispatch({"to": "a", "subject": "b"})  # type: ignore[unused-coroutine]  # pyright: ignore[reportUnusedCoroutine]
    _job_id: str = task.adispatch({"to": "a", "subject": "b"})  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]


# -- reasons: one enum, so a misspelt reason is a type error ---------------------------------


def reasons_are_typed(envelope_error: EnvelopeError, signature_error: SignatureError) -> None:
    assert_type(envelope_error.reason, Reason)
    assert_type(signature_error.reason, Reason)


EnvelopeError("bad body", reason=Reason.NOT_JSON)
EnvelopeError("bad body", reason="not_jsn")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
