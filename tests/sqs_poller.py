"""Test support: a small stand-in for Lambda's SQS event source mapping.

It receives a batch, runs each message through the app's worker and applies the outcome the
way the Lambda runtime will: delete on a final outcome, change visibility for a retry or a
deferral, send to the DLQ then delete for a dead letter. The real runtime and its local
emulation belong to ``lambda_worker``; this exists so backend tests can run jobs end to end.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from taskhop.sdk import App, OutcomeKind


class SqsPoller:
    """Receive, process and settle messages of one queue until it is drained."""

    def __init__(self, app: App, url: str, client: Any, *, dlq_url: str | None = None) -> None:
        self.app = app
        self.url = url
        self.client = client
        self.dlq_url = dlq_url
        self.outcomes: list[OutcomeKind] = []
        self._busy = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
                reason = {"DataType": "String", "StringValue": outcome.reason or outcome.kind}
                self.client.send_message(
                    QueueUrl=self.dlq_url,
                    MessageBody=message["Body"],
                    MessageAttributes={"taskhop-reason": reason},
                )
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

    def start(self) -> None:
        """Poll in a background thread until ``stop``."""

        def loop() -> None:
            while not self._stop.is_set():
                self._busy.set()
                try:
                    got = self.run_once()
                finally:
                    self._busy.clear()
                if not got:
                    self._stop.wait(0.02)

        self._thread = threading.Thread(target=loop, name="sqs-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def empty(self) -> bool:
        """No message queued, delayed or in flight."""
        attrs = self.client.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return not any(int(v) for v in attrs.values())

    def idle(self) -> bool:
        """The queue is empty and the poller is between batches."""
        return self.empty() and not self._busy.is_set()

    def join(self, timeout: float = 20.0) -> None:
        """Wait until the background poller has drained the queue."""
        deadline = time.monotonic() + timeout
        while not (self.idle() and self.idle()):  # twice: a batch may start between reads
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue {self.url} not drained after {timeout}s")
            time.sleep(0.05)

    def drain(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run_once():
                continue
            if self.empty():
                return
            time.sleep(0.05)
        raise TimeoutError(f"queue {self.url} not drained after {timeout}s")


@dataclass(frozen=True)
class DeadLetter:
    """A DLQ message: what the memory backend's ``DeadLetter`` says, read back from SQS."""

    body: bytes
    reason: str
    job_id: str | None


class AwsHarness:
    """``MemoryHarness``'s shape over SQS and DynamoDB, for the shared behaviour suite."""

    def __init__(self, poller: SqsPoller, store: Any) -> None:
        self.poller = poller
        self.store = store

    def join(self, timeout: float = 20.0) -> None:
        self.poller.join(timeout)

    @property
    def pending(self) -> int:
        attrs = self.poller.client.get_queue_attributes(
            QueueUrl=self.poller.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())

    @property
    def dead_letters(self) -> list[DeadLetter]:
        import json

        assert self.poller.dlq_url is not None
        # One look, leaving the messages visible (tests read this more than once).
        batch = self.poller.client.receive_message(
            QueueUrl=self.poller.dlq_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        letters: list[DeadLetter] = []
        for message in batch:
            reason = message["MessageAttributes"]["taskhop-reason"]["StringValue"]
            body = message["Body"].encode()
            letters.append(DeadLetter(body, reason, json.loads(body).get("id")))
        return letters

    def records(self) -> list[Any]:
        items = self.store.client.scan(TableName=self.store.table)["Items"]
        return [self.store._record(i) for i in items if i["pk"]["S"].startswith("job#")]
