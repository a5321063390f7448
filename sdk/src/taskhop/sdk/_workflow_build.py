"""Workflow composition on the producer side: signatures, chain, group, chord, map, chunk.

Everything here is built from contracts (``BoundTask.s``), never from handlers, and compiles
to a ``Plan``: the nodes of a workflow document (``_workflow_state``) with the input
expression of each, and the shape of the workflow's result. Nothing is sent or stored here.

Typing: ``Flow[I, O]`` takes ``I`` piped in and gives ``O``; ``I`` is contravariant, so a
bound signature (``Flow[object, O]``: it ignores what is piped) fits anywhere, and an unbound
one only after a step whose output it accepts. ``chain`` takes up to six steps (nest chains for
more); ``group`` is typed member by member up to six, then as ``tuple[A, ...]`` of one type. A
chord whose members give different types, and a step graph's named inputs, are checked at
run time only (``docs/workflows.md`` says where).
"""

# pyright: reportPrivateUsage=false
# (the flows here build each other: _app and _build are this module's, not a caller's)

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from taskhop.static_contracts import JsonValue

from ._errors import WorkflowDefinitionError

if TYPE_CHECKING:
    from ._app import App
    from ._bound import BoundTask

__all__ = [
    "Flow",
    "Plan",
    "Signature",
    "WorkflowDefinitionError",
    "chain",
    "chord",
    "chunk",
    "group",
    "map",
]

I = TypeVar("I")
I_contra = TypeVar("I_contra", contravariant=True)
O_co = TypeVar("O_co", covariant=True)
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
D = TypeVar("D")
E = TypeVar("E")
F = TypeVar("F")

STEP_NAME = re.compile(r"[A-Za-z0-9_-]{1,48}")
"""Step names: they go into job ids (``<workflow id>.<step>``), which SQS and DynamoDB carry."""


Shape = tuple[str, Any]
"""How a result is structured: ``("one", output type)`` or ``("tuple", [shapes])``."""


@dataclass(slots=True)
class Plan:
    """A workflow compiled to document nodes (see ``_workflow_state``)."""

    app: App
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict[str, dict[str, Any]])
    order: list[str] = field(default_factory=list[str])
    output: dict[str, Any] = field(default_factory=dict[str, Any])
    shape: Shape = ("one", Any)

    def add(
        self,
        node_id: str,
        task: BoundTask[Any, Any],
        expression: dict[str, Any] | None,
        after: Sequence[str],
        **extra: Any,
    ) -> None:
        """Add one node; ``expression`` None means nothing feeds it (refused: unbound root)."""
        if task.app is not self.app:
            raise WorkflowDefinitionError(
                f"step {node_id} ({task.name}) belongs to another app: a workflow's steps are"
                " all registered on the app that dispatches it"
            )
        if expression is None:
            raise WorkflowDefinitionError(
                f"step {node_id} ({task.name}) has no input: the first step of a workflow must be"
                " bound (task.s(input)); only later steps take their predecessor's output"
            )
        self.nodes[node_id] = {
            "task": task.name,
            "version": task.contract.version,
            "input": expression,
            "after": list(dict.fromkeys(after)),
            "kind": "task",
            "name": None,
            "state": "pending",
            "by": None,
            **extra,
        }
        self.order.append(node_id)


@dataclass(slots=True)
class _Built:
    """What building a flow left for the next one: its output and the nodes to wait for."""

    output: dict[str, Any]
    sinks: list[str]
    shape: Shape


class Flow(Generic[I_contra, O_co]):
    """A step or a composition of steps: takes ``I`` piped in, gives ``O``.

    ``dispatch`` / ``adispatch`` start it as a workflow; only a flow whose first steps are
    bound (``Flow[object, O]``) can be dispatched.
    """

    def _app(self) -> App:
        raise NotImplementedError

    def _build(self, plan: Plan, piped: dict[str, Any] | None, after: list[str]) -> _Built:
        raise NotImplementedError

    def plan(self) -> Plan:
        """The flow compiled to workflow nodes (raises ``WorkflowDefinitionError``)."""
        plan = Plan(self._app())
        built = self._build(plan, None, [])
        plan.output, plan.shape = built.output, built.shape
        return plan

    def dispatch(
        self: Flow[object, A],
        *,
        id: str | None = None,
        timeout: float | None = None,
        stall_after: float | None = None,
        trace: dict[str, str] | None = None,
    ) -> WorkflowHandle[A]:
        """Start the workflow: store its document, then send its first steps.

        Args:
            id: the workflow's id (default: a new UUIDv7). Dispatching an id that exists is
                a no-op that returns its handle, so a retried dispatch never starts twice.
            timeout: seconds after which a still running workflow is cancelled (stored: it
                fires even after this process has exited).
            stall_after: seconds without progress after which the sweeper looks at it.
            trace: trace context every step's job carries.

        Raises:
            WorkflowDefinitionError: an unbound first step, or a step of another app.
            TaskhopError: the app's store keeps no workflows.
            TransportError: the first steps could not be sent (the workflow is failed).

        """
        from ._workflow_engine import engine_of

        return engine_of(self._app()).start(
            self.plan(), workflow_id=id, timeout=timeout, stall_after=stall_after, trace=trace
        )

    async def adispatch(
        self: Flow[object, A],
        *,
        id: str | None = None,
        timeout: float | None = None,
        stall_after: float | None = None,
        trace: dict[str, str] | None = None,
    ) -> WorkflowHandle[A]:
        """``dispatch`` for async code: the store and queue calls never block the loop."""
        import asyncio

        from ._workflow_engine import engine_of

        plan = self.plan()
        return await asyncio.to_thread(
            engine_of(self._app()).start,
            plan,
            workflow_id=id,
            timeout=timeout,
            stall_after=stall_after,
            trace=trace,
        )


class Signature(Flow[I_contra, O_co]):
    """One step: a task and, when bound, its input. Made by ``BoundTask.s``."""

    def __init__(self, task: BoundTask[Any, Any], input: JsonValue | _Unbound) -> None:
        self.task = task
        self.input = input

    def __repr__(self) -> str:
        return f"{self.task.name}.s({'<bound>' if self.bound else ''})"

    @property
    def bound(self) -> bool:
        """Whether the step has its own input (``s(payload)``), not its predecessor's."""
        return not isinstance(self.input, _Unbound)

    def _app(self) -> App:
        return self.task.app

    def _build(self, plan: Plan, piped: dict[str, Any] | None, after: list[str]) -> _Built:
        node_id = f"n{len(plan.order)}"
        expression = piped if isinstance(self.input, _Unbound) else {"value": self.input}
        plan.add(node_id, self.task, expression, after)
        return _Built({"ref": node_id}, [node_id], ("one", self.task.contract.output))


class _Unbound:
    """The input of a signature made by ``s()``: its predecessor's output, when it runs."""

    __slots__ = ()


UNBOUND = _Unbound()


class _Chain(Flow[Any, Any]):
    def __init__(self, flows: Sequence[Flow[Any, Any]]) -> None:
        if not flows:
            raise WorkflowDefinitionError("chain() needs at least one step")
        self.flows = list(flows)

    def _app(self) -> App:
        return self.flows[0]._app()

    def _build(self, plan: Plan, piped: dict[str, Any] | None, after: list[str]) -> _Built:
        built = _Built(piped or {}, after, ("one", Any))
        for index, flow in enumerate(self.flows):
            built = flow._build(plan, piped if index == 0 else built.output, built.sinks)
        return built


class _Group(Flow[Any, Any]):
    def __init__(self, flows: Sequence[Flow[Any, Any]], *, what: str = "group()") -> None:
        if not flows:
            raise WorkflowDefinitionError(f"{what} needs at least one member")
        self.flows = list(flows)

    def _app(self) -> App:
        return self.flows[0]._app()

    def _build(self, plan: Plan, piped: dict[str, Any] | None, after: list[str]) -> _Built:
        members = [flow._build(plan, piped, after) for flow in self.flows]
        return _Built(
            {"list": [member.output for member in members]},
            [sink for member in members for sink in member.sinks],
            ("tuple", [member.shape for member in members]),
        )


class _Chunks(Flow[Any, Any]):
    """Groups that run one after another; the result is every member's output, in order."""

    def __init__(self, groups: Sequence[_Group]) -> None:
        if not groups:
            raise WorkflowDefinitionError("chunk() needs at least one item")
        self.groups = list(groups)

    def _app(self) -> App:
        return self.groups[0]._app()

    def _build(self, plan: Plan, piped: dict[str, Any] | None, after: list[str]) -> _Built:
        outputs: list[dict[str, Any]] = []
        shapes: list[Shape] = []
        for group in self.groups:
            built = group._build(plan, piped, after)
            outputs.extend(built.output["list"])
            shapes.extend(built.shape[1])
            after = built.sinks
        return _Built({"list": outputs}, after, ("tuple", shapes))


# -- composition --------------------------------------------------------------------------


@overload
def chain(a: Flow[I, A], /) -> Flow[I, A]: ...
@overload
def chain(a: Flow[I, A], b: Flow[A, B], /) -> Flow[I, B]: ...
@overload
def chain(a: Flow[I, A], b: Flow[A, B], c: Flow[B, C], /) -> Flow[I, C]: ...
@overload
def chain(a: Flow[I, A], b: Flow[A, B], c: Flow[B, C], d: Flow[C, D], /) -> Flow[I, D]: ...
@overload
def chain(
    a: Flow[I, A], b: Flow[A, B], c: Flow[B, C], d: Flow[C, D], e: Flow[D, E], /
) -> Flow[I, E]: ...
@overload
def chain(
    a: Flow[I, A], b: Flow[A, B], c: Flow[B, C], d: Flow[C, D], e: Flow[D, E], f: Flow[E, F], /
) -> Flow[I, F]: ...
def chain(*flows: Flow[Any, Any]) -> Flow[Any, Any]:
    """Steps one after another: each one's output is the next one's input.

    A bound step (``task.s(input)``) ignores its predecessor's output and takes its own.
    Typed up to six steps; nest chains for longer ones (``chain(chain(a, b), c, ...)``).
    """
    return _Chain(flows)


@overload
def group(a: Flow[I, A], /) -> Flow[I, tuple[A]]: ...
@overload
def group(a: Flow[I, A], b: Flow[I, B], /) -> Flow[I, tuple[A, B]]: ...
@overload
def group(a: Flow[I, A], b: Flow[I, B], c: Flow[I, C], /) -> Flow[I, tuple[A, B, C]]: ...
@overload
def group(
    a: Flow[I, A], b: Flow[I, B], c: Flow[I, C], d: Flow[I, D], /
) -> Flow[I, tuple[A, B, C, D]]: ...
@overload
def group(
    a: Flow[I, A], b: Flow[I, B], c: Flow[I, C], d: Flow[I, D], e: Flow[I, E], /
) -> Flow[I, tuple[A, B, C, D, E]]: ...
@overload
def group(
    a: Flow[I, A], b: Flow[I, B], c: Flow[I, C], d: Flow[I, D], e: Flow[I, E], f: Flow[I, F], /
) -> Flow[I, tuple[A, B, C, D, E, F]]: ...
@overload
def group(*flows: Flow[I, A]) -> Flow[I, tuple[A, ...]]: ...
def group(*flows: Flow[Any, Any]) -> Flow[Any, Any]:
    """Steps side by side: the result is their outputs as a tuple, in declaration order.

    Each member gets the same piped input; a member may be a chain.
    """
    return _Group(flows)


def chord(header: Sequence[Flow[I, A]], callback: Flow[list[A], B]) -> Flow[I, B]:
    """A group, then ``callback`` once, after every member, with their outputs in order."""
    return _Chain([_Group(header, what="chord()"), callback])


def map(signature: Signature[I, O_co], items: Iterable[I]) -> Flow[object, tuple[O_co, ...]]:
    """``signature`` on each item, side by side (a group): outputs in the items' order."""
    return _Group([_bind(signature, item) for item in items], what="map()")


def chunk(
    signature: Signature[I, O_co], items: Iterable[I], size: int
) -> Flow[object, tuple[O_co, ...]]:
    """``map`` in groups of ``size`` that run one after another; outputs in the items' order.

    A way to bound how many jobs of a large map are in flight at once.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise WorkflowDefinitionError(f"chunk() size must be an int >= 1, got {size!r}")
    steps = [_bind(signature, item) for item in items]
    return _Chunks(
        [_Group(steps[at : at + size], what="chunk()") for at in range(0, len(steps), size)]
    )


def _bind(signature: Signature[Any, Any], item: Any) -> Signature[object, Any]:
    if not isinstance(signature.input, _Unbound):
        raise WorkflowDefinitionError(
            f"map()/chunk() bind each item as the input: pass {signature.task.name}.s(),"
            " not a bound signature"
        )
    return signature.task.s(item)


if TYPE_CHECKING:
    from ._workflow_handle import WorkflowHandle
