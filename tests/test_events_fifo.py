"""Per-key order for ordered subscribers, end to end on moto: FIFO topic, FIFO queue, the handler.

An ordered subscriber's events go through a ``.fifo`` topic (``SnsCarrier``: the group is the
event's key, the deduplication id its id) to its ``.fifo`` queue, drained here as Lambda's SQS
FIFO mapping drains it: batches of up to 10 records, one group's records in order, the records
reported failed left in flight until their visibility ends, and SQS giving out a group's
messages oldest first, none behind one still in flight. What moto does not model is named
where it matters: SNS's own 5-minute deduplication (moto's FIFO queue only drops a duplicate
while the first is still on it), FIFO sequence numbers (moto's are random, not increasing),
and the order a group's messages come back in once visible again (moto 5.2.5 can hand out a
later one first: ``fifo_moto``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import attrs
import boto3
import pytest
from taskhop.backends.sns import SnsCarrier, subscribe_queue
from taskhop.lambda_worker import LocalContext, LocalEventSourceMapping, make_handler
from taskhop.lambda_worker._events import PREFIX_VARIABLE
from taskhop.lambda_worker._infra import render
from taskhop.sdk import (
    App,
    Event,
    EventEnvelope,
    JobContext,
    JobStatus,
    RetryPolicy,
    TransportError,
    create_app,
    define_event,
)
from taskhop.sdk.memory import MemoryQueue, MemoryStore
from taskhop.static_contracts import DEFAULT_QUEUE_PREFIX, subscriber_queue_name


@attrs.frozen
class Step:
    order_id: str
    seq: int


step = define_event("ledger.step", payload=Step, key="order_id")
KEYS = ("A", "B", "C")
SEQS = range(1, 6)
VISIBILITY = 1  # seconds a record reported failed stays in flight (Lambda: the queue's)


class Boom(Exception):
    """The handler's failure on a chosen event."""


@dataclass
class Stack:
    """A FIFO topic, an ordered subscriber on a FIFO queue, an unordered one on a standard one."""

    app: App
    sqs: Any
    sns: Any
    topic: str
    dlq: str
    handler: Any
    queues: dict[str, str] = field(default_factory=dict[str, str])
    runs: list[tuple[str, str, int, int]] = field(default_factory=list[tuple[str, str, int, int]])
    """Every handler call: (subscriber, key, seq, attempt)."""
    fail: dict[tuple[str, int], int] = field(default_factory=dict[tuple[str, int], int])
    """(key, seq) -> how many first attempts of it raise."""
    batches: list[list[tuple[str, int, bool]]] = field(
        default_factory=list[list[tuple[str, int, bool]]]
    )
    """Each invocation's records, in order: (key, seq, reported failed)."""

    def emit_all(self, how: str) -> list[str]:
        """Emit 5 events for each of 3 keys, interleaved (A1 B1 C1 A2 ...); their ids."""
        payloads = [Step(key, seq) for seq in SEQS for key in KEYS]
        if how == "emit_many":
            return self.app.emit_many(step, payloads)
        return [self.app.emit(step, payload) for payload in payloads]

    def drain(self, task: str, *, batch_size: int = 10, timeout: float = 20.0) -> None:
        """Invoke the shipped handler with batches until the queue holds nothing, as Lambda does.

        Records answered as failed are left in flight (what Lambda leaves them); SQS gives out
        no more of their group until they are visible again.
        """
        url = self.queues[task]
        esm = LocalEventSourceMapping(lambda e, c: None, url, self.sqs)
        ends = time.monotonic() + timeout
        while time.monotonic() < ends:
            messages = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=batch_size, MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])  # fmt: skip
            if not messages:
                if self.depth(task) == 0:
                    return
                time.sleep(0.1)  # in flight: back once its visibility ends
                continue
            records = [esm._record(m) for m in messages]  # pyright: ignore[reportPrivateUsage]
            answer = self.handler({"Records": records}, LocalContext())
            failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
            shown: list[tuple[str, int, bool]] = []
            for message in messages:
                payload = json.loads(message["Body"])["payload"]
                shown.append((payload["order_id"], payload["seq"], message["MessageId"] in failed))
                if message["MessageId"] not in failed:  # what Lambda does after the answer
                    self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            self.batches.append(shown)
        raise AssertionError(f"{task}'s queue still holds {self.depth(task)} messages")

    def depth(self, task: str) -> int:
        """Messages on the queue, visible or in flight."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queues[task],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in attributes.values())

    def order(self, task: str, key: str, *, succeeded: bool = False) -> list[int]:
        """The seqs of ``key`` as ``task``'s handler was called with them."""
        calls = [(k, s, a) for t, k, s, a in self.runs if t == task and k == key]
        if succeeded:  # a raising call is a (key, seq, attempt) below its configured count
            calls = [(k, s, a) for k, s, a in calls if a > self.fail.get((k, s), 0)]
        return [s for _, s, _ in calls]


def build(
    store: Any,
    *,
    concurrency: int | None,
    attempts: int = 3,
    delay: float = 0,
    clients: Any = boto3,
    prefix: str = "",
) -> Stack:
    """The topic, both subscribers' queues (each with the registry's filter), and the app."""
    sqs: Any = clients.client("sqs")
    sns: Any = clients.client("sns")
    fifo = {"FifoTopic": "true"}
    topic: str = sns.create_topic(Name=f"{prefix}events.fifo", Attributes=fifo)["TopicArn"]
    dlq = sqs.create_queue(QueueName=f"{prefix}events-dlq.fifo", Attributes={"FifoQueue": "true"})
    app = create_app(queue=MemoryQueue(), store=store, events=SnsCarrier(topic, client=sns))
    app.event(step)
    handler = make_handler(app, sqs_client=sqs, dlq_url=dlq["QueueUrl"], concurrency=concurrency)
    stack = Stack(app, sqs, sns, topic, dlq["QueueUrl"], handler)
    retry = RetryPolicy(attempts=attempts, backoff="fixed", delay=delay, jitter=False)

    @app.on(step, ordered=True, retry=retry)
    def ledger(event: Event[Step], ctx: JobContext) -> None:
        key, seq = event.payload.order_id, event.payload.seq
        stack.runs.append(("ledger", key, seq, ctx.attempt))
        if ctx.attempt <= stack.fail.get((key, seq), 0):
            raise Boom(f"{key}{seq}")

    @app.on(step)
    def audit(event: Event[Step], ctx: JobContext) -> None:
        stack.runs.append(("audit", event.payload.order_id, event.payload.seq, ctx.attempt))

    for sub in app.events.subscriptions.values():
        name = subscriber_queue_name(sub.task, f"{prefix}{DEFAULT_QUEUE_PREFIX}")
        name += ".fifo" if sub.ordered else ""
        attributes = {"VisibilityTimeout": str(VISIBILITY)}
        if sub.ordered:
            attributes["FifoQueue"] = "true"
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
        subscribe_queue(topic, arn["QueueArn"], sub.events, client=sns)
        stack.queues[sub.task] = url
    return stack


@pytest.fixture
def fifo_moto(mocked_aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto, with its FIFO group hold fixed: a group is held while a message of it is in flight.

    moto 5.2.5 counts a message as in flight until a receive walks past it, even once its
    visibility has ended. So when a group's messages come back (A2 visible at once, A3 and A4
    after their visibility), one receive skips A2 (the group looks held by A3 and A4), then
    releases A3 (A4 still looks held) and hands out A4 alone, ahead of A2 and A3. SQS hands
    out a group's messages oldest first, and none behind one still in flight; this hold (the
    whole group while any of it is in flight) is stricter and gives the same order.
    """
    from moto.sqs.models import Queue

    def held(queue: Any) -> set[str]:
        return {
            m.group_id for m in queue.pending_messages if m.group_id is not None and not m.visible
        }

    monkeypatch.setattr(Queue, "pending_message_groups", property(held))


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest, fifo_moto: None) -> Any:
    """The job store under test."""
    if request.param == "memory":
        return MemoryStore()
    from taskhop.backends.dynamodb import DynamoStore

    dynamo = DynamoStore("jobs")
    dynamo.create_table()
    return dynamo


@pytest.fixture(params=[1, 4], ids=["in-order", "overlapped"])
def stack(request: pytest.FixtureRequest, store: Any) -> Iterator[Stack]:
    """The stack, its batches run one record after another or overlapped (lanes per group)."""
    built = build(store, concurrency=request.param)
    yield built
    built.app.close()


# -- 1. order per key ------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["emit_many", "emit"])
@pytest.mark.parametrize("batch_size", [10, 4])
def test_each_key_runs_in_emit_order(stack: Stack, how: str, batch_size: int) -> None:
    """3 keys x 5 events, interleaved: each key's handler calls come in emit order, once each."""
    stack.emit_all(how)
    stack.drain("ledger", batch_size=batch_size)
    for key in KEYS:
        assert stack.order("ledger", key) == list(SEQS), key
    assert any(len({k for k, _, _ in batch}) > 1 for batch in stack.batches)  # groups mixed


def test_the_fifo_queue_carries_the_key_as_group_and_the_id_as_deduplication_id(
    fifo_moto: None,
) -> None:
    """What SNS hands the FIFO queue: MessageGroupId = key, MessageDeduplicationId = event id."""
    stack = build(MemoryStore(), concurrency=1)
    try:
        ids = stack.app.emit_many(step, [Step("A", 1), Step("B", 1), Step("A", 2)])
        messages = stack.sqs.receive_message(
            QueueUrl=stack.queues["ledger"], MaxNumberOfMessages=10,
            MessageSystemAttributeNames=["All"],
        )["Messages"]  # fmt: skip
        attributes = [m["Attributes"] for m in messages]
        assert [(a["MessageGroupId"], a["MessageDeduplicationId"]) for a in attributes] == [
            ("A", ids[0]),
            ("B", ids[1]),
            ("A", ids[2]),
        ]
        assert stack.queues["ledger"].endswith(".fifo")
        assert not stack.queues["audit"].endswith(".fifo")
    finally:
        stack.app.close()


# -- 2. a failure in the middle of a group ---------------------------------------------------


def test_a_failed_event_holds_its_key_back_and_the_other_keys_go_on(stack: Stack) -> None:
    """A2 fails once: A3.. wait for its retry (SQS visibility, not a re-send); B and C go on."""
    stack.fail[("A", 2)] = 1
    ids = stack.emit_all("emit_many")
    stack.drain("ledger")
    assert stack.order("ledger", "A") == [1, 2, 2, 3, 4, 5]  # A2 twice: the failure, the retry
    for key in "BC":
        assert stack.order("ledger", key) == list(SEQS)
    # The first batch ran A1, failed A2, and reported A3 and A4 failed without running them.
    first = stack.batches[0]
    assert [(k, s) for k, s, failed in first if k == "A" and failed] == [
        ("A", 2),
        ("A", 3),
        ("A", 4),
    ]
    # B and C did not wait: all of them ran before A3 (which waits for A2's success).
    a3 = stack.runs.index(("ledger", "A", 3, 1))
    assert {(k, s) for _, k, s, _ in stack.runs[:a3] if k != "A"} == {
        (k, s) for k in "BC" for s in SEQS
    }
    store: Any = stack.app.store
    record = store.get(f"{ids[3]}>ledger")  # ids are emitted A1 B1 C1 A2 ...: A2 is the 4th
    assert record is not None
    assert (record.status, record.attempt) == (JobStatus.SUCCEEDED, 2)
    assert stack.depth("ledger") == 0


def test_the_retry_keeps_the_message_instead_of_sending_a_copy(fifo_moto: None) -> None:
    """A FIFO retry is a visibility change, never a SendMessage (a copy joins the group's back)."""
    stack = build(MemoryStore(), concurrency=1)
    try:
        sent: list[str] = []

        def count(model: Any, **_: Any) -> None:
            sent.append(str(model.name))

        stack.sqs.meta.events.register("before-call.sqs.SendMessage", count)
        stack.fail[("A", 2)] = 2
        stack.emit_all("emit_many")
        stack.drain("ledger")
        assert stack.order("ledger", "A") == [1, 2, 2, 2, 3, 4, 5]
        assert sent == []
    finally:
        stack.app.close()


def test_a_retry_hidden_longer_than_its_followers_still_runs_first(fifo_moto: None) -> None:
    """A2's backoff (2 s) outlasts A3's visibility (1 s): SQS holds A3 behind A2 all the same."""
    stack = build(MemoryStore(), concurrency=1, delay=2 * VISIBILITY)
    try:
        stack.fail[("A", 2)] = 1
        stack.emit_all("emit_many")
        stack.drain("ledger")
        assert stack.order("ledger", "A") == [1, 2, 2, 3, 4, 5]
    finally:
        stack.app.close()


def test_the_dev_stack_keeps_each_keys_order_after_a_retry(
    server_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``taskhop dev``'s moto server (with its speed-ups) and local mapping keep A2 before A3."""
    prefix = f"t{uuid.uuid4().hex[:8]}-"  # the server lives for the session: names of our own
    monkeypatch.setenv(PREFIX_VARIABLE, f"{prefix}{DEFAULT_QUEUE_PREFIX}")
    stack = build(MemoryStore(), concurrency=1, clients=server_session, prefix=prefix)
    try:
        stack.fail[("A", 2)] = 1
        stack.emit_all("emit_many")
        url = stack.queues["ledger"]
        esm = LocalEventSourceMapping(stack.handler, url, stack.sqs, wait_time=0)
        ends = time.monotonic() + 20
        while stack.depth("ledger") and time.monotonic() < ends:
            if not esm.poll_once():
                time.sleep(0.1)  # the group is in flight until its visibility ends
        for key in "BC":
            assert stack.order("ledger", key) == list(SEQS)
        assert stack.order("ledger", "A") == [1, 2, 2, 3, 4, 5]  # stock moto: [1, 2, 4, 5, 2, 3]
    finally:
        stack.app.close()


def test_a_dead_lettered_event_lets_its_key_go_on_in_order(fifo_moto: None) -> None:
    """A2 fails every attempt: it goes to the DLQ, then A3..A5 run, still in order."""
    stack = build(MemoryStore(), concurrency=1, attempts=2)
    try:
        stack.fail[("A", 2)] = 2
        stack.emit_all("emit_many")
        stack.drain("ledger")
        assert stack.order("ledger", "A") == [1, 2, 2, 3, 4, 5]
        letters = stack.sqs.receive_message(
            QueueUrl=stack.dlq, MessageSystemAttributeNames=["All"]
        )["Messages"]
        assert [json.loads(m["Body"])["payload"] for m in letters] == [{"order_id": "A", "seq": 2}]
        assert letters[0]["Attributes"]["MessageGroupId"] == "A"  # its group on the FIFO DLQ
    finally:
        stack.app.close()


# -- 3. idempotency --------------------------------------------------------------------------


def test_the_same_event_emitted_twice_runs_once(stack: Stack) -> None:
    """Same id twice: one message (deduplication id), one run; once more later: still one run."""
    stack.app.emit(step, Step("A", 1), id="evt-1")
    stack.app.emit(step, Step("A", 1), id="evt-1")
    # On AWS the topic drops the copy (5 minutes by MessageDeduplicationId); moto's topic does
    # not, its FIFO queue does, while the first is still on it. The standard queue gets both.
    assert stack.depth("ledger") == 1
    assert stack.depth("audit") == 2  # moto; on AWS the topic's deduplication leaves 1
    stack.drain("ledger")
    stack.drain("audit")
    # Past every deduplication window (moto's ends with the delete): the job id still holds.
    stack.app.emit(step, Step("A", 1), id="evt-1")
    assert stack.depth("ledger") == 1
    stack.drain("ledger")
    assert [r for r in stack.runs if r[0] == "ledger"] == [("ledger", "A", 1, 1)]
    assert [r for r in stack.runs if r[0] == "audit"] == [("audit", "A", 1, 1)]


def test_a_redelivered_message_runs_nothing_twice(stack: Stack) -> None:
    """The handler succeeded but the delete was lost: the redelivery is skipped and deleted."""
    stack.app.emit_many(step, [Step("A", 1), Step("A", 2)])
    url = stack.queues["ledger"]
    esm = LocalEventSourceMapping(lambda e, c: None, url, stack.sqs)
    messages = stack.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
    )["Messages"]
    records = [esm._record(m) for m in messages]  # pyright: ignore[reportPrivateUsage]
    answer = stack.handler({"Records": records}, LocalContext())
    assert answer["batchItemFailures"] == []
    for message in messages:  # Lambda never deleted them: they come back
        stack.sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    stack.drain("ledger")
    assert stack.order("ledger", "A") == [1, 2]
    assert stack.depth("ledger") == 0


# -- 4. ordered and unordered subscribers of one topic ---------------------------------------


def test_an_ordered_subscriber_makes_the_topic_fifo_and_only_its_queue(fifo_moto: None) -> None:
    """The render: a FIFO topic; the ordered subscriber's queue FIFO, the other's standard."""
    stack = build(MemoryStore(), concurrency=1)
    try:
        events = render(stack.app)["events"]
        assert events["fifo_topic"] is True
        assert {s["task"]: s["fifo"] for s in events["subscriptions"]} == {
            "ledger": True,
            "audit": False,
        }
    finally:
        stack.app.close()


def test_an_unordered_subscriber_of_a_fifo_topic_gets_every_event(stack: Stack) -> None:
    """A standard queue on the FIFO topic (AWS allows it): every event runs, order not promised."""
    stack.emit_all("emit_many")
    stack.drain("audit")
    stack.drain("ledger")
    ran = sorted((k, s) for t, k, s, _ in stack.runs if t == "audit")
    assert ran == sorted((k, s) for k in KEYS for s in SEQS)
    for key in KEYS:
        assert stack.order("ledger", key) == list(SEQS)


def test_a_fifo_queue_cannot_subscribe_to_a_standard_topic(fifo_moto: None) -> None:
    """SNS refuses it (so does moto): an ordered subscriber needs the .fifo topic."""
    sqs: Any = boto3.client("sqs")
    sns: Any = boto3.client("sns")
    topic = sns.create_topic(Name="plain")["TopicArn"]
    url = sqs.create_queue(
        QueueName=subscriber_queue_name("ledger") + ".fifo", Attributes={"FifoQueue": "true"}
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    with pytest.raises(TransportError, match="FIFO"):
        subscribe_queue(topic, arn["QueueArn"], [step.name], client=sns)


# -- the carrier: a group whose event was refused publishes no later event ---------------------


class StubSns:
    """PublishBatch answering from a script: per request, the entry positions to fail."""

    def __init__(self, *fail: set[int]) -> None:
        self.fail = list(fail)
        self.accepted: list[str] = []

    def publish_batch(self, **request: Any) -> dict[str, Any]:
        entries = request["PublishBatchRequestEntries"]
        failing = self.fail.pop(0) if self.fail else set[int]()
        ok = [e for i, e in enumerate(entries) if i not in failing]
        self.accepted += [json.loads(e["Message"])["id"] for e in ok]
        return {
            "Successful": [{"Id": e["Id"]} for e in ok],
            "Failed": [
                {"Id": e["Id"], "Code": "InternalError", "Message": "m", "SenderFault": False}
                for i, e in enumerate(entries)
                if i in failing
            ],
        }

    def close(self) -> None:
        pass


def test_a_refused_event_holds_back_its_groups_later_batches() -> None:
    """e9 refused twice: e10, its group's next, is not published after it.

    One group's events go one per request (see the next test), so e9 is request 10."""
    stub = StubSns(*[set[int]()] * 9, {0}, {0})  # e9, then its retry
    events = [
        EventEnvelope("ledger.step", {"order_id": "A"}, id=f"e{i}", key="A") for i in range(11)
    ]
    with pytest.raises(TransportError) as caught:
        SnsCarrier("arn:aws:sns:us-east-1:1:t.fifo", client=stub).publish(events)
    # FIFO order is the order SNS accepts: nothing of group A may be accepted after e9 failed,
    # or the caller's retry of e9 lands behind e10.
    assert stub.accepted == [f"e{i}" for i in range(9)]
    assert caught.value.job_ids == ("e9", "e10")


def test_a_request_never_holds_two_events_of_one_group() -> None:
    """SNS answers per entry, in no promised order: within one request it could accept a
    group's later event and refuse its earlier one. So a group's events go one per request,
    in order, while other groups share them."""
    stub = StubSns()
    groups: list[list[str]] = []
    real = stub.publish_batch

    def recording(**request: Any) -> dict[str, Any]:
        groups.append([e["MessageGroupId"] for e in request["PublishBatchRequestEntries"]])
        return real(**request)

    stub.publish_batch = recording  # type: ignore[method-assign]
    keys = ["A", "B", "A", "C", "B", "A"]
    events = [
        EventEnvelope("ledger.step", {"order_id": k}, id=f"e{i}", key=k) for i, k in enumerate(keys)
    ]
    SnsCarrier("arn:aws:sns:us-east-1:1:t.fifo", client=stub).publish(events)
    assert all(len(set(g)) == len(g) for g in groups), groups
    assert groups == [["A", "B"], ["A", "C", "B"], ["A"]]
    assert stub.accepted == [f"e{i}" for i in range(6)]
