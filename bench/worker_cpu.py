"""Worker CPU per message, no I/O: taskhop's Lambda handler vs Powertools BatchProcessor.

With no I/O the work is all CPU on one thread, so the figure is the wall time of processing
one SQS event (setting it up is not timed), per message.

Both get the same SQS event, whose bodies are taskhop envelopes, and run a trivial handler:
taskhop decodes the envelope, validates (cattrs), routes, runs, records the outcome in the
memory store and writes its job log line; Powertools parses each record with pydantic
(``SqsRecordModel`` with the envelope as a typed JSON body, unknown keys forbidden as
taskhop's decoder does) and calls the handler. Log lines go to a StringIO. taskhop gets a
Lambda-like context, as on AWS, so each handler runs under the invocation's deadline.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from typing import Any, TypedDict


class Greet(TypedDict):
    name: str
    times: int


def sqs_event(bodies: list[str]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "receiptHandle": f"r{i}",
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1",
                    "SenderId": "s",
                    "ApproximateFirstReceiveTimestamp": "1",
                },
                "messageAttributes": {},
                "md5OfBody": "x",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
    }


def envelopes(n: int) -> list[str]:
    """Message bodies: one fresh job each (taskhop records every job id it sees)."""
    from taskhop.static_contracts import Envelope

    return [
        Envelope(task="greet", input={"name": "a", "times": 2}).encode().decode() for _ in range(n)
    ]


def taskhop_runner(n: int) -> Any:
    from taskhop.lambda_worker import LocalContext, make_handler
    from taskhop.sdk import JobContext, create_app, static_contract
    from taskhop.sdk.memory import MemoryQueue, MemoryStore

    app = create_app(queue=MemoryQueue(), store=MemoryStore())

    def greet(data: Greet, ctx: JobContext) -> str:
        return data["name"] * data["times"]

    app.implement(static_contract("greet", input=Greet, output=str), greet)
    handler = make_handler(app, sqs_client=object())

    def run() -> float:
        event = sqs_event(envelopes(n))
        with contextlib.redirect_stdout(io.StringIO()):
            started = time.perf_counter()
            # A Lambda-like context, as on AWS: every job then runs under a deadline.
            answer = handler(event, LocalContext(timeout=900))
            elapsed = time.perf_counter() - started
        assert answer == {"batchItemFailures": []}
        return elapsed

    return run


def powertools_runner(n: int) -> Any:
    from datetime import datetime
    from typing import Literal

    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )
    from aws_lambda_powertools.utilities.parser import BaseModel
    from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
    from pydantic import ConfigDict, Json

    class GreetModel(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str
        times: int

    class EnvelopeModel(BaseModel):
        model_config = ConfigDict(extra="forbid")
        taskhop: Literal[1]
        id: str
        task: str
        version: int
        input: GreetModel
        attempt: int
        dispatched_at: datetime

    class Record(SqsRecordModel):
        body: Json[EnvelopeModel]  # type: ignore[assignment]

    processor = BatchProcessor(event_type=EventType.SQS, model=Record)

    def greet(record: Record) -> str:
        return record.body.input.name * record.body.input.times

    def run() -> float:
        event = sqs_event(envelopes(n))
        started = time.perf_counter()
        answer = process_partial_response(
            event=event, record_handler=greet, processor=processor, context=None
        )
        elapsed = time.perf_counter() - started
        assert answer == {"batchItemFailures": []}
        return elapsed

    return run


def run(n: int = 1000, rounds: int = 15) -> dict[str, float]:
    ours, theirs = taskhop_runner(n), powertools_runner(n)
    ours(), theirs()  # warm both
    a, b = [], []
    for _ in range(rounds):
        a.append(ours())
        b.append(theirs())
    taskhop_us = statistics.median(a) / n * 1e6
    powertools_us = statistics.median(b) / n * 1e6
    return {
        "taskhop_us_per_message": taskhop_us,
        "powertools_us_per_message": powertools_us,
        "taskhop_over_powertools": taskhop_us / powertools_us,
    }
