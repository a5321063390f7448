"""The boto3 SQS transport's own behaviour: its client, and botocore's retries on moto.

What both SQS transports do alike (batches, FIFO, delays, tracing, offload, failed entries)
is tested once for both in ``test_sqs_transports.py``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from taskhop.backends.sqs import SqsQueue
from taskhop.static_contracts import Envelope, TransportError


@pytest.fixture
def sqs(mocked_aws: None) -> Any:
    """A boto3 SQS client on moto."""
    return boto3.client("sqs")


@pytest.fixture
def queue_url(sqs: Any) -> str:
    """A standard queue."""
    return str(sqs.create_queue(QueueName="jobs")["QueueUrl"])


def calls(client: Any) -> Counter[str]:
    """Count the AWS operations a client makes from now on (botocore's before-call event)."""
    seen: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        seen[model.name] += 1

    client.meta.events.register("before-call", count)
    return seen


def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        ).get("Messages", [])
        if not batch:
            return messages
        messages += batch


def envelope(n: int = 0, **fields: Any) -> Envelope:
    return Envelope(task="greet", input={"n": n}, **fields)


def test_a_given_client_is_used_as_is(sqs: Any, queue_url: str) -> None:
    """``client=`` is the client that sends: one SendMessage on it, the wire bytes arrive."""
    queue = SqsQueue(queue_url, client=sqs)
    seen = calls(sqs)
    sent = envelope()
    queue.send(sent)
    assert seen == Counter({"SendMessage": 1})
    [message] = receive_all(sqs, queue_url)
    assert Envelope.decode(message["Body"]) == sent


def throttle(
    client: Any, times: int, status: int = 400, code: str = "ThrottlingException"
) -> list[int]:
    """Answer the client's next ``times`` requests with an error (throttling by default)."""
    failed: list[int] = []

    class Body:
        def stream(self, **_: Any) -> Iterator[bytes]:
            yield json.dumps({"__type": code, "message": "Rate exceeded"}).encode()

    def answer(request: Any, **_: Any) -> AWSResponse | None:
        if len(failed) >= times:
            return None
        failed.append(1)
        headers = {"x-amzn-query-error": f"{code};Sender",
                   "content-type": "application/x-amz-json-1.0"}  # fmt: skip
        return AWSResponse(request.url, status, headers, Body())

    client.meta.events.register_first("before-send", answer)
    return failed


@pytest.fixture
def server_queue_url(server_session: Any) -> str:
    """A queue on the real moto server (throttling is injected before the HTTP request)."""
    sqs = server_session.client("sqs")
    return str(sqs.create_queue(QueueName="throttled")["QueueUrl"])


def test_throttling_is_retried_by_botocore_with_backoff(
    server_session: Any, server_queue_url: str
) -> None:
    """Throttled answers are retried (standard mode); the job arrives exactly once."""
    queue = SqsQueue(server_queue_url, session=server_session)
    failed = throttle(queue.client, 3)
    queue.send(envelope())
    assert len(failed) == 3
    assert len(receive_all(server_session.client("sqs"), server_queue_url)) == 1


def test_exhausted_retries_raise_a_retryable_transport_error(
    server_session: Any, server_queue_url: str
) -> None:
    """When 5xx answers outlast the retries, the caller gets the job id and 'retryable'."""
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 2})
    queue = SqsQueue(server_queue_url, session=server_session, config=config)
    throttle(queue.client, 10, status=503, code="ServiceUnavailableNow")  # retryable by status
    sent = envelope()
    with pytest.raises(TransportError, match=r"send to .*throttled") as caught:
        queue.send(sent)
    assert caught.value.retryable
    assert caught.value.job_ids == (sent.id,)
