"""Malformed input, generated: the decoder, the Lambda entrypoint and the HTTP endpoint never
crash; every bad input gets a classified answer."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from conftest import EmailSent, SendEmail, send_email
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from taskhop.lambda_worker import HttpEndpoint, LocalContext, UnrecognisedEvent, make_handler
from taskhop.sdk import JobContext, create_app
from taskhop.sdk.memory import MemoryQueue, MemoryStore
from taskhop.static_contracts import Envelope, EnvelopeError, signed_headers

SECRET = "fuzz-secret"
finite_json = st.recursive(  # what a JSON encoder writes: no infinities
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
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


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> bytes:
    """A valid envelope with one key replaced by any JSON value, or removed: both paths."""
    data = Envelope(task="send-email", input={"to": "a@example.com", "subject": "hi"}).to_dict()
    key = draw(envelope_keys)
    if draw(st.booleans()) and key in data:
        del data[key]
    else:
        data[key] = draw(json_values)
    return json.dumps(data).encode()


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_envelopes.map(lambda v: json.dumps(v).encode()),
    mutated_envelopes(),
)


def decodes(body: bytes) -> bool:
    try:
        Envelope.decode(body)
    except EnvelopeError:
        return False
    return True


class StubSqs:
    """Accepts the calls the runtime makes while settling records, and keeps them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def call(**kwargs: Any) -> dict[str, Any]:
            self.calls.append((name, kwargs))
            return {"QueueUrl": "https://sqs.local/q"}

        return call


def handler(data: SendEmail, ctx: JobContext) -> EmailSent:
    return EmailSent(data["to"])


APP = create_app(queue=MemoryQueue(), store=MemoryStore())
APP.implement(send_email, handler)
SQS = StubSqs()
LAMBDA = make_handler(APP, sqs_client=SQS, dlq_url="https://sqs.local/dlq")
ENDPOINT = HttpEndpoint(APP, secrets=[SECRET])
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(bodies)
def test_the_decoder_classifies_every_malformed_body(body: bytes) -> None:
    """Envelope.decode returns an envelope or raises EnvelopeError with a reason."""
    reasons = {"not_json", "not_object", "not_envelope", "unsupported_version", "invalid_field"}
    if not decodes(body):
        with pytest.raises(EnvelopeError) as refused:
            Envelope.decode(body)
        assert refused.value.reason in reasons
        return
    envelope = Envelope.decode(body)
    assert Envelope.decode(envelope.encode()) == envelope  # what is accepted is kept whole


def test_the_generated_bodies_reach_both_answers() -> None:
    """The strategy makes envelopes the decoder accepts, and ones it refuses."""
    assert decodes(find(mutated_envelopes(), decodes))
    assert not decodes(find(mutated_envelopes(), lambda body: not decodes(body)))


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
    SQS.calls.clear()
    answer = LAMBDA({"Records": records}, LocalContext())
    assert set(answer) == {"batchItemFailures"}
    failed = [f["itemIdentifier"] for f in answer["batchItemFailures"]]
    assert set(failed) <= {r["messageId"] for r in records}
    dead = [
        kw["MessageBody"]
        for name, kw in SQS.calls
        if name == "send_message" and kw["QueueUrl"] == "https://sqs.local/dlq"
    ]
    poison = [r["body"] for r in records if not decodes(r["body"].encode())]
    # Each poison body is dead-lettered once (the rest are jobs: recorded, retried, or failed).
    assert sorted(d for d in dead if not decodes(d.encode())) == sorted(poison)


text = st.text(max_size=12)
shaped_events = st.one_of(
    json_values,
    st.fixed_dictionaries(  # SQS-shaped, with fields missing or of the wrong type
        {"Records": st.lists(st.dictionaries(
            st.sampled_from(["messageId", "body", "attributes", "eventSource", "eventSourceARN"]),
            json_values | st.just("aws:sqs"),
        ), min_size=1, max_size=3)}
    ),
    st.fixed_dictionaries(  # HTTP API-shaped
        {"version": st.just("2.0"), "rawPath": text, "body": json_values,
         "requestContext": st.fixed_dictionaries({"http": st.dictionaries(text, json_values)})}
    ),
    st.fixed_dictionaries(  # EventBridge-shaped
        {"source": st.just("aws.events"), "detail-type": st.just("Scheduled Event"),
         "resources": st.lists(text | json_values, max_size=2), "detail": json_values}
    ),
    st.fixed_dictionaries({"task": st.just("send-email") | text, "input": json_values}),
)  # fmt: skip


@FUZZ
@given(shaped_events)
def test_arbitrary_events_are_served_or_refused_by_name(event: Any) -> None:
    """Any JSON event: an answer, or a refusal that says why (never another exception)."""
    try:
        answer = LAMBDA(event, LocalContext())
    except (UnrecognisedEvent, EnvelopeError):  # a direct invocation's envelope names its field
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
    assert answer["statusCode"] in {200, 202, 400, 401, 404, 405, 413}
    # 200: a job id seen before (a replay or retry), answered as that job.
    assert "error" in json.loads(answer["body"]) or answer["statusCode"] in (200, 202)
    if not sign:
        assert answer["statusCode"] not in (200, 202)  # nothing unsigned is ever accepted


@FUZZ
@given(st.dictionaries(st.sampled_from(["to", "subject", "cc"]), finite_json, max_size=3))
def test_signed_requests_are_enqueued_exactly_when_the_input_is_valid(data: Any) -> None:
    """A signed envelope is enqueued (202) if its input fits the contract, else 400."""
    body = Envelope(task="send-email", input=data).encode()
    event = {
        "version": "2.0",
        "rawPath": "/jobs",
        "headers": signed_headers(SECRET, body),
        "requestContext": {"http": {"method": "POST"}},
        "body": body.decode(),
        "isBase64Encoded": False,
    }
    valid = set(data) == {"to", "subject"} and all(type(v) is str for v in data.values())
    assert ENDPOINT(event)["statusCode"] == (202 if valid else 400)
