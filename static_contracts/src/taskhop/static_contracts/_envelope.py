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
from collections.abc import Callable
from typing import Any

from ._datetimes import UTC, datetime, timedelta
from ._errors import EnvelopeError, PayloadError, UnsupportedProtocolError
from ._ids import new_job_id
from ._json import JsonValue, dumps, find_non_finite
from ._reasons import Reason
from ._record import Factory, Record, record, slot_setters

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
_BASIC_KEYS = frozenset({"taskhop", "id", "task", "version", "input", "attempt", "dispatched_at"})
"""The keys ``encode`` always writes; a body with no others has every optional field unset."""
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
# The C scanner decode() calls; an instance attribute typeshed does not declare.
_scan_json: Callable[[str, int], tuple[Any, int]] = vars(_DECODER)["scan_once"]


def _parse_json(text: str) -> Any:
    """``_decode_json(text)``, minus its two whitespace regex matches for a body with none.

    Encoders write no whitespace around a JSON value; any other body (whitespace, extra
    data, not JSON) goes to the full decoder, which raises exactly what it always raised.
    """
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        return _decode_json(text)
    return value if end == len(text) else _decode_json(text)


# Defaults made afresh per envelope (dataclass default factories, see _record).
_NEW_ID: Any = Factory(new_job_id)
_NOW: Any = Factory(lambda: datetime.now(UTC))


@record(frozen=True)
class Envelope(Record):
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

    # The fields, in the order __init__ takes them (not sorted: the order is the signature's).
    __slots__ = (  # noqa: RUF023
        "task",
        "input",
        "id",
        "version",
        "attempt",
        "dispatched_at",
        "not_before",
        "idempotency_key",
        "trace",
        "headers",
        "continuation",
        "input_ref",
        "extensions",
        "restart",
    )
    task: str
    input: JsonValue
    id: str
    version: int
    attempt: int
    dispatched_at: datetime
    not_before: datetime | None
    idempotency_key: str | None
    trace: dict[str, str] | None
    headers: dict[str, str] | None
    continuation: JsonValue
    input_ref: str | None
    extensions: dict[str, JsonValue] | None
    restart: str | None

    def __init__(
        self,
        task: str,
        input: JsonValue,
        id: str = _NEW_ID,
        version: int = 1,
        attempt: int = 1,
        dispatched_at: datetime = _NOW,
        not_before: datetime | None = None,
        idempotency_key: str | None = None,
        trace: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        continuation: JsonValue = None,
        input_ref: str | None = None,
        extensions: dict[str, JsonValue] | None = None,
        restart: str | None = None,
    ) -> None:
        _set_task(self, task)
        _set_input(self, input)
        _set_id(self, new_job_id() if id is _NEW_ID else id)
        _set_version(self, version)
        _set_attempt(self, attempt)
        _set_dispatched_at(self, datetime.now(UTC) if dispatched_at is _NOW else dispatched_at)
        _set_not_before(self, not_before)
        _set_idempotency_key(self, idempotency_key)
        _set_trace(self, trace)
        _set_headers(self, headers)
        _set_continuation(self, continuation)
        _set_input_ref(self, input_ref)
        _set_extensions(self, extensions)
        _set_restart(self, restart)
        self.__post_init__()

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
            parsed = _parse_json(text)
        except UnicodeDecodeError as exc:
            raise EnvelopeError(f"body is not UTF-8: {exc}", reason=Reason.NOT_JSON) from None
        except _NotFinite as exc:  # only _parse_json raises it: ``text`` is the body
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
        basic = _BASIC_KEYS.issuperset(obj)  # the usual body: only what encode() always writes
        plain = basic or _KEYS.issuperset(obj)  # no extensions, nothing unknown
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
        get = obj.get
        input_ref = None if basic else _optional_text(obj, "input_ref", _MAX_REF)
        if input_ref is not None and obj["input"] is not None:
            raise _field_error("input", "must be null when input_ref points to the input")
        # Every field is checked here, so __post_init__'s checks would only repeat them: the
        # worker decodes each message once, and this is its hottest constructor. Each check
        # has an inline fast path for a valid value; anything else goes to the helper, which
        # accepts what it accepts and raises the error it raises.
        job_id = get("id")
        if type(job_id) is not str or not 0 < len(job_id) <= _MAX_ID:
            job_id = _text(obj, "id", _MAX_ID)
        task = get("task")
        if type(task) is not str or not 0 < len(task) <= _MAX_NAME:
            task = _text(obj, "task", _MAX_NAME)
        version = get("version")
        if type(version) is not int or version < 1:  # type(), not isinstance: no bool
            version = _positive_int(obj, "version")
        attempt = get("attempt")
        if type(attempt) is not int or attempt < 1:
            attempt = _positive_int(obj, "attempt")
        dispatched_at = _timestamp(get("dispatched_at"), "dispatched_at")
        envelope = object.__new__(cls)
        _set_id(envelope, job_id)
        _set_task(envelope, task)
        _set_version(envelope, version)
        _set_attempt(envelope, attempt)
        _set_dispatched_at(envelope, dispatched_at)
        _set_input(envelope, obj["input"])
        if basic:  # none of the optional fields: no lookups, no checks
            for set_unset in _SET_OPTIONAL:
                set_unset(envelope, None)
            return envelope
        not_before = get("not_before")
        _set_not_before(
            envelope, None if not_before is None else _timestamp(not_before, "not_before")
        )
        _set_idempotency_key(envelope, _optional_text(obj, "idempotency_key", _MAX_NAME))
        _set_trace(envelope, _str_map(obj, "trace"))
        _set_headers(envelope, _str_map(obj, "headers"))
        _set_continuation(envelope, get("continuation"))
        _set_input_ref(envelope, input_ref)
        _set_restart(envelope, _optional_text(obj, "restart", _MAX_ID))
        _set_extensions(
            envelope,
            None if plain else {k: v for k, v in obj.items() if k.startswith("x-")} or None,
        )
        return envelope

    def replace(self, **changes: Any) -> Envelope:
        """A copy with ``changes`` (middleware uses it to add trace context or headers).

        As ``dataclasses.replace`` (which works too): every field is checked again.
        """
        values = dict(zip(self.__slots__, self._values(), strict=True))
        values.update(changes)
        return type(self)(**values)

    def retried(self, *, not_before: datetime | None) -> Envelope:
        """The same job, one attempt later, not to run before ``not_before``."""
        return self.replace(attempt=self.attempt + 1, not_before=not_before)

    def delay_seconds(self, now: datetime | None = None) -> float:
        """Seconds until ``not_before`` (0 when it is unset or past)."""
        if self.not_before is None:
            return 0.0
        return max(0.0, (self.not_before - (now or datetime.now(UTC))).total_seconds())

    def with_delay(self, seconds: float) -> Envelope:
        """A copy that must not run for ``seconds`` from now."""
        if seconds <= 0:
            return self
        return self.replace(not_before=datetime.now(UTC) + timedelta(seconds=seconds))


# Construction writes each slot through its setter (see slot_setters), past the frozen
# __setattr__ and without object.__setattr__'s lookup.
_SETTERS = dict(zip(Envelope.__slots__, slot_setters(Envelope), strict=True))
(
    _set_task,
    _set_input,
    _set_id,
    _set_version,
    _set_attempt,
    _set_dispatched_at,
    _set_not_before,
    _set_idempotency_key,
    _set_trace,
    _set_headers,
    _set_continuation,
    _set_input_ref,
    _set_extensions,
    _set_restart,
) = _SETTERS.values()
_SET_OPTIONAL = tuple(set_ for name, set_ in _SETTERS.items() if name not in _BASIC_KEYS)


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z``: the envelope's one timestamp format."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    # isoformat, not strftime: glibc's %Y does not zero-pad years before 1000.
    if moment.tzinfo is UTC:  # the usual case: drop the "+00:00" isoformat writes
        if moment.microsecond:  # isoformat() writes them then; timespec= costs ~0.2 us more
            return moment.isoformat()[:-6] + "Z"
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
