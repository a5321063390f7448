"""Never run: typed events and table triggers, checked by mypy and pyright.

Positive cases use ``assert_type``; each negative case carries both checkers' ignores, which
fail the build if the rejection stops being reported (see ``api.py``).
"""

from __future__ import annotations

from typing import assert_type

import attrs
from taskhop.sdk import (
    BoundTask,
    Change,
    Event,
    EventSet,
    JobContext,
    StaticEvent,
    create_app,
    define_event,
    define_table,
    define_task,
    static_event,
)


@attrs.frozen
class Placed:
    order_id: str
    total: int


@attrs.frozen
class Shipped:
    order_id: str
    carrier: str


@attrs.frozen
class Order:
    pk: str
    status: str


placed = define_event("order.placed", payload=Placed, key="order_id")
shipped = static_event("order.shipped", payload=Shipped, key="order_id")
orders = define_table("orders", item=Order, key="pk")
charge = define_task("charge", input=Placed, output=Shipped)
app = create_app()

assert_type(placed | shipped, EventSet[Placed | Shipped])
assert_type(app.event(shipped), StaticEvent[Shipped])


@app.on(placed)
def bill(event: Event[Placed], ctx: JobContext) -> None:
    assert_type(event.payload.total, int)


@app.on(placed | shipped)
def audit(event: Event[Placed | Shipped], ctx: JobContext) -> None:
    payload = event.payload
    if isinstance(payload, Shipped):
        assert_type(payload.carrier, str)
    else:
        assert_type(payload.total, int)


@app.on("order.*")
def by_pattern(event: Event[Placed | Shipped], ctx: JobContext) -> None: ...


assert_type(bill, BoundTask[Event[Placed], object])
assert_type(by_pattern, BoundTask[Event[Placed | Shipped], object])


@app.on_change(orders, on={"insert"})
def on_order(change: Change[Order], ctx: JobContext) -> None:
    if change.new is not None:
        assert_type(change.new.status, str)


assert_type(app.emit(placed, Placed("o1", 1)), str)
app.publishes(charge, shipped)
app.publishes(charge, placed, lambda out: Placed(out.order_id, 0))


def emitting(ctx: JobContext) -> None:
    ctx.emit(shipped, Shipped("o1", "ups"))


# -- rejections ----------------------------------------------------------------------------

app.emit(placed, Shipped("o1", "ups"))  # type: ignore[misc]  # pyright: ignore[reportArgumentType]


def emit_wrong(ctx: JobContext) -> None:
    ctx.emit(shipped, Placed("o1", 1))  # type: ignore[misc]  # pyright: ignore[reportArgumentType]


@app.on(placed)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
def wrong_payload(event: Event[Shipped], ctx: JobContext) -> None: ...


@app.on(placed | shipped)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
def too_narrow(event: Event[Placed], ctx: JobContext) -> None: ...


def unnarrowed(event: Event[Placed | Shipped]) -> str:
    return event.payload.carrier  # type: ignore[union-attr]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType, reportUnknownVariableType]


@app.on_change(orders)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
def wrong_item(change: Change[Placed], ctx: JobContext) -> None: ...


app.publishes(charge, placed, lambda out: out)  # type: ignore[arg-type, return-value]  # pyright: ignore[reportArgumentType]
