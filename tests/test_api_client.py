"""``taskhop.backends.api``: handler-side HTTP calls mapped onto Retry / PermanentError."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from conftest import EmailSent, SendEmail, send_email
from taskhop.backends.api import ApiClient, AsyncApiClient
from taskhop.sdk import Envelope, JobContext, OutcomeKind, PermanentError, Retry, create_app
from taskhop.sdk.memory import MemoryQueue, MemoryStore


def client_answering(status: int, headers: dict[str, str] | None = None) -> ApiClient:
    return ApiClient(
        "https://api.example",
        transport=httpx.MockTransport(
            lambda request: httpx.Response(status, headers=headers, text="nope")
        ),
    )


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 409])
def test_client_errors_are_permanent(status: int) -> None:
    """4xx answers other than 408/429 cannot be fixed by retrying."""
    with pytest.raises(PermanentError, match=f"GET https://api.example/x answered {status}: nope"):
        client_answering(status).get("/x")


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_answers_retry(status: int) -> None:
    """408, 429 and 5xx raise Retry."""
    with pytest.raises(Retry):
        client_answering(status).get("/x")


def test_retry_after_becomes_the_delay() -> None:
    """A Retry-After in seconds or as an HTTP date sets Retry.after."""
    with pytest.raises(Retry) as caught:
        client_answering(429, {"retry-after": "12"}).get("/x")
    assert caught.value.after == 12
    with pytest.raises(Retry) as dated:
        client_answering(503, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}).get("/x")
    assert dated.value.after == 0.0


def test_connection_errors_retry_and_success_passes_through() -> None:
    """A refused connection is a Retry; a 200 is returned as is."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(Retry, match="refused"):
        ApiClient(transport=httpx.MockTransport(refuse)).post("https://api.example/x")
    assert client_answering(200).get("/ok").text == "nope"


def test_a_handler_using_it_follows_the_retry_policy() -> None:
    """Inside a handler, a 429 with Retry-After becomes the job's retry delay."""
    api = client_answering(429, {"retry-after": "7"})

    def send(data: SendEmail, ctx: JobContext) -> EmailSent:
        api.post("/send", json=dict(data))
        return EmailSent("sent")

    app = create_app(queue=MemoryQueue(), store=MemoryStore())
    app.implement(send_email, send)
    outcome = app.worker().process(Envelope(task="send-email", input={"to": "a", "subject": "s"}))
    assert (outcome.kind, outcome.retry_after) == (OutcomeKind.RETRY, 7.0)
    app.close()


def test_async_twin() -> None:
    """AsyncApiClient maps answers the same way."""

    async def go() -> None:
        api = AsyncApiClient(
            "https://api.example", transport=httpx.MockTransport(lambda r: httpx.Response(404))
        )
        with pytest.raises(PermanentError):
            await api.get("/x")
        await api.aclose()

    asyncio.run(go())
