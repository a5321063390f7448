"""Table triggers, the pure part: typed tables, ``where`` filters, stream records decoded.

``define_table`` declares a DynamoDB table and its item type. ``F`` builds ``where`` filters
that ``check_where`` tests against the item's fields when a trigger is defined (pgconductor
checks columns the same way) and ``filter_criteria`` compiles into the event source mapping's
``FilterCriteria``, so changes that do not match never invoke Lambda. ``matches`` evaluates the
same patterns on a record, so the dev poller and the memory backend filter exactly as AWS does.

Numbers: a stream record carries ``N`` values as JSON strings (``{"N": "10"}``), and Lambda's
``numeric`` operator only matches JSON numbers, so a range on an ``N`` attribute never matches
in AWS. ``F.total > 10`` is therefore refused when the trigger is defined; equality works (it
matches the string, which DynamoDB stores in canonical form) and ranges belong in the handler.
Where a filter reads the item: the new image for inserts and modifies, the old one for removes.

Decoding never imports boto3: attribute values become the item type through the app's
converter, numbers by the field's annotation (``int``, ``float``, ``Decimal``; ``"1e3"`` for an
``int`` is an error, not a float), ``SS``/``NS``/``BS`` into sets, ``B`` into bytes.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, Literal, TypeVar, get_args, get_origin

import attrs
from cattrs import Converter
from taskhop.static_contracts import ContractError
from taskhop.static_contracts.limits import LAMBDA_MAX_FILTERS

from ._converter import field_errors
from ._errors import FieldError, ValidationError

__all__ = [
    "F",
    "Change",
    "ChangeKind",
    "Table",
    "Where",
    "change_input",
    "changed",
    "check_where",
    "define_table",
    "filter_criteria",
    "matches",
    "structure_change",
]

T = TypeVar("T")
ChangeKind = Literal["insert", "modify", "remove"]
_EVENT_NAMES: dict[str, ChangeKind] = {"INSERT": "insert", "MODIFY": "modify", "REMOVE": "remove"}
_INTEGER = re.compile(r"-?[0-9]+")


# --- tables -------------------------------------------------------------------------------


@attrs.frozen
class Table(Generic[T]):
    """A DynamoDB table as taskhop sees it: its name, item type and key attribute names."""

    name: str
    item: type[T]
    key: tuple[str, ...]

    @property
    def fields(self) -> Mapping[str, Any]:
        """The item's attribute names and their resolved annotations."""
        fields = _field_types(self.item)
        assert fields is not None  # checked by define_table
        return fields


def define_table(name: str, *, item: type[T], key: str | tuple[str, str]) -> Table[T]:
    """Declare a table; its key attributes must be fields of ``item`` (checked here)."""
    if not isinstance(name, str) or not name:
        raise ContractError(f"a table name must be a non-empty string, got {name!r}")
    fields = _field_types(item)
    if fields is None:
        raise ContractError(
            f"table {name!r}: item must be an attrs class, a dataclass or a TypedDict, got {item!r}"
        )
    names = (key,) if isinstance(key, str) else tuple(key)
    if not 1 <= len(names) <= 2 or not all(isinstance(k, str) and k for k in names):
        raise ContractError(f"table {name!r}: key must be one name or (partition, sort)")
    for attr in names:
        if attr not in fields:
            raise ContractError(
                f"table {name!r}: key attribute {attr!r} is not a field of "
                f"{item.__qualname__} (fields: {', '.join(fields)})"
            )
    return Table(name, item, names)


def _field_types(tp: Any) -> Mapping[str, Any] | None:
    """Field names and resolved annotations of an attrs class, dataclass or TypedDict."""
    return _fields_of(tp) if isinstance(tp, type) else None


@functools.cache
def _fields_of(tp: type[Any]) -> Mapping[str, Any] | None:
    if attrs.has(tp):
        hints = typing.get_type_hints(tp)
        names = [a.name for a in attrs.fields(tp)]
    elif dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
    elif typing.is_typeddict(tp):
        hints = typing.get_type_hints(tp)
        names = list(hints)
    else:
        return None
    return types.MappingProxyType({name: hints.get(name, Any) for name in names})


# --- where ---------------------------------------------------------------------------------

_Op = Literal["eq", "anything_but", "prefix", "not_prefix", "exists", "numeric"]


@attrs.frozen
class _Rule:
    attr: str
    op: _Op
    values: tuple[Any, ...] = ()

    def __invert__(self) -> _Rule:
        flipped: dict[_Op, _Op] = {
            "eq": "anything_but",
            "anything_but": "eq",
            "prefix": "not_prefix",
            "not_prefix": "prefix",
        }
        if self.op == "exists":
            return _Rule(self.attr, "exists", (not self.values[0],))
        if self.op == "numeric":
            raise TypeError("negate a numeric comparison by flipping its operator")
        return _Rule(self.attr, flipped[self.op], self.values)


@attrs.frozen
class Where:
    """A filter: alternatives (``|``), each a conjunction (``&``) of one-attribute rules."""

    alternatives: tuple[tuple[_Rule, ...], ...]

    def __and__(self, other: Where) -> Where:
        return Where(tuple(a + b for a in self.alternatives for b in other.alternatives))

    def __or__(self, other: Where) -> Where:
        return Where(self.alternatives + other.alternatives)

    def __invert__(self) -> Where:
        if len(self.alternatives) != 1 or len(self.alternatives[0]) != 1:
            raise TypeError("~ applies to one condition; negate each part of a combination")
        return Where(((~self.alternatives[0][0],),))

    def attributes(self) -> frozenset[str]:
        """Every attribute the filter reads."""
        return frozenset(r.attr for alt in self.alternatives for r in alt)


def _where(rule: _Rule) -> Where:
    return Where(((rule,),))


class _Attr:
    """One item attribute in a filter: ``F.status == "paid"``, ``F.note.exists()``."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __eq__(self, value: object) -> Where:  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]
        return _where(_Rule(self._name, "eq", (value,)))

    def __ne__(self, value: object) -> Where:  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]
        return self.not_equal(value)

    __hash__ = None  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]

    def not_equal(self, *values: object) -> Where:
        """Present and none of ``values`` (Lambda's ``anything-but``)."""
        return _where(_Rule(self._name, "anything_but", values))

    anything_but = not_equal

    def is_in(self, values: Iterable[object]) -> Where:
        """Equal to one of ``values``."""
        return _where(_Rule(self._name, "eq", tuple(values)))

    def prefix(self, prefix: str) -> Where:
        """A string starting with ``prefix``."""
        return _where(_Rule(self._name, "prefix", (prefix,)))

    def exists(self) -> Where:
        """The attribute is present (and not ``NULL``)."""
        return _where(_Rule(self._name, "exists", (True,)))

    def not_exists(self) -> Where:
        """The attribute is absent (or ``NULL``)."""
        return _where(_Rule(self._name, "exists", (False,)))

    def _numeric(self, op: str, value: object) -> Where:
        return _where(_Rule(self._name, "numeric", (op, value)))

    def __gt__(self, value: object) -> Where:
        return self._numeric(">", value)

    def __ge__(self, value: object) -> Where:
        return self._numeric(">=", value)

    def __lt__(self, value: object) -> Where:
        return self._numeric("<", value)

    def __le__(self, value: object) -> Where:
        return self._numeric("<=", value)


class _Fields:
    """``F.<attribute>``: the root of every filter."""

    def __getattr__(self, name: str) -> _Attr:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Attr(name)


F = _Fields()


def check_where(table: Table[Any], where: Where) -> None:
    """Raise ``ContractError`` unless every rule names a field and can run in AWS."""
    fields = table.fields
    for alternative in where.alternatives:
        seen: set[str] = set()
        for rule in alternative:
            if rule.attr not in fields:
                raise ContractError(
                    f"unknown attribute {rule.attr!r} for table {table.name!r} "
                    f"(fields: {', '.join(fields)})"
                )
            if rule.attr in seen:
                raise ContractError(
                    f"table {table.name!r}: attribute {rule.attr!r} appears twice in one & "
                    "combination; a filter pattern can hold one condition per attribute"
                )
            seen.add(rule.attr)
            _check_rule(table, rule, fields[rule.attr])


def _check_rule(table: Table[Any], rule: _Rule, annotation: Any) -> None:
    where = f"table {table.name!r}, attribute {rule.attr!r}"
    if rule.op == "numeric":
        raise ContractError(
            f"{where}: numeric comparisons ({rule.values[0]}) cannot be filtered: stream records "
            "carry numbers as strings, which Lambda's numeric filter never matches; filter on "
            "equality or compare in the handler"
        )
    tag = _scalar_tag(annotation)
    if tag is None:
        raise ContractError(f"{where}: only string, number and boolean attributes can be filtered")
    if rule.op == "exists":
        return
    if rule.op in ("prefix", "not_prefix"):
        if tag != "S" or not isinstance(rule.values[0], str):
            raise ContractError(f"{where}: prefix needs a string attribute and a string prefix")
        return
    if not rule.values:
        raise ContractError(f"{where}: a comparison needs at least one value")
    if tag == "BOOL" and rule.op == "anything_but":
        raise ContractError(f"{where}: compare a boolean with == True or == False")
    for value in rule.values:
        if _value_tag(value) != tag:
            raise ContractError(f"{where}: {value!r} is not a {_TAG_NAMES[tag]}")
        if tag == "N" and not _finite(value):  # the pattern would say "NaN": never matched
            raise ContractError(
                f"{where}: {value!r} is not a number DynamoDB can store (no NaN or infinity),"
                " so the filter could never match"
            )
    allowed = get_args(_strip(annotation)) if get_origin(_strip(annotation)) is Literal else ()
    for value in rule.values:
        if allowed and value not in allowed:
            raise ContractError(f"{where}: {value!r} is not one of {list(allowed)!r}")


_TAG_NAMES = {"S": "string", "N": "number", "BOOL": "boolean"}


def _scalar_tag(annotation: Any) -> str | None:
    """``S``, ``N`` or ``BOOL`` for a filterable annotation (optional allowed), else None."""
    tp = _strip(annotation)
    if tp is bool:
        return "BOOL"
    if isinstance(tp, type) and issubclass(tp, int | float | Decimal):
        return "N"
    if isinstance(tp, type) and issubclass(tp, str):
        return "S"
    if get_origin(tp) is Literal:
        tags = {_value_tag(v) for v in get_args(tp)}
        return tags.pop() if len(tags) == 1 else None
    return None


def _finite(value: object) -> bool:
    """Whether a number is finite (DynamoDB stores neither NaN nor the infinities)."""
    return Decimal(str(value)).is_finite()


def _value_tag(value: object) -> str | None:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int | float | Decimal):
        return "N"
    if isinstance(value, str):
        return "S"
    return None


def _strip(annotation: Any) -> Any:
    """An annotation without ``Annotated`` and without ``None`` in an optional union."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _strip(get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        rest = [a for a in get_args(annotation) if a is not type(None)]
        return _strip(rest[0]) if len(rest) == 1 else annotation
    return annotation


def filter_criteria(
    table: Table[Any],
    on: Iterable[ChangeKind] = ("insert", "modify", "remove"),
    where: Where | None = None,
) -> dict[str, Any]:
    """The event source mapping's ``FilterCriteria`` for these kinds of change and filter."""
    kinds = frozenset(on)
    unknown = kinds - set(_EVENT_NAMES.values())
    if not kinds or unknown:
        raise ContractError(f"on= takes insert, modify and remove, got {sorted(kinds)!r}")
    names = [n for n, k in _EVENT_NAMES.items() if k in kinds]
    if where is None:
        return {"Filters": [{"Pattern": json.dumps({"eventName": names})}]}
    check_where(table, where)
    # A removal has no new image: its filter reads the old one.
    names_new = [n for n in names if n != "REMOVE"]
    names_old = [n for n in names if n == "REMOVE"]
    patterns: list[dict[str, Any]] = []
    for alternative in where.alternatives:
        for image, group in (("NewImage", names_new), ("OldImage", names_old)):
            if group:
                pattern = {image: _image_pattern(table, alternative)}
                patterns.append({"eventName": group, "dynamodb": pattern})
    if len(patterns) > LAMBDA_MAX_FILTERS:
        raise ContractError(
            f"table {table.name!r}: this filter needs {len(patterns)} patterns, over Lambda's "
            f"default of {LAMBDA_MAX_FILTERS} per event source mapping (a removal takes its own)"
        )
    return {"Filters": [{"Pattern": json.dumps(p)} for p in patterns]}


def _image_pattern(table: Table[Any], rules: Sequence[_Rule]) -> dict[str, Any]:
    pattern: dict[str, Any] = {}
    for rule in rules:
        tag = _scalar_tag(table.fields[rule.attr])
        assert tag is not None  # checked by check_where
        pattern[rule.attr] = {tag: _matchers(rule, tag)}
    return pattern


def _matchers(rule: _Rule, tag: str) -> list[Any]:
    values = [_number_text(v) if tag == "N" else v for v in rule.values]
    match rule.op:
        case "eq":
            return values
        case "anything_but":
            return [{"anything-but": values}]
        case "prefix":
            return [{"prefix": values[0]}]
        case "not_prefix":
            return [{"anything-but": {"prefix": values[0]}}]
        case _:  # exists
            return [{"exists": rule.values[0]}]


def _number_text(value: object) -> str:
    """A number as DynamoDB writes it in a stream record: canonical, no exponent."""
    number = Decimal(str(value)).normalize()
    return format(number, "f") if number else "0"


# --- matching (the subset of Lambda's pattern language compiled above) ---------------------

_MISSING: Any = object()


def _as_map(value: object) -> Mapping[str, Any] | None:
    """``value`` as a JSON object, or None (one place to narrow untyped event data)."""
    return typing.cast("Mapping[str, Any]", value) if isinstance(value, Mapping) else None


def _as_list(value: object) -> list[Any] | None:
    if not isinstance(value, list):
        return None
    items: list[Any] = value  # pyright: ignore[reportUnknownVariableType]
    return items


def matches(criteria: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """Whether Lambda would deliver ``record`` under ``criteria`` (any filter matching)."""
    filters: list[Mapping[str, Any]] = criteria.get("Filters", [])
    return any(_match_object(json.loads(f["Pattern"]), record) for f in filters)


def _match_object(pattern: Mapping[str, Any], value: object) -> bool:
    fields = _as_map(value)
    for key, expected in pattern.items():
        inner = _MISSING if fields is None else fields.get(key, _MISSING)
        nested = _as_map(expected)
        if nested is not None:
            if not _match_object(nested, inner):
                return False
        elif not _match_leaf(expected, inner):
            return False
    return True


def _match_leaf(matchers: list[Any], value: object) -> bool:
    items = _as_list(value)
    if items is not None:  # an array matches when any element does
        return any(_match_leaf(matchers, v) for v in items)
    return any(_match_one(m, value) for m in matchers)


def _match_one(matcher: object, value: object) -> bool:
    rule = _as_map(matcher)
    if rule is None:
        return value is not _MISSING and _same(matcher, value)
    if "exists" in rule:
        return bool((value is not _MISSING) == rule["exists"])
    if value is _MISSING or _as_map(value) is not None:
        return False
    if "prefix" in rule:
        return isinstance(value, str) and value.startswith(rule["prefix"])
    if "anything-but" in rule:
        excluded: object = rule["anything-but"]
        prefix = _as_map(excluded)
        if prefix is not None:
            return isinstance(value, str) and not value.startswith(prefix["prefix"])
        values = _as_list(excluded)
        return not any(_same(e, value) for e in (values if values is not None else [excluded]))
    if "numeric" in rule:
        return _numeric(rule["numeric"], value)
    raise ContractError(f"unsupported filter matcher {rule!r}")


def _same(expected: object, value: object) -> bool:
    if isinstance(expected, bool) or isinstance(value, bool):
        return expected is value
    if _is_number(expected) and _is_number(value):
        return expected == value
    return type(expected) is type(value) and expected == value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(op: str, value: float, bound: float) -> bool:
    match op:
        case "=":
            return value == bound
        case "<":
            return value < bound
        case "<=":
            return value <= bound
        case ">":
            return value > bound
        case ">=":
            return value >= bound
        case _:
            raise ContractError(f"unsupported numeric operator {op!r}")


def _numeric(terms: list[Any], value: object) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False  # a string such as an N value never matches, as in AWS
    pairs = zip(terms[::2], terms[1::2], strict=True)
    return all(_compare(op, value, bound) for op, bound in pairs)


# --- changes -------------------------------------------------------------------------------


@attrs.frozen
class Change(Generic[T]):
    """One item change from the table's stream, with its images typed as the item."""

    kind: ChangeKind
    new: T | None
    old: T | None
    keys: dict[str, Any]
    event_id: str
    sequence: str
    ttl_expiry: bool
    approximate_at: datetime | None

    @property
    def is_ttl_expiry(self) -> bool:
        """DynamoDB removed the item because its TTL passed (not a user's delete)."""
        return self.ttl_expiry


_TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


def change_input(record: Mapping[str, Any]) -> dict[str, Any]:
    """A Lambda DynamoDB stream record as JSON data for a job (images stay attribute values)."""
    stream = _as_map(record.get("dynamodb"))
    if stream is None:
        raise ValidationError("table change", [FieldError("record.dynamodb", "missing")])
    name = record.get("eventName")
    kind = _EVENT_NAMES.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ValidationError(
            "table change", [FieldError("record.eventName", "expected INSERT, MODIFY or REMOVE")]
        )
    identity = _as_map(record.get("userIdentity"))
    ttl = kind == "remove" and identity is not None and _is_ttl(identity)
    at: object = stream.get("ApproximateCreationDateTime")
    return {
        "kind": kind,
        "new": stream.get("NewImage"),
        "old": stream.get("OldImage"),
        "keys": stream.get("Keys", {}),
        "event_id": record.get("eventID"),
        "sequence": stream.get("SequenceNumber"),
        "ttl_expiry": ttl,
        "approximate_at": _seconds(at),
    }


def _seconds(at: object) -> float | None:
    """``ApproximateCreationDateTime``: epoch seconds, a number (or a string in some docs)."""
    if isinstance(at, bool) or not isinstance(at, int | float | str):
        return None
    try:
        return float(at)
    except ValueError:
        return None


def _is_ttl(identity: Mapping[str, Any]) -> bool:
    return all(identity.get(k) == v for k, v in _TTL_IDENTITY.items())


def structure_change(
    converter: Converter, data: Mapping[str, Any], item_type: type[T], *, task: str
) -> Change[T]:
    """``change_input`` data as a ``Change[item_type]``; bad images name their fields."""
    errors: list[FieldError] = []
    kind = data.get("kind")
    if kind not in _EVENT_NAMES.values():
        errors.append(FieldError("input.kind", "expected insert, modify or remove"))
    for name in ("event_id", "sequence"):
        if not isinstance(data.get(name), str):
            errors.append(FieldError(f"input.{name}", "expected string"))
    at = data.get("approximate_at")
    if at is not None and not _is_number(at):
        errors.append(FieldError("input.approximate_at", "expected number or null"))
    hints = _field_types(item_type) or {}
    images: dict[str, Any] = {}
    for image in ("new", "old"):
        raw = data.get(image)
        images[image] = None if raw is None else _image(converter, raw, item_type, image, errors)
    keys = _as_map(data.get("keys", {}))
    plain_keys = {} if keys is None else _decode_map(keys, hints, "input.keys", errors)
    if errors:
        raise ValidationError(task, errors)
    return Change(
        kind=typing.cast("ChangeKind", kind),
        new=images["new"],
        old=images["old"],
        keys=plain_keys,
        event_id=data["event_id"],
        sequence=data["sequence"],
        ttl_expiry=data.get("ttl_expiry") is True,
        approximate_at=None if at is None else datetime.fromtimestamp(at, UTC),
    )


def _image(
    converter: Converter, raw: Any, item_type: type[T], image: str, errors: list[FieldError]
) -> T | None:
    path = f"input.{image}"
    attributes = _as_map(raw)
    if attributes is None:
        errors.append(FieldError(path, "expected a map of attribute values"))
        return None
    before = len(errors)
    hints = _field_types(item_type) or {}
    plain = _decode_map(attributes, hints, path, errors, converter.unstructure)
    if len(errors) > before:
        return None
    try:
        return converter.structure(plain, item_type)
    except Exception as exc:  # cattrs raises groups, attrs validators raise anything
        errors.extend(field_errors(exc, path))
        return None


# --- attribute values ----------------------------------------------------------------------

_TAGS = frozenset({"S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"})


_Binary = Callable[[bytes], Any]


def _decode_map(
    attributes: Mapping[str, Any],
    hints: Mapping[str, Any],
    path: str,
    errors: list[FieldError],
    binary: _Binary = bytes,
) -> dict[str, Any]:
    return {
        name: _decode(av, hints.get(name, Any), f"{path}.{name}", errors, binary)
        for name, av in attributes.items()
    }


def _decode(av: object, tp: Any, path: str, errors: list[FieldError], binary: _Binary) -> Any:
    """One attribute value as plain data, numbers and containers shaped by ``tp``.

    ``binary`` turns bytes into what the converter structures back into bytes (its JSON form).
    """
    tagged = _as_map(av)
    if tagged is None or len(tagged) != 1 or next(iter(tagged)) not in _TAGS:
        errors.append(FieldError(path, "not a DynamoDB attribute value"))
        return None
    [(tag, value)] = tagged.items()
    tp = _strip(tp)
    try:
        match tag:
            case "S" | "BOOL":
                return value
            case "NULL":
                return None
            case "N":
                return _number(value, tp)
            case "B":
                return binary(_binary(value))
            case "M":
                return _decode_map(_items(value, "M", dict), _map_hints(tp), path, errors, binary)
            case _:
                pass
        items = _items(value, tag, list)
        match tag:
            case "SS":
                return items
            case "NS":
                return [_number(v, _element(tp)) for v in items]
            case "BS":
                return [binary(_binary(v)) for v in items]
            case _:  # "L"
                element = _element(tp)
                return [
                    _decode(v, element, f"{path}[{i}]", errors, binary) for i, v in enumerate(items)
                ]
    except (ValueError, TypeError, binascii.Error) as exc:
        errors.append(FieldError(path, f"bad {tag} value: {exc}"))
        return None


_C = TypeVar("_C", list[Any], dict[str, Any])


def _items(value: object, tag: str, kind: type[_C]) -> _C:
    if not isinstance(value, kind):
        raise TypeError(f"{tag} holds a {'map' if kind is dict else 'list'}")
    return value


def _number(text: Any, tp: Any) -> int | float | Decimal:
    if not isinstance(text, str):
        raise TypeError("a number must be a string")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError("expected a number") from None
    if not number.is_finite():
        raise ValueError("expected a finite number")
    options = get_args(tp) if get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    integral = _INTEGER.fullmatch(text) is not None
    if int in options and (integral or not {float, Decimal} & set(options)):
        if not integral:
            raise ValueError("expected an integer")
        return int(text)
    if float in options:
        return float(number)
    if Decimal in options:
        return number
    return int(text) if integral else number


def _binary(text: Any) -> bytes:
    if not isinstance(text, str):
        raise TypeError("binary must be a base64 string")
    return base64.b64decode(text, validate=True)


def _element(tp: Any) -> Any:
    args = get_args(tp)
    return args[0] if len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis) else Any


def _map_hints(tp: Any) -> Mapping[str, Any]:
    fields = _field_types(tp)
    if fields is not None:
        return fields
    args = get_args(tp)
    if get_origin(tp) in (dict, Mapping) and len(args) == 2:
        return _Everywhere(args[1])
    return {}


class _Everywhere(dict[str, Any]):
    """A hints mapping giving every key the same annotation (a ``dict[str, V]`` value)."""

    def __init__(self, tp: Any) -> None:
        super().__init__()
        self._tp = tp

    def get(self, key: str, default: Any = None) -> Any:
        return self._tp


def changed(record_or_data: Mapping[str, Any], fields: Iterable[str]) -> bool:
    """Whether any of ``fields`` differs between the old and new image (inserts, removes: yes)."""
    stream = _as_map(record_or_data.get("dynamodb"))
    if stream is not None:
        old, new = _as_map(stream.get("OldImage")), _as_map(stream.get("NewImage"))
    else:
        old, new = _as_map(record_or_data.get("old")), _as_map(record_or_data.get("new"))
    if old is None or new is None:
        return True
    return any(_comparable(old.get(f)) != _comparable(new.get(f)) for f in fields)


def _comparable(av: object) -> object:
    """A set attribute value compared without its order, as DynamoDB treats it."""
    tagged = _as_map(av)
    if tagged is not None and len(tagged) == 1:
        [(tag, value)] = tagged.items()
        items = _as_list(value)
        if tag in ("SS", "NS", "BS") and items is not None:
            return (tag, frozenset(items))
    return av
