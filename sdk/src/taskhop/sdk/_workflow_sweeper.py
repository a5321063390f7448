"""The sweeper as a scheduled task: ``schedule_sweeper(app)`` on the worker's app.

A workflow advances when its steps end; the sweeper is the backstop for one that stopped (a
message gone for good, a deadline with no step left to notice it). It is an ordinary task on
an EventBridge schedule, so the deployed worker runs it with nothing else to operate:
``taskhop infra render`` emits the rule like any ``app.schedule``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from taskhop.static_contracts import static_contract

from ._workflow_engine import engine_of

if TYPE_CHECKING:
    from ._app import App
    from ._context import JobContext
    from ._schedule import Schedule

__all__ = ["SWEEP_TASK", "schedule_sweeper"]

SWEEP_TASK = "taskhop-workflows-sweep"

sweep_contract = static_contract(
    SWEEP_TASK, input=int, output=dict[str, Any], retry=1, timeout="30s"
)
"""Input: how many due workflows one run looks at. Output: the ``SweepReport`` as JSON.

Its 30 s timeout counts in ``taskhop infra render``'s function timeout like any task's: a
sweep of 100 workflows is a few hundred requests, well inside it."""


def schedule_sweeper(app: App, expression: str = "rate(1 minute)", *, limit: int = 100) -> Schedule:
    """Implement the sweep task on ``app`` and run it on ``expression`` (EventBridge)."""

    def sweep(batch: int, ctx: JobContext) -> dict[str, Any]:
        return asdict(engine_of(app).sweep(limit=batch))

    app.implement(sweep_contract, sweep)
    return app.schedule(expression, sweep_contract, limit, name=SWEEP_TASK)
