"""Shared fixtures: contracts used across the suite and one app per backend.

``app`` is parametrized over backends (dramatiq's conftest shape): every behaviour test that
takes it runs once per backend. The AWS backends join the list when they exist.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypedDict

import attrs
import pytest
from taskhop.sdk import App, create_app, define_task, static_contract
from taskhop.sdk.testing import in_memory


class SendEmail(TypedDict):
    to: str
    subject: str


@dataclass
class EmailSent:
    message_id: str


@attrs.define
class Address:
    city: str = attrs.field(validator=attrs.validators.min_len(2))


@attrs.define
class Resize:
    url: str = attrs.field(validator=attrs.validators.matches_re(r"https?://.+"))
    width: int = attrs.field(validator=attrs.validators.gt(0))
    tags: list[str] = attrs.Factory(list)
    ship_to: Address | None = None


@attrs.define
class Resized:
    key: str


FAST_RETRY = {"attempts": 3, "delay": 0.01, "jitter": False}

send_email = static_contract("send-email", input=SendEmail, output=EmailSent, retry=FAST_RETRY)
resize = define_task("resize", input=Resize, output=Resized, retry=FAST_RETRY)

BACKENDS = ["memory", "aws"]
"""``aws``: SqsQueue and DynamoStore over HTTP to a moto server, jobs run by a poller thread."""


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend a parametrized test runs on."""
    return str(request.param)


@pytest.fixture
def aws_stack(request: pytest.FixtureRequest) -> Iterator[tuple[App, Any]]:
    """A fresh queue, DLQ and table on the moto server; an app on them; a poller running it."""
    import uuid

    from sqs_poller import SqsPoller
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.backends.sqs import SqsQueue

    session = request.getfixturevalue("server_session")
    name = f"t-{uuid.uuid4().hex[:12]}"
    sqs = session.client("sqs")
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    store = DynamoStore(name, session=session)
    store.create_table()
    application = create_app(queue=SqsQueue(url, session=session), store=store)
    poller = SqsPoller(application, url, sqs, dlq_url=dlq)
    poller.start()
    yield application, poller
    poller.stop()
    application.close()


@pytest.fixture
def app(backend: str, request: pytest.FixtureRequest) -> Iterator[App]:
    """An app on the backend under test (a producer and worker in one process)."""
    if backend == "aws":
        application, _ = request.getfixturevalue("aws_stack")
        yield application
        return
    application = create_app()
    yield application
    application.close()


@pytest.fixture
def harness(app: App, backend: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The app running on its backend, with join(), pending, dead_letters and records()."""
    if backend == "aws":
        from sqs_poller import AwsHarness

        _, poller = request.getfixturevalue("aws_stack")
        yield AwsHarness(poller, app.store)
        return
    with in_memory(app) as running:
        yield running


# -- AWS: moto in process, and a real moto server on 127.0.0.1 ------------------------------

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture
def mocked_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's in-process AWS, with fake credentials: no request can leave the process."""
    from moto import mock_aws

    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")] + ["AWS_PROFILE"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real moto server on 127.0.0.1 at a free port, for the whole session; its URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def server_session(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 session whose clients talk HTTP to the moto server (and nowhere else)."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
