"""Signed delivery: HMAC-SHA256 over a timestamp and the exact body bytes.

A producer signs each request with a shared secret; the endpoint verifies before it reads
anything else. The recipe, for any language (docs/protocol.md has a worked example)::

    timestamp = str(unix seconds)
    signature = hex(HMAC_SHA256(secret, timestamp + "." + body))
    headers:    X-Taskhop-Timestamp: <timestamp>
                X-Taskhop-Signature: v1=<signature>

The verifier accepts several secrets (the current one and the next, so a key rotates without
downtime), refuses timestamps outside a skew window, and refuses a signature it has already
seen inside that window (a replay).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from ._errors import TaskhopError
from ._reasons import Reason

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SignatureError",
    "Verifier",
    "sign",
    "signed_headers",
]

TIMESTAMP_HEADER = "x-taskhop-timestamp"
SIGNATURE_HEADER = "x-taskhop-signature"
_SCHEME = "v1="


class SignatureError(TaskhopError):
    """A request's signature is missing, malformed, wrong, expired or replayed.

    ``reason`` says which: one of the ``Reason.SIGNATURE_*`` members.
    """

    def __init__(self, message: str, *, reason: Reason) -> None:
        super().__init__(message)
        self.reason = reason


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``timestamp + "." + body`` under ``secret``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def signed_headers(secret: str | bytes, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The two headers that sign ``body`` now."""
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: _SCHEME + sign(secret, timestamp, body)}


class Verifier:
    """Checks signed requests against the current and next secrets.

    Args:
        secrets: every secret currently accepted (during a rotation: the old and the new).
        max_skew: seconds a timestamp may differ from the verifier's clock.
        replay_cache: how many recent signatures to remember to refuse replays.

    """

    def __init__(
        self, secrets: Sequence[str | bytes], *, max_skew: float = 300, replay_cache: int = 10_000
    ) -> None:
        keys = [s.encode() if isinstance(s, str) else s for s in secrets if s]
        if not keys:
            raise ValueError("secrets: at least one non-empty secret is required")
        self._keys = keys
        self.max_skew = max_skew
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._limit = replay_cache
        self._lock = threading.Lock()

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> None:
        """Return if the request is authentic and fresh; raise ``SignatureError`` otherwise."""
        lowered = {k.lower(): v for k, v in headers.items()}
        timestamp = lowered.get(TIMESTAMP_HEADER)
        signature = lowered.get(SIGNATURE_HEADER)
        if not timestamp or not signature:
            raise SignatureError("missing signature headers", reason=Reason.SIGNATURE_MISSING)
        if not signature.startswith(_SCHEME) or not timestamp.isdigit():
            raise SignatureError("malformed signature headers", reason=Reason.SIGNATURE_MALFORMED)
        clock = time.time() if now is None else now
        if abs(clock - int(timestamp)) > self.max_skew:
            raise SignatureError(
                f"timestamp is more than {self.max_skew:g}s from the endpoint's clock",
                reason=Reason.SIGNATURE_EXPIRED,
            )
        given = signature[len(_SCHEME) :]
        # compare_digest for each key: the time taken says nothing about how much matched.
        valid = [hmac.compare_digest(sign(key, timestamp, body), given) for key in self._keys]
        if not any(valid):
            raise SignatureError("signature does not match", reason=Reason.SIGNATURE_INVALID)
        self._remember(given, clock)

    def _remember(self, signature: str, clock: float) -> None:
        with self._lock:
            if signature in self._seen:
                raise SignatureError("signature was already used", reason=Reason.SIGNATURE_REPLAYED)
            self._seen[signature] = clock
            horizon = clock - 2 * self.max_skew  # older signatures fail the skew check anyway
            while self._seen and (
                len(self._seen) > self._limit or next(iter(self._seen.values())) < horizon
            ):
                self._seen.popitem(last=False)
