"""``ResultHandle[O]``: a dispatched job's id, its status, and its typed result."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._converter import structure
from ._errors import ErrorInfo, ResultTimeout, TaskFailed, TaskhopError, TaskRejected
from ._store import JobRecord, JobStatus, JobStore

if TYPE_CHECKING:
    from ._app import App

__all__ = ["ResultHandle", "gather"]

O = TypeVar("O")


class ResultHandle(Generic[O]):
    """A dispatched job. ``result()`` waits for it and returns the handler's typed output.

    Handles are cheap: re-attach to a job from its id with ``BoundTask.handle(job_id)``.
    A handle from ``App.retry`` carries its ``restart`` token and reads only the run that
    token starts: until a worker begins it, the record still holds the earlier end, which
    is not this handle's answer.
    """

    __slots__ = ("_app", "_output", "id", "restart", "task")

    def __init__(
        self, app: App, job_id: str, task: str, output: type[O], *, restart: str | None = None
    ) -> None:
        self._app = app
        self._output = output
        self.id = job_id
        self.task = task
        self.restart = restart

    def __repr__(self) -> str:
        return f"ResultHandle(id={self.id!r}, task={self.task!r})"

    def record(self) -> JobRecord | None:
        """The stored record, or None while no worker has recorded the job."""
        return self._store().get(self.id)

    def status(self) -> JobStatus:
        """The job's status; ``QUEUED`` until a worker records it (or begins its restart)."""
        return self._status_of(self.record())

    def _status_of(self, record: JobRecord | None) -> JobStatus:
        if record is None or not self._reached(record):
            return JobStatus.QUEUED
        return record.status

    def _reached(self, record: JobRecord) -> bool:
        """Whether ``record`` is of this handle's run (a restart handle: its token began)."""
        return self.restart is None or self.restart in record.restart_tokens

    def _settled(self, record: JobRecord | None) -> bool:
        """Whether ``record`` is this handle's final answer."""
        return record is not None and record.status.is_final and self._reached(record)

    def result(self, timeout: float | None = 30.0) -> O:
        """Wait for the job and return its output.

        Raises:
            TaskRejected: the job was rejected before its handler ran (``error.fields`` says why).
            TaskFailed: the job failed after its retries; ``error`` is what the worker recorded.
            ResultTimeout: no final outcome within ``timeout`` seconds (None waits forever).

        """
        if self.restart is None:
            return self._outcome(self._store().wait(self.id, timeout), timeout)
        store = self._store()
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = 0.05
        while True:  # the store's wait ends at any final record: the earlier end is one
            record = store.get(self.id)
            if self._settled(record):
                return self._outcome(record, timeout)
            if deadline is not None and time.monotonic() >= deadline:
                return self._outcome(None, timeout)
            time.sleep(interval)
            interval = min(interval * 2, 1.0)

    async def astatus(self) -> JobStatus:
        """``status()`` without blocking the event loop."""
        import asyncio  # lazy import: sync code never pays for asyncio

        record = await asyncio.to_thread(self._store().get, self.id)
        return self._status_of(record)

    async def aresult(self, timeout: float | None = 30.0, *, poll: float = 0.02) -> O:
        """``result()`` without blocking the event loop: polls with capped backoff."""
        import asyncio  # lazy import: sync code never pays for asyncio

        store = self._store()
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll
        while True:
            record = await asyncio.to_thread(store.get, self.id)
            if self._settled(record):
                return self._outcome(record, timeout)
            if deadline is not None and time.monotonic() >= deadline:
                return self._outcome(None, timeout)
            await asyncio.sleep(interval)
            interval = min(interval * 2, 1.0)

    def _store(self) -> JobStore:
        store = self._app.store
        if store is None:
            raise TaskhopError(
                "this app has no job store, so results cannot be read: pass store= to create_app()"
            )
        return store

    def _outcome(self, record: JobRecord | None, timeout: float | None) -> O:
        if record is None or not self._settled(record):
            raise ResultTimeout(f"job {self.id} ({self.task}) did not finish within {timeout}s")
        if record.status is JobStatus.SUCCEEDED:
            value: Any = structure(
                self._app.converter, record.result, self._output, task=self.task, what="output"
            )
            return value  # type: ignore[no-any-return]  # structured as O above
        error = record.error or ErrorInfo("Error", "no error recorded")
        if record.status is JobStatus.REJECTED:
            raise TaskRejected(self.id, self.task, error)
        raise TaskFailed(self.id, self.task, error)


def gather(
    handles: Sequence[ResultHandle[O]], timeout: float | None = 30.0, *, cap: float = 1.0
) -> list[O]:
    """Wait for many jobs at once and return their outputs in order.

    Reads the unfinished ones in batches (``JobStore.get_many``: one BatchGetItem per 100
    jobs on DynamoDB) with capped backoff, instead of one poll loop per handle.

    Raises:
        TaskFailed: the first job, in order, that failed or was rejected.
        ResultTimeout: some jobs were not final after ``timeout`` seconds.

    """
    if not handles:
        return []
    store = handles[0]._store()  # pyright: ignore[reportPrivateUsage]
    deadline = None if timeout is None else time.monotonic() + timeout
    finished: dict[str, JobRecord] = {}
    interval = 0.02
    by_id = {h.id: h for h in handles}
    while True:
        waiting = [h.id for h in handles if h.id not in finished]
        if not waiting:
            break
        finished.update(
            (job_id, record)
            for job_id, record in store.get_many(waiting).items()
            if by_id[job_id]._settled(record)  # pyright: ignore[reportPrivateUsage]
        )
        if len(finished) == len({h.id for h in handles}):
            break
        if deadline is not None and time.monotonic() >= deadline:
            left = len({h.id for h in handles}) - len(finished)
            raise ResultTimeout(f"{left} of {len(handles)} jobs did not finish within {timeout}s")
        time.sleep(interval)
        interval = min(interval * 2, cap)
    return [h._outcome(finished[h.id], timeout) for h in handles]  # pyright: ignore[reportPrivateUsage]
