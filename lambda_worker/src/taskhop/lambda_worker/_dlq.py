"""Reading and redriving a dead-letter queue (``taskhop dlq``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal, cast

from taskhop.sdk import MAX_RESTARTS, JobStatus, JobStore
from taskhop.static_contracts import Envelope

__all__ = ["Decision", "decide", "peek", "redrive", "restart_token"]


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


Decision = Literal[
    "rerun", "already_redriven", "duplicate", "already_succeeded", "in_progress",
    "restart_limit", "not_a_job", "other_task",
]  # fmt: skip
"""What ``redrive`` does with one letter. It sends ``rerun`` letters, then deletes them; it
deletes ``already_redriven`` and ``duplicate`` letters (their job was queued to run before,
by this letter or by another of the same job); every other letter stays in the DLQ."""
_SENT = frozenset({"rerun"})
_DELETED = frozenset({"rerun", "already_redriven", "duplicate"})


def restart_token(message_id: str) -> str:
    """The restart token of a dead letter: one per letter, the same on every redrive.

    A redrive whose delete failed (or that stopped between its send and its delete) leaves
    the letter in the DLQ; the next redrive sends it with the same token, so the worker runs
    the restart once and drops the second copy (``stale_restart``).
    """
    return uuid.uuid5(uuid.NAMESPACE_URL, f"taskhop-dlq:{message_id}").hex


def decide(
    message: dict[str, Any],
    *,
    task: str | None,
    store: JobStore | None,
    rerun: set[str],
) -> tuple[Decision, str, Envelope | None]:
    """What to do with one letter and why, and the envelope to send if it is sent.

    ``rerun`` holds the jobs this redrive already sent: a second letter of one of them is
    a ``duplicate``.
    """
    try:
        envelope = Envelope.decode(message["Body"])
    except Exception as exc:  # EnvelopeError: a body no worker would run
        return "not_a_job", f"not a taskhop envelope ({type(exc).__name__})", None
    if task is not None and envelope.task != task:
        return "other_task", f"a job of {envelope.task!r}, not {task!r}", None
    if envelope.id in rerun:
        return "duplicate", "another letter of this job was sent by this redrive", None
    fresh = envelope.replace(attempt=1, not_before=None, restart=None)
    if store is None:
        return "rerun", "no job store: sent as a fresh attempt 1 (the worker keeps no state)", fresh
    token = restart_token(message["MessageId"])
    record = store.get(envelope.id)
    if record is None:
        return (
            "rerun",
            "the store has no record of the job: it runs as new",
            fresh.replace(restart=token),
        )
    if token in record.restart_tokens:
        return "already_redriven", "an earlier redrive sent this letter (its delete failed)", None
    if record.status is JobStatus.SUCCEEDED:
        return "already_succeeded", "the job succeeded since: nothing to run again", None
    if not record.status.is_final:
        return "in_progress", f"the job is {record.status.value}: it is already queued", None
    if len(record.restarts) >= MAX_RESTARTS:
        return "restart_limit", f"the job was restarted {MAX_RESTARTS} times already", None
    why = f"the job is {record.status.value}: restarted on its record with a fresh budget"
    return "rerun", why, fresh.replace(restart=token)


def redrive(
    sqs: Any,
    dlq_url: str,
    queue_url: str,
    *,
    task: str | None = None,
    dry_run: bool = False,
    store: JobStore | None = None,
    report: Callable[[dict[str, Any]], None] = lambda letter: None,
) -> dict[str, int]:
    """Send dead letters back to ``queue_url`` to run again; returns the count per decision.

    Each letter is decided by ``decide`` and reported (``report``: message id, job id,
    task, decision, why). A letter is deleted only after its job was queued to run: its
    copy was sent (``rerun``), by this redrive or an earlier one, and a failed send deletes
    nothing. With ``store`` a letter goes back with a restart token (``restart_token``), so
    the worker restarts the job on its record and a copy sent twice runs once; without one
    it goes back as attempt 1. ``dry_run`` decides and reports, and changes nothing.
    """
    counts: dict[str, int] = {}
    seen: set[str] = set()
    rerun: set[str] = set()
    while True:
        batch = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=30,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        for message in [m for m in batch if m["MessageId"] in seen]:
            _release(sqs, dlq_url, message)  # decided already and left alone: visible again
        batch = [m for m in batch if m["MessageId"] not in seen]
        if not batch:
            break
        for message in batch:
            seen.add(message["MessageId"])
            decision, why, envelope = decide(message, task=task, store=store, rerun=rerun)
            info = describe(message)
            report({**info, "decision": decision, "why": why})
            counts[decision] = counts.get(decision, 0) + 1
            if dry_run or decision not in _DELETED:
                if dry_run and decision in _SENT and info["job_id"] is not None:
                    rerun.add(str(info["job_id"]))
                _release(sqs, dlq_url, message)
                continue
            if envelope is not None:
                try:
                    sqs.send_message(QueueUrl=queue_url, MessageBody=envelope.encode().decode())
                except Exception:
                    _release(sqs, dlq_url, message)  # not queued: the letter stays
                    raise
                rerun.add(envelope.id)
            try:
                sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            except Exception:
                # Queued, but still a letter: the next redrive finds it again and sends it
                # with the same token (or sees the restart began), so it runs once.
                _release(sqs, dlq_url, message)
                raise
    return counts


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
