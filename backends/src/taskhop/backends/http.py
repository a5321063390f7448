"""The HTTP transport: envelopes POSTed, signed, to a worker endpoint (httpx).

For producers at the edge: this module imports httpx and ``static_contracts`` and nothing
heavier (no boto3, attrs or cattrs; a test proves it in a fresh interpreter).

- Every request is signed (``taskhop.static_contracts.signed_headers``: HMAC-SHA256 over the
  timestamp and the exact body bytes), every retry included: each send carries a fresh
  timestamp and signature (and a fresh SigV4 date), so a retry that waited out a long
  ``Retry-After`` is not refused as expired. The body is encoded once; the endpoint answers
  a retried job it already accepted as that job (``"duplicate": true``), never twice.
- Connect errors, timeouts, 408, 429 and 5xx are retried with capped exponential backoff and
  jitter, honouring ``Retry-After``; other 4xx answers are never retried and surface as
  ``TransportError`` with the endpoint's message and field paths.
- ``post`` returns the endpoint's JSON answer: ``{"job_id", "status": "queued"}`` from an
  enqueueing endpoint (202), the job's outcome with its result from a running one (200), and
  ``{"job_id", "status", "duplicate": true}`` (200) for a job the endpoint had accepted before.

``HttpTransport`` and ``AsyncHttpTransport`` are explicit twins (httpx's shape).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from taskhop.static_contracts import Envelope, TransportError, signed_headers

from ._retry_after import retry_after
from ._sigv4 import Credentials, sign_request

__all__ = ["AsyncHttpTransport", "HttpTransport"]

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0
"""Longest ``Retry-After`` honoured before giving up (a producer should not hang longer)."""


class _Settings:
    """What both twins share: the endpoint, the secret, IAM signing and the retry policy."""

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        retries: int,
        backoff: float,
        max_backoff: float,
        aws_iam: bool | Credentials = False,
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"url: expected an http(s) URL, got {url!r}")
        if not secret:
            raise ValueError("secret: the endpoint's signing secret is required")
        self.url = url
        self.secret = secret
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.iam: Credentials | None = None
        if aws_iam:
            self.iam = aws_iam if isinstance(aws_iam, Credentials) else Credentials.from_env()
            host = urlsplit(url).hostname or ""
            # Function URLs: <id>.lambda-url.<region>.on.aws
            parts = host.split(".")
            self.region = (
                parts[2]
                if len(parts) > 3 and parts[1] == "lambda-url"
                else (
                    os.environ.get("AWS_REGION")
                    or os.environ.get("AWS_DEFAULT_REGION")
                    or "us-east-1"
                )
            )

    def headers(self, body: bytes) -> dict[str, str]:
        """The headers of one send of ``body``, signed now: called again for every retry."""
        headers = {"content-type": "application/json", **signed_headers(self.secret, body)}
        if self.iam is not None:  # AWS_IAM auth on a Function URL: SigV4 for service "lambda"
            headers = sign_request(
                method="POST",
                url=self.url,
                headers=headers,
                body=body,
                service="lambda",
                region=self.region,
                credentials=self.iam,
            )
        return headers

    def wait(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds before retry number ``attempt`` (1-based): Retry-After, else backoff."""
        after = retry_after(response) if response is not None else None
        if after is not None:
            return min(after, MAX_RETRY_AFTER)
        base = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return float(base / 2 + random.uniform(0, base / 2))

    def answer(self, envelope: Envelope, response: httpx.Response) -> dict[str, Any]:
        """The JSON answer of a 2xx, or the TransportError a final failure becomes."""
        try:
            parsed: Any = response.json()
        except ValueError:
            parsed = None
        data = cast("dict[str, Any]", parsed) if isinstance(parsed, dict) else {"answer": parsed}
        if response.is_success:
            return data
        error: dict[str, Any] = data.get("error") or {}
        detail = error.get("message") or response.reason_phrase
        fields: list[dict[str, str]] = error.get("fields") or []
        lines = "".join(f"\n  {f['path']}: {f['message']}" for f in fields)
        raise TransportError(
            f"job {envelope.id}: {self.url} answered {response.status_code}: {detail}{lines}",
            job_ids=(envelope.id,),
            retryable=response.status_code in RETRYABLE_STATUS,
        )


class HttpTransport:
    """A ``Transport`` that POSTs signed envelopes to a worker endpoint.

    Args:
        url: the endpoint (a Lambda Function URL or an API Gateway route).
        secret: the shared signing secret.
        client: an ``httpx.Client`` to use (its base settings are kept).
        transport: an httpx transport for the default client (``httpx.MockTransport`` in tests).
        timeout: seconds per request.
        retries: retries after the first try, for connect errors, 408, 429 and 5xx.
        backoff: the first retry's wait in seconds (doubling, capped, jittered).
        max_backoff: the cap on any one wait.

    """

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes,
        client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        aws_iam: bool | Credentials = False,
    ) -> None:
        self._settings = _Settings(url, secret, retries, backoff, max_backoff, aws_iam)
        self.client = client or httpx.Client(transport=transport, timeout=timeout)

    def post(self, envelope: Envelope) -> dict[str, Any]:
        """Send one envelope and return the endpoint's JSON answer."""
        settings = self._settings
        body = envelope.encode()
        for attempt in range(1, settings.retries + 2):
            response: httpx.Response | None = None
            try:
                response = self.client.post(
                    settings.url, content=body, headers=settings.headers(body)
                )
            except httpx.TransportError as exc:  # connect error, timeout: try again
                if attempt > settings.retries:
                    raise TransportError(
                        f"job {envelope.id}: {settings.url}: {exc}", job_ids=(envelope.id,)
                    ) from exc
            else:
                if response.status_code not in RETRYABLE_STATUS or attempt > settings.retries:
                    return settings.answer(envelope, response)
            time.sleep(settings.wait(attempt, response))
        raise AssertionError("unreachable")  # pragma: no cover

    def send(self, envelope: Envelope) -> None:
        """Deliver one envelope."""
        self.post(envelope)

    def send_many(self, envelopes: Sequence[Envelope]) -> None:
        """Deliver each envelope; raise listing every job not accepted."""
        _collect([_attempt(self.post, e) for e in envelopes], len(envelopes), self._settings.url)

    def close(self) -> None:
        """Close the client."""
        self.client.close()


class AsyncHttpTransport:
    """The async twin of ``HttpTransport`` (an ``AsyncTransport``), on ``httpx.AsyncClient``."""

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        aws_iam: bool | Credentials = False,
    ) -> None:
        self._settings = _Settings(url, secret, retries, backoff, max_backoff, aws_iam)
        self.client = client or httpx.AsyncClient(transport=transport, timeout=timeout)

    async def apost(self, envelope: Envelope) -> dict[str, Any]:
        """Send one envelope and return the endpoint's JSON answer."""
        import asyncio  # lazy import: a sync producer never pays for asyncio

        settings = self._settings
        body = envelope.encode()
        for attempt in range(1, settings.retries + 2):
            response: httpx.Response | None = None
            try:
                response = await self.client.post(
                    settings.url, content=body, headers=settings.headers(body)
                )
            except httpx.TransportError as exc:
                if attempt > settings.retries:
                    raise TransportError(
                        f"job {envelope.id}: {settings.url}: {exc}", job_ids=(envelope.id,)
                    ) from exc
            else:
                if response.status_code not in RETRYABLE_STATUS or attempt > settings.retries:
                    return settings.answer(envelope, response)
            await asyncio.sleep(settings.wait(attempt, response))
        raise AssertionError("unreachable")  # pragma: no cover

    async def asend(self, envelope: Envelope) -> None:
        """Deliver one envelope."""
        await self.apost(envelope)

    async def asend_many(self, envelopes: Sequence[Envelope]) -> None:
        """Deliver the envelopes concurrently; raise listing every job not accepted."""
        import asyncio

        results = await asyncio.gather(*(self.apost(e) for e in envelopes), return_exceptions=True)
        _collect(list(results), len(envelopes), self._settings.url)

    async def aclose(self) -> None:
        """Close the client."""
        await self.client.aclose()


def _attempt(post: Any, envelope: Envelope) -> Any:
    try:
        return post(envelope)
    except TransportError as exc:
        return exc


def _collect(results: list[Any], total: int, url: str) -> None:
    errors = [r for r in results if isinstance(r, BaseException)]
    if not errors:
        return
    others = [e for e in errors if not isinstance(e, TransportError)]
    if others:
        raise others[0]
    failed = [i for e in errors if isinstance(e, TransportError) for i in e.job_ids]
    raise TransportError(
        f"{len(failed)} of {total} envelopes were not accepted by {url}: {errors[0]}",
        job_ids=tuple(failed),
        retryable=all(isinstance(e, TransportError) and e.retryable for e in errors),
    )
