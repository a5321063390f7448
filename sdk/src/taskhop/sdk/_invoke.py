"""``ctx.invoke`` and ``ctx.dispatch``: a handler's children, and suspending to await them.

A child's job id derives from the parent's and the call's position (``child_job_id``), so a
parent that runs again (a retry, a redelivery, a resumption) meets the children it started
before instead of starting new ones. A handler is replayed from the top when it resumes:
each ``invoke`` whose child has ended returns that child's recorded result (or raises its
error) at once, and the first whose child has not ended suspends the parent:

1. the child is recorded QUEUED (``JobStore.accept``) and sent, unless a worker has begun it
   (a QUEUED child is sent again: the parent may have stopped between the two);
2. the handler unwinds (``Suspended``, not an ``Exception``: ``except Exception`` in user code
   cannot swallow it); the worker records the parent ``waiting``, keeping its envelope, with
   a fresh attempt budget from here (``restart_base``), and acknowledges its message: no
   Lambda is held while the child runs;
3. when the child's end is recorded, its worker sends the parent's kept envelope again
   (``resume_parent``) if the parent is waiting. The parent, after recording ``waiting``,
   reads the child once more and resumes itself if the child already ended; between the two
   reads at least one resume is sent, and a second is a harmless replay.

A call at a position whose recorded child is another task raises ``NonDeterminismError``:
the code changed between runs, and replaying would hand one call another's result.
The code between calls runs again on each resumption; keep it free of side effects, or make
them idempotent (taskhop's own dispatches are).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from taskhop.static_contracts import Envelope, StaticContract

from ._converter import structure
from ._errors import NonDeterminismError, TaskFailed, TaskhopError, TaskRejected
from ._store import JobStatus

if TYPE_CHECKING:
    from ._app import App
    from ._bound import BoundTask
    from ._handle import ResultHandle
    from ._store import JobStore

__all__ = ["Calls", "Suspended", "child_job_id", "parent_of", "resume_parent"]

I = TypeVar("I")
O = TypeVar("O")

_log = logging.getLogger("taskhop.worker")
_MAX_ID = 128


class Suspended(BaseException):
    """Unwinds a handler that awaits a child which has not ended (caught by the worker)."""

    def __init__(self, child_id: str) -> None:
        super().__init__(child_id)
        self.child_id = child_id


def child_job_id(parent_id: str, position: int) -> str:
    """The job id of a parent's ``position``-th call: readable if it fits, else a digest."""
    readable = f"{parent_id}~{position}"
    if len(readable) <= _MAX_ID:
        return readable
    return f"{hashlib.sha256(parent_id.encode()).hexdigest()[:64]}~{position}"


def parent_of(envelope: Envelope) -> str | None:
    """The parent's job id when ``envelope`` is a child that a parent awaits."""
    continuation = envelope.continuation
    if isinstance(continuation, dict):
        parent = continuation.get("parent")
        if isinstance(parent, str) and continuation.get("awaited"):
            return parent
    return None


def resume_parent(app: App, parent_id: str) -> None:
    """Send a waiting parent's envelope again so it replays with its child's result."""
    store = _store(app)
    record = store.get(parent_id)
    if record is None or record.status is not JobStatus.WAITING or record.envelope is None:
        return  # running (it reads the child itself after suspending), or already ended
    app.transport.send(Envelope.decode(record.envelope))


class Calls:
    """One handler run's children, numbered in call order (``JobContext`` holds one)."""

    def __init__(self, app: App, envelope: Envelope) -> None:
        self.app = app
        self.parent = envelope
        self.position = 0

    def invoke(self, task: BoundTask[I, O] | StaticContract[I, O], payload: I) -> O:
        """The child's output, once it has ended; suspends the parent until then."""
        bound, child_id, record = self._call(task)
        if record is not None and record.status.is_final:
            if record.status is JobStatus.SUCCEEDED:
                value: O = structure(
                    self.app.converter, record.result, bound.contract.output,
                    task=bound.name, what="output",
                )  # fmt: skip
                return value
            error = record.error
            assert error is not None  # a failed end always records its error
            raise (TaskRejected if record.status is JobStatus.REJECTED else TaskFailed)(
                child_id, bound.name, error
            )
        if _unbegun(record):
            self._start(bound, child_id, payload, awaited=True)
        raise Suspended(child_id)

    def dispatch(self, task: BoundTask[I, O] | StaticContract[I, O], payload: I) -> ResultHandle[O]:
        """Start a child without waiting; a replay of the parent starts it once."""
        bound, child_id, record = self._call(task)
        if _unbegun(record):
            self._start(bound, child_id, payload, awaited=False)
        return bound.handle(child_id)

    def child_ended(self, child_id: str) -> bool:
        """Whether the awaited child has ended (read after the parent recorded ``waiting``)."""
        record = _store(self.app).get(child_id)
        return record is not None and record.status.is_final

    # -- inside ----------------------------------------------------------------------------

    def _call(
        self, task: BoundTask[I, O] | StaticContract[I, O]
    ) -> tuple[BoundTask[I, O], str, Any]:
        bound = self.app.register(task) if isinstance(task, StaticContract) else task
        child_id = child_job_id(self.parent.id, self.position)
        self.position += 1
        record = _store(self.app).get(child_id)
        if record is not None and record.task != bound.name:
            raise NonDeterminismError(
                f"call {self.position - 1} of job {self.parent.id} ({self.parent.task}) is"
                f" {bound.name!r} now, but the run it resumes called {record.task!r} there"
                f" (child {child_id}): the handler's calls changed between runs"
            )
        return bound, child_id, record

    def _start(
        self, bound: BoundTask[Any, Any], child_id: str, payload: Any, *, awaited: bool
    ) -> None:
        envelope = replace(
            bound.envelope(payload, trace=self.parent.trace),
            id=child_id,
            continuation={"parent": self.parent.id, "awaited": awaited},
        )
        existing = _store(self.app).accept(child_id, task=bound.name)
        if existing is not None and existing.task != bound.name:
            raise NonDeterminismError(
                f"child {child_id} of job {self.parent.id} is recorded as {existing.task!r},"
                f" not {bound.name!r}"
            )
        self.app.transport.send(envelope)


def _unbegun(record: Any) -> bool:
    """Whether no worker has begun the child: send it (again), a duplicate at worst.

    A QUEUED child may never have been sent: the parent recorded it, then stopped.
    """
    return record is None or record.status is JobStatus.QUEUED


def _store(app: App) -> JobStore:
    store = app.store
    if store is None:
        raise TaskhopError(
            "ctx.invoke and ctx.dispatch need a job store (children are found by id on a"
            " replay): pass store= to create_app()"
        )
    return store
