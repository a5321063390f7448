"""The in-process job store and payload store of the embedded default (``taskhop.sdk.memory``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from taskhop.static_contracts import JsonValue, TransportError

from ._store import Begin as BeginResult
from ._store import JobRecord, JobStatus, KeyClaim

__all__ = ["MemoryPayloads", "MemoryStore"]


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
