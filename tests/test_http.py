"""Signed HTTP delivery: the signature, the transport twins, the endpoint, end to end."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import EmailSent, SendEmail, send_email
from taskhop.backends.http import AsyncHttpTransport, HttpTransport
from taskhop.lambda_worker import HttpEndpoint, make_handler
from taskhop.lambda_worker._httpd import serve_function_url
from taskhop.sdk import App, JobContext, create_app
from taskhop.sdk.memory import MemoryQueue, MemoryStore
from taskhop.static_contracts import (
    Envelope,
    Producer,
    SignatureError,
    TransportError,
    Verifier,
    sign,
    signed_headers,
)

SECRET = "s3cr3t-current"
NEXT = "s3cr3t-next"


# -- the signature ------------------------------------------------------------------------


def test_the_signature_recipe_matches_its_worked_example() -> None:
    """HMAC-SHA256 over timestamp + "." + body: the worked example in docs/protocol.md."""
    body = (
        b'{"taskhop":1,"id":"j1","task":"send-email","version":1,"input":{},"attempt":1,'
        b'"dispatched_at":"2026-01-01T00:00:00.000000Z"}'
    )
    expected = "b80ab5f68462f90d661c504b1dafb9fd9f160091cf8e68df39c302d74d23c8db"
    assert sign("topsecret", "1767225600", body) == expected
    docs = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    assert expected in docs
    assert body.decode() in docs


def test_verification_accepts_current_and_next_keys() -> None:
    """During a rotation both secrets verify; anything else does not."""
    verifier = Verifier([SECRET, NEXT])
    for secret in (SECRET, NEXT):
        body = f'{{"k": "{secret}"}}'.encode()
        verifier.verify(signed_headers(secret, body), body)
    with pytest.raises(SignatureError) as caught:
        verifier.verify(signed_headers("wrong", b"{}"), b"{}")
    assert caught.value.reason == "invalid"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda h, b: (h, b + b" "), "invalid"),  # tampered body
        (lambda h, b: ({}, b), "missing"),
        (lambda h, b: ({**h, "x-taskhop-signature": "sha1=abc"}, b), "malformed"),
        (lambda h, b: ({**h, "x-taskhop-timestamp": "soon"}, b), "malformed"),
    ],
)
def test_bad_signatures_are_refused_with_a_reason(change: Any, reason: str) -> None:
    """Tampering, missing or malformed headers are each named."""
    body = b'{"a": 1}'
    headers, sent = change(signed_headers(SECRET, body), body)
    with pytest.raises(SignatureError) as caught:
        Verifier([SECRET]).verify(headers, sent)
    assert caught.value.reason == reason


def test_expired_and_replayed_signatures_are_refused() -> None:
    """Outside the skew window, or seen before, a valid signature is still refused."""
    verifier = Verifier([SECRET], max_skew=60)
    old = signed_headers(SECRET, b"{}", now=1_000)
    with pytest.raises(SignatureError, match="more than 60s") as caught:
        verifier.verify(old, b"{}", now=2_000)
    assert caught.value.reason == "expired"
    fresh = signed_headers(SECRET, b"{}")
    verifier.verify(fresh, b"{}")
    with pytest.raises(SignatureError) as replay:
        verifier.verify(fresh, b"{}")
    assert replay.value.reason == "replayed"
    with pytest.raises(ValueError, match="at least one"):
        Verifier([""])


# -- the endpoint -------------------------------------------------------------------------


def handler(data: SendEmail, ctx: JobContext) -> EmailSent:
    return EmailSent(f"m-{data['to']}")


@pytest.fixture
def worker() -> Iterator[App]:
    """A worker app on the memory backend (its queue is served, so enqueued jobs run)."""
    app = create_app()
    app.implement(send_email, handler)
    yield app
    app.close()


def v2_event(
    body: bytes,
    headers: dict[str, str],
    *,
    method: str = "POST",
    path: str = "/jobs",
    b64: bool = True,
) -> dict[str, Any]:
    return {
        "version": "2.0",
        "rawPath": path,
        "headers": headers,
        "requestContext": {"http": {"method": method, "path": path}},
        "body": base64.b64encode(body).decode() if b64 else body.decode(),
        "isBase64Encoded": b64,
    }


def answer(response: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return response["statusCode"], json.loads(response["body"])


def test_enqueue_mode_validates_then_answers_202(worker: App) -> None:
    """A signed, valid job is enqueued and answered with its id; the worker then runs it."""
    endpoint = HttpEndpoint(worker, secrets=[SECRET])
    body = Envelope(task="send-email", input={"to": "a", "subject": "s"}).encode()
    status, data = answer(endpoint(v2_event(body, signed_headers(SECRET, body))))
    assert status == 202
    handle = worker.get("send-email").handle(data["job_id"])
    assert handle.result(5) == EmailSent("m-a")


def test_rest_api_v1_events_are_served_too(worker: App) -> None:
    """API Gateway REST (payload v1) events: httpMethod, path, plain body."""
    endpoint = HttpEndpoint(worker, secrets=[SECRET])
    body = Envelope(task="send-email", input={"to": "b", "subject": "s"}).encode()
    event = {
        "httpMethod": "POST",
        "path": "/jobs",
        "headers": signed_headers(SECRET, body),
        "requestContext": {"stage": "prod"},
        "body": body.decode(),
        "isBase64Encoded": False,
    }
    assert answer(endpoint(event))[0] == 202


def test_every_refusal_has_its_status(worker: App) -> None:
    """401 signature, 413 size, 400 envelope and input (field paths), 404 task, 405 method."""
    endpoint = HttpEndpoint(worker, secrets=[SECRET], max_body=2048)

    def post(body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        return answer(
            endpoint(v2_event(body, signed_headers(SECRET, body) if headers is None else headers))
        )

    good = Envelope(task="send-email", input={"to": "a", "subject": "s"}).encode()
    assert post(good, {})[0] == 401
    assert post(good, signed_headers("wrong", good))[1]["error"]["reason"] == "invalid"
    assert post(b"x" * 3000)[0] == 413
    assert post(b"not json")[1]["error"]["reason"] == "not_json"
    unknown = Envelope(task="nope", input={}).encode()
    assert post(unknown)[0] == 404
    status, data = post(Envelope(task="send-email", input={"to": 1, "subject": "s"}).encode())
    assert status == 400
    assert [f["path"] for f in data["error"]["fields"]] == ["input.to"]
    assert answer(endpoint(v2_event(b"", {}, method="DELETE")))[0] == 405
    assert answer(endpoint(v2_event(b"", {}, method="GET", path="/health"))) == (
        200,
        {"status": "ok", "mode": "enqueue"},
    )


def test_the_endpoint_validates_with_the_workers_own_versions() -> None:
    """Old inputs are migrated then checked, unmigratable ones refused, newer ones accepted."""
    from taskhop.sdk import ImplementOptions

    app = create_app(queue=MemoryQueue(), store=MemoryStore())
    v3 = send_email.replace(version=3)
    app.implement(v3, handler, ImplementOptions(migrate=[lambda d: {**d, "subject": "s"}]))
    endpoint = HttpEndpoint(app, secrets=[SECRET])

    def post(envelope: Envelope) -> tuple[int, dict[str, Any]]:
        body = envelope.encode()
        return answer(endpoint(v2_event(body, signed_headers(SECRET, body))))

    assert post(Envelope(task="send-email", input={"to": "a"}, version=2))[0] == 202
    status, data = post(Envelope(task="send-email", input={"to": 1}, version=2))
    assert (status, [f["path"] for f in data["error"]["fields"]]) == (400, ["input.to"])
    status, data = post(Envelope(task="send-email", input={"to": "a"}, version=1))
    assert (status, data["error"]["type"]) == (400, "MigrationError")
    assert post(Envelope(task="send-email", input={"to": 1}, version=4))[0] == 202
    offloaded = Envelope(task="send-email", input=None, version=3, input_ref="s3://b/k")
    assert post(offloaded)[0] == 202
    app.close()


def test_run_mode_answers_with_the_outcome() -> None:
    """mode="run" runs the handler in the request and answers with its result or error."""
    app = create_app(queue=MemoryQueue(), store=MemoryStore())
    app.implement(send_email, handler)
    endpoint = HttpEndpoint(app, secrets=[SECRET], mode="run")
    body = Envelope(task="send-email", input={"to": "c", "subject": "s"}).encode()
    status, data = answer(endpoint(v2_event(body, signed_headers(SECRET, body))))
    assert (status, data["status"], data["result"]) == (200, "succeeded", {"message_id": "m-c"})
    app.close()


def test_signature_checks_come_before_anything_is_read(
    worker: App, caplog: pytest.LogCaptureFixture
) -> None:
    """An unsigned body is refused without being decoded, and bodies never reach the logs."""
    endpoint = HttpEndpoint(worker, secrets=[SECRET])
    secret_body = b'{"password": "hunter2"}'
    assert answer(endpoint(v2_event(secret_body, {})))[0] == 401
    assert "hunter2" not in caplog.text
    assert SECRET not in caplog.text


# -- the transport ------------------------------------------------------------------------


def test_transport_retries_429_and_5xx_honouring_retry_after() -> None:
    """Transient answers are retried (Retry-After respected); the 202 is returned."""
    seen: list[int] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        Verifier([SECRET]).verify(dict(request.headers), request.content)
        if len(seen) == 1:
            return httpx.Response(429, headers={"retry-after": "0"})
        if len(seen) == 2:
            return httpx.Response(503)
        return httpx.Response(202, json={"job_id": "j"})

    transport = HttpTransport(
        "https://worker.example/jobs",
        secret=SECRET,
        transport=httpx.MockTransport(respond),
        backoff=0.001,
    )
    assert transport.post(Envelope(task="t", input={})) == {"job_id": "j"}
    assert len(seen) == 3


def test_transport_never_retries_validation_errors_and_shows_their_fields() -> None:
    """A 400 is final: the TransportError carries the endpoint's field paths."""
    calls: list[int] = []

    def respond(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        error = {
            "type": "ValidationError",
            "message": "invalid input for task 't'",
            "fields": [{"path": "input.to", "message": "expected string, got integer"}],
        }
        return httpx.Response(400, json={"error": error})

    transport = HttpTransport(
        "https://w.example/jobs", secret=SECRET, transport=httpx.MockTransport(respond)
    )
    with pytest.raises(TransportError, match=r"input\.to: expected string") as caught:
        transport.send(Envelope(task="t", input={"to": 1}))
    assert not caught.value.retryable
    assert len(calls) == 1


def test_connect_errors_are_retried_then_raised_with_the_job_id() -> None:
    """A dead endpoint exhausts the retries and names the job."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    transport = HttpTransport(
        "https://w.example/jobs",
        secret=SECRET,
        transport=httpx.MockTransport(refuse),
        retries=2,
        backoff=0.001,
    )
    envelope = Envelope(task="t", input={})
    with pytest.raises(TransportError, match="connection refused") as caught:
        transport.send(envelope)
    assert caught.value.job_ids == (envelope.id,)
    with pytest.raises(TransportError, match="2 of 2 envelopes") as many:
        transport.send_many([Envelope(task="t", input={}), Envelope(task="t", input={})])
    assert len(many.value.job_ids) == 2


def test_async_transport_twin() -> None:
    """AsyncHttpTransport sends concurrently and retries the same way."""
    seen: list[str] = []

    async def respond(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content)["id"])
        return httpx.Response(202, json={"job_id": seen[-1]})

    async def go() -> None:
        transport = AsyncHttpTransport(
            "https://w.example/jobs", secret=SECRET, transport=httpx.MockTransport(respond)
        )
        envelopes = [Envelope(task="t", input={}) for _ in range(3)]
        await transport.asend_many(envelopes)
        assert (await transport.apost(envelopes[0]))["job_id"] == envelopes[0].id
        await transport.aclose()

    asyncio.run(go())
    assert len(seen) == 4


# -- end to end, over a real loopback server ----------------------------------------------


@pytest.mark.parametrize("mode", ["enqueue", "run"])
def test_a_static_producer_dispatches_over_http_end_to_end(mode: Any) -> None:
    """static_contracts + HttpTransport -> a local Function URL -> the Lambda handler."""
    app = create_app()
    app.implement(send_email, handler)
    lambda_handler = make_handler(app, http=HttpEndpoint(app, secrets=[SECRET], mode=mode))
    with serve_function_url(lambda_handler) as url:
        transport = HttpTransport(f"{url}/jobs", secret=SECRET)
        task = Producer(transport).register(send_email)
        job_id = task.dispatch({"to": "e2e", "subject": "s"})
        answer_ = transport.post(task.envelope({"to": "twice", "subject": "s"}))
        bad = task.envelope({"to": 5, "subject": "s"})  # type: ignore[typeddict-item]
        with pytest.raises(TransportError, match=r"input\.to"):
            transport.send(bad)
        transport.close()
    assert app.get("send-email").handle(job_id).result(5) == EmailSent("m-e2e")
    if mode == "run":
        assert answer_["result"] == {"message_id": "m-twice"}
    else:
        assert answer_ == {"job_id": answer_["job_id"], "status": "queued"}
    app.close()


def test_an_http_producer_loads_no_boto3_attrs_or_cattrs() -> None:
    """A producer with a static contract and HttpTransport stays small (fresh interpreter)."""
    code = (
        "from typing import TypedDict\n"
        "from taskhop.backends.http import HttpTransport\n"
        "from taskhop.static_contracts import Producer, static_contract\n"
        "class In(TypedDict):\n    n: int\n"
        "Producer(HttpTransport('https://w.example/jobs', secret='s')).register("
        "static_contract('t', input=In, output=int))\n"
        "import sys, json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules}"
        " | {'.'.join(m.split('.')[:2]) for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & {"boto3", "botocore", "attr", "attrs", "cattrs", "taskhop.sdk"}
    assert "httpx" in loaded


def test_aws_iam_function_urls_get_a_sigv4_signature_too() -> None:
    """With aws_iam, requests carry SigV4 for service "lambda" in the URL's region."""
    from taskhop.backends._sigv4 import Credentials

    seen: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"job_id": "j"})

    url = "https://abc123.lambda-url.eu-west-1.on.aws/jobs"
    transport = HttpTransport(
        url,
        secret=SECRET,
        transport=httpx.MockTransport(respond),
        aws_iam=Credentials("AKID", "secret", "token"),
    )
    transport.send(Envelope(task="t", input={}))
    headers = seen[0].headers
    assert "/eu-west-1/lambda/aws4_request" in headers["authorization"]
    assert headers["x-amz-security-token"] == "token"
    Verifier([SECRET]).verify(dict(headers), seen[0].content)  # the HMAC is still there
