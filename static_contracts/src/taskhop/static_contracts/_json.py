"""Turning payloads into JSON values without any third-party library.

A producer that ships only ``static_contracts`` still sends TypedDicts, dataclasses and attrs
instances; this walks them into plain JSON data and names the exact path of anything that
JSON cannot carry (bytes, sets, NaN, objects), so nothing is silently stringified.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import Enum
from typing import Any

from ._datetimes import date, datetime, time
from ._errors import PayloadError

__all__ = ["JsonValue", "dumps", "find_non_finite", "to_json_value"]

JsonValue = dict[str, Any] | list[Any] | str | int | float | bool | None
"""A value JSON can carry: dicts with str keys, lists, strings, numbers, booleans, null."""


def to_json_value(obj: object, path: str = "input") -> JsonValue:
    """Return ``obj`` as plain JSON data; raise ``PayloadError`` naming the first bad path."""
    if obj is None or isinstance(obj, str | bool | int):
        return obj
    if isinstance(obj, float):
        if obj - obj == 0.0:  # false only for nan and +-inf
            return obj
        raise PayloadError(f"{obj} is not a JSON number", path=path)
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        mapping: dict[Any, Any] = obj  # pyright: ignore[reportUnknownVariableType]
        for key, value in mapping.items():
            if not isinstance(key, str):
                kind = type(key).__name__
                raise PayloadError(f"JSON object keys must be str, got {kind} {key!r}", path=path)
            out[key] = to_json_value(value, f"{path}.{key}")
        return out
    if isinstance(obj, list | tuple):
        items: list[Any] | tuple[Any, ...] = obj  # pyright: ignore[reportUnknownVariableType]
        return [to_json_value(v, f"{path}[{i}]") for i, v in enumerate(items)]
    if hasattr(type(obj), "__dataclass_fields__") and not isinstance(obj, type):
        import dataclasses  # loaded already: obj is a dataclass instance (see _record)

        instance: Any = obj
        return {
            f.name: to_json_value(getattr(obj, f.name), f"{path}.{f.name}")
            for f in dataclasses.fields(instance)
        }
    attrs_fields = getattr(type(obj), "__attrs_attrs__", None)
    if attrs_fields is not None:
        return {
            a.name: to_json_value(getattr(obj, a.name), f"{path}.{a.name}") for a in attrs_fields
        }
    if isinstance(obj, Enum):
        return to_json_value(obj.value, path)
    if isinstance(obj, datetime | date | time):
        return obj.isoformat()
    uuid = sys.modules.get("uuid")  # no UUID can exist unless its module was imported
    if uuid is not None and isinstance(obj, uuid.UUID):
        return str(obj)
    raise PayloadError(f"{type(obj).__name__} is not JSON-serializable", path=path)


# Built once: json.dumps with any option set builds a new encoder on every call.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_COMPACT_ASCII = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _compact_encoder() -> Callable[[object], str]:
    """``_COMPACT.encode``, with its C encoder made once rather than on every call (~0.8 us).

    ``JSONEncoder.encode`` makes one per call because each gets a fresh dict of the containers
    it is inside, to refuse a circular structure; this one has none, so a circular structure
    ends in ``RecursionError`` instead, which ``dumps`` turns into the same ``PayloadError``.
    """
    make: Any = vars(json.encoder).get("c_make_encoder")  # typeshed does not declare it
    if make is None:  # no C accelerator (not CPython)
        return _COMPACT.encode
    # The arguments JSONEncoder.iterencode passes for _COMPACT: markers, default, string
    # encoder, indent, separators, sort_keys, skipkeys, allow_nan.
    chunks: Callable[[object, int], list[str]] = make(
        None, _COMPACT.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
    return lambda value: "".join(chunks(value, 0))


_encode_compact = _compact_encoder()


def dumps(value: JsonValue, *, path: str = "value") -> bytes:
    """Compact UTF-8 JSON, refusing NaN and infinities (they are not JSON).

    Raises:
        PayloadError: ``value`` holds NaN, an infinity or something JSON cannot carry; its
            ``path`` names the first such place, from ``path`` (the name of ``value``).

    """
    try:
        text = _encode_compact(value)
    except (ValueError, TypeError, RecursionError) as exc:
        raise _payload_error(value, path, exc) from None
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800", legal as a JSON escape) has no UTF-8 form: write the
        # escapes again, as received, so whatever decode accepted can be encoded.
        return _COMPACT_ASCII.encode(value).encode()


def _payload_error(value: object, path: str, exc: Exception) -> PayloadError:
    """The ``PayloadError`` for a value the encoder refused, with the path of the culprit.

    Only called once encoding has failed, so valid payloads never pay for the walk.
    """
    try:
        to_json_value(value, path)
    except PayloadError as found:
        return found
    except RecursionError:  # a container that holds itself, or nesting past the stack
        return PayloadError("nested too deeply, or holds itself (a circular reference)", path=path)
    return PayloadError(str(exc), path=path)


def find_non_finite(value: object, path: str) -> tuple[str, float] | None:
    """The path and value of the first NaN or infinity inside parsed JSON ``value``, or None.

    For data from a JSON parser that accepts them (``json.loads`` does, and so does the one
    Lambda uses for a direct invocation's event): dicts, lists and scalars only.
    """
    if isinstance(value, float):
        return None if value - value == 0.0 else (path, value)  # nan, inf - inf: nan
    if isinstance(value, dict):
        mapping: dict[Any, Any] = value  # pyright: ignore[reportUnknownVariableType]
        for key, item in mapping.items():
            if not isinstance(item, str | int):  # the usual leaves: nothing to look into
                found = find_non_finite(item, f"{path}.{key}" if path else str(key))
                if found is not None:
                    return found
    elif isinstance(value, list):
        items: list[Any] = value  # pyright: ignore[reportUnknownVariableType]
        for i, item in enumerate(items):
            if not isinstance(item, str | int):
                found = find_non_finite(item, f"{path}[{i}]")
                if found is not None:
                    return found
    return None
