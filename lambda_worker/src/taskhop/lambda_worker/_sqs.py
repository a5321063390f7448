"""One SQS batch from Lambda's event source mapping, processed record by record.

The answer follows AWS's partial batch response rules (``ReportBatchItemFailures``): the
ids in ``batchItemFailures`` stay on the queue, every other record is deleted by Lambda. What
each outcome means for its record is decided by ``taskhop.sdk.queue_actions``; this module
only carries the actions out:

- A retry changes the record's visibility to the backoff delay (ChangeMessageVisibility) and
  is reported failed; SQS's ``ApproximateReceiveCount`` is the attempt number.
- A job not yet due (``not_before``) is re-sent as a new message delayed up to 900 s, and the
  original is deleted, so waiting does not use attempts. FIFO queues take no per-message
  delay: there the record's visibility is extended instead, which also holds its group (a
  wait over 12 h re-sends a fresh copy to its group after one hide).
- Dead letters (attempts exhausted, poison) are sent with their classification to the DLQ:
  ``dlq_url`` when given, else the DLQ of the source queue's own redrive policy. Only a queue
  with neither keeps its dead letters (reported failed, logged as an error each receive).
  A job whose dead letter did not reach a DLQ is dead-lettered again at its next receive.
- FIFO: after the first failure in a message group the rest of that group is reported
  failed unprocessed, to keep order; other groups go on.
- Records left when the invocation is about to time out are reported failed unprocessed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from taskhop.sdk import App, BatchItem, BatchRunner, Outcome, queue_actions

from ._events import event_job_body
from ._logs import emit_job, emit_metrics

__all__ = ["process_sqs_batch"]

_log = logging.getLogger("taskhop.lambda")


def process_sqs_batch(
    app: App,
    event: dict[str, Any],
    *,
    deadline: float | None,
    sqs: Callable[[], Any],
    queue_url: Callable[[str], str],
    dlq_url: Callable[[str], str | None],
    runner: BatchRunner | None = None,
) -> dict[str, list[dict[str, str]]]:
    """Process a Lambda SQS event; return the partial batch response.

    ``dlq_url(source_arn)`` is the DLQ for records of that queue, or None if it has none.
    ``runner`` overlaps the jobs' round trips (see ``taskhop.sdk.BatchRunner``); without one
    the records run one after another.
    """
    records: list[dict[str, Any]] = event["Records"]
    items = [_item(app, record) for record in records]
    record_of = {id(item): record for item, record in zip(items, records, strict=True)}
    outcomes: list[Outcome] = []

    def settle(item: BatchItem, outcome: Outcome) -> bool:
        outcomes.append(outcome)
        emit_job(outcome, source="sqs", message_id=item.name)
        return _settle(record_of[id(item)], outcome, item.attempt or 1, sqs, queue_url, dlq_url)

    runner = runner or BatchRunner(app.worker(), concurrency=1)
    done = runner.run(items, settle, deadline=deadline)
    emit_metrics(outcomes)
    failures = [item.name for item, ok in zip(items, done, strict=True) if not ok]
    return {"batchItemFailures": [{"itemIdentifier": i} for i in failures]}


def _item(app: App, record: dict[str, Any]) -> BatchItem:
    attributes = record.get("attributes", {})
    header = attributes.get("AWSTraceHeader")  # X-Ray, via SQS
    return BatchItem(
        name=record["messageId"],
        body=event_job_body(app, record),  # an event on a subscriber's queue: its job
        attempt=int(attributes.get("ApproximateReceiveCount", "1")),
        lane=attributes.get("MessageGroupId"),  # FIFO: a group waits for its failure
        trace={"xray": header} if isinstance(header, str) and header else None,
    )


def _settle(
    record: dict[str, Any],
    outcome: Outcome,
    receives: int,
    sqs: Callable[[], Any],
    queue_url: Callable[[str], str],
    dlq_url: Callable[[str], str | None],
) -> bool:
    """Carry out the record's queue actions; True when Lambda may delete it.

    The sends happen here, before the answer, and a record whose copy was sent (to the DLQ, or
    re-sent for later) is deleted at once; every other delete is Lambda's, after the answer. A
    record is only ever deleted once its dead letter or re-sent copy is on a queue.
    """
    source = record["eventSourceARN"]
    fifo = source.endswith(".fifo")
    dlq = dlq_url(source) if outcome.dead_letter else None
    actions = queue_actions(outcome, has_dlq=dlq is not None, fifo=fifo, receives=receives)
    if not outcome.dead_letter and actions.resend_after is None and actions.hide_for is None:
        return actions.delete  # the common case: nothing to send or hide
    if actions.dead_letter is not None and dlq is not None:
        _send_dead_letter(record, outcome.job_id, actions.dead_letter, sqs(), dlq)
    elif outcome.dead_letter:
        _log.error(
            "job %s belongs in a dead-letter queue (%s), but its queue has none (no dlq_url,"
            " no redrive policy): the message stays on the queue",
            outcome.job_id,
            outcome.reason,
            extra={"job_id": outcome.job_id, "reason": outcome.reason},
        )
    if actions.delay_seconds is not None:
        entry: dict[str, Any] = {"QueueUrl": queue_url(source), "MessageBody": record["body"]}
        if fifo:  # no per-message delay on FIFO; the copy joins the back of its group
            entry["MessageGroupId"] = record.get("attributes", {}).get("MessageGroupId", "")
            entry["MessageDeduplicationId"] = f"{record['messageId']}-deferred"
        else:
            entry["DelaySeconds"] = actions.delay_seconds
        sqs().send_message(**entry)
    if actions.delete and (actions.dead_letter is not None or actions.delay_seconds is not None):
        _delete_now(
            record,
            lambda: sqs().delete_message(
                QueueUrl=queue_url(source), ReceiptHandle=record["receiptHandle"]
            ),
        )
    if actions.visibility_timeout is not None:
        sqs().change_message_visibility(
            QueueUrl=queue_url(source),
            ReceiptHandle=record["receiptHandle"],
            VisibilityTimeout=actions.visibility_timeout,
        )
    return actions.delete


def _delete_now(record: dict[str, Any], delete: Callable[[], Any]) -> None:
    """Delete a record whose copy was just sent elsewhere, without waiting for the batch's end.

    Lambda deletes the record too once the batch answers, but a crash later in the batch
    would bring it back, to be sent a second time. If this delete fails, Lambda's remains:
    even finding the queue's URL happens inside, since failing the record now would bring it
    back to be sent again.
    """
    try:
        delete()
    except Exception:
        _log.warning("could not delete record %s now; Lambda deletes it", record["messageId"])


def _send_dead_letter(
    record: dict[str, Any], job_id: str | None, reason: str, client: Any, dlq_url: str
) -> None:
    attributes = {"taskhop-reason": {"DataType": "String", "StringValue": reason}}
    if job_id is not None:
        attributes["taskhop-job-id"] = {"DataType": "String", "StringValue": job_id}
    entry: dict[str, Any] = {
        "QueueUrl": dlq_url,
        "MessageBody": record["body"],
        "MessageAttributes": attributes,
    }
    if dlq_url.endswith(".fifo"):
        entry["MessageGroupId"] = record.get("attributes", {}).get("MessageGroupId", "dead-letters")
        entry["MessageDeduplicationId"] = record["messageId"]
    client.send_message(**entry)
