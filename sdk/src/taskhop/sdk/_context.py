"""What a handler knows about the job it runs: ``JobContext``."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from taskhop.static_contracts import Envelope

from ._logging import JOB_LOGGER, incoming, trace_id
from ._store import slot_init

__all__ = ["JobContext"]

_log = logging.getLogger(JOB_LOGGER)


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
