"""The fault matrix, extended to events: publish, the outbox's stream, the stream checkpoint.

Every call of the new paths fails, loses its answer (the call took effect, then raised), or
takes effect and then the host dies before the next step, at each of its occurrences:

- a job that emits (``ctx.emit``) and publishes a domain event: the carrier's publish and the
  store's completion that follows it;
- a stream batch carrying outbox items and table changes: each publish and each enqueue, with
  Lambda's rules for what comes again (from the reported record, or the whole batch when the
  invocation raised).

Invariants: the emitting job ends succeeded once; each subscriber runs once per event, each
trigger once per change; nothing is dead-lettered; no event is lost.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from taskhop.sdk import (
    App,
    Change,
    Event,
    JobContext,
    JobStatus,
    KeyClaim,
    define_event,
    define_table,
    serve_stream_records,
)
from taskhop.sdk.memory import MemoryQueue, MemoryStore
from taskhop.static_contracts import EventEnvelope

MODES = ("fail", "lost", "crash")


class Crash(Exception):
    """The host died right after the call took effect (its message comes back)."""


class Faults:
    """Arms one (point, occurrence, mode) and wraps the calls it may hit."""

    def __init__(self, point: str, occurrence: int, mode: str) -> None:
        self.point, self.occurrence, self.mode = point, occurrence, mode
        self.seen: Counter[str] = Counter()
        self.fired = False
        self.lock = threading.Lock()

    def call(self, point: str, fn: Callable[..., Any], *args: Any) -> Any:
        with self.lock:
            self.seen[point] += 1
            hit = not self.fired and point == self.point and self.seen[point] == self.occurrence
            if hit:
                self.fired = True
        if hit and self.mode == "fail":
            raise ConnectionError(f"injected: {point} failed")
        answer = fn(*args)
        if hit:
            raise (Crash if self.mode == "crash" else ConnectionError)(f"injected after {point}")
        return answer


@attrs.frozen
class Shipped:
    order_id: str


@attrs.frozen
class Order:
    pk: str
    status: str


shipped = define_event("order.shipped", payload=Shipped, key="order_id")
packed = define_event("order.packed", payload=Shipped, key="order_id")
orders = define_table("orders", item=Order, key="pk")


class FaultyCarrier:
    def __init__(self, inner: Any, faults: Faults) -> None:
        self.inner, self.faults = inner, faults

    def publish(self, events: Any) -> None:
        self.faults.call("publish", self.inner.publish, events)

    def check(self, events: Any) -> None:
        self.inner.check(events)

    def close(self) -> None: ...


class FaultyStore(MemoryStore):
    faults: Faults | None = None

    def complete(self, record: Any) -> bool:
        if self.faults is None:
            return super().complete(record)
        answer: bool = self.faults.call("complete", super().complete, record)
        return answer


def build(faults: Faults) -> tuple[App, MemoryQueue, FaultyStore, Counter[str]]:
    queue = MemoryQueue(visibility=0.01, max_receives=20)
    store = FaultyStore()
    app = App(transport=queue, store=store)
    app.carrier = FaultyCarrier(app.carrier, faults)
    app.event(shipped)
    app.event(packed)
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    def ran(key: str) -> None:
        with lock:
            runs[key] += 1

    @app.on("order.*", retry={"attempts": 10, "delay": 0, "jitter": False})
    def track(event: Event[Shipped], ctx: JobContext) -> None:
        ran(f"track:{event.name}:{event.payload.order_id}")

    @app.task("ship", retry={"attempts": 10, "delay": 0, "jitter": False})
    def ship(order_id: str, ctx: JobContext) -> str:
        ran(f"ship:{order_id}:{ctx.attempt}")
        ctx.emit(shipped, Shipped(order_id))
        return order_id

    app.publishes(ship, packed, Shipped)

    @app.on_change(orders, retry={"attempts": 10, "delay": 0, "jitter": False})
    def watch(change: Change[Order], ctx: JobContext) -> None:
        assert change.new is not None
        ran(f"watch:{change.new.pk}")

    store.faults = faults
    return app, queue, store, runs


def job_cases() -> Iterator[tuple[str, int, str]]:
    for point, count in (("publish", 1), ("complete", 3)):  # the job's, then two subscribers'
        for occurrence, mode in itertools.product(range(1, count + 1), MODES):
            yield point, occurrence, mode


@pytest.mark.parametrize(("point", "occurrence", "mode"), list(job_cases()))
def test_a_job_that_emits_survives_a_fault_at_each_call(
    point: str, occurrence: int, mode: str
) -> None:
    faults = Faults(point, occurrence, mode)
    app, queue, store, runs = build(faults)
    queue.serve(app)
    try:
        app.get("ship").dispatch("o1")
        queue.join(timeout=20)
    finally:
        app.close()
    record = store.get(next(r for r in store_ids(store) if not r.count(">")))
    assert faults.fired, "the fault point was never reached"
    assert record is not None
    assert record.status is JobStatus.SUCCEEDED
    assert all(n == 1 for k, n in runs.items() if k.startswith("ship:")), "an attempt ran twice"
    assert runs["track:order.shipped:o1"] == 1
    assert runs["track:order.packed:o1"] == 1
    assert queue.dead_letters == []


def store_ids(store: MemoryStore) -> list[str]:
    return [r.id for r in store.records()]


def stream_batch() -> list[dict[str, Any]]:
    arn = "arn:aws:dynamodb:us-east-1:1:table/{}/stream/x"
    records: list[dict[str, Any]] = []
    for n in range(1, 4):  # an outbox item, then a change of the user's table, three times
        event = EventEnvelope("order.shipped", {"order_id": f"s{n}"}, id=f"outbox-{n}", key=f"s{n}")
        records.append({"outbox": event, "seq": f"{2 * n}"})
        records.append(
            {
                "eventID": f"change-{n}",
                "eventName": "INSERT",
                "eventSource": "aws:dynamodb",
                "eventSourceARN": arn.format("orders"),
                "dynamodb": {
                    "SequenceNumber": f"{2 * n + 1}",
                    "Keys": {"pk": {"S": f"c{n}"}},
                    "NewImage": {"pk": {"S": f"c{n}"}, "status": {"S": "new"}},
                },
            }
        )
    return records


class OutboxMemoryStore(FaultyStore):
    """DynamoStore's outbox in memory: the end and its events are one atomic write, and only
    the write that records the end puts them (a repeat of a recorded end writes nothing). Its
    'stream' records carry the outbox events, as DynamoStore's do."""

    def __init__(self) -> None:
        super().__init__()
        self.stream: list[dict[str, Any]] = []
        self._writes = threading.Lock()

    def outbox_item(self, event: EventEnvelope) -> dict[str, Any]:
        return {"outbox": event}

    def outbox_event(self, record: Any) -> EventEnvelope | None:
        event: EventEnvelope | None = record.get("outbox")
        return event

    def outbox_events(self, since: Any = None) -> list[EventEnvelope]:
        return [record["outbox"] for record in self.stream]

    def complete_key_with_outbox(
        self, key: str, job_id: str, result: Any, entries: list[dict[str, Any]], *, attempt: int
    ) -> None:
        def transaction() -> None:
            with self._writes:
                job = MemoryStore.get(self, job_id)
                if job is None or job.status is not JobStatus.RUNNING or job.attempt != attempt:
                    return  # a stale attempt: neither the key nor its events
                if self._complete_claim(key, KeyClaim("completed", job_id, result=result)):
                    self._append(entries)

        if self.faults is None:
            return transaction()
        self.faults.call("complete_key", transaction)
        return None

    def _append(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            seq = str(len(self.stream) + 1)
            self.stream.append({**entry, "dynamodb": {"SequenceNumber": seq}})

    def outbox_entries(self, job_id: str, events: Any) -> list[dict[str, Any]]:
        return [self.outbox_item(e) for e in events]

    def complete_with_outbox(self, record: Any, entries: list[dict[str, Any]]) -> bool:
        def transaction() -> bool:
            with self._writes:
                before = MemoryStore.get(self, record.id)
                written = MemoryStore.complete(self, record)
                if written and not (before is not None and before.status.is_final):
                    self._append(entries)
                return written

        if self.faults is None:
            return transaction()
        answer: bool = self.faults.call("complete", transaction)
        return answer


def lambda_records(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in batch:
        if "outbox" in r:
            out.append({"outbox": r["outbox"], "dynamodb": {"SequenceNumber": r["seq"]}})
        else:
            out.append(r)
    return out


def deliver(app: App, pending: list[dict[str, Any]]) -> None:
    """Lambda's event source mapping: deliver until the shard is read, from the failed record
    on, or the whole batch again when the invocation raised or died."""
    for _ in range(10):
        if not pending:
            return
        try:
            answer = serve_stream_records(app, pending)
        except Exception:
            continue
        if answer.failed is None:
            return
        index = next(
            i for i, r in enumerate(pending) if r["dynamodb"]["SequenceNumber"] == answer.failed
        )
        pending = pending[index:]
    raise AssertionError(f"the stream was not read after 10 deliveries: {pending}")


def stream_cases() -> Iterator[tuple[str, int, str]]:
    for point, count in (("publish", 3), ("send", 6)):  # 3 outbox publishes, 3 enqueued changes
        for occurrence, mode in itertools.product(range(1, count + 1), MODES):
            yield point, occurrence, mode


@pytest.mark.parametrize(("point", "occurrence", "mode"), list(stream_cases()))
def test_a_stream_batch_survives_a_fault_at_each_publish_and_enqueue(
    point: str, occurrence: int, mode: str
) -> None:
    faults = Faults(point, occurrence, mode)
    queue = MemoryQueue(visibility=0.01)
    store = OutboxMemoryStore()
    app = App(transport=queue, store=store)
    app.carrier = FaultyCarrier(app.carrier, faults)
    real_send = queue.send_many
    queue.send_many = lambda envelopes: faults.call("send", real_send, envelopes)  # type: ignore[method-assign]
    app.event(shipped)
    runs: Counter[str] = Counter()

    @app.on(shipped)
    def track(event: Event[Shipped], ctx: JobContext) -> None:
        runs[event.payload.order_id] += 1

    @app.on_change(orders)
    def watch(change: Change[Order], ctx: JobContext) -> None:
        assert change.new is not None
        runs[change.new.pk] += 1

    queue.serve(app)
    try:
        deliver(app, lambda_records(stream_batch()))
        queue.join(timeout=20)
    finally:
        app.close()
    assert faults.fired, "the fault point was never reached"
    assert runs == {"s1": 1, "s2": 1, "s3": 1, "c1": 1, "c2": 1, "c3": 1}
    assert queue.dead_letters == []


# -- create_app(outbox=True): the job's events are written with its end -----------------------


def outbox_cases() -> Iterator[tuple[bool, str, int, str]]:
    # the job's end (with its two events, or its key's end with them), then two subscribers'
    # ends; the relay's one publish (the two outbox records are consecutive: one call)
    for keyed in (False, True):
        points = (("complete", 3), ("publish", 1)) + ((("complete_key", 1),) if keyed else ())
        for point, count in points:
            for occurrence, mode in itertools.product(range(1, count + 1), MODES):
                yield keyed, point, occurrence, mode


@pytest.mark.parametrize(("keyed", "point", "occurrence", "mode"), list(outbox_cases()))
def test_a_job_emitting_through_the_outbox_survives_a_fault_at_each_call(
    keyed: bool, point: str, occurrence: int, mode: str
) -> None:
    faults = Faults(point, occurrence, mode)
    queue = MemoryQueue(visibility=0.01, max_receives=20)
    store = OutboxMemoryStore()
    app = App(transport=queue, store=store, outbox=True)
    published: list[str] = []
    real = app.carrier

    class Relay:
        def publish(self, events: Any) -> None:
            faults.call("publish", real.publish, events)
            published.extend(e.id for e in events)

        def check(self, events: Any) -> None: ...

        def close(self) -> None: ...

    app.carrier = Relay()
    app.event(shipped)
    app.event(packed)
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    @app.on("order.*", retry={"attempts": 10, "delay": 0, "jitter": False})
    def track(event: Event[Shipped], ctx: JobContext) -> None:
        with lock:
            runs[f"track:{event.name}"] += 1

    @app.task("ship", retry={"attempts": 10, "delay": 0, "jitter": False})
    def ship(order_id: str, ctx: JobContext) -> str:
        with lock:
            runs[f"ship:{ctx.attempt}"] += 1
        ctx.emit(shipped, Shipped(order_id))
        return order_id

    app.publishes(ship, packed, Shipped)
    store.faults = faults
    queue.serve(app)
    try:
        job = app.get("ship").dispatch("o1", idempotency_key="ship-o1" if keyed else None)
        queue.join(timeout=20)
        assert published == [], "an event left before its job's end was written"
        deliver(app, list(store.stream))  # the job table's stream, as its mapping serves it
        queue.join(timeout=20)
    finally:
        app.close()
    assert faults.fired, "the fault point was never reached"
    record = store.get(job.id)
    assert record is not None
    assert record.status is JobStatus.SUCCEEDED
    assert len(store.stream) == 2, "the end's events were written more than once"
    assert all(n == 1 for k, n in runs.items() if k.startswith("ship:")), "an attempt ran twice"
    assert runs["track:order.shipped"] == 1
    assert runs["track:order.packed"] == 1
    assert queue.dead_letters == []
