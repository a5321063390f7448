"""The job envelope (wire format v1): encoding, strict decoding, job ids, payload conversion.

Every encoded envelope is also checked against ``docs/envelope.schema.json``, and the worked
example in ``docs/protocol.md`` must validate and decode, so the documents cannot drift from
the code.
"""

from __future__ import annotations

import enum
import json
import re
import time as time_module
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from taskhop.static_contracts import (
    PROTOCOL_VERSION,
    Envelope,
    EnvelopeError,
    PayloadError,
    UnsupportedProtocolError,
    format_timestamp,
    new_job_id,
    parse_timestamp,
    to_json_value,
)

ROOT = Path(__file__).resolve().parent.parent
SCHEMA: dict[str, Any] = json.loads(
    (ROOT / "docs" / "envelope.schema.json").read_text(encoding="utf-8")
)
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FormatChecker())
REASONS = {"not_json", "not_object", "not_envelope", "unsupported_version", "invalid_field"}
REQUIRED = ["taskhop", "id", "task", "version", "input", "attempt", "dispatched_at"]
OPTIONAL = [
    "not_before", "idempotency_key", "trace", "headers", "continuation", "input_ref", "restart",
]  # fmt: skip
STAMP = "2025-03-14T09:26:53.589793Z"
MOMENT = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)


def valid(**changes: Any) -> dict[str, Any]:
    """A minimal valid envelope as JSON data, with ``changes`` applied."""
    data: dict[str, Any] = {
        "taskhop": 1,
        "id": "job-1",
        "task": "send-email",
        "version": 1,
        "input": {"to": "ada@example.com"},
        "attempt": 1,
        "dispatched_at": STAMP,
    }
    data.update(changes)
    return data


def without(key: str) -> dict[str, Any]:
    data = valid()
    del data[key]
    return data


def wire(data: object) -> bytes:
    return json.dumps(data).encode()


def decode_error(body: bytes | str) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as info:
        Envelope.decode(body)
    return info.value


def schema_accepts(data: object) -> bool:
    return VALIDATOR.is_valid(data)


def full_envelope() -> Envelope:
    return Envelope(
        task="send-email",
        input={"to": "zoë@example.com", "n": [1, 2.5, None, True], "nested": {"k": "v"}},
        id="019593fa-5d95-72a1-81c3-e5f7a9b2d4e6",
        version=3,
        attempt=2,
        dispatched_at=MOMENT,
        not_before=MOMENT + timedelta(minutes=5),
        idempotency_key="welcome/ada",
        trace={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        headers={"tenant": "acme"},
        continuation={"next": ["a", "b"]},
        extensions={"x-origin": {"service": "billing"}},
    )


# -- strategies -------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
string_maps = st.dictionaries(st.text(max_size=12), st.text(max_size=24), max_size=3)
utc_datetimes = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)
).map(lambda moment: moment.replace(tzinfo=UTC))
extensions = st.dictionaries(
    st.text(max_size=10).map(lambda suffix: f"x-{suffix}"), json_values, min_size=1, max_size=3
)
envelopes = st.builds(
    Envelope,
    task=st.text(min_size=1, max_size=256),
    input=json_values,
    id=st.uuids().map(str) | st.text(min_size=1, max_size=128),
    version=st.integers(min_value=1, max_value=2**53),
    attempt=st.integers(min_value=1, max_value=1000),
    dispatched_at=utc_datetimes,
    not_before=st.none() | utc_datetimes,
    idempotency_key=st.none() | st.text(min_size=1, max_size=256),
    trace=st.none() | string_maps,
    headers=st.none() | string_maps,
    continuation=json_values,
    extensions=st.none() | extensions,
)
# Timestamps in the forms other producers write: offsets, with and without fractions. Kept a
# day inside datetime's range (see test_timestamps_outside_the_utc_range_are_field_errors).
offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
)
iso_timestamps = st.datetimes(
    min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
).map(datetime.isoformat)
any_keys = st.sampled_from([*REQUIRED, *OPTIONAL, "x-trace"]) | st.text(max_size=8)
field_values = json_values | iso_timestamps | st.integers(min_value=-2, max_value=3)


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """A valid envelope with some keys dropped, replaced by arbitrary JSON, or added."""
    data = valid(not_before=STAMP, trace={"traceparent": "t"}, idempotency_key="k")
    for key in draw(st.lists(st.sampled_from(sorted(data)), max_size=3, unique=True)):
        del data[key]
    for key, value in draw(st.dictionaries(any_keys, field_values, max_size=3)).items():
        data[key] = value
    return data


# -- schema and documents ---------------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema_that_checks_formats() -> None:
    """The schema is itself valid, has the documented $id, and date-time formats are enforced."""
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"] == "https://taskhop.dev/schemas/envelope-v1.json"
    assert set(SCHEMA["required"]) == set(REQUIRED)
    assert set(SCHEMA["properties"]) == set(REQUIRED + OPTIONAL)
    # rfc3339-validator must be installed, or format checks pass vacuously.
    assert "date-time" in FormatChecker().checkers
    assert not schema_accepts(valid(dispatched_at="2025-02-30T00:00:00Z"))


@pytest.mark.parametrize(
    "data",
    [
        valid(),
        valid(id="i" * 128, task="t" * 256, idempotency_key="k" * 256),
        valid(dispatched_at="2025-03-14T10:26:53+01:00", not_before="2025-03-14T09:26:53.5Z"),
        valid(input=None, continuation=[1, {"a": None}], trace={}, headers={"h": ""}),
        valid(**{"x-": 1, "x-origin": {"deep": [None]}}),
    ],
    ids=["minimal", "longest", "offsets", "null-input", "extensions"],
)
def test_schema_and_decoder_both_accept_valid_envelopes(data: dict[str, Any]) -> None:
    """Bodies the schema accepts are bodies the decoder accepts."""
    assert schema_accepts(data)
    Envelope.decode(wire(data))


@pytest.mark.parametrize(
    "data",
    [
        without("input"),
        valid(taskhop=2),
        valid(taskhop=True),
        valid(id=""),
        valid(id="i" * 129),
        valid(task="t" * 257),
        valid(version=0),
        valid(attempt="1"),
        valid(dispatched_at="2025-03-14T09:26:53"),
        valid(dispatched_at="2025-03-14t09:26:53z"),
        valid(dispatched_at="2025-03-14T23:59:60Z"),
        valid(not_before=1_700_000_000),
        valid(idempotency_key=""),
        valid(trace={"traceparent": 1}),
        valid(headers=["tenant"]),
        valid(input_ref="s3://bucket/key"),
        valid(**{"X-Upper": 1}),
    ],
)
def test_schema_and_decoder_both_reject_invalid_envelopes(data: dict[str, Any]) -> None:
    """Bodies the decoder rejects are bodies the schema rejects, so producers can check first."""
    assert not schema_accepts(data)
    with pytest.raises(EnvelopeError):
        Envelope.decode(wire(data))


@pytest.mark.parametrize(
    "stamp", ["2025-03-14 09:26:53Z", "2025-03-14T09:26Z", "20250314T092653Z", "2025-03-14T09Z"]
)
def test_schema_rejects_iso_forms_the_lenient_decoder_tolerates(stamp: str) -> None:
    """The schema asks for RFC 3339 proper, though the decoder also takes other ISO 8601 forms."""
    assert not schema_accepts(valid(dispatched_at=stamp))
    assert Envelope.decode(wire(valid(dispatched_at=stamp))).dispatched_at.tzinfo is UTC


def protocol_example() -> dict[str, Any]:
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    match = re.search(r"```json\n(.*?)\n```", text, re.DOTALL)
    assert match, "docs/protocol.md has no ```json block"
    example: dict[str, Any] = json.loads(match.group(1))
    return example


def test_protocol_example_validates_against_the_schema_and_decodes() -> None:
    """The worked example in docs/protocol.md is a valid envelope, as its prose describes it."""
    example = protocol_example()
    VALIDATOR.validate(example)
    envelope = Envelope.decode(json.dumps(example))
    assert set(example) >= set(REQUIRED)
    assert uuid.UUID(envelope.id).version == 7
    assert envelope.not_before == envelope.dispatched_at  # "the same instant", per the prose
    assert envelope.extensions == {"x-origin": example["x-origin"]}
    assert json.loads(envelope.encode())["not_before"] == example["dispatched_at"]


# -- encoding ---------------------------------------------------------------------------------


def test_encode_then_decode_gives_back_the_same_envelope() -> None:
    """An envelope with every field set survives encode() and decode() unchanged."""
    envelope = full_envelope()
    body = envelope.encode()
    assert Envelope.decode(body) == envelope
    assert Envelope.from_dict(envelope.to_dict()) == envelope
    assert b'": ' not in body  # compact separators
    assert b', "' not in body
    assert "zoë".encode() in body  # non-ASCII written as UTF-8, not \u escapes
    data = json.loads(body)
    assert data["taskhop"] == PROTOCOL_VERSION == 1
    assert data["dispatched_at"] == STAMP
    assert data["x-origin"] == {"service": "billing"}
    VALIDATOR.validate(data)


def test_unset_optional_fields_are_left_out_of_the_wire_form() -> None:
    """A minimal envelope writes exactly the seven required keys."""
    envelope = Envelope(task="t", input=None)
    assert list(envelope.to_dict()) == REQUIRED
    assert envelope.to_dict()["input"] is None
    VALIDATOR.validate(envelope.to_dict())


def test_new_envelopes_get_a_uuid7_id_and_an_aware_utc_dispatch_time() -> None:
    """Defaults: a fresh UUIDv7 id, version 1, attempt 1, dispatched now in UTC."""
    before = datetime.now(UTC)
    envelope = Envelope(task="t", input={})
    assert uuid.UUID(envelope.id).version == 7
    assert (envelope.version, envelope.attempt) == (1, 1)
    assert envelope.dispatched_at.tzinfo is UTC
    assert before <= envelope.dispatched_at <= datetime.now(UTC)
    assert Envelope(task="t", input={}).id != envelope.id


@settings(max_examples=200, deadline=None)
@given(envelopes)
def test_arbitrary_envelopes_round_trip_and_match_the_schema(envelope: Envelope) -> None:
    """Any well-formed envelope round-trips byte for byte and validates against the schema."""
    body = envelope.encode()
    decoded = Envelope.decode(body)
    assert decoded == envelope
    assert decoded.encode() == body
    assert Envelope.from_dict(envelope.to_dict()) == envelope
    VALIDATOR.validate(json.loads(body))


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        (float("nan"), "input"),
        (float("inf"), "input"),
        (float("-inf"), "input"),
        ({"a": [1, float("nan")]}, "input.a[1]"),
    ],
)
def test_encode_refuses_nan_and_infinities(bad: object, path: str) -> None:
    """NaN and infinities are not JSON: encode() raises PayloadError naming where they are."""
    envelope = Envelope(task="t", input=bad)
    with pytest.raises(PayloadError) as info:
        envelope.encode()
    assert info.value.path == path


def test_naive_timestamps_cannot_be_encoded() -> None:
    """A naive datetime has no defined instant, so encoding refuses it."""
    with pytest.raises(ValueError, match="timezone-aware"):
        Envelope(task="t", input=1, dispatched_at=datetime(2025, 1, 1)).encode()
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(datetime(2025, 1, 1))


def test_timestamps_are_written_in_utc_with_microseconds_and_z() -> None:
    """format_timestamp converts to UTC and always writes six fractional digits and Z."""
    plus_two = timezone(timedelta(hours=2))
    assert format_timestamp(datetime(2025, 3, 14, 11, 0, tzinfo=plus_two)) == (
        "2025-03-14T09:00:00.000000Z"
    )
    assert format_timestamp(datetime(2025, 3, 14, 9, 0, 0, 5, tzinfo=UTC)) == (
        "2025-03-14T09:00:00.000005Z"
    )
    assert parse_timestamp("2025-03-14T11:00:00+02:00") == datetime(2025, 3, 14, 9, tzinfo=UTC)
    assert parse_timestamp(STAMP).tzinfo is UTC


def test_timestamps_before_year_1000_are_zero_padded() -> None:
    """RFC 3339 years have four digits, so year 999 is written 0999 and decodes again."""
    moment = datetime(999, 1, 1, tzinfo=UTC)
    assert format_timestamp(moment) == "0999-01-01T00:00:00.000000Z"
    envelope = Envelope(task="t", input=None, dispatched_at=moment)
    assert Envelope.decode(envelope.encode()) == envelope


# -- decoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview, lambda b: b.decode()])
def test_decode_accepts_bytes_bytearray_memoryview_and_str(kind: Any) -> None:
    """Every buffer type a queue client may hand over decodes the same."""
    assert Envelope.decode(kind(wire(valid()))).id == "job-1"


def test_bytes_that_are_not_utf8_are_not_json() -> None:
    """Invalid UTF-8 is classified not_json, with no field."""
    error = decode_error(b'{"taskhop": 1, "id": "\xff\xfe"}')
    assert (error.reason, error.field) == ("not_json", None)
    assert "UTF-8" in str(error)


@pytest.mark.parametrize("body", [b"", b"{nope", b'{"taskhop": 1', b"NaN-ish", b"\x00"])
def test_text_that_is_not_json_is_not_json(body: bytes) -> None:
    """A body JSON cannot parse is classified not_json."""
    error = decode_error(body)
    assert (error.reason, error.field) == ("not_json", None)


@pytest.mark.parametrize("body", ["[]", "[1, 2]", '"envelope"', "1", "null", "true"])
def test_json_that_is_not_an_object_is_not_object(body: str) -> None:
    """An array or a scalar is classified not_object."""
    error = decode_error(body)
    assert (error.reason, error.field) == ("not_object", None)


def test_an_object_without_the_marker_is_not_an_envelope() -> None:
    """A body from another producer (no "taskhop" key) is classified not_envelope."""
    error = decode_error(wire(without("taskhop")))
    assert (error.reason, error.field) == ("not_envelope", "taskhop")
    assert type(error) is EnvelopeError


@pytest.mark.parametrize("marker", [2, 0, -1, 1.5, "1", True, False, None, [1], {"v": 1}])
def test_any_other_marker_is_an_unsupported_version(marker: object) -> None:
    """ "taskhop" other than the integer 1 (true included) raises UnsupportedProtocolError."""
    error = decode_error(wire(valid(taskhop=marker)))
    assert isinstance(error, UnsupportedProtocolError)
    assert (error.reason, error.field) == ("unsupported_version", "taskhop")
    assert error.version == marker


@pytest.mark.parametrize("key", [k for k in REQUIRED if k != "taskhop"])
def test_each_missing_required_field_is_named(key: str) -> None:
    """A missing required key is invalid_field, and field names it."""
    error = decode_error(wire(without(key)))
    assert (error.reason, error.field) == ("invalid_field", key)
    assert key in str(error)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("id", 1),
        ("id", ""),
        ("id", None),
        ("id", "i" * 129),
        ("task", ["send-email"]),
        ("task", ""),
        ("task", "t" * 257),
        ("version", "1"),
        ("version", 0),
        ("version", -3),
        ("version", 1.0),
        ("version", True),
        ("version", None),
        ("attempt", "1"),
        ("attempt", 0),
        ("attempt", 2.5),
        ("attempt", True),
        ("dispatched_at", 1_741_944_413),
        ("dispatched_at", "yesterday"),
        ("dispatched_at", "2025-03-14T09:26:53"),
        ("dispatched_at", None),
        ("not_before", "soon"),
        ("not_before", 5),
        ("not_before", "2025-03-14"),
        ("idempotency_key", ""),
        ("idempotency_key", 7),
        ("idempotency_key", "k" * 257),
        ("trace", "traceparent"),
        ("trace", {"traceparent": 1}),
        ("trace", ["a"]),
        ("headers", {"tenant": None}),
        ("headers", []),
    ],
)
def test_each_field_of_the_wrong_type_is_named(key: str, value: object) -> None:
    """A present field of the wrong type or range is invalid_field, and field names it."""
    error = decode_error(wire(valid(**{key: value})))
    assert (error.reason, error.field) == ("invalid_field", key)


@pytest.mark.parametrize("key", ["input_uri", "priority", "X-Upper", "xorigin", "_meta"])
def test_unknown_keys_are_rejected_and_named(key: str) -> None:
    """A key the worker does not understand is an error, never silently ignored."""
    error = decode_error(wire(valid(**{key: "anything"})))
    assert (error.reason, error.field) == ("invalid_field", key)
    assert "x-" in str(error)  # the message tells the producer how to add extensions


def test_several_unknown_keys_name_the_first_in_sorted_order() -> None:
    """With several unknown keys, field names the first one alphabetically."""
    error = decode_error(wire(valid(zeta=1, alpha=2)))
    assert error.field == "alpha"
    assert "'alpha'" in str(error)
    assert "'zeta'" in str(error)


def test_x_keys_are_kept_as_extensions_and_written_back() -> None:
    """Extension keys survive decode and re-encode unchanged, next to the core fields."""
    body = wire(valid(**{"x-origin": {"svc": "billing"}, "x-": [1, None]}))
    envelope = Envelope.decode(body)
    assert envelope.extensions == {"x-origin": {"svc": "billing"}, "x-": [1, None]}
    again = json.loads(envelope.retried(not_before=None).encode())
    assert again["x-origin"] == {"svc": "billing"}
    assert again["x-"] == [1, None]
    assert again["attempt"] == 2


def test_null_optional_fields_decode_as_absent() -> None:
    """An optional key whose value is null is treated as if it were left out."""
    data = valid(not_before=None, idempotency_key=None, trace=None, headers=None, continuation=None)
    envelope = Envelope.decode(wire(data))
    assert envelope == Envelope.decode(wire(valid()))
    assert list(envelope.to_dict()) == REQUIRED


def test_input_null_is_a_value_and_absent_input_is_an_error() -> None:
    """ "input": null is a valid input; a missing "input" key is not."""
    assert Envelope.decode(wire(valid(input=None))).input is None
    assert decode_error(wire(without("input"))).field == "input"


def test_timestamps_with_offsets_decode_to_utc() -> None:
    """Any RFC 3339 offset is accepted and converted to UTC; fractions beyond six are cut."""
    envelope = Envelope.decode(
        wire(valid(dispatched_at="2025-03-14T04:56:53.589793-04:30", not_before=STAMP))
    )
    assert envelope.dispatched_at == MOMENT
    assert envelope.dispatched_at.tzinfo is UTC
    assert envelope.not_before == MOMENT
    assert json.loads(envelope.encode())["dispatched_at"] == STAMP
    long_fraction = Envelope.decode(wire(valid(dispatched_at="2025-03-14T09:26:53.5897939Z")))
    assert long_fraction.dispatched_at == MOMENT


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamps_outside_the_utc_range_are_field_errors(stamp: str) -> None:
    """A valid RFC 3339 timestamp whose UTC instant Python cannot hold is invalid_field."""
    error = decode_error(wire(valid(dispatched_at=stamp)))
    assert (error.reason, error.field) == ("invalid_field", "dispatched_at")


def test_deeply_nested_json_is_an_envelope_error() -> None:
    """A body nested deeper than the parser can follow is an EnvelopeError, not a crash."""
    depth = 100_000
    body = '{"taskhop": 1, "input": ' + "[" * depth + "]" * depth + "}"
    assert decode_error(body).reason == "not_json"


def test_whatever_decode_accepts_can_be_encoded_again() -> None:
    """A lone-surrogate escape is rejected at decode or survives re-encoding (a retry)."""
    body = wire(valid(input="\ud800"))  # json.dumps escapes it: "\\ud800" is valid JSON text
    try:
        envelope = Envelope.decode(body)
    except EnvelopeError:
        return
    envelope.retried(not_before=None).encode()


def decode_or_error(body: bytes) -> Envelope | EnvelopeError:
    """Decode ``body``; an EnvelopeError is returned, any other exception propagates."""
    try:
        return Envelope.decode(body)
    except EnvelopeError as error:
        return error


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_decode_or_raise_envelope_error(body: bytes) -> None:
    """Decoding random bytes returns an Envelope or raises EnvelopeError, nothing else."""
    outcome = decode_or_error(body)
    if isinstance(outcome, EnvelopeError):
        assert outcome.reason in REASONS
    else:
        assert isinstance(outcome, Envelope)


@settings(max_examples=300, deadline=None)
@given(mutated_envelopes() | st.dictionaries(any_keys, field_values, max_size=8))
def test_arbitrary_objects_decode_or_raise_envelope_error(data: dict[str, Any]) -> None:
    """Random JSON objects decode to an Envelope that re-encodes, or raise EnvelopeError."""
    outcome = decode_or_error(wire(data))
    if isinstance(outcome, EnvelopeError):
        assert outcome.reason in REASONS - {"not_json", "not_object"}
        if outcome.reason == "invalid_field":
            assert outcome.field in data or outcome.field in REQUIRED
    else:
        assert Envelope.decode(outcome.encode()) == outcome
        VALIDATOR.validate(json.loads(outcome.encode()))


# -- job ids ----------------------------------------------------------------------------------


def test_new_job_ids_are_uuid7_and_sort_in_creation_order() -> None:
    """1000 consecutive ids are distinct canonical UUIDv7 strings in ascending order."""
    start_ms = time_module.time_ns() // 1_000_000
    ids = [new_job_id() for _ in range(1000)]
    end_ms = time_module.time_ns() // 1_000_000
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for job_id in ids:
        parsed = uuid.UUID(job_id)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == job_id
    first_ms, last_ms = (uuid.UUID(i).int >> 80 for i in (ids[0], ids[-1]))
    # The counter may borrow up to a few ms ahead when one millisecond issues > 4096 ids.
    assert start_ms <= first_ms <= last_ms <= end_ms + 1


# -- delays and retries -----------------------------------------------------------------------


def test_with_delay_sets_not_before_relative_to_now() -> None:
    """with_delay(s) returns a copy due s seconds from now and leaves the original alone."""
    envelope = Envelope(task="t", input=1)
    before = datetime.now(UTC)
    delayed = envelope.with_delay(30)
    after = datetime.now(UTC)
    assert delayed.not_before is not None
    assert before + timedelta(seconds=30) <= delayed.not_before <= after + timedelta(seconds=30)
    assert envelope.not_before is None
    assert delayed.replace(not_before=None) == envelope
    assert 29 < delayed.delay_seconds() <= 30


@pytest.mark.parametrize("seconds", [0, -5, 0.0])
def test_with_no_positive_delay_returns_the_same_envelope(seconds: float) -> None:
    """A zero or negative delay is no delay: the same object comes back."""
    envelope = Envelope(task="t", input=1)
    assert envelope.with_delay(seconds) is envelope


def test_delay_seconds_counts_down_to_not_before_and_never_goes_negative() -> None:
    """delay_seconds is the time left until not_before, 0 when unset or past."""
    envelope = Envelope(task="t", input=1, not_before=MOMENT)
    assert envelope.delay_seconds(now=MOMENT - timedelta(seconds=90)) == 90.0
    assert envelope.delay_seconds(now=MOMENT) == 0.0
    assert envelope.delay_seconds(now=MOMENT + timedelta(hours=1)) == 0.0
    assert envelope.delay_seconds() == 0.0  # MOMENT is in the past
    assert Envelope(task="t", input=1).delay_seconds(now=MOMENT) == 0.0


def test_retried_counts_one_attempt_up_and_sets_not_before() -> None:
    """retried() keeps the job's identity, adds one attempt and replaces not_before."""
    envelope = full_envelope()
    later = MOMENT + timedelta(minutes=1)
    again = envelope.retried(not_before=later)
    assert again.attempt == envelope.attempt + 1
    assert again.not_before == later
    assert again.replace(attempt=envelope.attempt, not_before=envelope.not_before) == envelope
    assert again.retried(not_before=None).not_before is None
    assert again.retried(not_before=None).attempt == envelope.attempt + 2
    assert envelope.attempt == 2  # frozen: the original is untouched


# -- payloads to JSON values ------------------------------------------------------------------


@dataclass
class Blob:
    name: str
    data: object


@attrs.define
class Point:
    x: int
    y: float


class Color(enum.Enum):
    RED = "red"
    BLUE = 2


@dataclass
class Order:
    id: uuid.UUID
    at: datetime
    day: date
    slot: time
    color: Color
    where: Point
    tags: tuple[str, ...]
    extra: dict[str, object]


def test_to_json_value_converts_dataclasses_attrs_enums_times_and_uuids() -> None:
    """Typed payloads become plain JSON data, recursively."""
    order_id = uuid.UUID("019593fa-5d95-72a1-81c3-e5f7a9b2d4e6")
    order = Order(
        id=order_id,
        at=MOMENT,
        day=date(2025, 3, 14),
        slot=time(9, 30),
        color=Color.RED,
        where=Point(1, 2.5),
        tags=("a", "b"),
        extra={"blue": Color.BLUE, "flag": True, "none": None},
    )
    assert to_json_value(order) == {
        "id": str(order_id),
        "at": "2025-03-14T09:26:53.589793+00:00",
        "day": "2025-03-14",
        "slot": "09:30:00",
        "color": "red",
        "where": {"x": 1, "y": 2.5},
        "tags": ["a", "b"],
        "extra": {"blue": 2, "flag": True, "none": None},
    }
    assert to_json_value(True) is True  # a bool stays a bool, not 1


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": [1, b"x"]}, "input.a[1]"),
        ({"tags": {"a", "b"}}, "input.tags"),
        (frozenset(), "input"),
        ({1: "one"}, "input"),
        ({"a": {("t",): 1}}, "input.a"),
        ([1.0, float("nan")], "input[1]"),
        ({"x": float("inf")}, "input.x"),
        ({"x": float("-inf")}, "input.x"),
        (object(), "input"),
        (Blob("b", b"\x00"), "input.data"),
        ([Point(1, float("nan"))], "input[0].y"),
        ({"k": [{"z": bytearray(b"x")}]}, "input.k[0].z"),
    ],
)
def test_to_json_value_names_the_path_of_the_first_bad_value(value: object, path: str) -> None:
    """What JSON cannot carry raises PayloadError whose .path points at it."""
    with pytest.raises(PayloadError) as info:
        to_json_value(value)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")
    assert isinstance(info.value, TypeError)


def test_to_json_value_paths_start_from_the_given_root() -> None:
    """The path argument names the root, e.g. "output" for a handler's result."""
    with pytest.raises(PayloadError) as info:
        to_json_value({"a": b""}, path="output")
    assert info.value.path == "output.a"


def test_an_enum_whose_value_is_not_json_is_refused() -> None:
    """Enum members convert through their value, so a bytes value is refused at that path."""

    class Raw(enum.Enum):
        BYTES = b"\x01"

    with pytest.raises(PayloadError) as info:
        to_json_value({"mode": Raw.BYTES})
    assert info.value.path == "input.mode"


def test_an_offloaded_input_is_a_reference_with_a_null_input() -> None:
    """``input_ref`` with ``"input": null`` is valid for both decoder and schema, and kept."""
    data = valid(input=None, input_ref="s3://bucket/taskhop/payloads/j.json")
    assert schema_accepts(data)
    envelope = Envelope.decode(wire(data))
    assert envelope.input_ref == "s3://bucket/taskhop/payloads/j.json"
    assert Envelope.decode(envelope.encode()) == envelope


def test_an_input_next_to_its_reference_is_refused() -> None:
    """Input and input_ref together are ambiguous: refused at construction and decode."""
    with pytest.raises(EnvelopeError, match="must be null when input_ref") as caught:
        Envelope(task="t", input={"a": 1}, input_ref="s3://b/k")
    assert caught.value.field == "input"
    error = decode_error(wire(valid(input_ref="s3://b/k")))
    assert (error.reason, error.field) == ("invalid_field", "input")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("idempotency_key", 7),
        ("idempotency_key", ""),
        ("trace", {"traceparent": 1}),
        ("headers", ["tenant"]),
    ],
)
def test_what_decode_would_refuse_is_refused_at_construction(field: str, value: object) -> None:
    """An envelope built in code can always be encoded and decoded again: bad keys, traces
    and headers are refused when it is made, naming the field, as decode would."""
    with pytest.raises(EnvelopeError) as built:
        Envelope(task="t", input=None, **{field: value})  # type: ignore[arg-type]
    decoded = decode_error(wire(valid(**{field: value})))
    assert built.value.field == decoded.field == field
