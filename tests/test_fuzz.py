"""Malformed input, generated: the decoder, the Lambda entrypoint and the HTTP endpoint never
crash; every bad input gets a classified answer."""

from __future__ import annotations

import base64
import json
from typing import Any

from conftest import EmailSent, SendEmail, send_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.memory import MemoryQueue, MemoryStore
from lambda_worker import HttpEndpoint, LocalContext, UnrecognisedEvent, make_handler
from sdk import JobContext, create_app
from static_contracts import Envelope, EnvelopeError, signed_headers

SECRET = "fuzz-secret"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
envelope_keys = st.sampled_from(
    [
        "taskhop",
        "id",
        "task",
        "version",
        "input",
        "attempt",
        "dispatched_at",
        "not_before",
        "idempotency_key",
        "trace",
        "headers",
        "input_ref",
        "x-a",
    ]
)
near_envelopes = st.dictionaries(envelope_keys, json_values, max_size=10).map(
    lambda d: {"taskhop": 1, "task": "send-email", **d}
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_envelopes.map(lambda v: json.dumps(v).encode()),
)


class StubSqs:
    """Accepts the calls the runtime makes while settling records."""

    def __getattr__(self, name: str) -> Any:
        return lambda **kwargs: {"QueueUrl": "https://sqs.local/q"}


def handler(data: SendEmail, ctx: JobContext) -> EmailSent:
    return EmailSent(data["to"])


APP = create_app(queue=MemoryQueue(), store=MemoryStore())
APP.implement(send_email, handler)
LAMBDA = make_handler(APP, sqs_client=StubSqs(), dlq_url="https://sqs.local/dlq")
ENDPOINT = HttpEndpoint(APP, secrets=[SECRET])
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(bodies)
def test_the_decoder_classifies_every_malformed_body(body: bytes) -> None:
    """Envelope.decode returns an envelope or raises EnvelopeError with a reason."""
    reasons = {"not_json", "not_object", "not_envelope", "unsupported_version", "invalid_field"}
    reason = None
    try:
        Envelope.decode(body)
    except EnvelopeError as exc:
        reason = exc.reason
    assert reason is None or reason in reasons


@FUZZ
@given(st.lists(bodies, min_size=1, max_size=5))
def test_sqs_batches_of_malformed_bodies_never_crash(batch: list[bytes]) -> None:
    """Any SQS batch gets a partial batch response; nothing raises."""
    records = [
        {
            "messageId": f"m{i}",
            "receiptHandle": f"r{i}",
            "body": body.decode("utf-8", "replace"),
            "attributes": {"ApproximateReceiveCount": "1"},
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
        }
        for i, body in enumerate(batch)
    ]
    answer = LAMBDA({"Records": records}, LocalContext())
    assert set(answer) == {"batchItemFailures"}


@FUZZ
@given(json_values)
def test_arbitrary_events_are_served_or_refused_by_name(event: Any) -> None:
    """Any JSON event: an answer, or UnrecognisedEvent (never another exception)."""
    try:
        answer = LAMBDA(event, LocalContext())
    except UnrecognisedEvent:
        return
    assert isinstance(answer, dict)


@FUZZ
@given(bodies, st.booleans(), st.sampled_from(["POST", "GET", "PUT"]), st.booleans())
def test_http_requests_always_get_a_classified_status(
    body: bytes, sign: bool, method: str, b64: bool
) -> None:
    """Signed or not, any body: a response with a known status; never an exception."""
    headers = signed_headers(SECRET, body) if sign else {}
    event = {
        "version": "2.0",
        "rawPath": "/jobs",
        "headers": headers,
        "requestContext": {"http": {"method": method}},
        "body": base64.b64encode(body).decode() if b64 else body.decode("utf-8", "replace"),
        "isBase64Encoded": b64,
    }
    answer = ENDPOINT(event)
    assert answer["statusCode"] in {202, 400, 401, 404, 405, 413}
    assert "error" in json.loads(answer["body"]) or answer["statusCode"] == 202
