"""Reading and redriving a dead-letter queue (``taskhop dlq``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, cast

__all__ = ["peek", "redrive"]


def peek(sqs: Any, dlq_url: str, *, limit: int = 100) -> Iterator[dict[str, Any]]:
    """Dead letters as dicts (message id, job id, task, reason), left on the queue."""
    seen: set[str] = set()
    for _ in range(max(1, limit // 10) + 2):
        batch = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        fresh = [m for m in batch if m["MessageId"] not in seen]
        if not fresh:
            return
        for message in fresh:
            seen.add(message["MessageId"])
            yield describe(message)
            if len(seen) >= limit:
                return


def redrive(
    sqs: Any,
    dlq_url: str,
    queue_url: str,
    *,
    task: str | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] = lambda n: None,
) -> int:
    """Move dead letters back to ``queue_url``; bodies that are not jobs stay where they are.

    Each message is sent to the queue before it is deleted from the DLQ, so a crash in
    between duplicates a job (which the worker's conditional writes absorb) but never loses one.
    """
    moved = 0
    skipped: set[str] = set()
    while True:
        batch = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=30,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        for message in [m for m in batch if m["MessageId"] in skipped]:
            _release(sqs, dlq_url, message)  # seen already and left alone: visible again
        batch = [m for m in batch if m["MessageId"] not in skipped]
        if not batch:
            break
        for message in batch:
            info = describe(message)
            if info["task"] is None or (task is not None and info["task"] != task) or dry_run:
                skipped.add(message["MessageId"])
                _release(sqs, dlq_url, message)
                if dry_run and info["task"] is not None and task in (None, info["task"]):
                    moved += 1
                    progress(moved)
                continue
            sqs.send_message(QueueUrl=queue_url, MessageBody=message["Body"])
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
            progress(moved)
    return moved


def _release(sqs: Any, dlq_url: str, message: dict[str, Any]) -> None:
    sqs.change_message_visibility(
        QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )


def describe(message: dict[str, Any]) -> dict[str, Any]:
    """What a dead letter is: its job and task if the body is an envelope, and why it died."""
    attributes = message.get("MessageAttributes", {})
    reason = attributes.get("taskhop-reason", {}).get("StringValue")
    try:
        body: Any = json.loads(message["Body"])
    except ValueError:
        body = None
    envelope: dict[str, Any] = {}
    if isinstance(body, dict) and "taskhop" in body:
        envelope = cast("dict[str, Any]", body)
    return {
        "message_id": message["MessageId"],
        "job_id": envelope.get("id"),
        "task": envelope.get("task"),
        "reason": reason or ("redriven by the queue" if envelope else "not a taskhop job"),
    }
