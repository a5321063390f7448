"""Static events: an event's name, payload type and ordering key, and the event envelope.

``static_event("order.placed", payload=OrderPlaced, key="order_id")`` is to events what
``static_contract`` is to tasks: types only, so an edge producer can emit with no validator
and no third-party import; the sdk's ``define_event`` adds validation at emit. The event
envelope is what a carrier (an SNS topic, the memory backend) delivers to every subscriber's
queue; each subscriber turns it into one ordinary job whose id derives from the event's id and
the subscriber's name, so a redelivery or a producer's retry of the same event is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar, cast

from ._envelope import format_timestamp, parse_timestamp
from ._errors import ContractError, EnvelopeError
from ._ids import new_job_id
from ._json import JsonValue
from ._reasons import Reason
from .limits import SNS_MAX_FILTER_VALUES, SQS_MAX_QUEUE_NAME

__all__ = [
    "DEFAULT_QUEUE_PREFIX",
    "EVENT_ATTRIBUTE",
    "EVENT_PROTOCOL_VERSION",
    "EventEnvelope",
    "EventSet",
    "StaticEvent",
    "check_pattern",
    "filter_policy",
    "pattern_matches",
    "static_event",
    "subscriber_queue_name",
]

P = TypeVar("P")
Q = TypeVar("Q")

EVENT_PROTOCOL_VERSION = 1
"""The ``taskhop_event`` version of the event envelope (``docs/protocol.md``)."""

_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_PATTERN = re.compile(r"(\*\*|\*|[A-Za-z0-9_-]+)(\.(\*\*|\*|[A-Za-z0-9_-]+))*")
_MAX_NAME = 200
_MAX_ID = 80


class StaticEvent(Generic[P]):
    """A typed event declaration without runtime schemas (see ``static_event``).

    Events compare equal when name, payload type, key and kind are equal.
    """

    runtime_schema: ClassVar[bool] = False
    """Whether the emitting app validates the payload (``define_event`` events do)."""

    __slots__ = ("key", "name", "payload")

    name: str
    payload: type[P]
    key: str | None

    def __init__(self, name: str, *, payload: type[P], key: str | None = None) -> None:
        check_event_name(name)
        if not isinstance(payload, type) and getattr(payload, "__origin__", None) is None:  # type: ignore[unreachable]
            raise ContractError(f"event {name!r}: payload must be a type, got {payload!r}")
        if key is not None and (not isinstance(key, str) or not key.isidentifier()):
            raise ContractError(f"event {name!r}: key must name a payload field, got {key!r}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "payload", payload)
        object.__setattr__(self, "key", key)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("events are immutable")

    def __or__(self, other: StaticEvent[Q] | EventSet[Q]) -> EventSet[P | Q]:
        """``placed | shipped``: both events, for one subscriber of their payloads' union."""
        more = other.events if isinstance(other, EventSet) else (other,)
        return EventSet([self, *more])

    def key_of(self, payload: JsonValue) -> str | None:
        """The ordering key of a payload (its ``key`` field as text), or None."""
        if self.key is None:
            return None
        if not isinstance(payload, dict) or self.key not in payload:
            raise EnvelopeError(
                f"event {self.name!r}: payload has no key field {self.key!r}",
                reason=Reason.INVALID_FIELD,
                field=f"payload.{self.key}",
            )
        return str(payload[self.key])

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON data (``taskhop contracts export``); the payload type by reference."""
        from ._contract import type_ref

        kind = "define_event" if self.runtime_schema else "static_event"
        return {"name": self.name, "kind": kind, "payload": type_ref(self.payload), "key": self.key}

    def _identity(self) -> tuple[Any, ...]:
        return (type(self).runtime_schema, self.name, self.payload, self.key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StaticEvent):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        shown = getattr(self.payload, "__qualname__", repr(self.payload))
        return f"{type(self).__name__}({self.name!r}, payload={shown})"


class EventSet(Generic[P]):
    """Several events one subscriber takes: ``a | b | c``, typed by their payloads' union."""

    __slots__ = ("events",)

    def __init__(self, events: Sequence[StaticEvent[Any]]) -> None:
        self.events: tuple[StaticEvent[Any], ...] = tuple(dict.fromkeys(events))

    def __or__(self, other: StaticEvent[Q] | EventSet[Q]) -> EventSet[P | Q]:
        more = other.events if isinstance(other, EventSet) else (other,)
        return EventSet([*self.events, *more])

    def __repr__(self) -> str:
        return " | ".join(e.name for e in self.events)


def static_event(name: str, *, payload: type[P], key: str | None = None) -> StaticEvent[P]:
    """Declare an event by name and payload type only: the emitter ships no validator.

    Args:
        name: dot-separated words (``"order.placed"``); subscriptions match them by pattern.
        payload: the payload type (TypedDict, dataclass or attrs class).
        key: the payload field that orders events for ordered subscribers (FIFO per key).

    """
    return StaticEvent(name, payload=payload, key=key)


DEFAULT_QUEUE_PREFIX = "taskhop-ev-"
"""What subscriber queue names start with (a worker's ``$TASKHOP_EVENT_QUEUE_PREFIX`` may say
otherwise)."""


_FIFO = ".fifo"
_UNSAFE = re.compile(r"[^a-z0-9_-]")
_DIGEST = 12


def subscriber_queue_name(subscriber: str, prefix: str = DEFAULT_QUEUE_PREFIX) -> str:
    """The SQS queue name (without ``.fifo``) of a subscriber task's event deliveries.

    Lowercase, every character SQS refuses replaced by ``-``; a name that would pass SQS's
    80 characters once ``.fifo`` is added is cut and ends with a digest of the task's name.
    """
    slug = _UNSAFE.sub("-", subscriber.lower())
    room = SQS_MAX_QUEUE_NAME - len(_FIFO) - len(prefix)
    if room <= _DIGEST + 1:
        raise ValueError(f"event queue prefix {prefix!r} leaves no room for a subscriber's name")
    if len(slug) > room:
        digest = hashlib.sha256(subscriber.encode()).hexdigest()[:_DIGEST]
        slug = f"{slug[: room - _DIGEST - 1]}-{digest}"
    return prefix + slug


def check_event_name(name: object) -> None:
    """Raise ``ContractError`` unless ``name`` is dot-separated words (no wildcards)."""
    if not isinstance(name, str) or len(name) > _MAX_NAME or not _NAME.fullmatch(name):
        raise ContractError(
            f"event name: expected dot-separated words of letters, digits, '_' or '-'"
            f" (<= {_MAX_NAME} chars), got {name!r}"
        )


def check_pattern(pattern: object) -> str:
    """``pattern`` if it is a valid subscription pattern, else ``ContractError``.

    A pattern is an event name whose words may be ``*`` (exactly one word) or ``**`` (one
    or more words): ``order.*`` matches ``order.placed`` but not ``order.item.added``;
    ``order.**`` matches both; ``order.*.created`` matches ``order.refund.created``.
    """
    if not isinstance(pattern, str) or len(pattern) > _MAX_NAME or not _PATTERN.fullmatch(pattern):
        raise ContractError(
            "subscription pattern: expected dot-separated words, '*' (one word) or '**' (one"
            f" or more), got {pattern!r}"
        )
    return pattern


def pattern_matches(pattern: str, name: str) -> bool:
    """Whether the event ``name`` matches the subscription ``pattern`` (see ``check_pattern``)."""
    return _match(pattern.split("."), name.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, words[i:]) for i in range(1, len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])


EVENT_ATTRIBUTE = "taskhop-event"
"""The message attribute carrying an event's name; subscription filter policies match it."""


def filter_policy(event_names: Sequence[str]) -> dict[str, list[str]]:
    """The subscription filter policy taking exactly these events (by ``EVENT_ATTRIBUTE``).

    The one definition the SNS carrier's ``subscribe_queue`` and the deployment render share.

    Raises:
        ValueError: no names, or more than SNS's 150 filter values per policy.

    """
    names = sorted(set(event_names))
    if not names:
        raise ValueError("filter_policy: a subscription takes at least one event")
    if len(names) > SNS_MAX_FILTER_VALUES:
        raise ValueError(
            f"filter_policy: {len(names)} events, but an SNS filter policy holds at most"
            f" {SNS_MAX_FILTER_VALUES} values: split the subscriber, or subscribe it to fewer"
        )
    return {EVENT_ATTRIBUTE: names}


class EventEnvelope:
    """One emitted event on the wire: what every subscriber's queue receives.

    Args:
        name: the event's name.
        payload: its payload as JSON data (None when ``payload_ref`` points to it).
        id: unique per event; a producer retry with the same id is the same event.
        key: the ordering key (FIFO subscribers are ordered per key).
        emitted_at: when it was emitted (UTC).
        payload_ref: where a payload too large for the carrier was stored.
        trace: W3C trace context of the emitter.

    """

    __slots__ = ("emitted_at", "id", "key", "name", "payload", "payload_ref", "trace")

    name: str
    payload: JsonValue
    id: str
    key: str | None
    emitted_at: datetime
    payload_ref: str | None
    trace: dict[str, str] | None

    def __init__(
        self,
        name: str,
        payload: JsonValue,
        *,
        id: str | None = None,
        key: str | None = None,
        emitted_at: datetime | None = None,
        payload_ref: str | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> None:
        check_event_name(name)
        event_id = new_job_id() if id is None else id
        if not isinstance(event_id, str) or not event_id or len(event_id) > _MAX_ID:
            raise _bad("id", f"must be a non-empty string of <= {_MAX_ID} characters")
        if key is not None and not isinstance(key, str):
            raise _bad("key", "must be a string")
        sets = object.__setattr__
        sets(self, "name", name)
        sets(self, "payload", payload)
        sets(self, "id", event_id)
        sets(self, "key", key)
        sets(self, "emitted_at", emitted_at or datetime.now(UTC))
        sets(self, "payload_ref", payload_ref)
        sets(self, "trace", dict(trace) if trace else None)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("event envelopes are immutable; use .replace(...)")

    def replace(self, **changes: Any) -> EventEnvelope:
        """A copy with some fields changed."""
        fields: dict[str, Any] = {f: getattr(self, f) for f in self.__slots__}
        fields.update(changes)
        return EventEnvelope(fields.pop("name"), fields.pop("payload"), **fields)

    def to_dict(self) -> dict[str, Any]:
        """The envelope as JSON data; absent optional fields are left out."""
        data: dict[str, Any] = {
            "taskhop_event": EVENT_PROTOCOL_VERSION,
            "name": self.name,
            "id": self.id,
            "emitted_at": format_timestamp(self.emitted_at),
            "payload": self.payload,
        }
        for name in ("key", "payload_ref", "trace"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data

    def encode(self) -> bytes:
        """The envelope as compact UTF-8 JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def decode(cls, body: bytes | str) -> EventEnvelope:
        """Parse an encoded event envelope.

        Raises:
            EnvelopeError: not JSON, not an event envelope, or a field is wrong (named).

        """
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise EnvelopeError(
                f"event envelope is not JSON: {exc}", reason=Reason.NOT_JSON
            ) from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: object) -> EventEnvelope:
        """Build from JSON data (``to_dict``'s shape)."""
        if not isinstance(data, dict) or "taskhop_event" not in data:
            raise EnvelopeError(
                "not an event envelope (no 'taskhop_event' field)", reason=Reason.INVALID_FIELD
            )
        fields: dict[str, Any] = dict(cast("dict[str, Any]", data))
        version = fields.pop("taskhop_event")
        if version != EVENT_PROTOCOL_VERSION:
            raise EnvelopeError(
                f"event envelope version {version!r}; this version reads {EVENT_PROTOCOL_VERSION}",
                reason=Reason.UNSUPPORTED_VERSION,
                field="taskhop_event",
            )
        unknown = set(fields) - {"name", "id", "emitted_at", "payload", *cls.__slots__}
        if unknown:
            raise _bad(sorted(unknown)[0], "is not an event envelope field")
        for required in ("name", "id", "emitted_at"):
            if not isinstance(fields.get(required), str):
                raise _bad(required, "is required and must be a string")
        try:
            emitted_at = parse_timestamp(fields["emitted_at"])
        except ValueError as exc:
            raise _bad("emitted_at", str(exc)) from None
        trace: Any = fields.get("trace")
        if trace is not None and not (
            isinstance(trace, dict)
            and all(isinstance(v, str) for v in cast("dict[str, Any]", trace).values())
        ):
            raise _bad("trace", "must map strings to strings")
        ref = fields.get("payload_ref")
        if ref is not None and not isinstance(ref, str):
            raise _bad("payload_ref", "must be a string")
        try:
            return cls(
                fields["name"],
                fields.get("payload"),
                id=fields["id"],
                key=fields.get("key"),
                emitted_at=emitted_at,
                payload_ref=ref,
                trace=cast("dict[str, str] | None", trace),
            )
        except ContractError as exc:
            raise _bad("name", str(exc)) from None

    def _identity(self) -> tuple[Any, ...]:
        trace = tuple(sorted((self.trace or {}).items()))
        payload = json.dumps(self.payload, sort_keys=True)
        return (self.name, self.id, self.key, self.emitted_at, self.payload_ref, trace, payload)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventEnvelope):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        return f"EventEnvelope({self.name!r}, id={self.id!r})"


def is_event_data(data: object) -> bool:
    """Whether parsed JSON is an event envelope rather than a job envelope."""
    return isinstance(data, dict) and "taskhop_event" in data


def _bad(field: str, problem: str) -> EnvelopeError:
    return EnvelopeError(
        f"event envelope: {field}: {problem}", reason=Reason.INVALID_FIELD, field=field
    )
