"""``ResultHandle[O]``: a dispatched job's id, its status, and its typed result."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._converter import structure
from ._errors import ErrorInfo, ResultTimeout, TaskFailed, TaskhopError, TaskRejected
from ._store import JobRecord, JobStatus, JobStore

if TYPE_CHECKING:
    from ._app import App

__all__ = ["ResultHandle"]

O = TypeVar("O")


class ResultHandle(Generic[O]):
    """A dispatched job. ``result()`` waits for it and returns the handler's typed output.

    Handles are cheap: re-attach to a job from its id with ``BoundTask.handle(job_id)``.
    """

    __slots__ = ("_app", "_output", "id", "task")

    def __init__(self, app: App, job_id: str, task: str, output: type[O]) -> None:
        self._app = app
        self._output = output
        self.id = job_id
        self.task = task

    def __repr__(self) -> str:
        return f"ResultHandle(id={self.id!r}, task={self.task!r})"

    def record(self) -> JobRecord | None:
        """The stored record, or None while no worker has recorded the job."""
        return self._store().get(self.id)

    def status(self) -> JobStatus:
        """The job's status; ``QUEUED`` until a worker records it."""
        record = self.record()
        return JobStatus.QUEUED if record is None else record.status

    def result(self, timeout: float | None = 30.0) -> O:
        """Wait for the job and return its output.

        Raises:
            TaskRejected: the job was rejected before its handler ran (``error.fields`` says why).
            TaskFailed: the job failed after its retries; ``error`` is what the worker recorded.
            ResultTimeout: no final outcome within ``timeout`` seconds (None waits forever).

        """
        record = self._store().wait(self.id, timeout)
        return self._outcome(record, timeout)

    async def astatus(self) -> JobStatus:
        """``status()`` without blocking the event loop."""
        record = await asyncio.to_thread(self._store().get, self.id)
        return JobStatus.QUEUED if record is None else record.status

    async def aresult(self, timeout: float | None = 30.0, *, poll: float = 0.02) -> O:
        """``result()`` without blocking the event loop: polls with capped backoff."""
        store = self._store()
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll
        while True:
            record = await asyncio.to_thread(store.get, self.id)
            if record is not None and record.status.is_final:
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
        if record is None or not record.status.is_final:
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
