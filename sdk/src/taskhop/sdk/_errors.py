"""Every error taskhop raises, in one tree under ``TaskhopError``.

Each class with the distribution it lives in (``taskhop.<package>``) and, in brackets, the
built-in exception it also derives from, so ``except ValueError`` code keeps working::

    TaskhopError                       static_contracts  root of every error raised on purpose
    ├── ContractError                  static_contracts  [ValueError] bad or clashing contract
    ├── PayloadError                   static_contracts  [TypeError] not JSON data (names path)
    ├── EnvelopeError                  static_contracts  [ValueError] not an envelope (reason)
    │   └── UnsupportedProtocolError   static_contracts  an envelope version we do not speak
    ├── TransportError                 static_contracts  sending failed; the job ids refused
    ├── SignatureError                 static_contracts  a signed request refused (reason)
    ├── ValidationError                sdk               [ValueError] input/output fails schema
    ├── MigrationError                 sdk               [ValueError] input not migratable here
    ├── UnknownTaskError               sdk               [LookupError] no task of that name
    ├── UnknownEventError              sdk               [LookupError] an event not registered
    ├── AlreadyImplementedError        sdk               [RuntimeError] implement() twice
    ├── JobNotFoundError               sdk               [LookupError] no record of a job id
    ├── StoreError                     sdk               the job store failed (after retries)
    │   └── ResultTooLarge             sdk               a result the store cannot keep
    ├── ResultTimeout                  sdk               [TimeoutError] result() gave up waiting
    ├── HandlerTimeout                 sdk               [TimeoutError] handler past deadline
    ├── TaskFailed                     sdk               the job ended failed (``ErrorInfo``)
    │   └── TaskRejected               sdk               rejected before its handler ran
    ├── WorkflowDefinitionError        sdk               [ValueError] a workflow that cannot run
    ├── WorkflowFailed                 sdk               a workflow ended failed (the step's error)
    │   └── WorkflowCancelled          sdk               cancelled, or past its timeout
    ├── DuplicateJobInProgress         sdk               an idempotency key held by a running job
    ├── IdempotencyKeyMismatch         sdk               a key reused with a different input
    ├── HandlerSignal                  sdk               control flow a handler raises on purpose
    │   ├── Retry                      sdk               run me again, after ``after`` seconds
    │   └── PermanentError             sdk               do not retry: record the job failed now
    │       ├── StepCancelled          sdk               a step stopping because its workflow ended
    │       └── NonDeterminismError    sdk               a replay's calls differ from the record
    ├── UnrecognisedEvent              lambda_worker     [ValueError] an event of no known kind
    └── GuardrailError                 infra             [ValueError] deploy parameters unsafe

Errors a handler raises that are not ``HandlerSignal`` are retried under the task's policy.
The ``static_contracts`` classes live there so a producer without the sdk can catch them; the
sdk re-exports the same classes. Errors that carry a ``reason`` (``EnvelopeError``,
``SignatureError``) take it from ``taskhop.static_contracts.Reason``. ``tests/test_error_tree.py``
checks this drawing against the classes, so it cannot fall behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from taskhop.static_contracts import (
    ContractError,
    EnvelopeError,
    PayloadError,
    TaskhopError,
    TransportError,
    UnsupportedProtocolError,
)

from ._redact import key_digest

__all__ = [
    "AlreadyImplementedError",
    "ContractError",
    "DuplicateJobInProgress",
    "EnvelopeError",
    "ErrorInfo",
    "FieldError",
    "HandlerSignal",
    "HandlerTimeout",
    "IdempotencyKeyMismatch",
    "JobNotFoundError",
    "NonDeterminismError",
    "PayloadError",
    "PermanentError",
    "ResultTimeout",
    "ResultTooLarge",
    "Retry",
    "StepCancelled",
    "StoreError",
    "TaskFailed",
    "TaskRejected",
    "TaskhopError",
    "TransportError",
    "UnknownTaskError",
    "UnsupportedProtocolError",
    "ValidationError",
    "WorkflowCancelled",
    "WorkflowDefinitionError",
    "WorkflowFailed",
]


# An error is stored in a job record (a DynamoDB item holds 400 KB at most, the result and
# the rest of the record included), sent back to producers and logged, so every text in it is
# bounded in UTF-8 bytes, what DynamoDB counts: about 12 KiB of text at most, whatever a handler
# put in its exception or a validator quoted from a 500 KB input.
MAX_ERROR_TYPE = 128
"""UTF-8 bytes of an error's ``type`` kept in a job record."""
MAX_ERROR_MESSAGE = 4096
"""UTF-8 bytes of an error message kept in a job record."""
MAX_ERROR_FIELDS = 100
"""Field errors kept in a job record (the first ones, in path order)."""
MAX_FIELD_TEXT = 512
"""UTF-8 bytes kept of one field error's path, and of its message (validators quote values)."""
MAX_FIELDS_BYTES = 8192
"""UTF-8 bytes of all kept field errors' paths and messages together."""
_TRUNCATED = " ... (truncated)"


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, the truncation mark included.

    Clipping what was clipped changes nothing, so a record read back compares equal.
    """
    if len(text) * 4 <= limit:  # no str of this length can be longer: skip the encoding
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[: limit - len(_TRUNCATED)].decode("utf-8", "ignore") + _TRUNCATED


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _bounded_fields(fields: tuple[FieldError, ...]) -> tuple[tuple[FieldError, ...], int]:
    """The field errors a record keeps, each clipped, and how many were dropped."""
    kept: list[FieldError] = []
    used = 0
    for error in fields[:MAX_ERROR_FIELDS]:
        path, message = _clip(error.path, MAX_FIELD_TEXT), _clip(error.message, MAX_FIELD_TEXT)
        used += _size(path) + _size(message)
        if used > MAX_FIELDS_BYTES:
            break
        kept.append(error if (path, message) == (error.path, error.message) else
                    FieldError(path, message))  # fmt: skip
    return tuple(kept), len(fields) - len(kept)


@dataclass(frozen=True, slots=True)
class FieldError:
    """One failing field: ``path`` like ``input.address.city`` and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A job's error as stored and sent back to producers: plain data, never a traceback.

    ``type`` is the exception class name (or a taskhop classification such as
    ``ValidationError``); ``fields`` holds field paths for validation failures.
    """

    type: str
    message: str
    fields: tuple[FieldError, ...] = field(default=())
    retryable: bool = False

    def __post_init__(self) -> None:
        # The one place the bounds are applied (see MAX_ERROR_MESSAGE): everything stored,
        # returned or logged as a job's error is built here, read back from a store included.
        object.__setattr__(self, "type", _clip(self.type, MAX_ERROR_TYPE))
        note = ""
        if self.fields:
            fields, dropped = _bounded_fields(tuple(self.fields))
            object.__setattr__(self, "fields", fields)
            note = f" (+{dropped} more field error(s) not kept)" if dropped else ""
        message = _clip(self.message, MAX_ERROR_MESSAGE - len(note)) + note
        object.__setattr__(self, "message", message)

    def to_dict(self) -> dict[str, Any]:
        """JSON data for the job store."""
        data: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.fields:
            data["fields"] = [{"path": f.path, "message": f.message} for f in self.fields]
        if self.retryable:
            data["retryable"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorInfo:
        """Inverse of ``to_dict``."""
        return cls(
            type=str(data.get("type", "Error")),
            message=str(data.get("message", "")),
            fields=tuple(
                FieldError(str(f["path"]), str(f["message"])) for f in data.get("fields", ())
            ),
            retryable=bool(data.get("retryable", False)),
        )


class ValidationError(TaskhopError, ValueError):
    """Input or output did not match its schema; ``errors`` lists every failing field."""

    def __init__(self, task: str, errors: Sequence[FieldError], *, what: str = "input") -> None:
        self.task = task
        self.errors = tuple(errors)
        self.what = what
        self.summary = f"invalid {what} for task {task!r}"
        # ``errors`` keeps every message whole; the text (tracebacks, logs) quotes each one
        # clipped, as a job record would keep it: a validator may quote a 500 KB value.
        lines = "\n".join(
            f"  {_clip(e.path, MAX_FIELD_TEXT)}: {_clip(e.message, MAX_FIELD_TEXT)}"
            for e in self.errors
        )
        super().__init__(f"{self.summary}:\n{lines}")


class UnknownTaskError(TaskhopError, LookupError):
    """No task of this name is registered (or, on a worker, implemented)."""

    def __init__(self, name: str, known: Sequence[str] = ()) -> None:
        import difflib

        self.name = name
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listing = f" (known: {', '.join(sorted(known))})" if known and not close else ""
        super().__init__(f"unknown task {name!r}{hint}{listing}")


class AlreadyImplementedError(TaskhopError, RuntimeError):
    """``implement()`` was called twice for the same task name in one app."""


class JobNotFoundError(TaskhopError, LookupError):
    """The job store has no record of this job id."""


class StoreError(TaskhopError):
    """The job store could not be read or written; ``retryable`` if trying later may work."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ResultTooLarge(StoreError):
    """A handler's result is larger than the store can keep (and it has no payload store).

    Never retryable: the same handler gives the same result. The worker records the job
    failed with this error (its idempotency key released) instead of running it again.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class ResultTimeout(TaskhopError, TimeoutError):
    """``result()`` gave up waiting; the job may still finish later."""


class HandlerTimeout(TaskhopError, TimeoutError):
    """The handler ran past its deadline; the job is retried under its policy."""


class DuplicateJobInProgress(TaskhopError):
    """Another job holding the same idempotency key is still running."""

    def __init__(self, key: str, holder: str) -> None:
        # The message is stored in the job record and logged: it names the key by its digest
        # (keys are often built from e-mail addresses); ``key`` keeps the key itself.
        super().__init__(f"idempotency key {key_digest(key)} is held by running job {holder}")
        self.key = key
        self.holder = holder


class IdempotencyKeyMismatch(TaskhopError):
    """A job reuses an idempotency key of an earlier job with a different input: refused.

    As payment APIs do: a key names one request, so a second job under the key whose input
    differs (a charge of 100, then of 99999) is recorded rejected rather than answered with
    the first job's result, whether that job is still running or has succeeded. The message
    names the key by its digest and never quotes either input; ``key`` keeps the key itself.
    """

    def __init__(self, key: str, holder: str) -> None:
        super().__init__(
            f"idempotency key {key_digest(key)} belongs to job {holder}, whose input differs"
            " from this job's: a key stands for one input (send a new key for a new request,"
            ' or implement the task with idempotency="key" to let the key alone decide)'
        )
        self.key = key
        self.holder = holder


class TaskFailed(TaskhopError):
    """The job ended in failure; ``error`` is what the worker recorded."""

    def __init__(self, job_id: str, task: str, error: ErrorInfo) -> None:
        self.job_id = job_id
        self.task = task
        self.error = error
        detail = "".join(f"\n  {f}" for f in error.fields)
        super().__init__(f"job {job_id} ({task}) failed: {error.type}: {error.message}{detail}")


class TaskRejected(TaskFailed):
    """The job was rejected before its handler ran (invalid input, unknown task)."""


class HandlerSignal(TaskhopError):
    """Base of the control-flow errors a handler raises on purpose."""


class Retry(HandlerSignal):
    """Raise from a handler to run the job again, after ``after`` seconds if given.

    The attempt still counts against the task's retry policy; without ``after`` the policy's
    backoff decides the wait.
    """

    def __init__(self, message: str = "retry requested", *, after: float | None = None) -> None:
        if after is not None and after < 0:
            raise ValueError(f"after: must be >= 0 seconds, got {after}")
        super().__init__(message)
        self.after = after


class PermanentError(HandlerSignal):
    """Raise from a handler when retrying cannot help: the job is recorded failed at once."""


class StepCancelled(PermanentError):
    """Raised by ``ctx.raise_if_cancelled()``: the step's workflow ended, so it stops.

    The job is recorded ``cancelled``, not failed, and its workflow does not change.
    """


class NonDeterminismError(PermanentError):
    """A handler, run again, made different calls than the run it resumes recorded.

    ``ctx.invoke`` / ``ctx.dispatch`` derive each child's id from the parent's and the call's
    position; a call at a position whose recorded child is another task means the code or its
    inputs changed between runs. Replaying it would hand one call another's result, so the
    parent fails instead.
    """


class WorkflowDefinitionError(TaskhopError, ValueError):
    """A workflow that cannot run as written (raised before anything is sent or stored)."""


class WorkflowFailed(TaskhopError):
    """The workflow ended without a result.

    ``error`` is what ended it: the failing step's ``node``, ``task``, ``job`` and ``cause``
    when a step failed.
    """

    def __init__(self, workflow_id: str, status: str, error: dict[str, Any] | None) -> None:
        self.workflow_id = workflow_id
        self.status = status
        self.error: dict[str, Any] = error or {}
        message = self.error.get("message") or "no error recorded"
        super().__init__(f"workflow {workflow_id} {status}: {message}")

    @property
    def cause(self) -> ErrorInfo | None:
        """The failing step's own error, when a step failed."""
        cause = self.error.get("cause")
        return None if not cause else ErrorInfo.from_dict(cause)


class WorkflowCancelled(WorkflowFailed):
    """The workflow was cancelled (``handle.cancel()``) or ran past its timeout."""
