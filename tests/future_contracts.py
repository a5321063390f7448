"""Contracts declared under postponed annotations (PEP 563), for tests/test_future_annotations.py.

Every annotation here is a string until resolved, which is how the TypedDict metaclass of
CPython 3.11 to 3.13 loses ``NotRequired`` and ``Required``.
"""

from __future__ import annotations

from typing import Annotated, NotRequired, Required, TypedDict

from taskhop.sdk import define_task, static_contract


class Address(TypedDict, total=False):
    """``total=False`` with one ``Required`` key: only ``street`` must be sent."""

    street: Required[str]
    town: str


class Line(TypedDict):
    """A nested TypedDict with an optional key."""

    sku: str
    qty: NotRequired[int]


class Order(TypedDict):
    """Required keys, optional ones (one under ``Annotated``), nested TypedDicts."""

    id: str
    lines: list[Line]
    note: NotRequired[str]
    ship_to: NotRequired[Address]
    priority: Annotated[NotRequired[int], "1 is first"]


class Placed(TypedDict):
    """An output with an optional key."""

    order_id: str
    eta: NotRequired[str]


place_order = define_task("place-order", input=Order, output=Placed)
place_order_static = static_contract("place-order-static", input=Order, output=Placed)
