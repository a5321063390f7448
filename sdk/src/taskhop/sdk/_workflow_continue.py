"""What the worker does with a job's continuation: the seam between jobs and workflows.

An envelope's ``continuation`` says what waits for the job's end: ``{"workflow", "node"}``
for a workflow's step (``_workflow_engine``), ``{"parent", ...}`` for a child a handler
started with ``ctx.invoke`` / ``ctx.dispatch`` (``_invoke``). The worker calls
``workflow_ended`` before a step begins and ``continue_after`` once its end is recorded;
both import the engines lazily, so a worker that never sees a continuation never loads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskhop.static_contracts import Envelope, JsonValue

if TYPE_CHECKING:
    from ._app import App
    from ._errors import ErrorInfo

__all__ = ["continue_after", "workflow_ended"]


def workflow_ended(app: App, envelope: Envelope) -> ErrorInfo | None:
    """Why a workflow step must not run (its workflow ended), or None: run it."""
    from ._workflow_engine import engine_of, step_of

    step = step_of(envelope)
    return None if step is None else engine_of(app).ended(step[0])


def continue_after(
    app: App, envelope: Envelope, state: str, result: JsonValue, error: ErrorInfo | None
) -> None:
    """Hand a job's recorded end (``succeeded``, ``failed``, ``cancelled``) to what waits."""
    from ._invoke import parent_of, resume_parent
    from ._workflow_engine import engine_of, step_of

    step = step_of(envelope)
    if step is not None:
        engine_of(app).step_ended(step[0], step[1], state=state, result=result, error=error)
    parent = parent_of(envelope)
    if parent is not None:
        resume_parent(app, parent)
