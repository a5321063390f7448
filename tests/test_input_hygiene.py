"""Bad input and bounded messages: NaN and infinities refused, errors small, keys hashed.

``docs/protocol.md`` forbids NaN, Infinity and numbers that overflow a double (``1e400``);
Python's json accepts all three, so each way in (bytes, a parsed direct-invocation event, an
encode, a handler's result, ``taskhop run --input``) is checked here. A job record must fit a
DynamoDB item whatever a validator quoted, and a raw idempotency key never appears in taskhop's
own messages.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from conftest import EmailSent, Resize, Resized, resize, send_email
from taskhop.lambda_worker import HttpEndpoint
from taskhop.sdk import (
    App,
    DuplicateJobInProgress,
    ErrorInfo,
    FieldError,
    JobStatus,
    ValidationError,
    create_app,
    define_task,
    static_contract,
)
from taskhop.sdk._cli import main
from taskhop.sdk._redact import key_digest
from taskhop.static_contracts import (
    Envelope,
    EnvelopeError,
    PayloadError,
    Reason,
    dumps,
    signed_headers,
)

GOOD = Envelope(task="t", id="j1", input={"a": 1}).to_dict()


def body_with(input_json: str, **top: str) -> str:
    """An envelope's JSON text with ``input`` (and any top-level key) written out verbatim."""
    fields = {k: json.dumps(v) for k, v in GOOD.items() if k != "input"}
    fields.update(top)
    fields["input"] = input_json
    return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"


# -- decode: NaN, Infinity and 1e400 are not JSON ---------------------------------------------


@pytest.mark.parametrize(
    ("literal", "shown"),
    [
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        ("1e400", "1e400"),
        ("-1e400", "-1e400"),
        ("1" + "0" * 400 + ".5", "1" + "0" * 23 + "..."),  # overflows without an exponent
    ],
)
def test_decode_refuses_non_finite_numbers_naming_their_path(literal: str, shown: str) -> None:
    """Each forbidden number is a not_json EnvelopeError whose message names its path."""
    body = body_with(f'{{"items": [{{"price": 1.5}}, {{"price": {literal}}}]}}')
    with pytest.raises(EnvelopeError) as caught:
        Envelope.decode(body.encode())
    assert caught.value.reason is Reason.NOT_JSON
    assert caught.value.field == "input"
    assert str(caught.value).startswith(f"input.items[1].price: {shown} is not JSON")


def test_decode_names_a_non_finite_number_outside_the_input() -> None:
    """A NaN in an envelope field is named by that field."""
    with pytest.raises(EnvelopeError) as caught:
        Envelope.decode(body_with("1", attempt="NaN"))
    assert caught.value.field == "attempt"
    assert str(caught.value).startswith("attempt: NaN is not JSON")


def test_decode_still_accepts_finite_floats_and_underflow() -> None:
    """Ordinary floats, exponents and numbers that underflow to zero stay valid."""
    envelope = Envelope.decode(body_with("[1.5, -2e-3, 1e308, 1e-400, 10]"))
    assert envelope.input == [1.5, -0.002, 1e308, 0.0, 10]


def test_a_non_finite_number_in_a_huge_key_gives_a_small_message() -> None:
    """The path is clipped: a body cannot make its error (stored, logged) large."""
    key = "k" * 100_000
    with pytest.raises(EnvelopeError) as caught:
        Envelope.decode(body_with(f'{{"{key}": NaN}}'))
    assert len(str(caught.value)) < 300


def test_from_dict_refuses_what_a_lenient_parser_let_through() -> None:
    """A direct invocation's event is parsed by Lambda (NaN accepted): from_dict refuses it."""
    event = json.loads(body_with('{"a": {"b": [0.5, -Infinity]}}'))
    with pytest.raises(EnvelopeError) as caught:
        Envelope.from_dict(event)
    assert caught.value.reason is Reason.NOT_JSON
    assert caught.value.field == "input"
    assert str(caught.value).startswith("input.a.b[1]: -Infinity is not JSON")


def test_decode_errors_do_not_quote_string_values_from_the_body() -> None:
    """A wrongly typed field is described by its JSON kind, not by its (private) text."""
    with pytest.raises(EnvelopeError) as caught:
        Envelope.decode(body_with("1", attempt=json.dumps("ann@example.com" * 1000)))
    assert "ann@example.com" not in str(caught.value)
    assert "got string" in str(caught.value)


@pytest.mark.parametrize(
    "top",
    [
        {"dispatched_at": json.dumps("2026-01-01" + "x" * 100_000)},
        {"x" * 100_000: "1"},
        {f"k{i}": "1" for i in range(1000)},
        {"version": json.dumps(["ann@example.com"] * 10_000)},
        {"attempt": "-1" + "0" * 4000},
    ],
)
def test_every_decode_error_is_small_whatever_the_body(top: dict[str, str]) -> None:
    """An error is logged and dead-lettered with its message: a body cannot make it large."""
    with pytest.raises(EnvelopeError) as caught:
        Envelope.decode(body_with("1", **top))
    assert len(str(caught.value)) < 500
    assert "ann@example.com" not in str(caught.value)


# -- encode: refused with a path --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": [1, float("nan")]}, "value.a[1]"),
        (float("inf"), "value"),
        ({"s": {1, 2}}, "value.s"),
    ],
)
def test_dumps_raises_payload_error_with_the_path(value: Any, path: str) -> None:
    """dumps names where the bad value is, instead of json's pathless ValueError."""
    with pytest.raises(PayloadError) as caught:
        dumps(value)
    assert caught.value.path == path


def test_dumps_names_the_root_it_is_given() -> None:
    """``path=`` names the value being encoded (``result``, ``input``)."""
    with pytest.raises(PayloadError) as caught:
        dumps({"score": float("-inf")}, path="result")
    assert caught.value.path == "result.score"


def test_dumps_of_a_circular_value_is_a_payload_error() -> None:
    """A list that holds itself is named, not a RecursionError or a pathless ValueError."""
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(PayloadError, match="circular"):
        dumps(loop)


def test_envelope_encode_names_the_field_from_the_envelope_key() -> None:
    """encode() paths start at the envelope key: ``input.x``, ``continuation.y``."""
    with pytest.raises(PayloadError) as caught:
        Envelope(task="t", input=1, continuation={"y": float("nan")}).encode()
    assert caught.value.path == "continuation.y"


def test_dispatch_refuses_a_non_finite_number_with_its_path() -> None:
    """A producer cannot send 1e400 (it is inf in Python) either."""
    app = create_app()
    bound = app.register(resize)
    with pytest.raises(PayloadError) as caught:
        bound.dispatch({"url": "https://x", "width": float("1e400")})  # type: ignore[arg-type]
    assert caught.value.path == "input.width"
    app.close()


# -- over HTTP: a signed NaN body is a 400, not a crash ---------------------------------------


def test_a_signed_nan_body_in_enqueue_mode_is_answered_400() -> None:
    """The endpoint decodes with the strict decoder, so nothing unencodable reaches the queue."""
    import base64

    app = create_app()
    app.implement(send_email, lambda data, ctx: EmailSent("m"))
    endpoint = HttpEndpoint(app, secrets=["s"])
    body = body_with('{"to": "a", "subject": NaN}').replace('"task":"t"', '"task":"send-email"')
    raw = body.encode()
    event = {
        "version": "2.0",
        "rawPath": "/jobs",
        "headers": signed_headers("s", raw),
        "requestContext": {"http": {"method": "POST", "path": "/jobs"}},
        "body": base64.b64encode(raw).decode(),
        "isBase64Encoded": True,
    }
    response = endpoint(event)
    app.close()
    assert response["statusCode"] == 400
    error = json.loads(response["body"])["error"]
    assert error["reason"] == "not_json"
    assert error["message"].startswith("input.subject: NaN is not JSON")


# -- results: a handler returning NaN is an OutputError ---------------------------------------


@attrs.frozen
class Score:
    value: float


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("1e400")])
def test_a_handler_returning_a_non_finite_float_fails_with_output_error(
    app: App, harness: Any, bad: float
) -> None:
    """The result is never stored: the job fails (not retried) with the output path."""
    scored = app.implement(
        define_task("score", input=Resize, output=Score), lambda data, ctx: Score(bad)
    )
    handle = scored.dispatch(Resize(url="https://x", width=1))
    harness.join()
    record = app.store.get(handle.id) if app.store is not None else None
    assert record is not None
    assert record.status is JobStatus.FAILED
    assert record.result is None
    assert record.error is not None
    assert record.error.type == "OutputError"
    assert "output.value:" in record.error.message


# -- every stored message is bounded ----------------------------------------------------------


def test_a_validator_quoting_a_500_kb_value_is_rejected_with_its_paths(
    app: App, harness: Any
) -> None:
    """attrs' matches_re quotes the value: the record keeps both field paths, under 16 KB."""
    app.implement(resize, lambda data, ctx: Resized("k"))
    bound = app.get("resize")
    url = "ftp://" + "x" * 500_000
    handle = bound.dispatch({"url": url, "width": -1}, skip_validation=True)  # type: ignore[arg-type]
    harness.join()
    record = app.store.get(handle.id) if app.store is not None else None
    assert record is not None
    assert record.status is JobStatus.REJECTED
    assert record.error is not None
    assert [f.path for f in record.error.fields] == ["input.url", "input.width"]
    assert len(json.dumps(record.error.to_dict()).encode()) < 16_000


def test_error_info_bounds_every_text_it_holds() -> None:
    """type, message, each field's path and message, and the fields' total are all bounded."""
    huge = "é" * 300_000  # two UTF-8 bytes each: the bound counts bytes, as DynamoDB does
    info = ErrorInfo(
        type=huge,
        message=huge,
        fields=tuple(FieldError(f"input.f{i}.{huge}", huge) for i in range(500)),
    )
    size = len(json.dumps(info.to_dict(), ensure_ascii=False).encode())
    assert size < 16_000
    assert info.fields  # the first fields are kept, clipped
    assert all(f.path.startswith(f"input.f{i}.") for i, f in enumerate(info.fields))
    assert f"+{500 - len(info.fields)} more field error(s) not kept" in info.message
    assert ErrorInfo.from_dict(info.to_dict()) == info  # reading back changes nothing


def test_error_info_keeps_small_errors_exactly() -> None:
    """Bounds clip only what is over them."""
    fields = (FieldError("input.to", "expected string, got integer"),)
    info = ErrorInfo("ValidationError", "invalid input for task 'x'", fields)
    assert info.message == "invalid input for task 'x'"
    assert info.fields == fields


def test_validation_error_text_quotes_clipped_messages() -> None:
    """The exception's text (tracebacks, logs) is small; ``errors`` keeps every message."""
    error = ValidationError("t", [FieldError("input.url", "x" * 500_000)])
    assert len(str(error)) < 1000
    assert len(error.errors[0].message) == 500_000


# -- idempotency keys are hashed in messages --------------------------------------------------


def test_key_digest_is_a_short_stable_sha256_prefix() -> None:
    """``sha256:`` and 16 hex characters of the key's SHA-256, the same every time."""
    key = "welcome:ann@example.com"
    expected = "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    assert key_digest(key) == expected
    assert key_digest("welcome:bob@example.com") != expected


def test_duplicate_job_in_progress_names_the_key_by_its_digest() -> None:
    """The message (stored in the waiting job's record, logged) has no raw key."""
    key = "welcome:ann@example.com"
    error = DuplicateJobInProgress(key, "job-1")
    assert key not in str(error)
    assert key_digest(key) in str(error)
    assert error.key == key  # code that catches it still has the key


def test_a_job_waiting_on_a_held_key_records_no_raw_key(app: App, harness: Any) -> None:
    """The retrying record of a job whose key is held carries the digest only."""
    key = "order:ann@example.com"
    assert app.store is not None
    app.store.claim_key(key, "someone-else", lease_until=4_102_444_800.0)  # held till 2100
    app.implement(send_email, lambda data, ctx: EmailSent("m"))
    handle = app.get("send-email").dispatch({"to": "a", "subject": "s"}, idempotency_key=key)
    record = None
    for _ in range(200):
        record = app.store.get(handle.id)
        if record is not None and record.error is not None:
            break
        import time

        time.sleep(0.05)
    assert record is not None
    assert record.error is not None
    assert record.error.type == "DuplicateJobInProgress"
    assert key not in record.error.message
    assert key_digest(key) in record.error.message


# -- taskhop run --input ----------------------------------------------------------------------


def test_taskhop_run_refuses_nan_in_its_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--input '{"n": NaN}'`` is refused as not JSON, as the worker would refuse it."""
    (tmp_path / "nan_app.py").write_text(
        "from typing import TypedDict\n"
        "from taskhop.sdk import create_app, static_contract\n"
        "class In(TypedDict):\n    n: float\n"
        "app = create_app()\n"
        "app.implement(static_contract('half', input=In, output=float), lambda d, c: d['n'] / 2)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        for text in ('{"n": NaN}', '{"n": 1e400}'):
            assert main(["run", "half", "--input", text, "--app", "nan_app:app", "--json"]) == 2
            answer = json.loads(capsys.readouterr().out)
            assert answer["error"]["type"] == "InvalidJSON"
        assert main(["run", "half", "--input", '{"n": 3}', "--app", "nan_app:app"]) == 0
        assert json.loads(capsys.readouterr().out) == 1.5
    finally:
        import sys

        module = sys.modules.pop("nan_app", None)
        if module is not None:
            module.app.close()


def test_static_contract_jobs_with_nan_never_reach_a_handler() -> None:
    """A worker given a NaN body dead-letters it as poison (not_json), the handler unrun."""
    app = create_app()
    runs: list[Any] = []

    def handler(data: dict[str, float], ctx: Any) -> int:
        runs.append(data)
        return 0

    app.implement(static_contract("t", input=dict[str, float], output=int), handler)
    outcome = app.worker().process(body_with('{"x": NaN}').encode())
    app.close()
    assert outcome.kind.value == "poison"
    assert outcome.reason == Reason.NOT_JSON
    assert runs == []
