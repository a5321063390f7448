"""Schedules: cron-style jobs an EventBridge rule triggers (``app.schedule(...)``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from taskhop.static_contracts import ContractError, JsonValue, StaticContract

__all__ = ["Schedule"]

_EXPRESSION = re.compile(r"^(rate\(\s*\d+\s+(minute|minutes|hour|hours|day|days)\s*\)|cron\(.+\))$")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Schedule:
    """One scheduled job: when, which task, and its input.

    ``expression`` is an EventBridge ``rate(...)`` or ``cron(...)`` expression; ``name`` is
    the EventBridge rule that triggers it.
    """

    name: str
    expression: str
    contract: StaticContract[Any, Any]
    input: JsonValue

    def __post_init__(self) -> None:
        if not _EXPRESSION.match(self.expression.strip()):
            raise ContractError(
                f"schedule {self.name!r}: {self.expression!r} is not an EventBridge expression;"
                " write e.g. 'rate(5 minutes)' or 'cron(0 12 * * ? *)'"
            )
        if not _NAME.match(self.name):
            raise ContractError(
                f"schedule name {self.name!r}: 1-64 letters, digits, '.', '_' or '-'"
                " (it is the EventBridge rule name)"
            )
