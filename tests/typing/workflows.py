"""Never run: workflow composition, handles and ctx.invoke, checked by mypy and pyright.

Positive cases use ``assert_type``; each negative case carries both checkers' ignores, which
fail the build if the rejection stops being reported (see ``api.py``).
"""

from __future__ import annotations

from typing import Any, assert_type

from taskhop.sdk import (
    Flow,
    JobContext,
    ResultHandle,
    Signature,
    Step,
    StepGraph,
    WorkflowHandle,
    chain,
    chord,
    create_app,
    group,
)
from taskhop.sdk import workflows as wf

app = create_app()


@app.task("add")
def add(numbers: list[int], ctx: JobContext) -> int:
    return sum(numbers)


@app.task("double")
def double(x: int, ctx: JobContext) -> int:
    return 2 * x


@app.task("greet")
def greet(name: str, ctx: JobContext) -> str:
    return f"hi {name}"


@app.task("total")
def total(numbers: list[int], ctx: JobContext) -> int:
    return sum(numbers)


# -- signatures ---------------------------------------------------------------------------
assert_type(add.s([1, 2]), Signature[object, int])
assert_type(double.s(), Signature[int, int])
add.s("not numbers")  # type: ignore[call-overload]  # pyright: ignore[reportArgumentType]

# -- chain: each output is the next input -------------------------------------------------
pipeline = chain(add.s([1, 2]), double.s(), double.s())
assert_type(pipeline, Flow[object, int])
assert_type(pipeline.dispatch(), WorkflowHandle[int])
assert_type(pipeline.dispatch().result(), int)
# greet takes a str, add gives an int
chain(add.s([1]), greet.s())  # type: ignore[misc]  # pyright: ignore[reportArgumentType]
# a bound step takes whatever comes before it
assert_type(chain(add.s([1]), greet.s("ada")), Flow[object, str])
# an unbound first step cannot be dispatched
chain(double.s(), double.s()).dispatch()  # type: ignore[misc]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]

# -- group: a tuple in declaration order --------------------------------------------------
members = group(add.s([1]), greet.s("ada"))
assert_type(members, Flow[object, tuple[int, str]])
assert_type(members.dispatch().result(), tuple[int, str])

# -- chord: the callback takes the list of member outputs ---------------------------------
summed = chord([add.s([1]), add.s([2])], total.s())
assert_type(summed, Flow[object, int])
chord([add.s([1]), add.s([2])], greet.s())  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
assert_type(chord([chain(add.s([1]), double.s())], total.s()), Flow[object, int])

# -- map and chunk ------------------------------------------------------------------------
assert_type(wf.map(double.s(), [1, 2, 3]), Flow[object, tuple[int, ...]])
assert_type(wf.chunk(double.s(), range(100), 10), Flow[object, tuple[int, ...]])
wf.map(double.s(), ["a"])  # type: ignore[misc]  # pyright: ignore[reportArgumentType]

# -- step graphs --------------------------------------------------------------------------
graph = StepGraph()
start = graph.step("start", add.s([2, 3]))
assert_type(start, Step[int])
left = graph.step("left", double.s(), input=start)
graph.step("wrong", greet.s(), input=start)  # type: ignore[misc]  # pyright: ignore[reportArgumentType]
assert_type(graph.dispatch(left), WorkflowHandle[int])
assert_type(graph.dispatch(), WorkflowHandle[dict[str, Any]])


@app.task("split")
def split(size: int, ctx: JobContext) -> list[list[int]]:
    return [[0, size]]


@app.task("count")
def count(cursor: list[int], ctx: JobContext) -> int:
    return cursor[1] - cursor[0]


counted = graph.batch("rows", split.s(10), worker=count.s(), aggregate=total.s())
assert_type(counted, Step[int])
graph.batch("bad", split.s(10), worker=greet.s(), aggregate=total.s())  # type: ignore[misc]  # pyright: ignore[reportArgumentType]


# -- ctx.invoke / ctx.dispatch ------------------------------------------------------------
@app.task("parent")
def parent(x: int, ctx: JobContext) -> int:
    assert_type(ctx.invoke(double, x), int)
    assert_type(ctx.dispatch(greet, "ada"), ResultHandle[str])
    ctx.invoke(double, "x")  # type: ignore[misc]  # pyright: ignore[reportArgumentType]
    return x
