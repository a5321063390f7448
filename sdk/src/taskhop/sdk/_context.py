"""What a handler knows about the job it runs: ``JobContext``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from taskhop.static_contracts import Envelope

__all__ = ["JobContext"]

_log = logging.getLogger("taskhop.job")


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

    """

    job_id: str
    task: str
    attempt: int = 1
    max_attempts: int = 1
    deadline: float | None = None
    envelope: Envelope | None = None
    _adapter: logging.LoggerAdapter[logging.Logger] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry the job id and task name (made on first use)."""
        adapter = self._adapter
        if adapter is None:
            adapter = logging.LoggerAdapter(_log, {"job_id": self.job_id, "task": self.task})
            object.__setattr__(self, "_adapter", adapter)  # a cache, not state: still frozen
        return adapter

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
