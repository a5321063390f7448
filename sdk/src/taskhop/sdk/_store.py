"""The job store seam: where job state, results and idempotency keys live.

Every backend implements ``JobStore`` in one module (``taskhop.sdk.memory``, later
``taskhop.backends.dynamodb``). The semantics below are the contract each one keeps; the
behaviour suite runs the same tests against all of them.

Every write is conditional, so at-least-once delivery cannot corrupt state:

- ``begin`` starts an attempt only if the job is not final and no live lease holds it;
- ``complete`` records an outcome only if the job is not final and no newer attempt owns it,
  so a job completes exactly once and a stale worker cannot overwrite a newer outcome;
- ``claim_key`` lets one job at a time hold an idempotency key; a key whose job succeeded
  returns the stored result to later duplicates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable

from taskhop.static_contracts import JsonValue

from ._errors import ErrorInfo

__all__ = [
    "FINAL_STATUSES",
    "Begin",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "KeyClaim",
    "NoStore",
    "poll_for_final",
]


class JobStatus(StrEnum):
    """Where a job is in its life. ``QUEUED`` also means "no worker has seen it yet"."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"

    @property
    def is_final(self) -> bool:
        """Whether the job will never change again."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.REJECTED})


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job's state as the store keeps it (times are Unix seconds)."""

    id: str
    task: str
    status: JobStatus
    attempt: int
    result: JsonValue = None
    error: ErrorInfo | None = None
    idempotency_key: str | None = None
    duplicate_of: str | None = None
    lease_until: float | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def evolve(self, **changes: Any) -> JobRecord:
        """A copy with ``changes`` and a fresh ``updated_at``."""
        return replace(self, updated_at=time.time(), **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON data (for stores that persist documents and for the CLI)."""
        return {
            "id": self.id,
            "task": self.task,
            "status": self.status.value,
            "attempt": self.attempt,
            "result": self.result,
            "error": None if self.error is None else self.error.to_dict(),
            "idempotency_key": self.idempotency_key,
            "duplicate_of": self.duplicate_of,
            "lease_until": self.lease_until,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        """Inverse of ``to_dict``."""
        error = data.get("error")
        return cls(
            id=data["id"],
            task=data["task"],
            status=JobStatus(data["status"]),
            attempt=int(data["attempt"]),
            result=data.get("result"),
            error=None if error is None else ErrorInfo.from_dict(error),
            idempotency_key=data.get("idempotency_key"),
            duplicate_of=data.get("duplicate_of"),
            lease_until=data.get("lease_until"),
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
        )


@dataclass(frozen=True, slots=True)
class Begin:
    """What ``JobStore.begin`` decided.

    ``started``: run the handler. ``finished``: the job already has a final outcome (a
    duplicate delivery); acknowledge without running. ``busy``: another attempt holds a live
    lease; try again after it.
    """

    state: Literal["started", "finished", "busy"]
    record: JobRecord


@dataclass(frozen=True, slots=True)
class KeyClaim:
    """What ``JobStore.claim_key`` decided for an idempotency key.

    ``acquired``: this job holds the key and runs. ``completed``: job ``holder`` already
    succeeded with ``result``. ``in_progress``: job ``holder`` runs now, until ``lease_until``.
    """

    state: Literal["acquired", "completed", "in_progress"]
    holder: str
    result: JsonValue = None
    lease_until: float | None = None


@runtime_checkable
class JobStore(Protocol):
    """Job state, results, idempotency keys and counters."""

    def get(self, job_id: str) -> JobRecord | None:
        """The job's record, read consistently, or None if no worker has recorded it yet."""
        ...

    def get_many(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        """Records for the ids that have one (batched where the service allows)."""
        ...

    def begin(
        self,
        job_id: str,
        *,
        task: str,
        attempt: int,
        lease_until: float,
        idempotency_key: str | None = None,
    ) -> Begin:
        """Start ``attempt`` of a job: RUNNING with a lease, unless final or leased by another."""
        ...

    def complete(self, record: JobRecord) -> bool:
        """Write an outcome (RETRYING or final); False if final or a newer attempt owns it."""
        ...

    def claim_key(self, key: str, job_id: str, *, lease_until: float) -> KeyClaim:
        """Hold an idempotency key for ``job_id`` (see ``KeyClaim``)."""
        ...

    def complete_key(self, key: str, job_id: str, result: JsonValue) -> None:
        """Mark the key's job succeeded with ``result``; later duplicates get it."""
        ...

    def release_key(self, key: str, job_id: str) -> None:
        """Let go of a key after a failure, so a later job with the key may run."""
        ...

    def increment(self, counter: str, amount: int = 1) -> int:
        """Add atomically to a named counter and return the new value (for joins)."""
        ...

    def wait(self, job_id: str, timeout: float | None) -> JobRecord | None:
        """Block until the job is final and return its record; None after ``timeout``."""
        ...


class NoStore:
    """The store of a worker that keeps no state (``create_app`` without ``store=``).

    Every job runs as delivered: no results are kept (``result()`` is unavailable), duplicate
    deliveries may run twice, and idempotency keys are not enforced. Rejected and failed jobs
    go to the dead-letter queue instead of a record, so nothing is lost. It costs no request
    per job beyond the queue's own.
    """

    def get(self, job_id: str) -> JobRecord | None:
        """Nothing is recorded, so always None."""
        return None

    def get_many(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        """Nothing is recorded, so always empty."""
        return {}

    def begin(
        self,
        job_id: str,
        *,
        task: str,
        attempt: int,
        lease_until: float,
        idempotency_key: str | None = None,
    ) -> Begin:
        """Every delivery starts."""
        return Begin(
            "started",
            JobRecord(
                id=job_id,
                task=task,
                status=JobStatus.RUNNING,
                attempt=attempt,
                lease_until=lease_until,
            ),
        )

    def complete(self, record: JobRecord) -> bool:
        """Accept every outcome (there is nothing to compare it with)."""
        return True

    def claim_key(self, key: str, job_id: str, *, lease_until: float) -> KeyClaim:
        """Every job holds its key: without state there is no deduplication."""
        return KeyClaim("acquired", job_id, lease_until=lease_until)

    def complete_key(self, key: str, job_id: str, result: JsonValue) -> None:
        """Nothing to keep."""

    def release_key(self, key: str, job_id: str) -> None:
        """Nothing to release."""

    def increment(self, counter: str, amount: int = 1) -> int:
        """Counters need state: refused."""
        raise NotImplementedError("counters need a job store: pass store= to create_app()")

    def wait(self, job_id: str, timeout: float | None) -> JobRecord | None:
        """Nothing will ever be recorded, so there is nothing to wait for."""
        return None


def poll_for_final(
    store: JobStore, job_id: str, timeout: float | None, *, first: float = 0.05, cap: float = 1.0
) -> JobRecord | None:
    """``JobStore.wait`` for stores without push: poll ``get`` with capped exponential backoff."""
    deadline = None if timeout is None else time.monotonic() + timeout
    interval = first
    while True:
        record = store.get(job_id)
        if record is not None and record.status.is_final:
            return record
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            interval = min(interval, left)
        time.sleep(interval)
        interval = min(interval * 2, cap)
