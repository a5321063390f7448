"""The workflow store seam: one document per workflow, written by optimistic concurrency.

A workflow's state is one JSON document (``taskhop.sdk._workflow_state``): its graph, each
step's state and the workflow's end. Every change is a read, a pure transition, and a write
conditional on the revision that was read, so two steps finishing at once cannot both win:
the loser reads again and applies its change to the winner's document. That one conditional
write is what records a chord member at most once and dispatches a callback exactly once
(the transition that marks it dispatched succeeds for one writer only). Results stay in the
steps' job records; the document holds states, so it stays small.

A store that keeps workflows implements ``WorkflowStore`` next to ``JobStore``:
``taskhop.sdk.memory.MemoryStore`` under its lock, ``taskhop.backends.dynamodb.DynamoStore``
as one item per workflow with a sparse index of the open ones (for the sweeper).
``tests/test_workflow_store.py`` runs the same contract against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["StoredWorkflow", "WorkflowStore"]


@dataclass(frozen=True, slots=True)
class StoredWorkflow:
    """A workflow document as read, with the revision a conditional write must name."""

    doc: dict[str, Any]
    rev: int


@runtime_checkable
class WorkflowStore(Protocol):
    """Workflow documents, each written only over the revision its writer read."""

    def create_workflow(self, doc: dict[str, Any]) -> StoredWorkflow | None:
        """Store a new document at revision 1; the existing one if ``doc["id"]`` is taken.

        None means this call created it. ``doc["due"]`` (when the sweeper should look at it)
        and ``doc["status"]`` are read by the store to keep its index of open workflows.
        """
        ...

    def load_workflow(self, workflow_id: str) -> StoredWorkflow | None:
        """The document, read consistently, or None if there is none."""
        ...

    def save_workflow(self, doc: dict[str, Any], rev: int) -> bool:
        """Write ``doc`` as revision ``rev + 1`` if the stored one is still ``rev``.

        False if another writer got there first (read again and redo the change). A document
        whose ``status`` is final leaves the index of open workflows.
        """
        ...

    def due_workflows(self, now: float, limit: int) -> Sequence[str]:
        """Ids of open workflows whose ``due`` time is at or before ``now`` (at most ``limit``)."""
        ...
