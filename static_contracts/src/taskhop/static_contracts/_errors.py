"""The root of taskhop's error tree and the errors a producer can meet without the sdk.

The whole tree is drawn in ``taskhop.sdk._errors``; these classes live here because a producer that
ships only ``static_contracts`` (plus one transport) must be able to catch them.
"""

from __future__ import annotations

from ._reasons import Reason

__all__ = [
    "ContractError",
    "EnvelopeError",
    "PayloadError",
    "TaskhopError",
    "TransportError",
    "UnsupportedProtocolError",
]


class TaskhopError(Exception):
    """Root of every error taskhop raises on purpose."""


class ContractError(TaskhopError, ValueError):
    """A contract declaration is invalid, or conflicts with another of the same name."""


class PayloadError(TaskhopError, TypeError):
    """A payload cannot be written as JSON; ``path`` names the offending value."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


class EnvelopeError(TaskhopError, ValueError):
    """Bytes that are not a valid job envelope.

    ``reason`` (a ``Reason``) classifies the failure for logs and dead-letter records:
    ``NOT_JSON``, ``NOT_OBJECT``, ``NOT_ENVELOPE`` (no ``taskhop`` marker: a body from another
    producer), ``UNSUPPORTED_VERSION`` or ``INVALID_FIELD``; ``field`` names the key when there
    is one.
    """

    def __init__(self, message: str, *, reason: Reason, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


class UnsupportedProtocolError(EnvelopeError):
    """An envelope of a protocol version this build does not speak."""

    def __init__(self, version: object) -> None:
        shown = repr(version) if isinstance(version, int) else type(version).__name__
        super().__init__(
            f"envelope protocol version {shown[:32]} is not supported (this build speaks 1)",
            reason=Reason.UNSUPPORTED_VERSION,
            field="taskhop",
        )
        self.version = version


class TransportError(TaskhopError):
    """Sending envelopes failed; ``job_ids`` lists every job that was not accepted."""

    def __init__(self, message: str, *, job_ids: tuple[str, ...] = (), retryable: bool = True):
        super().__init__(message)
        self.job_ids = job_ids
        self.retryable = retryable
