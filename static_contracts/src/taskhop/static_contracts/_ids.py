"""Time-ordered job ids (UUID version 7, RFC 9562), made with the standard library.

Python 3.11 has no ``uuid.uuid7``. Ids sort by creation time, which keeps DynamoDB and log
scans readable; a 12-bit counter keeps ids from one process ordered within a millisecond
(RFC 9562 section 6.2, method 1).
"""

from __future__ import annotations

import os
import time
from _thread import allocate_lock  # threading.Lock itself, without importing threading

__all__ = ["new_job_id"]

_lock = allocate_lock()
_last_ms = 0
_counter = 0


def new_job_id() -> str:
    """Return a new UUIDv7 as its canonical 36-character string."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms, _counter = ms, int.from_bytes(os.urandom(2)) & 0x7FF
        else:  # same millisecond (or the clock stepped back): count on from the last id
            _counter += 1
            if _counter > 0xFFF:
                _last_ms, _counter = _last_ms + 1, 0
            ms = _last_ms
        counter = _counter
    rand_b = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    # Formatted here, not with uuid.UUID: importing uuid (and the platform module it pulls in)
    # is ~5 ms of a producer's cold start, and the string is all we need.
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
