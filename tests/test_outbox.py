"""The outbox: an event put in the same DynamoDB transaction as a business write.

On moto over HTTP: the event exists only if the transaction committed, the job table's
stream publishes it through the shipped Lambda handler, and the stream delivering the record
again (a crash after the publish, before the checkpoint) runs no subscriber twice.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from conftest import AwsHarness
from taskhop.sdk import App, Event, JobContext, TaskhopError, create_app, define_event


@attrs.frozen
class Placed:
    order_id: str
    total: int


placed = define_event("order.placed", payload=Placed, key="order_id")


@pytest.fixture
def stack(server_session: Any) -> Iterator[tuple[App, AwsHarness, Any, Counter[str]]]:
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.backends.sqs import SqsQueue

    name = f"o-{uuid.uuid4().hex[:12]}"
    sqs = server_session.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    store = DynamoStore(name, session=server_session)
    store.create_table(stream=True)
    app = create_app(queue=SqsQueue(url, session=server_session), store=store)
    app.event(placed)
    runs: Counter[str] = Counter()

    @app.on(placed)
    def bill(event: Event[Placed], ctx: JobContext) -> None:
        runs[event.payload.order_id] += 1

    harness = AwsHarness(app, url, sqs)
    yield app, harness, server_session, runs
    app.close()


def stream_records(session: Any, table: str) -> list[dict[str, Any]]:
    """Every record on the table's stream, shaped as Lambda delivers them."""
    arn = session.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    streams = session.client("dynamodbstreams")
    records: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for record in streams.get_records(ShardIterator=iterator)["Records"]:
            records.append({**record, "eventSource": "aws:dynamodb", "eventSourceARN": arn})
    return records


def orders_table(session: Any) -> str:
    name = f"orders-{uuid.uuid4().hex[:8]}"
    session.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def test_an_event_in_the_writes_transaction_is_published_once_from_the_stream(
    stack: tuple[App, AwsHarness, Any, Counter[str]],
) -> None:
    from taskhop.lambda_worker import make_handler

    app, harness, session, runs = stack
    orders = orders_table(session)
    client = session.client("dynamodb")
    client.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": orders, "Item": {"pk": {"S": "o1"}, "total": {"N": "10"}}}},
            app.outbox(placed, Placed("o1", 10), id="placed-o1"),
        ]
    )
    handler = make_handler(app, sqs_client=harness.sqs)
    records = stream_records(session, app.store.table)  # type: ignore[union-attr]
    assert len(records) == 1
    assert handler({"Records": records}, None) == {"batchItemFailures": []}
    harness.drain()
    # the stream delivers the record again (a crash before its checkpoint): no second run
    assert handler({"Records": records}, None) == {"batchItemFailures": []}
    harness.drain()
    assert runs == {"o1": 1}


def test_a_transaction_that_fails_emits_nothing(
    stack: tuple[App, AwsHarness, Any, Counter[str]],
) -> None:
    app, _harness, session, runs = stack
    orders = orders_table(session)
    client = session.client("dynamodb")
    client.put_item(TableName=orders, Item={"pk": {"S": "o2"}})
    with pytest.raises(client.exceptions.TransactionCanceledException):
        client.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": orders,
                        "Item": {"pk": {"S": "o2"}},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                app.outbox(placed, Placed("o2", 5)),
            ]
        )
    assert stream_records(session, app.store.table) == []  # type: ignore[union-attr]
    assert runs == {}


def test_a_failed_publish_stops_the_batch_at_its_record(
    stack: tuple[App, AwsHarness, Any, Counter[str]],
) -> None:
    from taskhop.lambda_worker import make_handler

    app, harness, session, runs = stack
    client = session.client("dynamodb")
    for n in (1, 2, 3):
        client.transact_write_items(TransactItems=[app.outbox(placed, Placed(f"o{n}", n))])
    records = stream_records(session, app.store.table)  # type: ignore[union-attr]
    real, calls = app.carrier, []

    class Flaky:
        def publish(self, events: Any) -> None:
            calls.append(events)
            if len(calls) == 2:
                raise ConnectionError("SNS is down")
            real.publish(events)

        def close(self) -> None: ...

    app.carrier = Flaky()
    handler = make_handler(app, sqs_client=harness.sqs)
    second = records[1]["dynamodb"]["SequenceNumber"]
    assert handler({"Records": records}, None) == {
        "batchItemFailures": [{"itemIdentifier": second}]
    }
    assert handler({"Records": records[1:]}, None) == {"batchItemFailures": []}
    harness.drain()
    assert runs == {"o1": 1, "o2": 1, "o3": 1}


def test_the_memory_store_keeps_no_outbox() -> None:
    app = create_app()
    app.event(placed)
    with pytest.raises(TaskhopError, match="keeps no outbox"):
        app.outbox(placed, Placed("o", 1))
    app.close()
