"""taskhop quick start: declare two tasks, implement them, dispatch jobs and read results.

Run it with ``make demo`` (or ``.venv/bin/python docs/examples/quickstart.py``). Everything
runs in this one process on the embedded in-memory backend: no AWS account, no network.

In a real deployment the three sections below live in three places:

- ``contracts``: a small module shared by producers and workers (types only);
- ``worker``: the code that imports the heavy dependencies and runs the handlers;
- ``producer``: an API, an edge function or a script that dispatches by contract and never
  imports the worker's code.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TypedDict

import attrs
from taskhop.sdk import (
    JobContext,
    RetryPolicy,
    TaskRejected,
    ValidationError,
    create_app,
    define_task,
    static_contract,
)

# =============================================================================================
# contracts: names and types only, importable by producer and worker alike
# =============================================================================================


class SendEmail(TypedDict):
    """A static contract's input: a plain TypedDict, so the producer ships no validator."""

    to: str
    subject: str
    body: str


@dataclass
class EmailSent:
    """What the send-email handler returns."""

    message_id: str


# A static contract is types only. The worker still validates every job before its handler
# runs, with a validator it derives from the same TypedDict.
send_email = static_contract(
    "send-email",
    input=SendEmail,
    output=EmailSent,
    # Three attempts in all, 50 ms apart: short, so the demo's retry is quick to watch.
    retry=RetryPolicy(attempts=3, backoff="fixed", delay=0.05, jitter=False),
)


@attrs.frozen
class Resize:
    """A define_task input: an attrs class whose validators run on dispatch and on the worker."""

    url: str = attrs.field(validator=attrs.validators.matches_re(r"https://.+"))
    width: int = attrs.field(validator=[attrs.validators.ge(16), attrs.validators.le(4096)])


@attrs.frozen
class Resized:
    """What the resize handler returns."""

    key: str
    width: int


# define_task adds a runtime schema: the producer validates input before sending it.
resize = define_task("resize", input=Resize, output=Resized, timeout="10s")


# =============================================================================================
# worker: implement the contracts (this is the code a Lambda function would run)
# =============================================================================================

# With no arguments, create_app() runs embedded: an in-process queue, job store and worker
# thread. Real deployments pass an SQS queue and a DynamoDB store instead (see the roadmap).
app = create_app()


class FlakyMailer:
    """A stand-in for an SMTP client whose first call fails, as real networks sometimes do."""

    def __init__(self) -> None:
        self.calls = 0

    def send(self, to: str, subject: str) -> str:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("mail server did not answer")
        return f"msg-{self.calls}-{to}"


mailer = FlakyMailer()


# The decorator form of implement() (it binds `deliver` to the task's BoundTask). A type
# checker holds the handler to the contract: `data` is a SendEmail and it must return an
# EmailSent. A sync handler like this one runs on the worker thread.
@app.implement(send_email)
def deliver(data: SendEmail, ctx: JobContext) -> EmailSent:
    print(f"  [worker] send-email attempt {ctx.attempt}/{ctx.max_attempts} to {data['to']}")
    # Any exception other than PermanentError is retried under the task's RetryPolicy;
    # raise taskhop.sdk.Retry(after=seconds) to choose the wait yourself.
    return EmailSent(message_id=mailer.send(data["to"], data["subject"]))


# An async def handler: the worker awaits it on its own event loop. Here `data` is already a
# validated Resize instance, never a raw dict.
async def resize_image(data: Resize, ctx: JobContext) -> Resized:
    await asyncio.sleep(0.01)  # stands in for downloading and resizing the image
    return Resized(key=f"thumbs/{data.width}/{data.url.rsplit('/', 1)[-1]}", width=data.width)


app.implement(resize, resize_image)


# =============================================================================================
# producer: dispatch by contract, wait for typed results
# =============================================================================================


def step(title: str) -> None:
    print(f"\n== {title}")


def produce() -> None:
    # register() binds a contract to the app and returns its BoundTask. It is idempotent by
    # name, so here it returns the very object implement() upgraded above.
    emails = app.register(send_email)
    thumbnails = app.register(resize)

    step("dispatch a job and wait for its result (the first attempt fails, then a retry)")
    handle = emails.dispatch({"to": "alice@example.com", "subject": "Welcome", "body": "Hi!"})
    sent = handle.result(timeout=10)  # typed: EmailSent
    record = handle.record()
    assert record is not None
    print(f"  result: {sent}")
    print(f"  status: {handle.status().value}, after {record.attempt} attempts")

    step("producer-side validation: define_task checks input before anything is sent")
    try:
        # A JSON request body is validated exactly like a Resize instance would be.
        body = json.loads('{"url": "ftp://example.com/cat.png", "width": 5}')
        thumbnails.dispatch(body)
    except ValidationError as exc:
        print(f"  ValidationError: {exc.summary}")
        for error in exc.errors:
            print(f"    {error.path}: {error.message}")

    step("worker-side validation: a static contract's bad payload is rejected, never retried")
    # A body from a caller without a type checker. A static contract ships no validator, so
    # the job is sent as is; the worker validates it before the handler and rejects it.
    untyped = json.loads('{"to": 42, "subject": "Welcome", "body": "Hi!"}')
    rejected = emails.dispatch(untyped)
    try:
        rejected.result(timeout=10)
    except TaskRejected as exc:
        print(f"  TaskRejected: {exc.error.type}: {exc.error.message}")
        for field in exc.error.fields:
            print(f"    {field.path}: {field.message}")
        print(f"  status: {rejected.status().value}")

    step("idempotency keys: a second dispatch with the same key gets the first result")
    first = emails.dispatch(
        {"to": "bob@example.com", "subject": "Receipt", "body": "Thanks"},
        idempotency_key="receipt-1001",
    )
    print(f"  first:  {first.result(timeout=10)}")
    second = emails.dispatch(
        {"to": "bob@example.com", "subject": "Receipt", "body": "Thanks"},
        idempotency_key="receipt-1001",
    )
    print(f"  second: {second.result(timeout=10)} (the handler did not run again)")
    second_record = second.record()
    assert second_record is not None
    print(f"  second job duplicate_of first job: {second_record.duplicate_of == first.id}")

    step("dispatch_many: several jobs in one send")
    handles = thumbnails.dispatch_many(
        Resize(url="https://example.com/cat.png", width=width) for width in (64, 128, 256)
    )
    for thumb in handles:
        print(f"  {thumb.result(timeout=10)}")


async def produce_async() -> None:
    thumbnails = app.register(resize)
    # adispatch / aresult never block the event loop: use them inside async web frameworks.
    handles = [
        await thumbnails.adispatch(Resize(url="https://example.com/dog.png", width=width))
        for width in (320, 640)
    ]
    results = await asyncio.gather(*(h.aresult(timeout=10) for h in handles))
    for result in results:
        print(f"  {result}")


def main() -> None:
    try:
        produce()
        step("async: adispatch and aresult inside asyncio.run")
        asyncio.run(produce_async())
    finally:
        # Stops the embedded worker thread and closes its event loop.
        app.close()
    print("\ndone")


if __name__ == "__main__":
    main()
