"""What a handler knows about the job it runs: ``JobContext``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from taskhop.static_contracts import Envelope, EventEnvelope, StaticContract, StaticEvent

from ._logging import JOB_LOGGER, incoming, trace_id
from ._store import slot_init

if TYPE_CHECKING:
    from ._app import App
    from ._bound import BoundTask
    from ._handle import ResultHandle
    from ._invoke import Calls

__all__ = ["JobContext"]

I = TypeVar("I")
O = TypeVar("O")
P = TypeVar("P")
_CANCEL_CHECK_EVERY = 1.0
"""Seconds ``ctx.cancelled`` reuses its last answer: a loop may ask often, the store is read
at most once a second."""

_log = logging.getLogger(JOB_LOGGER)
_EMITTING = threading.Lock()
"""Held while a job context numbers an event (one lock for all: held for a list append)."""


class _JobAdapter(logging.LoggerAdapter[logging.Logger]):
    """``ctx.log``: the job's fields on every record, merged with the caller's ``extra``.

    ``LoggerAdapter`` replaces a call's ``extra`` with its own before Python 3.13; here the
    caller's fields are kept, and win over the job's where both name one.
    """

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        given = kwargs.get("extra")
        kwargs["extra"] = dict(self.extra or {}) if not given else {**(self.extra or {}), **given}
        return msg, kwargs


@slot_init  # made once a job: see slot_init
@dataclass(frozen=True, slots=True)
class JobContext:
    """The second argument of every handler.

    Args:
        job_id: the job's id (stable across retries).
        task: the task name.
        attempt: 1 on the first run, counting up on retries.
        max_attempts: the retry policy's total; ``attempt == max_attempts`` is the last try.
        deadline: ``time.monotonic()`` value by which the handler must finish, or None.
        envelope: the job as it arrived (trace context, headers, idempotency key).

    While the handler runs, the job's fields (``log_fields``) are on every log record a
    handler configured by ``configure_logging`` writes, ``ctx.log``'s or your own loggers'.

    """

    job_id: str
    task: str
    attempt: int = 1
    max_attempts: int = 1
    deadline: float | None = None
    envelope: Envelope | None = None
    _incoming: Mapping[str, str] | None = field(
        default_factory=incoming, init=False, repr=False, compare=False
    )
    """The host's trace for this message (an SQS ``AWSTraceHeader``), read when made."""
    _fields: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)
    _adapter: logging.LoggerAdapter[logging.Logger] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _app: App | None = field(default=None, init=False, repr=False, compare=False)
    """The worker's app (set by the worker): what ``invoke`` / ``dispatch`` send through."""
    _calls: Calls | None = field(default=None, init=False, repr=False, compare=False)
    _cancel_seen: tuple[float, bool] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _emitter: App | None = field(default=None, init=False, repr=False, compare=False)
    """The worker's app, always set by the worker: what ``emit`` registers events with."""
    _emitted: list[EventEnvelope] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """The ``taskhop.job`` logger, its records carrying ``log_fields`` (made on first use)."""
        adapter = self._adapter
        if adapter is None:
            adapter = _JobAdapter(_log, self.log_fields)
            object.__setattr__(self, "_adapter", adapter)  # a cache, not state: still frozen
        return adapter

    @property
    def log_fields(self) -> Mapping[str, Any]:
        """The fields each of the job's log lines carries.

        ``job_id``, ``task``, ``attempt``, and ``trace_id`` when the job has a trace.
        """
        fields = self._fields
        if fields is None:
            fields = {"job_id": self.job_id, "task": self.task, "attempt": self.attempt}
            if (trace := self.trace_id) is not None:
                fields["trace_id"] = trace
            object.__setattr__(self, "_fields", fields)  # a cache, like _adapter
        return fields

    @property
    def trace(self) -> dict[str, str]:
        """The job's trace context: ``traceparent`` / ``tracestate`` (W3C), ``xray``.

        The envelope's, as the producer sent it; without one, what the host received beside
        the message (on Lambda, the SQS record's ``AWSTraceHeader``, as ``xray``); else empty.
        A tracing middleware continues the trace from it.
        """
        if self.envelope is not None and self.envelope.trace:
            return dict(self.envelope.trace)
        return dict(self._incoming or {})

    @property
    def trace_id(self) -> str | None:
        """The trace's id: the W3C trace id of ``traceparent``, else the X-Ray ``Root``."""
        return trace_id(self.trace)

    @property
    def is_last_attempt(self) -> bool:
        """Whether a failure now ends the job."""
        return self.attempt >= self.max_attempts

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    @property
    def headers(self) -> dict[str, str]:
        """The envelope's string metadata (empty when there is none)."""
        return dict(self.envelope.headers or {}) if self.envelope else {}

    # -- children and workflows -----------------------------------------------------------

    def invoke(self, task: BoundTask[I, O] | StaticContract[I, O], payload: I) -> O:
        """Run ``task`` on ``payload`` as a child job and return its output.

        The first time, the child is sent and this job suspends: its progress is recorded,
        its message acknowledged, and the child's end resumes it by sending it again, when
        the handler runs from the top and this call returns the child's output at once.
        Code before the call runs again on each resumption (``docs/workflows.md``).

        Raises:
            TaskFailed: the child failed (``TaskRejected``: it was rejected).
            NonDeterminismError: this call's position holds another task's child.

        """
        return self._children().invoke(task, payload)

    async def ainvoke(self, task: BoundTask[I, O] | StaticContract[I, O], payload: I) -> O:
        """``invoke`` for ``async def`` handlers: the store and queue calls run in a thread."""
        import asyncio

        return await asyncio.to_thread(self._children().invoke, task, payload)

    def dispatch(self, task: BoundTask[I, O] | StaticContract[I, O], payload: I) -> ResultHandle[O]:
        """Start ``task`` on ``payload`` as a child job without waiting for it.

        Its id derives from this job's and the call's position, so a retried or redelivered
        handler starts it once.
        """
        return self._children().dispatch(task, payload)

    @property
    def cancelled(self) -> bool:
        """Whether this workflow step's workflow has ended (failed, cancelled, timed out).

        A long step checks it between units of work and stops (``raise_if_cancelled``):
        taskhop never kills a running handler. False for a job outside a workflow. Read from
        the store at most once a second.
        """
        from ._workflow_continue import workflow_ended

        if self._app is None or self.envelope is None or self.envelope.continuation is None:
            return False
        now = time.monotonic()
        seen = self._cancel_seen
        if seen is not None and now - seen[0] < _CANCEL_CHECK_EVERY:
            return seen[1]
        ended = workflow_ended(self._app, self.envelope) is not None
        object.__setattr__(self, "_cancel_seen", (now, ended))
        return ended

    def raise_if_cancelled(self) -> None:
        """Raise ``StepCancelled`` if ``cancelled``: the job is recorded ``cancelled``."""
        from ._errors import StepCancelled

        if self.cancelled:
            raise StepCancelled(f"job {self.job_id}: its workflow has ended")

    # -- events ------------------------------------------------------------------------------

    def emit(self, event: StaticEvent[P], payload: P) -> str:
        """Emit ``event`` when, and only when, this job succeeds; return the event's id.

        The payload is validated now (a bad one raises ``ValidationError`` in the handler);
        the event is published after the handler returns, before the job is recorded
        succeeded. Its id derives from the job's and this call's position, so a re-run of the
        handler emits the same event, and subscribers run it once. (Emitting from several
        threads is safe, but positions then follow the threads' timing: a re-run gets the
        same ids only if it emits in the same order.)
        """
        from ._events import job_event_id

        app = self._emitter
        if app is None:
            from ._errors import TaskhopError

            raise TaskhopError(
                "ctx.emit works inside a worker's job only (use taskhop.sdk.testing to run"
                " handlers)"
            )
        # Validated first (it may raise), then numbered and kept in one step: a handler's
        # threads may emit at once, and no two events may take one position.
        envelope = app.events.envelope(
            event, payload, id=job_event_id(self.job_id, "e0"), trace=self.trace
        )
        with _EMITTING:
            emitted = self._emitted
            if emitted is None:
                emitted = []
                object.__setattr__(self, "_emitted", emitted)
            envelope = envelope.replace(id=job_event_id(self.job_id, f"e{len(emitted)}"))
            emitted.append(envelope)
        return envelope.id

    def _children(self) -> Calls:
        calls = self._calls
        if calls is None:
            from ._errors import TaskhopError
            from ._invoke import Calls

            if self._app is None or self.envelope is None:
                raise TaskhopError(
                    "ctx.invoke / ctx.dispatch work inside a worker's job only (this context"
                    " was made by hand: use taskhop.sdk.testing to run handlers)"
                )
            calls = Calls(self._app, self.envelope)
            object.__setattr__(self, "_calls", calls)
        return calls
