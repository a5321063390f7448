"""The fault matrix, extended to workflows: a fault at every call a workflow's life makes.

The same world as ``test_fault_matrix`` (``tests/faults.py``: a simulated SQS with a fake
clock, the shipped Lambda handler, a fault injector), running three workflows at once:

- a chord of three members (one fails its first run) whose callback sums them;
- a step graph with a decision, a skipped branch and a join;
- a parent job that awaits two children in turn with ``ctx.invoke`` (suspend and resume).

Every call the worker side makes is a point (``POINTS``): job-store calls, the workflow
document's read and conditional write (the advance and each member's record), the reads of
inputs, the send of each step, child and resume (``queue.send``), and the runtime's own SQS
calls. Each is made to fail, lose its answer and crash the process, at each of its
occurrences in a clean run. Then the queue drains (the sweeper runs once if anything is left
running, as its schedule would) and the invariants hold: every workflow ended in one final
state with the right result; no handler ran twice per attempt; each chord member was
recorded once and the callback ran once; each child ran once.
"""

from __future__ import annotations

import types
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from faults import KINDS, Crash, Esm, FakeClock, Fault, Faults, FaultySqs, SimSqs
from taskhop.lambda_worker import make_handler
from taskhop.sdk import App, JobContext, JobStatus, StepGraph, chord, create_app
from taskhop.sdk.memory import MemoryQueue, MemoryStore
from taskhop.sdk.workflows import engine_of
from taskhop.static_contracts import Envelope

VISIBILITY = 60.0
RETRY = {"attempts": 3, "delay": 5, "jitter": False}

POINTS = (
    "store.begin",
    "store.complete",
    "store.get",
    "store.get_many",
    "store.accept",
    "store.load_workflow",
    "store.save_workflow",
    "queue.send",
    "sqs.dlq_send",
    "sqs.resend",
    "sqs.change_visibility",
    "esm.delete",
)


class SimTransport:
    """The app's transport onto the simulated queue (steps, children and resumptions)."""

    def __init__(self, sqs: SimSqs, url: str, faults: Faults) -> None:
        self.sqs, self.url, self.faults = sqs, url, faults

    def send(self, envelope: Envelope) -> None:
        body = envelope.encode().decode()
        self.faults.call("queue.send", self.sqs.send_message, QueueUrl=self.url, MessageBody=body)

    def send_many(self, envelopes: Any) -> None:
        for envelope in envelopes:
            self.send(envelope)

    def close(self) -> None:
        pass


@dataclass
class World:
    clock: FakeClock
    sqs: SimSqs
    faults: Faults
    store: MemoryStore
    app: App
    esm: Esm
    runs: list[tuple[str, int, str]] = field(default_factory=list)
    handles: dict[str, Any] = field(default_factory=dict)


def build(fault: Fault | None, monkeypatch: pytest.MonkeyPatch) -> World:
    clock = FakeClock()
    fake_time = types.SimpleNamespace(
        time=clock.time, monotonic=clock.monotonic, sleep=clock.sleep, perf_counter=clock.now
    )
    import taskhop.sdk._batch as batch_module
    import taskhop.sdk._context as context_module
    import taskhop.sdk._memory_store as memory_store
    import taskhop.sdk._store as store_module
    import taskhop.sdk._worker as worker_module
    import taskhop.sdk._workflow_engine as engine_module
    import taskhop.static_contracts._envelope as envelope_module

    for module in (
        worker_module, store_module, memory_store, batch_module, engine_module, context_module,
    ):  # fmt: skip
        monkeypatch.setattr(module, "time", fake_time)

    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.fromtimestamp(clock.now, tz)

    monkeypatch.setattr(envelope_module, "datetime", FakeDatetime)
    sqs = SimSqs(clock)
    dlq_url = sqs.create("wf-dlq")
    url = sqs.create("wf", visibility=VISIBILITY, redrive_to="wf-dlq", max_receives=5)
    faults = Faults(None)  # armed after the producer's dispatch: its calls are not points
    store = MemoryStore()
    names = ("begin", "complete", "get", "get_many", "accept", "load_workflow", "save_workflow")
    wrapped = faults.wrap(store, {name: f"store.{name}" for name in names})
    app = create_app(queue=MemoryQueue(), store=wrapped)
    app.transport = SimTransport(sqs, url, faults)
    runs: list[tuple[str, int, str]] = []

    def ran(ctx: JobContext) -> None:
        # The store's attempt number: a resumed parent counts from 1 again in ctx.attempt.
        assert ctx.envelope is not None
        runs.append((ctx.job_id, ctx.envelope.attempt, ctx.task))

    @app.task(name="member", retry=RETRY)
    def member(x: int, ctx: JobContext) -> int:
        ran(ctx)
        if x == 2 and sum(1 for r in runs if r[0] == ctx.job_id) == 1:
            raise RuntimeError("the first run of member 2 fails")
        return x * 10

    @app.task(name="sum", retry=RETRY)
    def sum_(xs: list[int], ctx: JobContext) -> int:
        ran(ctx)
        return sum(xs)

    @app.task(name="route", retry=RETRY)
    def route(x: int, ctx: JobContext) -> str:
        ran(ctx)
        return "left"

    @app.task(name="named", retry=RETRY)
    def named(results: dict[str, int], ctx: JobContext) -> list[str]:
        ran(ctx)
        return sorted(results)

    @app.task(name="parent", retry=RETRY)
    def parent(x: int, ctx: JobContext) -> int:
        ran(ctx)
        first = ctx.invoke(member, x)
        return ctx.invoke(member, first + 1)

    lambda_handler = make_handler(
        app, dlq_url=dlq_url, sqs_client=FaultySqs(sqs, faults, {dlq_url}), concurrency=1
    )

    def delete(**kw: Any) -> Any:
        return faults.call("esm.delete", sqs.delete_message, **kw)

    world = World(clock, sqs, faults, store, app, Esm(sqs, url, lambda_handler, delete=delete))
    world.runs = runs
    world.handles["chord"] = chord([member.s(1), member.s(2), member.s(3)], sum_.s()).dispatch(
        stall_after=600
    )
    graph = StepGraph()
    start = graph.step("start", member.s(4))
    choice = graph.decision("route", route.s(), after=start)
    left = graph.step("left", member.s(), after=choice, input=start)
    right = graph.step("right", member.s(), after=choice, input=start)
    graph.step("join", named.s(), input={"left": left, "right": right})
    world.handles["graph"] = graph.dispatch(stall_after=600)
    world.handles["parent"] = parent.dispatch(5)
    faults.fault = fault
    faults.calls.clear()
    return world


def run(world: World) -> None:
    world.esm.run()
    docs = [world.store.load_workflow(world.handles[n].id) for n in ("chord", "graph")]
    if any(doc is not None and doc.doc["status"] == "running" for doc in docs):
        world.clock.advance(601)  # the sweeper's schedule comes round
        engine_of(world.app).sweep()
        world.esm.run()


def check(world: World, fault: Fault | None) -> None:
    where = str(fault)
    assert world.sqs.queue(world.esm.url).messages == [], f"{where}: left on the queue"
    runs = Counter((job, attempt) for job, attempt, _ in world.runs)
    assert max(runs.values()) == 1, f"{where}: an attempt ran twice: {runs}"
    assert world.handles["chord"].result(0) == 60, where
    assert world.handles["graph"].result(0) == {"join": ["left"]}, where
    assert world.handles["parent"].result(0) == 510, where
    chord_doc = world.handles["chord"].document()
    callbacks = [r for r in world.runs if r[2] == "sum"]
    assert len(callbacks) == 1, f"{where}: the callback ran {len(callbacks)} times"
    assert chord_doc["nodes"]["n3"]["by"] in {"n0", "n1", "n2"}, where
    states = {n["state"] for n in world.handles["graph"].document()["nodes"].values()}
    assert states == {"succeeded", "skipped"}, f"{where}: {states}"
    children = Counter(job for job, _, task in world.runs if "~" in job)
    assert set(children.values()) == {1}, f"{where}: a child ran twice: {children}"
    parent = world.store.get(world.handles["parent"].id)
    assert parent is not None, where
    assert parent.status is JobStatus.SUCCEEDED, where
    dlq = next(q for q in world.sqs.queues.values() if q.name == "wf-dlq")
    assert dlq.messages == [], f"{where}: dead-lettered: {[m.body for m in dlq.messages]}"


def scenarios() -> list[Fault | None]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        world = build(None, monkeypatch)
        run(world)
        calls = dict(world.faults.calls)
        world.app.close()
    cases: list[Fault | None] = [None]
    for point in POINTS:
        for occurrence in range(1, calls.get(point, 0) + 1):
            cases.extend(Fault(point, kind, occurrence) for kind in KINDS)
    return cases


SCENARIOS = scenarios()
WORKFLOW_MATRIX_FIGURE = sum(1 for fault in SCENARIOS if fault is not None)


@pytest.mark.parametrize(
    "fault",
    SCENARIOS,
    ids=lambda f: "none" if f is None else f"{f.point}-{f.kind}-{f.occurrence}",
)
def test_workflow_fault_matrix(fault: Fault | None, monkeypatch: pytest.MonkeyPatch) -> None:
    world = build(fault, monkeypatch)
    try:
        run(world)
    finally:
        world.app.close()
    world.faults.fault = None  # a point this run reached fewer times than the clean one's
    check(world, fault)


def test_every_workflow_point_is_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    world = build(None, monkeypatch)
    run(world)
    world.app.close()
    missing = {p for p in POINTS if not p.startswith("sqs.")} - set(world.faults.calls)
    assert not missing, f"never called: {sorted(missing)}"
    assert isinstance(Crash("x"), BaseException)
