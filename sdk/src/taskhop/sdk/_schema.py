"""JSON Schema (draft 2020-12) for contract types, so other languages can build valid inputs.

Covers what contracts use: scalars, ``list``/``tuple``/``set``, ``dict[str, X]``, unions and
``Optional``, ``Literal``, enums, datetimes and UUIDs, and TypedDicts, dataclasses and attrs
classes (as ``$defs``, referenced by name; recursion is fine). Unknown keys are refused by
the worker's converter, so objects are ``additionalProperties: false``.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from datetime import date, datetime
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints
from uuid import UUID

import attrs

__all__ = ["json_schema"]

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    datetime: {"type": "string", "format": "date-time"},
    date: {"type": "string", "format": "date"},
    UUID: {"type": "string", "format": "uuid"},
}


def json_schema(tp: Any, *, title: str | None = None) -> dict[str, Any]:
    """A standalone schema for ``tp``, with its classes under ``$defs``."""
    defs: dict[str, Any] = {}
    schema = _schema(tp, defs)
    out: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    if title:
        out["title"] = title
    out.update(schema)
    if defs:
        out["$defs"] = defs
    return out


def _schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if tp is Any or tp is object:
        return {}
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema(a, defs) for a in args]}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (list, set, frozenset, typing.Sequence, typing.AbstractSet) or tp in (list, set):
        items = _schema(args[0], defs) if args else {}
        return {"type": "array", "items": items} | (
            {"uniqueItems": True} if origin in (set, frozenset) else {}
        )
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema(args[0], defs)}
        return {"type": "array", "prefixItems": [_schema(a, defs) for a in args], "items": False}
    if origin in (dict, typing.Mapping) or tp is dict:
        values = _schema(args[1], defs) if args else {}
        return {"type": "object", "additionalProperties": values}
    if not inspect.isclass(tp):
        raise TypeError(f"no JSON Schema for type {tp!r}")
    if issubclass(tp, enum.Enum):
        return {"enum": [member.value for member in tp]}
    if typing.is_typeddict(tp) or dataclasses.is_dataclass(tp) or attrs.has(tp):
        name = tp.__qualname__
        if name not in defs:
            defs[name] = {}  # placeholder first: a recursive type refers to itself
            defs[name] = _object(tp, defs)
        return {"$ref": f"#/$defs/{name}"}
    raise TypeError(f"no JSON Schema for type {tp!r}")


def _object(tp: type[Any], defs: dict[str, Any]) -> dict[str, Any]:
    hints = get_type_hints(tp)
    if typing.is_typeddict(tp):
        # __required_keys__, as cattrs reads it: the schema says what the worker accepts.
        # (Python 3.11 cannot see NotRequired under postponed annotations; both agree.)
        names = list(hints)
        required = [n for n in names if n in tp.__required_keys__]
    elif dataclasses.is_dataclass(tp):
        fields = dataclasses.fields(tp)
        names = [f.name for f in fields]
        required = [
            f.name
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
    else:
        fields_ = attrs.fields(tp)
        names = [a.alias or a.name for a in fields_ if a.init]
        required = [a.alias or a.name for a in fields_ if a.init and a.default is attrs.NOTHING]
        hints = {a.alias or a.name: hints.get(a.name, Any) for a in fields_}
    return {
        "type": "object",
        "title": tp.__qualname__,
        "properties": {n: _schema(hints.get(n, Any), defs) for n in names},
        "required": required,
        "additionalProperties": False,
    }
