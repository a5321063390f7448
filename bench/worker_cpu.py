"""Worker CPU per message, no I/O: taskhop's Lambda handler vs Powertools BatchProcessor.

Both get the same SQS event of valid messages and run a trivial handler: taskhop decodes the
envelope, validates (cattrs), routes, runs, and records the outcome in the memory store;
Powertools parses each record with pydantic (``SqsRecordModel`` with a typed JSON body) and
calls the handler. Job log lines go to /dev/null for both (Lambda ships stdout for free).
"""

from __future__ import annotations

import contextlib
import io
import json
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


def taskhop_runner(n: int) -> Any:
    from backends.memory import MemoryQueue, MemoryStore
    from lambda_worker import make_handler
    from sdk import JobContext, create_app, static_contract
    from static_contracts import Envelope

    app = create_app(queue=MemoryQueue(), store=MemoryStore())

    def greet(data: Greet, ctx: JobContext) -> str:
        return data["name"] * data["times"]

    app.implement(static_contract("greet", input=Greet, output=str), greet)
    handler = make_handler(app, sqs_client=object())

    def run() -> None:
        bodies = [
            Envelope(task="greet", input={"name": "a", "times": 2}).encode().decode()
            for _ in range(n)
        ]
        event = sqs_event(bodies)
        with contextlib.redirect_stdout(io.StringIO()):
            started = time.perf_counter()
            answer = handler(event, None)
            elapsed = time.perf_counter() - started
        assert answer == {"batchItemFailures": []}
        return elapsed

    return run


def powertools_runner(n: int) -> Any:
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )
    from aws_lambda_powertools.utilities.parser import BaseModel
    from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
    from pydantic import Json

    class GreetModel(BaseModel):
        name: str
        times: int

    class Record(SqsRecordModel):
        body: Json[GreetModel]  # type: ignore[assignment]

    processor = BatchProcessor(event_type=EventType.SQS, model=Record)

    def greet(record: Record) -> str:
        return record.body.name * record.body.times

    def run() -> None:
        bodies = [json.dumps({"name": "a", "times": 2}) for _ in range(n)]
        event = sqs_event(bodies)
        started = time.perf_counter()
        answer = process_partial_response(
            event=event, record_handler=greet, processor=processor, context=None
        )
        elapsed = time.perf_counter() - started
        assert answer == {"batchItemFailures": []}
        return elapsed

    return run


def run(n: int = 1000, rounds: int = 7) -> dict[str, float]:
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
