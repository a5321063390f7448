"""Deployment parameters that follow from an app, and the guardrails they must keep.

``taskhop infra render --app module:app`` prints them for the SAM template
(``--format sam``: parameter overrides) or the CDK construct (``--format cdk-json``:
context); ``--format template`` writes the SAM template itself (``taskhop.infra``).
The numbers come from the contracts:

- the function timeout: the largest contract timeout plus the runtime's 3 s margin (30 s
  when no contract sets one); a contract whose timeout plus that margin exceeds Lambda's
  900 s is refused (``GuardrailError``), never clamped to 900 s;
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

from taskhop.infra import MIN_RECEIVES, VISIBILITY_FACTOR, GuardrailError, check_parameters
from taskhop.sdk import App
from taskhop.static_contracts.limits import LAMBDA_MAX_TIMEOUT, LAMBDA_SAFETY_MARGIN

__all__ = ["render", "sam_schedule_events"]


def render(app: App) -> dict[str, Any]:
    """The parameters and resources an app needs, checked against the guardrails."""
    contracts = [bound.contract for bound in app]
    timed = [c for c in contracts if c.timeout is not None]
    function_timeout = 30
    if timed:
        slowest = max(timed, key=lambda c: c.timeout or 0.0)
        function_timeout = math.ceil((slowest.timeout or 0.0) + LAMBDA_SAFETY_MARGIN)
        if function_timeout > LAMBDA_MAX_TIMEOUT:
            # Lambda stops an invocation at 900 s; the runtime stops a handler 3 s before the
            # invocation's deadline, so 897 s is the longest timeout a contract can keep.
            raise GuardrailError(
                f"task {slowest.name!r}: timeout {slowest.timeout:g}s plus the"
                f" {LAMBDA_SAFETY_MARGIN:g}s safety margin exceeds Lambda's"
                f" {LAMBDA_MAX_TIMEOUT}s maximum: give it at most"
                f" {LAMBDA_MAX_TIMEOUT - LAMBDA_SAFETY_MARGIN:g}s"
            )
    receives = max([c.retry.attempts for c in contracts] + [MIN_RECEIVES])
    parameters = {
        "FunctionTimeout": function_timeout,
        "VisibilityTimeout": VISIBILITY_FACTOR * function_timeout,
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
