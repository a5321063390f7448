"""JSON Schema (draft 2020-12) for contract types, so other languages can build valid inputs.

Covers what contracts use: scalars, ``list``/``tuple``/``set``, ``dict[str, X]``, unions and
``Optional``, ``Literal``, enums, datetimes and UUIDs, and TypedDicts, dataclasses and attrs
classes (as ``$defs``, referenced by name; recursion is fine). Unknown keys are refused by
the worker's converter, so objects are ``additionalProperties: false``.

attrs validators become the JSON Schema keywords that check the same thing (``matches_re``
-> ``pattern``, ``gt`` -> ``exclusiveMinimum``, ``in_`` -> ``enum``, ``min_len`` ->
``minLength`` / ``minItems`` / ``minProperties``, through ``and_``, ``or_``, ``optional``,
``deep_iterable`` and ``deep_mapping``). A validator with no keyword (a function of your own,
``not_``, a regex with flags) is named in the property's ``x-taskhop-unmapped`` list: the
worker checks more than the schema says, and a producer in another language can see what.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import re
import types
import typing
from datetime import date, datetime
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints
from uuid import UUID

import attrs

from ._converter import typeddict_required_keys

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
    wrapped = _wrapper_schema(tp, origin, args, defs)
    if wrapped is not None:
        return wrapped
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


def _wrapper_schema(
    tp: Any, origin: Any, args: tuple[Any, ...], defs: dict[str, Any]
) -> dict[str, Any] | None:
    """A subscriber's ``Event[P]`` or a trigger's ``Change[Item]``, as their jobs carry them."""
    from ._events import Event
    from ._tables import Change

    if origin is Event:
        return {
            "type": "object",
            "required": ["name", "id", "emitted_at", "payload"],
            "properties": {
                "name": {"type": "string"},
                "id": {"type": "string"},
                "emitted_at": {"type": "string", "format": "date-time"},
                "key": {"type": ["string", "null"]},
                "payload": _schema(args[0], defs) if args else {},
            },
            "additionalProperties": False,
        }
    if origin is Change:
        image = {
            "description": f"a {getattr(args[0], '__qualname__', 'item')} as DynamoDB attribute"
            " values (NewImage / OldImage)",
            "type": ["object", "null"],
        }
        return {
            "type": "object",
            "required": ["kind", "event_id", "sequence"],
            "properties": {
                "kind": {"enum": ["insert", "modify", "remove"]},
                "new": image,
                "old": image,
                "keys": {"type": "object"},
                "event_id": {"type": "string"},
                "sequence": {"type": "string"},
                "ttl_expiry": {"type": "boolean"},
                "approximate_at": {"type": ["number", "null"]},
            },
        }
    del tp
    return None


def _object(tp: type[Any], defs: dict[str, Any]) -> dict[str, Any]:
    hints = get_type_hints(tp)
    if typing.is_typeddict(tp):
        # The keys the worker's converter requires, Required/NotRequired read from the
        # resolved annotations (so they hold under postponed annotations too).
        names = list(hints)
        required_keys = typeddict_required_keys(tp)
        required = [n for n in names if n in required_keys]
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
        required = [a.alias or a.name for a in fields_ if a.init and a.default is attrs.NOTHING]
        types_ = {a.name: hints.get(a.name, _declared(a)) for a in fields_}
        properties = {
            a.alias or a.name: _constrained(_schema(types_[a.name], defs), types_[a.name], a)
            for a in fields_
            if a.init
        }
        return _object_schema(tp, properties, required)
    return _object_schema(tp, {n: _schema(hints.get(n, Any), defs) for n in names}, required)


def _object_schema(
    tp: type[Any], properties: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    return {
        "type": "object",
        "title": tp.__qualname__,
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _declared(field: attrs.Attribute[Any]) -> Any:
    """A field's type when the class has no annotations for it (``attrs.make_class``)."""
    return Any if field.type is None or isinstance(field.type, str) else field.type


# -- attrs validators as JSON Schema keywords ------------------------------------------------

UNMAPPED = "x-taskhop-unmapped"
"""The property keyword listing validators the worker runs that no JSON Schema keyword states."""

_BOUNDS = {
    ">": "exclusiveMinimum",
    ">=": "minimum",
    "<": "exclusiveMaximum",
    "<=": "maximum",
}
_LENGTHS = {
    "string": ("minLength", "maxLength"),
    "array": ("minItems", "maxItems"),
    "object": ("minProperties", "maxProperties"),
}
# Python regex syntax that ECMA-262 (JSON Schema's dialect) lacks or reads differently.
_PYTHON_ONLY_REGEX = re.compile(r"\\[AZ]|\(\?P|\(\?#|\(\?>|\(\?[aiLmsux-]+[:)]|[*+?}]\+")


def _constrained(schema: dict[str, Any], tp: Any, field: attrs.Attribute[Any]) -> dict[str, Any]:
    if field.validator is None:
        return schema
    return _merge(schema, _keywords(field.validator, tp))


def _keywords(validator: Any, tp: Any) -> dict[str, Any]:
    """The keywords that check what ``validator`` checks on a value of type ``tp``.

    attrs' validator classes are private, so they are recognised by name; a test pins each.
    """
    kind = type(validator).__name__
    if kind == "_InstanceOfValidator":
        return {}  # the type's own schema says it
    if kind == "_AndValidator":
        out: dict[str, Any] = {}
        for inner in getattr(validator, "_validators", ()):
            out = _merge(out, _keywords(inner, tp))
        return out
    if kind == "_OptionalValidator":
        inner = _keywords(validator.validator, _without_none(tp))
        if "enum" in inner:
            inner["enum"] = [*inner["enum"], None]  # None passes optional(...) untested
        return inner
    if kind == "_OrValidator":
        branches = [_keywords(v, tp) for v in validator.validators]
        if all(b and UNMAPPED not in b for b in branches):
            return {"anyOf": branches}
    elif kind == "_MatchesReValidator":
        pattern = _pattern(validator.pattern, getattr(validator.match_func, "__name__", ""))
        if pattern is not None:
            return {"pattern": pattern}
    elif kind == "_NumberValidator":
        bound = validator.bound
        if _is_json_number(bound) and validator.compare_op in _BOUNDS:
            return {_BOUNDS[validator.compare_op]: bound}
    elif kind == "_InValidator":
        found = _options(validator.options, getattr(validator, "_original_options", None))
        if found is not None:
            return found
    elif kind in ("_MinLengthValidator", "_MaxLengthValidator"):
        kinds = _container_kinds(tp)
        which = 0 if kind == "_MinLengthValidator" else 1
        length = validator.min_length if which == 0 else validator.max_length
        if kinds:
            return {_LENGTHS[k][which]: length for k in sorted(kinds)}
    elif kind == "_DeepIterable":
        return _deep_iterable(validator, tp)
    elif kind == "_DeepMapping":
        return _deep_mapping(validator, tp)
    return {UNMAPPED: [_name(validator)]}


def _pattern(compiled: Any, how: str) -> str | None:
    """``compiled`` as an ECMA-262 pattern with Python's match semantics, or None.

    JSON Schema's ``pattern`` searches (unanchored), so ``fullmatch`` (attrs' default) is
    anchored at both ends and ``match`` at the start. Flags have no JSON Schema form.
    """
    source = compiled.pattern
    if not isinstance(source, str) or compiled.flags & ~re.UNICODE:
        return None
    if _PYTHON_ONLY_REGEX.search(source):
        return None
    if how == "fullmatch":
        return f"^(?:{source})$"
    if how == "match":
        return f"^(?:{source})"
    return source


def _options(options: Any, original: Any) -> dict[str, Any] | None:
    if isinstance(options, range):
        if options.step == 1 and len(options):
            return {"minimum": options.start, "maximum": options.stop - 1}
        return None
    if isinstance(options, str | bytes):
        return None  # ``in "abc"`` is a substring test
    values = [o.value if isinstance(o, enum.Enum) else o for o in options]
    if not all(v is None or isinstance(v, str | bool) or _is_json_number(v) for v in values):
        return None
    if isinstance(original, set | frozenset):
        values.sort(key=repr)  # a set's order changes from run to run; the export must not
    return {"enum": values}


def _deep_iterable(validator: Any, tp: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if validator.iterable_validator is not None:
        out = _keywords(validator.iterable_validator, tp)
    origin, args = get_origin(_without_none(tp)), get_args(_without_none(tp))
    if origin is tuple and args and args[-1] is not Ellipsis:
        members = [_keywords(validator.member_validator, a) for a in args]
        return _merge(out, {"prefixItems": members})
    member = _keywords(validator.member_validator, args[0] if args else Any)
    return _merge(out, {"items": member})


def _deep_mapping(validator: Any, tp: Any) -> dict[str, Any]:
    args = get_args(_without_none(tp))
    key_tp, value_tp = args if len(args) == 2 else (Any, Any)
    out: dict[str, Any] = {}
    if validator.mapping_validator is not None:
        out = _keywords(validator.mapping_validator, tp)
    if validator.key_validator is not None:
        out = _merge(out, {"propertyNames": _keywords(validator.key_validator, key_tp)})
    if validator.value_validator is not None:
        values = _keywords(validator.value_validator, value_tp)
        out = _merge(out, {"additionalProperties": values})
    return out


def _merge(schema: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """``schema`` and ``more`` both holding; equal keywords are combined, not overwritten."""
    out = dict(schema)
    for key, value in more.items():
        if key not in out:
            out[key] = value
        elif key == UNMAPPED:
            out[key] = [*out[key], *value]
        elif key in ("items", "additionalProperties", "propertyNames") and isinstance(
            out[key], dict
        ):
            out[key] = _merge(out[key], value)
        elif key == "prefixItems" and len(out[key]) == len(value):
            out[key] = [_merge(a, b) for a, b in zip(out[key], value, strict=True)]
        elif key == "enum":
            out[key] = [v for v in out[key] if v in value]
        elif key in ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"):
            out[key] = max(out[key], value)
        elif key in ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"):
            out[key] = min(out[key], value)
        else:  # two patterns, two anyOfs: each must hold
            out["allOf"] = [*out.get("allOf", []), {key: value}]
    return out


def _without_none(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        rest = [a for a in get_args(tp) if a is not type(None)]
        return rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
    return tp


def _container_kinds(tp: Any) -> set[str]:
    """Which JSON kinds of ``tp`` have a length that ``len()`` and JSON Schema count alike."""
    members = get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)
    kinds: set[str] = set()
    for member in members:
        origin = get_origin(member) or member
        if origin is str:
            kinds.add("string")
        elif origin in (list, tuple, set, frozenset, typing.Sequence, typing.AbstractSet):
            kinds.add("array")
        elif origin in (dict, typing.Mapping):
            kinds.add("object")
    return kinds


def _is_json_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def _name(validator: Any) -> str:
    """How an unmapped validator is named: its function's name, or attrs' description of it.

    Combinators are spelt out (``or_(<Validator for x > 3>, _even)``) so no name carries a
    memory address: the export is the same from run to run.
    """
    if inspect.isfunction(validator) or inspect.ismethod(validator):
        return str(validator.__qualname__)
    kind = type(validator).__name__
    parts = _COMBINATORS.get(kind)
    if parts is not None:
        call, attributes = parts
        inner: list[Any] = []
        for attribute in attributes:
            value: Any = getattr(validator, attribute, None)
            many = kind in ("_AndValidator", "_OrValidator")  # they hold a tuple of validators
            inner.extend(value if many else [value])
        return f"{call}({', '.join(_name(i) for i in inner if i is not None)})"
    text = repr(validator)
    return type(validator).__qualname__ if " at 0x" in text else text


_COMBINATORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "_AndValidator": ("and_", ("_validators",)),
    "_OrValidator": ("or_", ("validators",)),
    "_NotValidator": ("not_", ("validator",)),
    "_OptionalValidator": ("optional", ("validator",)),
    "_DeepIterable": ("deep_iterable", ("member_validator", "iterable_validator")),
    "_DeepMapping": ("deep_mapping", ("key_validator", "value_validator", "mapping_validator")),
}
