"""Turning payloads into JSON values without any third-party library.

A producer that ships only ``static_contracts`` still sends TypedDicts, dataclasses and attrs
instances; this walks them into plain JSON data and names the exact path of anything that
JSON cannot carry (bytes, sets, NaN, objects), so nothing is silently stringified.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from datetime import date, datetime, time
from enum import Enum
from typing import Any

from ._errors import PayloadError

__all__ = ["JsonValue", "dumps", "to_json_value"]

JsonValue = dict[str, Any] | list[Any] | str | int | float | bool | None
"""A value JSON can carry: dicts with str keys, lists, strings, numbers, booleans, null."""


def to_json_value(obj: object, path: str = "input") -> JsonValue:
    """Return ``obj`` as plain JSON data; raise ``PayloadError`` naming the first bad path."""
    if obj is None or isinstance(obj, str | bool | int):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
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
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_json_value(getattr(obj, f.name), f"{path}.{f.name}")
            for f in dataclasses.fields(obj)
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


def dumps(value: JsonValue) -> bytes:
    """Compact UTF-8 JSON, refusing NaN and infinities (they are not JSON)."""
    text = _COMPACT.encode(value)
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800", legal as a JSON escape) has no UTF-8 form: write the
        # escapes again, as received, so whatever decode accepted can be encoded.
        return _COMPACT_ASCII.encode(value).encode()
