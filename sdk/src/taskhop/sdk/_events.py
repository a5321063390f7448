"""Typed events: ``define_event``, the ``Event`` a subscriber gets, and each app's registry.

An event is emitted once and delivered to every subscription whose pattern matches its name.
Each subscription is an ordinary task (its retries, dead letters and idempotency), and each
(event, subscriber) pair is one job whose id derives from both: a carrier's redelivery or a
producer's retry of the same event finds the job already begun or ended, and runs nothing.

A pattern (``order.*``) is resolved against the events registered with the app, and the set
is closed: the subscriber's handler is annotated with the union of the matching payloads, and
registering a later event the pattern would match is an error rather than a silent gap.
"""

from __future__ import annotations

import hashlib
import threading
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Protocol,
    TypeVar,
    Union,
    cast,
    runtime_checkable,
)

import attrs
from cattrs import Converter
from taskhop.static_contracts import (
    ContractError,
    Envelope,
    EventEnvelope,
    EventSet,
    JsonValue,
    StaticEvent,
    check_pattern,
    pattern_matches,
    to_json_value,
)

from ._bound import _is_mapping_type  # pyright: ignore[reportPrivateUsage]
from ._contract import TaskContract
from ._converter import structure, unstructure
from ._errors import FieldError, TaskhopError, ValidationError

if TYPE_CHECKING:
    from ._app import App
    from ._bound import BoundTask
    from ._context import JobContext

__all__ = [
    "DirectCarrier",
    "Event",
    "EventCarrier",
    "EventContract",
    "EventSet",
    "Subscription",
    "UnknownEventError",
    "define_event",
    "delivery_envelope",
    "delivery_job_id",
]

P = TypeVar("P")
P_co = TypeVar("P_co", covariant=True)
Q = TypeVar("Q")
_MAX_JOB_ID = 128
EVENT_EXTENSION = "x-taskhop-event"
"""The envelope extension naming the event a subscriber's job delivers."""
SHARED_INPUT = "x-taskhop-shared-input"
"""The extension marking an offloaded input every subscriber of one event reads: kept."""


class UnknownEventError(TaskhopError, LookupError):
    """An event this app has not registered (emit, or a pattern matching nothing)."""


class EventContract(StaticEvent[P]):
    """An event whose payload the emitting app validates (``define_event``)."""

    runtime_schema = True


def define_event(name: str, *, payload: type[P], key: str | None = None) -> EventContract[P]:
    """Declare an event with a runtime schema: ``emit`` validates the payload first.

    Args:
        name: dot-separated words (``"order.placed"``) that subscription patterns match.
        payload: an attrs class (its validators run at emit and at delivery), a dataclass
            or a TypedDict.
        key: the payload field that orders the event for ordered subscribers.

    """
    return EventContract(name, payload=payload, key=key)


@attrs.frozen
class Event(Generic[P_co]):
    """What a subscriber's handler receives: one emitted event, its payload typed.

    A subscriber of several events (``app.on(A | B)``, ``app.on("order.*")``) gets
    ``Event[PA | PB]``: narrow on ``isinstance(event.payload, PA)`` or on ``event.name``.
    """

    name: str
    id: str
    payload: P_co
    emitted_at: datetime
    key: str | None = None


@runtime_checkable
class EventCarrier(Protocol):
    """Delivers emitted events to every subscriber's queue (an SNS topic, or in process).

    ``publish`` either accepts every event or raises ``TransportError``; a carrier never
    drops an event silently. Redelivering one is harmless (see ``delivery_job_id``).
    """

    def publish(self, events: Sequence[EventEnvelope]) -> None:
        """Deliver events to their subscribers."""
        ...

    def check(self, events: Sequence[EventEnvelope]) -> None:
        """Raise the ``TransportError`` ``publish`` would for events it can never send.

        An event too large, say: nothing is sent or stored. A job checks its events so
        before its end is written.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, slots=True)
class Subscription:
    """A task that runs once per matching event.

    Args:
        task: the subscriber task's name.
        pattern: what it subscribed to (an event name, several joined by ``|``, or a glob).
        events: the registered event names it takes, resolved when it was declared.
        ordered: whether its events are delivered in order per event key (FIFO).

    """

    task: str
    pattern: str
    events: tuple[str, ...]
    ordered: bool = False

    def takes(self, name: str) -> bool:
        """Whether an event of this name is delivered to the subscriber."""
        return name in self.events


def delivery_job_id(event_id: str, subscriber: str) -> str:
    """The id of ``subscriber``'s job for event ``event_id``: the same on every delivery."""
    readable = f"{event_id}>{subscriber}"
    if len(readable) <= _MAX_JOB_ID:
        return readable
    return f"{event_id}>{hashlib.sha256(subscriber.encode()).hexdigest()[:40]}"


def event_input(event: EventEnvelope) -> dict[str, JsonValue]:
    """A subscriber job's input: the event without its wire-only fields."""
    data = event.to_dict()
    for wire_only in ("taskhop_event", "trace", "payload_ref"):
        data.pop(wire_only, None)
    return data


def delivery_envelope(app: App, event: EventEnvelope, subscriber: str) -> Envelope:
    """``subscriber``'s job for ``event``: the envelope every delivery of it turns into.

    The input is the event (name, id, key, time, payload); the job id derives from the
    event's id and the subscriber, and the trace is the emitter's. An ordered subscriber's
    job carries the event's key (its name if it has none) as its ``group`` header, the group
    an in-process queue keeps in order (SQS FIFO gets it from the message instead).
    """
    bound = app.get(subscriber)
    sub = app.events.subscriptions.get(subscriber)
    group = (event.key if event.key is not None else event.name) if sub and sub.ordered else None
    return Envelope(
        headers=None if group is None else {"group": group},
        task=subscriber,
        input=None if event.payload_ref else event_input(event),
        id=delivery_job_id(event.id, subscriber),
        dispatched_at=event.emitted_at,
        version=bound.contract.version,
        trace=dict(event.trace) if event.trace else None,
        input_ref=event.payload_ref,
        extensions={
            EVENT_EXTENSION: event.name,
            **({SHARED_INPUT: True} if event.payload_ref else {}),
        },
    )


class Events:
    """One app's events and subscriptions (``app.events``)."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._events: dict[str, StaticEvent[Any]] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._lock = threading.RLock()
        self._publishers: dict[str, list[tuple[StaticEvent[Any], Callable[[Any], Any]]]] = {}

    # -- the registry ---------------------------------------------------------------------

    def register(self, event: StaticEvent[P]) -> StaticEvent[P]:
        """Make ``event`` known to this app: emit it, subscribe to it by name or pattern.

        Raises:
            ContractError: another event has this name, or a subscription's pattern matches
                it but was resolved before it was registered (the subscriber would miss it).

        """
        if not isinstance(event, StaticEvent):
            raise TypeError(f"expected an event, got {type(event).__name__}")
        with self._lock:
            known = self._events.get(event.name)
            if known is not None:
                if known != event:
                    raise ContractError(
                        f"event {event.name!r} is already registered differently:"
                        f" {known!r} vs {event!r}"
                    )
                return event
            for sub in self._subscriptions.values():
                if "|" not in sub.pattern and pattern_matches(sub.pattern, event.name):
                    raise ContractError(
                        f"event {event.name!r} matches subscription {sub.task!r}'s pattern"
                        f" {sub.pattern!r}, which was resolved to {list(sub.events)} before"
                        " it was registered: register events before their subscribers"
                    )
            self._events[event.name] = event
            self._app.converter  # noqa: B018 -- made before hooks are read
            _install_event_hook(self._app.converter, self)
            return event

    def get(self, name: str) -> StaticEvent[Any]:
        """The registered event called ``name``."""
        try:
            return self._events[name]
        except KeyError:
            known = ", ".join(sorted(self._events)) or "none"
            raise UnknownEventError(
                f"event {name!r} is not registered with this app (registered: {known})"
            ) from None

    @property
    def registered(self) -> Mapping[str, StaticEvent[Any]]:
        """Every registered event by name."""
        return dict(self._events)

    @property
    def subscriptions(self) -> Mapping[str, Subscription]:
        """Every subscription by its task's name."""
        return dict(self._subscriptions)

    def resolve(self, target: str | StaticEvent[Any] | EventSet[Any]) -> tuple[str, ...]:
        """The registered event names ``target`` stands for (raises if there are none)."""
        if isinstance(target, StaticEvent):
            self.register(target)
            return (target.name,)
        if isinstance(target, EventSet):
            return tuple(self.register(e).name for e in target.events)
        pattern = check_pattern(target)
        names = tuple(sorted(n for n in self._events if pattern_matches(pattern, n)))
        if not names:
            known = ", ".join(sorted(self._events)) or "none"
            raise UnknownEventError(
                f"pattern {pattern!r} matches no registered event (registered: {known});"
                " register the events before subscribing"
            )
        return names

    def subscribers_of(self, name: str) -> list[Subscription]:
        """The subscriptions an event called ``name`` is delivered to."""
        return [s for s in self._subscriptions.values() if s.takes(name)]

    # -- subscribing ------------------------------------------------------------------------

    def subscribe(
        self,
        target: str | StaticEvent[Any] | EventSet[Any],
        handler: Callable[..., Any],
        *,
        name: str | None,
        ordered: bool,
        contract_options: Mapping[str, Any],
    ) -> BoundTask[Any, Any]:
        """Declare ``handler`` as a subscriber task of ``target`` (see ``App.on``)."""
        names = self.resolve(target)
        task = name or getattr(handler, "__name__", None)
        if not isinstance(task, str) or not task or task == "<lambda>":
            raise ContractError("a subscriber needs name=... (its handler has no usable name)")
        payloads = tuple(dict.fromkeys(self._events[n].payload for n in names))
        _check_annotation(task, handler, payloads)
        union: Any = payloads[0] if len(payloads) == 1 else Union[payloads]  # noqa: UP007
        contract = TaskContract(task, input=Event[union], output=object, **contract_options)
        pattern = target if isinstance(target, str) else " | ".join(names)
        with self._lock:
            if task in self._subscriptions or task in self._app.tasks:
                raise ContractError(f"subscriber {task!r}: a task of this name already exists")
            bound = self._app.implement(contract, handler)
            self._subscriptions[task] = Subscription(task, pattern, names, ordered)
        return bound

    def publishes(
        self, task: str, event: StaticEvent[Any], transform: Callable[[Any], Any] | None
    ) -> None:
        """Publish ``event`` from each successful job of ``task`` (see ``App.publishes``)."""
        self.register(event)
        with self._lock:
            self._publishers.setdefault(task, []).append((event, transform or _same))

    def published_by(self, task: str) -> list[tuple[StaticEvent[Any], Callable[[Any], Any]]]:
        """The events ``task``'s successful jobs publish, each with its transform."""
        return list(self._publishers.get(task, ()))

    # -- emitting ---------------------------------------------------------------------------

    def envelope(
        self,
        event: StaticEvent[P],
        payload: P,
        *,
        id: str | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> EventEnvelope:
        """The envelope ``emit`` would publish: registered, validated, converted to JSON.

        Raises:
            UnknownEventError: the event is not registered with this app.
            ValidationError: the payload does not fit the event's type (field paths named).

        """
        known = self.get(event.name)
        if known != event:
            raise ContractError(f"event {event.name!r}: not the event registered under it")
        converter, payload_type = self._app.converter, cast("type[Any]", event.payload)
        if isinstance(payload, Mapping) and not _is_mapping_type(payload_type):
            # raw JSON for an attrs/dataclass payload (a request body): validated as is
            data = to_json_value(cast("Mapping[str, Any]", payload), "payload")
        else:
            data = unstructure(converter, cast("object", payload), payload_type, path="payload")
        structure(converter, data, payload_type, task=event.name, what="payload")
        return EventEnvelope(event.name, data, id=id, key=event.key_of(data), trace=trace)


def _same(value: Any) -> Any:
    return value


def _check_annotation(task: str, handler: Callable[..., Any], payloads: tuple[Any, ...]) -> None:
    """Refuse a handler annotated with an ``Event`` of other payloads than it will get."""
    try:
        hints = typing.get_type_hints(handler)
    except Exception:  # unresolvable annotations: the type checker's business, not ours
        return
    import inspect

    params = [
        p
        for p in inspect.signature(handler).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    hint = hints.get(params[0].name) if params else None
    if hint is None or typing.get_origin(hint) is not Event:
        return
    (declared,) = typing.get_args(hint) or (Any,)
    if declared is Any:
        return
    wanted = set(payloads)
    got = set(_members(declared))
    if got != wanted:
        show = " | ".join(sorted(getattr(t, "__qualname__", repr(t)) for t in wanted))
        raise ContractError(
            f"subscriber {task!r}: its handler takes Event[{_shown(declared)}], but the events"
            f" it subscribes to carry {show}: annotate it Event[{show}]"
        )


def _members(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def _shown(tp: Any) -> str:
    return " | ".join(getattr(t, "__qualname__", repr(t)) for t in _members(tp))


def _install_event_hook(converter: Converter, events: Events) -> None:
    """Teach the converter ``Event[...]``: its payload is structured by the event's name."""
    if getattr(converter, "_taskhop_events", None) is events:
        return
    setattr(converter, "_taskhop_events", events)  # noqa: B010 -- a marker cattrs knows nothing of

    def is_event(tp: Any) -> bool:
        return typing.get_origin(tp) is Event or tp is Event

    def factory(tp: Any) -> Callable[[Any, Any], Any]:
        (declared,) = typing.get_args(tp) or (Any,)
        accepted = set(_members(declared))

        def hook(data: Any, _: Any) -> Event[Any]:
            return _structure_event(converter, events, data, accepted)

        return hook

    converter.register_structure_hook_factory(is_event, factory)

    def unstructure_event(value: Event[Any]) -> dict[str, Any]:
        return {
            "name": value.name,
            "id": value.id,
            "emitted_at": converter.unstructure(value.emitted_at),
            "payload": converter.unstructure(value.payload),
            **({"key": value.key} if value.key is not None else {}),
        }

    converter.register_unstructure_hook_func(is_event, unstructure_event)


def _structure_event(
    converter: Converter, events: Events, data: Any, accepted: set[Any]
) -> Event[Any]:
    if not isinstance(data, dict):
        raise TypeError(f"an event must be an object, got {type(data).__name__}")
    raw = cast("dict[str, Any]", data)
    name = raw.get("name")
    if not isinstance(name, str):
        raise _field("name", "required, a string")
    event = events.registered.get(name)
    if event is None or (Any not in accepted and event.payload not in accepted):
        raise _field("name", f"event {name!r} is not one this subscriber takes")
    for text in ("id", "emitted_at"):
        if not isinstance(raw.get(text), str):
            raise _field(text, "required, a string")
    payload = structure(
        converter, raw.get("payload"), event.payload, task=name, what="input.payload"
    )
    return Event(
        name=name,
        id=raw["id"],
        payload=payload,
        emitted_at=converter.structure(raw["emitted_at"], datetime),
        key=raw.get("key"),
    )


def _field(name: str, problem: str) -> Exception:
    return ValidationError("event", [FieldError(f"input.{name}", problem)])


class DirectCarrier:
    """Delivers events in process: each subscriber's job goes through the app's transport.

    The embedded default's carrier, and any app's when it knows its subscribers itself (a
    producer and its workers in one codebase). A producer whose subscribers live elsewhere
    publishes through an SNS topic instead (``taskhop.backends.sns``).
    """

    def __init__(self, app: App) -> None:
        self._app = app

    def publish(self, events: Sequence[EventEnvelope]) -> None:
        """Send one job per (event, subscriber)."""
        jobs = [
            delivery_envelope(self._app, event, sub.task)
            for event in events
            for sub in self._app.events.subscribers_of(event.name)
        ]
        if jobs:
            self._app.transport.send_many(jobs)

    def check(self, events: Sequence[EventEnvelope]) -> None:
        """Nothing to check: the jobs go through the app's transport, which takes any size."""

    def close(self) -> None:
        """Nothing to release: the app closes its transport."""


def job_event_id(job_id: str, slot: str) -> str:
    """The id of an event a job emits: its job and position, so a re-run emits the same id."""
    readable = f"{job_id}.{slot}"
    if len(readable) <= 80:
        return readable
    return f"{hashlib.sha256(job_id.encode()).hexdigest()[:64]}.{slot}"


def outgoing_events(app: App, ctx: JobContext, output: Any) -> list[EventEnvelope]:
    """What a succeeding job publishes: its ``ctx.emit`` calls, then its task's events.

    Raises:
        ValidationError: a publisher's transform made a payload its event refuses.

    """
    emitted = list(ctx._emitted or ())  # pyright: ignore[reportPrivateUsage]
    for index, (event, transform) in enumerate(app.events.published_by(ctx.task)):
        emitted.append(
            app.events.envelope(
                event, transform(output), id=job_event_id(ctx.job_id, f"p{index}"), trace=ctx.trace
            )
        )
    return emitted
