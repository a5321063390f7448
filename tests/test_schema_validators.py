"""attrs validators in the exported JSON Schema: each maps to keywords that agree with the worker.

Every case is checked both ways: a schema-valid example is accepted by the worker's converter
and by ``jsonschema``, a schema-invalid one is rejected by both. Validators with no keyword
are listed under ``x-taskhop-unmapped``, so the consumer knows the worker checks more.
"""

from __future__ import annotations

import enum
import json
import re
import sys
import types
from typing import Any

import attrs
import jsonschema
import pytest
from attrs import validators as v
from taskhop.sdk import ValidationError, create_app, define_task, make_converter
from taskhop.sdk._cli import main
from taskhop.sdk._converter import structure
from taskhop.sdk._schema import UNMAPPED, json_schema


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def _even(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value % 2:
        raise ValueError(f"{attribute.name!r} must be even")


def _case(tp: Any, validator: Any) -> type[Any]:
    return attrs.make_class("Case", {"v": attrs.field(type=tp, validator=validator)})


def _property(cls: type[Any]) -> dict[str, Any]:
    schema: dict[str, Any] = json_schema(cls)["$defs"]["Case"]["properties"]["v"]
    return schema


def _worker_accepts(cls: type[Any], value: object) -> bool:
    try:
        structure(make_converter(), {"v": value}, cls, task="case")
    except ValidationError:
        return False
    return True


def _schema_accepts(cls: type[Any], value: object) -> bool:
    return bool(jsonschema.Draft202012Validator(json_schema(cls)).is_valid({"v": value}))


MAPPED: list[tuple[str, Any, Any, dict[str, Any], list[Any], list[Any]]] = [
    # (id, type, validator, expected property schema, schema-valid, schema-invalid)
    (
        "matches_re fullmatch",
        str,
        v.matches_re(r"[A-Z]{3}"),
        {"type": "string", "pattern": "^(?:[A-Z]{3})$"},
        ["ABC"],
        ["ABCD", "xABC", "AB"],
    ),
    (
        "matches_re search",
        str,
        v.matches_re(r"\d", func=re.search),
        {"type": "string", "pattern": r"\d"},
        ["a1", "9"],
        ["abc"],
    ),
    (
        "matches_re match",
        str,
        v.matches_re("ab", func=re.match),
        {"type": "string", "pattern": "^(?:ab)"},
        ["abc", "ab"],
        ["cab"],
    ),
    ("gt", int, v.gt(0), {"type": "integer", "exclusiveMinimum": 0}, [1, 7], [0, -1]),
    ("ge", int, v.ge(0), {"type": "integer", "minimum": 0}, [0, 3], [-1]),
    ("lt", int, v.lt(10), {"type": "integer", "exclusiveMaximum": 10}, [9, -3], [10, 11]),
    ("le", float, v.le(2.5), {"type": "number", "maximum": 2.5}, [2.5, 1], [2.6, 3]),
    ("in_", str, v.in_(["a", "b"]), {"type": "string", "enum": ["a", "b"]}, ["a"], ["c", "A"]),
    (
        "in_ a range",
        int,
        v.in_(range(1, 4)),
        {"type": "integer", "minimum": 1, "maximum": 3},
        [1, 3],
        [0, 4],
    ),
    (
        "in_ a set",
        str,
        v.in_({"y", "x"}),
        {"type": "string", "enum": ["x", "y"]},
        ["x"],
        ["z"],
    ),
    (
        "in_ enum members",
        Colour,
        v.in_([Colour.RED]),
        {"enum": ["red"]},
        ["red"],
        ["blue", "green"],
    ),
    ("min_len str", str, v.min_len(2), {"type": "string", "minLength": 2}, ["ab"], ["a", ""]),
    ("max_len str", str, v.max_len(2), {"type": "string", "maxLength": 2}, ["ab"], ["abc"]),
    (
        "max_len list",
        list[int],
        v.max_len(2),
        {"type": "array", "items": {"type": "integer"}, "maxItems": 2},
        [[1, 2], []],
        [[1, 2, 3]],
    ),
    (
        "min_len dict",
        dict[str, int],
        v.min_len(1),
        {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 1},
        [{"a": 1}],
        [{}],
    ),
    (
        "a list of validators (and_)",
        int,
        [v.gt(0), v.lt(5)],
        {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 5},
        [1, 4],
        [0, 5],
    ),
    ("and_", int, v.and_(v.ge(1), v.ge(3)), {"type": "integer", "minimum": 3}, [3], [2]),
    (
        "optional in_",
        int | None,
        v.optional(v.in_([1, 2])),
        {"anyOf": [{"type": "integer"}, {"type": "null"}], "enum": [1, 2, None]},
        [None, 1],
        [3],
    ),
    (
        "optional gt",
        int | None,
        v.optional(v.gt(0)),
        {"anyOf": [{"type": "integer"}, {"type": "null"}], "exclusiveMinimum": 0},
        [None, 1],
        [0],
    ),
    ("instance_of", int, v.instance_of(int), {"type": "integer"}, [1], ["1"]),
    (
        "deep_iterable",
        list[int],
        v.deep_iterable(v.gt(0), v.min_len(1)),
        {"type": "array", "items": {"type": "integer", "exclusiveMinimum": 0}, "minItems": 1},
        [[1, 2]],
        [[], [1, 0]],
    ),
    (
        "deep_iterable over a fixed tuple",
        tuple[int, int],
        v.deep_iterable(v.gt(0)),
        {
            "type": "array",
            "prefixItems": [
                {"type": "integer", "exclusiveMinimum": 0},
                {"type": "integer", "exclusiveMinimum": 0},
            ],
            "items": False,
        },
        [[1, 2]],
        [[1, 0]],
    ),
    (
        "deep_mapping",
        dict[str, int],
        v.deep_mapping(v.matches_re("[a-z]+"), v.ge(0)),
        {
            "type": "object",
            "additionalProperties": {"type": "integer", "minimum": 0},
            "propertyNames": {"pattern": "^(?:[a-z]+)$"},
        },
        [{"ab": 0}, {}],
        [{"Ab": 1}, {"a": -1}],
    ),
    (
        "or_",
        int,
        v.or_(v.lt(0), v.gt(3)),
        {"type": "integer", "anyOf": [{"exclusiveMaximum": 0}, {"exclusiveMinimum": 3}]},
        [-1, 4],
        [0, 3],
    ),
]


@pytest.mark.parametrize(
    ("tp", "validator", "expected", "good", "bad"),
    [case[1:] for case in MAPPED],
    ids=[case[0] for case in MAPPED],
)
def test_attrs_validators_map_to_keywords_the_worker_agrees_with(
    tp: Any, validator: Any, expected: dict[str, Any], good: list[Any], bad: list[Any]
) -> None:
    """The keyword says what the validator checks: valid passes both sides, invalid fails both."""
    cls = _case(tp, validator)
    assert _property(cls) == expected
    for value in good:
        assert _worker_accepts(cls, value), value
        assert _schema_accepts(cls, value), value
    for value in bad:
        assert not _worker_accepts(cls, value), value
        assert not _schema_accepts(cls, value), value


UNMAPPED_CASES: list[tuple[str, Any, Any, str, Any]] = [
    # (id, type, validator, the name listed, a value only the worker refuses)
    ("a function of your own", int, _even, "_even", 3),
    (
        "not_",
        str,
        v.not_(v.in_(["admin"])),
        "not_(<in_ validator with options ['admin']>)",
        "admin",
    ),
    ("is_callable", Any, v.is_callable(), "is_callable", 1),
    ("a regex with flags", str, v.matches_re("x", re.IGNORECASE), "re.IGNORECASE", "y"),
    ("Python-only regex syntax", str, v.matches_re(r"(?P<a>x)\Z"), "(?P<a>x)", "y"),
    ("a bound that is not a number", str, v.gt("m"), "<Validator for x > m>", "a"),
    ("in_ a string (a substring test)", str, v.in_("abc"), "<in_ validator", "ac"),
    (
        "or_ with a branch that cannot map",
        int,
        v.or_(v.gt(3), _even),
        "or_(<Validator for x > 3>, _even)",
        1,
    ),
]


@pytest.mark.parametrize(
    ("tp", "validator", "named", "refused"),
    [case[1:] for case in UNMAPPED_CASES],
    ids=[case[0] for case in UNMAPPED_CASES],
)
def test_validators_with_no_keyword_are_listed_on_the_property(
    tp: Any, validator: Any, named: str, refused: Any
) -> None:
    """The schema names what it cannot say, and that is exactly what only the worker refuses."""
    cls = _case(tp, validator)
    [listed] = _property(cls)[UNMAPPED]
    assert named in listed
    assert " at 0x" not in listed  # the export is stable from run to run
    assert _schema_accepts(cls, refused)
    assert not _worker_accepts(cls, refused)


def test_an_unmapped_member_validator_is_listed_where_it_applies() -> None:
    """``deep_iterable`` with a custom member check lists it under ``items``, next to the rest."""
    cls = _case(list[int], v.deep_iterable([v.ge(0), _even], v.max_len(3)))
    assert _property(cls) == {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, UNMAPPED: ["_even"]},
        "maxItems": 3,
    }


@attrs.define
class Signup:
    """A class with mapped and unmapped validators, decorated methods included."""

    handle: str = attrs.field(validator=v.and_(v.matches_re(r"[a-z][a-z0-9_]*"), v.max_len(15)))
    age: int = attrs.field(validator=v.and_(v.ge(13), v.lt(150)))
    plan: str = attrs.field(default="free", validator=v.in_(("free", "pro")))

    @age.validator
    def _not_too_round(self, attribute: attrs.Attribute[int], value: int) -> None:
        if value == 100:
            raise ValueError("suspiciously round")


def test_contracts_export_carries_the_constraints(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``taskhop contracts export`` includes the mapped keywords and the unmapped list."""
    module = types.ModuleType("constrained_app")
    app = create_app()
    app.register(define_task("signup", input=Signup, output=Signup))
    module.app = app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "constrained_app", module)
    assert main(["contracts", "export", "--app", "constrained_app:app"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    props = row["input"]["$defs"]["Signup"]["properties"]
    assert props["handle"] == {
        "type": "string",
        "pattern": "^(?:[a-z][a-z0-9_]*)$",
        "maxLength": 15,
    }
    assert props["age"] == {
        "type": "integer",
        "minimum": 13,
        "exclusiveMaximum": 150,
        UNMAPPED: ["Signup._not_too_round"],
    }
    assert props["plan"] == {"type": "string", "enum": ["free", "pro"]}
    app.close()
