"""The in-process job store and payload store of the embedded default (``taskhop.sdk.memory``)."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

from taskhop.static_contracts import TransportError

from ._store import BaseJobStore, JobRecord, JobStatus, KeyClaim
from ._workflow_store import StoredWorkflow

__all__ = ["MemoryPayloads", "MemoryStore"]


class MemoryStore(BaseJobStore):
    """An in-process ``JobStore`` and ``WorkflowStore``: one lock makes every write atomic.

    Its primitives evaluate ``BaseJobStore``'s guards under the lock; ``wait`` is woken by
    ``complete`` instead of polling. Workflow documents are deep-copied in and out, so a
    caller's later change to a dict it read never reaches the store unwritten.
    """

    in_process: ClassVar[bool] = True
    """Its calls never wait on I/O, so a batch runs its jobs in order: threads would only cost
    (``BatchRunner``)."""

    def __init__(self) -> None:
        self._records: dict[str, JobRecord] = {}
        self._keys: dict[str, KeyClaim] = {}
        self._workflows: dict[str, StoredWorkflow] = {}
        self._cond = threading.Condition()
        self._waiting = 0  # threads in wait(), under the lock: complete() wakes them only then

    def get(self, job_id: str) -> JobRecord | None:
        """The job's record, or None."""
        with self._cond:
            return self._records.get(job_id)

    def _start_attempt(self, record: JobRecord, now: float) -> tuple[bool, JobRecord]:
        with self._cond:
            current = self._records.get(record.id)
            if current is not None:
                if not self.may_begin(current, now, record.restart):
                    return False, current
                record = replace(
                    record,
                    attempt=self.next_attempt(current, record.attempt),
                    created_at=current.created_at,
                    restart=current.restart,
                    restart_base=current.restart_base,
                    restarts=current.restarts,
                )
            self._records[record.id] = record
            return True, record

    def _restart(self, seen: JobRecord, record: JobRecord, now: float) -> tuple[bool, JobRecord]:
        with self._cond:
            current = self._records.get(record.id)
            if (
                current is None
                or (current.attempt, current.status) != (seen.attempt, seen.status)
                or not self.may_restart(current, str(record.restart), now)
            ):
                return False, current or seen
            self._records[record.id] = record
            return True, record

    def _create_queued(self, record: JobRecord) -> JobRecord | None:
        with self._cond:
            current = self._records.get(record.id)
            if current is not None:
                return current
            self._records[record.id] = record
            return None

    def _write_outcome(self, record: JobRecord, now: float) -> bool:
        with self._cond:
            current = self._records.get(record.id)
            if not self.may_complete(current, record):
                return self.already_recorded(current, record)
            # A waiting job starts its budget afresh; other outcomes keep the stored one.
            base = (
                record.restart_base
                if record.status is JobStatus.WAITING or current is None
                else current.restart_base
            )
            if current is not None and (
                record.created_at != current.created_at
                or current.restart is not None
                or record.restart_base != base
            ):
                # The worker passes the stored created_at on, so this copy is the rare path
                # (and a restarted or resumed job's: an outcome keeps the run's history).
                record = replace(
                    record,
                    created_at=current.created_at,
                    restart=current.restart,
                    restart_base=base,
                    restarts=current.restarts,
                )
            self._records[record.id] = record
            if self._waiting:
                self._cond.notify_all()
            return True

    def _claim(self, key: str, claim: KeyClaim, now: float) -> KeyClaim | None:
        with self._cond:
            current = self._keys.get(key)
            if not self.may_claim_key(current, claim.holder, now, claim.fingerprint):
                return current
            self._keys[key] = claim
            return None

    def _complete_claim(self, key: str, claim: KeyClaim) -> bool:
        with self._cond:
            current = self._keys.get(key)
            if not self.may_complete_key(current, claim.holder):
                return False
            if current is not None:  # the key stays bound to the input it was claimed for
                claim = replace(claim, fingerprint=current.fingerprint)
            self._keys[key] = claim
            return True

    def _drop_claim(self, key: str, job_id: str) -> bool:
        with self._cond:
            if not self.may_release_key(self._keys.get(key), job_id):
                return False
            del self._keys[key]
            return True

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
                self._waiting += 1
                try:
                    self._cond.wait(left)
                finally:
                    self._waiting -= 1

    # -- workflows (WorkflowStore) ----------------------------------------------------------

    def create_workflow(self, doc: dict[str, Any]) -> StoredWorkflow | None:
        """Store a new workflow document; the existing one if its id is taken."""
        with self._cond:
            current = self._workflows.get(doc["id"])
            if current is not None:
                return StoredWorkflow(copy.deepcopy(current.doc), current.rev)
            self._workflows[doc["id"]] = StoredWorkflow(copy.deepcopy(doc), 1)
            return None

    def load_workflow(self, workflow_id: str) -> StoredWorkflow | None:
        """The workflow document and its revision, or None."""
        with self._cond:
            current = self._workflows.get(workflow_id)
            if current is None:
                return None
            return StoredWorkflow(copy.deepcopy(current.doc), current.rev)

    def save_workflow(self, doc: dict[str, Any], rev: int) -> bool:
        """Write ``doc`` over revision ``rev``; False if another write came first."""
        with self._cond:
            current = self._workflows.get(doc["id"])
            if current is None or current.rev != rev:
                return False
            self._workflows[doc["id"]] = StoredWorkflow(copy.deepcopy(doc), rev + 1)
            return True

    def due_workflows(self, now: float, limit: int) -> Sequence[str]:
        """Open workflows whose ``due`` time has come, soonest first."""
        with self._cond:
            due = [
                (stored.doc["due"], wf_id)
                for wf_id, stored in self._workflows.items()
                if stored.doc.get("status") == "running"
                and stored.doc.get("due") is not None
                and stored.doc["due"] <= now
            ]
        return [wf_id for _, wf_id in sorted(due)[:limit]]

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
