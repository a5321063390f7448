"""Every ``reason`` taskhop writes: on an error, an outcome, a log line or a dead letter.

One vocabulary, so a dead-letter record, a refused HTTP request and a log line can be matched
against the same names, and so a typo in a ``reason=`` is a type error instead of a new,
undocumented value. The values are part of the wire contract (the ``taskhop-reason`` SQS
message attribute, the ``reason`` of an HTTP error body): a member may be added, never renamed.
``docs/protocol.md`` lists them all; a test keeps that table, this enum and the sources agreeing.
"""

from __future__ import annotations

from enum import StrEnum, unique

__all__ = ["Reason"]


@unique  # two members with one value would silently alias: refuse it at import
class Reason(StrEnum):
    """Why a message was refused, dead-lettered, skipped or held back.

    A ``StrEnum``: each member equals its value, so code that compares ``reason`` with a
    string keeps working, and the value is what goes on the wire.
    """

    # -- the body is not a valid envelope (``EnvelopeError.reason``; the worker dead-letters)
    NOT_JSON = "not_json"
    """The body is not UTF-8, not JSON, or JSON nested too deeply to parse."""
    NOT_OBJECT = "not_object"
    """Valid JSON, but not an object (an array, a string, ...)."""
    NOT_ENVELOPE = "not_envelope"
    """An object without the ``taskhop`` marker: a message from another producer."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """The ``taskhop`` marker names a protocol version this build does not speak."""
    INVALID_FIELD = "invalid_field"
    """A key is missing, unknown, of the wrong type or out of range (``field`` names it)."""
    UNDECODABLE = "undecodable"
    """The decoder failed with something other than ``EnvelopeError`` (a bug): dead-lettered."""

    # -- the job is recorded rejected, never retried (``Outcome.reason``)
    UNKNOWN_TASK = "unknown_task"
    """The worker implements no task of the envelope's name."""
    MIGRATION = "migration"
    """A migration raised while bringing the input to the implemented contract version."""
    INVALID_INPUT = "invalid_input"
    """The input failed the contract's validation (the record holds the field paths)."""
    KEY_MISMATCH = "key_mismatch"
    """The idempotency key belongs to an earlier job whose input differs from this one's."""

    # -- the job is recorded failed and dead-lettered (``Outcome.reason``)
    RETRIES_EXHAUSTED = "retries_exhausted"
    """The last attempt the retry policy allows failed, or began and never reported."""
    MAX_RECEIVES = "max_receives"
    """The queue's redrive policy moved a message received ``maxReceiveCount`` times (the
    memory queue's own redrive; SQS's carries no reason)."""

    # -- the message is acknowledged or delayed without a new result (``Outcome.reason``)
    ALREADY_FINAL = "already_final"
    """A repeated delivery of a job the store already calls final: acknowledged, not run."""
    STALE_ATTEMPT = "stale_attempt"
    """A newer attempt (or a duplicate delivery) owns the job's outcome: this one is dropped."""
    ATTEMPT_IN_PROGRESS = "attempt_in_progress"
    """Another attempt is running under a live lease: looked at again when it ends."""
    DUPLICATE_KEY = "duplicate_key"
    """An earlier job with the same idempotency key succeeded: its result is returned."""
    STALE_RESTART = "stale_restart"
    """A second copy of a restart (``restart`` token) that already began: dropped, not run."""
    WORKFLOW_ENDED = "workflow_ended"
    """A workflow step whose workflow had failed, been cancelled or timed out: recorded
    ``cancelled`` without running (or stopped through ``ctx.cancelled``)."""
    SUSPENDED = "suspended"
    """A parent awaiting a child (``ctx.invoke``): its progress is recorded and the message
    acknowledged; the child's end sends it again to resume."""

    # -- a signed HTTP request is refused (``SignatureError.reason``, HTTP 401)
    SIGNATURE_MISSING = "missing"
    """The timestamp or signature header is absent."""
    SIGNATURE_MALFORMED = "malformed"
    """The signature lacks the ``v1=`` scheme or the timestamp is not whole seconds."""
    SIGNATURE_EXPIRED = "expired"
    """The timestamp is further from the endpoint's clock than the allowed skew."""
    SIGNATURE_INVALID = "invalid"
    """The signature matches none of the endpoint's secrets (wrong secret or altered body)."""
    SIGNATURE_REPLAYED = "replayed"
    """The same signature was already accepted inside the skew window."""
