"""Deploy taskhop workers from an installed package: the SAM template, guardrails, CDK.

- ``sam_template()`` is the SAM template's text (``taskhop infra render --format template``
  writes it), the same file the tests lint with cfn-lint and transform with the SAM
  translator.
- ``check_parameters`` refuses deployment parameters that would lose or re-run work; the SAM
  render and the CDK construct both call it.
- ``taskhop.infra.cdk.TaskhopWorker`` is the CDK construct (``pip install taskhop-infra[cdk]``);
  importing this package does not import the CDK.
"""

from __future__ import annotations

from importlib.resources import files

from ._guardrails import (
    DEFAULT_RECEIVES,
    MIN_RECEIVES,
    VISIBILITY_FACTOR,
    GuardrailError,
    check_parameters,
)

__all__ = [
    "DEFAULT_RECEIVES",
    "GuardrailError",
    "MIN_RECEIVES",
    "VISIBILITY_FACTOR",
    "check_parameters",
    "sam_template",
]


def sam_template() -> str:
    """The SAM template for one worker (queue, DLQ, function, job table, alarms), as text."""
    return files(__name__).joinpath("template.yaml").read_text(encoding="utf-8")
