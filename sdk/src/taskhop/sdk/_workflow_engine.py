"""Advancing workflows: the one place that reads a document, changes it and sends steps.

No orchestrator runs anywhere. A workflow moves when one of its steps ends: the worker that
recorded the step's end calls ``step_ended``, which applies the pure transition
(``_workflow_state``) by optimistic concurrency and sends the steps it dispatched, before the
step's message is acknowledged. The order keeps every crash window closed:

1. the step's job record is final (the worker's usual write);
2. the document records the step and marks its successors dispatched (one conditional
   write: a chord member is recorded once, a callback dispatched by one writer only);
3. the successors are sent (their job ids derive from the workflow's, so a second copy of
   one is a duplicate its worker skips);
4. the message is acknowledged.

A crash before 4 redelivers the step's message; its job is final, so the worker skips the
handler and calls ``step_ended`` again, which finds the step recorded and re-sends only the
successors it dispatched whose jobs never began. If a message is gone for good (its queue's
redrive moved it to a DLQ while the store was down), ``sweep`` repairs from the store alone:
a step whose job ended but whose node did not is advanced, a dispatched step with no job is
sent again, a workflow past its deadline is cancelled.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from taskhop.static_contracts import Envelope, JsonValue, TransportError, new_job_id
from taskhop.static_contracts.limits import LAMBDA_MAX_TIMEOUT

from ._errors import ErrorInfo, TaskhopError
from ._workflow_state import (
    FINAL,
    Advance,
    cancel,
    expire,
    fail,
    input_refs,
    new_document,
    node_finished,
    open_nodes,
    resolve,
    start,
)
from ._workflow_store import StoredWorkflow, WorkflowStore

if TYPE_CHECKING:
    from ._app import App
    from ._store import JobRecord, JobStore
    from ._workflow_build import Plan
    from ._workflow_handle import WorkflowHandle

__all__ = ["SweepReport", "WorkflowEngine", "engine_of", "step_of"]

_log = logging.getLogger("taskhop.workflows")

DEFAULT_STALL_AFTER = float(LAMBDA_MAX_TIMEOUT) * 2
"""Seconds without progress before the sweeper looks at a workflow: longer than any one step
can run on Lambda, so a slow step is not mistaken for a stalled one."""
MAX_WORKFLOW_ID = 64
"""A workflow id's longest: step job ids are ``<workflow id>.<step>`` and ids stop at 128."""
_CONFLICT_TRIES = 200
"""Optimistic writes one change may lose before giving up (a 100-member chord finishing at
once loses at most 99)."""

_LOCKS_KEPT = 1024
"""Workflows whose in-process write lock an engine keeps (least recently used go first)."""

_engines: weakref.WeakKeyDictionary[App, WorkflowEngine] = weakref.WeakKeyDictionary()


def engine_of(app: App) -> WorkflowEngine:
    """The app's workflow engine (one per app, made on first use)."""
    engine = _engines.get(app)
    if engine is None:
        engine = _engines.setdefault(app, WorkflowEngine(app))
    return engine


def step_of(envelope: Envelope) -> tuple[str, str] | None:
    """``(workflow id, node id)`` when the envelope is a workflow's step, else None."""
    continuation = envelope.continuation
    if isinstance(continuation, dict):
        workflow, node = continuation.get("workflow"), continuation.get("node")
        if isinstance(workflow, str) and isinstance(node, str):
            return workflow, node
    return None


@dataclass(slots=True)
class SweepReport:
    """What one ``sweep`` did, by workflow id."""

    looked_at: int = 0
    expired: list[str] = field(default_factory=list[str])
    advanced: list[str] = field(default_factory=list[str])
    resent: dict[str, list[str]] = field(default_factory=dict[str, list[str]])


class WorkflowEngine:
    """Starts, advances, cancels and repairs the workflows of one app."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._locks: OrderedDict[str, threading.Lock] = OrderedDict()
        self._locks_lock = threading.Lock()

    @property
    def store(self) -> WorkflowStore:
        """The app's store, as a ``WorkflowStore`` (a clear error if it keeps none)."""
        store: object = self.app.store
        if not isinstance(store, WorkflowStore):
            raise TaskhopError(
                f"workflows need a store that keeps them (MemoryStore, DynamoStore); this app's"
                f" store is {type(store).__name__}: pass store= to create_app()"
            )
        return store

    @property
    def _jobs(self) -> JobStore:
        return cast("JobStore", self.app.store)  # checked to be a WorkflowStore as well

    # -- start ---------------------------------------------------------------------------

    def start(
        self,
        plan: Plan,
        *,
        workflow_id: str | None,
        timeout: float | None,
        stall_after: float | None,
        trace: Mapping[str, str] | None,
    ) -> WorkflowHandle[Any]:
        """Store a new workflow's document, then send its first steps (see ``Flow.dispatch``)."""
        from ._workflow_handle import WorkflowHandle

        store = self.store
        workflow_id = workflow_id or new_job_id()
        if not 0 < len(workflow_id) <= MAX_WORKFLOW_ID:
            raise TaskhopError(f"a workflow id has 1 to {MAX_WORKFLOW_ID} characters")
        for value, what in ((timeout, "timeout"), (stall_after, "stall_after")):
            if value is not None and not value > 0:
                raise TaskhopError(f"a workflow's {what} must be > 0 seconds, got {value!r}")
        for node_id, node in plan.nodes.items():
            node["job"] = f"{workflow_id}.{node_id}"
        now = time.time()
        doc = new_document(
            workflow_id,
            plan.nodes,
            plan.order,
            plan.output,
            now=now,
            timeout=timeout,
            stall_after=stall_after or DEFAULT_STALL_AFTER,
            trace=trace,
        )
        advance = start(doc, now)
        handle: WorkflowHandle[Any] = WorkflowHandle(self.app, workflow_id, plan.shape)
        existing = store.create_workflow(doc)
        if existing is not None:  # a retried dispatch: send what never began, start nothing
            self._resend(existing.doc, "start")
            return handle
        try:
            self._send(doc, advance.dispatched)
        except TransportError as exc:
            # Nothing began: fail the workflow so its handle answers now, then say why.
            self._fail_dispatch(workflow_id, exc)
            raise
        return handle

    # -- a step ended (called by the worker before the step's message is acknowledged) ---

    def step_ended(
        self,
        workflow_id: str,
        node_id: str,
        *,
        state: str,
        result: JsonValue = None,
        error: ErrorInfo | None = None,
    ) -> None:
        """Record a step's end in its workflow and send the steps it unblocked."""
        info = None if error is None else error.to_dict()
        stored, advance = self._apply(
            workflow_id,
            lambda doc, now: node_finished(
                doc, node_id, state=state, result=result, error=info, now=now
            ),
        )
        if stored is None:
            _log.warning(
                "step of an unknown workflow ended: nothing to advance",
                extra={"workflow_id": workflow_id, "node": node_id},
            )
            return
        if advance.dispatched:
            self._send_or_fail(stored.doc, advance.dispatched)
        elif not advance.changed:  # a redelivery: finish sending what this step dispatched
            self._resend(stored.doc, node_id)

    def ended(self, workflow_id: str) -> ErrorInfo | None:
        """Why the workflow will run no more steps (ended or past its deadline), or None.

        Read before each step's handler runs, so a step sent before its workflow failed or was
        cancelled never starts; a deadline found passed here is recorded here.
        """
        stored = self.store.load_workflow(workflow_id)
        if stored is None:
            return ErrorInfo("WorkflowNotFound", f"workflow {workflow_id} has no document")
        doc = stored.doc
        expired = doc["status"] == "running" and expire(doc, time.time())
        if expired and not self.store.save_workflow(doc, stored.rev):
            return self.ended(workflow_id)
        if doc["status"] == "running":
            return None
        error: dict[str, Any] = doc.get("error") or {}
        return ErrorInfo(
            str(error.get("type", "WorkflowEnded")),
            f"workflow {workflow_id} is {doc['status']}: {error.get('message', '')}".rstrip(": "),
        )

    # -- cancel and repair -----------------------------------------------------------------

    def cancel(self, workflow_id: str, reason: str = "cancelled") -> bool:
        """Cancel a running workflow: no later step starts; running ones see ``ctx.cancelled``.

        Returns False if it had already ended.
        """
        error = {"type": "WorkflowCancelled", "message": reason}
        _, advance = self._apply(workflow_id, lambda doc, now: _as_advance(cancel(doc, error, now)))
        return advance.changed

    def sweep(self, *, now: float | None = None, limit: int = 100) -> SweepReport:
        """Repair or end the open workflows that are due (see the module docstring).

        Meant to run on a schedule (``taskhop workflows sweep``, or the ``sweeper`` task):
        a workflow is due when it made no progress for its ``stall_after``, or its deadline
        came. One that is only slow (its steps' jobs are queued or running) is left as it is,
        due again later.
        """
        report = SweepReport()
        now = time.time() if now is None else now
        for workflow_id in self.store.due_workflows(now, limit):
            report.looked_at += 1
            self._repair(workflow_id, now, report)
        return report

    def _repair(self, workflow_id: str, now: float, report: SweepReport) -> None:
        stored = self.store.load_workflow(workflow_id)
        if stored is None or stored.doc["status"] in FINAL:
            return
        doc = stored.doc
        if expire(doc, now):
            if self.store.save_workflow(doc, stored.rev):
                report.expired.append(workflow_id)
            return
        waiting = dict(open_nodes(doc))
        records = self._jobs.get_many([node["job"] for node in waiting.values()])
        unsent: list[str] = []
        for node_id, node in waiting.items():
            record = records.get(node["job"])
            if record is None:
                unsent.append(node_id)
            elif record.status.is_final:  # its worker recorded the end but never advanced
                self.step_ended(
                    workflow_id,
                    node_id,
                    state=_node_state(record),
                    result=record.result,
                    error=record.error,
                )
                report.advanced.append(workflow_id)
        if unsent:
            self._send_or_fail(doc, unsent)
            report.resent[workflow_id] = unsent
        # Looked at: due again after another stall_after (a write that may lose to a step's).
        fresh = self.store.load_workflow(workflow_id)
        if fresh is not None and fresh.doc["status"] == "running" and fresh.rev == stored.rev:
            fresh.doc["due"] = min(
                now + fresh.doc["stall_after"], fresh.doc.get("deadline") or float("inf")
            )
            self.store.save_workflow(fresh.doc, fresh.rev)

    # -- inside ----------------------------------------------------------------------------

    def _apply(
        self, workflow_id: str, change: Callable[[dict[str, Any], float], Advance]
    ) -> tuple[StoredWorkflow | None, Advance]:
        """Read, change and write the document until the write wins (optimistic concurrency).

        The steps of one batch end side by side in one process: they take turns here, so
        their writes race only other processes' (a 100-member chord lost about 280 writes to
        conflicts without the turns, on four local Lambda instances).
        """
        with self._turn(workflow_id):
            return self._apply_now(workflow_id, change)

    def _turn(self, workflow_id: str) -> threading.Lock:
        with self._locks_lock:
            lock = self._locks.get(workflow_id)
            if lock is None:
                lock = self._locks[workflow_id] = threading.Lock()
                if len(self._locks) > _LOCKS_KEPT:
                    self._locks.popitem(last=False)
            else:
                self._locks.move_to_end(workflow_id)
            return lock

    def _apply_now(
        self, workflow_id: str, change: Callable[[dict[str, Any], float], Advance]
    ) -> tuple[StoredWorkflow | None, Advance]:
        store = self.store
        for _ in range(_CONFLICT_TRIES):
            stored = store.load_workflow(workflow_id)
            if stored is None:
                return None, Advance()
            advance = change(stored.doc, time.time())
            if not advance.changed:
                return stored, advance
            if store.save_workflow(stored.doc, stored.rev):
                return StoredWorkflow(stored.doc, stored.rev + 1), advance
        raise TaskhopError(
            f"workflow {workflow_id}: {_CONFLICT_TRIES} conflicting writes in a row; the step's"
            " message comes back and tries again"
        )

    def _send_or_fail(self, doc: dict[str, Any], node_ids: Sequence[str]) -> None:
        try:
            self._send(doc, node_ids)
        except TransportError as exc:
            if exc.retryable:
                raise  # the message comes back, and its redelivery sends again
            self._fail_dispatch(doc["id"], exc)

    def _send(self, doc: dict[str, Any], node_ids: Sequence[str]) -> None:
        """Build the dispatched nodes' envelopes (inputs from their inputs' job records), send."""
        if not node_ids:
            return
        nodes = doc["nodes"]
        refs = {ref for node_id in node_ids for ref in input_refs(nodes[node_id]["input"])}
        readable = [ref for ref in refs if nodes[ref]["state"] == "succeeded"]
        records = self._jobs.get_many([nodes[ref]["job"] for ref in readable])
        results = {ref: _result_of(records, nodes[ref]) for ref in readable}
        envelopes = [
            Envelope(
                task=nodes[node_id]["task"],
                input=resolve(doc, nodes[node_id]["input"], results),
                id=nodes[node_id]["job"],
                version=nodes[node_id]["version"],
                trace=doc.get("trace"),
                continuation={"workflow": doc["id"], "node": node_id},
            )
            for node_id in node_ids
        ]
        self.app.transport.send_many(envelopes)

    def _resend(self, doc: dict[str, Any], by: str) -> None:
        """Send again the nodes ``by`` dispatched whose jobs never began (a crash after 2)."""
        if doc["status"] != "running":
            return
        mine = [node_id for node_id, node in open_nodes(doc) if node.get("by") == by]
        if not mine:
            return
        records = self._jobs.get_many([doc["nodes"][node_id]["job"] for node_id in mine])
        unbegun = [node_id for node_id in mine if doc["nodes"][node_id]["job"] not in records]
        self._send_or_fail(doc, unbegun)

    def _fail_dispatch(self, workflow_id: str, exc: TransportError) -> None:
        error = {"type": "DispatchFailed", "message": f"steps could not be sent: {exc}"}
        try:
            self._apply(workflow_id, lambda doc, now: _as_advance(fail(doc, error, now)))
        except Exception:  # the sweeper sends them again later
            _log.warning(
                "could not record a workflow's failed dispatch",
                exc_info=True,
                extra={"workflow_id": workflow_id},
            )


def _as_advance(changed: bool) -> Advance:
    return Advance(changed=changed)


def _node_state(record: JobRecord) -> str:
    from ._store import JobStatus

    if record.status is JobStatus.SUCCEEDED:
        return "succeeded"
    if record.status is JobStatus.CANCELLED:
        return "cancelled"
    return "failed"


def _result_of(records: Mapping[str, JobRecord], node: dict[str, Any]) -> JsonValue:
    record = records.get(node["job"])
    if record is None:  # recorded succeeded in the document, so its job record exists
        raise TaskhopError(f"step job {node['job']} has no record (expired?)")
    return record.result
