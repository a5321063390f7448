"""Bad requests over HTTP get a classified answer with the field at fault, never a crash."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, TypedDict

import pytest
from conftest import EmailSent, SendEmail, send_email
from taskhop.lambda_worker import HttpEndpoint
from taskhop.sdk import App, JobContext, JobRecord, StoreError, create_app, static_contract
from taskhop.sdk.memory import MemoryQueue, MemoryStore
from taskhop.static_contracts import (
    Envelope,
    SignatureError,
    TransportError,
    Verifier,
    sign,
    signed_headers,
)
from test_http import SECRET, answer, v2_event


class Readings(TypedDict):
    values: list[float]


measure = static_contract("measure", input=Readings, output=int)


def app_with(queue: MemoryQueue | None = None, store: MemoryStore | None = None) -> App:
    app = create_app(queue=queue or MemoryQueue(), store=store or MemoryStore())
    app.implement(send_email, lambda data, ctx: EmailSent("m"))
    app.implement(measure, lambda data, ctx: len(data["values"]))
    return app


def call(endpoint: HttpEndpoint, body: bytes) -> dict[str, Any]:
    """The endpoint's raw response to ``body``, signed now."""
    return endpoint(v2_event(body, signed_headers(SECRET, body)))


def post(endpoint: HttpEndpoint, body: bytes) -> tuple[int, dict[str, Any]]:
    return answer(call(endpoint, body))


def raw_envelope(input_text: str, **extra: Any) -> bytes:
    """A signed-ready body whose input is written by hand (JSON an encoder would not write)."""
    head = json.dumps(
        {
            "taskhop": 1,
            "id": "j-raw",
            "task": "measure",
            "version": 1,
            "attempt": 1,
            "dispatched_at": "2026-01-01T00:00:00Z",
            **extra,
        }
    )
    return (head[:-1] + f',"input":{input_text}}}').encode()


# -- malformed signature headers: 401 with a reason -----------------------------------------


@pytest.mark.parametrize(
    "timestamp",
    [
        "¹⁷⁶⁷²²⁵⁶⁰⁰",  # superscript digits: str.isdigit() says yes, int() raises
        "١٧٦٧٢٢٥٦٠٠",  # Arabic-Indic digits: int() accepts them, the wire format does not
        "1" * 5_000,  # past int()'s 4,300-digit limit
        "1" * 13,
        " 1767225600",
        "-1767225600",
        "1767225600.5",
    ],
)
def test_a_malformed_timestamp_is_refused_401_never_raised(timestamp: str) -> None:
    """Only 1 to 12 ASCII digits are a timestamp; anything else is "malformed", also over HTTP."""
    body = b"{}"
    headers = {
        "x-taskhop-timestamp": timestamp,
        "x-taskhop-signature": "v1=" + sign(SECRET, timestamp, body),
    }
    with pytest.raises(SignatureError) as caught:
        Verifier([SECRET]).verify(headers, body)
    assert caught.value.reason == "malformed"
    endpoint = HttpEndpoint(app_with(), secrets=[SECRET])
    status, data = answer(endpoint(v2_event(body, headers)))
    assert (status, data["error"]["reason"]) == (401, "malformed")


@pytest.mark.parametrize(
    "signature", ["v1=" + "é" * 64, "v1=" + "a" * 63, "v1=" + "g" * 64, "v1=", "V1=" + "a" * 64]
)
def test_a_malformed_signature_is_refused_401_never_raised(signature: str) -> None:
    """compare_digest raises on non-ASCII text: the shape is checked before it is compared."""
    headers = {"x-taskhop-timestamp": "1767225600", "x-taskhop-signature": signature}
    with pytest.raises(SignatureError) as caught:
        Verifier([SECRET]).verify(headers, b"{}", now=1767225600)
    assert caught.value.reason == "malformed"


def test_upper_case_hex_signatures_still_verify() -> None:
    """Hex is case-insensitive: a producer writing upper-case digits is not refused."""
    headers = {
        "x-taskhop-timestamp": "1767225600",
        "x-taskhop-signature": "v1=" + sign(SECRET, "1767225600", b"{}").upper(),
    }
    Verifier([SECRET]).verify(headers, b"{}", now=1767225600)


# -- envelope and input errors carry their field ----------------------------------------------


def test_envelope_errors_carry_field_and_fields() -> None:
    """A decode error names the key as error.field and as error.fields[0].path."""
    endpoint = HttpEndpoint(app_with(), secrets=[SECRET])
    good = Envelope(task="send-email", input={"to": "a", "subject": "s"}).to_dict()
    status, data = post(endpoint, json.dumps({**good, "bogus": 1}).encode())
    error = data["error"]
    assert (status, error["type"], error["reason"], error["field"]) == (
        400,
        "EnvelopeError",
        "invalid_field",
        "bogus",
    )
    assert [f["path"] for f in error["fields"]] == ["bogus"]
    assert post(endpoint, json.dumps({**good, "attempt": 0}).encode())[1]["error"]["field"] == (
        "attempt"
    )
    status, data = post(endpoint, b"[1]")
    assert (status, data["error"]["reason"]) == (400, "not_object")
    assert "field" not in data["error"]
    assert post(endpoint, json.dumps({"task": "x"}).encode())[1]["error"]["field"] == "taskhop"


def test_validation_errors_carry_fields_with_paths() -> None:
    """An invalid input lists every failing field path."""
    endpoint = HttpEndpoint(app_with(), secrets=[SECRET])
    status, data = post(endpoint, Envelope(task="send-email", input={"to": 1}).encode())
    assert status == 400
    assert data["error"]["type"] == "ValidationError"
    assert sorted(f["path"] for f in data["error"]["fields"]) == ["input.subject", "input.to"]


@pytest.mark.parametrize("mode", ["enqueue", "run"])
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_in_a_signed_input_answer_400_with_the_path(
    mode: Any, number: str
) -> None:
    """NaN, Infinity and 1e400 are not JSON: 400 naming the field, nothing sent or run."""
    queue = MemoryQueue()
    endpoint = HttpEndpoint(app_with(queue), secrets=[SECRET], mode=mode)
    status, data = post(endpoint, raw_envelope(f'{{"values":[1.5,{number}]}}'))
    assert status == 400
    assert data["error"]["field"].startswith("input")
    assert data["error"]["fields"][0]["path"].startswith("input")
    assert queue.pending == 0


# -- the queue: growth past the limit and transport errors -------------------------------------


def test_a_body_that_grows_past_the_limit_when_re_encoded_answers_413() -> None:
    """900 KB of 1e5 re-encodes to 2 MB (100000.0): 413 with a JSON body, nothing sent."""
    queue = MemoryQueue()
    endpoint = HttpEndpoint(app_with(queue), secrets=[SECRET])
    body = raw_envelope('{"values":[' + ",".join(["1e5"] * 225_000) + "]}")
    assert len(body) < 1024 * 1024
    status, data = post(endpoint, body)
    assert (status, data["error"]["type"]) == (413, "TooLarge")
    assert "re-encodes" in data["error"]["message"]
    assert queue.pending == 0


class RefusingQueue(MemoryQueue):
    """A queue that refuses every send with a given TransportError."""

    def __init__(self, retryable: bool) -> None:
        super().__init__()
        self.retryable = retryable

    def send_many(self, envelopes: Sequence[Envelope]) -> None:
        raise TransportError(
            "envelope of 1200000 bytes is over the queue's 1048576-byte message limit",
            job_ids=tuple(e.id for e in envelopes),
            retryable=self.retryable,
        )


@pytest.mark.parametrize("retryable", [True, False])
def test_any_transport_error_answers_a_json_503_never_an_exception(retryable: bool) -> None:
    """Whatever the queue raises as TransportError becomes 503 with Retry-After."""
    endpoint = HttpEndpoint(app_with(RefusingQueue(retryable)), secrets=[SECRET])
    body = Envelope(task="send-email", input={"to": "a", "subject": "s"}).encode()
    response = call(endpoint, body)
    status, data = answer(response)
    assert (status, data["error"]["type"]) == (503, "TransportError")
    assert response["headers"]["retry-after"] == "1"


class BrokenStore(MemoryStore):
    """A store that cannot be read: DynamoDB throttled past botocore's retries."""

    def get(self, job_id: str) -> JobRecord | None:
        raise StoreError("throttled")


def test_a_store_outage_answers_503_and_sends_nothing() -> None:
    """The endpoint cannot tell a duplicate without its store: 503, retry later."""
    queue = MemoryQueue()
    endpoint = HttpEndpoint(app_with(queue, BrokenStore()), secrets=[SECRET])
    body = Envelope(task="send-email", input={"to": "a", "subject": "s"}).encode()
    response = call(endpoint, body)
    assert (response["statusCode"], response["headers"]["retry-after"]) == (503, "1")
    assert queue.pending == 0


# -- nothing escapes, nothing sensitive is logged ------------------------------------------------


class ExplodingQueue(MemoryQueue):
    """A queue with a bug: its error message quotes what it was given."""

    def send_many(self, envelopes: Sequence[Envelope]) -> None:
        raise RuntimeError(f"bug while sending {envelopes[0].encode()!r}")


def test_an_unforeseen_error_answers_500_and_logs_no_body(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No exception escapes the endpoint; the log names the error type, not its message."""
    endpoint = HttpEndpoint(app_with(ExplodingQueue()), secrets=[SECRET])
    secret_input = {"to": "ann@example.com", "subject": "password hunter2"}
    body = Envelope(task="send-email", input=secret_input, idempotency_key="welcome/ann").encode()
    with caplog.at_level(logging.DEBUG, logger="taskhop"):
        status, data = post(endpoint, body)
    assert (status, data["error"]["type"]) == (500, "InternalError")
    assert "RuntimeError" in caplog.text
    for sensitive in ("hunter2", "ann@example.com", "welcome/ann", SECRET):
        assert sensitive not in caplog.text


def test_bad_base64_answers_400() -> None:
    """A body marked base64 that is not answers 400, never an exception."""
    endpoint = HttpEndpoint(app_with(), secrets=[SECRET])
    event = {**v2_event(b"", {}), "body": "not base64!"}
    assert endpoint(event)["statusCode"] == 400


def test_the_http_path_logs_no_keys_bodies_or_secrets(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refusals, queue and store failures and runs: no idempotency key, input or secret logged."""

    def handler(data: SendEmail, ctx: JobContext) -> EmailSent:
        raise ValueError("the mail server is down")  # a handler's own text is its own

    key, address = "welcome/zoe@example.com", "zoe@example.com"
    bodies = [
        Envelope(task="send-email", input={"to": address, "subject": "s"}, idempotency_key=key)
        for _ in range(3)
    ]
    with caplog.at_level(logging.DEBUG):
        for queue, store in [(RefusingQueue(True), MemoryStore()), (MemoryQueue(), BrokenStore())]:
            endpoint = HttpEndpoint(app_with(queue, store), secrets=[SECRET])
            for envelope in bodies:
                post(endpoint, envelope.encode())
            assert endpoint(v2_event(bodies[0].encode(), {}))["statusCode"] == 401
        run_app = create_app(queue=MemoryQueue(), store=MemoryStore())
        run_app.implement(send_email, handler)
        runner = HttpEndpoint(run_app, secrets=[SECRET], mode="run")
        assert post(runner, bodies[0].encode())[0] in (422, 503)
    assert caplog.records  # the failures above were logged
    printed = capsys.readouterr().out  # the job lines (emit_job)
    assert '"source":"http"' in printed
    for sensitive in (key, address, SECRET):
        assert sensitive not in caplog.text
        assert sensitive not in printed
