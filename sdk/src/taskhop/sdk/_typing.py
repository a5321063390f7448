"""Runtime answers to "what is this carrier's input / output type?".

Python has no conditional types, so taskora's ``InferInput<typeof c>`` has no annotation form
that both mypy and pyright accept; a subscriptable runtime helper that checkers reject in
annotations would be a trap. What does work in both checkers: the carriers are generic
(``StaticContract[I, O]``, ``BoundTask[I, O]``, ``ResultHandle[O]``), so types flow through
``dispatch``, handlers and ``result()`` by inference, and these functions return the types
at run time, typed as ``type[I]`` / ``type[O]``. See docs/typing.md.
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

from taskhop.static_contracts import StaticContract

from ._bound import BoundTask
from ._handle import ResultHandle

__all__ = ["input_type", "output_type"]

I = TypeVar("I")
O = TypeVar("O")


@overload
def input_type(carrier: StaticContract[I, Any]) -> type[I]: ...
@overload
def input_type(carrier: BoundTask[I, Any]) -> type[I]: ...
def input_type(carrier: StaticContract[Any, Any] | BoundTask[Any, Any]) -> type[Any]:
    """The input type of a contract or bound task (``ResultHandle`` has none)."""
    if isinstance(carrier, BoundTask):
        return carrier.contract.input
    if isinstance(carrier, StaticContract):
        return carrier.input
    raise TypeError(f"input_type() takes a contract or a BoundTask, got {type(carrier).__name__}")


@overload
def output_type(carrier: StaticContract[Any, O]) -> type[O]: ...
@overload
def output_type(carrier: BoundTask[Any, O]) -> type[O]: ...
@overload
def output_type(carrier: ResultHandle[O]) -> type[O]: ...
def output_type(
    carrier: StaticContract[Any, Any] | BoundTask[Any, Any] | ResultHandle[Any],
) -> type[Any]:
    """The output type of a contract, bound task or result handle."""
    if isinstance(carrier, BoundTask):
        return carrier.contract.output
    if isinstance(carrier, StaticContract):
        return carrier.output
    if isinstance(carrier, ResultHandle):
        return carrier._output  # pyright: ignore[reportPrivateUsage]
    raise TypeError(
        f"output_type() takes a contract, BoundTask or ResultHandle, got {type(carrier).__name__}"
    )
