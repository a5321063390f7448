"""Table triggers served by ``serve_stream_records``, on memory and through the Lambda handler.

Stream records are built in the shape Lambda delivers them (DynamoDB Streams event, version
1.1); ``tests/test_triggers_aws.py`` takes them from a moto table's real stream.
"""

from __future__ import annotations

import base64
import threading
from collections import Counter
from typing import Any

import attrs
import pytest
from taskhop.sdk import (
    App,
    Change,
    ContractError,
    F,
    JobContext,
    JobStatus,
    PermanentError,
    define_table,
    serve_stream_records,
    trigger_job_id,
)

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-12-03T00:00:00.000"
FAST = {"attempts": 3, "delay": 0.01, "jitter": False}


@attrs.frozen
class Order:
    pk: str
    status: str
    total: int
    tags: frozenset[str] = frozenset()
    photo: bytes | None = None


orders = define_table("orders", item=Order, key="pk")


def image(order: dict[str, Any]) -> dict[str, Any]:
    """An item as DynamoDB attribute values (what a stream record's images hold)."""
    out: dict[str, Any] = {}
    for name, value in order.items():
        if isinstance(value, bool):
            out[name] = {"BOOL": value}
        elif isinstance(value, int):
            out[name] = {"N": str(value)}
        elif isinstance(value, bytes):
            out[name] = {"B": base64.b64encode(value).decode()}
        elif isinstance(value, set | frozenset):
            out[name] = {"SS": sorted(value)}
        else:
            out[name] = {"S": value}
    return out


_seq = iter(range(10**6, 10**7))


def record(
    kind: str,
    *,
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    ttl: bool = False,
) -> dict[str, Any]:
    sequence = str(next(_seq))
    item = new or old or {}
    stream: dict[str, Any] = {
        "ApproximateCreationDateTime": 1796270000,
        "Keys": {"pk": {"S": item["pk"]}},
        "SequenceNumber": sequence,
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new is not None:
        stream["NewImage"] = image(new)
    if old is not None:
        stream["OldImage"] = image(old)
    out: dict[str, Any] = {
        "eventID": f"ev{sequence}",
        "eventName": kind,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": stream,
        "eventSourceARN": ARN,
    }
    if ttl:
        out["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    return out


def paid(pk: str, total: int = 10, **more: Any) -> dict[str, Any]:
    return {"pk": pk, "status": "paid", "total": total, **more}


class Runs:
    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.changes: list[Change[Order]] = []
        self.lock = threading.Lock()

    def __call__(self, change: Change[Order]) -> None:
        with self.lock:
            item = change.new or change.old
            key = "?" if item is None else item.pk
            self.count[key] += 1
            self.changes.append(change)


def serve(app: App, backend: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """One stream batch: through the shipped Lambda handler on aws, directly on memory."""
    if backend == "aws":
        from taskhop.lambda_worker import make_handler

        answer: dict[str, Any] = make_handler(app)({"Records": records}, None)
        return answer
    return serve_stream_records(app, records).response()


def test_an_insert_becomes_one_typed_job(app: App, backend: str, harness: Any) -> None:
    runs = Runs()

    @app.on_change(orders, on={"insert"}, retry=FAST)
    def on_order(change: Change[Order], ctx: JobContext) -> None:
        runs(change)

    answer = serve(app, backend, [record("INSERT", new=paid("o1", 42, tags={"a", "b"}))])
    harness.join()
    assert answer == {"batchItemFailures": []}
    (change,) = runs.changes
    assert change.kind == "insert"
    assert change.new == Order("o1", "paid", 42, frozenset({"a", "b"}))
    assert change.old is None
    assert change.keys == {"pk": "o1"}
    assert not change.is_ttl_expiry


def test_where_and_changed_drop_what_should_not_run(app: App, backend: str, harness: Any) -> None:
    runs = Runs()

    @app.on_change(orders, on={"insert", "modify"}, where=F.status == "paid", changed=("status",))
    def on_paid(change: Change[Order], ctx: JobContext) -> None:
        runs(change)

    batch = [
        record("INSERT", new={"pk": "o2", "status": "new", "total": 1}),  # where drops it
        record("MODIFY", old={"pk": "o2", "status": "new", "total": 1}, new=paid("o2", 1)),
        record("MODIFY", old=paid("o2", 1), new=paid("o2", 2)),  # status unchanged
        record("REMOVE", old=paid("o2", 2)),  # not a kind it takes
    ]
    answer = serve(app, backend, batch)
    harness.join()
    assert answer == {"batchItemFailures": []}
    assert [(c.kind, c.old and c.old.status) for c in runs.changes] == [("modify", "new")]


def test_inline_mode_stops_at_the_first_failure_and_reports_only_it(
    app: App, backend: str, harness: Any
) -> None:
    runs = Runs()
    broken = {"o3"}

    @app.on_change(orders, mode="inline", retry={"attempts": 5, "delay": 0, "jitter": False})
    def audit(change: Change[Order], ctx: JobContext) -> None:
        runs(change)
        assert change.new is not None
        if change.new.pk in broken:
            raise RuntimeError("downstream is down")

    batch = [record("INSERT", new=paid(f"o{i}")) for i in range(1, 6)]
    answer = serve(app, backend, batch)
    assert answer == {
        "batchItemFailures": [{"itemIdentifier": batch[2]["dynamodb"]["SequenceNumber"]}]
    }
    assert runs.count == {"o1": 1, "o2": 1, "o3": 1}  # 4 and 5 were not attempted
    broken.clear()
    again = serve(app, backend, batch[2:])  # Lambda retries from the reported record
    assert again == {"batchItemFailures": []}
    assert runs.count == {"o1": 1, "o2": 1, "o3": 2, "o4": 1, "o5": 1}
    assert app.store is not None
    job = app.store.get(trigger_job_id(batch[2]["eventID"], "audit"))
    assert job is not None
    assert job.status is JobStatus.SUCCEEDED
    assert job.attempt == 2


def test_the_same_record_delivered_twice_is_one_job(app: App, backend: str, harness: Any) -> None:
    runs = Runs()

    @app.on_change(orders, retry=FAST)
    def once(change: Change[Order], ctx: JobContext) -> None:
        runs(change)

    same = record("INSERT", new=paid("o6"))
    serve(app, backend, [same])
    harness.join()
    serve(app, backend, [same])
    harness.join()
    assert runs.count == {"o6": 1}


def test_a_malformed_image_is_a_recorded_rejection_and_the_shard_moves_on(
    app: App, backend: str, harness: Any
) -> None:
    runs = Runs()

    @app.on_change(orders, retry=FAST)
    def strict(change: Change[Order], ctx: JobContext) -> None:
        runs(change)

    bad = record("INSERT", new={"pk": "o7", "status": "paid", "total": "many"})
    good = record("INSERT", new=paid("o8"))
    answer = serve(app, backend, [bad, good])
    harness.join()
    assert answer == {"batchItemFailures": []}
    assert runs.count == {"o8": 1}
    assert app.store is not None
    job = app.store.get(trigger_job_id(bad["eventID"], "strict"))
    assert job is not None
    assert job.status is JobStatus.REJECTED
    assert job.error is not None
    assert [f.path for f in job.error.fields] == ["input.new.total"]


def test_a_ttl_expiry_is_flagged(app: App, backend: str, harness: Any) -> None:
    runs = Runs()

    @app.on_change(orders, on={"remove"})
    def expired(change: Change[Order], ctx: JobContext) -> None:
        runs(change)

    serve(
        app,
        backend,
        [record("REMOVE", old=paid("o9"), ttl=True), record("REMOVE", old=paid("o10"))],
    )
    harness.join()
    flags = {c.old.pk: c.is_ttl_expiry for c in runs.changes if c.old}
    assert flags == {"o9": True, "o10": False}


def test_a_permanent_failure_in_inline_mode_is_recorded_and_the_shard_moves_on(
    app: App, backend: str, harness: Any
) -> None:
    runs = Runs()

    @app.on_change(orders, mode="inline")
    def picky(change: Change[Order], ctx: JobContext) -> None:
        runs(change)
        if change.new and change.new.pk == "o11":
            raise PermanentError("never")

    answer = serve(
        app, backend, [record("INSERT", new=paid("o11")), record("INSERT", new=paid("o12"))]
    )
    assert answer == {"batchItemFailures": []}
    assert runs.count == {"o11": 1, "o12": 1}


def test_definitions_are_checked_against_the_item_type() -> None:
    from taskhop.sdk import create_app

    app = create_app()
    with pytest.raises(ContractError, match="unknown attribute 'nope'"):
        app.on_change(orders, where=F.nope == 1)
    with pytest.raises(ContractError, match="changed= names unknown attribute 'colour'"):

        @app.on_change(orders, changed=("colour",))
        def colour(change: Change[Order], ctx: JobContext) -> None: ...

    with pytest.raises(ContractError, match="on must name"):

        @app.on_change(orders, on={"upsert"})  # type: ignore[arg-type]
        def upsert(change: Change[Order], ctx: JobContext) -> None: ...

    with pytest.raises(ContractError, match="key attribute 'id'"):
        define_table("orders", item=Order, key="id")
    app.close()
