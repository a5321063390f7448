"""Test helpers: run handlers directly, or run a whole app in memory, without AWS.

``run_task`` calls one handler through the same validation the worker applies.
``in_memory(app)`` swaps an app's transport and store for the in-process backend, serves it
from a worker thread, and puts everything back afterwards (stamina's ``set_testing`` shape).
The pytest plugin (installed with the package) provides the ``taskhop_app`` and
``taskhop_memory`` fixtures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

from taskhop.sdk._app import App, Registered
from taskhop.sdk._bound import BoundTask
from taskhop.sdk._context import JobContext
from taskhop.sdk._converter import structure, unstructure
from taskhop.sdk._errors import JobNotFoundError, UnknownTaskError
from taskhop.sdk._store import JobRecord
from taskhop.static_contracts import StaticContract

if TYPE_CHECKING:
    from taskhop.sdk.memory import DeadLetter, MemoryQueue, MemoryStore

__all__ = ["MemoryHarness", "arun_task", "in_memory", "run_task"]

I = TypeVar("I")
O = TypeVar("O")


@overload
def run_task(task: BoundTask[I, O], input: I, *, ctx: JobContext | None = None) -> O: ...
@overload
def run_task(
    task: StaticContract[I, O], input: I, *, app: App, ctx: JobContext | None = None
) -> O: ...
def run_task(
    task: BoundTask[Any, Any] | StaticContract[Any, Any],
    input: Any,
    *,
    app: App | None = None,
    ctx: JobContext | None = None,
) -> Any:
    """Run a task's handler once, in this thread, as a worker would.

    The input is validated exactly as the worker validates it (a bad one raises
    ``ValidationError`` with field paths); the output is written to JSON and read back, so a
    handler that returns something its contract cannot carry fails here too. Exceptions
    from the handler (``Retry``, ``PermanentError``, anything) propagate for the test to see.
    """
    entry, context, data = _prepare(task, input, app, ctx)
    if entry.implementation.is_async:
        value = asyncio.run(entry.acall(data, context, None))
    else:
        value = entry.call(data, context, None)
    return _roundtrip(entry, _app_of(task, app), value)


@overload
async def arun_task(task: BoundTask[I, O], input: I, *, ctx: JobContext | None = None) -> O: ...
@overload
async def arun_task(
    task: StaticContract[I, O], input: I, *, app: App, ctx: JobContext | None = None
) -> O: ...
async def arun_task(
    task: BoundTask[Any, Any] | StaticContract[Any, Any],
    input: Any,
    *,
    app: App | None = None,
    ctx: JobContext | None = None,
) -> Any:
    """``run_task`` for async tests: awaits ``async def`` handlers on the running loop."""
    entry, context, data = _prepare(task, input, app, ctx)
    if entry.implementation.is_async:
        value = await entry.acall(data, context, None)
    else:
        value = entry.call(data, context, None)
    return _roundtrip(entry, _app_of(task, app), value)


def _app_of(task: BoundTask[Any, Any] | StaticContract[Any, Any], app: App | None) -> App:
    if isinstance(task, BoundTask):
        return task.app
    if app is None:
        raise TypeError("run_task(contract, ...) needs app= (the app that implements it)")
    return app


def _prepare(
    task: BoundTask[Any, Any] | StaticContract[Any, Any],
    input: Any,
    app: App | None,
    ctx: JobContext | None,
) -> tuple[Registered, JobContext, Any]:
    owner = _app_of(task, app)
    name = task.name
    entry = owner.implementation(name)
    if entry is None:
        raise UnknownTaskError(name, owner.implemented_names())
    # The job a dispatch would send (one builder), validated by the task's one validator.
    raw = unstructure(owner.converter, input, entry.input_type, path="input")
    envelope = owner.get(name).envelope_from_json(raw)
    data = entry.validate(envelope.input, envelope.version)
    context = ctx or JobContext(
        job_id=envelope.id,
        task=name,
        max_attempts=entry.policy.attempts,
        envelope=envelope,
    )
    return entry, context, data


def _roundtrip(entry: Registered, owner: App, value: Any) -> Any:
    # The app's own converter, both ways: its hooks are how its types become JSON.
    output = entry.contract.output
    raw = unstructure(owner.converter, value, output, path="output")
    return structure(owner.converter, raw, output, task=entry.contract.name, what="output")


@dataclass(frozen=True, slots=True)
class MemoryHarness:
    """An app running in memory: wait for it, and look at what it recorded."""

    app: App
    queue: MemoryQueue
    store: MemoryStore

    def join(self, timeout: float | None = 10.0) -> None:
        """Wait until every queued, delayed and in-flight job is finished."""
        self.queue.join(timeout)

    @property
    def pending(self) -> int:
        """Jobs queued or delayed, not yet taken by the worker."""
        return self.queue.pending

    @property
    def dead_letters(self) -> list[DeadLetter]:
        """Jobs that exhausted their retries, and messages that were not envelopes."""
        return self.queue.dead_letters

    def records(self) -> list[JobRecord]:
        """Every job record, oldest first."""
        return self.store.records()

    def record(self, job_id: str) -> JobRecord:
        """One job's record; raises ``JobNotFoundError`` if there is none."""
        record = self.store.get(job_id)
        if record is None:
            raise JobNotFoundError(f"no record for job {job_id}")
        return record


@contextmanager
def in_memory(app: App, *, workers: int = 1) -> Generator[MemoryHarness]:
    """Run ``app`` on a fresh in-memory queue and store; restore its backends on exit."""
    from taskhop.sdk.memory import MemoryQueue, MemoryStore

    queue, store = MemoryQueue(workers=workers), MemoryStore()
    saved = (app.transport, app.store)
    app.transport, app.store = queue, store
    queue.serve(app)
    try:
        yield MemoryHarness(app, queue, store)
    finally:
        queue.close()
        app.transport, app.store = saved
