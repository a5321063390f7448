"""Lambda's SQS event source mapping, emulated: run a worker locally against a real queue.

``LocalEventSourceMapping`` polls the way the managed poller does: long polling, a batch size
and a batching window, the queue's visibility timeout, events built record for record like
Lambda's, the same handler function called with a Lambda-like context, partial batch
responses (records not reported failed are deleted), and redrive to the DLQ after
``maxReceiveCount``, which SQS itself applies from the queue's redrive policy. A failed poll
(SQS unreachable, throttled past botocore's retries) is logged and retried with backoff, as
the managed poller does. SIGTERM and SIGINT finish the batch in flight, then stop polling.

``concurrency`` runs that many invocations at once, as Lambda scales a function out: each
poller gathers a batch of its own and invokes the handler with it, the way Lambda's
concurrent pollers each feed one execution environment. Here they are threads of one process
sharing one handler, which the runtime allows (the worker keeps an event loop per thread and
stops handlers at their deadline from any thread). SQS keeps a message from two pollers at
once (visibility), and a FIFO queue gives out no more of a message group while one of its
messages is in flight, so per-group order holds across pollers as it does on Lambda.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from taskhop.sdk import configure_logging

__all__ = ["LocalContext", "LocalEventSourceMapping"]

_log = logging.getLogger("taskhop.local")


@dataclass
class LocalContext:
    """A Lambda-like context: the remaining time counts down from ``timeout`` seconds."""

    timeout: float = 30.0
    function_name: str = "taskhop-local-worker"
    memory_limit_in_mb: int = 128
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before this invocation's timeout."""
        return max(0, int((self.timeout - (time.monotonic() - self.started)) * 1000))


class LocalEventSourceMapping:
    """Poll ``queue_url`` and feed batches to ``handler`` as Lambda would.

    Args:
        handler: the Lambda handler (``make_handler(app)``).
        queue_url: the queue to poll.
        client: a boto3 SQS client.
        batch_size: records per invocation (Lambda: 1-10 for standard polling).
        batching_window: seconds to keep gathering records before invoking (Lambda's
            MaximumBatchingWindowInSeconds).
        wait_time: long-poll seconds per ReceiveMessage (20 at most, as on AWS).
        function_timeout: the remaining time the context starts with.
        concurrency: invocations at once, each with its own batch (Lambda scales a function
            to many; 1 polls and invokes in the calling thread).

    """

    def __init__(
        self,
        handler: Callable[[dict[str, Any], Any], Any],
        queue_url: str,
        client: Any,
        *,
        batch_size: int = 10,
        batching_window: float = 0.0,
        wait_time: int = 1,
        function_timeout: float = 30.0,
        concurrency: int = 1,
    ) -> None:
        if not 1 <= batch_size <= 10:
            raise ValueError(f"batch_size: 1..10, got {batch_size}")
        if concurrency < 1:
            raise ValueError(f"concurrency: 1 or more, got {concurrency}")
        self.handler = handler
        self.queue_url = queue_url
        self.client = client
        self.batch_size = batch_size
        self.batching_window = batching_window
        self.wait_time = min(20, max(0, wait_time))
        self.function_timeout = function_timeout
        self.concurrency = concurrency
        self.invocations = 0
        self._count = threading.Lock()  # pollers count their invocations in one place
        self._stop = threading.Event()
        attrs = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        self.queue_arn = attrs["Attributes"]["QueueArn"]
        self.region = self.queue_arn.split(":")[3]

    def stop(self) -> None:
        """Stop after the batch in flight."""
        self._stop.set()

    def run(self, *, install_signals: bool = True, idle_exit: float | None = None) -> None:
        """Poll until ``stop()`` (or a signal, or ``idle_exit`` seconds with nothing to do).

        Logging is set up as Lambda's runtime would have it (``configure_logging``): job and
        taskhop lines on stderr, unless the process configured logging itself.
        """
        configure_logging()
        if install_signals and threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, frame: Any) -> None:
                self.stop()

            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, on_signal)
        if self.concurrency == 1:
            self._poll(idle_exit)
            return
        pollers = [
            threading.Thread(target=self._poll, args=(idle_exit,), name=f"local-poller-{n}")
            for n in range(self.concurrency)
        ]
        for poller in pollers:
            poller.start()
        try:
            for poller in pollers:
                while poller.is_alive():
                    poller.join(0.1)  # short waits: the main thread must still see signals
        except BaseException:  # KeyboardInterrupt, say: the batches in flight finish first
            self.stop()
            for poller in pollers:
                poller.join()
            raise

    def _poll(self, idle_exit: float | None) -> None:
        """One poller: gather a batch, invoke, delete; until stopped or idle for ``idle_exit``."""
        idle_since = time.monotonic()
        failures = 0
        while not self._stop.is_set():
            try:
                got = self.poll_once()
            except Exception:  # SQS unreachable or throttled past botocore's retries
                failures += 1
                _log.exception("polling failed; trying again (%d in a row)", failures)
                self._stop.wait(min(20.0, 0.5 * 2 ** min(failures, 6)))
                continue  # the messages of a failed poll come back after their visibility
            failures = 0
            if got:
                idle_since = time.monotonic()
            elif idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                return

    def poll_once(self) -> int:
        """Gather one batch and invoke the handler with it; return how many records."""
        messages = self._gather()
        if not messages:
            return 0
        event = {"Records": [self._record(m) for m in messages]}
        with self._count:
            self.invocations += 1
        answer = self.handler(event, LocalContext(timeout=self.function_timeout))
        response: dict[str, Any] = answer or {}
        reported: list[dict[str, str]] = response.get("batchItemFailures", [])
        failed = {f["itemIdentifier"] for f in reported}
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            entries: Any = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(done[start : start + 10])
            ]
            answer = self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            for failure in answer.get("Failed", []):  # it will be delivered again: harmless
                _log.warning("could not delete message: %s", failure.get("Message"))
        return len(messages)

    def _gather(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        window_ends = time.monotonic() + self.batching_window
        while len(messages) < self.batch_size and not self._stop.is_set():
            answer = self.client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=self.batch_size - len(messages),
                WaitTimeSeconds=0 if messages else self.wait_time,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            got = answer.get("Messages", [])
            known = {m["MessageId"] for m in messages}
            messages += [m for m in got if m["MessageId"] not in known]  # visibility 0 repeats
            if not got and (not messages or time.monotonic() >= window_ends):
                break
            if messages and time.monotonic() >= window_ends:
                break
        return messages

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        """One record shaped like Lambda's SQS event record."""
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": {
                name: {
                    "stringValue": value.get("StringValue"),
                    "dataType": value.get("DataType"),
                    "stringListValues": [],
                    "binaryListValues": [],
                }
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message.get("MD5OfBody"),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.region,
        }
