"""Workflows end to end, on memory and on moto through the shipped Lambda runtime.

Each scenario is taskora's or tasker's (``../shared/prior-art``), written the taskhop way:
chain, group, chord, map, chunk, step graphs with a diamond, decisions and batches; a failing
step, a cancel and a timeout; ``ctx.invoke`` / ``ctx.dispatch`` with suspension.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from taskhop.sdk import (
    App,
    JobContext,
    JobStatus,
    NonDeterminismError,
    PermanentError,
    StepGraph,
    TaskFailed,
    WorkflowCancelled,
    WorkflowDefinitionError,
    WorkflowFailed,
    chain,
    chord,
    group,
)
from taskhop.sdk import workflows as wf
from taskhop.sdk.testing import in_memory
from taskhop.sdk.workflows import engine_of

WAIT = 30.0


class Tasks:
    """A handful of tasks on ``app``, counting each handler run by task and input."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.runs: Counter[str] = Counter()
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.lock = threading.Lock()
        runs = self._ran

        @app.task(name="add", retry={"attempts": 3, "delay": 0.01, "jitter": False})
        def add(numbers: list[int], ctx: JobContext) -> int:
            runs("add", numbers)
            return sum(numbers)

        @app.task(name="double", retry={"attempts": 3, "delay": 0.01, "jitter": False})
        def double(x: int, ctx: JobContext) -> int:
            runs("double", x)
            return 2 * x

        @app.task(name="total")
        def total(numbers: list[int], ctx: JobContext) -> int:
            runs("total", numbers)
            return sum(numbers)

        @app.task(name="slow")
        async def slow(x: int, ctx: JobContext) -> int:
            # finishes in reverse order of x: group order must not follow finish order
            self.started[f"slow{x}"] = time.monotonic()
            await asyncio.sleep(0.05 * (4 - x))
            runs("slow", x)
            self.ended[f"slow{x}"] = time.monotonic()
            return x

        @app.task(name="boom")
        def boom(x: int, ctx: JobContext) -> int:
            runs("boom", x)
            raise PermanentError(f"boom on {x}")

        self.add, self.double, self.total, self.slow, self.boom = add, double, total, slow, boom

    def _ran(self, task: str, value: Any) -> None:
        with self.lock:
            self.runs[task] += 1
            self.runs[f"{task}:{value}"] += 1


@pytest.fixture
def tasks(app: App) -> Tasks:
    return Tasks(app)


@pytest.fixture
def side_by_side(app: App, backend: str) -> Iterator[None]:
    """Jobs that run at once: three memory workers (the Lambda runtime overlaps async ones)."""
    if backend != "memory":
        yield
        return
    with in_memory(app, workers=3):
        yield


# -- composition ----------------------------------------------------------------------------


def test_a_chain_pipes_each_output_into_the_next_step(tasks: Tasks) -> None:
    handle = chain(tasks.add.s([1, 2]), tasks.double.s()).dispatch()
    assert handle.result(WAIT) == 6
    assert handle.status() == "succeeded"


def test_a_bound_step_ignores_its_predecessors_output(tasks: Tasks) -> None:
    handle = chain(tasks.add.s([1, 2]), tasks.add.s([10, 20])).dispatch()
    assert handle.result(WAIT) == 30


def test_a_group_answers_in_declaration_order_whatever_the_finish_order(tasks: Tasks) -> None:
    handle = group(tasks.slow.s(1), tasks.slow.s(2), tasks.slow.s(3)).dispatch()
    assert handle.result(WAIT) == (1, 2, 3)


def test_a_chord_callback_runs_once_after_every_member_in_header_order(tasks: Tasks) -> None:
    handle = chord([tasks.slow.s(1), tasks.slow.s(2), tasks.slow.s(3)], tasks.total.s()).dispatch()
    assert handle.result(WAIT) == 6
    assert tasks.runs["total"] == 1
    assert tasks.runs["total:[1, 2, 3]"] == 1


def test_chord_members_may_be_chains(tasks: Tasks) -> None:
    header = [chain(tasks.add.s([1]), tasks.double.s()), chain(tasks.add.s([2]), tasks.double.s())]
    handle = chord(header, tasks.total.s()).dispatch()
    assert handle.result(WAIT) == 6  # [2, 4]
    assert tasks.runs["total:[2, 4]"] == 1


def test_map_and_chunk_keep_the_items_order(tasks: Tasks) -> None:
    assert wf.map(tasks.double.s(), [1, 2, 3]).dispatch().result(WAIT) == (2, 4, 6)
    assert wf.chunk(tasks.slow.s(), [3, 1, 2, 0], 2).dispatch().result(WAIT) == (3, 1, 2, 0)
    # chunks run one after another: the second starts after the first has ended
    assert min(tasks.started["slow2"], tasks.started["slow0"]) >= max(
        tasks.ended["slow3"], tasks.ended["slow1"]
    )


def test_an_unbound_first_step_is_refused_with_nothing_persisted(tasks: Tasks, app: App) -> None:
    flow: Any = chain(tasks.double.s(), tasks.double.s())
    with pytest.raises(WorkflowDefinitionError, match="must be bound"):
        flow.dispatch(id="never-stored")
    assert engine_of(app).store.load_workflow("never-stored") is None
    assert app.store is not None
    assert app.store.get("never-stored.n0") is None


def test_dispatching_an_existing_id_again_starts_nothing(tasks: Tasks) -> None:
    first = chain(tasks.add.s([1, 2]), tasks.double.s()).dispatch(id="same-workflow")
    assert first.result(WAIT) == 6
    again = chain(tasks.add.s([1, 2]), tasks.double.s()).dispatch(id="same-workflow")
    assert again.result(WAIT) == 6
    assert tasks.runs["add"] == 1
    assert tasks.runs["double"] == 1


# -- step graphs ----------------------------------------------------------------------------


def test_a_diamond_reads_both_branches_by_step_name(tasks: Tasks, app: App) -> None:
    @app.task(name="join")
    def join(results: dict[str, int], ctx: JobContext) -> str:
        return f"left={results['left']} right={results['right']}"

    graph = StepGraph()
    start = graph.step("start", tasks.add.s([2, 3]))
    left = graph.step("left", tasks.double.s(), after=start)
    right = graph.step("right", tasks.add.s([100]), after=start)
    end = graph.step("end", join.s(), after=(left, right))
    handle = graph.dispatch(end)
    assert handle.result(WAIT) == "left=10 right=100"
    assert [step.name for step in handle.steps()] == ["start", "left", "right", "end"]


def test_a_decision_runs_the_branch_it_names_and_the_join_still_runs(
    tasks: Tasks, app: App
) -> None:
    @app.task(name="route")
    def route(x: int, ctx: JobContext) -> str:
        return "big" if x > 10 else "small"

    @app.task(name="label")
    def label(results: dict[str, int], ctx: JobContext) -> list[str]:
        return sorted(results)

    def run(x: int) -> tuple[list[str], dict[str, str]]:
        graph = StepGraph()
        start = graph.step("start", tasks.double.s(x))
        choice = graph.decision("route", route.s(), after=start)
        big = graph.step("big", tasks.double.s(), after=choice, input=start)
        small = graph.step("small", tasks.add.s([1]), after=choice)
        after_small = graph.step("after_small", tasks.double.s(), after=small)
        end = graph.step("end", label.s(), input={"big": big, "after_small": after_small})
        handle = graph.dispatch(end)
        return handle.result(WAIT), {s.name or s.node: s.state for s in handle.steps()}

    names, states = run(20)
    assert names == ["big"]
    assert states["small"] == "skipped"
    assert states["after_small"] == "skipped"
    names, states = run(1)
    assert names == ["after_small"]
    assert states["big"] == "skipped"
    assert states["end"] == "succeeded"


def test_a_decision_naming_an_unknown_step_fails_the_workflow(tasks: Tasks, app: App) -> None:
    @app.task(name="lost")
    def lost(x: int, ctx: JobContext) -> str:
        return "nowhere"

    graph = StepGraph()
    choice = graph.decision("route", lost.s(1))
    graph.step("only", tasks.double.s(1), after=choice)
    with pytest.raises(WorkflowFailed, match="not among its branches"):
        graph.dispatch().result(WAIT)


def test_a_batchable_step_fans_out_and_aggregates_even_when_empty(tasks: Tasks, app: App) -> None:
    @app.task(name="split")
    def split(size: int, ctx: JobContext) -> list[list[int]]:
        return [[start, min(start + 10, size)] for start in range(0, size, 10)]

    @app.task(name="count")
    def count(cursor: list[int], ctx: JobContext) -> int:
        return cursor[1] - cursor[0]

    for size, workers in ((35, 4), (0, 0)):
        graph = StepGraph()
        counted = graph.batch("rows", split.s(size), worker=count.s(), aggregate=tasks.total.s())
        handle = graph.dispatch(counted)
        assert handle.result(WAIT) == size
        assert len([s for s in handle.steps() if s.task == "count"]) == workers


# -- failure, cancel, timeout ---------------------------------------------------------------


def test_a_failing_step_fails_the_workflow_and_later_steps_never_start(tasks: Tasks) -> None:
    handle = chain(tasks.add.s([1]), tasks.boom.s(), tasks.double.s()).dispatch()
    started = time.monotonic()
    with pytest.raises(WorkflowFailed) as failed:
        handle.result(WAIT)
    assert time.monotonic() - started < WAIT / 2  # promptly, never a hang
    assert failed.value.error["task"] == "boom"
    assert failed.value.cause is not None
    assert "boom on 1" in failed.value.cause.message
    assert tasks.runs["double"] == 0
    states = {s.node: s.state for s in handle.steps()}
    assert states == {"n0": "succeeded", "n1": "failed", "n2": "cancelled"}


@pytest.mark.usefixtures("side_by_side")
def test_a_running_sibling_is_told_to_stop_and_recorded_cancelled(tasks: Tasks, app: App) -> None:
    stopped = threading.Event()

    @app.task(name="patient")
    async def patient(x: int, ctx: JobContext) -> int:
        for _ in range(400):
            await asyncio.sleep(0.025)
            if ctx.cancelled:
                stopped.set()
                ctx.raise_if_cancelled()
        return x

    handle = group(patient.s(1), tasks.boom.s(2)).dispatch()
    with pytest.raises(WorkflowFailed):
        handle.result(WAIT)
    assert stopped.wait(WAIT)
    deadline = time.monotonic() + WAIT
    while handle.steps()[0].job_status != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert handle.steps()[0].job_status == "cancelled"
    assert handle.status() == "failed"  # its stop changed nothing


def test_cancel_stops_the_workflow_and_result_raises(tasks: Tasks, app: App) -> None:
    gate = threading.Event()

    @app.task(name="held")
    async def held(x: int, ctx: JobContext) -> int:
        while not gate.is_set():
            await asyncio.sleep(0.01)
        return x

    handle = chain(held.s(1), tasks.double.s()).dispatch()
    deadline = time.monotonic() + WAIT
    while handle.steps()[0].job_status != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert handle.cancel("user asked")
    assert not handle.cancel()  # once
    gate.set()
    with pytest.raises(WorkflowCancelled, match="user asked"):
        handle.result(WAIT)
    time.sleep(0.3)
    assert tasks.runs["double"] == 0


def test_a_timeout_fires_without_the_dispatcher_and_cancels(tasks: Tasks, app: App) -> None:
    gate = threading.Event()

    @app.task(name="stuck")
    async def stuck(x: int, ctx: JobContext) -> int:
        while not gate.is_set():
            await asyncio.sleep(0.01)
        return x

    workflow_id = chain(stuck.s(1), tasks.double.s()).dispatch(timeout=0.3).id
    time.sleep(0.5)
    # Nobody holds the handle: the scheduled sweeper finds it due and cancels it.
    report = engine_of(app).sweep()
    assert workflow_id in report.expired
    gate.set()
    with pytest.raises(WorkflowCancelled, match="workflow timeout"):
        app.workflow(workflow_id).result(WAIT)
    time.sleep(0.3)
    assert tasks.runs["double"] == 0


# -- ctx.invoke and ctx.dispatch ------------------------------------------------------------


def test_invoke_suspends_the_parent_and_resumes_it_with_the_childs_result(
    tasks: Tasks, app: App
) -> None:
    parent_runs: list[int] = []

    @app.task(name="parent", retry={"attempts": 2, "delay": 0.01, "jitter": False})
    def parent(x: int, ctx: JobContext) -> int:
        parent_runs.append(ctx.attempt)
        first = ctx.invoke(tasks.double, x)
        second = ctx.invoke(tasks.add, [first, 1])
        return ctx.invoke(tasks.double, second)

    handle = parent.dispatch(5)
    assert handle.result(WAIT) == 22
    assert tasks.runs["double"] == 2
    assert tasks.runs["add"] == 1
    assert len(parent_runs) == 4  # the first run and one resumption per child
    assert parent_runs == [1, 1, 1, 1]  # a resumption is not a retry


def test_invoke_raises_the_childs_failure(tasks: Tasks, app: App) -> None:
    @app.task(name="careful")
    def careful(x: int, ctx: JobContext) -> str:
        try:
            ctx.invoke(tasks.boom, x)
        except TaskFailed as exc:
            return f"child failed: {exc.error.message}"
        return "unreachable"

    assert careful.dispatch(3).result(WAIT) == "child failed: boom on 3"


def test_a_parent_whose_calls_changed_fails_with_a_non_determinism_error(
    tasks: Tasks, app: App
) -> None:
    calls = iter(["double", "add"])

    @app.task(name="fickle")
    def fickle(x: int, ctx: JobContext) -> int:
        if next(calls) == "double":
            return ctx.invoke(tasks.double, x)
        return ctx.invoke(tasks.add, [x])

    with pytest.raises(TaskFailed, match="NonDeterminismError") as failed:
        fickle.dispatch(2).result(WAIT)
    assert "'add' now, but the run it resumes called 'double'" in failed.value.error.message
    assert issubclass(NonDeterminismError, PermanentError)


def test_dispatch_starts_a_child_once_even_when_the_parent_retries(tasks: Tasks, app: App) -> None:
    tries: list[int] = []

    @app.task(name="flaky", retry={"attempts": 3, "delay": 0.01, "jitter": False})
    def flaky(x: int, ctx: JobContext) -> str:
        child = ctx.dispatch(tasks.double, x)
        tries.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("try again")
        return child.id

    child_id = flaky.dispatch(4).result(WAIT)
    assert tries == [1, 2, 3]
    assert tasks.double.handle(child_id).result(WAIT) == 8
    assert tasks.runs["double"] == 1


# -- redelivery and repair ------------------------------------------------------------------


def test_a_redelivered_member_is_recorded_once_and_the_callback_runs_once(
    tasks: Tasks, app: App
) -> None:
    handle = chord([tasks.add.s([1]), tasks.add.s([2])], tasks.total.s()).dispatch()
    assert handle.result(WAIT) == 3
    document = handle.document()
    assert document is not None
    member = document["nodes"]["n0"]
    # Deliver the member's message again, as SQS may: nothing runs, nothing is sent again.
    from taskhop.static_contracts import Envelope

    again = Envelope(
        task="add",
        input=[1],
        id=member["job"],
        continuation={"workflow": handle.id, "node": "n0"},
    )
    outcome = app.worker().process(again)
    assert outcome.kind.value == "skipped"
    time.sleep(0.3)
    assert tasks.runs["total"] == 1
    assert tasks.runs["add"] == 2


def test_the_sweeper_sends_a_step_whose_message_was_lost(tasks: Tasks, app: App) -> None:
    real_send_many = app.transport.send_many
    dropped: list[str] = []

    def lose_the_second_step(envelopes: Any) -> Any:
        kept = [e for e in envelopes if not e.id.endswith(".n1") or dropped]
        dropped.extend(e.id for e in envelopes if e not in kept)
        return real_send_many(kept) if kept else None

    app.transport.send_many = lose_the_second_step  # type: ignore[method-assign]
    handle = chain(tasks.add.s([1, 2]), tasks.double.s()).dispatch(stall_after=0.2)
    deadline = time.monotonic() + WAIT
    while not dropped and time.monotonic() < deadline:
        time.sleep(0.02)
    assert dropped
    assert handle.status() == "running"
    time.sleep(0.3)
    report = engine_of(app).sweep()
    assert report.resent == {handle.id: ["n1"]}
    assert handle.result(WAIT) == 6


def test_the_sweeper_advances_a_step_whose_end_was_recorded_but_not_advanced(
    tasks: Tasks, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_of(app)
    real = engine.step_ended
    failed_once: list[str] = []

    def crash_once(workflow_id: str, node_id: str, **kwargs: Any) -> None:
        if node_id == "n0" and not failed_once:
            failed_once.append(node_id)
            raise OSError("the process died here")
        real(workflow_id, node_id, **kwargs)

    monkeypatch.setattr(engine, "step_ended", crash_once)
    handle = chain(tasks.add.s([1, 2]), tasks.double.s()).dispatch(stall_after=0.2)
    # The message comes back and its redelivery advances; the sweeper would too.
    assert handle.result(WAIT) == 6
    assert failed_once == ["n0"]
    assert tasks.runs["add"] == 1


def test_a_parent_job_waits_without_holding_a_worker(tasks: Tasks, app: App) -> None:
    release = threading.Event()

    @app.task(name="gated")
    async def gated(x: int, ctx: JobContext) -> int:
        while not release.is_set():
            await asyncio.sleep(0.01)
        return x

    @app.task(name="waiter")
    def waiter(x: int, ctx: JobContext) -> int:
        return ctx.invoke(gated, x) + 1

    handle = waiter.dispatch(1)
    assert app.store is not None
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        record = app.store.get(handle.id)
        if record is not None and record.status is JobStatus.WAITING:
            break
        time.sleep(0.02)
    record = app.store.get(handle.id)
    assert record is not None
    assert record.status is JobStatus.WAITING
    assert record.lease_until is None
    release.set()
    assert handle.result(WAIT) == 2


@pytest.mark.usefixtures("side_by_side")
def test_the_scheduled_sweeper_is_an_ordinary_task_on_a_schedule(tasks: Tasks, app: App) -> None:
    gate = threading.Event()

    @app.task(name="wedged")
    async def wedged(x: int, ctx: JobContext) -> int:
        while not gate.is_set():
            await asyncio.sleep(0.01)
        return x

    schedule = wf.schedule_sweeper(app, "rate(2 minutes)", limit=10)
    assert (schedule.name, schedule.expression, schedule.input) == (
        wf.SWEEP_TASK, "rate(2 minutes)", 10,
    )  # fmt: skip
    assert app.schedules[wf.SWEEP_TASK] is schedule
    workflow_id = chain(wedged.s(1), tasks.double.s()).dispatch(timeout=0.2).id
    time.sleep(0.4)
    # What the EventBridge rule's event does: one job of the sweep task.
    report = app.get(wf.SWEEP_TASK).dispatch(10).result(WAIT)
    assert workflow_id in report["expired"]
    gate.set()
    assert app.workflow(workflow_id).status() == "cancelled"


def test_async_producers_dispatch_and_await_without_blocking_the_loop(tasks: Tasks) -> None:
    async def main() -> tuple[int, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        beat = asyncio.create_task(ticker())
        handle = await chain(tasks.add.s([1, 2]), tasks.slow.s()).adispatch()
        assert await handle.acancel() in (True, False)  # a no-op once it has ended
        other = await chord([tasks.slow.s(1), tasks.slow.s(2)], tasks.total.s()).adispatch()
        result = await other.aresult(WAIT)
        beat.cancel()
        return result, ticks

    result, ticks = asyncio.run(main())
    assert result == 3
    assert ticks > 5  # the loop kept running while the workflow did
