"""Worker CPU per message, no I/O, like for like: two pairs, taskhop vs Powertools.

With no I/O the work is all CPU on one thread, so the figure is the wall time of processing
one SQS event (setting it up is not timed), per message. Every runner gets the same kind of
SQS event, whose bodies are fresh taskhop envelopes, and runs a trivial handler:

- **stateless**: taskhop's Lambda handler over an app without a store (decode the envelope,
  validate with cattrs, route, run under the invocation's deadline, write the job log line)
  vs Powertools ``BatchProcessor`` + parser (``SqsRecordModel`` with the envelope as a typed
  JSON body, unknown keys forbidden as taskhop's decoder does).
- **stateful**: the same with taskhop's ``MemoryStore`` (begin, record the outcome) vs the
  same Powertools batch with ``idempotent_function`` over an in-memory persistence layer
  (``BasePersistenceLayer`` on a dict, keyed by the envelope's job id, local cache off).

Log lines go to a StringIO. Both get a Lambda-like context, as on AWS: taskhop runs each
handler under the invocation's deadline, Powertools' idempotency records the remaining time.
The four runners take turns within each round; a pair's ratio is the median of its per-round
ratios (the machine is shared and noisy), beside each side's median time.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from collections.abc import Callable
from typing import Any, TypedDict

PAIRS = ("stateless", "stateful")


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
    """Message bodies: one fresh job each (both stateful sides record every job id they see)."""
    from taskhop.static_contracts import Envelope

    return [
        Envelope(task="greet", input={"name": "a", "times": 2}).encode().decode() for _ in range(n)
    ]


def taskhop_runner(n: int, *, stateful: bool) -> Callable[[], float]:
    """One SQS event of ``n`` jobs through ``make_handler``; the seconds it took."""
    from taskhop.lambda_worker import LocalContext, make_handler
    from taskhop.sdk import JobContext, create_app, static_contract
    from taskhop.sdk.memory import MemoryQueue, MemoryStore

    app = create_app(queue=MemoryQueue(), store=MemoryStore() if stateful else None)

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


def envelope_models() -> tuple[Any, Any]:
    """Powertools' side of the comparison: the SQS record with the envelope as a typed JSON body
    (unknown keys forbidden, as taskhop's decoder does). Returns ``(Record, EnvelopeModel)``."""
    from datetime import datetime
    from typing import Literal

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
        body: Json[EnvelopeModel]  # pyright: ignore[reportIncompatibleVariableOverride]

    return Record, EnvelopeModel


def powertools_runner(n: int, *, stateful: bool) -> Callable[[], float]:
    """The same event through ``BatchProcessor`` + parser (+ ``idempotent_function``)."""

    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
    from taskhop.lambda_worker import LocalContext

    Record, EnvelopeModel = envelope_models()

    processor = BatchProcessor(event_type=EventType.SQS, model=Record)
    config = IdempotencyConfig(event_key_jmespath="id", use_local_cache=False)

    @idempotent_function(  # type: ignore[untyped-decorator]
        data_keyword_argument="envelope", config=config, persistence_store=dict_persistence()
    )
    def greet_once(envelope: EnvelopeModel) -> str:
        return envelope.input.name * envelope.input.times

    def greet(record: Record) -> str:
        if stateful:
            return str(greet_once(envelope=record.body))
        return record.body.input.name * record.body.input.times

    def run() -> float:
        event = sqs_event(envelopes(n))
        started = time.perf_counter()
        context: Any = LocalContext(timeout=900)  # Lambda's context, as far as both read it
        config.register_lambda_context(context)  # as an idempotent Lambda handler does
        answer = process_partial_response(
            event=event, record_handler=greet, processor=processor, context=context
        )
        elapsed = time.perf_counter() - started
        assert answer == {"batchItemFailures": []}
        return elapsed

    return run


def dict_persistence() -> Any:
    """A Powertools persistence layer on a dict, conditional like the DynamoDB one (made lazily:
    Powertools is a bench dependency only)."""
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyItemAlreadyExistsError,
        IdempotencyItemNotFoundError,
    )
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

    class Layer(BasePersistenceLayer):
        def __init__(self) -> None:
            super().__init__()  # type: ignore[no-untyped-call]
            self.items: dict[str, DataRecord] = {}

        def _get_record(self, idempotency_key: str) -> DataRecord:
            try:
                return self.items[idempotency_key]
            except KeyError:
                raise IdempotencyItemNotFoundError from None

        def _put_record(self, data_record: DataRecord) -> None:
            # DynamoDB's condition: no item, or an expired one, or an in-progress one whose
            # invocation ran out of time.
            now = time.time()
            old = self.items.get(data_record.idempotency_key)
            if old is not None and not (
                (old.expiry_timestamp or 0) < now
                or (
                    old.status == "INPROGRESS"
                    and old.in_progress_expiry_timestamp is not None
                    and old.in_progress_expiry_timestamp < now * 1000
                )
            ):
                raise IdempotencyItemAlreadyExistsError(old_data_record=old)
            self.items[data_record.idempotency_key] = data_record

        def _update_record(self, data_record: DataRecord) -> None:
            self.items[data_record.idempotency_key] = data_record

        def _delete_record(self, data_record: DataRecord) -> None:
            self.items.pop(data_record.idempotency_key, None)

    return Layer()


def run(n: int = 1000, rounds: int = 15) -> dict[str, float]:
    """Both pairs' figures: each side's median us per message, and the median ratio."""
    runners = {
        (pair, side): make(n, stateful=pair == "stateful")
        for pair in PAIRS
        for side, make in (("taskhop", taskhop_runner), ("powertools", powertools_runner))
    }
    for runner in runners.values():
        runner()  # warm every one
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runners}
    for _ in range(rounds):
        for key, runner in runners.items():
            times[key].append(runner())
    figures: dict[str, float] = {}
    for pair in PAIRS:
        ours, theirs = times[pair, "taskhop"], times[pair, "powertools"]
        figures[f"{pair}_taskhop_us_per_message"] = statistics.median(ours) / n * 1e6
        figures[f"{pair}_powertools_us_per_message"] = statistics.median(theirs) / n * 1e6
        figures[f"{pair}_taskhop_over_powertools"] = statistics.median(
            a / b for a, b in zip(ours, theirs, strict=True)
        )
    return figures


if __name__ == "__main__":  # python -m bench.worker_cpu
    import json

    print(json.dumps({k: round(v, 3) for k, v in run().items()}, indent=2))
