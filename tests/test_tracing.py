"""Trace context: the envelope's ``trace`` reaches the handler and its log lines.

``ctx.trace`` is the envelope's map (``traceparent`` / ``tracestate`` / ``xray``); without one,
the host's: on Lambda an SQS record's ``AWSTraceHeader``, which SQS keeps from the producer's
SendMessage (taskhop's SQS transports set it from the envelope or a traced Lambda's
``_X_AMZN_TRACE_ID``). ``ctx.trace_id`` and the ``trace_id`` of each job line come from it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any, TypedDict

import pytest
from taskhop.sdk import (
    Envelope,
    JobContext,
    JobLogFilter,
    Middleware,
    create_app,
    current_job,
    define_task,
    incoming_trace,
)

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
XRAY_ROOT = "1-5759e988-bd862e3fe1be46a994272793"


class Order(TypedDict):
    n: int


charge = define_task("trace-charge", input=Order, output=Order)


class Seen:
    """What the handler saw: its context, and the trace ids on its log records."""

    def __init__(self) -> None:
        self.contexts: list[JobContext] = []
        self.records: list[logging.LogRecord] = []


@pytest.fixture
def seen() -> Iterator[Seen]:
    """Records of the ``orders.trace`` logger (through a ``JobLogFilter``) and the contexts."""
    got = Seen()

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.records.append(record)

    handler = Keep()
    handler.addFilter(JobLogFilter())
    logger = logging.getLogger("orders.trace")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield got
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def tracing_app(seen: Seen, **options: Any) -> Any:
    """An app whose handler records its context and logs one line."""
    app = create_app(**options)

    def handle(data: Order, ctx: JobContext) -> Order:
        seen.contexts.append(ctx)
        logging.getLogger("orders.trace").info("charged")
        return data

    app.implement(charge, handle)
    return app


def test_the_envelopes_trace_reaches_the_handler_and_its_lines(seen: Seen) -> None:
    """``ctx.trace`` is the envelope's map; ``trace_id`` (W3C) is on ctx and on each line."""
    app = tracing_app(seen)
    trace = {"traceparent": PARENT, "tracestate": "vendor=1", "xray": XRAY}
    app.worker().process(Envelope(task=charge.name, input={"n": 1}, trace=trace))
    [ctx] = seen.contexts
    assert ctx.trace == trace
    assert ctx.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert [getattr(r, "trace_id", None) for r in seen.records] == [ctx.trace_id]


@pytest.mark.parametrize(
    ("trace", "expected"),
    [
        ({"xray": XRAY}, XRAY_ROOT),
        ({"xray": f"Parent=53995c3f42cd8ad8;Root={XRAY_ROOT}"}, XRAY_ROOT),
        ({"traceparent": "not a traceparent", "xray": XRAY}, XRAY_ROOT),
        ({"traceparent": "00-XYZ\nforged line-00f067aa0ba902b7-01"}, None),
        ({"xray": 'Root=1-5759e988-bd86\n{"level":"ERROR"}'}, None),
        ({}, None),
    ],
)
def test_the_trace_id_is_taken_only_when_well_formed(
    trace: dict[str, str], expected: str | None
) -> None:
    """X-Ray's ``Root`` when there is no valid traceparent; text that is not an id is dropped."""
    ctx = JobContext(job_id="j", task="t", envelope=Envelope(task="t", input={}, trace=trace))
    assert ctx.trace_id == expected
    assert ("trace_id" in ctx.log_fields) is (expected is not None)


def test_the_hosts_trace_is_used_when_the_envelope_has_none(seen: Seen) -> None:
    """``incoming_trace`` (the SQS ``AWSTraceHeader``) fills in; the envelope's own wins."""
    app = tracing_app(seen)
    worker = app.worker()
    with incoming_trace({"xray": XRAY}):
        worker.process(Envelope(task=charge.name, input={"n": 1}))
        worker.process(Envelope(task=charge.name, input={"n": 2}, trace={"traceparent": PARENT}))
    worker.process(Envelope(task=charge.name, input={"n": 3}))
    assert [c.trace for c in seen.contexts] == [{"xray": XRAY}, {"traceparent": PARENT}, {}]
    ids = [getattr(r, "trace_id", None) for r in seen.records]
    assert ids == [XRAY_ROOT, "4bf92f3577b34da6a3ce929d0e0e4736", None]


def test_a_lambda_sqs_record_s_aws_trace_header_reaches_the_handler(seen: Seen) -> None:
    """The Lambda SQS event's ``attributes.AWSTraceHeader`` is the fallback, record by record."""
    from taskhop.lambda_worker import make_handler

    app = tracing_app(seen)
    plain = Envelope(task=charge.name, input={"n": 1})
    traced = Envelope(task=charge.name, input={"n": 2}, trace={"traceparent": PARENT})

    def record(envelope: Envelope, attributes: dict[str, str]) -> dict[str, Any]:
        return {
            "messageId": envelope.id,
            "receiptHandle": "r",
            "body": envelope.encode().decode(),
            "attributes": {"ApproximateReceiveCount": "1", **attributes},
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:orders",
        }

    event = {
        "Records": [
            record(plain, {"AWSTraceHeader": XRAY}),
            record(traced, {"AWSTraceHeader": XRAY}),
            record(Envelope(task=charge.name, input={"n": 3}), {}),
        ]
    }
    answer = make_handler(app, sqs_client=object())(event)
    assert answer == {"batchItemFailures": []}
    assert [c.trace for c in seen.contexts] == [{"xray": XRAY}, {"traceparent": PARENT}, {}]


def test_a_traced_producer_s_header_comes_back_through_a_real_queue(
    seen: Seen, server_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Producer in a traced Lambda -> SQS (moto) -> local event source mapping -> the handler."""
    from taskhop.backends.sqs import SqsQueue
    from taskhop.lambda_worker import LocalEventSourceMapping, make_handler

    sqs = server_session.client("sqs")
    url = sqs.create_queue(QueueName=f"trace-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    monkeypatch.setenv("_X_AMZN_TRACE_ID", XRAY)  # what Lambda sets in a traced producer
    producer = SqsQueue(url, client=sqs)
    producer.send(Envelope(task=charge.name, input={"n": 1}, id="no-trace"))  # SendMessage
    producer.send(
        Envelope(task=charge.name, input={"n": 2}, id="w3c", trace={"traceparent": PARENT})
    )
    monkeypatch.delenv("_X_AMZN_TRACE_ID")
    app = tracing_app(seen)
    mapping = LocalEventSourceMapping(make_handler(app, sqs_client=sqs), url, sqs, wait_time=0)
    while len(seen.contexts) < 2 and mapping.poll_once():
        pass
    traces = {c.job_id: c.trace for c in seen.contexts}
    assert traces == {"no-trace": {"xray": XRAY}, "w3c": {"traceparent": PARENT}}
    ids = sorted(getattr(r, "trace_id", "") for r in seen.records)
    assert ids == sorted([XRAY_ROOT, "4bf92f3577b34da6a3ce929d0e0e4736"])


# -- the README's example: a trace that goes on into the jobs a handler dispatches ------------


class ContinueTrace(Middleware):
    """Jobs dispatched while a handler runs carry that job's trace (unless they have one)."""

    def before_dispatch(self, envelope: Envelope) -> Envelope | None:
        job = current_job()
        if job is None or envelope.trace or not job.trace:
            return None
        return envelope.replace(trace=job.trace)


class Sent:
    """A transport that keeps what it is given."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    def send(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def send_many(self, envelopes: Any) -> None:
        self.envelopes += envelopes

    def close(self) -> None:
        pass


def test_continue_trace_middleware_carries_the_trace_into_child_jobs() -> None:
    """The README's middleware: a child job dispatched by a handler shares its trace."""
    queue = Sent()
    app = create_app(queue, middleware=[ContinueTrace()])
    child = define_task("trace-child", input=Order, output=Order)
    app.register(child)

    def parent(data: Order, ctx: JobContext) -> Order:
        app.register(child).dispatch({"n": data["n"] + 1})
        return data

    app.implement(charge, parent)
    worker = app.worker()
    worker.process(Envelope(task=charge.name, input={"n": 1}, trace={"traceparent": PARENT}))
    app.register(child).dispatch({"n": 9})  # outside a job: nothing to continue
    assert [(e.input, e.trace) for e in queue.envelopes] == [
        ({"n": 2}, {"traceparent": PARENT}),
        ({"n": 9}, None),
    ]
