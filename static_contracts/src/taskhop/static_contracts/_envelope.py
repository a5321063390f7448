"""The job envelope: wire format v1, the only thing that crosses a queue or an HTTP request.

An envelope is a small JSON object. ``"taskhop": 1`` marks both the format and its version, so
a worker can tell a taskhop job from a body some other producer put on the same queue. The
format is documented for producers in any language in ``docs/protocol.md`` with a JSON Schema
(``docs/envelope.schema.json``).

Decoding is strict: an unknown key is an error rather than something to ignore, because a
worker that silently ignores a field it does not understand (say, a pointer to an offloaded
payload) would run the job wrongly. Keys starting with ``x-`` are the exception: they are
free for extensions and are kept as they are in ``extensions``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ._errors import EnvelopeError, PayloadError, UnsupportedProtocolError
from ._ids import new_job_id
from ._json import JsonValue, dumps, find_non_finite
from ._reasons import Reason

__all__ = ["PROTOCOL_VERSION", "Envelope", "format_timestamp", "parse_timestamp"]

PROTOCOL_VERSION = 1
_MAX_ID = 128
_MAX_NAME = 256
_KEYS = frozenset(
    {
        "taskhop",
        "id",
        "task",
        "version",
        "input",
        "attempt",
        "dispatched_at",
        "not_before",
        "idempotency_key",
        "trace",
        "headers",
        "continuation",
        "input_ref",
        "restart",
    }
)
_MAX_REF = 2048
_MAX_SHOWN = 64
"""Characters of a key, path or value from the body quoted in an error: messages stay small
(they are logged and stored) whatever a body holds."""


class _NotFinite(ValueError):
    """NaN, Infinity, -Infinity or a number beyond a double's range (``1e400``) in the body."""


def _refuse_constant(literal: str) -> Any:
    raise _NotFinite(literal)


def _finite_float(literal: str, _float: Any = float) -> float:
    value: float = _float(literal)
    if value - value == 0.0:  # false only for nan and +-inf: one subtraction, no call
        return value
    raise _NotFinite(literal)


# Built once (json.loads with any option builds a decoder per call). The protocol forbids
# NaN and infinities; Python's json accepts them, and float("1e400") is inf, so both hooks
# refuse. parse_constant costs nothing on valid input; parse_float costs ~50 ns per float.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_decode_json = _DECODER.decode


@dataclass(frozen=True, slots=True)
class Envelope:
    """One job on the wire.

    Args:
        task: the contract name the job is for.
        input: the job's input as plain JSON data.
        id: unique job id; a UUIDv7 (time-ordered) unless the producer chose one.
        version: the contract version the producer built ``input`` for (drives migrations).
        attempt: 1 for the first run; the worker counts up on retries.
        dispatched_at: when the producer created the job (UTC).
        not_before: do not run before this time (delays longer than a queue can hold).
        idempotency_key: jobs sharing a key run the handler at most once.
        trace: trace context to propagate (``traceparent``, ``tracestate``, ``xray``).
        headers: small string metadata for middleware (tenant, locale, ...).
        continuation: reserved for workflow continuations (chains, chords); opaque here.
        input_ref: where the input is when it was too large for the message (a URI such as
            ``s3://bucket/key``); ``input`` is then null and the worker loads it from there.
        extensions: ``x-`` keys from other tools, carried through unchanged.
        restart: a token that asks a worker with a job store to run a finished (failed or
            rejected) job again, with a fresh attempt budget: ``App.retry`` and ``taskhop dlq
            redrive`` set a new one per restart, so a second copy of the same restart is
            recognised and never runs twice.

    """

    task: str
    input: JsonValue
    id: str = field(default_factory=new_job_id)
    version: int = 1
    attempt: int = 1
    dispatched_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    not_before: datetime | None = None
    idempotency_key: str | None = None
    trace: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    continuation: JsonValue = None
    input_ref: str | None = None
    extensions: dict[str, JsonValue] | None = None
    restart: str | None = None

    def __post_init__(self) -> None:
        # What encode() writes, decode() must accept: refuse at construction what it would not.
        if not isinstance(self.task, str) or not self.task or len(self.task) > _MAX_NAME:
            raise _field_error("task", f"must be a non-empty string of <= {_MAX_NAME} characters")
        if not isinstance(self.id, str) or not self.id or len(self.id) > _MAX_ID:
            raise _field_error("id", f"must be a non-empty string of <= {_MAX_ID} characters")
        for name in ("version", "attempt"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _field_error(name, f"must be an integer >= 1, got {value!r}")
        if self.input_ref is not None:
            if not isinstance(self.input_ref, str) or not 0 < len(self.input_ref) <= _MAX_REF:
                raise _field_error("input_ref", f"must be a URI of 1..{_MAX_REF} characters")
            if self.input is not None:
                raise _field_error("input", "must be null when input_ref points to the input")
        if self.idempotency_key is not None or self.trace or self.headers or self.restart:
            given = {"idempotency_key": self.idempotency_key, "trace": self.trace,
                     "headers": self.headers, "restart": self.restart}  # fmt: skip
            _optional_text(given, "idempotency_key", _MAX_NAME)
            _optional_text(given, "restart", _MAX_ID)
            _str_map(given, "trace")
            _str_map(given, "headers")
        bad = [k for k in self.extensions or {} if not k.startswith("x-")]
        if bad:
            raise _field_error(bad[0], "is not an extension key (extensions start with 'x-')")

    def to_dict(self) -> dict[str, Any]:
        """The envelope as JSON data; optional fields that are unset are left out."""
        data: dict[str, Any] = {
            "taskhop": PROTOCOL_VERSION,
            "id": self.id,
            "task": self.task,
            "version": self.version,
            "input": self.input,
            "attempt": self.attempt,
            "dispatched_at": format_timestamp(self.dispatched_at),
        }
        if self.not_before is not None:
            data["not_before"] = format_timestamp(self.not_before)
        for key in ("idempotency_key", "trace", "headers", "continuation", "input_ref", "restart"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        if self.extensions:
            data.update(self.extensions)
        return data

    def encode(self) -> bytes:
        """Compact UTF-8 JSON bytes, ready for a queue message or a request body.

        Raises:
            PayloadError: a field holds NaN, an infinity or a value JSON cannot carry; its
                ``path`` names it from the envelope key (``input.items[2].price``).

        """
        data = self.to_dict()
        try:
            return dumps(data)
        except PayloadError:
            for key, value in data.items():  # only on failure: find the field to name
                dumps(value, path=key)
            raise

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview | str) -> Envelope:
        """Parse wire bytes; raise ``EnvelopeError`` saying exactly what is wrong."""
        text = ""
        try:
            text = data if isinstance(data, str) else bytes(data).decode("utf-8")
            parsed = _decode_json(text)
        except UnicodeDecodeError as exc:
            raise EnvelopeError(f"body is not UTF-8: {exc}", reason=Reason.NOT_JSON) from None
        except _NotFinite as exc:  # only _decode_json raises it: ``text`` is the body
            raise _not_finite_error(text, str(exc)) from None
        except ValueError as exc:
            raise EnvelopeError(f"body is not JSON: {exc}", reason=Reason.NOT_JSON) from None
        except RecursionError:
            raise EnvelopeError(
                "body is JSON nested too deeply to parse", reason=Reason.NOT_JSON
            ) from None
        return cls._from_parsed(parsed)

    @classmethod
    def from_dict(cls, data: object) -> Envelope:
        """Build an envelope from parsed JSON, checking every field.

        The data may come from a parser that accepts NaN and infinities (Lambda's, for a direct
        invocation's event): those are refused here as ``decode`` refuses them in bytes.
        """
        parsed: object = data
        if isinstance(parsed, dict):
            obj: dict[Any, Any] = parsed  # pyright: ignore[reportUnknownVariableType]
            for key, value in obj.items():
                _refuse_non_finite(str(key), value)
        return cls._from_parsed(data)

    @classmethod
    def _from_parsed(cls, data: object) -> Envelope:
        """``from_dict`` for what ``_DECODER`` parsed (no NaN or infinity can be in it)."""
        if not isinstance(data, dict):
            raise EnvelopeError(
                f"envelope must be a JSON object, got {_json_kind(data)}", reason=Reason.NOT_OBJECT
            )
        obj: dict[str, Any] = data  # pyright: ignore[reportUnknownVariableType]
        if "taskhop" not in obj:
            raise EnvelopeError(
                "not a taskhop envelope: the 'taskhop' protocol marker is missing",
                reason=Reason.NOT_ENVELOPE,
                field="taskhop",
            )
        if obj["taskhop"] != PROTOCOL_VERSION or isinstance(obj["taskhop"], bool):
            raise UnsupportedProtocolError(obj["taskhop"])
        plain = _KEYS.issuperset(obj)  # the common case: no extensions, nothing unknown
        if not plain:
            unknown = sorted(k for k in obj if k not in _KEYS and not k.startswith("x-"))
            if unknown:
                shown = [_clip(k) for k in unknown[:5]] + (["..."] if len(unknown) > 5 else [])
                raise EnvelopeError(
                    f"unknown envelope key(s) {shown}: this worker speaks taskhop/1 without"
                    " them; upgrade the worker or drop the key (extensions must start with"
                    " 'x-')",
                    reason=Reason.INVALID_FIELD,
                    field=_clip(unknown[0]),
                )
        if "input" not in obj:
            raise _field_error("input", "is required")
        data_input = obj["input"]
        input_ref = _optional_text(obj, "input_ref", _MAX_REF)
        if input_ref is not None and data_input is not None:
            raise _field_error("input", "must be null when input_ref points to the input")
        not_before = obj.get("not_before")
        # Every field is checked here, so __post_init__'s checks would only repeat them: the
        # worker decodes each message once, and this is its hottest constructor.
        envelope = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(envelope, "id", _text(obj, "id", _MAX_ID))
        setattr_(envelope, "task", _text(obj, "task", _MAX_NAME))
        setattr_(envelope, "version", _positive_int(obj, "version"))
        setattr_(envelope, "input", data_input)
        setattr_(envelope, "attempt", _positive_int(obj, "attempt"))
        setattr_(envelope, "dispatched_at", _timestamp(obj.get("dispatched_at"), "dispatched_at"))
        setattr_(
            envelope,
            "not_before",
            None if not_before is None else _timestamp(not_before, "not_before"),
        )
        setattr_(envelope, "idempotency_key", _optional_text(obj, "idempotency_key", _MAX_NAME))
        setattr_(envelope, "trace", _str_map(obj, "trace"))
        setattr_(envelope, "headers", _str_map(obj, "headers"))
        setattr_(envelope, "continuation", obj.get("continuation"))
        setattr_(envelope, "input_ref", input_ref)
        setattr_(envelope, "restart", _optional_text(obj, "restart", _MAX_ID))
        setattr_(
            envelope,
            "extensions",
            None if plain else {k: v for k, v in obj.items() if k.startswith("x-")} or None,
        )
        return envelope

    def replace(self, **changes: Any) -> Envelope:
        """A copy with ``changes`` (middleware uses it to add trace context or headers)."""
        return replace(self, **changes)

    def retried(self, *, not_before: datetime | None) -> Envelope:
        """The same job, one attempt later, not to run before ``not_before``."""
        return replace(self, attempt=self.attempt + 1, not_before=not_before)

    def delay_seconds(self, now: datetime | None = None) -> float:
        """Seconds until ``not_before`` (0 when it is unset or past)."""
        if self.not_before is None:
            return 0.0
        return max(0.0, (self.not_before - (now or datetime.now(UTC))).total_seconds())

    def with_delay(self, seconds: float) -> Envelope:
        """A copy that must not run for ``seconds`` from now."""
        if seconds <= 0:
            return self
        return replace(self, not_before=datetime.now(UTC) + timedelta(seconds=seconds))


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z``: the envelope's one timestamp format."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    # isoformat, not strftime: glibc's %Y does not zero-pad years before 1000.
    if moment.tzinfo is UTC:  # the usual case: drop the "+00:00" isoformat writes
        return moment.isoformat(timespec="microseconds")[:-6] + "Z"
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with an offset (``Z`` or ``+hh:mm``) into UTC."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is UTC:  # a "Z" timestamp, as taskhop writes them: nothing to convert
        return moment
    if moment.tzinfo is None:
        raise ValueError("timestamp has no UTC offset")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before datetime.min in UTC
        raise ValueError("timestamp is outside the representable range in UTC") from None


def _field_error(name: str, problem: str) -> EnvelopeError:
    return EnvelopeError(
        f"envelope field '{name}' {problem}", reason=Reason.INVALID_FIELD, field=name
    )


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _shown(value: object) -> str:
    """A value from the body as an error quotes it: a number in full (clipped), else its kind.

    A string could be an e-mail address or a 500 KB blob: neither belongs in a log line.
    """
    if value is None or isinstance(value, bool | int | float):
        return _clip(repr(value))
    return _json_kind(value)


def _not_finite_error(text: str, literal: str) -> EnvelopeError:
    """Name where the body's NaN, infinity or overflowing number is (slow path: errors only)."""
    marker = _Marker()
    where: tuple[str, str] | None = None
    try:
        parsed = json.loads(
            text,
            parse_constant=lambda _: marker,
            parse_float=lambda s: float(s) if _finite(s) else marker,
        )
        if isinstance(parsed, dict):
            for key, value in parsed.items():  # pyright: ignore[reportUnknownVariableType]
                path = _marker_path(value, marker, str(key))  # pyright: ignore[reportUnknownArgumentType]
                if path is not None:
                    where = (str(key), path)  # pyright: ignore[reportUnknownArgumentType]
                    break
    except (ValueError, RecursionError):  # a later error in the body: the number is enough
        where = None
    if where is None:
        return EnvelopeError(
            f"{_literal_text(literal)} is not JSON (the protocol allows finite"
            " numbers only: no NaN, Infinity or beyond a double's range)",
            reason=Reason.NOT_JSON,
        )
    return _not_finite_field(where[0], where[1], _literal_text(literal))


def _not_finite_field(key: str, path: str, literal: str) -> EnvelopeError:
    return EnvelopeError(
        f"{_clip(path)}: {literal} is not JSON (the protocol allows finite"
        " numbers only: no NaN, Infinity or beyond a double's range)",
        reason=Reason.NOT_JSON,
        field=_clip(key),
    )


def _refuse_non_finite(key: str, value: object) -> None:
    try:
        bad = find_non_finite(value, key)
    except RecursionError:  # nested past the stack: no JSON parser builds that
        raise EnvelopeError(
            f"envelope field '{_clip(key)}' is nested too deeply to check",
            reason=Reason.NOT_JSON,
            field=_clip(key),
        ) from None
    if bad is not None:
        path, number = bad
        name = "NaN" if number != number else "Infinity" if number > 0 else "-Infinity"
        raise _not_finite_field(key, path, name)


class _Marker:
    """Stands in for a refused number while looking for its path."""


def _finite(literal: str) -> bool:
    value = float(literal)
    return value - value == 0.0


def _literal_text(literal: str) -> str:
    return literal if len(literal) <= 24 else literal[:24] + "..."


def _marker_path(value: object, marker: _Marker, path: str) -> str | None:
    if value is marker:
        return path
    if isinstance(value, dict):
        mapping: dict[str, Any] = value  # pyright: ignore[reportUnknownVariableType]
        for key, item in mapping.items():
            found = _marker_path(item, marker, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    elif isinstance(value, list):
        items: list[Any] = value  # pyright: ignore[reportUnknownVariableType]
        for i, item in enumerate(items):
            found = _marker_path(item, marker, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _json_kind(value: object) -> str:
    kinds: dict[type[Any], str] = {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        type(None): "null",
    }
    return kinds.get(type(value), "number")


def _text(obj: dict[str, Any], name: str, limit: int) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise _field_error(name, f"must be a non-empty string, got {_json_kind(value)}")
    if len(value) > limit:
        raise _field_error(name, f"is longer than {limit} characters")
    return value


def _optional_text(obj: dict[str, Any], name: str, limit: int) -> str | None:
    return None if obj.get(name) is None else _text(obj, name, limit)


def _positive_int(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _field_error(name, f"must be an integer >= 1, got {_shown(value)}")
    return value


def _timestamp(value: object, name: str) -> datetime:
    if not isinstance(value, str):
        raise _field_error(name, f"must be an RFC 3339 string, got {_json_kind(value)}")
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise _field_error(name, f"is not an RFC 3339 timestamp ({_clip(str(exc))})") from None


def _str_map(obj: dict[str, Any], name: str) -> dict[str, str] | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str)
        for k, v in value.items()  # pyright: ignore[reportUnknownVariableType]
    ):
        raise _field_error(name, "must be an object of string values")
    return dict(value)  # pyright: ignore[reportUnknownArgumentType]
