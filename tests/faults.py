"""A deterministic SQS + Lambda event source mapping, and a fault injector, for the fault matrix.

``SimSqs`` keeps SQS's rules that decide whether a job survives: visibility timeouts,
receive counts, redrive to the DLQ after ``maxReceiveCount``, per-message delays, FIFO groups
(one message of a group in flight at a time, in order) and FIFO deduplication ids. It answers
the calls the shipped Lambda runtime makes (``send_message``, ``change_message_visibility``,
``get_queue_url``, ``get_queue_attributes``), so the matrix runs the real ``make_handler``
over it. ``Esm`` plays Lambda's poller: receive a batch, invoke, delete what was not
reported failed. Time is a ``FakeClock`` patched into the modules that read the clock, so a
lease of 930 s passes in no time and every run is the same run.

``Faults`` wraps the job store, the payload store and the SQS client: the n-th call of one
named operation is made to fail (before it happens), to lose its answer (it happens, the
caller sees an error) or to crash the process right after it (``Crash``, a BaseException
nothing in taskhop catches: the invocation dies, the batch is neither answered nor deleted).
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from taskhop.sdk import StoreError, static_contract

ATTEMPTS = 3
"""Runs a fault-suite job may have (its retry policy's attempts)."""


class Work(TypedDict):
    """A fault-suite job: what it is meant to do (``plan``) and a number it returns."""

    plan: str
    n: int


class Done(TypedDict):
    n: int


def work_task(name: str, *, delay: float) -> Any:
    """The fault suites' contract: ``ATTEMPTS`` attempts, a fixed backoff of ``delay``."""
    retry = {"attempts": ATTEMPTS, "delay": delay, "jitter": False}
    return static_contract(name, input=Work, output=Done, retry=retry)


ACCOUNT = "123456789012"
REGION = "us-east-1"


class Crash(BaseException):
    """The worker process dies here: nothing after this point runs."""


class InjectedFault(Exception):
    """A call that failed (a throttle, a timeout, a refused connection)."""


# -- the clock -------------------------------------------------------------------------------


class FakeClock:
    """``time`` for the modules under test: ``sleep`` advances it, nothing else does."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


# -- SQS -------------------------------------------------------------------------------------


@dataclass
class _Message:
    id: str
    body: str
    seq: int
    visible_at: float
    group: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    receives: int = 0
    receipt: str | None = None


@dataclass
class _Queue:
    name: str
    fifo: bool
    visibility: float
    redrive: tuple[str, int] | None  # (dlq name, maxReceiveCount)
    messages: list[_Message] = field(default_factory=list)
    dedup: dict[str, float] = field(default_factory=dict)

    @property
    def arn(self) -> str:
        return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{self.name}"

    @property
    def url(self) -> str:
        return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{self.name}"


class SimSqs:
    """The SQS behaviour a job's survival depends on, on a fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.queues: dict[str, _Queue] = {}
        self._ids = itertools.count(1)

    def create(
        self,
        name: str,
        *,
        visibility: float = 60.0,
        redrive_to: str | None = None,
        max_receives: int = 5,
    ) -> str:
        """Make a queue (its name ending ``.fifo`` makes it FIFO); its URL."""
        queue = _Queue(
            name,
            name.endswith(".fifo"),
            visibility,
            None if redrive_to is None else (redrive_to, max_receives),
        )
        self.queues[queue.url] = queue
        return queue.url

    def queue(self, url: str) -> _Queue:
        return self.queues[url]

    # -- the boto3 calls the runtime makes ---------------------------------------------------

    def send_message(self, **kw: Any) -> dict[str, Any]:
        queue = self.queues[kw["QueueUrl"]]
        if queue.fifo:
            if "DelaySeconds" in kw:
                raise InjectedFault("InvalidParameterValue: DelaySeconds on a FIFO queue")
            group, dedup = kw["MessageGroupId"], kw["MessageDeduplicationId"]
            seen = queue.dedup.get(dedup)
            if seen is not None and self.clock.now - seen < 300:  # the 5-minute window
                return {"MessageId": "deduplicated"}
            queue.dedup[dedup] = self.clock.now
        else:
            group = None
        delay = float(kw.get("DelaySeconds", 0))
        if not 0 <= delay <= 900:
            raise InjectedFault(f"InvalidParameterValue: DelaySeconds {delay}")
        message_id = f"m{next(self._ids)}"
        queue.messages.append(
            _Message(
                message_id,
                kw["MessageBody"],
                next(self._ids),
                self.clock.now + delay,
                group,
                dict(kw.get("MessageAttributes") or {}),
            )
        )
        return {"MessageId": message_id}

    def change_message_visibility(self, **kw: Any) -> dict[str, Any]:
        message = self._by_receipt(kw["QueueUrl"], kw["ReceiptHandle"])
        timeout = float(kw["VisibilityTimeout"])
        if not 0 <= timeout <= 43_200:
            raise InjectedFault(f"InvalidParameterValue: VisibilityTimeout {timeout}")
        message.visible_at = self.clock.now + timeout
        return {}

    def delete_message(self, **kw: Any) -> dict[str, Any]:
        queue = self.queues[kw["QueueUrl"]]
        message = self._by_receipt(kw["QueueUrl"], kw["ReceiptHandle"])
        queue.messages.remove(message)
        return {}

    def get_queue_url(self, **kw: Any) -> dict[str, Any]:
        for queue in self.queues.values():
            if queue.name == kw["QueueName"]:
                return {"QueueUrl": queue.url}
        raise InjectedFault(f"AWS.SimpleQueueService.NonExistentQueue: {kw['QueueName']}")

    def get_queue_attributes(self, **kw: Any) -> dict[str, Any]:
        queue = self.queues[kw["QueueUrl"]]
        attributes: dict[str, str] = {"QueueArn": queue.arn}
        if queue.redrive is not None:
            dlq = next(q for q in self.queues.values() if q.name == queue.redrive[0])
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dlq.arn, "maxReceiveCount": queue.redrive[1]}
            )
        return {"Attributes": attributes}

    # -- what the poller does ----------------------------------------------------------------

    def receive(
        self, url: str, limit: int = 10, only: Callable[[str], bool] | None = None
    ) -> list[_Message]:
        """Receive up to ``limit`` visible messages, applying redrive as SQS does.

        ``only`` picks the bodies to consider (a test's way to aim a second poller at one
        message).
        """
        queue = self.queues[url]
        now = self.clock.now
        busy_groups = {m.group for m in queue.messages if m.group and m.visible_at > now}
        taken: list[_Message] = []
        for message in sorted(queue.messages, key=lambda m: m.seq):
            if len(taken) >= limit:
                break
            if message.visible_at > now or (only is not None and not only(message.body)):
                continue
            if queue.fifo and message.group in busy_groups:
                continue  # FIFO: a group waits for its message in flight
            if queue.redrive is not None and message.receives >= queue.redrive[1]:
                queue.messages.remove(message)  # SQS moves it at the receive that would exceed
                dlq = next(q for q in self.queues.values() if q.name == queue.redrive[0])
                message.visible_at, message.receives = now, 0
                dlq.messages.append(message)
                continue
            message.receives += 1
            message.receipt = f"r{next(self._ids)}"
            message.visible_at = now + queue.visibility
            taken.append(message)  # FIFO: a group's next messages may follow in this batch
        return taken

    def next_visible(self, url: str) -> float | None:
        """When a message of an idle queue next becomes receivable (None: the queue is empty).

        A FIFO message that is visible but held by its group waits for the group's message in
        flight, which is hidden until some later time: the earliest hidden time is the answer.
        """
        messages = self.queues[url].messages
        if not messages:
            return None
        later = [m.visible_at for m in messages if m.visible_at > self.clock.now]
        return min(later) if later else self.clock.now

    def _by_receipt(self, url: str, receipt: str) -> _Message:
        for message in self.queues[url].messages:
            if message.receipt == receipt:
                return message
        raise InjectedFault("ReceiptHandleIsInvalid")


class Esm:
    """Lambda's SQS poller over ``SimSqs``: receive, invoke, delete what succeeded."""

    def __init__(
        self,
        sqs: SimSqs,
        url: str,
        handler: Callable[[dict[str, Any], Any], Any],
        *,
        delete: Callable[..., Any] | None = None,
        batch_size: int = 10,
    ) -> None:
        self.sqs, self.url, self.handler, self.batch_size = sqs, url, handler, batch_size
        self.delete = delete or sqs.delete_message
        self.crashes = 0

    def poll_once(self, only: Callable[[str], bool] | None = None) -> int:
        """One invocation with the batch received now; how many records it had."""
        messages = self.sqs.receive(self.url, self.batch_size, only)
        if not messages:
            return 0
        queue = self.sqs.queue(self.url)
        records = [
            {
                "messageId": m.id,
                "receiptHandle": m.receipt,
                "body": m.body,
                "attributes": {
                    "ApproximateReceiveCount": str(m.receives),
                    **({"MessageGroupId": m.group} if m.group else {}),
                },
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": queue.arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
        try:
            answer = self.handler({"Records": records}, None)
        except Crash:
            self.crashes += 1  # the invocation died: Lambda deletes nothing
            return len(messages)
        failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
        for message in messages:
            if message.id not in failed:
                # Lambda's delete failing only brings the message back (harmless).
                with contextlib.suppress(InjectedFault, Crash):
                    self.delete(QueueUrl=self.url, ReceiptHandle=message.receipt)
        return len(messages)

    def run(self, *, horizon: float = 7 * 86_400.0, max_polls: int = 10_000) -> None:
        """Poll until the queue is empty, moving the clock to the next visible message."""
        ends = self.sqs.clock.now + horizon
        for _ in range(max_polls):
            if self.poll_once():
                continue
            upcoming = self.sqs.next_visible(self.url)
            if upcoming is None:
                return
            if upcoming > ends:
                raise AssertionError(f"messages still waiting after {horizon:g} s")
            self.sqs.clock.now = max(self.sqs.clock.now, upcoming)
        raise AssertionError(f"queue not drained after {max_polls} polls")


# -- faults ----------------------------------------------------------------------------------

KINDS = ("fail", "lost", "crash")
"""The call fails; the call lands but its caller sees a failure; the process dies after it."""


@dataclass
class Fault:
    """Inject ``kind`` at the ``occurrence``-th call of ``point``."""

    point: str
    kind: str
    occurrence: int = 1
    fired: bool = False


class Faults:
    """Counts every call by operation name and fires the one ``Fault`` when its turn comes."""

    def __init__(self, fault: Fault | None) -> None:
        self.fault = fault
        self.calls: dict[str, int] = {}

    def call(self, point: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        n = self.calls[point] = self.calls.get(point, 0) + 1
        fault = self.fault
        if fault is None or fault.fired or fault.point != point or fault.occurrence != n:
            return fn(*args, **kw)
        fault.fired = True
        if fault.kind == "fail":
            raise _error_for(point)
        fn(*args, **kw)
        if fault.kind == "lost":
            raise _error_for(point)
        raise Crash(point)

    def wrap(self, target: Any, methods: dict[str, str]) -> Any:
        """A proxy of ``target`` whose ``methods`` (name -> point) go through ``call``."""
        faults = self

        class Proxy:
            def __getattr__(self, name: str) -> Any:
                attr = getattr(target, name)
                point = methods.get(name)
                if point is None:
                    return attr
                return lambda *a, **k: faults.call(point, attr, *a, **k)

        return Proxy()


def _error_for(point: str) -> Exception:
    if point.startswith("store."):
        return StoreError(f"injected: {point} failed")
    return InjectedFault(f"injected: {point} failed")


class FaultySqs:
    """The SQS client the runtime gets: DLQ sends and queue sends are separate points."""

    def __init__(self, sqs: SimSqs, faults: Faults, dlq_urls: set[str]) -> None:
        self.sqs, self.faults, self.dlq_urls = sqs, faults, dlq_urls

    def send_message(self, **kw: Any) -> Any:
        point = "sqs.dlq_send" if kw["QueueUrl"] in self.dlq_urls else "sqs.resend"
        return self.faults.call(point, self.sqs.send_message, **kw)

    def change_message_visibility(self, **kw: Any) -> Any:
        return self.faults.call("sqs.change_visibility", self.sqs.change_message_visibility, **kw)

    def delete_message(self, **kw: Any) -> Any:
        return self.faults.call("sqs.delete", self.sqs.delete_message, **kw)

    def get_queue_url(self, **kw: Any) -> Any:
        return self.faults.call("sqs.get_queue_url", self.sqs.get_queue_url, **kw)

    def get_queue_attributes(self, **kw: Any) -> Any:
        return self.faults.call("sqs.get_queue_attributes", self.sqs.get_queue_attributes, **kw)


def inject_call(client: Any, service: str, operation: str, occurrence: int, kind: str) -> list[int]:
    """Make a real boto3 client's ``occurrence``-th ``operation`` fail, lose its answer, or
    crash right after it (``kind``: fail, lost, crash), with botocore's own event hooks.

    A ``before-call`` handler that raises is a call that failed; an ``after-call`` handler
    that raises is a call that landed but whose answer was lost, or (``Crash``) the process
    dying right after it. Returns the count of calls so far (``[n]``), for the test to check
    the fault was reached.
    """
    seen = [0]

    def before(**_: Any) -> None:
        seen[0] += 1
        if seen[0] == occurrence and kind == "fail":
            raise InjectedFault(f"injected: {operation} failed")

    def after(**_: Any) -> None:
        if seen[0] == occurrence and kind != "fail":
            raise Crash(operation) if kind == "crash" else InjectedFault(f"{operation} lost")

    client.meta.events.register(f"before-call.{service}.{operation}", before)
    client.meta.events.register(f"after-call.{service}.{operation}", after)
    return seen
