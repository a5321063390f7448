"""``define_task``: contracts with runtime schemas that the producer checks before sending.

The schema *is* the input type: an attrs class with validators (or a dataclass, or a
TypedDict), structured by the app's cattrs converter. Producer and worker validate with the
same converter, so a payload that leaves a producer valid cannot be rejected by a worker of
the same contract version.
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

from taskhop.static_contracts import Duration, RetrySpec, StaticContract

__all__ = ["Contract", "TaskContract", "define_task"]

I = TypeVar("I")
O = TypeVar("O")

Contract = StaticContract
"""Either kind of contract (``TaskContract`` is a ``StaticContract`` with runtime schemas)."""


class TaskContract(StaticContract[I, O]):
    """A contract whose input is validated by the producer as well as the worker."""

    runtime_schema: ClassVar[bool] = True


def define_task(
    name: str,
    *,
    input: type[I],
    output: type[O],
    retry: RetrySpec = None,
    timeout: Duration | None = None,
    version: int = 1,
    queue: str | None = None,
) -> TaskContract[I, O]:
    """Declare a task with runtime schemas.

    Args:
        name: the task name jobs are routed by.
        input: an attrs class (validators run on dispatch and on the worker), a dataclass or
            a TypedDict.
        output: the result type, structured back for ``ResultHandle.result()``.
        retry: a ``RetryPolicy``, a number of attempts, or a dict of its options.
        timeout: the handler's time budget (``"30s"``, seconds or a ``timedelta``).
        version: the input schema version (see migrations in ``ImplementOptions``).
        queue: a logical queue name for transports that route by it.

    """
    return TaskContract(
        name,
        input=input,
        output=output,
        retry=retry,
        timeout=timeout,
        version=version,
        queue=queue,
    )
