"""Reading an HTTP ``Retry-After`` header (seconds or a date), for the httpx adapters."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

__all__ = ["retry_after"]


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks us to wait, or None when it says nothing usable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
