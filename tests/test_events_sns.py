"""Events over SNS on moto: a topic fanning out to one filtered SQS queue per subscriber.

Producer and worker are one app: ``emit`` publishes through ``SnsCarrier``; each subscriber's
queue is drained through the shipped Lambda handler (records shaped by the local event source
mapping, as Lambda shapes them), so what runs is what runs on AWS.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import attrs
import boto3
import pytest
from taskhop.backends.s3 import S3Payloads
from taskhop.backends.sns import SnsCarrier, filter_policy, subscribe_queue
from taskhop.lambda_worker import LocalContext, LocalEventSourceMapping, make_handler
from taskhop.sdk import (
    App,
    Event,
    EventEnvelope,
    JobContext,
    JobStatus,
    TransportError,
    UnknownEventError,
    ValidationError,
    create_app,
    define_event,
)
from taskhop.sdk.memory import MemoryQueue, MemoryStore
from taskhop.static_contracts import subscriber_queue_name


@attrs.frozen
class Placed:
    order_id: str
    total: int = attrs.field(validator=attrs.validators.ge(0))
    note: str = ""


@attrs.frozen
class Shipped:
    order_id: str
    carrier: str


placed = define_event("order.placed", payload=Placed, key="order_id")
shipped = define_event("order.shipped", payload=Shipped, key="order_id")
never_registered = define_event("order.lost", payload=Shipped)


@dataclass
class Stack:
    """The app, its topic, and one queue (with a DLQ) per subscriber."""

    app: App
    sqs: Any
    sns: Any
    topic: str
    queues: dict[str, str]
    dlq: str
    seen: list[tuple[str, str, str]] = field(default_factory=list[tuple[str, str, str]])

    def drain(self, subscriber: str) -> list[dict[str, Any]]:
        """Run every message on the subscriber's queue through the Lambda handler."""
        url = self.queues[subscriber]
        esm = LocalEventSourceMapping(lambda e, c: None, url, self.sqs)
        handler = make_handler(self.app, sqs_client=self.sqs, dlq_url=self.dlq)
        answers: list[dict[str, Any]] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])  # fmt: skip
            if not messages:
                return answers
            answer = handler({"Records": [esm._record(m) for m in messages]}, LocalContext())
            answers.append(answer)
            by_id = {m["MessageId"]: m["ReceiptHandle"] for m in messages}
            failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
            for message_id, receipt in by_id.items():  # what Lambda does after the answer
                if message_id not in failed:
                    self.sqs.delete_message(QueueUrl=url, ReceiptHandle=receipt)

    def queued(self, subscriber: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queues[subscriber], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])


def build(payloads: S3Payloads | None = None, *, store: Any = None) -> Stack:
    """Topic, queues subscribed with the registry's filter policies, and the app."""
    sqs: Any = boto3.client("sqs")
    sns: Any = boto3.client("sns")
    topic: str = sns.create_topic(Name="events")["TopicArn"]
    dlq = sqs.create_queue(QueueName="events-dlq")["QueueUrl"]
    app = create_app(
        queue=MemoryQueue(),
        store=store or MemoryStore(),
        payloads=payloads,
        events=SnsCarrier(topic, client=sns, payloads=payloads),
    )
    app.event(placed)
    app.event(shipped)
    stack = Stack(app, sqs, sns, topic, {}, dlq)

    @app.on(placed)
    def bill(event: Event[Placed], ctx: JobContext) -> None:
        stack.seen.append(("bill", event.id, event.payload.order_id))

    @app.on("order.*")
    def audit(event: Event[Placed | Shipped], ctx: JobContext) -> None:
        stack.seen.append(("audit", event.id, event.name))

    for sub in app.events.subscriptions.values():
        url = sqs.create_queue(QueueName=subscriber_queue_name(sub.task))["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
        subscribe_queue(topic, arn["QueueArn"], sub.events, client=sns)
        stack.queues[sub.task] = url
    return stack


@pytest.fixture(params=["memory", "dynamodb"])
def stack(request: pytest.FixtureRequest, mocked_aws: None) -> Iterator[Stack]:
    """The stack with the job store under test."""
    store: Any = MemoryStore()
    if request.param == "dynamodb":
        from taskhop.backends.dynamodb import DynamoStore

        store = DynamoStore("jobs")
        store.create_table()
    built = build(store=store)
    yield built
    built.app.close()


def calls(client: Any) -> Counter[str]:
    """Count the AWS operations a client makes from now on (botocore's before-call event)."""
    seen: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        seen[model.name] += 1

    client.meta.events.register("before-call", count)
    return seen


def test_each_subscriber_runs_once_per_matching_event(stack: Stack) -> None:
    """Two events, two subscribers: each runs once for each event it takes, as a job."""
    a = stack.app.emit(placed, Placed("o1", 10), id="evt-a")
    b = stack.app.emit(shipped, Shipped("o1", "ups"), id="evt-b")
    stack.drain("bill")
    stack.drain("audit")
    assert sorted(stack.seen) == [
        ("audit", a, "order.placed"),
        ("audit", b, "order.shipped"),
        ("bill", a, "o1"),
    ]
    store: Any = stack.app.store
    record = store.get("evt-a>bill")
    assert record is not None
    assert record.status is JobStatus.SUCCEEDED


def test_a_non_matching_event_never_reaches_the_queue(stack: Stack) -> None:
    """The filter policy keeps order.shipped off bill's queue: nothing is even received."""
    stack.app.emit(shipped, Shipped("o1", "ups"))
    assert stack.queued("bill") == 0
    assert stack.queued("audit") == 1


def test_the_same_event_published_twice_runs_once(stack: Stack) -> None:
    """A producer's retry with the same id is delivered twice and runs once per subscriber."""
    stack.app.emit(placed, Placed("o1", 10), id="evt-1")
    stack.app.emit(placed, Placed("o1", 10), id="evt-1")
    assert stack.queued("bill") == 2
    stack.drain("bill")
    stack.drain("audit")
    assert sorted(stack.seen) == [("audit", "evt-1", "order.placed"), ("bill", "evt-1", "o1")]


def test_bad_emits_raise_before_any_aws_call(stack: Stack) -> None:
    """An unregistered event or an invalid payload fails in the producer: no request made."""
    made = calls(stack.sns)
    with pytest.raises(UnknownEventError, match=r"order\.lost"):
        stack.app.emit(never_registered, Shipped("o1", "ups"))
    for wrong in (-1, "ten"):  # past the validator and the annotation: emit checks both
        payload = Placed("o1", 10)
        object.__setattr__(payload, "total", wrong)
        with pytest.raises(ValidationError, match="total"):
            stack.app.emit(placed, payload)
    assert made == Counter()


def test_an_oversized_event_is_offloaded_and_kept_for_every_subscriber(
    mocked_aws: None,
) -> None:
    """Over 256 KiB the payload goes to S3, both subscribers read it, and it stays."""
    s3: Any = boto3.client("s3")
    s3.create_bucket(Bucket="payloads")
    stack = build(S3Payloads("payloads", client=s3))
    try:
        note = "x" * (300 * 1024)
        stack.app.emit(placed, Placed("big", 1, note), id="evt-big")
        body = stack.sqs.receive_message(QueueUrl=stack.queues["bill"], VisibilityTimeout=0)
        wire = EventEnvelope.decode(body["Messages"][0]["Body"])
        assert wire.payload is None
        assert wire.payload_ref is not None
        stack.drain("bill")
        assert s3.list_objects_v2(Bucket="payloads")["KeyCount"] == 1  # audit has not run
        stack.drain("audit")
        assert sorted(stack.seen) == [
            ("audit", "evt-big", "order.placed"),
            ("bill", "evt-big", "big"),
        ]
        assert s3.list_objects_v2(Bucket="payloads")["KeyCount"] == 1  # shared: never deleted
    finally:
        stack.app.close()


def test_an_oversized_event_without_a_payload_store_is_refused_before_any_request(
    stack: Stack,
) -> None:
    """No payload store: TransportError naming the event, and nothing published."""
    made = calls(stack.sns)
    with pytest.raises(TransportError, match="evt-big") as caught:
        stack.app.emit(placed, Placed("big", 1, "x" * (300 * 1024)), id="evt-big")
    assert caught.value.job_ids == ("evt-big",)
    assert not caught.value.retryable
    assert made == Counter()


def test_a_malformed_event_on_a_subscriber_queue_is_dead_lettered(stack: Stack) -> None:
    """An event envelope missing its id is poison: recorded in the DLQ, no handler runs."""
    bad = json.dumps({"taskhop_event": 1, "name": "order.placed", "payload": {"order_id": "o"}})
    stack.sqs.send_message(QueueUrl=stack.queues["bill"], MessageBody=bad)
    answers = stack.drain("bill")
    assert answers
    assert not answers[0]["batchItemFailures"]
    letters = stack.sqs.receive_message(QueueUrl=stack.dlq, MessageAttributeNames=["All"])
    assert [m["Body"] for m in letters["Messages"]] == [bad]
    assert stack.seen == []


def test_an_event_on_a_queue_no_subscriber_reads_is_dead_lettered(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A queue named for no subscriber of this app: poison, logged without the payload."""
    url = stack.sqs.create_queue(QueueName=subscriber_queue_name("nobody"))["QueueUrl"]
    stack.queues["nobody"] = url
    secret = "card-4111"
    event = EventEnvelope("order.placed", {"order_id": secret, "total": 1}, id="evt-x")
    stack.sqs.send_message(QueueUrl=url, MessageBody=event.encode().decode())
    stack.drain("nobody")
    letters = stack.sqs.receive_message(QueueUrl=stack.dlq)["Messages"]
    assert [EventEnvelope.decode(m["Body"]).id for m in letters] == ["evt-x"]
    assert "taskhop-ev-nobody" in caplog.text
    assert secret not in caplog.text
    assert stack.seen == []


# -- PublishBatch answers, from a stub client -------------------------------------------------


class StubSns:
    """PublishBatch answering from a script: a list of sets of entry ids to fail."""

    def __init__(self, *fail: set[int], code: str = "InternalError", sender: bool = False):
        self.fail = list(fail)
        self.code = code
        self.sender = sender
        self.requests: list[list[dict[str, Any]]] = []

    def publish_batch(self, **request: Any) -> dict[str, Any]:
        entries = request["PublishBatchRequestEntries"]
        self.requests.append(entries)
        failing: set[int] = self.fail.pop(0) if self.fail else set()
        failed = [e for i, e in enumerate(entries) if i in failing]
        return {
            "Successful": [{"Id": e["Id"]} for e in entries if e not in failed],
            "Failed": [
                {"Id": e["Id"], "Code": self.code, "Message": "m", "SenderFault": self.sender}
                for e in failed
            ],
        }

    def close(self) -> None:
        pass


def events(n: int) -> list[EventEnvelope]:
    return [EventEnvelope("order.placed", {"order_id": f"o{i}"}, id=f"e{i}") for i in range(n)]


def test_failed_entries_are_retried_once() -> None:
    """A throttled entry is sent again alone, and the call succeeds."""
    stub = StubSns({1})
    SnsCarrier("arn:aws:sns:us-east-1:1:t", client=stub).publish(events(3))
    assert [len(r) for r in stub.requests] == [3, 1]
    assert json.loads(stub.requests[1][0]["Message"])["id"] == "e1"


def test_entries_failing_twice_are_reported_by_event_id() -> None:
    """Still failing after the retry: TransportError names exactly those events."""
    stub = StubSns({0, 2}, {0, 1})  # second round: e0 and e2 are its entries 0 and 1
    with pytest.raises(TransportError, match="e0, e2") as caught:
        SnsCarrier("arn:aws:sns:us-east-1:1:t", client=stub).publish(events(3))
    assert caught.value.job_ids == ("e0", "e2")
    assert caught.value.retryable


def test_sender_faults_are_not_retried() -> None:
    """An entry SNS blames is reported at once, not retryable."""
    stub = StubSns({0}, code="InvalidParameter", sender=True)
    with pytest.raises(TransportError) as caught:
        SnsCarrier("arn:aws:sns:us-east-1:1:t", client=stub).publish(events(2))
    assert len(stub.requests) == 1
    assert caught.value.job_ids == ("e0",)
    assert not caught.value.retryable


def test_batches_hold_ten_entries_and_each_names_its_event() -> None:
    """25 events: three requests; every entry carries the taskhop-event attribute."""
    stub = StubSns()
    SnsCarrier("arn:aws:sns:us-east-1:1:t", client=stub).publish(events(25))
    assert [len(r) for r in stub.requests] == [10, 10, 5]
    attribute = stub.requests[0][0]["MessageAttributes"]["taskhop-event"]
    assert attribute == {"DataType": "String", "StringValue": "order.placed"}


def test_fifo_topics_group_by_key_and_deduplicate_by_event_id() -> None:
    """On a .fifo topic the group is the event key (else its name), the dedupe id its id."""
    stub = StubSns()
    keyed = EventEnvelope("order.placed", {"order_id": "o1"}, id="e1", key="o1")
    plain = EventEnvelope("order.placed", {}, id="e2")
    SnsCarrier("arn:aws:sns:us-east-1:1:t.fifo", client=stub).publish([keyed, plain])
    (request,) = stub.requests
    assert [(e["MessageGroupId"], e["MessageDeduplicationId"]) for e in request] == [
        ("o1", "e1"),
        ("order.placed", "e2"),
    ]


def test_filter_policies_stay_within_sns_limits() -> None:
    """One key, the names sorted; past 150 values it is refused with the reason."""
    assert filter_policy(["b", "a", "a"]) == {"taskhop-event": ["a", "b"]}
    with pytest.raises(ValueError, match="150"):
        filter_policy([f"e{i}" for i in range(151)])
    with pytest.raises(ValueError, match="at least one"):
        filter_policy([])


def test_subscriber_queue_names_fit_sqs() -> None:
    """Lowercase, SQS-safe, and short enough for a .fifo suffix, with a digest if cut."""
    assert subscriber_queue_name("Bill.Orders") == "taskhop-ev-bill-orders"
    long = subscriber_queue_name("s" * 200)
    assert len(long + ".fifo") <= 80
    assert long == subscriber_queue_name("s" * 200)
    assert long != subscriber_queue_name("s" * 199)
