"""Deployment parameters that follow from an app, and the guardrails they must keep.

``taskhop infra render --app module:app`` prints them for the SAM template
(``--format sam``: parameter overrides) or the CDK construct (``--format cdk-json``:
context); ``--format template`` writes the SAM template itself (``taskhop.infra``).
The numbers come from the contracts:

- the function timeout: the largest contract timeout plus the runtime's 3 s margin (30 s
  when no contract sets one);
- the queue visibility timeout: 6x the function timeout (AWS's advice for SQS-triggered
  functions, so a slow batch is not delivered twice while it runs);
- ``maxReceiveCount``: the most retry attempts any task allows, and at least 5;
- the contracts' ``queue`` names (one worker serves one queue: deploy one stack per name),
  and an EventBridge rule per schedule (``sam_events``, to merge into the function's
  ``Events``; the CDK construct takes ``schedules=``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from taskhop.infra import MIN_RECEIVES, VISIBILITY_FACTOR, check_parameters
from taskhop.sdk import App
from taskhop.static_contracts.limits import (
    LAMBDA_MAX_TIMEOUT,
    LAMBDA_SAFETY_MARGIN,
    SQS_MAX_VISIBILITY,
)

__all__ = ["render", "sam_schedule_events"]


def render(app: App) -> dict[str, Any]:
    """The parameters and resources an app needs, checked against the guardrails."""
    contracts = [bound.contract for bound in app]
    timeouts = [c.timeout for c in contracts if c.timeout is not None]
    function_timeout = (
        min(LAMBDA_MAX_TIMEOUT, math.ceil(max(timeouts) + LAMBDA_SAFETY_MARGIN)) if timeouts else 30
    )
    receives = max([c.retry.attempts for c in contracts] + [MIN_RECEIVES])
    parameters = {
        "FunctionTimeout": function_timeout,
        "VisibilityTimeout": min(SQS_MAX_VISIBILITY, VISIBILITY_FACTOR * function_timeout),
        "MaxReceiveCount": receives,
    }
    check_parameters(parameters)
    queues = sorted({c.queue or "default" for c in contracts})
    schedules = [
        {"name": s.name, "expression": s.expression, "task": s.contract.name}
        for s in app.schedules.values()
    ]
    return {
        "parameters": parameters,
        "queues": queues,
        "schedules": schedules,
        "sam_events": sam_schedule_events(schedules),
    }


def sam_schedule_events(schedules: list[dict[str, str]]) -> dict[str, Any]:
    """SAM ``Events`` for the worker function, one EventBridge rule per schedule.

    The rule's input names the schedule, which is how the Lambda runtime finds it.
    """
    events: dict[str, Any] = {}
    for schedule in schedules:
        key = "Schedule" + "".join(part.capitalize() for part in _words(schedule["name"]))
        events[key] = {
            "Type": "Schedule",
            "Properties": {
                "Schedule": schedule["expression"],
                "Name": schedule["name"],
                "Input": json.dumps({"taskhop_schedule": schedule["name"]}),
            },
        }
    return events


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^A-Za-z0-9]+", name) if w]
