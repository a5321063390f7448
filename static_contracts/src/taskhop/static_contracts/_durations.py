"""Durations as people write them in configuration: ``"30s"``, ``"5m"``, ``"1h30m"``, ``250``."""

from __future__ import annotations

import re

from ._datetimes import timedelta

__all__ = ["Duration", "parse_duration"]

Duration = float | int | str | timedelta
"""Seconds as a number, a ``timedelta``, or a string such as ``"500ms"``, ``"30s"``, ``"1h30m"``."""

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = r"(\d+(?:\.\d+)?)(ms|s|m|h|d)"  # compiled by the first string parsed (re caches it)


def parse_duration(value: Duration, *, field: str = "duration") -> float:
    """Return ``value`` in seconds; raise ``ValueError`` naming ``field`` when it is not one."""
    if isinstance(value, bool):
        raise ValueError(f"{field}: expected a duration, got a bool")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = re.findall(_PART, text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(
                f"{field}: {value!r} is not a duration; write e.g. '500ms', '30s', '5m', '1h30m'"
            )
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError(f"{field}: expected a duration, got {type(value).__name__}")
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise ValueError(f"{field}: must be a non-negative duration, got {value!r}")
    return seconds
