"""Test support: a small stand-in for Lambda's SQS event source mapping.

It receives a batch, runs each message through the app's worker and applies the outcome the
way the Lambda runtime will: delete on a final outcome, change visibility for a retry or a
deferral, send to the DLQ then delete for a dead letter. The real runtime and its local
emulation belong to ``lambda_worker``; this exists so backend tests can run jobs end to end.
"""

from __future__ import annotations

import math
import time
from typing import Any

from sdk import App, OutcomeKind


class SqsPoller:
    """Receive, process and settle messages of one queue until it is drained."""

    def __init__(self, app: App, url: str, client: Any, *, dlq_url: str | None = None) -> None:
        self.app = app
        self.url = url
        self.client = client
        self.dlq_url = dlq_url
        self.outcomes: list[OutcomeKind] = []

    def run_once(self) -> int:
        answer = self.client.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages = answer.get("Messages", [])
        for message in messages:
            attempt = int(message["Attributes"]["ApproximateReceiveCount"])
            outcome = self.app.worker().process(message["Body"], attempt=attempt)
            self.outcomes.append(outcome.kind)
            if outcome.dead_letter and self.dlq_url:
                self.client.send_message(QueueUrl=self.dlq_url, MessageBody=message["Body"])
            receipt = message["ReceiptHandle"]
            if outcome.kind is OutcomeKind.DEFERRED and outcome.envelope is not None:
                # Not due yet: a new message (delayed up to 900 s by SqsQueue) replaces this
                # one, so the receive count, which is the attempt number, does not grow.
                self.app.transport.send(outcome.envelope)
                self.client.delete_message(QueueUrl=self.url, ReceiptHandle=receipt)
            elif outcome.acknowledged:
                self.client.delete_message(QueueUrl=self.url, ReceiptHandle=receipt)
            else:
                wait = min(43_200, math.ceil(outcome.retry_after or 0))  # SQS: 12 h at most
                self.client.change_message_visibility(
                    QueueUrl=self.url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=wait,
                )
        return len(messages)

    def drain(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run_once():
                continue
            attrs = self.client.get_queue_attributes(
                QueueUrl=self.url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            if not any(int(v) for v in attrs.values()):
                return
            time.sleep(0.05)
        raise TimeoutError(f"queue {self.url} not drained after {timeout}s")
