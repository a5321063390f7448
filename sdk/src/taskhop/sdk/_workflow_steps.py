"""Step graphs, as tasker writes them: named steps, decisions and batchable steps.

``StepGraph`` builds the same document nodes as ``chain`` / ``group`` (``_workflow_build``),
named by step: a step waits for the steps ``after`` it and reads its input from them (one:
its output; several: their outputs by step name), or is bound (``task.s(input)``).

- A **decision** step returns the name (or a list of names) of the steps to run among those
  that wait for it; the others are skipped, a skip propagates down their branch, and a step
  that waits for a skipped branch and a taken one starts with the outputs of those that ran,
  so a join never hangs.
- A **batchable** step returns a list of worker inputs (cursor ranges, say); one ``worker``
  job runs per item, side by side, and ``aggregate`` gets the list of their outputs, in
  order. An empty list is a valid outcome: the aggregator gets ``[]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from ._errors import WorkflowDefinitionError
from ._workflow_build import STEP_NAME, Plan, Signature

if TYPE_CHECKING:
    from ._workflow_handle import WorkflowHandle

__all__ = ["Step", "StepGraph"]

I = TypeVar("I")
O = TypeVar("O")
O_co = TypeVar("O_co", covariant=True)
C = TypeVar("C")
R = TypeVar("R")


class Step(Generic[O_co]):
    """A step of a ``StepGraph`` (what ``after=`` and ``input=`` name), giving ``O``."""

    def __init__(self, graph: StepGraph, name: str, node: str) -> None:
        self.graph = graph
        self.name = name
        self.node = node

    def __repr__(self) -> str:
        return f"<Step {self.name!r}>"


class StepGraph:
    """Named steps with dependencies, decisions and batchable steps; dispatch it as a workflow."""

    def __init__(self) -> None:
        self._steps: dict[str, dict[str, Any]] = {}  # name -> how to build its node(s)

    # -- declaring -------------------------------------------------------------------------

    def step(
        self,
        name: str,
        signature: Signature[I, O],
        *,
        after: Step[Any] | Sequence[Step[Any]] = (),
        input: Step[I] | Mapping[str, Step[Any]] | None = None,
    ) -> Step[O]:
        """A step running ``signature``, after ``after`` (and any step it reads ``input`` from)."""
        return self._declare(name, signature, "task", after, input)

    def decision(
        self,
        name: str,
        signature: Signature[I, str | Sequence[str]],
        *,
        after: Step[Any] | Sequence[Step[Any]] = (),
        input: Step[I] | Mapping[str, Step[Any]] | None = None,
    ) -> Step[str | Sequence[str]]:
        """A step whose output names which of the steps waiting for it run."""
        return self._declare(name, signature, "decision", after, input)

    def batch(
        self,
        name: str,
        signature: Signature[I, Sequence[C]],
        *,
        worker: Signature[C, R],
        aggregate: Signature[list[R], O],
        after: Step[Any] | Sequence[Step[Any]] = (),
        input: Step[I] | Mapping[str, Step[Any]] | None = None,
    ) -> Step[O]:
        """Split with ``signature``, run ``worker`` per item, ``aggregate`` every output.

        The step named ``name`` is the aggregator's (what later steps read); the splitting
        step's node is ``name`` and the workers' are ``name.0``, ``name.1``, ...
        """
        for what, sig in (("worker", worker), ("aggregate", aggregate)):
            if sig.bound:
                raise WorkflowDefinitionError(
                    f"batch {name!r}: {what}= takes its input from the batch: pass"
                    f" {sig.task.name}.s(), not a bound signature"
                )
        self._declare(name, signature, "batch", after, input, worker=worker, aggregate=aggregate)
        return Step(self, name, f"{name}.aggregate")

    # -- dispatching -----------------------------------------------------------------------

    @overload
    def dispatch(
        self,
        result: Step[O],
        *,
        id: str | None = None,
        timeout: float | None = None,
        stall_after: float | None = None,
        trace: dict[str, str] | None = None,
    ) -> WorkflowHandle[O]: ...
    @overload
    def dispatch(
        self,
        result: None = None,
        *,
        id: str | None = None,
        timeout: float | None = None,
        stall_after: float | None = None,
        trace: dict[str, str] | None = None,
    ) -> WorkflowHandle[dict[str, Any]]: ...
    def dispatch(
        self,
        result: Step[Any] | None = None,
        *,
        id: str | None = None,
        timeout: float | None = None,
        stall_after: float | None = None,
        trace: dict[str, str] | None = None,
    ) -> WorkflowHandle[Any]:
        """Start the graph as a workflow (as ``Flow.dispatch``).

        ``result`` is the step whose output the handle's ``result()`` returns; without one,
        it returns the outputs of the last steps (those nothing waits for) that ran, by name.
        """
        from ._workflow_engine import engine_of

        plan = self.plan(result)
        return engine_of(plan.app).start(
            plan, workflow_id=id, timeout=timeout, stall_after=stall_after, trace=trace
        )

    def plan(self, result: Step[Any] | None = None) -> Plan:
        """The graph compiled to workflow nodes (raises ``WorkflowDefinitionError``)."""
        if not self._steps:
            raise WorkflowDefinitionError("a step graph needs at least one step")
        first = next(iter(self._steps.values()))
        plan = Plan(first["signature"].task.app)
        waited_for = {dep for spec in self._steps.values() for dep in spec["after"]}
        for name, spec in self._steps.items():
            self._compile(plan, name, spec)
        if result is not None:
            self._own(result, "result")
            plan.output = {"ref": result.node}
            plan.shape = ("one", self._output_type(result))
        else:
            sinks = {name: self._node_of(name) for name in self._steps if name not in waited_for}
            plan.output = {"named": sinks}
        return plan

    # -- inside ----------------------------------------------------------------------------

    def _declare(
        self,
        name: str,
        signature: Signature[Any, Any],
        kind: str,
        after: Step[Any] | Sequence[Step[Any]],
        input: Step[Any] | Mapping[str, Step[Any]] | None,
        **extra: Any,
    ) -> Step[Any]:
        if not STEP_NAME.fullmatch(name):
            raise WorkflowDefinitionError(
                f"step name {name!r}: 1 to 48 letters, digits, '_' or '-' (it goes into job ids)"
            )
        if name in self._steps:
            raise WorkflowDefinitionError(f"step {name!r} is declared twice")
        waits = [after] if isinstance(after, Step) else list(after)
        if isinstance(input, Step):
            reads: dict[str, Step[Any]] | Step[Any] | None = input
            waits.append(input)
        elif input is not None:
            reads = dict(input)
            waits.extend(reads.values())
        else:
            reads = None
        for step in waits:
            self._own(step, f"step {name!r}")
        self._steps[name] = {
            "signature": signature,
            "kind": kind,
            "after": list(dict.fromkeys(step.name for step in waits)),
            "reads": reads,
            **extra,
        }
        return Step(self, name, name)

    def _compile(self, plan: Plan, name: str, spec: dict[str, Any]) -> None:
        signature: Signature[Any, Any] = spec["signature"]
        after = [self._node_of(dep) for dep in spec["after"]]
        extra: dict[str, Any] = {"name": name, "kind": spec["kind"]}
        if spec["kind"] == "decision":
            branches = [n for n, s in self._steps.items() if name in s["after"]]
            if not branches:
                raise WorkflowDefinitionError(
                    f"decision {name!r} has no branches: declare the steps it chooses between"
                    f" with after={name}"
                )
            extra["branches"] = branches
        if spec["kind"] == "batch":
            worker: Signature[Any, Any] = spec["worker"]
            extra["worker"] = {"task": worker.task.name, "version": worker.task.contract.version}
            extra["aggregate"] = f"{name}.aggregate"
        plan.add(name, signature.task, self._input_of(name, spec, signature), after, **extra)
        if spec["kind"] == "batch":
            aggregate: Signature[Any, Any] = spec["aggregate"]
            plan.add(f"{name}.aggregate", aggregate.task, {"list": []}, [name], name=name)

    def _input_of(
        self, name: str, spec: dict[str, Any], signature: Signature[Any, Any]
    ) -> dict[str, Any] | None:
        if signature.bound:
            return {"value": signature.input}
        reads = spec["reads"]
        if isinstance(reads, Step):
            return {"ref": reads.node}
        if reads is not None:
            return {"named": {key: step.node for key, step in reads.items()}}
        sources = [dep for dep in spec["after"] if self._steps[dep]["kind"] != "decision"]
        if len(sources) == 1:
            return {"ref": self._node_of(sources[0])}
        if sources:
            return {"named": {dep: self._node_of(dep) for dep in sources}}
        if spec["after"]:
            raise WorkflowDefinitionError(
                f"step {name!r} waits only for a decision, which gives no input: bind it"
                f" ({signature.task.name}.s(input)) or name what it reads with input="
            )
        return None  # a root without input: Plan.add refuses it

    def _node_of(self, name: str) -> str:
        return f"{name}.aggregate" if self._steps[name]["kind"] == "batch" else name

    def _output_type(self, step: Step[Any]) -> Any:
        spec = self._steps[step.name]
        batch = spec["kind"] == "batch"
        sig: Signature[Any, Any] = spec["aggregate"] if batch else spec["signature"]
        return sig.task.contract.output

    def _own(self, step: Step[Any], where: str) -> None:
        if step.graph is not self or step.name not in self._steps:
            raise WorkflowDefinitionError(f"{where}: {step!r} is not a step of this graph")
