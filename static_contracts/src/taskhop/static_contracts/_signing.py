"""Signed delivery: HMAC-SHA256 over a timestamp and the exact body bytes.

A producer signs each request with a shared secret; the endpoint verifies before it reads
anything else. The recipe, for any language (docs/protocol.md has a worked example)::

    timestamp = str(unix seconds)
    signature = hex(HMAC_SHA256(secret, timestamp + "." + body))
    headers:    X-Taskhop-Timestamp: <timestamp>
                X-Taskhop-Signature: v1=<signature>

The verifier accepts several secrets (the current one and the next, so a key rotates without
downtime) and refuses timestamps outside a skew window. ``Verifier.authenticate`` stops there;
``Verifier.verify`` also refuses a signature it has already seen inside that window (a replay).
The HTTP endpoint uses ``authenticate`` and recognises a replay by the signed envelope's job id
instead (through the job store, so it holds across instances): a replayed or retried request is
answered as the job it names, never refused and never run again.

A producer signs every request it sends, retries included: a retry carries a fresh timestamp,
so a retry that waited longer than the skew window is still accepted.
"""

from __future__ import annotations

import time
from _thread import allocate_lock  # threading.Lock itself, without importing threading
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
_MAX_TIMESTAMP_DIGITS = 12
"""Unix seconds have 10 digits until the year 2286; 12 leave room and bound ``int()``'s work
(a 5,000-digit header is refused before it is parsed)."""
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_SIGNATURE_HEX = 64  # SHA-256: 32 bytes, 64 hex digits


class SignatureError(TaskhopError):
    """A request's signature is missing, malformed, wrong, expired or replayed.

    ``reason`` says which: one of the ``Reason.SIGNATURE_*`` members.
    """

    def __init__(self, message: str, *, reason: Reason) -> None:
        super().__init__(message)
        self.reason = reason


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``timestamp + "." + body`` under ``secret``."""
    import hashlib  # with hmac, ~2.5 ms: paid by the first signature, not by every import
    import hmac

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
        self._lock = allocate_lock()

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> None:
        """Return if the request is authentic, fresh and new; raise ``SignatureError`` otherwise.

        ``authenticate``, then refuse a signature this verifier already accepted inside the
        skew window (``SIGNATURE_REPLAYED``). The memory of signatures is this process's only:
        an endpoint behind several instances recognises replays by job id instead (see
        ``taskhop.lambda_worker.HttpEndpoint``).
        """
        clock = time.time() if now is None else now
        self._remember(self.authenticate(headers, body, now=clock), clock)

    def authenticate(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> str:
        """Check that the request is signed by an accepted secret and fresh; return the signature.

        Every malformed header is refused with ``SIGNATURE_MALFORMED``, never an exception of
        another kind: the timestamp must be 1 to 12 ASCII digits (``str.isdigit`` alone would
        let superscript digits through to ``int()``), the signature ``v1=`` and 64 hex digits.

        Raises:
            SignatureError: missing, malformed, expired or invalid (``reason`` says which).

        """
        lowered = {str(k).lower(): v for k, v in headers.items()}
        timestamp = lowered.get(TIMESTAMP_HEADER)
        signature = lowered.get(SIGNATURE_HEADER)
        if not timestamp or not signature:
            raise SignatureError("missing signature headers", reason=Reason.SIGNATURE_MISSING)
        if not isinstance(timestamp, str) or not _whole_seconds(timestamp):
            raise SignatureError(
                f"malformed {TIMESTAMP_HEADER} header: expected Unix time in whole seconds"
                f" (1 to {_MAX_TIMESTAMP_DIGITS} ASCII digits)",
                reason=Reason.SIGNATURE_MALFORMED,
            )
        if not isinstance(signature, str) or not _hex_signature(signature):
            raise SignatureError(
                f"malformed {SIGNATURE_HEADER} header: expected {_SCHEME!r} and"
                f" {_SIGNATURE_HEX} hex digits",
                reason=Reason.SIGNATURE_MALFORMED,
            )
        clock = time.time() if now is None else now
        if abs(clock - int(timestamp)) > self.max_skew:
            raise SignatureError(
                f"timestamp is more than {self.max_skew:g}s from the endpoint's clock",
                reason=Reason.SIGNATURE_EXPIRED,
            )
        given = signature[len(_SCHEME) :].lower()
        import hmac  # on first use, as in sign()

        # compare_digest for each key: the time taken says nothing about how much matched.
        valid = [hmac.compare_digest(sign(key, timestamp, body), given) for key in self._keys]
        if not any(valid):
            raise SignatureError("signature does not match", reason=Reason.SIGNATURE_INVALID)
        return given

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


def _whole_seconds(timestamp: str) -> bool:
    """1 to 12 ASCII decimal digits.

    ``"¹²³".isdigit()`` is True and ``"١٢٣".isdecimal()`` is True (Arabic-Indic digits): only
    ASCII digits are whole seconds on the wire.
    """
    return (
        0 < len(timestamp) <= _MAX_TIMESTAMP_DIGITS
        and timestamp.isascii()
        and timestamp.isdecimal()
    )


def _hex_signature(signature: str) -> bool:
    """``v1=`` and 64 hex digits: ``compare_digest`` raises on non-ASCII text, so check first."""
    digits = signature[len(_SCHEME) :]
    return (
        signature.startswith(_SCHEME)
        and len(digits) == _SIGNATURE_HEX
        and _HEX_DIGITS.issuperset(digits)
    )
