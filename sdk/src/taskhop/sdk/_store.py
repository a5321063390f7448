"""The job store seam: where job state, results and idempotency keys live.

``JobStore`` is the protocol the worker and the result handles use. The stores that keep
state (``taskhop.sdk.memory.MemoryStore``, ``taskhop.backends.dynamodb.DynamoStore``) derive
from ``BaseJobStore``, which writes the decisions once and leaves each adapter only atomic
conditional reads and writes; ``NoStore`` keeps nothing. The semantics below are the contract
each one keeps; ``tests/test_store.py`` runs the same tests against all of them.

Every write is conditional, so at-least-once delivery cannot corrupt state:

- ``begin`` starts an attempt only if the job is not final and no live lease holds it, whatever
  attempt holds it: a redelivery never runs beside a live attempt. The store numbers the
  attempts (one more than the last one it started), so receives that never ran the handler
  (a deferral, a busy lease, an outage before ``begin``) use no attempt;
- ``complete`` records an outcome only if the job is not final and no newer attempt owns it,
  so a job completes exactly once and a stale worker cannot overwrite a newer outcome; writing
  the same outcome of the same attempt again is a no-op that answers True (``already_recorded``),
  so a write whose answer was lost can be retried;
- ``begin(..., restart=token)`` restarts a job that ended without succeeding (``App.retry``,
  ``taskhop dlq redrive``): a token the job has not seen starts a new run on the same record,
  with the next attempt number, a fresh attempt budget (``restart_base``) and the old end kept
  in ``restarts``; a token it used before is a second copy of a restart that already began
  (``stale``), so one restart runs once however many copies are delivered;
- ``accept`` records a job QUEUED once, so a door that takes jobs (the HTTP endpoint) can tell
  a replayed or retried request from a new job;
- ``claim_key`` lets one job at a time hold an idempotency key; a key whose job succeeded
  is never held again, by anyone (its own job included): it answers the stored result. A
  claim keeps its job's input ``fingerprint`` (completing the key keeps it too), and a lapsed
  claim is taken over only by a job whose fingerprint does not differ, so the key stays bound
  to the first input; the worker refuses a job whose fingerprint differs from the holder's.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from taskhop.static_contracts import EventEnvelope, JsonValue

from ._errors import ErrorInfo

_T = TypeVar("_T")

__all__ = [
    "FINAL_STATUSES",
    "MAX_RESTARTS",
    "BaseJobStore",
    "Begin",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "KeyClaim",
    "NoStore",
    "OutboxStore",
    "RestartEntry",
    "poll_for_final",
]


class JobStatus(StrEnum):
    """Where a job is in its life. ``QUEUED`` also means "no worker has seen it yet"."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    WAITING = "waiting"
    """Suspended in ``ctx.invoke`` until a child ends; its end sends the job again."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    """A workflow step that never ran (or stopped when asked) because its workflow ended."""

    @property
    def is_final(self) -> bool:
        """Whether the job will never change again."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.REJECTED, JobStatus.CANCELLED}
)
MAX_RESTARTS = 20
"""Restarts one job may have: its history stays small enough for one DynamoDB item (400 KB),
and a job that failed twenty runs wants a fix, not a twenty-first."""
_HISTORY_MESSAGE = 1024
"""Characters of an error message a restart's history keeps (the full one was the record's)."""


@dataclass(frozen=True, slots=True)
class RestartEntry:
    """How one run of a job ended, kept when a restart began the next run.

    ``token`` is the restart that ended this run (``Envelope.restart``); ``at`` is when the
    run ended (the record's ``updated_at`` then).
    """

    token: str
    status: JobStatus
    attempt: int
    at: float
    error_type: str | None = None
    error_message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON data."""
        return {
            "token": self.token,
            "status": self.status.value,
            "attempt": self.attempt,
            "at": self.at,
            "error_type": self.error_type,
            "error_message": self.error_message,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RestartEntry:
        """Inverse of ``to_dict``."""
        return cls(
            token=data["token"],
            status=JobStatus(data["status"]),
            attempt=int(data["attempt"]),
            at=float(data["at"]),
            error_type=data.get("error_type"),
            error_message=data.get("error_message"),
        )


def slot_init(cls: type[_T]) -> type[_T]:
    """Give a frozen, slotted dataclass an ``__init__`` that sets each slot by its descriptor.

    The same parameters, defaults and factories as the generated one, which sets each field
    with ``object.__setattr__`` (a lookup by name through the class): a record of many fields
    made once or twice a job then costs a microsecond more than it need (JobRecord: 2.7 us,
    this 1.7). For classes without ``__post_init__``, ``InitVar`` or keyword-only fields.
    """
    params: list[str] = []
    body: list[str] = []
    scope: dict[str, Any] = {"_MISSING": MISSING}
    dataclass_type: Any = cls
    for f in fields(dataclass_type):
        if f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name}: slot_init takes positional fields only")
        scope[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        value = f.name
        if f.default_factory is not MISSING:
            scope[f"_make_{f.name}"] = f.default_factory
            if f.init:
                params.append(f"{f.name}=_MISSING")
                body.append(f"if {f.name} is _MISSING: {f.name} = _make_{f.name}()")
            else:
                value = f"_make_{f.name}()"
        elif f.default is not MISSING:
            scope[f"_default_{f.name}"] = f.default
            if f.init:
                params.append(f"{f.name}=_default_{f.name}")
            else:
                value = f"_default_{f.name}"
        else:
            params.append(f.name)
        body.append(f"_set_{f.name}(self, {value})")
    generated = cls.__init__.__code__  # an InitVar is a parameter but not a field
    names = tuple(p.partition("=")[0] for p in params)
    if hasattr(cls, "__post_init__") or generated.co_varnames[1 : generated.co_argcount] != names:
        raise TypeError(f"{cls.__name__}: slot_init takes fields only, without __post_init__")
    exec(f"def __init__(self, {', '.join(params)}):\n    " + "\n    ".join(body), scope)
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    type.__setattr__(cls, "__init__", init)
    return cls


@slot_init  # two a job with a store (begin, the end): see slot_init
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
    dead_letter: str | None = None
    """Why the job belongs in the dead-letter queue (a ``Reason``), when it ended there: every
    later delivery of its message is dead-lettered again instead of acknowledged, so a DLQ send
    that failed, or a queue left to its redrive policy, cannot lose the job."""
    restart: str | None = None
    """The restart token of the current run (``Envelope.restart``); None if never restarted."""
    restart_base: int = 0
    """The last attempt before the current run: the retry policy counts ``attempt -
    restart_base``, so a restarted job has its whole budget again while attempt numbers stay
    monotonic (a stale attempt of an earlier run can never overwrite this run's outcome)."""
    restarts: tuple[RestartEntry, ...] = ()
    """How each earlier run ended, oldest first (at most ``MAX_RESTARTS``)."""
    envelope: str | None = None
    """The job's envelope as sent (JSON text), kept with a failed or rejected end only, so
    ``App.retry`` can send the job again; written with the end, never with ``begin``."""
    envelope_note: str | None = None
    """Why a failed or rejected end kept no envelope (it was too large for the store)."""
    envelope_ref: str | None = None
    """Where a failed or rejected end's envelope was offloaded (``s3://``), when it was too
    large to keep in the record itself; ``BaseJobStore.load_envelope`` reads it."""

    @property
    def restart_tokens(self) -> frozenset[str]:
        """Every restart token this job has used (the current one included)."""
        used = {entry.token for entry in self.restarts}
        if self.restart is not None:
            used.add(self.restart)
        return frozenset(used)

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
            "dead_letter": self.dead_letter,
            "restart": self.restart,
            "restart_base": self.restart_base,
            "restarts": [entry.to_dict() for entry in self.restarts],
            "envelope": self.envelope,
            "envelope_note": self.envelope_note,
            "envelope_ref": self.envelope_ref,
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
            dead_letter=data.get("dead_letter"),
            restart=data.get("restart"),
            restart_base=int(data.get("restart_base") or 0),
            restarts=tuple(RestartEntry.from_dict(e) for e in data.get("restarts") or ()),
            envelope=data.get("envelope"),
            envelope_note=data.get("envelope_note"),
            envelope_ref=data.get("envelope_ref"),
        )


@dataclass(frozen=True, slots=True)
class Begin:
    """What ``JobStore.begin`` decided.

    ``started``: run the handler; ``record.attempt`` is the attempt's number, as the store
    counts them. ``finished``: the job already has a final outcome (a duplicate delivery):
    acknowledge without running, or dead-letter again if ``record.dead_letter`` says so.
    ``busy``: another attempt holds a live lease; try again after it. ``stale``: a copy of a
    restart the job already began (its token is in ``record.restart_tokens`` but is not the
    current one): acknowledge without running, never dead-letter.
    """

    state: Literal["started", "finished", "busy", "stale"]
    record: JobRecord


@dataclass(frozen=True, slots=True)
class KeyClaim:
    """What ``JobStore.claim_key`` decided for an idempotency key.

    ``acquired``: this job holds the key and runs. ``completed``: job ``holder`` already
    succeeded with ``result``. ``in_progress``: job ``holder`` runs now, until ``lease_until``.
    ``fingerprint``: the digest of the holder's input (see ``taskhop.sdk._fingerprint``), or
    None where its task opted out (``idempotency="key"``) or an older version wrote the claim.
    """

    state: Literal["acquired", "completed", "in_progress"]
    holder: str
    result: JsonValue = None
    lease_until: float | None = None
    fingerprint: str | None = None

    def conflicts_with(self, fingerprint: str | None) -> bool:
        """Whether ``fingerprint`` and the holder's are both known and differ.

        A side without one (an opted-out task, a claim written before fingerprints) is never
        a conflict: only two known, different inputs are.
        """
        return (
            self.fingerprint is not None
            and fingerprint is not None
            and self.fingerprint != fingerprint
        )


@runtime_checkable
class JobStore(Protocol):
    """Job state, results and idempotency keys."""

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
        restart: str | None = None,
    ) -> Begin:
        """Start the job's next attempt: RUNNING with a lease, unless final or leased.

        ``attempt`` is the host's count (a receive count): the number of the first attempt
        when the store has no record of the job; a store that keeps state numbers later ones.
        ``restart`` is the envelope's restart token: a new one restarts a job that ended
        without succeeding, one used before is ``stale`` (see ``BaseJobStore.may_restart``).
        """
        ...

    def accept(
        self, job_id: str, *, task: str, idempotency_key: str | None = None
    ) -> JobRecord | None:
        """Record a job QUEUED if the store has no record of it.

        Returns None when this call created the record, else the existing record: the job
        was accepted before (a replayed or retried request), so answer with its state.
        """
        ...

    def complete(self, record: JobRecord) -> bool:
        """Write an outcome (RETRYING or final); False if final or a newer attempt owns it."""
        ...

    def claim_key(
        self, key: str, job_id: str, *, lease_until: float, fingerprint: str | None = None
    ) -> KeyClaim:
        """Hold an idempotency key for ``job_id``, with its input's ``fingerprint``.

        See ``KeyClaim``; a lapsed holder whose fingerprint conflicts is not taken over.
        """
        ...

    def complete_key(self, key: str, job_id: str, result: JsonValue) -> None:
        """Mark the key's job succeeded with ``result``; later duplicates get it."""
        ...

    def release_key(self, key: str, job_id: str) -> None:
        """Let go of a key after a failure, so a later job with the key may run."""
        ...

    def wait(self, job_id: str, timeout: float | None) -> JobRecord | None:
        """Block until the job is final and return its record; None after ``timeout``."""
        ...


@runtime_checkable
class OutboxStore(Protocol):
    """A job store whose table holds events until its stream publishes them (``DynamoStore``).

    What ``app.outbox`` and ``create_app(outbox=True)`` need: an event put in a transaction
    exists if, and only if, that transaction committed, and ``serve_stream_records`` publishes
    it from the table's stream.
    """

    def outbox_item(self, event: EventEnvelope) -> dict[str, Any]:
        """A transaction entry that puts ``event`` in the outbox."""
        ...

    def outbox_event(self, record: Any) -> EventEnvelope | None:
        """The event a stream record of this store's outbox carries, else None."""
        ...

    def outbox_entries(self, job_id: str, events: Sequence[EventEnvelope]) -> list[Any]:
        """What ``complete_with_outbox`` writes for a job's events.

        Raises ``ResultTooLarge`` if they cannot go in one completion.
        """
        ...

    def complete_with_outbox(self, record: JobRecord, entries: Sequence[Any]) -> bool:
        """``complete``, with the ``outbox_entries`` written by the same transaction."""
        ...

    def complete_key_with_outbox(
        self, key: str, job_id: str, result: JsonValue, entries: Sequence[Any], *, attempt: int
    ) -> None:
        """``complete_key`` and the ``outbox_entries`` at once, if ``attempt`` owns the job.

        A stale attempt writes neither.
        """
        ...

    def outbox_events(self, since: datetime | None = None) -> Iterable[EventEnvelope]:
        """The events the outbox still holds, emitted at ``since`` or later."""
        ...


def outbox_of(store: JobStore | None) -> OutboxStore | None:
    """The store as an ``OutboxStore`` if it keeps an outbox, else None."""
    if store is not None and isinstance(store, OutboxStore):
        return store
    return None


def _lease_live(lease_until: float | None, now: float) -> bool:
    """Whether a lease still holds at ``now`` (one that ends exactly now has run out)."""
    return lease_until is not None and lease_until > now


class BaseJobStore(ABC):
    """The ``JobStore`` decisions, written once; adapters supply conditional primitives.

    In the spirit of Powertools' idempotency ``BasePersistenceLayer``: this class builds the
    records, answers ``begin`` and ``claim_key`` from what a conditional write saw, waits by
    polling and reads many ids one by one. An adapter implements ``get`` and five atomic
    conditional writes (``_start_attempt``, ``_write_outcome``, ``_claim``, ``_complete_claim``,
    ``_drop_claim``), each guarded by one of the ``may_*`` predicates below. An in-process
    store evaluates the predicate under its lock; a service evaluates the same predicate
    server-side (DynamoDB: a ``ConditionExpression``), so no guard is ever a read followed by a
    write. The contract suite (``tests/test_store.py``) checks every adapter against the
    predicates. Adapters override ``get_many`` and ``wait`` where the service does better.
    """

    # -- the decisions -----------------------------------------------------------------------

    @staticmethod
    def may_begin(current: JobRecord | None, now: float, restart: str | None = None) -> bool:
        """Whether a new attempt may start.

        Not if the job is final, nor while any live lease holds it: a message that comes back
        while its first attempt still runs (a visibility timeout shorter than the run, a
        duplicate delivery) waits for that attempt's lease, whatever its receive count says.
        A delivery with a ``restart`` token begins this way only within the run that token
        started; any other token is decided by ``may_restart``.
        """
        if current is None:
            return True
        if current.status.is_final or (restart is not None and restart != current.restart):
            return False
        return not (current.status is JobStatus.RUNNING and _lease_live(current.lease_until, now))

    @staticmethod
    def may_restart(current: JobRecord | None, restart: str, now: float) -> bool:
        """Whether the token ``restart`` may start a new run of the job.

        Only a token the job never used (a used one is a copy of a restart that began: it
        runs nothing), on a job that did not succeed (there is nothing to run again), that no
        live lease holds, and that has had fewer than ``MAX_RESTARTS`` restarts.
        """
        return (
            current is not None
            and restart not in current.restart_tokens
            and current.status is not JobStatus.SUCCEEDED
            and not (current.status is JobStatus.RUNNING and _lease_live(current.lease_until, now))
            and len(current.restarts) < MAX_RESTARTS
        )

    @staticmethod
    def restarted(current: JobRecord, record: JobRecord) -> JobRecord:
        """The RUNNING record a restart stores over ``current``: ``record``'s lease and token.

        The attempt is one past the last (attempts stay monotonic), the budget counts from
        there (``restart_base``), and ``current``'s end joins the history; the earlier end's
        outcome, dead-letter mark and kept envelope go.
        """
        error = current.error
        entry = RestartEntry(
            token=str(record.restart),
            status=current.status,
            attempt=current.attempt,
            at=current.updated_at,
            error_type=None if error is None else error.type,
            error_message=None if error is None else error.message[:_HISTORY_MESSAGE],
        )
        return replace(
            record,
            attempt=current.attempt + 1,
            created_at=current.created_at,
            idempotency_key=record.idempotency_key or current.idempotency_key,
            restart_base=current.attempt,
            restarts=(*current.restarts, entry),
        )

    @staticmethod
    def next_attempt(current: JobRecord | None, hint: int) -> int:
        """The number of the attempt ``begin`` starts: one past the store's last, else ``hint``."""
        return hint if current is None else current.attempt + 1

    @staticmethod
    def may_complete(current: JobRecord | None, record: JobRecord) -> bool:
        """Whether an outcome may be written: the job is not final and no newer attempt owns it."""
        return current is None or (
            not current.status.is_final and current.attempt <= record.attempt
        )

    @staticmethod
    def already_recorded(current: JobRecord | None, record: JobRecord) -> bool:
        """Whether ``record``'s outcome is the final one stored (same attempt and status).

        ``complete`` then answers True without writing: the write being retried landed
        before, only its answer was lost. The stored outcome is kept either way.
        """
        return (
            current is not None
            and current.status.is_final
            and current.status is record.status
            and current.attempt == record.attempt
        )

    @staticmethod
    def may_claim_key(
        current: KeyClaim | None, job_id: str, now: float, fingerprint: str | None = None
    ) -> bool:
        """Whether ``job_id``, whose input has ``fingerprint``, may hold a key.

        Yes if it is free, already its own, or its holder's lease ran out and the holder's
        fingerprint does not conflict (``KeyClaim.conflicts_with``): a key stays bound to the
        first input even when its job died, so that job's redelivery is not refused in favour
        of a different input. A completed key is never claimed again, whoever asks (its own
        job included): it answers its result.
        """
        return current is None or (
            current.state == "in_progress"
            and (
                current.holder == job_id
                or (
                    not _lease_live(current.lease_until, now)
                    and not current.conflicts_with(fingerprint)
                )
            )
        )

    @staticmethod
    def may_complete_key(current: KeyClaim | None, job_id: str) -> bool:
        """Whether ``job_id`` may store the key's result.

        Only while it holds the key (or nobody does) and no result is stored yet: the first
        result is the one every duplicate gets.
        """
        return current is None or (current.state == "in_progress" and current.holder == job_id)

    @staticmethod
    def may_release_key(current: KeyClaim | None, job_id: str) -> bool:
        """Whether ``job_id`` may free a key: it holds it and has not completed it."""
        return current is not None and current.state == "in_progress" and current.holder == job_id

    # -- the primitives each adapter supplies -------------------------------------------------

    @abstractmethod
    def get(self, job_id: str) -> JobRecord | None:
        """The job's record, read consistently, or None if no worker has recorded it yet."""

    @abstractmethod
    def _start_attempt(self, record: JobRecord, now: float) -> tuple[bool, JobRecord]:
        """Atomically store the RUNNING ``record`` if ``may_begin`` allows it at ``now``.

        Its attempt is ``next_attempt(stored, record.attempt)``; the stored ``created_at`` and
        restart fields are kept (``record``'s token is stored only when there is no record).
        The guard is given ``record.restart``. Returns ``(True, the record as stored)`` or
        ``(False, the record that failed the guard)``.
        """

    @abstractmethod
    def _restart(self, seen: JobRecord, record: JobRecord, now: float) -> tuple[bool, JobRecord]:
        """Atomically store the RUNNING ``record`` (``restarted(seen, ...)``) over ``seen``.

        Only if the stored record is still ``seen`` (same attempt and status) and
        ``may_restart`` allows ``record.restart`` at ``now``. Returns ``(True, record)`` or
        ``(False, the record that failed the guard)``.
        """

    @abstractmethod
    def _create_queued(self, record: JobRecord) -> JobRecord | None:
        """Atomically store the QUEUED ``record`` if the job has no record; else return it."""

    @abstractmethod
    def _write_outcome(self, record: JobRecord, now: float) -> bool:
        """Atomically store ``record`` (it has no lease) if ``may_complete`` allows it.

        The stored ``created_at`` is kept. Returns False if the guard failed, unless the
        record that failed it is ``already_recorded``.
        """

    @abstractmethod
    def _claim(self, key: str, claim: KeyClaim, now: float) -> KeyClaim | None:
        """Atomically store the in-progress ``claim`` if ``may_claim_key`` allows it.

        The guard is given ``claim.fingerprint``, and the stored claim is ``claim`` as a whole:
        one without a fingerprint leaves none behind. Returns None when stored, else the
        stored claim that failed the guard (a completed one with its result), with its
        fingerprint.
        """

    @abstractmethod
    def _complete_claim(self, key: str, claim: KeyClaim) -> bool:
        """Atomically store the completed ``claim`` if ``may_complete_key`` allows it.

        The fingerprint the key already holds is kept (``claim`` carries none).
        """

    @abstractmethod
    def _drop_claim(self, key: str, job_id: str) -> bool:
        """Atomically delete the key if ``may_release_key`` allows it."""

    # -- the JobStore methods, on top of them ----------------------------------------------

    def get_many(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        """Records for the ids that have one, read one by one with ``get``."""
        found: dict[str, JobRecord] = {}
        for job_id in dict.fromkeys(job_ids):
            record = self.get(job_id)
            if record is not None:
                found[job_id] = record
        return found

    def begin(
        self,
        job_id: str,
        *,
        task: str,
        attempt: int,
        lease_until: float,
        idempotency_key: str | None = None,
        restart: str | None = None,
    ) -> Begin:
        """Start an attempt unless the job is final or another live attempt holds it.

        With a ``restart`` token the job has not used, a job that ended without succeeding
        (or stalled) starts a new run instead: a second conditional write, tried only when
        the first says the job is final or in another run.
        """
        now = time.time()
        record = JobRecord(
            id=job_id,
            task=task,
            status=JobStatus.RUNNING,
            attempt=attempt,
            idempotency_key=idempotency_key,
            lease_until=lease_until,
            created_at=now,
            updated_at=now,
            restart=restart,
        )
        started, current = self._start_attempt(record, now)
        if started:
            return Begin("started", current)
        for _ in range(3):  # a concurrent write changed the record: decide again from it
            if restart is None or restart == current.restart:
                break
            if restart in current.restart_tokens:
                return Begin("stale", current)
            if not self.may_restart(current, restart, now):
                break
            started, current = self._restart(current, self.restarted(current, record), now)
            if started:
                return Begin("started", current)
        return Begin("finished" if current.status.is_final else "busy", current)

    def load_envelope(self, record: JobRecord) -> bytes | None:
        """The envelope a failed or rejected end kept (``App.retry`` sends it again).

        None if the record kept none. An adapter that offloads large envelopes reads them.
        """
        return None if record.envelope is None else record.envelope.encode()

    def accept(
        self, job_id: str, *, task: str, idempotency_key: str | None = None
    ) -> JobRecord | None:
        """Record the job QUEUED unless it has a record; return that record if it has."""
        now = time.time()
        record = JobRecord(
            id=job_id,
            task=task,
            status=JobStatus.QUEUED,
            attempt=0,
            idempotency_key=idempotency_key,
            created_at=now,
            updated_at=now,
        )
        return self._create_queued(record)

    def complete(self, record: JobRecord) -> bool:
        """Write an outcome unless the job is final or a newer attempt owns it."""
        if record.lease_until is not None:  # an outcome ends the attempt, and its lease
            record = replace(record, lease_until=None)
        return self._write_outcome(record, time.time())

    def claim_key(
        self, key: str, job_id: str, *, lease_until: float, fingerprint: str | None = None
    ) -> KeyClaim:
        """Hold ``key`` for ``job_id`` unless another live holder has it or it is completed."""
        claim = KeyClaim("in_progress", job_id, lease_until=lease_until, fingerprint=fingerprint)
        current = self._claim(key, claim, time.time())
        return replace(claim, state="acquired") if current is None else current

    def complete_key(self, key: str, job_id: str, result: JsonValue) -> None:
        """Store the result for later duplicates of ``key`` (if ``job_id`` still holds it)."""
        self._complete_claim(key, KeyClaim("completed", job_id, result=result))

    def release_key(self, key: str, job_id: str) -> None:
        """Free ``key`` if ``job_id`` holds it and has not completed."""
        self._drop_claim(key, job_id)

    def wait(self, job_id: str, timeout: float | None) -> JobRecord | None:
        """Poll ``get`` with capped backoff until the job is final; None after ``timeout``."""
        return poll_for_final(self, job_id, timeout)


class NoStore:
    """The store of a worker that keeps no state (``create_app`` without ``store=``).

    Every job runs as delivered: no results are kept (``result()`` is unavailable), duplicate
    deliveries may run twice, and idempotency keys are not enforced. Rejected and failed jobs
    go to the dead-letter queue instead of a record, so nothing is lost. It costs no request
    per job beyond the queue's own. Having no state to guard, it shares no code with
    ``BaseJobStore``.
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
        restart: str | None = None,
    ) -> Begin:
        """Every delivery starts; a restart token changes nothing.

        The message's attempt (1 on a redriven or retried job) is the whole count.
        """
        return Begin(
            "started",
            JobRecord(
                id=job_id,
                task=task,
                status=JobStatus.RUNNING,
                attempt=attempt,
                idempotency_key=idempotency_key,
                lease_until=lease_until,
            ),
        )

    def accept(
        self, job_id: str, *, task: str, idempotency_key: str | None = None
    ) -> JobRecord | None:
        """Nothing is recorded, so every job looks new."""
        return None

    def complete(self, record: JobRecord) -> bool:
        """Accept every outcome (there is nothing to compare it with)."""
        return True

    def claim_key(
        self, key: str, job_id: str, *, lease_until: float, fingerprint: str | None = None
    ) -> KeyClaim:
        """Every job holds its key: without state there is no deduplication (nor comparison)."""
        return KeyClaim("acquired", job_id, lease_until=lease_until)

    def complete_key(self, key: str, job_id: str, result: JsonValue) -> None:
        """Nothing to keep."""

    def release_key(self, key: str, job_id: str) -> None:
        """Nothing to release."""

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
