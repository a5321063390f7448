"""Shared fixtures: contracts used across the suite and one app per backend.

``app`` is parametrized over backends (dramatiq's conftest shape): every behaviour test that
takes it runs once per backend. The AWS backends join the list when they exist.
"""

from __future__ import annotations

import os
import socket
import threading
import time
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
"""``aws``: SqsQueue and DynamoStore over HTTP to a moto server, jobs run by the Lambda runtime."""


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend a parametrized test runs on."""
    return str(request.param)


@dataclass(frozen=True)
class AwsLetter:
    """A DLQ message: what the memory backend's ``DeadLetter`` says, read back from SQS."""

    body: bytes
    reason: str
    job_id: str | None


class AwsHarness:
    """``MemoryHarness``'s shape over SQS and DynamoDB, run by the shipped Lambda runtime.

    ``taskhop.lambda_worker.LocalEventSourceMapping`` polls the queue and invokes
    ``make_handler(app)``, which settles each message as on Lambda (delete, visibility, a
    delayed re-send, the DLQ): no copy of the runtime runs here. ``drain()`` polls in the
    caller's thread; ``start()`` polls on a thread of its own, until ``stop()``.
    """

    def __init__(self, app: App, url: str, sqs: Any, *, dlq_url: str | None = None) -> None:
        from taskhop.lambda_worker import LocalEventSourceMapping, make_handler

        self.app = app
        self.url = url
        self.sqs = sqs
        self.dlq_url = dlq_url
        self.store = app.store
        handler = make_handler(app, sqs_client=sqs, dlq_url=dlq_url)
        self.mapping = LocalEventSourceMapping(handler, url, sqs, wait_time=0)
        self._busy = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- running ------------------------------------------------------------------------------

    def drain(self, timeout: float = 20.0) -> None:
        """Poll until no message is queued, delayed or in flight."""
        deadline = time.monotonic() + timeout
        while self.mapping.poll_once() or not self._empty():
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue {self.url} not drained after {timeout}s")
            time.sleep(0.05)

    def start(self) -> None:
        """Poll on a background thread until ``stop``."""

        def loop() -> None:
            while not self._stop.is_set():
                self._busy.set()
                try:
                    got = self.mapping.poll_once()
                finally:
                    self._busy.clear()
                if not got:
                    self._stop.wait(0.02)

        self._thread = threading.Thread(target=loop, name="local-event-source", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread after the batch in flight."""
        self._stop.set()
        self.mapping.stop()
        if self._thread is not None:
            self._thread.join(10)

    def join(self, timeout: float = 20.0) -> None:
        """Wait until the background thread has drained the queue."""
        deadline = time.monotonic() + timeout
        while not (self._idle() and self._idle()):  # twice: a batch may start between reads
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue {self.url} not drained after {timeout}s")
            time.sleep(0.05)

    def _idle(self) -> bool:
        return self._empty() and not self._busy.is_set()

    def _empty(self) -> bool:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return not any(int(v) for v in attrs.values())

    # -- reading ------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Messages queued or delayed, not yet taken by the runtime."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())

    @property
    def dead_letters(self) -> list[AwsLetter]:
        """Every message the runtime sent to the DLQ, with the reason and job id it gave."""
        assert self.dlq_url is not None
        # One look, leaving the messages visible (tests read this more than once).
        batch = self.sqs.receive_message(
            QueueUrl=self.dlq_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        letters: list[AwsLetter] = []
        for message in batch:
            attributes = message["MessageAttributes"]
            reason = attributes["taskhop-reason"]["StringValue"]
            job_id = attributes.get("taskhop-job-id", {}).get("StringValue")
            letters.append(AwsLetter(message["Body"].encode(), reason, job_id))
        return letters

    def records(self) -> list[Any]:
        """Every job record in the table."""
        store: Any = self.store
        items = store.client.scan(TableName=store.table)["Items"]
        return [store._record(i) for i in items if i["pk"]["S"].startswith("job#")]


@pytest.fixture
def aws_stack(request: pytest.FixtureRequest) -> Iterator[tuple[App, AwsHarness]]:
    """A fresh queue, DLQ and table on the moto server; an app on them; the runtime polling."""
    import uuid

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
    running = AwsHarness(application, url, sqs, dlq_url=dlq)
    running.start()
    yield application, running
    running.stop()
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
        _, running = request.getfixturevalue("aws_stack")
        yield running
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
    """A real moto server on 127.0.0.1 at a free port, for the whole session; its URL.

    With the dev stack's moto speed-ups (``taskhop.lambda_worker._moto_speedups``: the same
    answers, without stock moto's per-request work that grows with queue depth), as
    ``taskhop dev`` runs it; stock moto again when the session ends.
    """
    import logging

    from moto.server import ThreadedMotoServer
    from taskhop.lambda_worker import _moto_speedups

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with _moto_speedups.speedups():
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
