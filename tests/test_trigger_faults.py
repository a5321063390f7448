"""Table triggers under faults: the invocation's deadline, a crash holding a lease, the
mapping's retry budget, an unreadable outbox item, and moto's non-canonical numbers.

Each test is one of helper-38's probes made a regression test. The stream is a fake one-shard
``dynamodbstreams`` client (``FakeStreams``), read by ``LocalStreamPoller`` through the shipped
Lambda handler, or a batch given to ``serve_stream_records`` directly.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import pytest
from taskhop.lambda_worker import make_handler
from taskhop.lambda_worker._infra import render
from taskhop.lambda_worker._stream_poller import (
    LocalStreamPoller,
    canonical_numbers,
    table_criteria,
)
from taskhop.sdk import (
    App,
    Change,
    ContractError,
    F,
    JobContext,
    JobRecord,
    JobStatus,
    OutboxStore,
    TransportError,
    serve_stream_records,
    trigger_job_id,
)
from taskhop.sdk.memory import MemoryQueue, MemoryStore
from taskhop.static_contracts import Envelope, EventEnvelope, JsonValue
from taskhop.static_contracts.limits import STREAM_MAPPING_RETRIES
from test_triggers import ARN, Order, orders, paid, record

NOW = {"attempts": 3, "delay": 0, "jitter": False}


@pytest.fixture
def app() -> Iterable[App]:
    application = App(transport=MemoryQueue(), store=MemoryStore())
    yield application
    application.close()


class FakeStreams:
    """One shard holding ``records``; an iterator is the position of its next record."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def describe_stream(self, StreamArn: str) -> Any:
        return {"StreamDescription": {"Shards": [{"ShardId": "s1"}]}}

    def get_shard_iterator(
        self,
        StreamArn: str,
        ShardId: str,
        ShardIteratorType: str,
        SequenceNumber: str | None = None,
    ) -> Any:
        sequences = [r["dynamodb"]["SequenceNumber"] for r in self.records]
        position = {"TRIM_HORIZON": 0, "LATEST": len(sequences)}.get(ShardIteratorType, 0)
        if ShardIteratorType == "AT_SEQUENCE_NUMBER":
            position = sequences.index(SequenceNumber)
        if ShardIteratorType == "AFTER_SEQUENCE_NUMBER":
            position = sequences.index(SequenceNumber) + 1
        return {"ShardIterator": str(position)}

    def get_records(self, ShardIterator: str, Limit: int) -> Any:
        position = int(ShardIterator)
        got = self.records[position : position + Limit]
        lambda_only = ("eventSource", "eventSourceARN")
        raw = [{k: v for k, v in r.items() if k not in lambda_only} for r in got]
        return {"Records": raw, "NextShardIterator": str(position + len(got))}


def job_status(app: App, rec: dict[str, Any], task: str) -> str | None:
    job = app.store.get(trigger_job_id(rec["eventID"], task)) if app.store else None
    return None if job is None else job.status.value


def sequence(rec: dict[str, Any]) -> str:
    value: str = rec["dynamodb"]["SequenceNumber"]
    return value


# --- 1. the deadline: a later record waits for a whole invocation --------------------------


def test_an_inline_job_is_not_started_without_its_timeout_left(app: App) -> None:
    """A 5 s trigger reached with 0.2 s left would time out and fail for good (attempts=1):
    the record is reported instead, so it comes first in the next invocation."""
    ran: list[str] = []

    @app.on_change(orders, mode="inline", retry={"attempts": 1}, timeout=5)
    def slow(change: Change[Order], ctx: JobContext) -> None:
        assert change.new is not None
        ran.append(change.new.pk)

    batch = [record("INSERT", new=paid(f"d{i}")) for i in range(3)]
    answer = serve_stream_records(app, batch, deadline=time.monotonic() + 0.2)
    assert answer.failed == sequence(batch[1])
    assert [job_status(app, r, "slow") for r in batch] == ["succeeded", None, None]
    answer = serve_stream_records(app, batch[1:], deadline=time.monotonic() + 30)
    assert answer.failed is None
    assert ran == ["d0", "d1", "d2"]
    assert [job_status(app, r, "slow") for r in batch] == ["succeeded"] * 3


def test_the_first_record_is_always_started_so_the_shard_never_stalls(app: App) -> None:
    ran: list[str] = []

    @app.on_change(orders, mode="inline", retry={"attempts": 1}, timeout=5)
    def quick(change: Change[Order], ctx: JobContext) -> None:
        assert change.new is not None
        ran.append(change.new.pk)

    batch = [record("INSERT", new=paid("f0")), record("INSERT", new=paid("f1"))]
    answer = serve_stream_records(app, batch, deadline=time.monotonic() + 4)
    assert (answer.failed, ran) == (sequence(batch[1]), ["f0"])


def test_an_inline_job_without_a_timeout_needs_a_second_left(app: App) -> None:
    ran: list[str] = []

    @app.on_change(orders, mode="inline", retry={"attempts": 1})
    def untimed(change: Change[Order], ctx: JobContext) -> None:
        assert change.new is not None
        ran.append(change.new.pk)

    batch = [record("INSERT", new=paid(f"u{i}")) for i in range(3)]
    assert serve_stream_records(app, batch, deadline=time.monotonic() + 0.5).failed == sequence(
        batch[1]
    )
    assert serve_stream_records(app, batch[1:], deadline=time.monotonic() + 5).failed is None
    assert ran == ["u0", "u1", "u2"]


def test_enqueue_triggers_take_no_budget(app: App) -> None:
    @app.on_change(orders, timeout=60)
    def queued(change: Change[Order], ctx: JobContext) -> None:
        pass

    batch = [record("INSERT", new=paid(f"q{i}")) for i in range(3)]
    answer = serve_stream_records(app, batch, deadline=time.monotonic() + 0.5)
    assert (answer.failed, answer.jobs) == (None, 3)


# --- 3. an inline trigger's attempts within the mapping's deliveries ------------------------


def test_inline_attempts_beyond_the_mapping_deliveries_are_refused(app: App) -> None:
    """Past 1 + STREAM_MAPPING_RETRIES deliveries the record is given up on while its job
    waits for a retry no one delivers: left RETRYING for good."""
    limit = 1 + STREAM_MAPPING_RETRIES

    def handler(change: Change[Order], ctx: JobContext) -> None:
        pass

    with pytest.raises(ContractError) as info:
        app.on_change(orders, mode="inline", retry=limit + 1, name="greedy")(handler)
    message = str(info.value)
    assert "'greedy'" in message
    assert f"allows {limit + 1} attempts" in message
    assert f"{limit} times at most" in message
    assert "greedy" not in app.tasks
    app.on_change(orders, mode="inline", retry=limit, name="fits")(handler)
    app.on_change(orders, retry=limit + 40, name="queued")(handler)  # the queue retries it


def test_the_mapping_the_dev_poller_and_the_limit_agree(app: App) -> None:
    @app.on_change(orders, mode="inline", retry=2)
    def watch(change: Change[Order], ctx: JobContext) -> None:
        pass

    [section] = [t for t in render(app)["triggers"] if t["table"] == "orders"]
    assert section["mapping"]["MaximumRetryAttempts"] == STREAM_MAPPING_RETRIES
    poller = LocalStreamPoller(make_handler(app), ARN, FakeStreams([]))
    assert poller.max_retries == STREAM_MAPPING_RETRIES


# --- 4. a crash mid-handler: the lease it holds does not cost the change --------------------


class Crash(BaseException):
    """The invocation died in the handler (a kill, an out-of-memory): nothing is recorded."""


def test_a_crashed_inline_job_goes_to_the_queue_and_runs_once_its_lease_ends(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dead invocation's lease makes each redelivery find the job busy; counting those as
    failures would use up the mapping's retries and lose the change. Handed to the queue, with
    its id, it runs as attempt 2 once the lease ends; attempt 1 never runs again."""
    attempts: Counter[tuple[str, int]] = Counter()
    crash = ["b"]

    @app.on_change(orders, mode="inline", retry=NOW, timeout=0.5)
    def watch(change: Change[Order], ctx: JobContext) -> None:
        assert change.new is not None
        attempts[change.new.pk, ctx.attempt] += 1
        if change.new.pk in crash:
            crash.clear()
            raise Crash

    batch = [record("INSERT", new=paid(pk)) for pk in ("a", "b", "c")]
    poller = LocalStreamPoller(
        make_handler(app), ARN, FakeStreams(batch), criteria=table_criteria(app, "orders")
    )
    with pytest.raises(Crash):
        poller.poll_once()
    for _ in range(1 + STREAM_MAPPING_RETRIES + 1):
        poller.poll_once()
    assert poller.discarded == []
    assert not poller.retrying
    assert [job_status(app, r, "watch") for r in batch] == ["succeeded", "running", "succeeded"]
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 600)  # the dead lease has run out
    queue = app.transport
    assert isinstance(queue, MemoryQueue)
    queue.serve(app)
    queue.join(timeout=20)
    assert job_status(app, batch[1], "watch") == "succeeded"
    assert attempts == {("a", 1): 1, ("b", 1): 1, ("b", 2): 1, ("c", 1): 1}
    assert queue.dead_letters == []


def test_a_busy_job_whose_hand_off_fails_fails_its_record(app: App) -> None:
    @app.on_change(orders, mode="inline", retry=NOW, timeout=0.5)
    def watch(change: Change[Order], ctx: JobContext) -> None:
        if change.new is not None and change.new.pk == "h1":
            raise Crash

    rec = record("INSERT", new=paid("h1"))
    with pytest.raises(Crash):
        serve_stream_records(app, [rec])

    def refuse(envelope: Envelope) -> None:
        raise TransportError("the queue is down", job_ids=(envelope.id,), retryable=True)

    app.transport.send = refuse  # type: ignore[method-assign]
    answer = serve_stream_records(app, [record("INSERT", new=paid("h0")), rec])
    assert answer.failed == sequence(rec)
    assert job_status(app, rec, "watch") == JobStatus.RUNNING.value


# --- the outbox: one unreadable item fails its record only ----------------------------------


class OutboxFake(MemoryStore):
    """A store keeping an outbox whose stream records carry the event (``"outbox"``), or an
    item that cannot be read (``"broken"``: ``outbox_event`` raises, as on a malformed item)."""

    def outbox_item(self, event: EventEnvelope) -> dict[str, Any]:
        return {"outbox": event}

    def outbox_event(self, record: Any) -> EventEnvelope | None:
        if "broken" in record:
            raise KeyError(record["broken"])
        event: EventEnvelope | None = record.get("outbox")
        return event

    def outbox_entries(self, job_id: str, events: Sequence[EventEnvelope]) -> list[Any]:
        return [self.outbox_item(e) for e in events]

    def complete_with_outbox(self, record: JobRecord, entries: Sequence[Any]) -> bool:
        return self.complete(record)

    def complete_key_with_outbox(
        self, key: str, job_id: str, result: JsonValue, entries: Sequence[Any], *, attempt: int
    ) -> None:
        self.complete_key(key, job_id, result)

    def outbox_events(self, since: datetime | None = None) -> list[EventEnvelope]:
        return []


class Published:
    """A carrier that keeps what it publishes, or raises ``error`` when given one."""

    def __init__(self) -> None:
        self.events: list[EventEnvelope] = []
        self.error: Exception | None = None

    def publish(self, events: Sequence[EventEnvelope]) -> None:
        if self.error is not None:
            raise self.error
        self.events.extend(events)

    def check(self, events: Sequence[EventEnvelope]) -> None:
        pass

    def close(self) -> None:
        pass


def outbox_app() -> tuple[App, Published]:
    store = OutboxFake()
    assert isinstance(store, OutboxStore)  # serve_stream_records reads its outbox
    outbox = App(transport=MemoryQueue(), store=store)
    carrier = Published()
    outbox.carrier = carrier
    return outbox, carrier


def outbox_record(seq: str, **fields: Any) -> dict[str, Any]:
    return {**fields, "dynamodb": {"SequenceNumber": seq}}


def test_an_unreadable_outbox_item_stops_the_batch_at_its_record_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Raising out of the batch would fail it whole: the events before it published again."""
    outbox, carrier = outbox_app()
    first = EventEnvelope("order.paid", {"order": "o1"}, id="ev-1")
    later = EventEnvelope("order.paid", {"order": "o3"}, id="ev-3")
    batch = [
        outbox_record("1", outbox=first),
        outbox_record("2", broken="secret-item-value"),
        outbox_record("3", outbox=later),
    ]
    with caplog.at_level(logging.ERROR, logger="taskhop"):
        answer = serve_stream_records(outbox, batch)
    assert (answer.failed, answer.jobs) == ("2", 1)
    assert [e.id for e in carrier.events] == ["ev-1"]
    assert "stream record 2: an outbox item that cannot be read: KeyError" in caplog.text
    assert "secret-item-value" not in caplog.text
    outbox.close()


def test_a_failed_publish_is_logged_by_its_type_only(caplog: pytest.LogCaptureFixture) -> None:
    outbox, carrier = outbox_app()
    carrier.error = RuntimeError("topic arn:aws:sns:secret-value unreachable")
    event = EventEnvelope("order.paid", {"order": "o1"}, id="ev-1")
    with caplog.at_level(logging.WARNING, logger="taskhop"):
        answer = serve_stream_records(outbox, [outbox_record("7", outbox=event)])
    assert answer.failed == "7"
    assert "RuntimeError" in caplog.text
    assert "secret-value" not in caplog.text
    outbox.close()


# --- 6. numbers as DynamoDB stores them, whatever moto kept ---------------------------------


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("10.0", "10"),
        ("1e3", "1000"),
        ("1E+3", "1000"),
        ("0010", "10"),
        ("-0", "0"),
        ("-0.0", "0"),
        ("1E-7", "0.0000001"),
        ("12.50", "12.5"),
        ("7", "7"),
    ],
)
def test_a_number_is_rewritten_in_canonical_form(written: str, stored: str) -> None:
    assert canonical_numbers({"N": written}) == {"N": stored}


def test_numbers_in_sets_maps_and_lists_are_rewritten_and_the_rest_left_alone() -> None:
    value = {
        "M": {
            "n": {"N": "1.0"},
            "s": {"S": "1.0"},
            "ns": {"NS": ["2.0", "2", "3e0"]},
            "l": {"L": [{"N": "4.00"}, {"SS": ["5.0"]}, {"M": {"x": {"N": "06"}}}]},
            "bad": {"N": "not-a-number"},
            "nan": {"N": "NaN"},
        }
    }
    assert canonical_numbers(value) == {
        "M": {
            "n": {"N": "1"},
            "s": {"S": "1.0"},
            "ns": {"NS": ["2", "3"]},
            "l": {"L": [{"N": "4"}, {"SS": ["5.0"]}, {"M": {"x": {"N": "6"}}}]},
            "bad": {"N": "not-a-number"},  # the decoder refuses it, by its path
            "nan": {"N": "NaN"},
        }
    }


def test_the_poller_delivers_numbers_as_aws_does(app: App) -> None:
    """moto's stream keeps ``"10.0"``: ``F.total == 10`` would miss it and an ``int`` field
    refuse ``"1e3"``, though AWS delivers ``"10"`` and ``"1000"``."""
    totals: list[int] = []

    @app.on_change(orders, mode="inline", where=F.total == 10, retry=1)
    def tens(change: Change[Order], ctx: JobContext) -> None:
        assert change.new is not None
        totals.append(change.new.total)

    @app.on_change(orders, mode="inline", retry=1)
    def every(change: Change[Order], ctx: JobContext) -> None:
        assert change.new is not None
        totals.append(change.new.total)

    batch = [record("INSERT", new=paid("n1")), record("INSERT", new=paid("n2"))]
    batch[0]["dynamodb"]["NewImage"]["total"] = {"N": "10.0"}
    batch[0]["dynamodb"]["Keys"]["n"] = {"N": "0010"}
    batch[1]["dynamodb"]["NewImage"]["total"] = {"N": "1e3"}
    delivered: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> Any:
        delivered.extend(event["Records"])
        return make_handler(app)(event, context)

    poller = LocalStreamPoller(
        handler, ARN, FakeStreams(batch), criteria=table_criteria(app, "orders")
    )
    poller.poll_once()
    assert [r["dynamodb"]["NewImage"]["total"] for r in delivered] == [{"N": "10"}, {"N": "1000"}]
    assert delivered[0]["dynamodb"]["Keys"]["n"] == {"N": "10"}
    assert totals == [10, 10, 1000]
    assert [job_status(app, r, "every") for r in batch] == ["succeeded"] * 2
