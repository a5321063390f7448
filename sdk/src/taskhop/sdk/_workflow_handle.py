"""``WorkflowHandle[O]``: a dispatched workflow's status, result, tree and cancellation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._converter import structure
from ._errors import ResultTimeout, WorkflowCancelled, WorkflowFailed
from ._workflow_engine import engine_of
from ._workflow_state import FINAL, input_refs, resolve

if TYPE_CHECKING:
    from ._app import App
    from ._workflow_build import Shape

__all__ = ["StepView", "WorkflowHandle"]

O = TypeVar("O")

_ANY: Shape = ("one", Any)


@dataclass(frozen=True, slots=True)
class StepView:
    """One step of a workflow as ``WorkflowHandle.steps`` reports it."""

    node: str
    name: str | None
    task: str
    job_id: str
    state: str
    """The node's state in the document (pending, dispatched, succeeded, ...)."""
    job_status: str | None
    """Its job's status (queued, running, retrying, ...), None if no worker has begun it."""
    after: tuple[str, ...]
    error: dict[str, Any] | None


class WorkflowHandle(Generic[O]):
    """A workflow started by ``Flow.dispatch`` (typed by its result) or found by id.

    ``result()`` is the chain's last output, a group's tuple of member outputs, a chord's
    callback output; a handle made by ``App.workflow(id)`` returns the result as JSON data.
    """

    def __init__(self, app: App, workflow_id: str, shape: Shape = _ANY) -> None:
        self._app = app
        self.id = workflow_id
        self._shape = shape

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.id}>"

    def document(self) -> dict[str, Any] | None:
        """The stored document (``docs/protocol.md``), or None if there is none."""
        stored = engine_of(self._app).store.load_workflow(self.id)
        return None if stored is None else stored.doc

    def status(self) -> str:
        """``running``, ``succeeded``, ``failed`` or ``cancelled`` (``unknown`` if no document)."""
        doc = self.document()
        return "unknown" if doc is None else str(doc["status"])

    def steps(self) -> list[StepView]:
        """Every step, in declaration order, with its job's status."""
        doc = self.document()
        if doc is None:
            return []
        nodes = doc["nodes"]
        records = self._jobs().get_many([nodes[n]["job"] for n in doc["order"]])
        views: list[StepView] = []
        for node_id in doc["order"]:
            node = nodes[node_id]
            record = records.get(node["job"])
            views.append(
                StepView(
                    node=node_id,
                    name=node.get("name"),
                    task=node["task"],
                    job_id=node["job"],
                    state=node["state"],
                    job_status=None if record is None else record.status.value,
                    after=tuple(node["after"]),
                    error=node.get("error"),
                )
            )
        return views

    def cancel(self, reason: str = "cancelled") -> bool:
        """Cancel it (stored: no later step starts); False if it had already ended."""
        return engine_of(self._app).cancel(self.id, reason)

    async def acancel(self, reason: str = "cancelled") -> bool:
        """``cancel`` for async code."""
        import asyncio

        return await asyncio.to_thread(self.cancel, reason)

    def result(self, timeout: float | None = 30.0, *, poll: float = 0.02) -> O:
        """Wait for the end and return the result.

        Raises:
            WorkflowFailed: a step failed (``error["cause"]`` is its error), or a step could
                not be sent.
            WorkflowCancelled: cancelled, or past its timeout.
            ResultTimeout: still running after ``timeout`` seconds.

        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll
        while True:
            doc = self._settled()
            if doc is not None:
                return self._outcome(doc)
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(f"workflow {self.id} did not finish within {timeout}s")
            time.sleep(interval)
            interval = min(interval * 2, 0.5)

    async def aresult(self, timeout: float | None = 30.0, *, poll: float = 0.02) -> O:
        """``result`` for async code: polls without blocking the event loop."""
        import asyncio

        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll
        while True:
            doc = await asyncio.to_thread(self._settled)
            if doc is not None:
                return await asyncio.to_thread(self._outcome, doc)
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(f"workflow {self.id} did not finish within {timeout}s")
            await asyncio.sleep(interval)
            interval = min(interval * 2, 0.5)

    # -- inside ----------------------------------------------------------------------------

    def _settled(self) -> dict[str, Any] | None:
        """The document once it has ended (recording a deadline found passed), else None."""
        doc = self.document()
        if doc is None:
            return None
        if doc["status"] == "running" and (doc.get("deadline") or float("inf")) <= time.time():
            engine_of(self._app).ended(self.id)  # records the timeout
            doc = self.document()
        return doc if doc is not None and doc["status"] in FINAL else None

    def _outcome(self, doc: dict[str, Any]) -> O:
        if doc["status"] == "cancelled":
            raise WorkflowCancelled(self.id, "cancelled", doc.get("error"))
        if doc["status"] != "succeeded":
            raise WorkflowFailed(self.id, doc["status"], doc.get("error"))
        nodes = doc["nodes"]
        refs = [ref for ref in input_refs(doc["output"]) if nodes[ref]["state"] == "succeeded"]
        records = self._jobs().get_many([nodes[ref]["job"] for ref in refs])
        results = {ref: records[nodes[ref]["job"]].result for ref in refs}
        return self._structured(resolve(doc, doc["output"], results), self._shape)  # type: ignore[no-any-return]

    def _structured(self, value: Any, shape: Shape) -> Any:
        kind, inner = shape
        if kind == "tuple":
            return tuple(self._structured(v, s) for v, s in zip(value, inner, strict=True))
        if inner is Any:
            return value
        task = f"workflow {self.id}"
        return structure(self._app.converter, value, inner, task=task, what="output")

    def _jobs(self) -> Any:
        return self._app.store
