"""The guardrails every taskhop deployment keeps, checked where the parameters are chosen.

Both deployment paths call ``check_parameters``: ``taskhop infra render`` before it prints
the SAM parameters, and the CDK construct when it is built. The figures:

- the queue's visibility timeout is at least 6x the function timeout (AWS's advice for
  SQS-triggered functions, so a batch still running is not delivered again);
- ``maxReceiveCount`` is at least 5 (AWS's advice: throttled batches count as receives, and
  must not reach the DLQ without a real failure);
- the function timeout is at most Lambda's 900 s and the visibility timeout at most SQS's
  12 hours (43,200 s), so no parameter is silently clamped at deploy time.

``taskhop infra render`` also refuses a contract whose timeout plus the runtime's 3 s safety
margin does not fit in 900 s: no function timeout could honour it.

Events and table triggers (``check_subscriptions``, ``check_stream_mapping``,
``check_stream_consumers``), checked by the render and the CDK construct alike:

- a topic has at most 200 subscriptions with filter policies, and a policy at most 150
  values (SNS's quotas), so a deploy never fails half-way on the 201st;
- a stream's event source mapping retries a finite number of times, drops records older
  than the stream keeps them (24 h), sends what it gives up on to an on-failure destination,
  reports partial batch failures (the worker stops at the first failing record) and does not
  bisect batches (bisecting re-runs the records before the failure, which succeeded);
- its filter criteria hold at most Lambda's 5 filters per mapping (the default quota);
- at most 2 consumers read one stream (DynamoDB throttles a shard's third reader).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from taskhop.static_contracts import TaskhopError
from taskhop.static_contracts.limits import (
    LAMBDA_MAX_FILTERS,
    LAMBDA_MAX_TIMEOUT,
    SNS_MAX_FILTER_VALUES,
    SQS_FIFO_MAX_BATCH,
    SQS_MAX_VISIBILITY,
)

__all__ = [
    "DEFAULT_RECEIVES",
    "MIN_RECEIVES",
    "SNS_MAX_SUBSCRIPTIONS",
    "STREAM_MAX_CONSUMERS",
    "STREAM_MAX_FILTERS",
    "STREAM_RETENTION",
    "VISIBILITY_FACTOR",
    "GuardrailError",
    "check_parameters",
    "check_stream_consumers",
    "check_stream_mapping",
    "check_subscriptions",
]

MIN_RECEIVES = 5
"""The smallest ``maxReceiveCount`` a worker queue may have."""
DEFAULT_RECEIVES = 20
"""The worker queue's ``maxReceiveCount`` unless one is given.

The runtime dead-letters a job itself once the job store's count of attempts runs out, so the
queue's redrive policy is only a backstop (for a runtime that cannot reach its store at all).
It must not fire first: receives that run nothing still count there (a busy lease, a
deferral, a batch cut short, and on FIFO every retry of a message ahead in the group).
"""
VISIBILITY_FACTOR = 6
"""The queue's visibility timeout over the function timeout, at least."""
SNS_MAX_SUBSCRIPTIONS = 200
"""SNS's quota of subscription filter policies per topic (one per subscribing task)."""
STREAM_MAX_FILTERS = LAMBDA_MAX_FILTERS
"""Lambda's default quota of filters per event source mapping."""
STREAM_MAX_CONSUMERS = 2
"""Readers per DynamoDB stream before its shards throttle them (AWS's advice)."""
STREAM_RETENTION = 86_400
"""Seconds a DynamoDB stream keeps a record: a mapping's maximum record age stays under it."""


class GuardrailError(TaskhopError, ValueError):
    """Deployment parameters that break a guardrail; the message says which and why."""


def check_parameters(parameters: Mapping[str, Any]) -> None:
    """Raise ``GuardrailError`` unless the parameters keep every guardrail.

    Keys are the SAM template's parameter names (``FunctionTimeout``, ``VisibilityTimeout``,
    ``MaxReceiveCount``); a missing one takes the template's default.
    """
    timeout = int(parameters.get("FunctionTimeout", 30))
    visibility = int(parameters.get("VisibilityTimeout", VISIBILITY_FACTOR * 30))
    receives = int(parameters.get("MaxReceiveCount", DEFAULT_RECEIVES))
    if timeout > LAMBDA_MAX_TIMEOUT:
        raise GuardrailError(
            f"FunctionTimeout {timeout}s is over Lambda's {LAMBDA_MAX_TIMEOUT}s maximum"
        )
    if visibility > SQS_MAX_VISIBILITY:
        raise GuardrailError(
            f"VisibilityTimeout {visibility}s is over SQS's {SQS_MAX_VISIBILITY}s (12 h) maximum"
        )
    if visibility < VISIBILITY_FACTOR * timeout:
        raise GuardrailError(
            f"VisibilityTimeout {visibility}s is under {VISIBILITY_FACTOR}x FunctionTimeout"
            f" ({VISIBILITY_FACTOR * timeout}s): a batch still running would be delivered again"
        )
    if receives < MIN_RECEIVES:
        raise GuardrailError(
            f"MaxReceiveCount {receives} is under {MIN_RECEIVES}: throttled batches would reach"
            " the DLQ without a real failure"
        )
    if str(parameters.get("Fifo", "false")).lower() == "true":
        batch = int(parameters.get("BatchSize", SQS_FIFO_MAX_BATCH))
        if batch > SQS_FIFO_MAX_BATCH:
            raise GuardrailError(
                f"BatchSize {batch} is over the {SQS_FIFO_MAX_BATCH} records a batch from a"
                " FIFO queue may hold"
            )
        if int(parameters.get("BatchingWindow", 0)):
            raise GuardrailError("BatchingWindow must be 0 on a FIFO queue (Lambda has none)")


def check_subscriptions(filter_policies: Sequence[Mapping[str, Sequence[Any]]]) -> None:
    """Raise ``GuardrailError`` unless one topic can hold these subscriptions' filter policies."""
    if len(filter_policies) > SNS_MAX_SUBSCRIPTIONS:
        raise GuardrailError(
            f"{len(filter_policies)} subscribing tasks, over SNS's {SNS_MAX_SUBSCRIPTIONS}"
            " filter policies per topic: split the app into several workers"
        )
    for policy in filter_policies:
        values = sum(len(v) for v in policy.values())
        if values > SNS_MAX_FILTER_VALUES:
            raise GuardrailError(
                f"a filter policy of {values} values, over SNS's {SNS_MAX_FILTER_VALUES}:"
                " subscribe the task to fewer events"
            )


def check_stream_mapping(properties: Mapping[str, Any]) -> None:
    """Raise ``GuardrailError`` unless a stream's event source mapping keeps the guardrails.

    ``properties`` are the ``AWS::Lambda::EventSourceMapping`` resource's.
    """
    source = properties.get("EventSourceArn")
    retries = properties.get("MaximumRetryAttempts")
    if not isinstance(retries, int) or not 0 <= retries <= 10_000:
        raise GuardrailError(
            f"stream mapping {source}: MaximumRetryAttempts must be finite (0..10000), got"
            f" {retries!r}: unbounded retries hold the shard until the record expires"
        )
    age = properties.get("MaximumRecordAgeInSeconds")
    if not isinstance(age, int) or not 60 <= age < STREAM_RETENTION:
        raise GuardrailError(
            f"stream mapping {source}: MaximumRecordAgeInSeconds must be 60..{STREAM_RETENTION - 1}"
            f" (the stream keeps records {STREAM_RETENTION}s), got {age!r}"
        )
    on_failure = properties.get("DestinationConfig", {}).get("OnFailure", {})
    if not on_failure.get("Destination"):
        raise GuardrailError(
            f"stream mapping {source}: no on-failure destination, so a record given up on"
            " leaves no trace"
        )
    if "ReportBatchItemFailures" not in properties.get("FunctionResponseTypes", []):
        raise GuardrailError(
            f"stream mapping {source}: FunctionResponseTypes must include"
            " ReportBatchItemFailures (the worker reports the first failing record)"
        )
    if properties.get("BisectBatchOnFunctionError", False) is not False:
        raise GuardrailError(
            f"stream mapping {source}: BisectBatchOnFunctionError must be off: bisecting"
            " re-runs records that succeeded"
        )
    filters = properties.get("FilterCriteria", {}).get("Filters", [])
    if len(filters) > STREAM_MAX_FILTERS:
        raise GuardrailError(
            f"stream mapping {source}: {len(filters)} filters, over Lambda's quota of"
            f" {STREAM_MAX_FILTERS} per event source mapping: merge the table's triggers'"
            " where= filters, or ask AWS to raise the quota"
        )


def check_stream_consumers(consumers: Mapping[str, int]) -> None:
    """Raise ``GuardrailError`` if a stream (by table) would have more than 2 readers."""
    for table, count in consumers.items():
        if count > STREAM_MAX_CONSUMERS:
            raise GuardrailError(
                f"table {table!r}: {count} consumers of its stream, over"
                f" {STREAM_MAX_CONSUMERS}: DynamoDB throttles a shard's further readers"
            )
