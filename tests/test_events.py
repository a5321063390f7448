"""Typed events end to end, on memory and on moto through the shipped Lambda runtime.

The prior-art note's acceptance scenarios for events (``../shared/prior-art``, section 1):
a pattern subscriber gets what it matches and nothing else; the same event delivered twice
runs each subscriber once; one subscriber's failure is its own; an invalid or unregistered
event raises before anything is sent; events from handlers and from task results are
published when, and only when, the job succeeds.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, cast

import attrs
import pytest
from taskhop.sdk import (
    App,
    ContractError,
    Event,
    EventSet,
    JobContext,
    JobStatus,
    PayloadError,
    PermanentError,
    UnknownEventError,
    ValidationError,
    define_event,
    define_task,
    delivery_job_id,
    static_event,
)
from taskhop.static_contracts import EventEnvelope

FAST = {"attempts": 3, "delay": 0.01, "jitter": False}


@attrs.frozen
class Placed:
    order_id: str
    total: int = attrs.field(validator=attrs.validators.ge(0))


@attrs.frozen
class Shipped:
    order_id: str
    carrier: str


@attrs.frozen
class UserCreated:
    user_id: str


@attrs.frozen
class Charge:
    order_id: str
    amount: int


@attrs.frozen
class Charged:
    order_id: str
    receipt: str


placed = define_event("order.placed", payload=Placed, key="order_id")
shipped = define_event("order.shipped", payload=Shipped, key="order_id")
user_created = define_event("user.created", payload=UserCreated)
paid = define_event("order.paid", payload=Charged, key="order_id")
charge = define_task("charge", input=Charge, output=Charged, retry=FAST)


class Seen:
    """What each subscriber ran, counted (thread-safe: workers run on threads)."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.payloads: dict[str, list[Any]] = {}
        self.lock = threading.Lock()

    def __call__(self, subscriber: str, event: Event[Any]) -> None:
        with self.lock:
            self.runs[subscriber] += 1
            self.payloads.setdefault(subscriber, []).append(event.payload)


@pytest.fixture
def seen(app: App) -> Seen:
    record = Seen()
    app.event(placed)
    app.event(shipped)
    app.event(user_created)
    app.event(paid)

    @app.on("order.*", retry=FAST)
    def audit(event: Event[Placed | Shipped | Charged], ctx: JobContext) -> None:
        record("audit", event)

    @app.on(placed, retry=FAST)
    def bill(event: Event[Placed], ctx: JobContext) -> None:
        record("bill", event)
        if event.payload.total == 13:
            raise PermanentError("unlucky order")

    @app.on(user_created | shipped, retry=FAST)
    def notify(event: Event[UserCreated | Shipped], ctx: JobContext) -> None:
        record("notify", event)

    return record


def test_a_pattern_subscriber_gets_what_it_matches_and_nothing_else(
    app: App, seen: Seen, harness: Any
) -> None:
    app.emit(placed, Placed("o1", 10))
    app.emit(shipped, Shipped("o1", "ups"))
    app.emit(user_created, UserCreated("u1"))
    harness.join()
    assert seen.runs == {"audit": 2, "bill": 1, "notify": 2}
    assert sorted(map(type, seen.payloads["audit"]), key=str) == sorted([Placed, Shipped], key=str)
    assert seen.payloads["bill"] == [Placed("o1", 10)]
    assert sorted(map(repr, seen.payloads["notify"])) == sorted(
        [repr(UserCreated("u1")), repr(Shipped("o1", "ups"))]
    )


def test_the_same_event_emitted_twice_runs_each_subscriber_once(
    app: App, seen: Seen, harness: Any
) -> None:
    first = app.emit(placed, Placed("o2", 5), id="evt-o2")
    harness.join()
    again = app.emit(placed, Placed("o2", 5), id="evt-o2")
    harness.join()
    assert first == again == "evt-o2"
    assert seen.runs == {"audit": 1, "bill": 1}
    record = app.store.get(delivery_job_id("evt-o2", "bill")) if app.store else None
    assert record is not None
    assert record.status is JobStatus.SUCCEEDED


def test_one_subscribers_failure_is_its_own(app: App, seen: Seen, harness: Any) -> None:
    ids = [app.emit(placed, Placed(f"o{t}", t)) for t in (12, 13, 14)]
    harness.join()
    assert app.store is not None
    bills = [app.store.get(delivery_job_id(i, "bill")) for i in ids]
    audits = [app.store.get(delivery_job_id(i, "audit")) for i in ids]
    assert [r.status if r else None for r in bills] == [
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.SUCCEEDED,
    ]
    assert all(r is not None and r.status is JobStatus.SUCCEEDED for r in audits)
    assert seen.runs == {"bill": 3, "audit": 3}  # a PermanentError is not retried


def test_an_invalid_payload_or_unknown_event_raises_before_anything_is_sent(
    app: App, seen: Seen, harness: Any
) -> None:
    sent: list[Any] = []
    real = app.carrier

    class Counting:
        def publish(self, events: Any) -> None:
            sent.append(events)
            real.publish(events)

        def check(self, events: Any) -> None: ...

        def close(self) -> None: ...

    app.carrier = Counting()
    with pytest.raises(PayloadError, match="payload"):
        app.emit(placed, Placed.__new__(Placed))  # no fields at all: not JSON-able as Placed
    with pytest.raises(ValidationError) as negative:
        app.emit(placed, cast("Any", {"order_id": "o", "total": -1}))  # raw JSON, as a body
    assert [e.path for e in negative.value.errors] == ["payload.total"]
    stranger = define_event("order.lost", payload=Placed)
    with pytest.raises(UnknownEventError, match=r"order\.lost"):
        app.emit(stranger, Placed("o", 1))
    harness.join()
    assert sent == []
    assert seen.runs == {}


def test_a_handlers_events_are_published_only_when_its_job_succeeds(
    app: App, seen: Seen, harness: Any
) -> None:
    tries: Counter[str] = Counter()

    @app.task(name="ship", retry=FAST)
    def ship(order_id: str, ctx: JobContext) -> str:
        tries[order_id] += 1
        ctx.emit(shipped, Shipped(order_id, "dhl"))
        if order_id == "flaky" and tries[order_id] == 1:
            raise RuntimeError("carrier API down")
        if order_id == "never":
            raise PermanentError("no such order")
        return order_id

    ship.dispatch("flaky")
    ship.dispatch("never")
    harness.join()
    assert tries == {"flaky": 2, "never": 1}
    # one event for the flaky job's success, none for the failed one, whatever the tries
    assert seen.runs == {"audit": 1, "notify": 1}
    assert seen.payloads["audit"] == [Shipped("flaky", "dhl")]


def test_a_task_result_publishes_its_domain_event(app: App, seen: Seen, harness: Any) -> None:
    @app.implement(charge)
    def charge_card(job: Charge, ctx: JobContext) -> Charged:
        if job.amount < 0:
            raise PermanentError("refund, not a charge")
        return Charged(job.order_id, f"r-{job.amount}")

    app.publishes(charge, paid)
    app.register(charge).dispatch(Charge("o7", 70))
    app.register(charge).dispatch(Charge("o8", -1))
    harness.join()
    assert seen.runs == {"audit": 1}
    assert seen.payloads["audit"] == [Charged("o7", "r-70")]


def test_a_transform_turns_the_output_into_the_payload(app: App, harness: Any) -> None:
    app.event(shipped)
    got: list[Shipped] = []

    @app.on(shipped)
    def track(event: Event[Shipped], ctx: JobContext) -> None:
        got.append(event.payload)

    @app.task(name="pack")
    def pack(order_id: str, ctx: JobContext) -> str:
        return order_id.upper()

    app.publishes(pack, shipped, lambda out: Shipped(out, "post"))
    pack.dispatch("o9")
    harness.join()
    assert got == [Shipped("O9", "post")]


# -- definitions ------------------------------------------------------------------------------


def test_patterns_resolve_against_registered_events_and_the_set_stays_closed() -> None:
    from taskhop.sdk import create_app

    app = create_app()
    app.event(placed)
    app.event(shipped)
    with pytest.raises(ContractError, match=r"Event\[Placed \| Shipped\]"):

        @app.on("order.*")
        def partial(event: Event[Placed], ctx: JobContext) -> None: ...

    @app.on("order.*")
    def audit(event: Event[Placed | Shipped], ctx: JobContext) -> None: ...

    assert app.events.subscriptions["audit"].events == ("order.placed", "order.shipped")
    with pytest.raises(ContractError, match="register events before their subscribers"):
        app.event(paid)
    with pytest.raises(UnknownEventError, match="matches no registered event"):

        @app.on("invoice.*")
        def nothing(event: Event[Placed], ctx: JobContext) -> None: ...

    with pytest.raises(ContractError, match="subscription pattern"):
        app.on("order.*x")
    app.close()


def test_a_delivered_payload_is_validated_with_field_paths(app: App, harness: Any) -> None:
    app.event(placed)

    @app.on(placed)
    def bill(event: Event[Placed], ctx: JobContext) -> None: ...

    forged = EventEnvelope("order.placed", {"order_id": "o", "total": "ten"}, id="forged")
    app.carrier.publish([forged])  # past emit's validation, as a foreign producer might
    harness.join()
    assert app.store is not None
    record = app.store.get(delivery_job_id("forged", "bill"))
    assert record is not None
    assert record.status is JobStatus.REJECTED
    assert record.error is not None
    assert [f.path for f in record.error.fields] == ["input.payload.total"]


def test_static_events_need_no_validator_on_the_edge() -> None:
    from typing import TypedDict

    class Signup(TypedDict):
        email: str

    event = static_event("user.signup", payload=Signup, key="email")
    envelope = EventEnvelope(event.name, {"email": "a@b.c"}, key=event.key_of({"email": "a@b.c"}))
    assert EventEnvelope.decode(envelope.encode()) == envelope
    exported = event.to_dict()
    assert (exported["name"], exported["kind"], exported["key"]) == (
        "user.signup",
        "static_event",
        "email",
    )
    assert isinstance(placed | shipped, EventSet)


def test_contracts_export_lists_events_with_their_schemas_and_subscribers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import sys
    import types

    from taskhop.sdk import create_app
    from taskhop.sdk._cli import main

    app = create_app()
    app.event(placed)
    app.event(shipped)

    @app.on("order.*")
    def audit(event: Event[Placed | Shipped], ctx: JobContext) -> None: ...

    module = types.ModuleType("events_export_app")
    module.app = app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "events_export_app", module)
    assert main(["contracts", "export", "--app", "events_export_app:app"]) == 0
    rows = json.loads(capsys.readouterr().out)
    task, *events = rows
    assert task["name"] == "audit"
    assert task["input"]["properties"]["payload"]["anyOf"] == [
        {"$ref": "#/$defs/Placed"},
        {"$ref": "#/$defs/Shipped"},
    ]
    assert [(e["event"], e["kind"], e["key"], e["subscribers"]) for e in events] == [
        ("order.placed", "define_event", "order_id", ["audit"]),
        ("order.shipped", "define_event", "order_id", ["audit"]),
    ]
    assert events[0]["payload"]["$defs"]["Placed"]["required"] == ["order_id", "total"]
    app.close()


def test_emit_many_validates_everything_first_then_publishes_once(
    app: App, seen: Seen, harness: Any
) -> None:
    with pytest.raises(ValidationError):
        app.emit_many(placed, [Placed("o20", 1), cast("Any", {"order_id": "o21", "total": -5})])
    harness.join()
    assert seen.runs == {}
    ids = app.emit_many(placed, [Placed(f"o{n}", n) for n in range(30, 33)])
    harness.join()
    assert len(ids) == 3
    assert seen.runs == {"audit": 3, "bill": 3}


def test_an_ordered_subscriber_gets_each_keys_events_in_order_in_process() -> None:
    """The embedded default keeps per-key order too: three workers, one key's event failing
    once holds that key's later events until its retry succeeds; other keys go on."""
    import time

    from taskhop.sdk import create_app
    from taskhop.sdk.memory import MemoryQueue, MemoryStore

    queue = MemoryQueue(workers=3, visibility=0.01)
    app = create_app(queue=queue, store=MemoryStore())
    app.event(placed)
    order: dict[str, list[int]] = {}
    lock = threading.Lock()
    failed: list[int] = []

    @app.on(placed, ordered=True, retry={"attempts": 3, "delay": 0.05, "jitter": False})
    def bill(event: Event[Placed], ctx: JobContext) -> None:
        with lock:
            order.setdefault(event.payload.order_id, []).append(event.payload.total)
        if event.payload.order_id == "A" and event.payload.total == 2 and not failed:
            failed.append(1)
            raise ConnectionError("the ledger is down for a moment")
        time.sleep(0.002)

    queue.serve(app)
    try:
        for n in range(1, 6):
            app.emit_many(placed, [Placed(key, n) for key in "ABC"])
        queue.join(timeout=20)
    finally:
        app.close()
    assert order["A"] == [1, 2, 2, 3, 4, 5]
    assert order["B"] == [1, 2, 3, 4, 5]
    assert order["C"] == [1, 2, 3, 4, 5]
    assert queue.dead_letters == []


def test_events_emitted_from_a_handlers_threads_each_get_their_own_id() -> None:
    """400 ``ctx.emit`` calls from 8 threads of one handler: 400 ids, 400 deliveries."""
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from taskhop.sdk import create_app
    from taskhop.sdk.testing import in_memory

    app = create_app()
    app.event(placed)
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    ids: list[str] = []

    @app.on(placed)
    def bill(event: Event[Placed], ctx: JobContext) -> None:
        with lock:
            seen[event.payload.order_id] += 1

    @app.task("fan")
    def fan(n: int, ctx: JobContext) -> None:
        with ThreadPoolExecutor(8) as pool:
            ids.extend(pool.map(lambda i: ctx.emit(placed, Placed(f"o{i}", i)), range(n)))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as much as the interpreter can
    try:
        with in_memory(app) as harness:
            app.get("fan").dispatch(400)
            harness.join()
    finally:
        sys.setswitchinterval(old)
        app.close()
    assert len(set(ids)) == 400
    assert len(seen) == 400
    assert set(seen.values()) == {1}


def test_a_carrier_that_refuses_for_good_fails_the_job_once() -> None:
    """A refusal no retry can fix (not retryable) ends the job as an EventError at once,
    rather than leaving it running until its lease ends and running the handler again."""
    from taskhop.sdk import TransportError, create_app
    from taskhop.sdk.testing import in_memory

    app = create_app()
    app.event(placed)
    runs: list[int] = []

    class Refusing:
        def publish(self, events: Any) -> None:
            raise TransportError("refused", job_ids=tuple(e.id for e in events), retryable=False)

        def check(self, events: Any) -> None: ...

        def close(self) -> None: ...

    @app.on(placed)
    def bill(event: Event[Placed], ctx: JobContext) -> None: ...

    @app.task("place", retry={"attempts": 3, "delay": 0, "jitter": False})
    def place(order_id: str, ctx: JobContext) -> None:
        runs.append(ctx.attempt)
        ctx.emit(placed, Placed(order_id, 1))

    app.carrier = Refusing()
    with in_memory(app) as harness:
        handle = app.get("place").dispatch("o1")
        harness.join()
        record = app.store.get(handle.id)  # type: ignore[union-attr]
    app.close()
    assert record is not None
    assert record.status is JobStatus.FAILED
    assert record.error is not None
    assert record.error.type == "EventError"
    assert runs == [1]


def test_a_carrier_without_the_whole_protocol_is_refused_when_the_app_is_made() -> None:
    """Refused at create_app, naming what is missing, never at a job's end."""
    from taskhop.sdk import create_app

    class PublishOnly:
        def publish(self, events: Any) -> None: ...

        def close(self) -> None: ...

    with pytest.raises(TypeError, match=r"PublishOnly is not an EventCarrier \(no check\)"):
        create_app(events=PublishOnly())  # type: ignore[arg-type]
