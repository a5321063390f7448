"""TypedDict ``Required`` / ``NotRequired`` hold under ``from __future__ import annotations``."""

from __future__ import annotations

import sys
from typing import Any

import jsonschema
import pytest
from future_contracts import Address, Line, Order, Placed, place_order, place_order_static
from taskhop.sdk import JobContext, ValidationError, create_app
from taskhop.sdk._converter import typeddict_required_keys
from taskhop.sdk._schema import json_schema
from taskhop.sdk.testing import run_task

GOOD: list[dict[str, Any]] = [
    {"id": "o1", "lines": [{"sku": "a"}]},
    {"id": "o1", "lines": [{"sku": "a", "qty": 2}], "note": "n", "priority": 1},
    {"id": "o1", "lines": [], "ship_to": {"street": "1 Main St"}},
    {"id": "o1", "lines": [], "ship_to": {"street": "1 Main St", "town": "Oz"}},
]
BAD: list[tuple[dict[str, Any], str]] = [
    ({"lines": []}, "input.id"),
    ({"id": "o1", "lines": [{"qty": 1}]}, "input.lines[0].sku"),
    ({"id": "o1", "lines": [], "ship_to": {"town": "Oz"}}, "input.ship_to.street"),
    ({"id": "o1", "lines": [], "note": 3}, "input.note"),
]


def _placed(data: Order, ctx: JobContext) -> Placed:
    return Placed(order_id=data["id"])


def test_the_module_really_postpones_its_annotations() -> None:
    """The fixture exercises the bug: the metaclass alone gets the keys wrong before 3.14."""
    if sys.version_info < (3, 14):
        assert "note" in Order.__required_keys__
        assert "street" not in Address.__required_keys__
    assert typeddict_required_keys(Order) == {"id", "lines"}
    assert typeddict_required_keys(Address) == {"street"}
    assert typeddict_required_keys(Line) == {"sku"}


@pytest.mark.parametrize("contract", [place_order, place_order_static])
def test_the_worker_accepts_inputs_without_optional_keys(contract: Any) -> None:
    """The worker's one validator leaves NotRequired keys out and still requires Required ones."""
    app = create_app()
    app.implement(contract, _placed)
    entry = app.implementation(contract.name)
    assert entry is not None
    for value in GOOD:
        assert entry.validate(value) == value
    for value, path in BAD:
        with pytest.raises(ValidationError) as caught:
            entry.validate(value)
        assert [e.path for e in caught.value.errors] == [path]
    app.close()


def test_optional_keys_may_be_missing_on_dispatch_and_in_the_output() -> None:
    """A producer sends an Order without its optional keys; the output's optional key too."""
    app = create_app()
    bound = app.implement(place_order, _placed)
    assert bound.envelope(Order(id="o1", lines=[Line(sku="a")])).input == GOOD[0]
    assert run_task(bound, Order(id="o1", lines=[])) == {"order_id": "o1"}
    app.close()


def test_the_exported_schema_agrees_with_the_worker() -> None:
    """The schema's ``required`` follows Required/NotRequired and accepts what the worker does."""
    schema = json_schema(Order)
    defs = schema["$defs"]
    assert defs["Order"]["required"] == ["id", "lines"]
    assert defs["Line"]["required"] == ["sku"]
    assert defs["Address"]["required"] == ["street"]
    assert defs["Order"]["properties"]["priority"] == {"type": "integer"}
    assert json_schema(Placed)["$defs"]["Placed"]["required"] == ["order_id"]
    validator = jsonschema.Draft202012Validator(schema)
    for value in GOOD:
        validator.validate(value)
    for value, _ in BAD:
        assert not validator.is_valid(value), value
