"""Table triggers on the moto server, through the shipped runtime.

A user table with a stream; items written with boto3; ``LocalStreamPoller`` reads the stream
with the triggers' filter criteria and invokes ``make_handler(app)``, the way Lambda's event
source mapping does; enqueued jobs then run through the SQS harness (``aws_stack``).

moto never expires items by TTL, so the TTL removal is a record moto wrote, given by hand the
``userIdentity`` DynamoDB's TTL puts on it.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from conftest import AwsHarness
from taskhop.lambda_worker import LocalStreamPoller, make_handler, table_criteria
from taskhop.sdk import App, Change, F, JobContext, JobStatus, define_table, trigger_job_id


@attrs.frozen
class Order:
    pk: str
    status: str
    total: int
    tags: set[str] = attrs.field(factory=lambda: set[str]())
    photo: bytes | None = None


class Orders:
    """A fresh ``orders`` table with a stream, its poller made on demand."""

    def __init__(self, session: Any, app: App, harness: AwsHarness) -> None:
        self.app = app
        self.harness = harness
        self.name = f"orders-{uuid.uuid4().hex[:10]}"
        self.table = define_table(self.name, item=Order, key="pk")
        self.db = session.client("dynamodb")
        self.streams = session.client("dynamodbstreams")
        answer = self.db.create_table(
            TableName=self.name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        self.stream_arn: str = answer["TableDescription"]["LatestStreamArn"]
        self.handler = make_handler(app, sqs_client=harness.sqs)
        self.events: list[dict[str, Any]] = []  # every invocation: records and response

    def invoke(self, event: dict[str, Any], context: Any = None) -> Any:
        """The Lambda handler, with each invocation's records and answer kept."""
        seen: dict[str, Any] = {
            "sequences": [r["dynamodb"]["SequenceNumber"] for r in event["Records"]]
        }
        self.events.append(seen)
        seen["event"] = copy.deepcopy(event)
        seen["response"] = self.handler(event, context)
        return seen["response"]

    def poller(self, **options: Any) -> LocalStreamPoller:
        options.setdefault("criteria", table_criteria(self.app, self.name))
        return LocalStreamPoller(self.invoke, self.stream_arn, self.streams, **options)

    def put(self, pk: str, status: str = "paid", total: Any = 10, **extra: Any) -> None:
        item: dict[str, Any] = {
            "pk": {"S": pk},
            "status": {"S": status},
            "total": {"S": total} if isinstance(total, str) else {"N": str(total)},
            **extra,
        }
        self.db.put_item(TableName=self.name, Item=item)

    def jobs(self, task: str) -> list[Any]:
        return [r for r in self.harness.records() if r.task == task]


@pytest.fixture
def orders(server_session: Any, aws_stack: tuple[App, AwsHarness]) -> Iterator[Orders]:
    app, harness = aws_stack
    tables = Orders(server_session, app, harness)
    yield tables
    tables.db.delete_table(TableName=tables.name)


def test_an_insert_becomes_one_job_with_a_typed_change(orders: Orders) -> None:
    got: list[Change[Order]] = []

    @orders.app.on_change(orders.table, on={"insert"})
    def paid(change: Change[Order], ctx: JobContext) -> None:
        got.append(change)

    orders.put("o1", tags={"SS": ["gift", "red"]}, photo={"B": b"\x00\xff"})
    assert orders.poller().poll_once() == 1
    orders.harness.join()

    [change] = got
    assert change.kind == "insert"
    assert change.new == Order("o1", "paid", 10, {"gift", "red"}, b"\x00\xff")
    assert change.new is not None
    assert type(change.new.total) is int
    assert isinstance(change.new.tags, set)
    assert change.old is None
    assert not change.is_ttl_expiry
    assert change.approximate_at is not None  # moto gives it; the poller makes it epoch seconds
    assert abs(change.approximate_at.timestamp() - time.time()) < 60
    [job] = orders.jobs("paid")
    assert job.status is JobStatus.SUCCEEDED
    assert job.id == trigger_job_id(change.event_id, "paid")


def test_where_filters_before_anything_is_invoked(orders: Orders) -> None:
    got: list[str] = []

    @orders.app.on_change(orders.table, where=F.status == "paid")
    def paid(change: Change[Order], ctx: JobContext) -> None:
        assert change.new is not None
        got.append(change.new.pk)

    orders.put("o1", status="new")
    poller = orders.poller()
    assert poller.poll_once() == 1
    assert poller.invocations == 0  # the filter dropped it and the checkpoint passed it
    orders.put("o2", status="paid")
    assert poller.poll_once() == 1
    orders.harness.join()
    assert got == ["o2"]
    [invocation] = orders.events
    assert [r["dynamodb"]["Keys"] for r in invocation["event"]["Records"]] == [{"pk": {"S": "o2"}}]


def test_numbers_moto_keeps_as_written_arrive_as_aws_delivers_them(orders: Orders) -> None:
    """moto's stream carries ``"10.0"`` and ``"1e3"`` as written; DynamoDB stores, and its
    stream carries, ``"10"`` and ``"1000"``: the poller delivers those, so ``F.total == 10``
    and an ``int`` field behave on dev as on AWS."""
    got: list[tuple[str, int]] = []

    @orders.app.on_change(orders.table, mode="inline", where=F.total == 10, retry=1)
    def tens(change: Change[Order], ctx: JobContext) -> None:
        assert change.new is not None
        got.append((change.new.pk, change.new.total))

    @orders.app.on_change(orders.table, mode="inline", retry=1)
    def every(change: Change[Order], ctx: JobContext) -> None:
        assert change.new is not None
        got.append((change.new.pk, change.new.total))

    for pk, written in (("n1", "10.0"), ("n2", "1e3"), ("n3", "0010")):
        item = {"pk": {"S": pk}, "status": {"S": "paid"}, "total": {"N": written}}
        orders.db.put_item(TableName=orders.name, Item=item)
    assert orders.poller().poll_once() == 3
    [invocation] = orders.events
    records = invocation["event"]["Records"]
    assert [r["dynamodb"]["NewImage"]["total"] for r in records] == [
        {"N": "10"},
        {"N": "1000"},
        {"N": "10"},
    ]
    assert invocation["response"] == {"batchItemFailures": []}
    assert got == [("n1", 10), ("n1", 10), ("n2", 1000), ("n3", 10), ("n3", 10)]


def test_changed_skips_a_modify_that_leaves_status_alone(orders: Orders) -> None:
    got: list[tuple[str, str]] = []

    @orders.app.on_change(orders.table, on={"modify"}, changed=("status",))
    def status_moved(change: Change[Order], ctx: JobContext) -> None:
        assert change.new is not None
        assert change.old is not None
        got.append((change.old.status, change.new.status))

    poller = orders.poller()
    orders.put("o1", status="new", total=10)
    orders.put("o1", status="new", total=12)  # a modify, status the same
    poller.poll_once()
    orders.harness.join()
    assert got == []
    assert orders.jobs("status_moved") == []
    assert len(orders.events) == 1  # the modify passed the filter; changed= dropped it
    orders.put("o1", status="paid", total=12)
    poller.poll_once()
    orders.harness.join()
    assert got == [("new", "paid")]


def test_inline_batch_stops_at_the_failing_record_and_resumes_there(orders: Orders) -> None:
    runs: list[str] = []
    failing = {"o3"}

    @orders.app.on_change(orders.table, mode="inline", retry=5)
    def ship(change: Change[Order], ctx: JobContext) -> None:
        assert change.new is not None
        runs.append(change.new.pk)
        if change.new.pk in failing:
            failing.discard(change.new.pk)
            raise RuntimeError("carrier down")

    for n in range(1, 6):
        orders.put(f"o{n}")
    poller = orders.poller()
    poller.poll_once()
    first = orders.events[0]
    third = first["sequences"][2]
    assert first["response"] == {"batchItemFailures": [{"itemIdentifier": third}]}
    assert runs == ["o1", "o2", "o3"]  # 4 and 5 not run in that invocation
    poller.poll_once()
    assert orders.events[1]["sequences"] == first["sequences"][2:]
    assert orders.events[1]["response"] == {"batchItemFailures": []}
    assert runs == ["o1", "o2", "o3", "o3", "o4", "o5"]
    assert poller.poll_once() == 0
    assert len(orders.events) == 2
    assert orders.harness.pending == 0  # inline: nothing went through the queue
    assert {j.status for j in orders.jobs("ship")} == {JobStatus.SUCCEEDED}


def test_the_same_record_delivered_twice_is_one_job(orders: Orders) -> None:
    runs: list[str] = []

    @orders.app.on_change(orders.table)
    def count(change: Change[Order], ctx: JobContext) -> None:
        runs.append(change.event_id)

    orders.put("o1")
    orders.poller().poll_once()
    again = orders.invoke(copy.deepcopy(orders.events[0]["event"]))  # at least once
    assert again == {"batchItemFailures": []}
    orders.harness.join()
    assert len(runs) == 1
    assert len(orders.jobs("count")) == 1


def test_a_malformed_image_is_a_rejected_job_and_the_shard_moves_on(orders: Orders) -> None:
    got: list[int] = []

    @orders.app.on_change(orders.table)
    def total(change: Change[Order], ctx: JobContext) -> None:
        assert change.new is not None
        got.append(change.new.total)

    poller = orders.poller()
    orders.put("bad", total="ten")
    orders.put("good", total=7)
    poller.poll_once()
    orders.harness.join()
    assert got == [7]
    assert orders.events[0]["response"] == {"batchItemFailures": []}
    [rejected] = [j for j in orders.jobs("total") if j.status is JobStatus.REJECTED]
    assert rejected.error is not None
    assert [f.path for f in rejected.error.fields] == ["input.new.total"]
    assert poller.poll_once() == 0
    assert poller.discarded == []


def test_a_ttl_removal_is_flagged(orders: Orders) -> None:
    got: list[bool] = []

    @orders.app.on_change(orders.table, on={"remove"})
    def gone(change: Change[Order], ctx: JobContext) -> None:
        assert change.old is not None
        assert change.new is None
        got.append(change.is_ttl_expiry)

    orders.put("o1")
    orders.db.delete_item(TableName=orders.name, Key={"pk": {"S": "o1"}})
    orders.poller().poll_once()
    orders.harness.join()
    assert got == [False]  # a user's delete
    event = copy.deepcopy(orders.events[0]["event"])
    [removal] = event["Records"]
    assert "userIdentity" not in removal  # moto writes none; DynamoDB's TTL writes this one:
    removal["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    removal["eventID"] = uuid.uuid4().hex
    orders.invoke(event)
    orders.harness.join()
    assert got == [False, True]


def test_a_handler_that_raises_gets_the_whole_batch_again_and_nothing_runs_twice(
    orders: Orders,
) -> None:
    runs: list[str] = []

    @orders.app.on_change(orders.table)
    def count(change: Change[Order], ctx: JobContext) -> None:
        assert change.new is not None
        runs.append(change.new.pk)

    def flaky(event: dict[str, Any], context: Any) -> Any:
        answer = orders.invoke(event, context)
        if len(orders.events) == 1:  # the jobs were sent, then the function died: answer lost
            raise ConnectionError("the store went away")
        return answer

    for n in range(1, 4):
        orders.put(f"o{n}")
    poller = LocalStreamPoller(
        flaky, orders.stream_arn, orders.streams, criteria=table_criteria(orders.app, orders.name)
    )
    poller.poll_once()
    poller.poll_once()
    assert orders.events[1]["sequences"] == orders.events[0]["sequences"]  # the whole batch
    assert poller.poll_once() == 0
    orders.harness.join()
    assert sorted(runs) == ["o1", "o2", "o3"]
    assert len(orders.jobs("count")) == 3


def test_retries_are_finite_and_the_failed_record_goes_to_the_on_failure_destination(
    orders: Orders,
) -> None:
    delivered: list[list[str]] = []
    discarded: list[dict[str, Any]] = []

    def refuse_o2(event: dict[str, Any], context: Any) -> Any:
        pks = [r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]]
        delivered.append(pks)
        bad = [r for r in event["Records"] if r["dynamodb"]["Keys"]["pk"]["S"] == "o2"]
        items = [{"itemIdentifier": r["dynamodb"]["SequenceNumber"]} for r in bad]
        return {"batchItemFailures": items}

    for n in range(1, 4):
        orders.put(f"o{n}")
    poller = LocalStreamPoller(
        refuse_o2, orders.stream_arn, orders.streams, max_retries=2, on_failure=discarded.append
    )
    for _ in range(4):
        poller.poll_once()
    assert delivered == [["o1", "o2", "o3"], ["o2", "o3"], ["o2", "o3"], ["o3"]]
    [info] = discarded
    assert info["requestContext"]["approximateInvokeCount"] == 3
    batch = info["DDBStreamBatchInfo"]
    assert batch["batchSize"] == 1
    assert batch["streamArn"] == orders.stream_arn
    assert poller.discarded == discarded


def test_a_raising_handler_past_its_retries_discards_the_whole_batch(orders: Orders) -> None:
    calls: list[int] = []

    def broken(event: dict[str, Any], context: Any) -> Any:
        calls.append(len(event["Records"]))
        raise RuntimeError("always")

    orders.put("o1")
    orders.put("o2")
    poller = LocalStreamPoller(broken, orders.stream_arn, orders.streams, max_retries=1)
    for _ in range(3):
        poller.poll_once()
    assert calls == [2, 2]
    [info] = poller.discarded
    assert info["DDBStreamBatchInfo"]["batchSize"] == 2
    orders.put("o3")
    poller.poll_once()
    assert calls == [2, 2, 1]


def test_a_failure_naming_no_record_of_the_batch_fails_the_whole_batch(orders: Orders) -> None:
    delivered: list[int] = []

    def confused(event: dict[str, Any], context: Any) -> Any:
        delivered.append(len(event["Records"]))
        failures = [{"itemIdentifier": "not-a-sequence"}] if len(delivered) == 1 else []
        return {"batchItemFailures": failures}

    orders.put("o1")
    orders.put("o2")
    poller = LocalStreamPoller(confused, orders.stream_arn, orders.streams)
    for _ in range(3):
        poller.poll_once()
    assert delivered == [2, 2]  # as Lambda: the whole batch again, then past it


def test_latest_starts_after_what_was_written_before(orders: Orders) -> None:
    keys: list[str] = []

    def note(event: dict[str, Any], context: Any) -> Any:
        keys.extend(r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"])
        return {"batchItemFailures": []}

    orders.put("before")
    poller = LocalStreamPoller(note, orders.stream_arn, orders.streams, starting_position="LATEST")
    assert poller.poll_once() == 0
    orders.put("after")
    poller.poll_once()
    assert keys == ["after"]
