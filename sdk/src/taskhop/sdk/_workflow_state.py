"""A workflow's document and its transitions: pure functions, no I/O.

The document (``docs/protocol.md``, "Workflow documents") is plain JSON, so another language
can read it::

    {"id", "schema": 1, "status": "running|succeeded|failed|cancelled",
     "created_at", "updated_at", "deadline", "due", "stall_after",
     "nodes": {node id: node}, "order": [node ids, in declaration order],
     "output": an input expression (what ``result()`` returns), "error", "trace"}

A node is one step, one job (``job``: its id, derived from the workflow's)::

    {"task", "version", "input": expression, "after": [node ids it waits for],
     "kind": "task|decision|batch", "name": step name or null,
     "state": "pending|dispatched|succeeded|failed|skipped|cancelled", "by": who dispatched it,
     "branches": [...] (decision), "worker": {"task", "version"} and "aggregate": node id (batch)}

Input expressions say where a step's input comes from; results themselves stay in the
steps' job records, so the document holds states only: ``{"value": json}`` (bound),
``{"ref": node}`` (that step's output), ``{"list": [expr, ...]}``, ``{"named": {step: node}}``
(the outputs of the steps that ran, by name; skipped ones left out).

Each transition mutates the document it is given and says which nodes it dispatched; the
engine writes the document over the revision it read and sends those nodes only if the write
won (``_workflow_store``). A node moves ``pending -> dispatched`` in exactly one winning write,
which records ``by`` (the node, or ``"start"``, whose advance dispatched it): that writer
sends it, and a redelivery of that writer's message sends it again if its job never began.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from taskhop.static_contracts import JsonValue

__all__ = [
    "FINAL",
    "MAX_BATCH_WORKERS",
    "SCHEMA",
    "Advance",
    "cancel",
    "expire",
    "fail",
    "input_refs",
    "new_document",
    "node_finished",
    "open_nodes",
    "resolve",
    "start",
]

SCHEMA: Final = 1
FINAL: Final = frozenset({"succeeded", "failed", "cancelled"})
"""Workflow statuses that never change again."""
_DONE: Final = frozenset({"succeeded", "skipped"})
"""Node states a dependent may start after."""
_ENDED: Final = frozenset({"succeeded", "failed", "skipped", "cancelled"})
MAX_BATCH_WORKERS: Final = 1000
"""Worker steps one batchable step may fan out to: each is a node of the document, and the
document must fit one DynamoDB item."""

NodeState = Literal["pending", "dispatched", "succeeded", "failed", "skipped", "cancelled"]


@dataclass(slots=True)
class Advance:
    """What a transition did: whether the document changed, and the nodes it dispatched."""

    changed: bool = False
    dispatched: list[str] = field(default_factory=list[str])


def new_document(
    workflow_id: str,
    nodes: dict[str, dict[str, Any]],
    order: list[str],
    output: dict[str, Any],
    *,
    now: float,
    timeout: float | None,
    stall_after: float,
    trace: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A running workflow's first document (nodes all pending; ``start`` dispatches roots)."""
    return {
        "id": workflow_id,
        "schema": SCHEMA,
        "status": "running",
        "created_at": now,
        "updated_at": now,
        "deadline": None if timeout is None else now + timeout,
        "due": None,
        "stall_after": stall_after,
        "nodes": nodes,
        "order": order,
        "output": output,
        "error": None,
        "trace": dict(trace) if trace else None,
    }


def start(doc: dict[str, Any], now: float) -> Advance:
    """Dispatch every node that waits for nothing (by ``"start"``)."""
    advance = Advance(changed=True)
    _dispatch_ready(doc, "start", advance)
    _touch(doc, now)
    return advance


def node_finished(
    doc: dict[str, Any],
    node_id: str,
    *,
    state: str,
    result: JsonValue = None,
    error: dict[str, Any] | None = None,
    now: float,
) -> Advance:
    """Record a step's end (``succeeded``, ``failed``, ``cancelled``); dispatch what it unblocks.

    A node already ended is left as it is (a redelivered step, a step that finished after its
    workflow ended), so each step is recorded once. A failure fails the workflow: pending nodes
    are cancelled and never start; dispatched ones see the end before their handler runs, or
    through ``ctx.cancelled`` while it runs. Only a running workflow dispatches.
    """
    node = doc["nodes"].get(node_id)
    advance = Advance()
    if node is None or node["state"] in _ENDED:
        return advance
    advance.changed = True
    if state != "succeeded":
        node["state"] = "cancelled" if state == "cancelled" else "failed"
        node["error"] = error
        if doc["status"] == "running":
            _end(doc, "failed", _step_error(node_id, node, error), now)
        _touch(doc, now)
        return advance
    node["state"] = "succeeded"
    if doc["status"] != "running":
        _touch(doc, now)
        return advance
    problem = None
    if node["kind"] == "decision":
        problem = _decide(doc, node_id, node, result)
    elif node["kind"] == "batch":
        problem = _fan_out(doc, node_id, node, result)
    if problem is not None:
        node["state"] = "failed"
        node["error"] = problem
        _end(doc, "failed", _step_error(node_id, node, problem), now)
    else:
        _dispatch_ready(doc, node_id, advance)
        if all(doc["nodes"][n]["state"] in _DONE for n in doc["order"]):
            doc["status"] = "succeeded"
    _touch(doc, now)
    return advance


def cancel(doc: dict[str, Any], error: dict[str, Any], now: float) -> bool:
    """End a running workflow as cancelled (``error`` says why); False if it had ended."""
    return _end_running(doc, "cancelled", error, now)


def fail(doc: dict[str, Any], error: dict[str, Any], now: float) -> bool:
    """End a running workflow as failed (``error`` says why); False if it had ended."""
    return _end_running(doc, "failed", error, now)


def _end_running(doc: dict[str, Any], status: str, error: dict[str, Any], now: float) -> bool:
    if doc["status"] != "running":
        return False
    _end(doc, status, error, now)
    _touch(doc, now)
    return True


def expire(doc: dict[str, Any], now: float) -> bool:
    """Cancel a running workflow whose deadline has passed; False if it has not."""
    deadline = doc.get("deadline")
    if doc["status"] != "running" or deadline is None or now < deadline:
        return False
    return cancel(
        doc,
        {
            "type": "WorkflowTimeout",
            "message": f"workflow timeout: still running {now - doc['created_at']:.1f} s after"
            f" it started, past its timeout of {deadline - doc['created_at']:.1f} s",
        },
        now,
    )


def open_nodes(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Nodes that were dispatched and have not ended (for the sweeper and cancellation)."""
    for node_id in doc["order"]:
        node = doc["nodes"][node_id]
        if node["state"] == "dispatched":
            yield node_id, node


def input_refs(expression: dict[str, Any]) -> Iterator[str]:
    """The nodes whose outputs ``expression`` reads."""
    if "ref" in expression:
        yield expression["ref"]
    elif "list" in expression:
        for item in expression["list"]:
            yield from input_refs(item)
    elif "named" in expression:
        yield from expression["named"].values()


def resolve(
    doc: dict[str, Any], expression: dict[str, Any], results: Mapping[str, JsonValue]
) -> JsonValue:
    """Evaluate an input expression over ``results`` (node id -> output)."""
    if "value" in expression:
        value: JsonValue = expression["value"]
        return value
    if "ref" in expression:
        return results[expression["ref"]]
    if "list" in expression:
        return [resolve(doc, item, results) for item in expression["list"]]
    return {
        name: results[node_id]
        for name, node_id in expression["named"].items()
        if doc["nodes"][node_id]["state"] == "succeeded"
    }


# -- inside the transitions ----------------------------------------------------------------


def _dispatch_ready(doc: dict[str, Any], by: str, advance: Advance) -> None:
    """Dispatch pending nodes whose waits are over; skip those whose waits were all skipped.

    Repeated until nothing moves, so a skip propagates down a branch not taken and the join
    after it still starts (with the outputs of the branches that ran).
    """
    nodes = doc["nodes"]
    moved = True
    while moved:
        moved = False
        for node_id in doc["order"]:
            node = nodes[node_id]
            if node["state"] != "pending":
                continue
            waits = [nodes[dep]["state"] for dep in node["after"]]
            if any(state not in _DONE for state in waits):
                continue
            moved = True
            if waits and all(state == "skipped" for state in waits):
                node["state"] = "skipped"
                continue
            node["state"] = "dispatched"
            node["by"] = by
            advance.dispatched.append(node_id)


def _decide(
    doc: dict[str, Any], node_id: str, node: dict[str, Any], result: JsonValue
) -> dict[str, Any] | None:
    """Skip the branches a decision step did not choose; an error if its answer is unusable."""
    chosen = [result] if isinstance(result, str) else result
    branches: list[str] = node["branches"]
    if not isinstance(chosen, list) or not all(isinstance(name, str) for name in chosen):
        return _problem(
            "DecisionError",
            f"decision step {node_id!r} must return a step name or a list of step names,"
            f" got {type(result).__name__}",
        )
    unknown = sorted(set(chosen) - set(branches))
    if unknown:
        return _problem(
            "DecisionError",
            f"decision step {node_id!r} chose {unknown}, which are not among its branches"
            f" {branches}",
        )
    for name in branches:
        if name not in chosen:
            doc["nodes"][name]["state"] = "skipped"
    return None


def _fan_out(
    doc: dict[str, Any], node_id: str, node: dict[str, Any], result: JsonValue
) -> dict[str, Any] | None:
    """Add one worker node per item a batchable step returned, and wire its aggregator."""
    if not isinstance(result, list):
        return _problem(
            "BatchError",
            f"batchable step {node_id!r} must return a list of worker inputs (cursor ranges),"
            f" got {type(result).__name__}",
        )
    if len(result) > MAX_BATCH_WORKERS:
        return _problem(
            "BatchError",
            f"batchable step {node_id!r} returned {len(result)} ranges; at most"
            f" {MAX_BATCH_WORKERS} fit one workflow: return larger ranges",
        )
    worker, aggregate = node["worker"], node["aggregate"]
    ids = [f"{node_id}.{index}" for index in range(len(result))]
    for worker_id, item in zip(ids, result, strict=True):
        doc["nodes"][worker_id] = {
            "task": worker["task"],
            "version": worker["version"],
            "input": {"value": item},
            "after": [node_id],
            "kind": "task",
            "name": None,
            "state": "pending",
            "by": None,
            "job": f"{doc['id']}.{worker_id}",
        }
    at = doc["order"].index(aggregate)
    doc["order"][at:at] = ids
    aggregator = doc["nodes"][aggregate]
    aggregator["after"] = ids or [node_id]
    aggregator["input"] = {"list": [{"ref": worker_id} for worker_id in ids]}
    return None


def _end(doc: dict[str, Any], status: str, error: dict[str, Any] | None, now: float) -> None:
    doc["status"] = status
    doc["error"] = error
    for node_id in doc["order"]:
        node = doc["nodes"][node_id]
        if node["state"] == "pending":
            node["state"] = "cancelled"


def _touch(doc: dict[str, Any], now: float) -> None:
    """Stamp the change, and when the sweeper should next look (never, once ended)."""
    doc["updated_at"] = now
    if doc["status"] in FINAL:
        doc["due"] = None
        return
    due = now + doc["stall_after"]
    deadline = doc.get("deadline")
    doc["due"] = due if deadline is None else min(due, deadline)


def _step_error(node_id: str, node: dict[str, Any], error: dict[str, Any] | None) -> dict[str, Any]:
    cause = error or {}
    return {
        "type": "StepFailed",
        "message": f"step {node.get('name') or node_id!r} ({node['task']}) failed:"
        f" {cause.get('type', 'Error')}: {cause.get('message', '')}",
        "node": node_id,
        "task": node["task"],
        "job": node["job"],
        "cause": cause,
    }


def _problem(error_type: str, message: str) -> dict[str, Any]:
    return {"type": error_type, "message": message, "retryable": False}
