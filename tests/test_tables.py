"""Table triggers, the pure part: definitions, filters compiled and matched, records decoded."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, TypedDict

import attrs
import pytest
from taskhop.sdk._converter import make_converter
from taskhop.sdk._errors import ValidationError
from taskhop.sdk._tables import (
    Change,
    F,
    change_input,
    changed,
    check_where,
    define_table,
    filter_criteria,
    matches,
    structure_change,
)
from taskhop.static_contracts import ContractError


@attrs.frozen
class Address:
    city: str
    zip_codes: list[int]


@attrs.frozen
class Order:
    pk: str
    sk: str
    status: Literal["new", "paid", "refunded"]
    total: int
    paid: bool = False
    weight: float = 0.0
    price: Decimal = Decimal(0)
    note: str | None = None
    tags: frozenset[str] = frozenset()
    sizes: set[int] = attrs.field(factory=lambda: set[int]())
    blobs: frozenset[bytes] = frozenset()
    photo: bytes = b""
    address: Address | None = None
    counts: dict[str, int] = attrs.field(factory=lambda: dict[str, int]())


ORDERS = define_table("orders", item=Order, key=("pk", "sk"))


def image(**attributes: Any) -> dict[str, Any]:
    return {"pk": {"S": "o#1"}, "sk": {"S": "v0"}, **attributes}


def record(
    name: str,
    *,
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    identity: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A record in the shape Lambda delivers (AWS Lambda developer guide, DynamoDB example)."""
    stream: dict[str, Any] = {
        "ApproximateCreationDateTime": 1693997155.0,
        "Keys": {"pk": {"S": "o#1"}, "sk": {"S": "v0"}},
        "SequenceNumber": "111",
        "SizeBytes": 26,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new is not None:
        stream["NewImage"] = new
    if old is not None:
        stream["OldImage"] = old
    out: dict[str, Any] = {
        "eventID": "c4ca4238a0b923820dcc509a6f75849b",
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": stream,
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024",
    }
    if identity is not None:
        out["userIdentity"] = identity
    return out


def patterns(criteria: dict[str, Any]) -> list[Any]:
    return [json.loads(f["Pattern"]) for f in criteria["Filters"]]


# --- definitions ---------------------------------------------------------------------------


def test_define_table_keeps_name_item_and_key() -> None:
    assert (ORDERS.name, ORDERS.item, ORDERS.key) == ("orders", Order, ("pk", "sk"))
    assert define_table("t", item=Order, key="pk").key == ("pk",)


def test_key_must_name_a_field() -> None:
    with pytest.raises(ContractError, match="key attribute 'id' is not a field of Order"):
        define_table("orders", item=Order, key="id")


def test_item_types_accepted_and_refused() -> None:
    @dataclass(frozen=True)
    class Row:
        id: str

    class Doc(TypedDict):
        id: str

    assert define_table("rows", item=Row, key="id").fields == {"id": str}
    assert define_table("docs", item=Doc, key="id").fields == {"id": str}
    with pytest.raises(ContractError, match="attrs class, a dataclass or a TypedDict"):
        define_table("bad", item=dict, key="id")


def test_unknown_attribute_in_where() -> None:
    with pytest.raises(
        ContractError, match=r"unknown attribute 'nope' for table 'orders' \(fields: pk, sk"
    ):
        check_where(ORDERS, F.nope == 1)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (F.total > 10, "numeric comparisons"),
        (F.status == 3, "3 is not a string"),
        (F.status.is_in(["paid", "lost"]), "'lost' is not one of"),
        (F.total == "3", "'3' is not a number"),
        (F.total == float("nan"), "attribute 'total': nan is not a number DynamoDB can store"),
        (F.total == float("inf"), "attribute 'total': inf is not a number DynamoDB can store"),
        (F.total.is_in([1, float("-inf")]), "attribute 'total': -inf is not a number"),
        (F.total.not_equal(Decimal("NaN")), "attribute 'total': Decimal\\('NaN'\\) is not a"),
        (F.tags == "a", "only string, number and boolean"),
        (F.total.prefix("1"), "prefix needs a string"),
        ((F.status == "paid") & (F.status == "new"), "appears twice"),
    ],
)
def test_where_refused_at_definition(where: Any, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        filter_criteria(ORDERS, where=where)


def test_negation_applies_to_one_condition() -> None:
    with pytest.raises(TypeError, match="one condition"):
        _ = ~((F.pk == "a") & (F.sk == "b"))
    with pytest.raises(TypeError, match="numeric"):
        _ = ~(F.total > 1)


def test_on_takes_known_kinds() -> None:
    with pytest.raises(ContractError, match="on= takes"):
        filter_criteria(ORDERS, on={"update"})  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


# --- compiling -----------------------------------------------------------------------------


def test_no_where_filters_on_event_names_only() -> None:
    criteria = filter_criteria(ORDERS, on={"insert", "modify"})
    assert criteria == {"Filters": [{"Pattern": '{"eventName": ["INSERT", "MODIFY"]}'}]}


def test_equality_compiles_to_the_typed_leaf() -> None:
    criteria = filter_criteria(ORDERS, on={"insert", "modify"}, where=F.status == "paid")
    assert criteria == {
        "Filters": [
            {
                "Pattern": '{"eventName": ["INSERT", "MODIFY"], '
                '"dynamodb": {"NewImage": {"status": {"S": ["paid"]}}}}'
            }
        ]
    }


def test_and_of_several_operators() -> None:
    where = (
        F.status.is_in(["paid", "refunded"])
        & (F.total == 10)
        & (F.paid == True)  # noqa: E712 (a filter, not a comparison)
        & F.note.exists()
        & F.pk.prefix("o#")
        & (F.sk != "v9")
    )
    [pattern] = patterns(filter_criteria(ORDERS, on={"insert"}, where=where))
    assert pattern == {
        "eventName": ["INSERT"],
        "dynamodb": {
            "NewImage": {
                "status": {"S": ["paid", "refunded"]},
                "total": {"N": ["10"]},
                "paid": {"BOOL": [True]},
                "note": {"S": [{"exists": True}]},
                "pk": {"S": [{"prefix": "o#"}]},
                "sk": {"S": [{"anything-but": ["v9"]}]},
            }
        },
    }


def test_or_gives_one_filter_per_alternative_and_removes_read_the_old_image() -> None:
    where = (F.status == "paid") | ~F.pk.prefix("x")
    assert patterns(filter_criteria(ORDERS, where=where)) == [
        {"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["paid"]}}}},
        {"eventName": ["REMOVE"], "dynamodb": {"OldImage": {"status": {"S": ["paid"]}}}},
        {
            "eventName": ["INSERT", "MODIFY"],
            "dynamodb": {"NewImage": {"pk": {"S": [{"anything-but": {"prefix": "x"}}]}}},
        },
        {
            "eventName": ["REMOVE"],
            "dynamodb": {"OldImage": {"pk": {"S": [{"anything-but": {"prefix": "x"}}]}}},
        },
    ]


def test_numbers_are_written_as_dynamodb_writes_them() -> None:
    where = F.price.is_in([Decimal("1.50"), 100, 2.5, Decimal("1E+2")])
    [pattern] = patterns(filter_criteria(ORDERS, on={"insert"}, where=where))
    assert pattern["dynamodb"]["NewImage"]["price"] == {"N": ["1.5", "100", "2.5", "100"]}


def test_too_many_patterns_refused() -> None:
    where = (F.pk == "a") | (F.pk == "b") | (F.pk == "c")
    with pytest.raises(ContractError, match="6 patterns"):
        filter_criteria(ORDERS, where=where)


# --- matching agrees with the compiled patterns --------------------------------------------


@pytest.mark.parametrize(
    ("where", "yes", "no"),
    [
        (F.status == "paid", image(status={"S": "paid"}), image(status={"S": "new"})),
        (F.total == 10, image(total={"N": "10"}), image(total={"N": "11"})),
        (F.paid == True, image(paid={"BOOL": True}), image(paid={"BOOL": False})),  # noqa: E712
        (F.note.exists(), image(note={"S": "x"}), image(note={"NULL": True})),
        (F.note.not_exists(), image(), image(note={"S": "x"})),
        (F.pk.prefix("o#"), image(), image(pk={"S": "x#1"})),
        (F.status != "paid", image(status={"S": "new"}), image(status={"S": "paid"})),
        (F.status != "paid", image(status={"S": "new"}), image()),  # absent: no match
        (~F.pk.prefix("x"), image(), image(pk={"S": "x1"})),
        (
            (F.status == "paid") & (F.total == 10),
            image(status={"S": "paid"}, total={"N": "10"}),
            image(status={"S": "paid"}, total={"N": "9"}),
        ),
        (
            (F.status == "paid") | (F.total == 10),
            image(status={"S": "new"}, total={"N": "10"}),
            image(status={"S": "new"}, total={"N": "9"}),
        ),
    ],
)
def test_matches_agrees_with_the_pattern(where: Any, yes: Any, no: Any) -> None:
    criteria = filter_criteria(ORDERS, where=where)
    assert matches(criteria, record("INSERT", new=yes))
    assert matches(criteria, record("REMOVE", old=yes))
    assert not matches(criteria, record("INSERT", new=no))
    assert not matches(criteria, record("REMOVE", old=no))


def test_matches_event_names() -> None:
    criteria = filter_criteria(ORDERS, on={"insert"})
    assert matches(criteria, record("INSERT", new=image()))
    assert not matches(criteria, record("MODIFY", new=image(), old=image()))


def test_numeric_matcher_never_matches_a_string_as_in_aws() -> None:
    criteria = {"Filters": [{"Pattern": json.dumps({"dynamodb": {"n": [{"numeric": [">", 1]}]}})}]}
    assert matches(criteria, {"dynamodb": {"n": 2}})
    assert not matches(criteria, {"dynamodb": {"n": 1}})
    assert not matches(criteria, {"dynamodb": {"n": "2"}})


# --- decoding ------------------------------------------------------------------------------


def decode(rec: dict[str, Any], item: Any = Order) -> Change[Any]:
    converter = make_converter()

    return structure_change(converter, change_input(rec), item, task="on-paid")


def test_decodes_every_attribute_type() -> None:
    b64 = base64.b64encode
    new = image(
        status={"S": "paid"},
        total={"N": "42"},
        paid={"BOOL": True},
        weight={"N": "1.25"},
        price={"N": "19.99"},
        note={"NULL": True},
        tags={"SS": ["a", "b"]},
        sizes={"NS": ["1", "2"]},
        blobs={"BS": [b64(b"\x00").decode(), b64(b"\x01").decode()]},
        photo={"B": b64(b"\xffpng").decode()},
        address={"M": {"city": {"S": "Oslo"}, "zip_codes": {"L": [{"N": "150"}, {"N": "151"}]}}},
        counts={"M": {"x": {"N": "3"}}},
    )
    change = decode(record("INSERT", new=new))
    assert change.new == Order(
        pk="o#1",
        sk="v0",
        status="paid",
        total=42,
        paid=True,
        weight=1.25,
        price=Decimal("19.99"),
        note=None,
        tags=frozenset({"a", "b"}),
        sizes={1, 2},
        blobs=frozenset({b"\x00", b"\x01"}),
        photo=b"\xffpng",
        address=Address("Oslo", [150, 151]),
        counts={"x": 3},
    )
    assert change.new is not None
    assert type(change.new.total) is int
    assert type(change.new.weight) is float
    assert change.kind == "insert"
    assert change.old is None
    assert change.keys == {"pk": "o#1", "sk": "v0"}
    assert change.event_id == "c4ca4238a0b923820dcc509a6f75849b"
    assert change.sequence == "111"
    assert change.approximate_at == datetime.fromtimestamp(1693997155, UTC)
    assert not change.ttl_expiry


def test_modify_has_both_images() -> None:
    old = image(status={"S": "new"}, total={"N": "1"})
    new = image(status={"S": "paid"}, total={"N": "1"})
    change = decode(record("MODIFY", new=new, old=old))
    assert change.kind == "modify"
    assert change.old is not None
    assert change.old.status == "new"
    assert change.new is not None
    assert change.new.status == "paid"


def test_typeddict_and_dataclass_items() -> None:
    class Doc(TypedDict):
        id: str
        n: Decimal

    change = decode(record("INSERT", new={"id": {"S": "a"}, "n": {"N": "7"}}), Doc)
    assert change.new == {"id": "a", "n": Decimal("7")}


def errors_of(rec: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        decode(rec)
    return [(e.path, e.message) for e in info.value.errors]


def test_missing_attribute_names_the_field() -> None:
    assert errors_of(record("INSERT", new=image(status={"S": "paid"}))) == [
        ("input.new.total", "required field missing")
    ]


def test_wrong_type_names_the_field() -> None:
    new = image(status={"S": "paid"}, total={"S": "10"})
    assert errors_of(record("INSERT", new=new)) == [
        ("input.new.total", "expected integer, got string")
    ]


def test_exponent_for_an_int_is_an_error_not_a_float() -> None:
    new = image(status={"S": "paid"}, total={"N": "1e3"})
    assert errors_of(record("INSERT", new=new)) == [
        ("input.new.total", "bad N value: expected an integer")
    ]


@pytest.mark.parametrize("number", ["123456789.5", "1e3", "not-a-number-98765", "Infinity", "NaN"])
def test_a_bad_number_is_named_by_its_path_never_quoted(number: str) -> None:
    """A decode error is recorded and logged: it names the field and what was expected only."""
    new = image(status={"S": "paid"}, total={"N": number})
    [(path, message)] = errors_of(record("INSERT", new=new))
    assert path == "input.new.total"
    assert message.startswith("bad N value: expected")
    assert number not in message
    assert number.lower() not in message


def test_a_bad_event_name_is_not_quoted() -> None:
    rec = record("INSERT", new=image(status={"S": "paid"}, total={"N": "1"}))
    rec["eventName"] = "SECRET-ish"
    with pytest.raises(ValidationError) as info:
        change_input(rec)
    assert [(e.path, e.message) for e in info.value.errors] == [
        ("record.eventName", "expected INSERT, MODIFY or REMOVE")
    ]


def test_errors_in_the_old_image_and_nested_paths() -> None:
    old = image(status={"S": "paid"}, total={"N": "1"}, address={"M": {"city": {"N": "1"}}})
    paths = [p for p, _ in errors_of(record("REMOVE", old=old))]
    assert paths == ["input.old.address.city", "input.old.address.zip_codes"]


def test_not_an_attribute_value() -> None:
    new = image(status={"S": "paid"}, total={"X": "1"})
    assert errors_of(record("INSERT", new=new)) == [
        ("input.new.total", "not a DynamoDB attribute value")
    ]


def test_bad_base64() -> None:
    new = image(status={"S": "paid"}, total={"N": "1"}, photo={"B": "not base64!"})
    [(path, message)] = errors_of(record("INSERT", new=new))
    assert path == "input.new.photo"
    assert message.startswith("bad B value")


def test_change_input_is_json_data() -> None:
    data = change_input(record("INSERT", new=image(status={"S": "paid"}, total={"N": "1"})))
    assert json.loads(json.dumps(data)) == data
    assert data["new"]["total"] == {"N": "1"}


def test_ttl_expiry_is_flagged() -> None:
    old = image(status={"S": "paid"}, total={"N": "1"})
    ttl = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    assert decode(record("REMOVE", old=old, identity=ttl)).is_ttl_expiry
    assert not decode(record("REMOVE", old=old)).ttl_expiry
    other = {"type": "Service", "principalId": "someone.else"}
    assert not decode(record("REMOVE", old=old, identity=other)).ttl_expiry


def test_change_input_refuses_a_record_of_no_known_kind() -> None:
    with pytest.raises(ValidationError, match=r"record\.eventName"):
        change_input({"eventName": "OTHER", "dynamodb": {}})


# --- changed -------------------------------------------------------------------------------


def test_changed() -> None:
    old = image(status={"S": "new"}, tags={"SS": ["a", "b"]})
    same = image(status={"S": "new"}, tags={"SS": ["b", "a"]})
    paid = image(status={"S": "paid"}, tags={"SS": ["a", "b"]})
    assert not changed(record("MODIFY", old=old, new=same), ["status", "tags"])
    assert changed(record("MODIFY", old=old, new=paid), ["status"])
    assert not changed(record("MODIFY", old=old, new=paid), ["tags"])
    assert changed(record("INSERT", new=paid), ["status"])
    assert changed(record("REMOVE", old=old), ["status"])
    assert changed(change_input(record("MODIFY", old=old, new=paid)), ["status"])
    assert not changed(change_input(record("MODIFY", old=old, new=same)), ["status"])


def test_the_converter_keeps_decimals_exact_on_the_wire() -> None:
    converter = make_converter()

    assert converter.unstructure(Decimal("0.10")) == "0.10"
    assert converter.structure("0.10", Decimal) == Decimal("0.10")
    with pytest.raises(ValueError, match="decimal number as a string"):
        converter.structure(0.1, Decimal)
    with pytest.raises(ValueError, match="decimal number as a string"):
        converter.structure("NaN", Decimal)
