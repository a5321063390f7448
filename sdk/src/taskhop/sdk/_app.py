"""The app: a registry of tasks bound to one transport and one job store.

A producer ``register``s contracts and dispatches; a worker ``implement``s them. Both can
happen in one process (the inline ``app.task`` form) or in different deployments that share
only the contracts.
"""

from __future__ import annotations

import importlib
import inspect
import os
import threading
import typing
import uuid
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import datetime
from typing import Any, TypeVar, overload

from cattrs import Converter
from taskhop.static_contracts import (
    AsyncTransport,
    ContractError,
    Duration,
    Envelope,
    EventEnvelope,
    JsonValue,
    PayloadStore,
    RetrySpec,
    StaticContract,
    StaticEvent,
    Transport,
    TransportError,
    check_pattern,
)

from ._bound import BoundTask
from ._context import JobContext
from ._contract import define_task
from ._converter import make_converter
from ._errors import AlreadyImplementedError, TaskhopError, UnknownTaskError
from ._events import DirectCarrier, Event, EventCarrier, Events, EventSet
from ._handle import ResultHandle
from ._implementation import Handler, Implementation, ImplementOptions
from ._middleware import Middleware
from ._registered import Registered
from ._schedule import Schedule
from ._store import MAX_RESTARTS, BaseJobStore, JobStatus, JobStore, outbox_of
from ._tables import Change, ChangeKind, Table, Where
from ._triggers import Mode, Triggers
from ._worker import Worker
from ._workflow_handle import WorkflowHandle

__all__ = ["App", "Registered", "create_app", "load_app"]

I = TypeVar("I")
O = TypeVar("O")
P = TypeVar("P")
T = TypeVar("T")

_CARRIER_METHODS = ("publish", "check", "close")
"""What ``EventCarrier`` asks of a carrier, checked when an app is made with one."""

_REPUBLISH_BATCH = 100
"""Events handed to the carrier at once by ``republish_outbox`` (it batches them further)."""


class App:
    """Tasks, a transport to send them and a store to record them. Build with ``create_app``."""

    def __init__(
        self,
        *,
        transport: Transport,
        store: JobStore | None,
        validate_on_dispatch: bool = True,
        converter: Converter | None = None,
        middleware: Sequence[Middleware] = (),
        payloads: PayloadStore | None = None,
        events: EventCarrier | None = None,
        outbox: bool = False,
    ) -> None:
        if events is not None:  # refused now, not at the end of the first job that emits
            missing = [m for m in _CARRIER_METHODS if not callable(getattr(events, m, None))]
            if missing:
                raise TypeError(
                    f"events=: {type(events).__name__} is not an EventCarrier"
                    f" (no {', '.join(missing)})"
                )
        if outbox and outbox_of(store) is None:
            raise TaskhopError(
                f"outbox=True needs a store with an outbox (DynamoStore), got"
                f" {type(store).__name__}: its table's stream is what publishes the events"
            )
        self.transport = transport
        self.payloads = payloads
        self.store = store
        self.validate_on_dispatch = validate_on_dispatch
        self.converter = converter or make_converter()
        self.middleware: tuple[Middleware, ...] = tuple(middleware)
        self._tasks: dict[str, BoundTask[Any, Any]] = {}
        self._implemented: dict[str, Registered] = {}
        self._lock = threading.RLock()
        self._worker: Worker | None = None
        self._schedules: dict[str, Schedule] = {}
        self.events = Events(self)
        """This app's events and subscriptions (the registry ``emit`` and ``on`` use)."""
        self.carrier: EventCarrier = events or DirectCarrier(self)
        """What ``emit`` publishes through: an SNS topic, or in process (the default)."""
        self.outbox_events = outbox
        """Whether a succeeding job's events go in its completion's transaction (the store's
        outbox, published from its stream) rather than straight to the carrier."""
        self.triggers = Triggers(self)
        """This app's table triggers (``on_change``), served by ``serve_stream_records``."""

    def __repr__(self) -> str:
        return f"<App tasks={sorted(self._tasks)} transport={type(self.transport).__name__}>"

    # -- producer side ----------------------------------------------------------------------

    def register(self, contract: StaticContract[I, O]) -> BoundTask[I, O]:
        """Bind a contract to this app and return its dispatchable ``BoundTask``.

        Idempotent by name: registering the same contract again returns the same object.

        Raises:
            ContractError: another contract with this name but different types or settings
                is already registered.

        """
        if not isinstance(contract, StaticContract):
            raise TypeError(f"register() takes a contract, got {type(contract).__name__}")
        with self._lock:
            bound = self._tasks.get(contract.name)
            if bound is None:
                bound = BoundTask(self, contract)
                self._tasks[contract.name] = bound
            elif bound.contract != contract:
                raise ContractError(
                    f"task {contract.name!r} is already registered with a different contract:"
                    f" {bound.contract!r} vs {contract!r}"
                )
            return bound  # same name and an equal contract, so the same I and O

    def get(self, name: str) -> BoundTask[Any, Any]:
        """The registered task called ``name`` (for scripts that dispatch by name)."""
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTaskError(name, list(self._tasks)) from None

    @property
    def tasks(self) -> Mapping[str, BoundTask[Any, Any]]:
        """Every registered task by name (read-only view)."""
        return dict(self._tasks)

    def envelope(
        self,
        task: str,
        input: JsonValue,
        *,
        idempotency_key: str | None = None,
        trace: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Envelope:
        """A job of the task called ``task`` on input that is already JSON data.

        The door for jobs that arrive as data rather than typed payloads: a direct Lambda
        invocation, a schedule's rule, ``taskhop run``. A registered task's job is built by
        its ``BoundTask`` (at the contract's current version, through ``before_dispatch``);
        the input is not validated here, because the worker validates it and records a
        rejection with its field paths. A task this app does not know still gets an envelope,
        so the worker records it rejected as unknown, like any other job for no handler.

        Raises:
            EnvelopeError: ``task`` or a field is not what an envelope can carry (named).

        """
        bound = self._tasks.get(task)
        if bound is None:
            # no contract to build from: the worker's rejection is what the caller gets back
            return Envelope(
                task=task,
                input=input,
                idempotency_key=idempotency_key,
                trace=dict(trace) if trace else None,
                headers=dict(headers) if headers else None,
            )
        return bound.envelope_from_json(
            input, idempotency_key=idempotency_key, trace=trace, headers=headers
        )

    def retry_envelope(self, job_id: str, *, restart: str | None = None) -> Envelope:
        """The envelope ``retry`` would send for ``job_id``: its own, restarted.

        The job's envelope as its failed or rejected end kept it, with ``attempt=1``, no
        delay and a restart token (``restart``, else a fresh one): the same job id and input,
        a new run with a fresh attempt budget, its history kept in the record.

        Raises:
            TaskhopError: the app has no job store, the store has no record of the job, the
                job is not failed or rejected, it was restarted ``MAX_RESTARTS`` times, or
                its end kept no envelope; the message says which.

        """
        store = self.store
        if store is None:
            raise TaskhopError(f"cannot retry job {job_id}: the app has no job store to read")
        record = store.get(job_id)
        if record is None:
            raise TaskhopError(f"cannot retry job {job_id}: the store has no record of it")
        if record.status not in (JobStatus.FAILED, JobStatus.REJECTED):
            raise TaskhopError(
                f"cannot retry job {job_id}: it is {record.status.value}; only failed or"
                " rejected jobs are retried"
            )
        if len(record.restarts) >= MAX_RESTARTS:
            raise TaskhopError(
                f"cannot retry job {job_id}: it was restarted {len(record.restarts)} times,"
                f" the most a job may be ({MAX_RESTARTS}); dispatch a new job instead"
            )
        if isinstance(store, BaseJobStore):
            body = store.load_envelope(record)
        else:
            body = None if record.envelope is None else record.envelope.encode()
        if body is None:
            why = record.envelope_note or (
                "its end kept no envelope (it ended before this version kept envelopes)"
            )
            raise TaskhopError(f"cannot retry job {job_id}: {why}")
        return Envelope.decode(body).replace(
            attempt=1, not_before=None, restart=restart or uuid.uuid4().hex
        )

    def retry(self, job_id: str) -> ResultHandle[Any]:
        """Run a failed or rejected job again, by id: same job, input and id, a new run.

        Sends ``retry_envelope(job_id)`` through the app's transport; the worker restarts
        the job on its record (``JobRecord.restarts`` keeps how each earlier run ended).

        Raises:
            TaskhopError: see ``retry_envelope``.
            TransportError: the transport did not accept the job.

        """
        envelope = self.retry_envelope(job_id)
        self.transport.send(envelope)
        return self._handle_of(envelope)

    async def aretry(self, job_id: str) -> ResultHandle[Any]:
        """``retry`` for async code: the store read and the send never block the loop."""
        import asyncio  # lazy import: sync code never pays for asyncio

        envelope = await asyncio.to_thread(self.retry_envelope, job_id)
        transport: Any = self.transport
        if isinstance(transport, AsyncTransport):
            await transport.asend(envelope)
        else:
            await asyncio.to_thread(transport.send, envelope)
        return self._handle_of(envelope)

    def _handle_of(self, envelope: Envelope) -> ResultHandle[Any]:
        """A handle that reads the run ``envelope``'s restart token starts, not the old end."""
        bound = self._tasks.get(envelope.task)
        output: Any = object if bound is None else bound.contract.output
        return ResultHandle(self, envelope.id, envelope.task, output, restart=envelope.restart)

    # -- worker side ------------------------------------------------------------------------

    @overload
    def implement(
        self, contract: StaticContract[I, O], handler: Implementation[I, O]
    ) -> BoundTask[I, O]: ...
    @overload
    def implement(
        self,
        contract: StaticContract[I, O],
        handler: Handler[I, O],
        options: ImplementOptions | None = None,
    ) -> BoundTask[I, O]: ...
    @overload
    def implement(
        self, contract: StaticContract[I, O], *, options: ImplementOptions | None = None
    ) -> Callable[[Handler[I, O]], BoundTask[I, O]]: ...
    def implement(
        self,
        contract: StaticContract[I, O],
        handler: Handler[I, O] | Implementation[I, O] | None = None,
        options: ImplementOptions | None = None,
    ) -> BoundTask[I, O] | Callable[[Handler[I, O]], BoundTask[I, O]]:
        """Attach a handler to a contract; this app becomes a worker for the task.

        Three forms: ``implement(contract, handler[, options])``, the object form
        ``implement(contract, Implementation(handler, options))``, and the decorator
        ``@app.implement(contract, options=...)``. Each returns the task's ``BoundTask``; if
        the contract was registered before, that same object is upgraded in place.

        Raises:
            AlreadyImplementedError: the task already has a handler in this app.
            ContractError: the contract clashes with a registered one of the same name.

        """
        if handler is None:

            def decorate(fn: Handler[I, O]) -> BoundTask[I, O]:
                return self.implement(contract, fn, options)

            return decorate
        if isinstance(handler, Implementation):
            if options is not None:
                raise TypeError("pass options inside the Implementation, not beside it")
            implementation: Implementation[I, O] = handler  # pyright: ignore[reportUnknownVariableType]
        else:
            if not callable(handler):
                raise TypeError(f"{contract.name}: handler must be callable, got {handler!r}")
            implementation = Implementation(handler, options or ImplementOptions())
        bound = self.register(contract)
        entry = Registered.resolve(
            contract, implementation, converter=self.converter, middleware=self.middleware
        )
        with self._lock:
            if contract.name in self._implemented:
                raise AlreadyImplementedError(
                    f"task {contract.name!r} is already implemented in this app"
                )
            self._implemented[contract.name] = entry
        return bound

    def workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle for an existing workflow (its result as JSON data: no shape is known)."""
        return WorkflowHandle(self, workflow_id)

    def implementation(self, name: str) -> Registered | None:
        """The implemented task called ``name``, or None (the worker's lookup)."""
        return self._implemented.get(name)

    def implemented_names(self) -> list[str]:
        """Names of the tasks this app can run."""
        return sorted(self._implemented)

    # -- inline tasks -----------------------------------------------------------------------

    @overload
    def task(
        self,
        name: str,
        handler: Handler[I, O],
        *,
        input: type[I],
        output: type[O],
        retry: RetrySpec = None,
        timeout: Duration | None = None,
        version: int = 1,
        queue: str | None = None,
        options: ImplementOptions | None = None,
    ) -> BoundTask[I, O]: ...
    @overload
    def task(
        self,
        name: str,
        handler: Callable[[I, JobContext], Coroutine[Any, Any, O]],
        *,
        retry: RetrySpec = None,
        timeout: Duration | None = None,
        version: int = 1,
        queue: str | None = None,
        options: ImplementOptions | None = None,
    ) -> BoundTask[I, O]: ...
    @overload
    def task(
        self,
        name: str,
        handler: Callable[[I, JobContext], O],
        *,
        retry: RetrySpec = None,
        timeout: Duration | None = None,
        version: int = 1,
        queue: str | None = None,
        options: ImplementOptions | None = None,
    ) -> BoundTask[I, O]: ...
    @overload
    def task(
        self,
        name: str,
        *,
        input: type[I],
        output: type[O],
        retry: RetrySpec = None,
        timeout: Duration | None = None,
        version: int = 1,
        queue: str | None = None,
        options: ImplementOptions | None = None,
    ) -> Callable[[Handler[I, O]], BoundTask[I, O]]: ...
    @overload
    def task(
        self,
        name: str,
        *,
        retry: RetrySpec = None,
        timeout: Duration | None = None,
        version: int = 1,
        queue: str | None = None,
        options: ImplementOptions | None = None,
    ) -> _InferringDecorator: ...
    def task(
        self,
        name: str,
        handler: Callable[..., Any] | None = None,
        *,
        input: type[Any] | None = None,
        output: type[Any] | None = None,
        retry: RetrySpec = None,
        timeout: Duration | None = None,
        version: int = 1,
        queue: str | None = None,
        options: ImplementOptions | None = None,
    ) -> Any:
        """Declare and implement a task in one step (producer and worker in one codebase).

        ``input``/``output`` default to the handler's annotations (first parameter and return
        type). Works as a call, ``app.task("resize", resize)``, or a decorator,
        ``@app.task("resize")``. The contract is a ``define_task`` one: dispatch validates.
        """

        def build(fn: Callable[..., Any]) -> BoundTask[Any, Any]:
            in_type, out_type = (input, output) if input and output else _annotated_types(name, fn)
            contract = define_task(
                name,
                input=input or in_type,
                output=output or out_type,
                retry=retry,
                timeout=timeout,
                version=version,
                queue=queue,
            )
            return self.implement(contract, fn, options)

        if handler is not None:
            return build(handler)
        return build

    # -- events -----------------------------------------------------------------------------

    def event(self, event: StaticEvent[P]) -> StaticEvent[P]:
        """Register ``event``: this app may emit it, and patterns may match it.

        Raises:
            ContractError: another event has its name, or a subscription resolved earlier
                matches it (register events before subscribing to patterns).

        """
        return self.events.register(event)

    @overload
    def on(
        self,
        target: StaticEvent[P] | EventSet[P],
        *,
        name: str | None = None,
        ordered: bool = False,
        retry: RetrySpec = None,
        timeout: Duration | None = None,
    ) -> Callable[[Callable[[Event[P], JobContext], object]], BoundTask[Event[P], object]]: ...
    @overload
    def on(
        self,
        target: str,
        *,
        name: str | None = None,
        ordered: bool = False,
        retry: RetrySpec = None,
        timeout: Duration | None = None,
    ) -> _PatternDecorator: ...
    def on(
        self,
        target: str | StaticEvent[Any] | EventSet[Any],
        *,
        name: str | None = None,
        ordered: bool = False,
        retry: RetrySpec = None,
        timeout: Duration | None = None,
    ) -> Any:
        """Subscribe a handler to an event, several (``A | B``), or a pattern (``"order.*"``).

        The handler is a task (``name``, default the function's name) that runs once per
        matching event, with that task's retries and dead letters; it receives an
        ``Event[Payload]``, the union of the payloads for several events. A pattern is
        resolved now against the registered events, and the handler's annotation must be
        ``Event`` of exactly their payloads' union (checked here; the type checker checks the
        handler's body against it).

        Raises:
            UnknownEventError: the pattern matches no registered event.
            ContractError: the annotation names other payloads, or the name is taken.

        """
        options = {"retry": retry, "timeout": timeout}
        if isinstance(target, str):
            check_pattern(target)  # a malformed pattern fails at the decorator's line

        def decorate(fn: Callable[..., Any]) -> BoundTask[Any, Any]:
            return self.events.subscribe(
                target, fn, name=name, ordered=ordered, contract_options=options
            )

        return decorate

    def publishes(
        self,
        task: StaticContract[I, O] | BoundTask[I, O],
        event: StaticEvent[P],
        transform: Callable[[O], P] | None = None,
    ) -> None:
        """Publish ``event`` from every successful job of ``task``: a domain event.

        ``transform`` turns the task's output into the event's payload (default: the output
        itself). The event is published when, and only when, the job succeeds.
        """
        contract = task.contract if isinstance(task, BoundTask) else task
        self.register(contract)
        self.events.publishes(contract.name, event, transform)

    def emit_envelope(
        self, event: StaticEvent[P], payload: P, *, id: str | None = None
    ) -> EventEnvelope:
        """The envelope ``emit`` publishes: the event registered, the payload validated."""
        return self.events.envelope(event, payload, id=id)

    def emit(self, event: StaticEvent[P], payload: P, *, id: str | None = None) -> str:
        """Publish ``event`` to its subscribers; return the event's id.

        ``id`` makes a retried emit the same event (its subscribers run once); by default
        each call is a new event.

        Raises:
            UnknownEventError: the event is not registered with this app.
            ValidationError: the payload does not fit the event's type (fields named).
            TransportError: the carrier did not accept the event.

        """
        envelope = self.events.envelope(event, payload, id=id)
        self.carrier.publish([envelope])
        return envelope.id

    def emit_many(self, event: StaticEvent[P], payloads: Iterable[P]) -> list[str]:
        """Publish several events of one kind in as few requests as the carrier allows.

        Every payload is validated before anything is published; returns the events' ids.
        """
        envelopes = [self.events.envelope(event, payload) for payload in payloads]
        if envelopes:
            self.carrier.publish(envelopes)
        return [e.id for e in envelopes]

    def outbox(self, event: StaticEvent[P], payload: P, *, id: str | None = None) -> Any:
        """A transaction entry that emits ``event`` if, and only if, your write commits.

        Put it in the ``TransactWriteItems`` call of your own DynamoDB write; the job
        table's stream publishes it (the stream function serves it beside table triggers),
        so a crash between your write and the publish loses nothing, and the event is
        published once per id (a redelivery runs no subscriber twice).

        Raises:
            UnknownEventError, ValidationError: as ``emit``, before anything is written.
            TaskhopError: the app's store keeps no outbox (``DynamoStore`` does).

        """
        envelope = self.events.envelope(event, payload, id=id)
        store = outbox_of(self.store)
        if store is None:
            raise TaskhopError(
                f"the app's store ({type(self.store).__name__}) keeps no outbox: use a"
                " DynamoStore, whose table's stream publishes it"
            )
        return store.outbox_item(envelope)

    def republish_outbox(self, *, since: datetime | None = None) -> list[str]:
        """Publish again the events the store's outbox holds, emitted at ``since`` or later.

        For when the stream relay gave up on some (its on-failure queue and alarm say so, with
        the shard and sequence numbers but not the events): the outbox keeps each event until
        the store's retention ends. Publishing one again is safe, since every subscriber still
        runs it once. Returns the ids published.

        Raises:
            TaskhopError: the app's store keeps no outbox.
            TransportError: the carrier refused some events, named, after every batch was
                tried (the rest are published).

        """
        store = outbox_of(self.store)
        if store is None:
            raise TaskhopError(f"the app's store ({type(self.store).__name__}) keeps no outbox")
        published: list[str] = []
        refused: list[TransportError] = []
        batch: list[EventEnvelope] = []

        def send() -> None:
            try:
                self.carrier.publish(batch)
            except TransportError as exc:  # one refused batch stops no other
                refused.append(exc)
                return
            published.extend(e.id for e in batch)

        for event in store.outbox_events(since):
            batch.append(event)
            if len(batch) == _REPUBLISH_BATCH:
                send()
                batch = []
        if batch:
            send()
        if refused:
            ids = tuple(i for exc in refused for i in exc.job_ids)
            raise TransportError(
                f"{len(published)} events published again; the carrier refused others: "
                + "; ".join(str(exc) for exc in refused),
                job_ids=ids,
                retryable=any(exc.retryable for exc in refused),
            )
        return published

    async def aemit(self, event: StaticEvent[P], payload: P, *, id: str | None = None) -> str:
        """``emit`` for async code: the publish runs off the event loop."""
        import asyncio

        envelope = self.events.envelope(event, payload, id=id)
        await asyncio.to_thread(self.carrier.publish, [envelope])
        return envelope.id

    # -- table triggers ---------------------------------------------------------------------

    def on_change(
        self,
        table: Table[T],
        *,
        on: Collection[ChangeKind] = ("insert", "modify", "remove"),
        where: Where | None = None,
        changed: Sequence[str] = (),
        mode: Mode = "enqueue",
        name: str | None = None,
        retry: RetrySpec = None,
        timeout: Duration | None = None,
    ) -> Callable[[Callable[[Change[T], JobContext], object]], BoundTask[Change[T], object]]:
        """Run a handler for each change of ``table`` that matches: a table trigger.

        The handler gets a ``Change[Item]`` (``kind``, typed ``new`` and ``old``, ``keys``,
        ``is_ttl_expiry``). ``where`` (``F.status == "paid"``) is checked against the item
        type now and compiled into the event source mapping's filter, so other changes
        invoke nothing; ``changed=("status",)`` runs it only when one of those attributes
        differs. ``mode="enqueue"`` (default) makes each change a job of its own;
        ``"inline"`` runs it in the stream function.

        Raises:
            ContractError: an unknown attribute in ``where`` or ``changed``, a filter AWS
                cannot evaluate, an unknown kind or mode, or a taken name.

        """

        def decorate(fn: Callable[..., Any]) -> BoundTask[Any, Any]:
            return self.triggers.add(
                table, fn, on=on, where=where, changed=changed, mode=mode, name=name,
                retry=retry, timeout=timeout,
            )  # fmt: skip

        if where is not None:  # a bad filter fails at the decorator's line
            from ._tables import check_where

            check_where(table, where)
        return decorate

    # -- schedules --------------------------------------------------------------------------

    def schedule(
        self, expression: str, contract: StaticContract[I, O], input: I, *, name: str | None = None
    ) -> Schedule:
        """Run ``contract`` with ``input`` on an EventBridge schedule.

        ``expression`` is ``rate(5 minutes)`` or ``cron(0 12 * * ? *)``. ``name`` is the
        EventBridge rule that triggers it (default: the task name); the Lambda runtime runs
        the job when that rule's scheduled event arrives. The input is validated now.
        """
        bound = self.register(contract)
        schedule = Schedule(
            name=name or contract.name,
            expression=expression,
            contract=contract,
            input=bound.input_json(input),
        )
        with self._lock:
            if schedule.name in self._schedules:
                raise ContractError(f"schedule {schedule.name!r} is already declared")
            self._schedules[schedule.name] = schedule
        return schedule

    @property
    def schedules(self) -> Mapping[str, Schedule]:
        """Declared schedules by rule name."""
        return dict(self._schedules)

    # -- running ----------------------------------------------------------------------------

    def worker(self) -> Worker:
        """The worker that runs this app's jobs (one per app, created on first use)."""
        with self._lock:
            if self._worker is None:
                self._worker = Worker(self)
            return self._worker

    def close(self) -> None:
        """Close the transport (stopping an embedded worker), then the worker's event loops."""
        self.transport.close()
        if self._worker is not None:
            self._worker.close()

    async def aclose(self) -> None:
        """Async ``close``."""
        if isinstance(self.transport, AsyncTransport):
            await self.transport.aclose()
        else:
            self.transport.close()
        if self._worker is not None:
            self._worker.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[BoundTask[Any, Any]]:
        return iter(list(self._tasks.values()))


class _PatternDecorator(typing.Protocol):
    """``@app.on("order.*")``: the payload type comes from the handler's ``Event[...]``."""

    def __call__(
        self, fn: Callable[[Event[P], JobContext], object], /
    ) -> BoundTask[Event[P], object]: ...


class _InferringDecorator(typing.Protocol):
    """``@app.task(name)``: input and output types come from the handler's annotations."""

    @overload
    def __call__(
        self, fn: Callable[[I, JobContext], Coroutine[Any, Any, O]], /
    ) -> BoundTask[I, O]: ...
    @overload
    def __call__(self, fn: Callable[[I, JobContext], O], /) -> BoundTask[I, O]: ...


def _annotated_types(name: str, fn: Callable[..., Any]) -> tuple[type[Any], type[Any]]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise ContractError(f"{name}: cannot read the handler's annotations: {exc}") from None
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    in_type: Any = hints.get(params[0].name) if params else None
    out_type: Any = hints.get("return")
    if in_type is None or out_type is None:
        raise ContractError(
            f"{name}: pass input= and output=, or annotate the handler's first parameter and"
            " its return type"
        )
    if inspect.isclass(out_type) and issubclass(out_type, Awaitable):
        raise ContractError(f"{name}: annotate the awaited output type, not {out_type!r}")
    types: tuple[type[Any], type[Any]] = (in_type, out_type)
    return types


APP_ENV = "TASKHOP_APP"
"""The environment variable ``--app`` defaults to."""


class AppLoadError(SystemExit):
    """``--app`` names no loadable App: the command line answers with ``exit_code``.

    A ``SystemExit`` (the message as its code), so a script calling ``load_app`` still exits
    with the message; the ``taskhop`` command renders it (as JSON under ``run --json``) and
    exits 3 when the module did not import or holds no App, 2 when no spec was given or it is
    malformed. ``error_type`` is the failure's name (``"AppImportError"``, ``"UsageError"``).
    """

    def __init__(self, spec: str | None, error_type: str, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.spec = spec
        self.error_type = error_type
        self.message = message
        self.exit_code = exit_code


def load_app(spec: str | None = None) -> App:
    """Import ``module:attribute`` and return the ``App`` it names (for command lines).

    Args:
        spec: ``module:attribute``; ``None`` reads ``$TASKHOP_APP``.

    Raises:
        AppLoadError: no spec, a malformed one, a module that raised while importing (the
            user's own exception is the ``__cause__``), or something that is not an App.

    """
    spec = spec or os.environ.get(APP_ENV) or None
    if spec is None:
        message = f"--app is required: pass --app module:attribute or set ${APP_ENV}"
        raise AppLoadError(None, "UsageError", message, 2)
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        message = f"--app: expected 'module:attribute', got {spec!r}"
        raise AppLoadError(spec, "UsageError", message, 2)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module: a missing variable, a bad import, a bug
        message = f"--app {spec}: importing {module_name} raised {type(exc).__name__}: {exc}"
        raise AppLoadError(spec, "AppImportError", message, 3) from exc
    if not hasattr(module, attr):
        message = f"--app {spec}: module {module_name!r} has no attribute {attr!r}"
        raise AppLoadError(spec, "AppImportError", message, 3)
    obj = getattr(module, attr)
    if not isinstance(obj, App):
        message = f"--app {spec}: expected an App, got {type(obj).__name__}"
        raise AppLoadError(spec, "AppImportError", message, 3)
    return obj


def create_app(
    queue: Transport | None = None,
    store: JobStore | None = None,
    *,
    validate_on_dispatch: bool = True,
    converter: Converter | None = None,
    middleware: Sequence[Middleware] = (),
    payloads: PayloadStore | None = None,
    events: EventCarrier | None = None,
    outbox: bool = False,
) -> App:
    """Build an app.

    With neither ``queue`` nor ``store``, the app runs embedded: an in-process queue, store
    and worker thread (``taskhop.sdk.memory``), so dispatch-and-wait works with no AWS account.
    With a ``queue`` only, the app cannot read results, and as a worker it keeps no state
    (``NoStore``: no results, no deduplication, ends go to the dead-letter queue).

    Args:
        queue: the transport jobs are sent through (SQS, HTTP, memory, ...).
        store: where workers record job state and results.
        validate_on_dispatch: validate ``define_task`` inputs before sending (default on).
        converter: a cattrs converter of your own (start from ``taskhop.sdk.make_converter()``).
        middleware: hooks around dispatch and processing, in order.
        payloads: where a worker reads inputs that were too large for a queue message (the
            envelope's ``input_ref``), e.g. ``taskhop.backends.s3.S3Payloads(bucket)``.
        events: what ``emit`` publishes through, e.g. ``taskhop.backends.sns.SnsCarrier``
            (default: in process, one job per subscriber this app declares, sent through
            ``queue``).
        outbox: publish a succeeding job's events (``ctx.emit``, ``publishes``) from the
            store's outbox: they are written in the same transaction as the job's success, and
            the table's stream publishes them (``serve_stream_records``; the infra maps it), so
            neither a crash nor a later failure can publish events of a job that did not
            succeed, nor lose those of one that did. Needs a ``DynamoStore``.

    """
    if queue is None and store is None:
        # The one place the sdk reaches a backend (DESIGN.md): lazily, for the embedded default.
        from taskhop.sdk.memory import MemoryQueue, MemoryStore

        memory_queue = MemoryQueue()
        app = App(
            transport=memory_queue,
            store=MemoryStore(),
            validate_on_dispatch=validate_on_dispatch,
            converter=converter,
            middleware=middleware,
            payloads=payloads,
            events=events,
            outbox=outbox,
        )
        memory_queue.serve(app, lazy=True)
        return app
    if queue is None:
        raise TaskhopError("a store without a queue cannot dispatch: pass queue= as well")
    return App(
        transport=queue,
        store=store,
        validate_on_dispatch=validate_on_dispatch,
        converter=converter,
        middleware=middleware,
        payloads=payloads,
        events=events,
        outbox=outbox,
    )
