"""Issue 15's proof: a fault at every call the job lifecycle makes, and nothing lost or doubled.

Every call the runtime makes to the job store, the payload store and SQS is an injection
point (``POINTS``). For each point and each fault kind (``faults.KINDS``: the call fails; it
lands but its answer is lost; the process dies right after it) at its first and second
occurrence, one batch of jobs with known plans runs through the real Lambda handler
(``make_handler``) over a simulated SQS with a fake clock (``tests/faults.py``), until the
queue is empty: redeliveries, visibility timeouts, lease expiries and redrive included. Then
the invariants are checked (``check``). Each queue configuration a user can choose runs the
whole matrix: an explicit ``dlq_url``; no ``dlq_url`` (the DLQ comes from the queue's redrive
policy); FIFO queues; and a worker without a job store, whose weaker promise (at least once,
nothing lost) is checked on its own terms; each on both batch paths (jobs side by side, and
one after another). ``MATRIX_FIGURE`` is the count the closing note
quotes; a slice of the same plans runs on moto through the shipped local event source mapping
in ``test_fault_slice_moto``.
"""

from __future__ import annotations

import json
import types
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pytest
from faults import (
    ATTEMPTS,
    KINDS,
    Crash,
    Done,
    Esm,
    FakeClock,
    Fault,
    Faults,
    FaultySqs,
    SimSqs,
    Work,
    work_task,
)
from taskhop.infra import DEFAULT_RECEIVES
from taskhop.lambda_worker import make_handler
from taskhop.sdk import App, ImplementOptions, JobContext, JobStatus, PermanentError, create_app
from taskhop.sdk.memory import MemoryPayloads, MemoryQueue, MemoryStore
from taskhop.static_contracts import dumps

VISIBILITY = 60.0


work = work_task("work", delay=5)

PLANS: dict[str, JobStatus | None] = {
    "ok": JobStatus.SUCCEEDED,
    "flaky": JobStatus.SUCCEEDED,  # its first run raises
    "doomed": JobStatus.FAILED,  # every run raises: attempts exhausted, dead-lettered
    "permanent": JobStatus.FAILED,  # PermanentError: recorded failed, not retried
    "invalid": JobStatus.REJECTED,  # no "n": rejected with its field path
    "keyed-a": JobStatus.SUCCEEDED,  # keyed-a and keyed-b share key K: one run between them
    "keyed-b": JobStatus.SUCCEEDED,
    "keyed-flaky": JobStatus.SUCCEEDED,  # key K2, first run raises (releases the key)
    "delayed": JobStatus.SUCCEEDED,  # not due for 100 s: waits without an attempt
    "offloaded": JobStatus.SUCCEEDED,  # input in the payload store (input_ref)
    "slow": JobStatus.SUCCEEDED,  # first run outlasts the visibility timeout: redelivered mid-run
    "poison": None,  # not an envelope: dead-lettered
}
DEAD = {"doomed", "poison"}

POINTS = (
    "store.begin",
    "store.claim_key",
    "store.complete",
    "store.complete_key",
    "store.release_key",
    "payloads.get",
    "payloads.delete",
    "sqs.dlq_send",
    "sqs.resend",
    "sqs.change_visibility",
    "sqs.delete",
    "sqs.get_queue_attributes",
    "sqs.get_queue_url",
    "esm.delete",
)
"""Every call a job's lifecycle makes on the worker side (producer calls are not here)."""

DUPLICATE_DEAD_LETTER_OK = {("sqs.dlq_send", "lost"), ("sqs.dlq_send", "crash")}
"""Where a standard DLQ may get a second copy of one dead letter: the send landed, and the
runtime could not know (its answer was lost, or the process died before the delete). Both
copies carry the job id; a FIFO DLQ deduplicates them."""

QUEUES = ("dlq_url", "redrive_policy", "fifo", "no_store")
CONFIGS = (*QUEUES, *(f"{queue}/in_order" for queue in QUEUES))
"""Each queue configuration on both batch paths: a batch's jobs side by side (their store
round trips overlapped, as the runtime does with a store that does I/O), and one after another
(``concurrency=1``)."""


@dataclass
class World:
    """One run: the simulated queues, the stores, the runtime and what the handler saw."""

    clock: FakeClock
    sqs: SimSqs
    faults: Faults
    store: MemoryStore | None
    payloads: MemoryPayloads
    app: App
    queue_url: str
    dlq_url: str
    esm: Esm
    runs: list[tuple[str, int, str]] = field(default_factory=list)
    jobs: dict[str, str] = field(default_factory=dict)  # plan -> job id
    overlaps: list[str] = field(default_factory=list)  # jobs whose handler ran beside itself


def build(config: str, fault: Fault | None, monkeypatch: pytest.MonkeyPatch) -> World:
    clock = FakeClock()
    fake_time = types.SimpleNamespace(
        time=clock.time, monotonic=clock.monotonic, sleep=clock.sleep, perf_counter=clock.now
    )
    import taskhop.sdk._batch as batch_module
    import taskhop.sdk._memory_store as memory_store
    import taskhop.sdk._store as store_module
    import taskhop.sdk._worker as worker_module
    import taskhop.static_contracts._envelope as envelope_module

    for module in (worker_module, store_module, memory_store, batch_module):
        monkeypatch.setattr(module, "time", fake_time)

    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.fromtimestamp(clock.now, tz)

    monkeypatch.setattr(envelope_module, "datetime", FakeDatetime)

    sqs = SimSqs(clock)
    queue, _, path = config.partition("/")
    fifo = queue == "fifo"
    suffix = ".fifo" if fifo else ""
    dlq_url = sqs.create(f"jobs-dlq{suffix}")
    queue_url = sqs.create(
        f"jobs{suffix}",
        visibility=VISIBILITY,
        redrive_to=f"jobs-dlq{suffix}",
        max_receives=DEFAULT_RECEIVES,
    )
    faults = Faults(fault)
    store = None if queue == "no_store" else MemoryStore()
    payloads = MemoryPayloads()
    store_points = {
        m: f"store.{m}" for m in ("begin", "claim_key", "complete", "complete_key", "release_key")
    }
    app = create_app(
        queue=MemoryQueue(),  # never used: jobs go onto the simulated SQS directly
        store=None if store is None else faults.wrap(store, store_points),
        payloads=faults.wrap(payloads, {"get": "payloads.get", "delete": "payloads.delete"}),
    )
    world_runs: list[tuple[str, int, str]] = []

    active: set[str] = set()
    overlaps: list[str] = []

    def handler(data: Work, ctx: JobContext) -> Done:
        plan = data["plan"]
        world_runs.append((ctx.job_id, ctx.attempt, plan))
        first_run = sum(1 for r in world_runs if r[0] == ctx.job_id) == 1
        if ctx.job_id in active:
            overlaps.append(ctx.job_id)
        active.add(ctx.job_id)
        try:
            return _run(plan, first_run, data, ctx)
        finally:
            active.discard(ctx.job_id)

    def _run(plan: str, first_run: bool, data: Work, ctx: JobContext) -> Done:
        if plan == "slow" and first_run:
            # Still running when the visibility timeout ends: a second Lambda instance
            # receives the same message now (issue 15 #5), while this run goes on.
            clock.advance(VISIBILITY + 1)
            world.esm.poll_once(only=lambda body: ctx.job_id in body)
        if plan == "doomed" or (plan in ("flaky", "keyed-flaky") and first_run):
            raise RuntimeError(f"{plan} run fails")
        if plan == "permanent":
            raise PermanentError("this job cannot succeed")
        return Done(n=data["n"])

    # keyed-a and keyed-b share key K with different inputs: the key alone decides here
    # (the refusal of a mismatch is tests/test_idempotency_fingerprint.py's).
    app.implement(work, handler, ImplementOptions(idempotency="key"))
    client = FaultySqs(sqs, faults, {dlq_url})
    lambda_handler = make_handler(
        app, dlq_url=dlq_url if queue in ("dlq_url", "fifo", "no_store") else None,
        sqs_client=client, concurrency=1 if path == "in_order" else 4,
    )  # fmt: skip

    def delete(**kw: Any) -> Any:
        return faults.call("esm.delete", sqs.delete_message, **kw)

    esm = Esm(sqs, queue_url, lambda_handler, delete=delete)
    world = World(clock, sqs, faults, store, payloads, app, queue_url, dlq_url, esm, world_runs)
    world.overlaps = overlaps
    _send_plans(world, fifo)
    return world


def _send_plans(world: World, fifo: bool) -> None:
    keys = {"keyed-a": "K", "keyed-b": "K", "keyed-flaky": "K2"}
    for n, plan in enumerate(PLANS):
        if plan == "poison":
            body = "this is not an envelope"
        else:
            data: dict[str, Any] = {"plan": plan} if plan == "invalid" else {"plan": plan, "n": n}
            envelope = world.app.envelope("work", data, idempotency_key=keys.get(plan))
            if plan == "delayed":
                envelope = envelope.with_delay(100)
            if plan == "offloaded":
                ref = world.payloads.put(envelope.id, dumps(data))
                envelope = replace(envelope, input=None, input_ref=ref)
            world.jobs[plan] = envelope.id
            body = envelope.encode().decode()
        extra = {"MessageGroupId": f"g{n % 3}", "MessageDeduplicationId": f"d{n}"} if fifo else {}
        world.sqs.send_message(QueueUrl=world.queue_url, MessageBody=body, **extra)


def _dead_letters(world: World) -> list[str]:
    """The plan of every message in the DLQ ("poison" for the one that is not an envelope)."""
    by_id = {job_id: plan for plan, job_id in world.jobs.items()}
    found = []
    for message in world.sqs.queue(world.dlq_url).messages:
        try:
            found.append(by_id[json.loads(message.body)["id"]])
        except (ValueError, KeyError):
            found.append("poison")
    return found


def check(world: World, config: str, fault: Fault | None) -> None:
    """Every invariant of issue 15, for one finished run."""
    where = f"{config} {fault}"
    assert world.sqs.queue(world.queue_url).messages == [], f"{where}: left on the queue"
    if world.store is not None:
        assert not world.overlaps, f"{where}: ran beside itself: {world.overlaps}"
    runs = Counter((job, attempt) for job, attempt, _ in world.runs)
    if world.store is not None or fault is None or fault.kind == "fail":
        # Without a store nothing dedupes a message sent twice (its send's answer was lost,
        # or the process died before the original's delete): at least once, not exactly.
        assert max(runs.values()) == 1, f"{where}: an attempt ran twice: {runs}"
    per_job = Counter(job for job, _, _ in world.runs)
    assert max(per_job.values()) <= ATTEMPTS, f"{where}: more runs than attempts: {per_job}"
    dead = Counter(_dead_letters(world))
    # Without a store nothing records an end, so every failed or rejected job is a dead letter.
    expected_dead = DEAD if world.store is not None else DEAD | {"permanent", "invalid"}
    assert set(dead) == expected_dead, f"{where}: dead letters {dead}"
    key = None if fault is None else (fault.point, fault.kind)
    extra = sum(dead.values()) - len(dead)
    if world.sqs.queue(world.dlq_url).fifo or key not in DUPLICATE_DEAD_LETTER_OK:
        assert extra == 0, f"{where}: a dead letter twice: {dead}"
    else:
        assert extra <= 1, f"{where}: dead letters {dead}"
    keyed = [r for r in world.runs if r[2] in ("keyed-a", "keyed-b")]
    if world.store is None:
        _check_without_store(world, where)
        return
    assert len(keyed) == 1, f"{where}: key K ran its handler {len(keyed)} times"
    a, b = (world.store.get(world.jobs[p]) for p in ("keyed-a", "keyed-b"))
    assert a is not None, where
    assert b is not None, where
    assert a.result == b.result, where
    assert sum(1 for r in world.runs if r[2] == "keyed-flaky") == 2, where
    for plan, expected in PLANS.items():
        if expected is None:
            continue
        record = world.store.get(world.jobs[plan])
        assert record is not None, f"{where}: {plan} has no record"
        assert record.status is expected, f"{where}: {plan} ended {record.status}"
        assert record.lease_until is None, f"{where}: {plan} still leased"
        if expected is JobStatus.SUCCEEDED:  # keyed-a and keyed-b: whichever ran first
            ns = {list(PLANS).index(p) for p in ("keyed-a", "keyed-b")}
            mine = ns if plan.startswith("keyed-") and plan != "keyed-flaky" else None
            expect = mine or {list(PLANS).index(plan)}
            assert isinstance(record.result, dict), where
            assert record.result["n"] in expect, where
        if plan == "invalid":
            assert record.error is not None, where
            assert record.error.fields, where
    assert not [k for k, c in world.store._keys.items() if c.state == "in_progress"], where
    delayed = [r for r in world.runs if r[2] == "delayed"]
    # Waiting uses no attempt. A begin that landed unseen (lost, or a crash after it) is an
    # attempt the store cannot tell from one that ran, so the run after it is attempt 2.
    # A batch's jobs run side by side (the shipped runtime overlaps their store round trips),
    # and a crash anywhere in the batch stops the others between their steps: one that had
    # begun by then is such an attempt too (it never ran its handler: the runs say so).
    begun_unseen = fault is not None and (
        (fault.point == "store.begin" and fault.kind != "fail")
        or (fault.kind == "crash" and not config.endswith("/in_order"))
    )
    assert [a for _, a, _ in delayed] in ([1], [2] if begun_unseen else [1]), where


def _check_without_store(world: World, where: str) -> None:
    """Without a store the promise is at least once: every job ran to its end or is dead."""
    ran = {plan for _, _, plan in world.runs}
    for plan in PLANS:
        if plan in ("poison", "invalid", "doomed", "permanent"):
            continue
        assert plan in ran, f"{where}: {plan} never ran"
    assert "invalid" not in ran, f"{where}: the invalid job reached its handler"


def baseline_calls(config: str) -> dict[str, int]:
    """How many times each point is called in a run without faults."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        world = build(config, None, monkeypatch)
        world.esm.run()
        world.app.close()
    return dict(world.faults.calls)


def scenarios() -> list[tuple[str, Fault | None]]:
    """Every call of every point, in every configuration, with every fault kind."""
    cases: list[tuple[str, Fault | None]] = [(config, None) for config in CONFIGS]
    for config in CONFIGS:
        calls = baseline_calls(config)
        for point in POINTS:
            for occurrence in range(1, calls.get(point, 0) + 1):
                cases.extend((config, Fault(point, kind, occurrence)) for kind in KINDS)
    return cases


SCENARIOS = scenarios()
MATRIX_FIGURE = sum(1 for _, fault in SCENARIOS if fault is not None)
"""Faults injected: each call of each point, x fault kinds, x configurations."""


@pytest.mark.parametrize(
    ("config", "fault"),
    SCENARIOS,
    ids=lambda v: (
        v if isinstance(v, str) else "none" if v is None else f"{v.point}-{v.kind}-{v.occurrence}"
    ),
)
def test_fault_matrix(config: str, fault: Fault | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """One fault, then the system runs on: every invariant holds."""
    world = build(config, fault, monkeypatch)
    try:
        world.esm.run()
    finally:
        world.app.close()
    check(world, config, fault)


def test_every_point_is_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    """A point the lifecycle never calls would make its row of the matrix vacuous."""
    reached: set[str] = set()
    for config in CONFIGS:
        world = build(config, None, monkeypatch)
        world.esm.run()
        world.app.close()
        reached |= set(world.faults.calls)
    missing = set(POINTS) - reached
    assert not missing, f"never called: {sorted(missing)}"


def test_a_crash_is_not_caught_by_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """The crash fault must end the invocation, or it would test nothing."""
    world = build("dlq_url", Fault("store.begin", "crash"), monkeypatch)
    world.esm.poll_once()
    assert world.esm.crashes == 1
    assert isinstance(Crash("x"), BaseException)
    assert not isinstance(Crash("x"), Exception)
    world.app.close()


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
def test_a_three_day_delay_uses_no_attempt_and_is_never_redriven(
    fifo: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15 #11, at the smallest maxReceiveCount the guardrail allows (5)."""
    world = build("fifo" if fifo else "dlq_url", None, monkeypatch)
    world.sqs.queue(world.queue_url).messages.clear()
    world.sqs.queue(world.queue_url).redrive = (world.sqs.queue(world.dlq_url).name, 5)
    envelope = world.app.envelope("work", {"plan": "ok", "n": 0}).with_delay(3 * 86_400)
    extra = {"MessageGroupId": "g", "MessageDeduplicationId": "long"} if fifo else {}
    sent_at = world.clock.now
    world.sqs.send_message(
        QueueUrl=world.queue_url, MessageBody=envelope.encode().decode(), **extra
    )
    world.esm.run(horizon=4 * 86_400)
    assert [(attempt, plan) for _, attempt, plan in world.runs] == [(1, "ok")]
    assert world.sqs.queue(world.dlq_url).messages == []
    assert world.store is not None
    record = world.store.get(envelope.id)
    assert record is not None
    assert record.status is JobStatus.SUCCEEDED
    assert record.created_at - sent_at >= 3 * 86_400  # begun no earlier than it was due
    world.app.close()
