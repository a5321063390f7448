"""SQS without boto3: for producers where boto3 is too heavy or unavailable.

By default requests go through the standard library's ``http.client`` (one kept-alive
connection): importing httpx alone costs about 95 ms here, more than the rest of such a
producer together. Pass ``client=httpx.Client(...)`` for httpx's pooling, proxies or HTTP/2.

Requests use SQS's JSON protocol (``X-Amz-Target: AmazonSQS.SendMessage``) signed with
Signature Version 4 by a small standard-library signer (``taskhop.backends._sigv4``) whose tests
cross-check botocore's. Credentials come from the standard environment variables, session
tokens included; the region from the queue URL (``sqs.<region>.amazonaws.com``) or
``AWS_REGION`` / ``AWS_DEFAULT_REGION``.

Same behaviour as ``taskhop.backends.sqs.SqsQueue`` where it matters: batches of 10, entries SQS
failed on its side sent again, delays up to 900 s, FIFO group and deduplication ids, and
``TransportError`` naming every job not accepted. Throttling and 5xx are retried with capped,
jittered backoff.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from taskhop.static_contracts import Envelope, TransportError

from ._sigv4 import Credentials, sign_request

if TYPE_CHECKING:
    import httpx

__all__ = ["SqsHttpQueue"]

MAX_DELAY = 900
MAX_BATCH = 10
RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
RETRYABLE_CODES = (
    "Throttling",
    "RequestThrottled",
    "ThrottlingException",
    "ServiceUnavailable",
    "InternalError",
)


class SqsHttpQueue:
    """A ``Transport`` to one SQS queue over httpx with SigV4 signing.

    Args:
        url: the queue URL.
        region: the AWS region (default: from the URL, else the environment).
        credentials: keys to sign with (default: the standard environment variables).
        client: an ``httpx.Client`` to send with (default: the standard library's http.client).
        timeout: seconds per request.
        retries: retries of throttled or 5xx requests.

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
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url: expected an SQS queue URL, got {url!r}")
        self.url = url
        self.fifo = url.endswith(".fifo")
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

    def send(self, envelope: Envelope) -> None:
        """Send one envelope (SendMessage)."""
        entry = self._entry(envelope)
        self._call("SendMessage", {"QueueUrl": self.url, **entry}, (envelope.id,))

    def send_many(self, envelopes: Sequence[Envelope]) -> None:
        """Send in batches of 10; raise listing every job not accepted."""
        failed: list[str] = []
        reasons: list[str] = []
        for start in range(0, len(envelopes), MAX_BATCH):
            batch = list(envelopes[start : start + MAX_BATCH])
            pending = {str(i): e for i, e in enumerate(batch)}
            for attempt in range(self.retries + 1):
                entries = [{"Id": i, **self._entry(e)} for i, e in pending.items()]
                ids = tuple(e.id for e in pending.values())
                answer = self._call(
                    "SendMessageBatch", {"QueueUrl": self.url, "Entries": entries}, ids
                )
                retry: dict[str, Envelope] = {}
                for failure in answer.get("Failed", []):
                    reasons.append(f"{failure.get('Code')}: {failure.get('Message', '')}")
                    if failure.get("SenderFault"):
                        failed.append(pending[failure["Id"]].id)
                    else:
                        retry[failure["Id"]] = pending[failure["Id"]]
                pending = retry
                if not pending:
                    break
                time.sleep(_backoff(attempt + 1))
            failed += [e.id for e in pending.values()]
        if failed:
            raise TransportError(
                f"{len(failed)} of {len(envelopes)} envelopes were not accepted by {self.url}: "
                + "; ".join(sorted(set(reasons))),
                job_ids=tuple(failed),
            )

    def close(self) -> None:
        """Close the connection (or the httpx client)."""
        if self.client is not None:
            self.client.close()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _entry(self, envelope: Envelope) -> dict[str, Any]:
        entry: dict[str, Any] = {"MessageBody": envelope.encode().decode()}
        if self.fifo:
            entry["MessageGroupId"] = (envelope.headers or {}).get("group") or envelope.task
            key = envelope.idempotency_key or envelope.id
            entry["MessageDeduplicationId"] = hashlib.sha256(key.encode()).hexdigest()
        else:
            delay = min(MAX_DELAY, math.ceil(envelope.delay_seconds()))
            if delay > 0:
                entry["DelaySeconds"] = delay
        return entry

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
                time.sleep(_backoff(attempt + 1))
                continue
            data: dict[str, Any] = json.loads(content) if content else {}
            if 200 <= status < 300:
                return data
            code = str(data.get("__type", "")).rsplit("#", 1)[-1]
            transient = status in RETRYABLE_STATUS or code in RETRYABLE_CODES
            if not transient or attempt == self.retries:
                message = data.get("message") or data.get("Message") or reason
                raise TransportError(
                    f"{what}: {code or status}: {message}",
                    job_ids=job_ids,
                    retryable=transient,
                )
            time.sleep(_backoff(attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover


def _connect(scheme: str, netloc: str, timeout: float) -> http.client.HTTPConnection:
    if scheme == "https":
        return http.client.HTTPSConnection(netloc, timeout=timeout)
    return http.client.HTTPConnection(netloc, timeout=timeout)


def _backoff(attempt: int) -> float:
    base = min(5.0, 0.05 * 2.0**attempt)
    return float(base / 2 + random.uniform(0, base / 2))
