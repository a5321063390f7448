"""Deployment parameters that follow from an app, and the guardrails they must keep.

``taskhop infra render --app module:app`` prints them for ``infra/sam/template.yaml``
(``--format sam``: parameter overrides) or the CDK construct (``--format cdk-json``:
context). The numbers come from the contracts:

- the function timeout: the largest contract timeout plus the runtime's 3 s margin (30 s
  when no contract sets one);
- the queue visibility timeout: 6x the function timeout (AWS's advice for SQS-triggered
  functions, so a slow batch is not delivered twice while it runs);
- ``maxReceiveCount``: the most retry attempts any task allows, and at least 5;
- one queue per contract ``queue`` name, and an EventBridge rule per schedule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sdk import App

__all__ = ["GuardrailError", "check_parameters", "render"]

SAFETY_MARGIN = 3
MIN_RECEIVES = 5


class GuardrailError(ValueError):
    """Deployment parameters that break a guardrail; the message says which and why."""


def render(app: App) -> dict[str, Any]:
    """The parameters and resources an app needs, checked against the guardrails."""
    contracts = [bound.contract for bound in app]
    timeouts = [c.timeout for c in contracts if c.timeout is not None]
    function_timeout = min(900, math.ceil(max(timeouts) + SAFETY_MARGIN)) if timeouts else 30
    receives = max([c.retry.attempts for c in contracts] + [MIN_RECEIVES])
    parameters = {
        "FunctionTimeout": function_timeout,
        "VisibilityTimeout": min(43_200, 6 * function_timeout),
        "MaxReceiveCount": receives,
    }
    check_parameters(parameters)
    queues = sorted({c.queue or "default" for c in contracts})
    schedules = [
        {"name": s.name, "expression": s.expression, "task": s.contract.name}
        for s in app.schedules.values()
    ]
    return {"parameters": parameters, "queues": queues, "schedules": schedules}


def check_parameters(parameters: Mapping[str, Any]) -> None:
    """Raise ``GuardrailError`` unless the parameters keep every guardrail."""
    timeout = int(parameters.get("FunctionTimeout", 30))
    visibility = int(parameters.get("VisibilityTimeout", 180))
    receives = int(parameters.get("MaxReceiveCount", MIN_RECEIVES))
    if visibility < 6 * timeout:
        raise GuardrailError(
            f"VisibilityTimeout {visibility}s is under 6x FunctionTimeout ({6 * timeout}s):"
            " a batch still running would be delivered again"
        )
    if receives < MIN_RECEIVES:
        raise GuardrailError(
            f"MaxReceiveCount {receives} is under {MIN_RECEIVES}: throttled batches would reach"
            " the DLQ without a real failure"
        )
