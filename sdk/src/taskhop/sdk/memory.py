"""The embedded default: an in-process queue, job store and worker thread.

A real backend, not a mock (dramatiq's StubBroker, httpx's MockTransport): messages are
encoded to wire bytes and decoded again, delays and retries wait on real time, jobs that
exhaust their retries and poison messages land in ``dead_letters``. It is what
``create_app()`` uses with no arguments and what ``taskhop.sdk.testing`` swaps in for tests.

Not for production across processes: everything lives in this process's memory.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from taskhop.static_contracts import Envelope, JsonValue, TransportError

from ._errors import ErrorInfo
from ._store import Begin as BeginResult
from ._store import JobRecord, JobStatus, KeyClaim
from ._worker import Outcome, OutcomeKind

if TYPE_CHECKING:
    from ._app import App

__all__ = ["DeadLetter", "MemoryPayloads", "MemoryQueue", "MemoryStore"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message no worker could finish: the body as it arrived and why it stopped."""

    body: bytes
    reason: str
    job_id: str | None
    error: ErrorInfo | None


class MemoryQueue:
    """An in-process queue with delays, plus the worker threads that drain it.

    ``serve(app)`` starts ``workers`` threads running ``app``'s jobs; ``join()`` waits until
    every message (delayed ones included) is finished. Implements ``Transport`` and
    ``AsyncTransport``.
    """

    def __init__(self, *, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers: must be >= 1, got {workers}")
        self._workers = workers
        self._heap: list[tuple[float, int, bytes]] = []  # (ready at, sequence, body)
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._threads: list[threading.Thread] = []
        self._app: App | None = None
        self._lazy = False
        self._stopping = False
        self._closed = False
        self.dead_letters: list[DeadLetter] = []
        """Messages that exhausted their retries or were not envelopes at all."""

    # -- Transport --------------------------------------------------------------------------

    def send(self, envelope: Envelope) -> None:
        """Queue one envelope; it becomes visible at ``envelope.not_before``."""
        self.send_many([envelope])

    def send_many(self, envelopes: Sequence[Envelope]) -> None:
        """Queue several envelopes at once."""
        now = time.monotonic()
        with self._cond:
            self._check_open([e.id for e in envelopes])
            for envelope in envelopes:
                self._push(envelope.encode(), now + envelope.delay_seconds())
            self._cond.notify_all()
            start = self._lazy and not self._threads
        if start:
            self._start()

    def send_raw(self, body: bytes, *, delay: float = 0.0) -> None:
        """Queue bytes as they are (to test what workers do with poison messages)."""
        with self._cond:
            self._check_open([])
            self._push(body, time.monotonic() + delay)
            self._cond.notify_all()
            start = self._lazy and not self._threads
        if start:
            self._start()

    async def asend(self, envelope: Envelope) -> None:
        """Async ``send`` (queueing in memory never blocks)."""
        self.send(envelope)

    async def asend_many(self, envelopes: Sequence[Envelope]) -> None:
        """Async ``send_many``."""
        self.send_many(envelopes)

    def close(self) -> None:
        """Stop the worker threads after the message each is on; the queue takes no more.

        Messages still queued stay in ``pending`` (and are lost with the process: this is
        the in-memory backend).
        """
        with self._cond:
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=30)
        with self._cond:
            self._stopping = False

    async def aclose(self) -> None:
        """Async ``close``."""
        self.close()

    # -- serving ----------------------------------------------------------------------------

    def serve(self, app: App, *, lazy: bool = False) -> None:
        """Run ``app``'s jobs from this queue on worker threads (at the first send if ``lazy``)."""
        with self._cond:
            self._check_open([])
            self._app = app
            self._lazy = lazy
            pending = bool(self._heap)
        if not lazy or pending:
            self._start()

    def join(self, timeout: float | None = 10.0) -> None:
        """Wait until no message is queued, delayed or in flight.

        Raises:
            TimeoutError: messages remain after ``timeout`` seconds (it says how many).
            RuntimeError: nothing serves this queue, so waiting could never end.

        """
        if self._app is None:
            raise RuntimeError("no app is served from this queue: call serve(app) first")
        if not self._threads:
            self._start()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._heap or self._in_flight:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"join: {len(self._heap)} queued and {self._in_flight} in flight after"
                        f" {timeout}s"
                    )
                self._cond.wait(left)

    @property
    def pending(self) -> int:
        """Messages queued or delayed, not yet taken by a worker."""
        with self._cond:
            return len(self._heap)

    def _check_open(self, job_ids: list[str]) -> None:
        if self._closed:
            raise TransportError(
                "the memory queue is closed", job_ids=tuple(job_ids), retryable=False
            )

    def _push(self, body: bytes, ready_at: float) -> None:
        heapq.heappush(self._heap, (ready_at, next(self._seq), body))

    def _start(self) -> None:
        with self._cond:
            if self._threads or self._app is None:
                return
            for n in range(self._workers):
                thread = threading.Thread(
                    target=self._run, name=f"taskhop-memory-worker-{n}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _take(self) -> bytes | None:
        with self._cond:
            while not self._stopping:
                if self._heap:
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        self._in_flight += 1
                        return heapq.heappop(self._heap)[2]
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            return None

    def _run(self) -> None:
        assert self._app is not None
        worker = self._app.worker()
        while (body := self._take()) is not None:
            try:
                self._apply(body, worker.process(body))
            except Exception as exc:  # never lose a message to a bug in a hook or a store
                self.dead_letters.append(
                    DeadLetter(body, "worker_error", None, ErrorInfo(type(exc).__name__, str(exc)))
                )
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

    def _apply(self, body: bytes, outcome: Outcome) -> None:
        envelope = outcome.envelope
        if outcome.kind in (OutcomeKind.RETRY, OutcomeKind.DEFERRED) and envelope is not None:
            delay = outcome.retry_after or 0.0
            if outcome.kind is OutcomeKind.RETRY:
                envelope = envelope.retried(not_before=None)
            with self._cond:
                self._push(envelope.encode(), time.monotonic() + delay)
                self._cond.notify_all()
        elif outcome.dead_letter:
            reason = outcome.reason or outcome.kind.value
            self.dead_letters.append(DeadLetter(body, reason, outcome.job_id, outcome.error))


class MemoryStore:
    """An in-process ``JobStore``: one lock makes every conditional write atomic."""

    def __init__(self) -> None:
        self._records: dict[str, JobRecord] = {}
        self._keys: dict[str, KeyClaim] = {}
        self._counters: dict[str, int] = {}
        self._cond = threading.Condition()

    def get(self, job_id: str) -> JobRecord | None:
        """The job's record, or None."""
        with self._cond:
            return self._records.get(job_id)

    def get_many(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        """Records for the ids that have one."""
        with self._cond:
            return {i: self._records[i] for i in job_ids if i in self._records}

    def begin(
        self,
        job_id: str,
        *,
        task: str,
        attempt: int,
        lease_until: float,
        idempotency_key: str | None = None,
    ) -> BeginResult:
        """Start an attempt unless the job is final or another live attempt holds it."""
        with self._cond:
            current = self._records.get(job_id)
            if current is not None:
                if current.status.is_final:
                    return BeginResult("finished", current)
                live = current.lease_until is not None and current.lease_until > time.time()
                if current.status is JobStatus.RUNNING and live and current.attempt >= attempt:
                    return BeginResult("busy", current)
            record = JobRecord(
                id=job_id,
                task=task,
                status=JobStatus.RUNNING,
                attempt=attempt,
                idempotency_key=idempotency_key,
                lease_until=lease_until,
                created_at=current.created_at if current else time.time(),
            )
            self._records[job_id] = record
            return BeginResult("started", record)

    def complete(self, record: JobRecord) -> bool:
        """Write an outcome unless the job is final or a newer attempt owns it."""
        with self._cond:
            current = self._records.get(record.id)
            if current is not None and (
                current.status.is_final or current.attempt > record.attempt
            ):
                return False
            created = current.created_at if current else record.created_at
            if record.created_at != created or record.lease_until is not None:
                record = JobRecord(  # direct, not evolve(): once per job on the worker's path
                    id=record.id,
                    task=record.task,
                    status=record.status,
                    attempt=record.attempt,
                    result=record.result,
                    error=record.error,
                    idempotency_key=record.idempotency_key,
                    duplicate_of=record.duplicate_of,
                    lease_until=None,
                    created_at=created,
                    updated_at=record.updated_at,
                )
            self._records[record.id] = record
            self._cond.notify_all()
            return True

    def claim_key(self, key: str, job_id: str, *, lease_until: float) -> KeyClaim:
        """Hold ``key`` for ``job_id`` unless another job holds it or already completed it."""
        with self._cond:
            claim = self._keys.get(key)
            if claim is not None and claim.holder != job_id:
                if claim.state == "completed":
                    return claim
                if claim.lease_until is not None and claim.lease_until > time.time():
                    return claim
            claim = KeyClaim("in_progress", job_id, lease_until=lease_until)
            self._keys[key] = claim
            return KeyClaim("acquired", job_id, lease_until=lease_until)

    def complete_key(self, key: str, job_id: str, result: JsonValue) -> None:
        """Store the result for later duplicates of ``key``."""
        with self._cond:
            claim = self._keys.get(key)
            if claim is None or claim.holder == job_id:
                self._keys[key] = KeyClaim("completed", job_id, result=result)

    def release_key(self, key: str, job_id: str) -> None:
        """Free ``key`` if ``job_id`` holds it and has not completed."""
        with self._cond:
            claim = self._keys.get(key)
            if claim is not None and claim.holder == job_id and claim.state != "completed":
                del self._keys[key]

    def increment(self, counter: str, amount: int = 1) -> int:
        """Add to a named counter atomically; return the new value."""
        with self._cond:
            value = self._counters.get(counter, 0) + amount
            self._counters[counter] = value
            return value

    def wait(self, job_id: str, timeout: float | None) -> JobRecord | None:
        """Block until the job is final (woken by ``complete``); None after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                record = self._records.get(job_id)
                if record is not None and record.status.is_final:
                    return record
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)

    def records(self) -> list[JobRecord]:
        """Every record, oldest first (for tests and the CLI)."""
        with self._cond:
            return sorted(self._records.values(), key=lambda r: r.created_at)


class MemoryPayloads:
    """An in-process ``PayloadStore`` (what S3 is on AWS), for tests and the embedded default."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, job_id: str, body: bytes) -> str:
        """Keep ``body``; return ``memory://<job id>``."""
        ref = f"memory://{job_id}"
        with self._lock:
            self._objects[ref] = body
        return ref

    def get(self, ref: str) -> bytes:
        """The stored bytes; ``TransportError`` if there are none."""
        with self._lock:
            body = self._objects.get(ref)
        if body is None:
            raise TransportError(f"no payload at {ref}", retryable=False)
        return body

    def delete(self, ref: str) -> None:
        """Forget ``ref``."""
        with self._lock:
            self._objects.pop(ref, None)

    def __len__(self) -> int:
        return len(self._objects)
