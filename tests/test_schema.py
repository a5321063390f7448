"""JSON Schema export of contract types, checked against real payloads with jsonschema."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypedDict

import attrs
import jsonschema
import pytest
from conftest import Resize
from taskhop.sdk import create_app, define_task, make_converter
from taskhop.sdk._cli import main
from taskhop.sdk._schema import json_schema


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Line(TypedDict):
    sku: str
    qty: int


@dataclass
class Order:
    id: str
    lines: list[Line]
    colour: Colour
    when: datetime
    mode: Literal["fast", "slow"] = "slow"
    tags: dict[str, int] = field(default_factory=dict)
    parent: Order | None = None


def check(tp: Any, good: list[Any], bad: list[Any]) -> None:
    schema = json_schema(tp)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    for value in good:
        validator.validate(value)
    for value in bad:
        assert not validator.is_valid(value), value


def test_dataclasses_typeddicts_enums_literals_and_recursion() -> None:
    """A nested, recursive order type: the schema accepts what the worker accepts."""
    ok = {
        "id": "o1",
        "lines": [{"sku": "a", "qty": 1}],
        "colour": "red",
        "when": "2026-01-01T00:00:00Z",
    }
    nested = {**ok, "parent": {**ok, "mode": "fast"}, "tags": {"x": 1}}
    check(
        Order,
        [ok, nested],
        [
            {**ok, "colour": "green"},
            {**ok, "mode": "medium"},
            {**ok, "lines": [{"sku": "a"}]},
            {**ok, "extra": 1},
            {"id": "o1"},
            {**ok, "tags": {"x": "1"}},
        ],
    )
    converter = make_converter()
    for value in (ok, nested):
        converter.structure(value, Order)  # the worker agrees these are valid


def test_attrs_classes_use_their_aliases_and_defaults() -> None:
    """attrs fields with defaults are optional; the rest are required; validators hold."""
    check(
        Resize,
        [{"url": "https://x", "width": 3}, {"url": "http://u", "width": 1, "tags": ["a"]}],
        [
            {"url": "ftp://x", "width": 1},  # matches_re
            {"url": "https://x", "width": 0},  # gt(0)
            {"url": "u"},
            {"url": "u", "width": "3"},
            {"url": "u", "width": 1, "ship_to": {"town": "x"}},
        ],
    )


def test_unsupported_types_are_named() -> None:
    """A type JSON cannot describe is a TypeError naming it."""
    with pytest.raises(TypeError, match="no JSON Schema for type"):
        json_schema(bytes | complex)


def test_contracts_export_prints_every_contract(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``taskhop contracts export`` prints name, version and both schemas per task."""
    import sys
    import types

    module = types.ModuleType("export_app")
    module.app = create_app()  # type: ignore[attr-defined]
    module.app.register(define_task("order", input=Order, output=Line, version=2))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "export_app", module)
    assert main(["contracts", "export", "--app", "export_app:app"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["name"], row["version"]) == ("order", 2)
    assert row["input"]["$ref"] == "#/$defs/Order"
    assert row["output"]["$defs"]["Line"]["required"] == ["sku", "qty"]
    module.app.close()  # type: ignore[attr-defined]


@attrs.define
class _Unused:
    x: int
