"""The Lambda entrypoint: ``handler = make_handler(app)`` serves every event a worker gets.

Event kinds, recognised by shape:

- SQS batches (``Records`` from ``aws:sqs``): see ``_sqs``; returns a partial batch response.
- DynamoDB Streams batches (``aws:dynamodb``) for ``app.on_change`` triggers: served in order
  by ``taskhop.sdk.serve_stream_records``, which reports only the first failing record.
- Direct invocation: ``{"task": ..., "input": ...}`` or a full envelope; returns the outcome
  with the result.
- EventBridge scheduled events for ``app.schedule(...)``: the rule name (or an input of
  ``{"taskhop_schedule": name}``) picks the schedule.
- HTTP events (API Gateway REST, HTTP API v2, Function URL) go to ``http=`` when given; the
  HTTP endpoint arrives with its own issue, so without one they answer 501.

Nothing heavy is imported here: boto3 is loaded on first use of the SQS client.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from taskhop.sdk import (
    App,
    BatchRunner,
    Envelope,
    Outcome,
    OutcomeKind,
    TaskhopError,
    configure_logging,
    serve_stream_records,
)
from taskhop.static_contracts.limits import LAMBDA_SAFETY_MARGIN

from ._logs import emit_job, emit_metrics
from ._sqs import process_sqs_batch

__all__ = ["LambdaContext", "LambdaHandler", "UnrecognisedEvent", "make_handler"]


class LambdaContext(Protocol):
    """The part of Lambda's context object the runtime uses."""

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left in this invocation."""
        ...


class UnrecognisedEvent(TaskhopError, ValueError):
    """The handler got an event of no kind it serves."""


class LambdaHandler:
    """A Lambda handler for one app (build it with ``make_handler``)."""

    def __init__(
        self,
        app: App,
        *,
        dlq_url: str | None = None,
        sqs_client: Any | None = None,
        safety_margin: float = LAMBDA_SAFETY_MARGIN,
        http: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None,
        concurrency: int | None = None,
        handler_threads: int = 0,
    ) -> None:
        self.app = app
        self.batches = BatchRunner(
            app.worker(), concurrency=concurrency, handler_threads=handler_threads
        )
        self.dlq_url = dlq_url
        self.safety_margin = safety_margin
        self.http = http
        self._sqs = sqs_client
        self._queue_urls: dict[str, str] = {}
        self._dead_letter_queues: dict[str, str | None] = {}

    def __call__(self, event: Any, context: Any = None) -> Any:
        """Serve one invocation."""
        if not isinstance(event, dict):
            raise UnrecognisedEvent(f"not an event this worker serves: {type(event).__name__}")
        data = cast("dict[str, Any]", event)
        deadline = self._deadline(context)
        if _is_sqs(data):
            problem = _malformed_sqs_record(data["Records"])
            if problem:  # not from Lambda: refuse it whole (if it was, it comes back whole)
                raise UnrecognisedEvent(f"malformed SQS event: {problem}")
            return process_sqs_batch(
                self.app, data, deadline=deadline, sqs=self.sqs, queue_url=self.queue_url,
                dlq_url=self.dead_letter_queue, runner=self.batches,
            )  # fmt: skip
        if _is_stream(data):  # a DynamoDB Streams batch: in order, stop at the first failure
            return serve_stream_records(self.app, data["Records"], deadline=deadline).response()
        if "requestContext" in data and ("httpMethod" in data or "rawPath" in data):
            if self.http is None:
                return {"statusCode": 501, "body": "this worker serves no HTTP endpoint"}
            return self.http(data, context)
        if data.get("source") == "aws.events" or "taskhop_schedule" in data:
            return self._scheduled(data, deadline)
        if "taskhop" in data or ("task" in data and "input" in data):
            return self._direct(data, deadline)
        raise UnrecognisedEvent(f"not an event this worker serves (keys: {sorted(data)[:6]})")

    # -- event kinds ------------------------------------------------------------------------

    def _direct(self, event: dict[str, Any], deadline: float | None) -> dict[str, Any]:
        if "taskhop" in event:
            envelope = Envelope.from_dict(event)
        else:  # built like any job of the task: at its contract's current version
            envelope = self.app.envelope(
                str(event["task"]), event["input"], idempotency_key=event.get("idempotency_key")
            )
        outcome = self.app.worker().process(envelope, deadline=deadline)
        emit_job(outcome, source="invoke")
        emit_metrics([outcome])
        return _answer(outcome)

    def _scheduled(self, event: dict[str, Any], deadline: float | None) -> dict[str, Any]:
        name = event.get("taskhop_schedule") or _rule_name(event)
        schedule = self.app.schedules.get(str(name))
        if schedule is None:
            raise UnrecognisedEvent(
                f"no schedule named {name!r} (declared: {sorted(self.app.schedules)})"
            )
        envelope = self.app.envelope(schedule.contract.name, schedule.input)
        outcome = self.app.worker().process(envelope, deadline=deadline)
        emit_job(outcome, source="schedule")
        emit_metrics([outcome])
        if outcome.kind is OutcomeKind.RETRY:
            # EventBridge invokes asynchronously: raising makes Lambda retry the event.
            raise TaskhopError(f"scheduled job {envelope.id} failed and will be retried")
        return _answer(outcome)

    # -- AWS plumbing -----------------------------------------------------------------------

    def sqs(self) -> Any:
        """The SQS client for visibility changes, deferrals and the DLQ (made on first use)."""
        if self._sqs is None:
            import boto3  # lazily: a worker that never retries never pays for it

            factory: Any = boto3
            self._sqs = factory.client("sqs")
        return self._sqs

    def queue_url(self, arn: str) -> str:
        """The URL of the queue an event record came from (looked up once per queue)."""
        url = self._queue_urls.get(arn)
        if url is None:
            _, _, _, _, account, name = arn.split(":", 5)
            answer = self.sqs().get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
            url = self._queue_urls[arn] = str(answer["QueueUrl"])
        return url

    def dead_letter_queue(self, arn: str) -> str | None:
        """Where dead letters of the queue ``arn`` go: ``dlq_url``, else its redrive policy's DLQ.

        Looked up once per queue (GetQueueAttributes), and only when a dead letter needs it;
        None when the queue has no redrive policy either.
        """
        if self.dlq_url is not None:
            return self.dlq_url
        if arn not in self._dead_letter_queues:
            answer = self.sqs().get_queue_attributes(
                QueueUrl=self.queue_url(arn), AttributeNames=["RedrivePolicy"]
            )
            policy = answer.get("Attributes", {}).get("RedrivePolicy")
            target = None if policy is None else json.loads(policy).get("deadLetterTargetArn")
            self._dead_letter_queues[arn] = None if target is None else self.queue_url(target)
        return self._dead_letter_queues[arn]

    def _deadline(self, context: Any) -> float | None:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return None
        left = float(remaining()) / 1000
        return time.monotonic() + max(0.0, left - self.safety_margin)


def make_handler(
    app: App,
    *,
    dlq_url: str | None = None,
    sqs_client: Any | None = None,
    safety_margin: float = LAMBDA_SAFETY_MARGIN,
    http: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None,
    concurrency: int | None = None,
    handler_threads: int = 0,
) -> LambdaHandler:
    """Build the Lambda handler for an app; bind it to a module name Lambda can import.

    Args:
        app: the app whose implemented tasks this worker runs.
        dlq_url: send dead letters here, with their classification (default:
            ``$TASKHOP_DLQ_URL``, which the infra templates set); without either, they go to
            the DLQ of the source queue's redrive policy, found with GetQueueAttributes.
        sqs_client: a boto3 SQS client (default: one from the environment, made on first use).
        safety_margin: seconds kept back from the invocation's remaining time.
        http: the handler for HTTP events (API Gateway, Function URL), when this worker has an
            endpoint.
        concurrency: jobs of one SQS batch in flight at once, their store round trips
            overlapped (1: one after another). Default: 10 where it pays off (a store that
            does I/O, ``async def`` handlers, ``handler_threads``), else 1; see ``BatchRunner``.
        handler_threads: run sync handlers of a batch on this many threads at once (default:
            one at a time on the main thread, under the timer-signal timeout). On threads, a
            timeout stops a handler at its next Python instruction; one blocked in a C call
            is abandoned and its job retried.

    On Lambda (``$AWS_LAMBDA_FUNCTION_NAME`` set) it calls ``configure_logging``, so a
    handler's ``ctx.log.info`` lines reach CloudWatch with their job fields.

    """
    if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:  # set by Lambda: this is the function's init
        # Job lines at INFO, in Lambda's JSON format or as taskhop's own lines on stdout; once
        # (repeating changes nothing), and never over logging the user set up.
        configure_logging(stream=sys.stdout)
    dlq_url = dlq_url or os.environ.get("TASKHOP_DLQ_URL") or None
    return LambdaHandler(
        app, dlq_url=dlq_url, sqs_client=sqs_client, safety_margin=safety_margin, http=http,
        concurrency=concurrency, handler_threads=handler_threads,
    )  # fmt: skip


_SQS_RECORD_TEXT = ("messageId", "receiptHandle", "body", "eventSourceARN")
"""The record fields the runtime reads; Lambda always sends them as strings."""


def _malformed_sqs_record(records: Any) -> str | None:
    """The first field of an SQS event that is not what Lambda sends, by its path."""
    if not isinstance(records, list):
        return "Records: not a list"
    items: list[Any] = records  # pyright: ignore[reportUnknownVariableType]
    for i, record in enumerate(items):
        if not isinstance(record, dict):
            return f"Records[{i}]: not an object"
        fields = cast("dict[str, Any]", record)
        for name in _SQS_RECORD_TEXT:
            if not isinstance(fields.get(name), str):
                return f"Records[{i}].{name}: missing or not a string"
        attributes = fields.get("attributes", {})
        if not isinstance(attributes, dict):
            return f"Records[{i}].attributes: not an object"
        count = cast("dict[str, Any]", attributes).get("ApproximateReceiveCount", "1")
        if not (isinstance(count, str) and count.isdecimal()):
            return f"Records[{i}].attributes.ApproximateReceiveCount: not a count"
    return None


def _is_stream(event: dict[str, Any]) -> bool:
    return _records_from(event) == "aws:dynamodb"


def _is_sqs(event: dict[str, Any]) -> bool:
    return _records_from(event) == "aws:sqs"


def _records_from(event: dict[str, Any]) -> str | None:
    """The ``eventSource`` of an event's first record (``aws:sqs``, ``aws:dynamodb``), or None."""
    records: Any = event.get("Records")
    try:
        return str(records[0]["eventSource"])
    except (TypeError, KeyError, IndexError):
        return None


def _rule_name(event: dict[str, Any]) -> str | None:
    resources: list[Any] = list(event.get("resources") or [])
    return str(resources[0]).rsplit("/", 1)[-1] if resources else None


def _answer(outcome: Outcome) -> dict[str, Any]:
    return {
        "job_id": outcome.job_id,
        "status": outcome.kind.value,
        "result": outcome.result,
        "error": None if outcome.error is None else outcome.error.to_dict(),
    }
