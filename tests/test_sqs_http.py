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


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys and region in the environment, where ``SqsHttpQueue`` reads them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_an_httpx_client_can_carry_the_requests(
    server_session: Any, queue_url: str, aws_env: None
) -> None:
    """With ``client=httpx.Client()`` the same signed requests go through httpx."""
    import httpx

    over_httpx = SqsHttpQueue(queue_url, client=httpx.Client())
    two = Envelope(task="t", input={"n": 2})
    over_httpx.send(two)
    many = [Envelope(task="t", input={"n": n}) for n in range(12)]
    over_httpx.send_many(many)
    ids = sorted(Envelope.decode(m["Body"]).id for m in received(server_session, queue_url))
    assert ids == sorted([two.id, *(e.id for e in many)])
    over_httpx.close()


def test_the_connection_is_kept_and_reopened_after_close(
    server_session: Any, queue_url: str, aws_env: None
) -> None:
    """Requests share one http.client connection; after ``close`` the next send reconnects."""
    queue = SqsHttpQueue(queue_url)
    queue.send(Envelope(task="t", input={"n": 1}))
    first = queue._connection
    queue.send_many([Envelope(task="t", input={"n": n}) for n in range(3)])
    assert queue._connection is first is not None
    queue.close()
    assert queue._connection is None
    queue.send(Envelope(task="t", input={"n": 5}))
    assert len(received(server_session, queue_url)) == 5
    queue.close()


def test_missing_credentials_or_region_are_refused_at_construction(
    queue_url: str, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No keys, or no region anywhere, is one clear non-retryable error before any request."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(TransportError, match="no AWS credentials") as caught:
        SqsHttpQueue(queue_url)
    assert not caught.value.retryable
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(TransportError, match="no region"):
        SqsHttpQueue(queue_url)
    assert SqsHttpQueue("https://sqs.eu-west-1.amazonaws.com/1/q").region == "eu-west-1"


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
