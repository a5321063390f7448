"""The outbox: an event put in the same DynamoDB transaction as a business write.

On moto over HTTP: the event exists only if the transaction committed, the job table's
stream publishes it through the shipped Lambda handler, and the stream delivering the record
again (a crash after the publish, before the checkpoint) runs no subscriber twice.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from conftest import AwsHarness
from taskhop.sdk import (
    App,
    Event,
    JobContext,
    TaskhopError,
    TransportError,
    create_app,
    define_event,
)


@attrs.frozen
class Placed:
    order_id: str
    total: int


placed = define_event("order.placed", payload=Placed, key="order_id")


def moto_app(session: Any, *, outbox: bool = False) -> tuple[App, str, Any]:
    """An app on a fresh queue and a job table with its stream on (moto over HTTP)."""
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.backends.sqs import SqsQueue

    name = f"o-{uuid.uuid4().hex[:12]}"
    sqs = session.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    store = DynamoStore(name, session=session)
    store.create_table(stream=True)
    app = create_app(queue=SqsQueue(url, session=session), store=store, outbox=outbox)
    return app, url, sqs


@pytest.fixture
def stack(server_session: Any) -> Iterator[tuple[App, AwsHarness, Any, Counter[str]]]:
    app, url, sqs = moto_app(server_session)
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

    class RefusesTheSecond:
        """Consecutive outbox records are published in one call: this one takes the first
        event and refuses the rest, naming them, as SnsCarrier does."""

        def publish(self, events: Any) -> None:
            calls.append(len(events))
            if len(calls) == 1:
                real.publish(events[:1])
                raise TransportError("SNS refused some", job_ids=tuple(e.id for e in events[1:]))
            real.publish(events)

        def check(self, events: Any) -> None: ...

        def close(self) -> None: ...

    app.carrier = RefusesTheSecond()
    handler = make_handler(app, sqs_client=harness.sqs)
    second = records[1]["dynamodb"]["SequenceNumber"]
    assert handler({"Records": records}, None) == {
        "batchItemFailures": [{"itemIdentifier": second}]
    }
    assert handler({"Records": records[1:]}, None) == {"batchItemFailures": []}
    assert calls == [3, 2]  # one call per run of outbox records
    harness.drain()
    assert runs == {"o1": 1, "o2": 1, "o3": 1}


def test_a_carrier_outage_stops_the_batch_at_the_runs_first_record(
    stack: tuple[App, AwsHarness, Any, Counter[str]],
) -> None:
    from taskhop.lambda_worker import make_handler

    app, harness, session, runs = stack
    client = session.client("dynamodb")
    for n in (1, 2):
        client.transact_write_items(TransactItems=[app.outbox(placed, Placed(f"o{n}", n))])
    records = stream_records(session, app.store.table)  # type: ignore[union-attr]
    real = app.carrier

    class Down:
        def publish(self, events: Any) -> None:
            raise ConnectionError("SNS is unreachable")

        def check(self, events: Any) -> None: ...

        def close(self) -> None: ...

    app.carrier = Down()
    handler = make_handler(app, sqs_client=harness.sqs)
    first = records[0]["dynamodb"]["SequenceNumber"]
    assert handler({"Records": records}, None) == {"batchItemFailures": [{"itemIdentifier": first}]}
    app.carrier = real
    assert handler({"Records": records}, None) == {"batchItemFailures": []}
    harness.drain()
    assert runs == {"o1": 1, "o2": 1}


def test_the_memory_store_keeps_no_outbox() -> None:
    app = create_app()
    app.event(placed)
    with pytest.raises(TaskhopError, match="keeps no outbox"):
        app.outbox(placed, Placed("o", 1))
    app.close()


# -- a job's own events through the outbox (create_app(outbox=True)) --------------------------


class Recording:
    """A carrier that records what it is asked to publish, then publishes it."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.published = inner, []

    def publish(self, events: Any) -> None:
        self.published.extend(e.id for e in events)
        self.inner.publish(events)

    def check(self, events: Any) -> None:
        self.inner.check(events)

    def close(self) -> None: ...


shipped = define_event("order.shipped", payload=Placed, key="order_id")


@pytest.fixture
def outbox_stack(server_session: Any) -> Iterator[tuple[App, AwsHarness, Any, Counter[str]]]:
    """An app whose jobs' events go in their completion's transaction."""
    app, url, sqs = moto_app(server_session, outbox=True)
    app.carrier = Recording(app.carrier)
    app.event(placed)
    app.event(shipped)
    runs: Counter[str] = Counter()

    @app.on(placed | shipped)
    def bill(event: Event[Placed], ctx: JobContext) -> None:
        runs[f"{event.name}:{event.payload.order_id}"] += 1

    @app.task("place", retry={"attempts": 3, "delay": 0, "jitter": False})
    def place(order_id: str, ctx: JobContext) -> Placed:
        runs[f"place:{order_id}:{ctx.attempt}"] += 1
        if order_id.startswith("fail") and ctx.attempt > 1:
            from taskhop.sdk import PermanentError

            raise PermanentError("the order is gone")
        if order_id.startswith("many"):
            for n in range(100):
                ctx.emit(placed, Placed(f"{order_id}-{n}", n))
        else:
            ctx.emit(placed, Placed(order_id, 1))
        return Placed(order_id, 2)

    app.publishes(place, shipped)
    harness = AwsHarness(app, url, sqs)
    yield app, harness, server_session, runs
    app.close()


def relay(app: App, session: Any, harness: AwsHarness) -> list[dict[str, Any]]:
    """Serve the job table's stream as its mapping would (outbox records only), then drain."""
    from taskhop.lambda_worker import make_handler

    records = [
        r
        for r in stream_records(session, app.store.table)  # type: ignore[union-attr]
        if r["dynamodb"]["Keys"]["pk"]["S"].startswith("outbox#")
    ]
    if records:
        handler = make_handler(app, sqs_client=harness.sqs)
        assert handler({"Records": records}, None) == {"batchItemFailures": []}
    harness.drain()
    return records


def run_through_crashes(
    app: App, harness: AwsHarness, job_id: str, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """Poll the queue as Lambda would until the job is final; return its record.

    Leases and the visibility timeout are short, so a crashed invocation's message comes back
    in seconds; an invocation that dies (``Crash``) is only the end of that poll.
    """
    import taskhop.sdk._worker as worker_module
    from faults import Crash
    from taskhop.lambda_worker import LocalEventSourceMapping, make_handler
    from taskhop.static_contracts.limits import LAMBDA_SAFETY_MARGIN

    monkeypatch.setattr(worker_module, "DEFAULT_LEASE", 1.0)
    monkeypatch.setattr(worker_module, "LEASE_MARGIN", 0.5)
    harness.sqs.set_queue_attributes(QueueUrl=harness.url, Attributes={"VisibilityTimeout": "2"})
    store: Any = app.store
    mapping = LocalEventSourceMapping(
        make_handler(app, sqs_client=harness.sqs),
        harness.url,
        harness.sqs,
        wait_time=0,
        function_timeout=LAMBDA_SAFETY_MARGIN + 1.5,
    )
    deadline = time.monotonic() + 30
    while (record := store.get(job_id)) is None or not record.status.is_final:
        assert time.monotonic() < deadline, "the job never ended"
        try:
            if not mapping.poll_once():
                time.sleep(0.2)
        except Crash:
            pass
    return record


def test_a_jobs_events_are_written_with_its_success_and_published_from_the_stream(
    outbox_stack: tuple[App, AwsHarness, Any, Counter[str]],
) -> None:
    app, harness, session, runs = outbox_stack
    carrier: Any = app.carrier
    handle = app.get("place").dispatch("o1")
    harness.drain()
    assert handle.result(timeout=5) == Placed("o1", 2)
    assert carrier.published == []  # nothing left the job before its end was written
    assert len(relay(app, session, harness)) == 2  # ctx.emit's event and the domain event
    assert runs == {"place:o1:1": 1, "order.placed:o1": 1, "order.shipped:o1": 1}
    assert sorted(carrier.published) == sorted([f"{handle.id}.e0", f"{handle.id}.p0"])


def test_a_crash_before_the_end_then_a_permanent_failure_publishes_nothing(
    outbox_stack: tuple[App, AwsHarness, Any, Counter[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gap of publishing before the end: attempt 1 succeeds but its host dies as it
    writes the end; attempt 2 fails for good. No event of the failed job may exist."""
    from faults import Crash
    from taskhop.sdk import JobStatus

    app, harness, session, runs = outbox_stack
    store: Any = app.store

    crashed: list[str] = []

    def dies(**_: Any) -> None:
        if not crashed:
            crashed.append("before the transaction")
            raise Crash("TransactWriteItems")  # the process is gone before the request

    store.client.meta.events.register_first("before-call.dynamodb.TransactWriteItems", dies)
    handle = app.get("place").dispatch("fail-1")
    record = run_through_crashes(app, harness, handle.id, monkeypatch)
    assert record.status is JobStatus.FAILED
    assert runs["place:fail-1:1"] == 1
    assert runs["place:fail-1:2"] == 1
    assert relay(app, session, harness) == []
    assert [k for k in runs if k.startswith("order.")] == []


def test_a_crash_after_the_keys_end_still_publishes_the_jobs_events_once(
    outbox_stack: tuple[App, AwsHarness, Any, Counter[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an idempotency key the key is completed first; a crash right after it ends the
    job from the key on redelivery, without running the handler again. The events went with
    the key's write, so they are there, once."""
    from faults import Crash
    from taskhop.sdk import JobStatus

    app, harness, session, runs = outbox_stack
    store: Any = app.store
    crashed: list[str] = []

    def mark(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        items = params.get("TransactItems") or [{"Update": params}]
        update = items[0].get("Update", {})
        key = update.get("Key", {}).get("pk", {}).get("S", "")
        values = update.get("ExpressionAttributeValues", {})
        context["the key's write"] = key.startswith("key#") and {"S": "completed"} in [
            *values.values()
        ]

    def dies(context: dict[str, Any], **_: Any) -> None:
        if context.get("the key's write") and not crashed:
            crashed.append("after the key's write")  # whichever request writes it
            raise Crash("the host died right after the key's write")

    store.client.meta.events.register("before-parameter-build.dynamodb", mark)
    store.client.meta.events.register("after-call.dynamodb", dies)
    handle = app.get("place").dispatch("o7", idempotency_key="order-o7")
    record = run_through_crashes(app, harness, handle.id, monkeypatch)
    assert crashed
    assert record.status is JobStatus.SUCCEEDED
    assert runs["place:o7:1"] == 1
    assert not [k for k in runs if k.startswith("place:o7:") and k != "place:o7:1"]
    assert len(relay(app, session, harness)) == 2
    assert runs["order.placed:o7"] == 1
    assert runs["order.shipped:o7"] == 1


def test_a_lost_answer_from_the_transaction_writes_the_events_once(
    outbox_stack: tuple[App, AwsHarness, Any, Counter[str]],
) -> None:
    app, harness, session, runs = outbox_stack
    store: Any = app.store
    real, lost = store.client.transact_write_items, []

    def answer_lost(**kwargs: Any) -> Any:
        real(**kwargs)  # committed...
        if not lost:
            lost.append(1)
            raise ConnectionError("...but the answer never came")
        return {}

    store.client.transact_write_items = answer_lost
    handle = app.get("place").dispatch("o2")
    harness.drain()
    assert handle.result(timeout=5) == Placed("o2", 2)
    assert lost == [1]
    assert len(relay(app, session, harness)) == 2  # the retried transaction wrote nothing
    assert runs["order.placed:o2"] == 1
    assert runs["order.shipped:o2"] == 1
    assert runs["place:o2:1"] == 1  # the handler ran once


def test_a_stale_attempts_events_are_never_written(
    outbox_stack: tuple[App, AwsHarness, Any, Counter[str]],
) -> None:
    from taskhop.sdk import JobRecord, JobStatus

    app, _harness, session, _runs = outbox_stack
    store: Any = app.store
    now = time.time()
    newer = JobRecord("j1", "place", JobStatus.SUCCEEDED, 2, result=None, updated_at=now)
    assert store.complete(newer)
    envelope = app.emit_envelope(placed, Placed("o3", 1), id="j1.e1")
    older = JobRecord("j1", "place", JobStatus.SUCCEEDED, 1, result=None, updated_at=now)
    assert store.complete_with_outbox(older, store.outbox_entries("j1", [envelope])) is False
    keys = [r["dynamodb"]["Keys"]["pk"]["S"] for r in stream_records(session, store.table)]
    assert not [k for k in keys if k.startswith("outbox#")]


def test_too_many_events_fail_the_job_and_publish_nothing(
    outbox_stack: tuple[App, AwsHarness, Any, Counter[str]],
) -> None:
    from taskhop.sdk import JobStatus

    app, harness, session, runs = outbox_stack
    handle = app.get("place").dispatch("many")
    harness.drain()
    record = app.store.get(handle.id)  # type: ignore[union-attr]
    assert record is not None
    assert record.status is JobStatus.FAILED
    assert record.error is not None
    assert record.error.type == "ResultTooLarge"
    assert "101 events" in record.error.message
    assert "99 at most" in record.error.message
    assert runs["place:many:1"] == 1  # never retried: the same run gives the same events
    assert relay(app, session, harness) == []


def test_outbox_mode_needs_a_store_with_an_outbox() -> None:
    from taskhop.sdk.memory import MemoryQueue, MemoryStore

    with pytest.raises(TaskhopError, match=r"outbox=True needs a store with an outbox"):
        create_app(queue=MemoryQueue(), store=MemoryStore(), outbox=True)


def test_what_the_relay_gave_up_on_is_published_again_and_runs_once(
    outbox_stack: tuple[App, AwsHarness, Any, Counter[str]],
) -> None:
    """SNS down past the mapping's retries: the relay discards the records (its on-failure
    queue says which), but the outbox still holds the events; ``republish_outbox`` sends
    them, and a second republish runs no subscriber twice."""
    import datetime as dt

    from taskhop.lambda_worker import LocalStreamPoller, make_handler

    app, harness, session, runs = outbox_stack
    handle = app.get("place").dispatch("o5")
    harness.drain()
    assert handle.result(timeout=5) == Placed("o5", 2)
    real = app.carrier

    class Down:
        def publish(self, events: Any) -> None:
            raise ConnectionError("SNS is down")

        def check(self, events: Any) -> None: ...

        def close(self) -> None: ...

    app.carrier = Down()
    table = app.store.table  # type: ignore[union-attr]
    arn = session.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    outbox_only = {
        "Filters": [{"Pattern": '{"dynamodb": {"Keys": {"pk": {"S": [{"prefix": "outbox#"}]}}}}'}]
    }
    relay_ = LocalStreamPoller(
        make_handler(app, sqs_client=harness.sqs),
        arn,
        session.client("dynamodbstreams"),
        criteria=outbox_only,
        max_retries=1,
    )
    while relay_.poll_once():
        pass
    assert len(relay_.discarded) == 2  # both events given up on, one record at a time
    harness.drain()
    assert [k for k in runs if k.startswith("order.")] == []
    app.carrier = real
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert app.republish_outbox(since=later) == []
    ids = app.republish_outbox()
    assert sorted(ids) == sorted([f"{handle.id}.e0", f"{handle.id}.p0"])
    harness.drain()
    assert app.republish_outbox() == ids  # again: the subscribers' jobs are already done
    harness.drain()
    assert runs["order.placed:o5"] == 1
    assert runs["order.shipped:o5"] == 1


def test_events_republish_on_the_command_line(
    outbox_stack: tuple[App, AwsHarness, Any, Counter[str]],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from taskhop.sdk._cli import main

    app, harness, _session, _runs = outbox_stack
    app.get("place").dispatch("o6")
    harness.drain()
    capsys.readouterr()  # the worker's job lines
    (tmp_path / "republish_app.py").write_text(
        "import os\n"
        "from taskhop.backends.dynamodb import DynamoStore\n"
        "from taskhop.backends.sqs import SqsQueue\n"
        "from taskhop.sdk import create_app\n"
        "app = create_app(SqsQueue(os.environ['T_QUEUE']), DynamoStore(os.environ['T_TABLE']))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("T_QUEUE", harness.url)
    monkeypatch.setenv("T_TABLE", app.store.table)  # type: ignore[union-attr]
    assert main(["events", "republish", "--app", "republish_app:app", "--since", "2026-01-01"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["republished"] == 2
    assert sorted(i.rsplit(".", 1)[1] for i in answer["event_ids"]) == ["e0", "p0"]
    with pytest.raises(SystemExit) as refused:
        main(["events", "republish", "--app", "republish_app:app", "--since", "yesterday"])
    assert refused.value.code == 2
    assert "not an ISO 8601 time: 'yesterday'" in capsys.readouterr().err


def test_a_stale_keyed_attempt_writes_no_events_for_a_job_that_failed(
    server_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attempt 1 outlives its lease; attempt 2 takes the job and fails for good; then attempt 1
    returns after emitting. Its key's end carries its events, and the transaction checks that
    attempt 1 still owns the job: it does not, so neither is written."""
    import threading

    import taskhop.sdk._worker as worker_module
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.backends.sqs import SqsQueue
    from taskhop.sdk import JobStatus, OutcomeKind, PermanentError

    monkeypatch.setattr(worker_module, "DEFAULT_LEASE", 0.5)
    monkeypatch.setattr(worker_module, "LEASE_MARGIN", 0.2)
    name = f"p1-{uuid.uuid4().hex[:10]}"
    sqs = server_session.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    store = DynamoStore(name, session=server_session)
    store.create_table(stream=True)
    app = create_app(queue=SqsQueue(url, session=server_session), store=store, outbox=True)
    app.event(placed)

    @app.on(placed)
    def bill(event: Any, ctx: JobContext) -> None: ...

    body: list[str] = []
    inner: list[Any] = []

    @app.task("place", retry={"attempts": 3, "delay": 0, "jitter": False})
    def place(order_id: str, ctx: JobContext) -> str:
        if ctx.attempt == 1:
            time.sleep(1.0)  # the lease lapses: the host redelivers, attempt 2 takes the job
            t = threading.Thread(target=lambda: inner.append(app.worker().process(body[0])))
            t.start()
            t.join()
            ctx.emit(placed, Placed(order_id, 1))  # the stale attempt emits and "succeeds"
            return "stale"
        raise PermanentError("attempt 2: the order is gone")

    handle = app.get("place").dispatch("o1", idempotency_key="order-o1")
    msg = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"][0]
    body.append(msg["Body"])
    outer = app.worker().process(body[0])
    assert outer.kind is OutcomeKind.SKIPPED  # the stale attempt: nothing written
    record = store.get(handle.id)
    assert record is not None
    assert record.status is JobStatus.FAILED  # the job did not succeed...
    items = store.client.scan(TableName=name)["Items"]
    outbox = [i["pk"]["S"] for i in items if i["pk"]["S"].startswith("outbox#")]
    keys = [i for i in items if i["pk"]["S"].startswith("key#")]
    assert keys == []  # attempt 2 released it; the stale attempt did not complete it
    app.close()
    assert outbox == [], f"events of a FAILED job are in the outbox: {outbox}"


def test_an_event_the_carrier_can_never_send_fails_the_job_before_anything_is_written(
    server_session: Any,
) -> None:
    """outbox=True with an SnsCarrier that has no payloads=: a 300 KB event fits an outbox
    item but never an SNS message. The job fails (EventError) and nothing is in the outbox,
    rather than succeeding with an event that would hold the stream."""
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.backends.sns import SnsCarrier
    from taskhop.backends.sqs import SqsQueue
    from taskhop.sdk import JobStatus

    name = f"big-{uuid.uuid4().hex[:10]}"
    sqs, sns = server_session.client("sqs"), server_session.client("sns")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    store = DynamoStore(name, session=server_session)
    store.create_table(stream=True)
    topic = sns.create_topic(Name=name)["TopicArn"]
    app = create_app(
        queue=SqsQueue(url, session=server_session),
        store=store,
        events=SnsCarrier(topic, client=sns),
        outbox=True,
    )
    app.event(placed)

    @app.task("place")
    def place(order_id: str, ctx: JobContext) -> None:
        ctx.emit(placed, Placed(order_id + "x" * 300_000, 1))

    harness = AwsHarness(app, url, sqs)
    handle = app.get("place").dispatch("o1")
    harness.drain()
    record = store.get(handle.id)
    app.close()
    assert record is not None
    assert record.status is JobStatus.FAILED
    assert record.error is not None
    assert record.error.type == "EventError"
    assert "pass payloads=S3Payloads" in record.error.message
    keys = [r["dynamodb"]["Keys"]["pk"]["S"] for r in stream_records(server_session, name)]
    assert not [k for k in keys if k.startswith("outbox#")]


def test_create_table_turns_the_stream_on_for_a_table_made_without_one(
    server_session: Any,
) -> None:
    """Upgrading to the outbox: a table made before has no stream; asking for one turns it
    on, and a stream without new images is refused, never read past."""
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.sdk import StoreError

    name = f"up-{uuid.uuid4().hex[:10]}"
    store = DynamoStore(name, session=server_session)
    store.create_table()
    client = server_session.client("dynamodb")
    assert "StreamSpecification" not in client.describe_table(TableName=name)["Table"]
    store.create_table(stream=True)
    spec = client.describe_table(TableName=name)["Table"]["StreamSpecification"]
    assert spec == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    keys_only = f"ko-{uuid.uuid4().hex[:10]}"
    client.create_table(
        TableName=keys_only,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
    )
    with pytest.raises(StoreError, match="needs new images"):
        DynamoStore(keys_only, session=server_session).create_table(stream=True)


def test_an_outbox_record_without_its_image_is_an_error_not_no_event() -> None:
    """A KEYS_ONLY stream's outbox record names an event it cannot carry: raise, so the batch
    stops there, rather than answer None and let the checkpoint pass the event."""
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.sdk import StoreError

    store = DynamoStore("jobs", client=object())
    record = {
        "eventName": "INSERT",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/jobs/stream/x",
        "dynamodb": {"Keys": {"pk": {"S": "outbox#e1"}}, "SequenceNumber": "1"},
    }
    with pytest.raises(StoreError, match="no new image with its event"):
        store.outbox_event(record)


def test_republish_skips_what_it_cannot_read_and_reports_what_was_refused(
    outbox_stack: tuple[App, AwsHarness, Any, Counter[str]],
) -> None:
    from taskhop.sdk import TransportError

    app, harness, session, _runs = outbox_stack
    for order in ("o8", "o9"):
        app.get("place").dispatch(order)
    harness.drain()
    table = app.store.table  # type: ignore[union-attr]
    session.client("dynamodb").put_item(
        TableName=table, Item={"pk": {"S": "outbox#broken"}, "event": {"S": "{not json"}}
    )
    real, calls = app.carrier, []

    class FirstBatchRefused:
        def publish(self, events: Any) -> None:
            calls.append(len(events))
            if len(calls) == 1:
                raise TransportError("down", job_ids=tuple(e.id for e in events))
            real.publish(events)

        def check(self, events: Any) -> None: ...

        def close(self) -> None: ...

    import taskhop.sdk._app as app_module

    app.carrier = FirstBatchRefused()
    original = app_module._REPUBLISH_BATCH
    app_module._REPUBLISH_BATCH = 2  # two batches of two events
    try:
        with pytest.raises(TransportError) as refused:
            app.republish_outbox()
    finally:
        app_module._REPUBLISH_BATCH = original
    assert calls == [2, 2]  # the broken item skipped; the second batch sent after the first
    assert len(refused.value.job_ids) == 2
    assert "2 events published again" in str(refused.value)
