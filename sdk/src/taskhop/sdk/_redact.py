"""Naming sensitive values in messages and logs without writing them out.

Idempotency keys are often built from what identifies a customer (``"welcome:" + email``), and
taskhop's own error messages and log lines must never carry them. ``key_digest`` names a key by
a short hash instead: the same key always gives the same digest, so an operator can still match
a log line against the key they have (``key_digest("welcome:ann@example.com")``) without the
log holding it.
"""

from __future__ import annotations

import hashlib

__all__ = ["key_digest"]

_DIGEST_HEX = 16
"""Hex characters kept: 64 bits, enough that two keys in one app do not share a digest."""


def key_digest(key: str) -> str:
    """A short, stable stand-in for an idempotency key in messages and logs.

    ``"sha256:"`` and the first 16 hex characters of the SHA-256 of the key's UTF-8 bytes. Not a
    secret-keeping hash (a guessable key can be confirmed by hashing guesses): it keeps keys out
    of logs, not away from someone who already suspects one.
    """
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest[:_DIGEST_HEX]}"
