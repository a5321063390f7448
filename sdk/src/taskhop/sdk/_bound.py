"""``BoundTask[I, O]``: a contract bound to an app, the thing you dispatch."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

from taskhop.static_contracts import (
    AsyncTransport,
    Duration,
    Envelope,
    JsonValue,
    StaticContract,
    make_envelope,
    to_json_value,
)

from ._converter import unstructure
from ._handle import ResultHandle
from ._registered import InputValidator, MigrationError

if TYPE_CHECKING:
    from ._app import App
    from ._implementation import Handler
    from ._workflow_build import Signature

__all__ = ["BoundTask"]

I = TypeVar("I")
O = TypeVar("O")


class BoundTask(Generic[I, O]):
    """A task an app can dispatch (and, once implemented, run).

    ``register`` returns one for a contract, ``implement`` upgrades the same object in place,
    so producer code holding a ``BoundTask`` keeps working when the handler arrives.
    """

    def __init__(self, app: App, contract: StaticContract[I, O]) -> None:
        self.app = app
        self.contract = contract

    def __repr__(self) -> str:
        state = "implemented" if self.implemented else "registered"
        return f"<BoundTask {self.name!r} {state}>"

    @property
    def name(self) -> str:
        """The task name."""
        return self.contract.name

    @property
    def implemented(self) -> bool:
        """Whether this app has a handler for the task."""
        return self.app.implementation(self.name) is not None

    @property
    def handler(self) -> Handler[I, O] | None:
        """The handler, if this app implements the task."""
        entry = self.app.implementation(self.name)
        return None if entry is None else entry.implementation.handler

    @property
    def validator(self) -> InputValidator:
        """The task's one input validator: its implementation's, or the contract's.

        An implemented task validates with its ``Registered`` (migrations, ``input_type``);
        a registered-only one checks inputs of the contract's version against its input
        type and leaves other versions to the worker.
        """
        entry = self.app.implementation(self.name)
        if entry is not None:
            return entry.validator
        return InputValidator(
            task=self.name,
            input_type=self.contract.input,
            version=self.contract.version,
            converter=self.app.converter,
            implemented=False,
        )

    # -- building envelopes -----------------------------------------------------------------

    def envelope(
        self,
        payload: I,
        *,
        skip_validation: bool = False,
        delay: Duration | None = None,
        idempotency_key: str | None = None,
        trace: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Envelope:
        """The envelope ``dispatch`` would send, validated as ``dispatch`` would validate it."""
        return self.envelope_from_json(
            self.input_json(payload, skip_validation=skip_validation),
            delay=delay,
            idempotency_key=idempotency_key,
            trace=trace,
            headers=headers,
        )

    def envelope_from_json(
        self,
        data: JsonValue,
        *,
        delay: Duration | None = None,
        idempotency_key: str | None = None,
        trace: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Envelope:
        """The one envelope builder: JSON input at the contract's current version.

        Every job this app creates comes from here (dispatch, direct invocations,
        schedules, ``taskhop run``, the test helpers): ``make_envelope`` builds it, then the
        app's ``before_dispatch`` middleware sees it. ``data`` is not validated here.
        """
        envelope = make_envelope(
            self.contract,
            data,
            delay=delay,
            idempotency_key=idempotency_key,
            trace=trace,
            headers=headers,
        )
        for middleware in self.app.middleware:
            envelope = middleware.before_dispatch(envelope) or envelope
        return envelope

    def input_json(self, payload: I, *, skip_validation: bool = False) -> JsonValue:
        """``payload`` as JSON data, validated as ``dispatch`` validates it.

        A ``define_task`` contract's input is checked by the task's ``validator`` unless
        ``skip_validation`` or the app's ``validate_on_dispatch=False``; a static contract's
        is only written as JSON (the worker validates).

        Raises:
            ValidationError: the payload failed the runtime schema.
            PayloadError: the payload cannot be written as JSON (names the path).
            MigrationError: this app implements the task at a later version and its
                migrations cannot bring the payload there.

        """
        contract, converter = self.contract, self.app.converter
        value: Any = payload
        if isinstance(payload, Mapping) and not _is_mapping_type(contract.input):
            # raw JSON for an attrs/dataclass input (a request body, say): validate it as is
            data = to_json_value(cast("Mapping[str, Any]", payload))
        else:
            data = unstructure(converter, value, contract.input, path="input")
        if contract.runtime_schema and self.app.validate_on_dispatch and not skip_validation:
            self._check(data)
        return data

    def _check(self, data: JsonValue) -> None:
        """Validate JSON input of the contract's version as the task's validator would."""
        try:
            self.validator.validate(data, self.contract.version)
        except MigrationError as exc:
            if not exc.retryable:  # a worker on another version judges the rest
                raise

    # -- JSON from outside ------------------------------------------------------------------

    def parse(self, data: object) -> I:
        """Untyped JSON data (a request body, ``json.loads`` output) as the contract's input.

        This is how data typed ``dict[str, Any]`` becomes an ``I`` without a cast: it is
        structured and checked by the validator the worker uses (strict JSON types, unknown
        keys refused, attrs validators run), for either kind of contract, whatever the app's
        ``validate_on_dispatch``. ``dispatch_json`` parses and sends in one call.

        Raises:
            ValidationError: ``data`` does not fit the input type; every bad field is listed
                with its path (``input.lines[0].qty``).
            PayloadError: ``data`` is not JSON data (names the path).

        """
        return self._parse(to_json_value(data))

    def _parse(self, data: JsonValue) -> I:
        validator, contract = self.validator, self.contract
        if validator.input_type is not contract.input or validator.version != contract.version:
            # Implemented here with its own input type or version: check what the worker
            # will check (migrations included), then structure into the contract's type.
            self._check(data)
            validator = InputValidator(
                task=self.name,
                input_type=contract.input,
                version=contract.version,
                converter=self.app.converter,
                implemented=False,
            )
        value: I = validator.validate(data)
        return value

    @overload
    def s(self) -> Signature[I, O]: ...
    @overload
    def s(self, payload: I, /, *, skip_validation: bool = False) -> Signature[object, O]: ...
    def s(self, *args: Any, skip_validation: bool = False) -> Signature[Any, O]:
        """A workflow step of this task (``chain``, ``group``, ``chord``, step graphs).

        ``s()`` takes its predecessor's output as input; ``s(payload)`` is bound to
        ``payload`` (validated and made JSON now, as ``dispatch`` would) and ignores it.
        """
        from ._workflow_build import UNBOUND, Signature

        if not args:
            return Signature(self, UNBOUND)
        (payload,) = args
        return Signature(self, self.input_json(payload, skip_validation=skip_validation))

    def handle(self, job_id: str) -> ResultHandle[O]:
        """A handle for an existing job of this task."""
        return ResultHandle(self.app, job_id, self.name, self.contract.output)

    # -- sending ----------------------------------------------------------------------------

    def dispatch(
        self,
        payload: I,
        *,
        skip_validation: bool = False,
        delay: Duration | None = None,
        idempotency_key: str | None = None,
        trace: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ResultHandle[O]:
        """Send one job.

        Args:
            payload: the input, typed by the contract.
            skip_validation: do not validate here even if the contract has a runtime schema
                (the worker always validates).
            delay: do not run before this long from now (``"10s"``, seconds, ``timedelta``).
            idempotency_key: jobs sharing a key run the handler at most once; duplicates get
                the first job's result.
            trace: trace context to propagate (``traceparent``, ...).
            headers: small string metadata for middleware.

        Raises:
            ValidationError: the payload failed the contract's runtime schema.
            PayloadError: the payload cannot be written as JSON (names the path).
            TransportError: the transport did not accept the job.

        """
        envelope = self.envelope(
            payload,
            skip_validation=skip_validation,
            delay=delay,
            idempotency_key=idempotency_key,
            trace=trace,
            headers=headers,
        )
        return self._send(envelope)

    def dispatch_json(
        self,
        data: object,
        *,
        delay: Duration | None = None,
        idempotency_key: str | None = None,
        trace: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ResultHandle[O]:
        """``parse`` then ``dispatch``: send untyped JSON data (a request body) as one job.

        The data is always validated (``parse``), then sent as it came, so nothing is
        structured twice. Options are ``dispatch``'s.

        Raises:
            ValidationError: ``data`` does not fit the input type (every field, with paths).
            PayloadError: ``data`` is not JSON data.
            TransportError: the transport did not accept the job.

        """
        envelope = self._json_envelope(data, delay, idempotency_key, trace, headers)
        return self._send(envelope)

    async def adispatch_json(
        self,
        data: object,
        *,
        delay: Duration | None = None,
        idempotency_key: str | None = None,
        trace: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ResultHandle[O]:
        """``dispatch_json`` for async code (an async web handler): never blocks the loop."""
        envelope = self._json_envelope(data, delay, idempotency_key, trace, headers)
        return await self._asend(envelope)

    def _json_envelope(
        self,
        data: object,
        delay: Duration | None,
        idempotency_key: str | None,
        trace: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> Envelope:
        raw = to_json_value(data)
        self._parse(raw)
        return self.envelope_from_json(
            raw, delay=delay, idempotency_key=idempotency_key, trace=trace, headers=headers
        )

    def _send(self, envelope: Envelope) -> ResultHandle[O]:
        self.app.transport.send(envelope)
        self._after_dispatch([envelope])
        return self.handle(envelope.id)

    async def _asend(self, envelope: Envelope) -> ResultHandle[O]:
        import asyncio  # lazy import: sync code never pays for asyncio

        transport: Any = self.app.transport
        if isinstance(transport, AsyncTransport):
            await transport.asend(envelope)
        else:
            await asyncio.to_thread(transport.send, envelope)
        self._after_dispatch([envelope])
        return self.handle(envelope.id)

    async def adispatch(
        self,
        payload: I,
        *,
        skip_validation: bool = False,
        delay: Duration | None = None,
        idempotency_key: str | None = None,
        trace: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ResultHandle[O]:
        """``dispatch`` for async code: the send never blocks the event loop."""
        envelope = self.envelope(
            payload,
            skip_validation=skip_validation,
            delay=delay,
            idempotency_key=idempotency_key,
            trace=trace,
            headers=headers,
        )
        return await self._asend(envelope)

    def dispatch_many(
        self, payloads: Iterable[I], *, skip_validation: bool = False
    ) -> list[ResultHandle[O]]:
        """Send several jobs in as few requests as the transport allows.

        Every payload is validated before anything is sent, so a bad one sends nothing.
        """
        envelopes = [self.envelope(p, skip_validation=skip_validation) for p in payloads]
        self.app.transport.send_many(envelopes)
        self._after_dispatch(envelopes)
        return [self.handle(e.id) for e in envelopes]

    async def adispatch_many(
        self, payloads: Iterable[I], *, skip_validation: bool = False
    ) -> list[ResultHandle[O]]:
        """``dispatch_many`` for async code."""
        import asyncio  # lazy import: sync code never pays for asyncio

        envelopes = [self.envelope(p, skip_validation=skip_validation) for p in payloads]
        transport: Any = self.app.transport
        if isinstance(transport, AsyncTransport):
            await transport.asend_many(envelopes)
        else:
            await asyncio.to_thread(transport.send_many, envelopes)
        self._after_dispatch(envelopes)
        return [self.handle(e.id) for e in envelopes]

    def _after_dispatch(self, envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            for middleware in self.app.middleware:
                middleware.after_dispatch(envelope)


def _is_mapping_type(tp: object) -> bool:
    """TypedDicts and dict types take mappings as they are; other types need structuring."""
    return hasattr(tp, "__total__") or tp is dict or getattr(tp, "__origin__", None) is dict
