"""SQS without boto3: for producers where boto3 is too heavy or unavailable.

By default requests go through the standard library's ``http.client`` (one kept-alive
connection): importing httpx alone costs about 95 ms here, more than the rest of such a
producer together. Pass ``client=httpx.Client(...)`` for httpx's pooling, proxies or HTTP/2.

Requests use SQS's JSON protocol (``X-Amz-Target: AmazonSQS.SendMessage``) signed with
Signature Version 4 by a small standard-library signer (``taskhop.backends._sigv4``) whose tests
cross-check botocore's. Credentials come from the standard environment variables, session
tokens included; the region from the queue URL (``sqs.<region>.amazonaws.com``) or
``AWS_REGION`` / ``AWS_DEFAULT_REGION``.

The messages are ``SqsQueue``'s, built by the same code (``taskhop.backends._sqs_entries``):
batches of at most 10 entries and ``max_message_bytes`` in total, delays up to 900 s, FIFO
group and deduplication ids (``message_group``), the X-Ray trace header, inputs too large for
a message offloaded to ``payloads``, entries SQS failed on its side sent again, and
``TransportError`` naming every job not accepted. What differs is the request: where boto3
retries throttling and 5xx answers itself, here ``retries`` does, with capped, jittered
backoff, deciding what is retryable by the same list of error codes.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from taskhop.static_contracts import Envelope, PayloadStore, TransportError
from taskhop.static_contracts.limits import SQS_MAX_MESSAGE_BYTES

from ._sigv4 import Credentials, sign_request
from ._sqs_entries import SqsEntries, backoff, is_retryable, lambda_trace

if TYPE_CHECKING:
    import httpx

__all__ = ["SqsHttpQueue"]


class SqsHttpQueue:
    """A ``Transport`` to one SQS queue: signed JSON-protocol requests, no boto3.

    ``entries`` is the shared ``SqsEntries`` that builds and batches the messages (the same
    one ``SqsQueue`` uses).

    Args:
        url: the queue URL (a ``.fifo`` suffix makes it a FIFO queue).
        region: the AWS region (default: from the URL, else the environment).
        credentials: keys to sign with (default: the standard environment variables).
        client: an ``httpx.Client`` to send with (default: the standard library's http.client).
        timeout: seconds per request.
        retries: retries of throttled or 5xx requests.
        message_group: FIFO only: a group id, or a function of the envelope returning one.
        max_message_bytes: the queue's maximum message size (set it to match the queue's
            ``MaximumMessageSize`` attribute if you lowered it).
        batch_retries: how many times entries SQS reports as failed are sent again.
        payloads: where inputs too large for a message go (any ``PayloadStore``); the envelope
            then carries ``input_ref`` and the worker loads the input from there.

    """

    def __init__(
        self,
        url: str,
        *,
        region: str | None = None,
        credentials: Credentials | None = None,
        client: httpx.Client | None = None,
        timeout: float = 10.0,
        retries: int = 4,
        message_group: str | Callable[[Envelope], str] | None = None,
        max_message_bytes: int = SQS_MAX_MESSAGE_BYTES,
        batch_retries: int = 5,
        payloads: PayloadStore | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url: expected an SQS queue URL, got {url!r}")
        self.url = url
        self.entries = SqsEntries(
            url,
            message_group=message_group,
            max_message_bytes=max_message_bytes,
            batch_retries=batch_retries,
            payloads=payloads,
            transport="SqsHttpQueue",
        )
        self.fifo = self.entries.fifo
        self.endpoint = f"{parts.scheme}://{parts.netloc}/"
        host = parts.hostname or ""
        region = region or (host.split(".")[1] if host.startswith("sqs.") else None)
        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise TransportError(f"SQS queue {url}: no region (set AWS_REGION)", retryable=False)
        self.region = region
        try:
            self.credentials = credentials or Credentials.from_env()
        except LookupError as exc:
            raise TransportError(f"SQS queue {url}: {exc}", retryable=False) from None
        self.client = client
        self.timeout = timeout
        self.retries = retries
        self._parts = parts
        self._connection: http.client.HTTPConnection | None = None

    def __repr__(self) -> str:
        return f"SqsHttpQueue({self.url!r})"

    def send(self, envelope: Envelope) -> None:
        """Send one envelope (SendMessage)."""
        entry = self.entries.entry(envelope, lambda_trace())
        self._call("SendMessage", {"QueueUrl": self.url, **entry.fields}, (envelope.id,))

    def send_many(self, envelopes: Sequence[Envelope]) -> None:
        """Send in batches of up to 10 (and 1 MiB); raise listing every job not accepted."""
        self.entries.send_many(envelopes, self._send_batch)

    def close(self) -> None:
        """Close the connection (or the httpx client)."""
        if self.client is not None:
            self.client.close()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _send_batch(
        self, entries: list[dict[str, Any]], job_ids: tuple[str, ...]
    ) -> Mapping[str, Any]:
        """One SendMessageBatch request."""
        return self._call("SendMessageBatch", {"QueueUrl": self.url, "Entries": entries}, job_ids)

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        """POST to the endpoint; (status, reason, body). Network trouble raises OSError."""
        if self.client is not None:
            import httpx

            try:
                response = self.client.post(self.endpoint, content=body, headers=headers)
            except httpx.TransportError as exc:
                raise OSError(str(exc)) from exc
            return response.status_code, response.reason_phrase, response.content
        if self._connection is None:
            self._connection = _connect(self._parts.scheme, self._parts.netloc, self.timeout)
        try:
            self._connection.request("POST", "/", body=body, headers=headers)
            answer = self._connection.getresponse()
            return answer.status, answer.reason, answer.read()
        except (OSError, http.client.HTTPException):
            self._connection.close()  # a broken keep-alive connection: reconnect next time
            self._connection = None
            raise

    def _call(
        self, action: str, payload: dict[str, Any], job_ids: tuple[str, ...]
    ) -> dict[str, Any]:
        body = json.dumps(payload).encode()
        what = f"{action} to {self.url}"
        for attempt in range(self.retries + 1):
            headers = sign_request(
                method="POST",
                url=self.endpoint,
                body=body,
                service="sqs",
                region=self.region,
                credentials=self.credentials,
                headers={
                    "content-type": "application/x-amz-json-1.0",
                    "x-amz-target": f"AmazonSQS.{action}",
                },
            )
            try:
                status, reason, content = self._post(body, headers)
            except (OSError, http.client.HTTPException) as exc:
                if attempt == self.retries:
                    raise TransportError(f"{what}: {exc}", job_ids=job_ids) from exc
                time.sleep(backoff(attempt + 1))
                continue
            data: dict[str, Any] = json.loads(content) if content else {}
            if 200 <= status < 300:
                return data
            code = str(data.get("__type", "")).rsplit("#", 1)[-1]
            transient = is_retryable(code, status)
            if not transient or attempt == self.retries:
                message = data.get("message") or data.get("Message") or reason
                raise TransportError(
                    f"{what}: {code or status}: {message}",
                    job_ids=job_ids,
                    retryable=transient,
                )
            time.sleep(backoff(attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover


def _connect(scheme: str, netloc: str, timeout: float) -> http.client.HTTPConnection:
    if scheme == "https":
        return http.client.HTTPSConnection(netloc, timeout=timeout)
    return http.client.HTTPConnection(netloc, timeout=timeout)
