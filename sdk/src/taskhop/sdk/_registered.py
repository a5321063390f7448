"""An implemented task resolved once (``Registered``), and the one validator of a task's input.

Every door a job comes in by (dispatch, the worker, the HTTP endpoint, ``taskhop run``,
``run_task``) turns JSON input into the handler's input with the task's ``InputValidator``:
migrate it from the version it was built for, then structure it into the input type. One
place, so a job cannot be valid at one door and refused at another, and every door knows
the same versions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cattrs import Converter
from taskhop.static_contracts import (
    ContractError,
    RetryPolicy,
    StaticContract,
    TaskhopError,
    parse_duration,
)

from ._converter import structure
from ._errors import ErrorInfo, HandlerTimeout
from ._implementation import Idempotency, Implementation, Migration
from ._logging import bind_job, unbind_job
from ._timeouts import call_with_timeout

if TYPE_CHECKING:
    from ._context import JobContext
    from ._middleware import Middleware

__all__ = ["InputValidator", "MigrationError", "Registered"]


class MigrationError(TaskhopError, ValueError):
    """A job's input cannot be brought to the version its handler expects.

    ``retryable`` is True when another worker may still take the job: it was built for a
    newer version than this one implements (a newer worker may be rolling out), or this app
    does not implement the task and so cannot know its migrations.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable

    @property
    def info(self) -> ErrorInfo:
        """The error as a job records it (``VersionTooNew`` when retryable)."""
        kind = "VersionTooNew" if self.retryable else "MigrationError"
        return ErrorInfo(kind, str(self), retryable=self.retryable)


@dataclass(frozen=True, slots=True)
class InputValidator:
    """How JSON input for one task becomes its handler's input.

    Args:
        task: the task name, for error messages.
        input_type: the type the input is structured into.
        version: the input version the handler expects.
        converter: the app's converter.
        migrations: functions bringing older inputs forward, oldest first: they cover the
            ``len(migrations)`` versions just below ``version``.
        implemented: whether this app implements the task. A producer-only app does not
            know the worker's migrations, so an input of another version is the worker's to
            judge (``MigrationError`` with ``retryable``).

    """

    task: str
    input_type: type[Any]
    version: int
    converter: Converter = field(repr=False, compare=False)
    migrations: tuple[Migration, ...] = ()
    implemented: bool = True

    def validate(self, data: Any, version: int | None = None) -> Any:
        """``data``, built for ``version`` (default: the current one), as the handler's input.

        Raises:
            MigrationError: the input cannot be brought to ``self.version``.
            ValidationError: the (migrated) input does not fit the input type; every bad
                field is listed with its path.

        """
        raw = self.migrate(data, self.version if version is None else version)
        return structure(self.converter, raw, self.input_type, task=self.task)

    def migrate(self, data: Any, from_version: int) -> Any:
        """Bring ``data`` from ``from_version`` to ``self.version`` with the migrations."""
        if from_version == self.version:
            return data
        if from_version > self.version:
            raise MigrationError(
                f"job is for contract version {from_version}; this worker implements"
                f" {self.version}",
                retryable=True,
            )
        if not self.implemented:
            raise MigrationError(
                f"job is for contract version {from_version}; this app does not implement"
                f" {self.task!r}, so its worker migrates it",
                retryable=True,
            )
        oldest = self.version - len(self.migrations)
        if from_version < oldest:
            raise MigrationError(
                f"no migration from version {from_version}: this worker migrates versions "
                f"{max(oldest, 1)}..{self.version}"
            )
        try:
            for migration in self.migrations[from_version - oldest :]:
                data = migration(data)
        except Exception as exc:  # a user's function: whatever it raises rejects the job
            raise MigrationError(str(exc)) from exc
        return data


@dataclass(frozen=True, slots=True)
class Registered:
    """An implemented task with its effective worker-side settings, resolved once."""

    contract: StaticContract[Any, Any]
    implementation: Implementation[Any, Any]
    policy: RetryPolicy
    timeout: float | None
    validator: InputValidator
    middleware: tuple[Middleware, ...]
    idempotency: Idempotency = "input"
    """What a reused idempotency key is compared on (``ImplementOptions.idempotency``)."""

    @classmethod
    def resolve(
        cls,
        contract: StaticContract[Any, Any],
        impl: Implementation[Any, Any],
        *,
        converter: Converter,
        middleware: Sequence[Middleware] = (),
    ) -> Registered:
        """Check ``impl``'s options against ``contract`` and settle each effective value.

        Raises:
            ContractError: an option is invalid (named with the task).

        """
        opts, name = impl.options, contract.name
        try:
            policy = contract.retry if opts.retry is None else RetryPolicy.of(opts.retry)
            timeout = (
                contract.timeout
                if opts.timeout is None
                else parse_duration(opts.timeout, field="timeout")
            )
        except (ValueError, ContractError) as exc:
            raise ContractError(f"{name}: {exc}") from None
        version = contract.version if opts.version is None else opts.version
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ContractError(f"{name}: options.version must be an int >= 1, got {version!r}")
        migrations = tuple(opts.migrate)
        if len(migrations) >= version:
            raise ContractError(
                f"{name}: {len(migrations)} migrations for version {version}; at most {version - 1}"
            )
        if not all(callable(m) for m in migrations):
            raise ContractError(f"{name}: every migration must be callable")
        if opts.idempotency not in ("input", "key"):
            raise ContractError(
                f"{name}: options.idempotency must be 'input' or 'key', got {opts.idempotency!r}"
            )
        validator = InputValidator(
            task=name,
            input_type=opts.input_type or contract.input,
            version=version,
            converter=converter,
            migrations=migrations,
        )
        return cls(
            contract=contract,
            implementation=impl,
            policy=policy,
            timeout=timeout or None,
            validator=validator,
            middleware=(*middleware, *opts.middleware),
            idempotency=opts.idempotency,
        )

    @property
    def version(self) -> int:
        """The input version the handler expects."""
        return self.validator.version

    @property
    def migrations(self) -> tuple[Migration, ...]:
        """The migrations bringing older inputs to ``version``, oldest first."""
        return self.validator.migrations

    @property
    def input_type(self) -> type[Any]:
        """The type the worker structures the input into."""
        return self.validator.input_type

    def validate(self, data: Any, version: int | None = None) -> Any:
        """The handler's input from JSON ``data`` built for ``version`` (see ``InputValidator``)."""
        return self.validator.validate(data, version)

    def call(self, data: Any, ctx: JobContext, timeout: float | None) -> Any:
        """Run a sync handler, stopped with ``HandlerTimeout`` after ``timeout`` seconds."""
        handler: Callable[..., Any] = self.implementation.handler
        job = bind_job(ctx)  # the job's fields on every log line the handler writes
        try:
            if timeout is None:
                return handler(data, ctx)
            return call_with_timeout(handler, (data, ctx), timeout)
        finally:
            unbind_job(job)

    async def acall(self, data: Any, ctx: JobContext, timeout: float | None) -> Any:
        """Await an ``async def`` handler, cancelled with ``HandlerTimeout`` after ``timeout``."""
        import asyncio  # lazy import: sync workers never pay for asyncio

        coro = self.implementation.handler(data, ctx)
        job = bind_job(ctx)  # this task's context: wait_for's task copies it
        try:
            if timeout is None:
                return await coro
            try:
                return await asyncio.wait_for(coro, timeout)
            except TimeoutError:
                raise HandlerTimeout(f"handler ran past its {timeout:g}s timeout") from None
        finally:
            unbind_job(job)
