"""SQS without boto3: the SigV4 signer against botocore's, and the transport on moto."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from taskhop.backends._sigv4 import Credentials, sign_request
from taskhop.backends.sqs_http import SqsHttpQueue
from taskhop.static_contracts import Envelope, TransportError


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEBYaD...session"])
@pytest.mark.parametrize(
    ("url", "region", "body"),
    [
        (
            "https://sqs.eu-west-1.amazonaws.com/",
            "eu-west-1",
            b'{"QueueUrl":"q","MessageBody":"x"}',
        ),
        ("http://127.0.0.1:5000/", "us-east-1", b""),
        ("https://sqs.us-east-2.amazonaws.com/", "us-east-2", "é ünïcode ✓".encode()),
    ],
)
def test_signatures_match_botocores_signer(
    url: str, region: str, body: bytes, token: str | None
) -> None:
    """For the same request and instant, our Authorization header is botocore's."""
    headers = {
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": "AmazonSQS.SendMessage",
    }
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    SigV4Auth(
        BotoCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token),
        "sqs",
        region,
    ).add_auth(request)
    moment = datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    ours = sign_request(
        method="POST",
        url=url,
        headers=headers,
        body=body,
        service="sqs",
        region=region,
        credentials=Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token),
        now=moment,
    )
    assert ours["authorization"] == request.headers["Authorization"]


@pytest.fixture
def queue_url(server_session: Any) -> str:
    """A standard queue on the moto server."""
    return str(server_session.client("sqs").create_queue(QueueName="edge")["QueueUrl"])


def received(server_session: Any, url: str) -> list[dict[str, Any]]:
    sqs = server_session.client("sqs")
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
    ).get("Messages", []):
        messages += batch
    return messages


def test_send_and_send_many_reach_the_queue(
    server_session: Any, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signed JSON-protocol requests land as messages (moto verifies nothing, SQS would)."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, "us-east-1" if "REGION" in key else "testing")
    queue = SqsHttpQueue(queue_url)
    one = Envelope(task="t", input={"n": 1})
    queue.send(one)
    many = [Envelope(task="t", input={"n": n}) for n in range(23)]
    queue.send_many(many)
    ids = sorted(Envelope.decode(m["Body"]).id for m in received(server_session, queue_url))
    assert ids == sorted([one.id, *(e.id for e in many)])
    queue.close()
    import httpx

    over_httpx = SqsHttpQueue(queue_url, client=httpx.Client())
    two = Envelope(task="t", input={"n": 2})
    over_httpx.send(two)
    assert [Envelope.decode(m["Body"]).id for m in received(server_session, queue_url)] == [two.id]
    over_httpx.close()


def test_fifo_and_errors(server_session: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """FIFO ids are deterministic; a missing queue is one clear, non-retryable error."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    sqs = server_session.client("sqs")
    url = sqs.create_queue(QueueName="edge.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    queue = SqsHttpQueue(url)
    queue.send_many(
        [
            Envelope(task="t", input={}, idempotency_key="k"),
            Envelope(task="t", input={}, idempotency_key="k"),
        ]
    )
    assert len(received(server_session, url)) == 1  # the same key: deduplicated by SQS
    missing = SqsHttpQueue(url.replace("edge.fifo", "nope"))
    with pytest.raises(TransportError, match=r"SendMessage to .*nope") as caught:
        missing.send(Envelope(task="t", input={}))
    assert not caught.value.retryable
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(TransportError, match="no AWS credentials"):
        SqsHttpQueue(url)


def test_a_boto3_free_producer_loads_no_boto3(queue_url: str) -> None:
    """static_contracts + SqsHttpQueue import no boto3, botocore, attrs, cattrs, nor httpx."""
    code = (
        "import os\n"
        "os.environ.update(AWS_ACCESS_KEY_ID='x', AWS_SECRET_ACCESS_KEY='x')\n"
        "os.environ['AWS_DEFAULT_REGION'] = 'us-east-1'\n"
        "from taskhop.backends.sqs_http import SqsHttpQueue\n"
        "from taskhop.static_contracts import Producer, Envelope\n"
        f"SqsHttpQueue({queue_url!r})\n"
        "import sys, json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules}"
        " | {'.'.join(m.split('.')[:2]) for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & {"boto3", "botocore", "attr", "attrs", "cattrs", "taskhop.sdk", "httpx"}
