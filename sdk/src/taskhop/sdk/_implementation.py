"""What ``App.implement`` attaches to a contract: the handler and the worker-side options."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeAlias, TypeVar

from taskhop.static_contracts import Duration, RetrySpec

from ._context import JobContext

if TYPE_CHECKING:
    from ._middleware import Middleware

__all__ = ["Handler", "Idempotency", "ImplementOptions", "Implementation", "Migration"]

I = TypeVar("I")
O = TypeVar("O")

Handler: TypeAlias = Callable[[I, JobContext], O | Awaitable[O]]
"""A handler: ``(input, ctx) -> output``, as a plain function or an ``async def``."""

Migration: TypeAlias = Callable[[Any], Any]
"""Turns version N input (plain JSON data) into version N+1 input."""

Idempotency: TypeAlias = Literal["input", "key"]
"""What a reused idempotency key is compared on: its job's input too (``"input"``), or nothing."""


@dataclass(frozen=True, slots=True)
class ImplementOptions:
    """Worker-side settings for one task; each overrides the contract's default when set.

    Args:
        retry: attempts and backoff on this worker.
        timeout: the handler's time budget on this worker.
        version: the input version the handler expects (defaults to the contract's).
        migrate: functions bringing older inputs forward, oldest first: with ``version=3``,
            ``migrate=[v1_to_v2, v2_to_v3]``. Jobs older than the oldest migration are
            rejected; jobs newer than ``version`` are retried (a newer worker may be rolling out).
        input_type: a richer type to validate into than the contract's (e.g. an attrs class
            with validators for a static contract's TypedDict); it must accept the same JSON.
        middleware: hooks for this task only, run after the app's.
        idempotency: what decides that a job under a used idempotency key is a duplicate.
            ``"input"`` (the default): the key and the input; a job whose input differs from
            the key's first job (running or succeeded) is rejected with
            ``IdempotencyKeyMismatch`` instead of getting that job's result, as payment APIs
            refuse a reused key. ``"key"``: the key alone, for inputs that legitimately vary
            under one key (a timestamp in the input); the first job's result is returned.

    """

    retry: RetrySpec = None
    timeout: Duration | None = None
    version: int | None = None
    migrate: Sequence[Migration] = ()
    input_type: type[Any] | None = None
    middleware: Sequence[Middleware] = field(default=())
    idempotency: Idempotency = "input"


@dataclass(frozen=True, slots=True)
class Implementation(Generic[I, O]):
    """The object form of ``implement``: a handler and its options in one value."""

    handler: Handler[I, O]
    options: ImplementOptions = field(default_factory=ImplementOptions)
    is_async: bool = field(init=False, repr=False, compare=False)
    """Whether the handler is an ``async def`` (checked once here, not per job)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.handler))
