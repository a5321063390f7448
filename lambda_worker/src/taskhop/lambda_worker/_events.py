"""Event deliveries on a subscriber's queue, turned into that subscriber's job.

An SNS topic fans each event out to one SQS queue per subscribing task (raw delivery: the
message body is the event envelope). Which subscriber a record is for comes from its queue's
name, ``subscriber_queue_name(task, prefix)``, the rule infra names the queues by. The job is
``taskhop.sdk.delivery_envelope``: derived from the event's id and the subscriber only, so every
delivery of one event (SNS retries, SQS redeliveries, a producer's retry) is the same job and
runs once; attempts still come from the record's receive count.

A record this cannot turn into a job (a malformed event envelope, a queue no subscriber of this
app is named by) keeps its body: the worker refuses it as poison, which is recorded and
dead-lettered like any other bad message.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any, cast

from taskhop.sdk import App, EnvelopeError, delivery_envelope
from taskhop.static_contracts import DEFAULT_QUEUE_PREFIX, EventEnvelope, subscriber_queue_name

__all__ = [
    "DEFAULT_QUEUE_PREFIX",
    "PREFIX_VARIABLE",
    "event_job_body",
    "subscriber_queue_name",
]

_log = logging.getLogger("taskhop.lambda")

PREFIX_VARIABLE = "TASKHOP_EVENT_QUEUE_PREFIX"


def event_job_body(app: App, record: Mapping[str, Any]) -> str | bytes:
    """The body the worker runs for an SQS record: the subscriber's job for an event envelope.

    Any other body (a job envelope, or anything else) is returned as it came.
    """
    body: str = record["body"]
    if '"taskhop_event"' not in body:  # a job envelope: the common case, no parse
        return body
    try:
        data: Any = json.loads(body)
    except ValueError:
        return body  # not JSON: the worker's decode reports it
    if not isinstance(data, dict) or "taskhop_event" not in data:
        return body
    queue = str(record.get("eventSourceARN", "")).rsplit(":", 1)[-1].removesuffix(".fifo")
    try:
        event = EventEnvelope.from_dict(cast(object, data))
    except EnvelopeError as exc:  # the message names the field, never a payload value
        _refused(record, queue, f"not a valid event envelope ({exc})")
        return body
    subscriber = _subscribers(app).get(queue)
    if subscriber is None:
        _refused(record, queue, f"event {event.name!r}: no subscriber of this app reads {queue}")
        return body
    try:
        return delivery_envelope(app, event, subscriber).encode()
    except Exception as exc:  # one record's trouble never fails the batch's others
        _refused(record, queue, f"event {event.name!r}: {type(exc).__name__}: {exc}")
        return body


def _subscribers(app: App) -> dict[str, str]:
    """Queue name -> subscriber task; two tasks named alike (``a.b`` and ``a-b``) get none."""
    prefix = os.environ.get(PREFIX_VARIABLE, DEFAULT_QUEUE_PREFIX)
    found: dict[str, str] = {}
    clashes: set[str] = set()
    for task in app.events.subscriptions:
        name = subscriber_queue_name(task, prefix)
        if name in found:
            clashes.add(name)
        found[name] = task
    for name in clashes:
        del found[name]
    return found


def _refused(record: Mapping[str, Any], queue: str, why: str) -> None:
    _log.error(
        "SQS record %s on %s cannot be delivered as an event: %s; left to the worker as poison",
        record.get("messageId"),
        queue,
        why,
        extra={"message_id": record.get("messageId"), "queue": queue},
    )
