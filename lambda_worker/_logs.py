"""Structured output for CloudWatch: one JSON line per job event, and EMF metric lines.

Lambda sends stdout to CloudWatch Logs; a line that is a JSON object with an ``_aws`` key in
CloudWatch Embedded Metric Format becomes metrics with no API call. Job lines carry ids,
task, attempt, outcome and duration, never payload bodies or secrets.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any, TextIO

from sdk import Outcome

__all__ = ["emit_job", "emit_metrics"]

NAMESPACE = "taskhop"
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)
"""One encoder for every line: ``json.dumps`` with options builds a new one per call."""


def emit_job(
    outcome: Outcome, *, source: str, message_id: str | None = None, out: TextIO | None = None
) -> None:
    """Write the one log line of a processed message."""
    envelope = outcome.envelope
    line: dict[str, Any] = {
        "level": "ERROR" if outcome.kind in ("failed", "poison") else "INFO",
        "event": "job",
        "source": source,
        "outcome": outcome.kind.value,
        "job_id": None if envelope is None else envelope.id,
        "task": None if envelope is None else envelope.task,
        "attempt": outcome.attempt or None,
        "duration_ms": outcome.duration_ms,
    }
    if message_id is not None:
        line["message_id"] = message_id
    if outcome.reason:
        line["reason"] = outcome.reason
    if outcome.error is not None:  # type and message only: messages are ours, bodies are not
        line["error_type"] = outcome.error.type
        line["error"] = outcome.error.message[:500]
        if outcome.error.fields:
            line["fields"] = [f.path for f in outcome.error.fields]
    if outcome.retry_after is not None:
        line["retry_after_s"] = round(outcome.retry_after, 3)
    _write(line, out)


def emit_metrics(outcomes: Iterable[Outcome], *, out: TextIO | None = None) -> None:
    """Write one EMF line per task: job counts by outcome and the handler duration."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    durations: dict[str, list[float]] = defaultdict(list)
    for outcome in outcomes:
        task = outcome.envelope.task if outcome.envelope is not None else "(undecodable)"
        counts[task][outcome.kind.value] += 1
        durations[task].append(outcome.duration_ms)
    for task, by_outcome in counts.items():
        metrics = [{"Name": f"jobs_{kind}", "Unit": "Count"} for kind in sorted(by_outcome)]
        metrics.append({"Name": "duration_ms", "Unit": "Milliseconds"})
        line: dict[str, Any] = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {"Namespace": NAMESPACE, "Dimensions": [["task"]], "Metrics": metrics}
                ],
            },
            "task": task,
            "duration_ms": durations[task],
        }
        line.update({f"jobs_{kind}": n for kind, n in by_outcome.items()})
        _write(line, out)


def _write(line: dict[str, Any], out: TextIO | None) -> None:
    stream = out or sys.stdout
    stream.write(_ENCODER.encode(line) + "\n")
    stream.flush()
