"""The worker path every host shares: bytes in, a recorded ``Outcome`` out.

The memory backend's loop and the Lambda runtime both call ``Worker.process`` for each
message, then carry out what ``queue_actions(outcome)`` (``_settle``) decides for it: one
pure decision, so every host settles an outcome alike. The steps, in order, never skipped::

    decode -> find implementation -> begin (store) -> migrate -> validate -> claim key
           -> before_process -> handler (with deadline) -> check output
           -> complete key -> record -> after_process

A job that fails validation is rejected and recorded with its field paths, never retried.
Bytes that are not an envelope become a POISON outcome for the host to dead-letter.

The order of the writes is what keeps a job alive and its handler single (DESIGN.md):

- ``begin`` numbers the attempt and leases the job before anything runs; a delivery that
  finds a live lease waits for it, so a handler never runs beside itself.
- After the handler, the idempotency key is completed before the job record: a crash between
  the two leaves a record still RUNNING, whose redelivery finds the key completed by this
  very job and records its result without running the handler again.
- The writes after the handler are retried in place (``_AFTER_HANDLER_TRIES``): the work is
  done, and a write that failed once must not cost a second run. Writes before the handler
  fail fast: the message comes back and nothing has run.
- A job that ends in the dead-letter queue is recorded with its reason
  (``JobRecord.dead_letter``), and every later delivery of its message is dead-lettered
  again rather than acknowledged: a DLQ send that failed, or a queue left to its redrive
  policy, cannot drop it.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import traceback
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING, Any

from taskhop.static_contracts import (
    Envelope,
    EnvelopeError,
    EventEnvelope,
    JsonValue,
    PayloadError,
    Reason,
    RetryPolicy,
    TransportError,
)
from taskhop.static_contracts.limits import LAMBDA_MAX_TIMEOUT

from ._context import JobContext
from ._converter import unstructure
from ._errors import (
    DuplicateJobInProgress,
    ErrorInfo,
    HandlerTimeout,
    IdempotencyKeyMismatch,
    PermanentError,
    ResultTooLarge,
    Retry,
    StepCancelled,
    TaskhopError,
    UnknownTaskError,
    ValidationError,
)
from ._events import SHARED_INPUT, outgoing_events
from ._fingerprint import input_fingerprint
from ._invoke import Suspended
from ._registered import MigrationError
from ._store import JobRecord, JobStatus, JobStore, NoStore, OutboxStore, outbox_of, slot_init
from ._workflow_continue import continue_after, workflow_ended

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from ._app import App
    from ._registered import Registered

__all__ = ["Outcome", "OutcomeKind", "Worker"]

_log = logging.getLogger("taskhop.worker")

DEFAULT_LEASE = float(LAMBDA_MAX_TIMEOUT)
"""Lease for a job without a timeout or host deadline: Lambda's maximum run time."""
LEASE_MARGIN = 30.0
"""Seconds a lease outlives the handler's deadline, so recording the outcome fits inside it."""
_AFTER_HANDLER_TRIES = (0.05, 0.2, 1.0)
"""Pauses between the tries of a store write after the handler ran (4 tries in all)."""
_HOST_EXITS = (SystemExit, KeyboardInterrupt, Suspended)
"""What a handler raises that is not an ``Exception``, caught all the same: an exit would end
its process (the job fails instead and the host goes on); ``Suspended`` is ``ctx.invoke``
waiting for a child (the job is recorded waiting)."""


class OutcomeKind(StrEnum):
    """What happened to one message."""

    SUCCEEDED = "succeeded"  # handler ran (or a duplicate key returned the stored result)
    RETRY = "retry"  # run again after retry_after seconds
    FAILED = "failed"  # recorded failed; dead_letter says whether the host must DLQ it
    REJECTED = "rejected"  # invalid input or unknown task: recorded, never retried
    SKIPPED = "skipped"  # duplicate delivery of a job that is already final: acknowledge
    DEFERRED = "deferred"  # not_before is in the future: hold it back, no attempt used
    POISON = "poison"  # not an envelope at all: dead-letter with the classification


@slot_init  # made once a message: see slot_init
@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of processing one message, for the host to act on."""

    kind: OutcomeKind
    envelope: Envelope | None = None
    attempt: int = 0
    result: JsonValue = None
    error: ErrorInfo | None = None
    retry_after: float | None = None
    dead_letter: bool = False
    reason: str | None = None
    duration_ms: float = 0.0

    @property
    def job_id(self) -> str | None:
        """The job id, when the message decoded far enough to have one."""
        return None if self.envelope is None else self.envelope.id


@dataclass(slots=True)
class _Prepared:
    """A job that passed every check and may run its handler."""

    envelope: Envelope
    entry: Registered
    data: Any
    ctx: JobContext
    timeout: float | None
    started: float
    created_at: float  # as the store recorded it: passing it on spares the store a copy


class _HandlerExited(Exception):
    """An ``async def`` handler's SystemExit / KeyboardInterrupt, carried out of its task."""

    def __init__(self, exit: BaseException) -> None:
        super().__init__(type(exit).__name__)
        self.exit = exit


class _Stop(Exception):
    """Ends preparation early with an outcome that is already decided (and recorded)."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


class Worker:
    """Runs jobs for one app. Get it with ``app.worker()``; hosts call ``process``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._local = threading.local()  # one event loop per host thread, kept across jobs
        self._runners: list[asyncio.Runner] = []
        self._runners_lock = threading.Lock()
        self._stateless = NoStore()

    @property
    def _store(self) -> JobStore:
        return self.app.store or self._stateless

    @property
    def keeps_state(self) -> bool:
        """False for a worker without a job store (see ``NoStore``)."""
        return self.app.store is not None

    # -- the two entry points -------------------------------------------------------------

    def process(
        self,
        body: bytes | str | Envelope,
        *,
        attempt: int | None = None,
        deadline: float | None = None,
    ) -> Outcome:
        """Process one message synchronously; ``async def`` handlers run on a private loop.

        Args:
            body: the message body (or an already-decoded envelope).
            attempt: the host's receive count (SQS ApproximateReceiveCount). A worker without
                a job store goes by it (or by the envelope's own count, when higher); with a
                store, the store numbers the attempts, so receives that never ran (a deferral,
                a busy lease, an outage) use none.
            deadline: ``time.monotonic()`` by which the host must have the outcome (Lambda's
                remaining time minus a margin); bounds the handler's timeout.

        """
        step = self._prepare(body, attempt, deadline)
        if isinstance(step, Outcome):
            return step
        try:
            if step.entry.implementation.is_async:
                value = self._loop().run(self._await_handler(step))
            else:
                value = self._call_handler(step)
        except (Exception, *_HOST_EXITS) as exc:
            return self._failed(step, exc)
        return self._succeeded(step, value)

    async def aprocess(
        self,
        body: bytes | str | Envelope,
        *,
        attempt: int | None = None,
        deadline: float | None = None,
    ) -> Outcome:
        """``process`` inside an event loop: store calls and sync handlers go to threads."""
        import asyncio  # lazy import: sync workers never pay for asyncio

        step = await asyncio.to_thread(self._prepare, body, attempt, deadline)
        if isinstance(step, Outcome):
            return step
        try:
            if step.entry.implementation.is_async:
                value = await self._await_handler(step)
            else:
                value = await asyncio.to_thread(self._call_handler, step)
        except (Exception, *_HOST_EXITS) as exc:
            return await asyncio.to_thread(self._failed, step, exc)
        return await asyncio.to_thread(self._succeeded, step, value)

    def close(self) -> None:
        """Close the private event loops used for ``async def`` handlers."""
        with self._runners_lock:
            runners, self._runners = self._runners, []
        for runner in runners:
            runner.close()
        self._local = threading.local()

    # -- before the handler ---------------------------------------------------------------

    def _prepare(
        self, body: bytes | str | Envelope, attempt: int | None, deadline: float | None
    ) -> _Prepared | Outcome:
        started = time.monotonic()
        try:
            # A store counts attempts itself; without one, receives are all there is to go by.
            envelope = _decode(body, attempt if self.app.store is None else None)
            wait = envelope.delay_seconds()
            if wait > 0:
                return Outcome(OutcomeKind.DEFERRED, envelope, envelope.attempt, retry_after=wait)
            entry = self._find(envelope, started)
            timeout = _bounded(entry.timeout, deadline)
            lease = time.time() + (DEFAULT_LEASE if timeout is None else timeout) + LEASE_MARGIN
            # Read before begin: a store outage here costs no attempt.
            ended = None if envelope.continuation is None else workflow_ended(self.app, envelope)
            envelope, created_at, entry = self._begin(envelope, entry, lease, started)
            if ended is not None:  # its workflow ended: never run, record why
                raise _Stop(
                    self._final(
                        envelope, JobStatus.CANCELLED, ended, started, reason=Reason.WORKFLOW_ENDED
                    )
                )
            data = self._validated_input(envelope, entry, started)
            base = _restart_base(entry)  # a restarted job counts its attempts from 1 again
            ctx = JobContext(
                job_id=envelope.id,
                task=envelope.task,
                attempt=envelope.attempt - base,
                max_attempts=entry.policy.attempts - base,
                deadline=None if timeout is None else time.monotonic() + timeout,
                envelope=envelope,
            )
            if self.app.store is not None:  # for ctx.invoke / ctx.dispatch / ctx.cancelled
                object.__setattr__(ctx, "_app", self.app)
            object.__setattr__(ctx, "_emitter", self.app)  # for ctx.emit
            step = _Prepared(envelope, entry, data, ctx, timeout, started, created_at)
            if envelope.idempotency_key is not None:
                self._claim_key(step, envelope.idempotency_key, lease)
        except _Stop as stop:
            return self._continued(stop.outcome)
        try:
            for middleware in entry.middleware:
                middleware.before_process(ctx)
        except (Exception, *_HOST_EXITS) as exc:
            return self._failed(step, exc)
        return step

    def _find(self, envelope: Envelope, started: float) -> Registered:
        entry = self.app.implementation(envelope.task)
        if entry is None:
            error = UnknownTaskError(envelope.task, self.app.implemented_names())
            info = ErrorInfo("UnknownTaskError", str(error))
            raise _Stop(
                self._final(envelope, JobStatus.REJECTED, info, started, reason=Reason.UNKNOWN_TASK)
            )
        return entry

    def _begin(
        self, envelope: Envelope, entry: Registered, lease: float, started: float
    ) -> tuple[Envelope, float, Registered]:
        """Start the attempt in the store (without one, every delivery starts, at its attempt).

        Returns the envelope as numbered there, its creation time, and ``entry`` with the
        retry policy of this run: a restarted job's counts from the attempt it restarted after
        (``JobRecord.restart_base``), so it has its whole budget again.
        """
        store = self.app.store
        if store is None:  # NoStore's begin: every delivery starts, at the message's attempt
            created_at = time.time()
        else:
            envelope, created_at, entry = self._begin_in(store, envelope, entry, lease)
        if envelope.attempt > entry.policy.attempts:
            # Every attempt was started; the last never reported (its worker stopped, ran out
            # of time, or lost the store): running again would be one attempt too many.
            base = _restart_base(entry)
            info = ErrorInfo(
                "AttemptsExhausted",
                f"attempt {envelope.attempt - base} is past the task's"
                f" {entry.policy.attempts - base}: an earlier attempt never recorded its outcome",
            )
            raise _Stop(self._exhausted(envelope, info, started))
        return envelope, created_at, entry

    def _begin_in(
        self, store: JobStore, envelope: Envelope, entry: Registered, lease: float
    ) -> tuple[Envelope, float, Registered]:
        """``_begin``'s store call, and what its answer means for this delivery."""
        begin = store.begin(
            envelope.id,
            task=envelope.task,
            attempt=envelope.attempt,
            lease_until=lease,
            idempotency_key=envelope.idempotency_key,
            restart=envelope.restart,
        )
        record = begin.record
        if begin.state == "stale":  # a second copy of a restart that began: it ran, or runs
            raise _Stop(
                Outcome(OutcomeKind.SKIPPED, envelope, record.attempt, reason=Reason.STALE_RESTART)
            )
        if begin.state == "finished":  # at-least-once delivery of a job that is done
            if record.dead_letter is not None:  # its dead letter may not be on a DLQ yet
                kind = OutcomeKind.REJECTED if record.status is JobStatus.REJECTED else None
                raise _Stop(
                    Outcome(
                        kind or OutcomeKind.FAILED,
                        envelope,
                        record.attempt,
                        error=record.error,
                        dead_letter=True,
                        reason=record.dead_letter,
                    )
                )
            raise _Stop(
                Outcome(
                    OutcomeKind.SKIPPED,
                    envelope,
                    envelope.attempt,
                    result=record.result,
                    error=record.error,
                    reason=Reason.ALREADY_FINAL,
                )
            )
        if begin.state == "busy":  # an attempt runs elsewhere: look again after its lease
            after = _recheck_after(record.lease_until)
            raise _Stop(
                Outcome(
                    OutcomeKind.RETRY,
                    envelope,
                    envelope.attempt,
                    retry_after=after,
                    reason=Reason.ATTEMPT_IN_PROGRESS,
                )
            )
        if record.attempt != envelope.attempt:  # the store counts attempts, not receives
            envelope = replace(envelope, attempt=record.attempt)
        if record.restart_base > 0:
            entry = replace(
                entry, policy=_RestartedPolicy.of_run(entry.policy, record.restart_base)
            )
        return envelope, record.created_at, entry

    def _validated_input(self, envelope: Envelope, entry: Registered, started: float) -> Any:
        data = (
            envelope.input
            if envelope.input_ref is None
            else self._load_input(envelope, entry, started)
        )
        try:
            return entry.validate(data, envelope.version)
        except MigrationError as exc:
            if exc.retryable:
                raise _Stop(
                    self._retry_or_fail(envelope, entry.policy, exc.info, started)
                ) from None
            raise _Stop(
                self._final(
                    envelope, JobStatus.REJECTED, exc.info, started, reason=Reason.MIGRATION
                )
            ) from None
        except ValidationError as exc:
            info = ErrorInfo("ValidationError", exc.summary, exc.errors)
            raise _Stop(
                self._final(
                    envelope, JobStatus.REJECTED, info, started, reason=Reason.INVALID_INPUT
                )
            ) from None

    def _load_input(self, envelope: Envelope, entry: Registered, started: float) -> Any:
        """Read an input that was too large for the message (``input_ref``)."""
        ref, payloads = envelope.input_ref, self.app.payloads
        try:
            if payloads is None:
                raise TaskhopError(
                    f"the input is stored at {ref}, but this app has no payload store:"
                    " pass payloads= to create_app()"
                )
            return json.loads(payloads.get(str(ref)))
        except Exception as exc:  # configuration or storage trouble: worth retrying later
            info = ErrorInfo("PayloadUnavailable", str(exc), retryable=True)
            raise _Stop(self._retry_or_fail(envelope, entry.policy, info, started)) from None

    def _discard_input(self, envelope: Envelope) -> None:
        """Delete an offloaded input once its job has succeeded (best effort).

        Only with a job store: without one, a redelivery of the message (its delete failed,
        the process died) runs the job again and needs its input; a lifecycle rule on the
        bucket removes it later.
        """
        if envelope.input_ref is None or self.app.payloads is None or not self.keeps_state:
            return
        if (envelope.extensions or {}).get(SHARED_INPUT):  # an event's: every subscriber's
            return
        try:
            self.app.payloads.delete(envelope.input_ref)
        except Exception:  # the job is done; a lifecycle rule removes what is left
            _log.warning("could not delete offloaded input %s", envelope.input_ref, exc_info=True)

    def _claim_key(self, step: _Prepared, key: str, lease: float) -> None:
        envelope = step.envelope
        fingerprint = self._fingerprint(step)
        claim = self._store.claim_key(key, envelope.id, lease_until=lease, fingerprint=fingerprint)
        if claim.holder != envelope.id and claim.conflicts_with(fingerprint):
            # The key names another input (running or succeeded): refuse, never answer with
            # its result (as payment APIs refuse a reused key). Not retried: it cannot change.
            mismatch = IdempotencyKeyMismatch(key, claim.holder)
            info = ErrorInfo(type(mismatch).__name__, str(mismatch))
            raise _Stop(
                self._final(
                    envelope, JobStatus.REJECTED, info, step.started, reason=Reason.KEY_MISMATCH
                )
            )
        if claim.state == "completed":  # a duplicate: hand back the first job's result
            # The holder may be this very job: it completed the key, then stopped before its
            # own record (the key is written first), so the result is its own.
            duplicate_of = None if claim.holder == envelope.id else claim.holder
            self._persist(
                self._store.complete,
                _record(
                    envelope, JobStatus.SUCCEEDED, result=claim.result, duplicate_of=duplicate_of
                ),
            )
            outcome = Outcome(
                OutcomeKind.SUCCEEDED,
                envelope,
                envelope.attempt,
                result=claim.result,
                reason=None if duplicate_of is None else Reason.DUPLICATE_KEY,
            )
            raise _Stop(self._finish(step, outcome))
        if claim.state == "in_progress":
            held = DuplicateJobInProgress(key, claim.holder)
            info = ErrorInfo(type(held).__name__, str(held), retryable=True)
            after = _recheck_after(claim.lease_until)
            raise _Stop(
                self._retry_or_fail(envelope, step.entry.policy, info, step.started, after=after)
            )

    def _fingerprint(self, step: _Prepared) -> str | None:
        """The input's fingerprint to claim its key with; None where nothing compares it.

        None for a task implemented with ``idempotency="key"``, for a worker without a store
        (no claim is kept), and for an input its converter cannot unstructure again (logged
        with the task: its key then decides alone, as before fingerprints).
        """
        if step.entry.idempotency == "key" or not self.keeps_state:
            return None
        try:
            return input_fingerprint(
                step.envelope.task,
                step.data,
                converter=self.app.converter,
                input_type=step.entry.input_type,
            )
        except Exception as exc:  # a converter hook of the user's: never fail the job for it
            _log.warning(
                "cannot fingerprint the input (%s): its idempotency key is compared alone",
                type(exc).__name__,  # the type only: the message may quote the input
                extra={"job_id": step.envelope.id, "task": step.envelope.task},
            )
            return None

    # -- running the handler --------------------------------------------------------------

    def _call_handler(self, step: _Prepared) -> Any:
        return step.entry.call(step.data, step.ctx, step.timeout)

    async def _await_handler(self, step: _Prepared) -> Any:
        try:
            return await step.entry.acall(step.data, step.ctx, step.timeout)
        except _HOST_EXITS as exc:
            # Escaping an asyncio task, SystemExit / KeyboardInterrupt would leave the loop
            # stopping at its next run; carried out as an Exception, the loop stays whole.
            raise _HandlerExited(exc) from exc

    def _loop(self) -> asyncio.Runner:
        # One loop per host thread, kept across jobs: async clients a handler module creates
        # stay bound to a live loop between Lambda invocations, and threads never share one.
        runner: asyncio.Runner | None = getattr(self._local, "runner", None)
        if runner is None:
            import asyncio

            runner = asyncio.Runner()
            self._local.runner = runner
            with self._runners_lock:
                self._runners.append(runner)
        return runner

    # -- after the handler ----------------------------------------------------------------

    def _succeeded(self, step: _Prepared, value: Any) -> Outcome:
        envelope, key = step.envelope, step.envelope.idempotency_key
        try:
            result = unstructure(
                self.app.converter, value, step.entry.contract.output, path="output"
            )
        except PayloadError as exc:
            bad = PermanentError(f"handler returned a bad output: {exc}")
            return self._failed(step, bad, kind="OutputError")
        events, refused = self._events_of(step, value)
        if refused is not None:
            return refused
        store = self.app.store
        # outbox=True: the events go in the end's transaction (App checks the store has one).
        outbox = outbox_of(store) if self.app.outbox_events else None
        if events and outbox is None:
            refused = self._publish(step, events)
            if refused is not None:
                return refused
        if store is not None:  # NoStore keeps nothing: no record to build, no key to complete
            record = _record(
                envelope, JobStatus.SUCCEEDED, result=result, created_at=step.created_at
            )
            try:
                complete, complete_key = _enders(store, outbox, envelope, events)
                if key is not None:  # the key first: see the module docstring
                    self._persist(complete_key, key, envelope.id, result)
                written = self._persist(complete, record)
            except ResultTooLarge as exc:  # the same run gives the same result: never retry it
                return self._failed(step, PermanentError(str(exc)), kind="ResultTooLarge")
            if not written:
                return self._finish(step, _stale(envelope))
            self._discard_input(envelope)
        outcome = Outcome(
            OutcomeKind.SUCCEEDED,
            envelope,
            envelope.attempt,
            result=result,
            duration_ms=_ms(step.started),
        )
        return self._finish(step, outcome)

    def _events_of(self, step: _Prepared, value: Any) -> tuple[list[EventEnvelope], Outcome | None]:
        """What the succeeding job publishes, checked by the carrier; or the job's failure.

        An event that can never be sent (an invalid transform's payload, one too large for
        the carrier) fails the job before anything is out or written: the same run gives the
        same events, so it is not retried.
        """
        try:
            events = outgoing_events(self.app, step.ctx, value)
            if events:
                self.app.carrier.check(events)
        except (ValidationError, PayloadError) as exc:  # a publisher's transform is wrong
            bad = PermanentError(f"an event this job publishes is invalid: {exc}")
            return [], self._failed(step, bad, kind="EventError")
        except TransportError as exc:
            if exc.retryable:
                raise
            bad = PermanentError(f"an event this job publishes cannot be sent: {exc}")
            return [], self._failed(step, bad, kind="EventError")
        return events, None

    def _publish(self, step: _Prepared, events: list[EventEnvelope]) -> Outcome | None:
        """Publish before the end is recorded (a redelivery publishes the same ids again).

        A carrier that is down leaves the message for later; one that refuses for good fails
        the job now rather than at the end of every attempt's lease.
        """
        try:
            self._persist(self.app.carrier.publish, events)
        except TransportError as exc:
            if exc.retryable:
                raise
            bad = PermanentError(f"the carrier refused this job's events: {exc}")
            return self._failed(step, bad, kind="EventError")
        return None

    def _failed(self, step: _Prepared, exc: BaseException, *, kind: str | None = None) -> Outcome:
        envelope = step.envelope
        if isinstance(exc, _HandlerExited):
            exc = exc.exit
        if isinstance(exc, Suspended):
            return self._suspend(step, exc)
        if envelope.idempotency_key is not None:
            self._persist(self._store.release_key, envelope.idempotency_key, envelope.id)
        if isinstance(exc, StepCancelled):  # asked to stop: its workflow ended
            info = ErrorInfo(type(exc).__name__, str(exc))
            return self._finish(
                step,
                self._final(
                    envelope, JobStatus.CANCELLED, info, step.started, reason=Reason.WORKFLOW_ENDED
                ),
            )
        if isinstance(exc, PermanentError):
            info = ErrorInfo(kind or type(exc).__name__, str(exc))
            return self._finish(step, self._final(envelope, JobStatus.FAILED, info, step.started))
        message = str(exc)
        if isinstance(exc, _HOST_EXITS):
            message = f"the handler raised {type(exc).__name__}: it cannot end its host"
            step.ctx.log.warning(message)
        elif not isinstance(exc, Retry | HandlerTimeout):
            # The type and the frames, not the message: it may quote the input (the record
            # keeps it, where the job's own readers see it).
            frames = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
            step.ctx.log.warning("handler raised %s\n%s", type(exc).__name__, frames)
        info = ErrorInfo(kind or type(exc).__name__, message, retryable=True)
        after = exc.after if isinstance(exc, Retry) else None
        outcome = self._retry_or_fail(envelope, step.entry.policy, info, step.started, after=after)
        return self._finish(step, outcome)

    def _suspend(self, step: _Prepared, suspended: Suspended) -> Outcome:
        """Record a parent that awaits a child ``waiting``, then let its message go.

        The record keeps the envelope (the child's end sends it again) and starts a fresh
        attempt budget at this attempt (``restart_base``): a resumption is not a retry. The
        child is read once more after the write, in case it ended before the parent waited
        (``_invoke``'s module docstring).
        """
        envelope = step.envelope
        kept, note = _kept_envelope(envelope)
        if kept is None:  # cannot resume without it: fail now rather than wait forever
            info = ErrorInfo("CannotSuspend", f"ctx.invoke cannot suspend this job: {note}")
            return self._finish(step, self._final(envelope, JobStatus.FAILED, info, step.started))
        waiting = _record(
            envelope,
            JobStatus.WAITING,
            created_at=step.created_at,
            restart_base=envelope.attempt,
            envelope=kept,
        )
        if not self._persist(self._store.complete, waiting):
            return self._finish(step, _stale(envelope))
        calls = step.ctx._calls  # pyright: ignore[reportPrivateUsage]
        if calls is not None and self._persist(calls.child_ended, suspended.child_id):
            self._persist(self.app.transport.send, replace(envelope, attempt=1))
        outcome = Outcome(OutcomeKind.SKIPPED, envelope, envelope.attempt, reason=Reason.SUSPENDED)
        return self._finish(step, outcome)

    def _persist(self, write: Callable[..., Any], *args: Any) -> Any:
        """A store write after the handler ran, tried again in place if it fails.

        Every write is conditional, and writing the same outcome again is a no-op, so a try
        whose answer was lost is safe to repeat. After the last try the error goes to the
        host, which leaves the message for redelivery.
        """
        for pause in _AFTER_HANDLER_TRIES:
            try:
                return write(*args)
            except ResultTooLarge:
                raise
            except Exception as exc:
                if not getattr(exc, "retryable", True):
                    raise
                _log.warning("store write failed; trying again: %s", type(exc).__name__)
                time.sleep(pause)
        return write(*args)

    def _retry_or_fail(
        self,
        envelope: Envelope,
        policy: RetryPolicy,
        info: ErrorInfo,
        started: float,
        *,
        after: float | None = None,
    ) -> Outcome:
        if envelope.attempt >= policy.attempts:
            return self._exhausted(envelope, info, started)
        if not self._persist(
            self._store.complete, _record(envelope, JobStatus.RETRYING, error=info)
        ):
            return _stale(envelope)
        delay = policy.delay_for(envelope.attempt) if after is None else after
        return Outcome(
            OutcomeKind.RETRY,
            envelope,
            envelope.attempt,
            error=info,
            retry_after=delay,
            duration_ms=_ms(started),
        )

    def _exhausted(self, envelope: Envelope, info: ErrorInfo, started: float) -> Outcome:
        """Record the job failed with its attempts used up, for the host to dead-letter."""
        return self._final(
            envelope,
            JobStatus.FAILED,
            info,
            started,
            reason=Reason.RETRIES_EXHAUSTED,
            dead_letter=True,
        )

    def _final(
        self,
        envelope: Envelope,
        status: JobStatus,
        info: ErrorInfo,
        started: float,
        *,
        reason: str | None = None,
        dead_letter: bool = False,
    ) -> Outcome:
        """Record a failed or rejected end; a stale attempt records (and dead-letters) nothing.

        Without a job store nothing records the end, so the job is dead-lettered instead. A
        dead-lettered end is recorded with its reason, so a later delivery dead-letters again.
        """
        dead_letter = dead_letter or not self.keeps_state
        mark = (reason or status.value) if dead_letter else None
        # The end keeps the envelope, so App.retry can send the job again; only the end:
        # a begin that wrote it would pay for its size on every attempt.
        kept, note = _kept_envelope(envelope) if self.keeps_state else (None, None)
        if not self._persist(
            self._store.complete,
            _record(
                envelope, status, error=info, dead_letter=mark, envelope=kept, envelope_note=note
            ),
        ):
            return _stale(envelope)
        if status is JobStatus.REJECTED:
            # A migration's message is the user's own exception text: it may quote the input.
            _log.info(
                "job rejected: %s",
                info.type if reason == Reason.MIGRATION else info.message,
                extra={"job_id": envelope.id, "task": envelope.task, "reason": reason},
            )
        kind = _END_KINDS[status]
        return Outcome(
            kind,
            envelope,
            envelope.attempt,
            error=info,
            dead_letter=dead_letter,
            reason=reason,
            duration_ms=_ms(started),
        )

    def _finish(self, step: _Prepared, outcome: Outcome) -> Outcome:
        if not outcome.duration_ms:
            outcome = replace(outcome, duration_ms=_ms(step.started))
        outcome = self._continued(outcome)
        for middleware in step.entry.middleware:
            try:
                middleware.after_process(step.ctx, outcome)
            except Exception:  # the outcome is recorded; a hook must not undo it
                _log.exception("after_process hook failed", extra={"job_id": step.ctx.job_id})
        return outcome

    def _continued(self, outcome: Outcome) -> Outcome:
        """Carry a recorded end on to what waits for it (a workflow, a suspended parent).

        Runs on every final outcome of a job with a continuation, a redelivery of a finished
        one included (``already_final``): the end is recorded before the message is
        acknowledged, so a crash between the two is finished by the next delivery. A failure
        here, after its in-place retries, goes to the host, which leaves the message.
        """
        envelope = outcome.envelope
        if envelope is None or envelope.continuation is None:
            return outcome
        state = _end_state(outcome)
        if state is not None:
            self._persist(continue_after, self.app, envelope, state, outcome.result, outcome.error)
        return outcome


_END_KINDS = {
    JobStatus.REJECTED: OutcomeKind.REJECTED,
    JobStatus.FAILED: OutcomeKind.FAILED,
    JobStatus.CANCELLED: OutcomeKind.SKIPPED,  # acknowledged: nothing to retry or keep
}


def _end_state(outcome: Outcome) -> str | None:
    """How a job ended, for what waits on it; None while it may still run."""
    kind = outcome.kind
    if kind is OutcomeKind.SUCCEEDED:
        return "succeeded"
    if kind is OutcomeKind.FAILED or kind is OutcomeKind.REJECTED:
        return "failed"
    if kind is OutcomeKind.SKIPPED and outcome.reason == Reason.WORKFLOW_ENDED:
        return "cancelled"
    if kind is OutcomeKind.SKIPPED and outcome.reason == Reason.ALREADY_FINAL:
        return "succeeded" if outcome.error is None else "failed"
    return None


@dataclass(frozen=True, slots=True)
class _RestartedPolicy(RetryPolicy):
    """A restarted job's retry policy: the task's own, counted from ``base``.

    Attempt numbers stay monotonic across restarts (the store orders outcomes by them), so
    this run's attempt ``n`` is ``base + n``: the total and the backoff shift by ``base``.
    """

    base: int = 0

    @classmethod
    def of_run(cls, policy: RetryPolicy, base: int) -> _RestartedPolicy:
        """``policy`` for the run that restarted after attempt ``base``."""
        return cls(
            attempts=policy.attempts + base,
            backoff=policy.backoff,
            delay=policy.delay,
            max_delay=policy.max_delay,
            jitter=policy.jitter,
            base=base,
        )

    def delay_for(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """The task's wait after this run's failed attempt ``attempt - base``."""
        return RetryPolicy.delay_for(self, attempt - self.base, rng=rng)


def _restart_base(entry: Registered) -> int:
    """The attempts before this run (0 unless the job was restarted)."""
    return entry.policy.base if isinstance(entry.policy, _RestartedPolicy) else 0


def _kept_envelope(envelope: Envelope) -> tuple[str | None, str | None]:
    """The envelope as a failed or rejected end keeps it, or why it cannot be kept.

    An envelope that came in as an object (a direct invocation) may hold what JSON cannot
    (``inf``): the job is still recorded, without an envelope to retry from.
    """
    try:
        return envelope.encode().decode(), None
    except PayloadError as exc:
        return None, f"the envelope cannot be written as JSON ({exc.path}): retry cannot resend it"


def _decode(body: bytes | str | Envelope, attempt: int | None) -> Envelope:
    try:
        envelope = body if isinstance(body, Envelope) else Envelope.decode(body)
    except Exception as exc:  # EnvelopeError, or a decoder bug: either way never crash a batch
        reason = exc.reason if isinstance(exc, EnvelopeError) else "undecodable"
        _log.warning("poison message: %s", exc, extra={"reason": reason})
        info = ErrorInfo(type(exc).__name__, str(exc))
        raise _Stop(
            Outcome(OutcomeKind.POISON, error=info, dead_letter=True, reason=reason)
        ) from None
    if attempt is not None and attempt > envelope.attempt:
        envelope = replace(envelope, attempt=attempt)
    return envelope


def _record(envelope: Envelope, status: JobStatus, /, **fields: Any) -> JobRecord:
    return JobRecord(
        id=envelope.id,
        task=envelope.task,
        status=status,
        attempt=envelope.attempt,
        idempotency_key=envelope.idempotency_key,
        **fields,
    )


def _enders(
    store: JobStore,
    outbox: OutboxStore | None,
    envelope: Envelope,
    events: list[EventEnvelope],
) -> tuple[Callable[[JobRecord], bool], Callable[[str, str, JsonValue], None]]:
    """The writes that end a succeeding job: its record's, and its key's.

    With an outbox, the events go with the first of them that ends the job: the key's (a
    crash after it ends the job from the key, never running it again), else the record's.
    So they exist if, and only if, the job succeeded. Raises ``ResultTooLarge`` if they
    cannot go in one write, before the key is touched.
    """
    if outbox is None or not events:
        return store.complete, store.complete_key
    entries = outbox.outbox_entries(envelope.id, events)
    if envelope.idempotency_key is None:
        return partial(outbox.complete_with_outbox, entries=entries), store.complete_key
    owned = partial(outbox.complete_key_with_outbox, entries=entries, attempt=envelope.attempt)
    return store.complete, owned


def _stale(envelope: Envelope) -> Outcome:
    """A newer attempt (or a duplicate delivery) already owns the outcome: drop this one."""
    _log.info("stale outcome dropped", extra={"job_id": envelope.id, "task": envelope.task})
    return Outcome(OutcomeKind.SKIPPED, envelope, envelope.attempt, reason=Reason.STALE_ATTEMPT)


def _recheck_after(lease_until: float | None) -> float:
    """When to look again at a job another worker holds: when its handler must be done.

    A lease is the holder's deadline plus ``LEASE_MARGIN``; the holder has almost always
    finished by its deadline, so waiting for the whole lease would only add latency. If it
    is still held then (the holder crashed, or is recording its outcome), the next look
    waits for the lease to run out. At least one second either way.
    """
    now = time.time()
    if lease_until is None:
        return 1.0
    deadline = lease_until - LEASE_MARGIN
    return max(1.0, (deadline if deadline > now else lease_until) - now + 1.0)


def _bounded(timeout: float | None, deadline: float | None) -> float | None:
    if deadline is None:
        return timeout
    left = max(0.001, deadline - time.monotonic())
    return left if timeout is None else min(timeout, left)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
