"""The ``datetime`` classes, without running ``datetime.py`` on CPython 3.11.

There, ``import datetime`` first executes the module's pure-Python implementation (~0.8 ms
of a producer's cold start) and then replaces every class with the C one from ``_datetime``.
These are those very classes (``_datetime.datetime is datetime.datetime``), taken from
``_datetime`` directly. Python 3.12 moved the pure-Python code out (to ``_pydatetime``), so
``import datetime`` costs this little there; an interpreter without ``_datetime`` imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["UTC", "date", "datetime", "time", "timedelta"]

if TYPE_CHECKING:
    from datetime import UTC, date, datetime, time, timedelta
else:
    try:
        from _datetime import UTC, date, datetime, time, timedelta
    except ImportError:  # not CPython
        from datetime import UTC, date, datetime, time, timedelta
