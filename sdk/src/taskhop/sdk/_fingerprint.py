"""The fingerprint of a job's input, kept with its idempotency key.

A key names one request, as payment APIs use them (Stripe compares a reused key's parameters
with the first request's and answers a mismatch with an error). When a job claims a key, the
worker stores this digest with the claim; a later job under the same key whose digest differs
is refused (``IdempotencyKeyMismatch``) instead of being answered with the first job's result.
A task opts out with ``ImplementOptions(idempotency="key")``.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from ._converter import unstructure

if TYPE_CHECKING:
    from cattrs import Converter

__all__ = ["input_fingerprint"]


def input_fingerprint(task: str, data: Any, *, converter: Converter, input_type: Any) -> str:
    r"""The SHA-256 of a job's task name and validated input, as ``"sha256:<64 hex digits>"``.

    What is hashed, exactly: the bytes of the JSON text of ``{"input": I, "task": T}``, where
    ``T`` is the task name and ``I`` the input as the handler gets it (migrated to the version
    the worker implements, validated and structured into ``input_type``), unstructured again
    by the app's converter; object keys sorted at every level, ``,`` and ``:`` as separators
    with no whitespace, every non-ASCII character written as a ``\u`` escape. So field order,
    whitespace and fields left to their defaults do not change it; an input offloaded to a
    payload store (``input_ref``) is hashed as loaded, never by its reference; and one input
    sent to two tasks under one key gives two fingerprints. A change to the input type (a new
    field with a default) changes the fingerprint of the same request, too.

    Raises:
        PayloadError: the converter cannot turn the input back into JSON data.

    """
    value = unstructure(converter, data, input_type, path="input")
    text = json.dumps(
        {"input": value, "task": task},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,  # a lone surrogate ("\ud800") has no UTF-8 form; its escape has
        allow_nan=False,
    )
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()
