"""The guardrails every taskhop deployment keeps, checked where the parameters are chosen.

Both deployment paths call ``check_parameters``: ``taskhop infra render`` before it prints
the SAM parameters, and the CDK construct when it is built. The figures:

- the queue's visibility timeout is at least 6x the function timeout (AWS's advice for
  SQS-triggered functions, so a batch still running is not delivered again);
- ``maxReceiveCount`` is at least 5 (AWS's advice: throttled batches count as receives, and
  must not reach the DLQ without a real failure);
- the function timeout is at most Lambda's 900 s and the visibility timeout at most SQS's
  12 hours (43,200 s), so no parameter is silently clamped at deploy time.

``taskhop infra render`` also refuses a contract whose timeout plus the runtime's 3 s safety
margin does not fit in 900 s: no function timeout could honour it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskhop.static_contracts import TaskhopError
from taskhop.static_contracts.limits import LAMBDA_MAX_TIMEOUT, SQS_MAX_VISIBILITY

__all__ = [
    "DEFAULT_RECEIVES",
    "MIN_RECEIVES",
    "VISIBILITY_FACTOR",
    "GuardrailError",
    "check_parameters",
]

MIN_RECEIVES = 5
"""The smallest ``maxReceiveCount`` a worker queue may have."""
DEFAULT_RECEIVES = 20
"""The worker queue's ``maxReceiveCount`` unless one is given.

The runtime dead-letters a job itself once the job store's count of attempts runs out, so the
queue's redrive policy is only a backstop (for a runtime that cannot reach its store at all).
It must not fire first: receives that run nothing still count there (a busy lease, a
deferral, a batch cut short, and on FIFO every retry of a message ahead in the group).
"""
VISIBILITY_FACTOR = 6
"""The queue's visibility timeout over the function timeout, at least."""


class GuardrailError(TaskhopError, ValueError):
    """Deployment parameters that break a guardrail; the message says which and why."""


def check_parameters(parameters: Mapping[str, Any]) -> None:
    """Raise ``GuardrailError`` unless the parameters keep every guardrail.

    Keys are the SAM template's parameter names (``FunctionTimeout``, ``VisibilityTimeout``,
    ``MaxReceiveCount``); a missing one takes the template's default.
    """
    timeout = int(parameters.get("FunctionTimeout", 30))
    visibility = int(parameters.get("VisibilityTimeout", VISIBILITY_FACTOR * 30))
    receives = int(parameters.get("MaxReceiveCount", DEFAULT_RECEIVES))
    if timeout > LAMBDA_MAX_TIMEOUT:
        raise GuardrailError(
            f"FunctionTimeout {timeout}s is over Lambda's {LAMBDA_MAX_TIMEOUT}s maximum"
        )
    if visibility > SQS_MAX_VISIBILITY:
        raise GuardrailError(
            f"VisibilityTimeout {visibility}s is over SQS's {SQS_MAX_VISIBILITY}s (12 h) maximum"
        )
    if visibility < VISIBILITY_FACTOR * timeout:
        raise GuardrailError(
            f"VisibilityTimeout {visibility}s is under {VISIBILITY_FACTOR}x FunctionTimeout"
            f" ({VISIBILITY_FACTOR * timeout}s): a batch still running would be delivered again"
        )
    if receives < MIN_RECEIVES:
        raise GuardrailError(
            f"MaxReceiveCount {receives} is under {MIN_RECEIVES}: throttled batches would reach"
            " the DLQ without a real failure"
        )
