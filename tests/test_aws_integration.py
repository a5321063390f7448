"""End to end over real HTTP: SQS and DynamoDB on a moto server the test session started.

A producer dispatches through ``SqsQueue``, the shipped ``LocalEventSourceMapping`` feeds the
shipped ``make_handler(app)`` Lambda handler as Lambda's event source mapping would,
``DynamoStore`` records state, and the handle reads the result. The AWS requests each part
makes are counted with botocore's ``before-call`` event.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypedDict

import pytest
from backend_legs import OutcomeTap
from conftest import AwsHarness
from taskhop.backends.dynamodb import DynamoStore
from taskhop.backends.sqs import SqsQueue
from taskhop.sdk import (
    App,
    JobContext,
    JobStatus,
    Outcome,
    PermanentError,
    StoreError,
    TaskFailed,
    TaskRejected,
    create_app,
    static_contract,
)


class Greet(TypedDict):
    name: str


@dataclass
class Greeting:
    text: str


greet = static_contract("greet", input=Greet, output=Greeting, retry={"attempts": 2, "delay": 0})


@dataclass
class Stack:
    """One queue, its DLQ and a table on the moto server, with the app wired to them."""

    app: App
    runtime: AwsHarness
    calls: Counter[str]
    sqs: Any
    tap: OutcomeTap

    @property
    def url(self) -> str:
        return self.runtime.url

    @property
    def dlq_url(self) -> str | None:
        return self.runtime.dlq_url

    @property
    def outcomes(self) -> list[str]:
        """Each outcome's kind, in order (what the worker raised, by its repr)."""
        seen = self.tap.since(0, this_thread=False)
        return [s.kind if isinstance(s, Outcome) else repr(s) for s in seen]

    def settle(self) -> None:
        self.runtime.drain()


def counting_session(server_session: Any) -> tuple[Any, Counter[str]]:
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    server_session.events.register("before-call", count)
    return server_session, calls


@pytest.fixture
def stack(server_session: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """Fresh AWS resources for one test (unique names), an app, and the Lambda runtime."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    admin = server_session.client("sqs")
    dlq = admin.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    url = admin.create_queue(QueueName=name)["QueueUrl"]
    session, calls = counting_session(server_session)
    store = DynamoStore(name, session=session)
    store.create_table()
    app = create_app(queue=SqsQueue(url, session=session), store=store)
    runtime = AwsHarness(app, url, admin, dlq_url=dlq)
    calls.clear()
    yield Stack(app, runtime, calls, admin, OutcomeTap(app, monkeypatch))
    app.close()


def sdk_calls(calls: Counter[str]) -> Counter[str]:
    """What the SDK asked of AWS (the runtime's client is made before counting starts)."""
    return Counter(calls)


def test_a_job_runs_end_to_end_over_http(stack: Stack) -> None:
    """dispatch -> SQS -> worker -> DynamoDB -> result, all through the moto server."""
    bound = stack.app.implement(greet, lambda d, c: Greeting(f"hi {d['name']}"))
    handle = bound.dispatch({"name": "ada"})
    assert handle.status() is JobStatus.QUEUED
    stack.settle()
    assert handle.result(timeout=10) == Greeting("hi ada")
    assert stack.outcomes == ["succeeded"]


def test_requests_per_job_on_the_happy_path(stack: Stack) -> None:
    """One SendMessage to dispatch, two conditional UpdateItems to run: the promised count."""
    bound = stack.app.implement(greet, lambda d, c: Greeting("ok"))
    bound.dispatch({"name": "a"})
    stack.settle()
    assert sdk_calls(stack.calls) == Counter({"SendMessage": 1, "UpdateItem": 2})


def test_requests_per_job_without_results_kept(server_session: Any) -> None:
    """A worker without a job store costs the queue's requests only: one SendMessage."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    admin = server_session.client("sqs")
    url = admin.create_queue(QueueName=name)["QueueUrl"]
    session, calls = counting_session(server_session)
    app = create_app(queue=SqsQueue(url, session=session))
    app.implement(greet, lambda d, c: Greeting("ok")).dispatch({"name": "a"})
    AwsHarness(app, url, admin).drain()
    assert sdk_calls(calls) == Counter({"SendMessage": 1})
    app.close()


def test_requests_per_job_with_an_idempotency_key(stack: Stack) -> None:
    """A key adds its claim and its completion: four writes in all."""
    bound = stack.app.implement(greet, lambda d, c: Greeting("ok"))
    bound.dispatch({"name": "a"}, idempotency_key="k-1")
    stack.settle()
    assert sdk_calls(stack.calls) == Counter({"SendMessage": 1, "UpdateItem": 4})


def test_requests_for_a_batch_of_25(stack: Stack) -> None:
    """dispatch_many sends 10 per request; each job costs two writes."""
    bound = stack.app.implement(greet, lambda d, c: Greeting("ok"))
    handles = bound.dispatch_many([{"name": str(n)} for n in range(25)])
    stack.settle()
    assert sdk_calls(stack.calls) == Counter({"SendMessageBatch": 3, "UpdateItem": 50})
    stack.calls.clear()
    store = stack.app.store
    assert store is not None
    assert len(store.get_many([h.id for h in handles])) == 25
    assert stack.calls == Counter({"BatchGetItem": 1})


def test_retries_then_dead_letter_over_sqs(stack: Stack) -> None:
    """A job failing every attempt is recorded failed and sent to the DLQ; nothing is lost."""

    def broken(data: Greet, ctx: JobContext) -> Greeting:
        raise ConnectionError(f"down on attempt {ctx.attempt}")

    handle = stack.app.implement(greet, broken).dispatch({"name": "a"})
    stack.settle()
    with pytest.raises(TaskFailed, match="down on attempt 2"):
        handle.result(timeout=10)
    assert stack.outcomes == ["retry", "failed"]
    dlq = stack.dlq_url
    assert dlq is not None
    dead = stack.sqs.receive_message(QueueUrl=dlq).get("Messages", [])
    assert len(dead) == 1
    assert handle.id in dead[0]["Body"]


def test_rejections_and_permanent_failures_are_recorded_not_retried(stack: Stack) -> None:
    """Invalid input is rejected with its field path; a PermanentError fails at once."""

    def refuse(data: Greet, ctx: JobContext) -> Greeting:
        raise PermanentError("no")

    bound = stack.app.implement(greet, refuse)
    bad = bound.dispatch({"name": 7})  # type: ignore[typeddict-item]
    permanent = bound.dispatch({"name": "x"})
    stack.settle()
    with pytest.raises(TaskRejected) as rejected:
        bad.result(10)
    assert [str(f) for f in rejected.value.error.fields] == [
        "input.name: expected string, got integer"
    ]
    with pytest.raises(TaskFailed, match="PermanentError: no"):
        permanent.result(10)
    assert sorted(stack.outcomes) == ["failed", "rejected"]


def test_duplicate_deliveries_run_the_handler_once(stack: Stack) -> None:
    """SQS may deliver a message twice; the conditional begin makes the second a no-op."""
    runs: list[str] = []

    def once(data: Greet, ctx: JobContext) -> Greeting:
        runs.append(ctx.job_id)
        return Greeting("once")

    bound = stack.app.implement(greet, once)
    envelope = bound.envelope({"name": "a"})
    stack.app.transport.send(envelope)
    stack.app.transport.send(envelope)  # the same job, delivered twice
    stack.settle()
    assert runs == [envelope.id]
    assert sorted(stack.outcomes) == ["skipped", "succeeded"]


def test_a_missing_table_is_one_clear_error_naming_it(server_session: Any) -> None:
    """Reading from a table that does not exist says which, and is not retryable."""
    store = DynamoStore("no-such-table", session=server_session)
    with pytest.raises(
        StoreError, match="get job j from table no-such-table: ResourceNotFoundException"
    ) as caught:
        store.get("j")
    assert not caught.value.retryable


def test_missing_credentials_are_one_clear_error(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No credentials anywhere: the first request fails with a TaskhopError saying so."""
    import boto3

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    session = boto3.Session(region_name="us-east-1")
    store = DynamoStore(
        "t", session=session, client=session.client("dynamodb", endpoint_url=moto_server)
    )
    with pytest.raises(StoreError, match="Unable to locate credentials"):
        store.get("j")


def test_results_over_the_item_limit_go_to_s3(server_session: Any) -> None:
    """A result too big for a DynamoDB item is stored in S3 and read back transparently."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    server_session.client("s3").create_bucket(Bucket=name)
    from taskhop.backends.s3 import S3Payloads

    payloads = S3Payloads(name, session=server_session)
    store = DynamoStore(name, session=server_session, payloads=payloads, result_limit=1024)
    store.create_table()
    from taskhop.sdk import JobRecord

    big = {"blob": "x" * 5000}
    store.complete(JobRecord(id="j", task="t", status=JobStatus.SUCCEEDED, attempt=1, result=big))
    record = store.get("j")
    assert record is not None
    assert record.result == big
    stale = {"blob": "y" * 5000}
    assert not store.complete(  # another attempt's outcome, after the job is final
        JobRecord(id="j", task="t", status=JobStatus.SUCCEEDED, attempt=2, result=stale)
    )
    again = store.get("j")
    assert again is not None
    assert again.result == big  # the stale upload went to its own key and was removed
    keys = server_session.client("s3").list_objects_v2(Bucket=name)["Contents"]
    assert len(keys) == 1
    # the same PayloadStore that carries large inputs: one offload mechanism for both
    assert keys[0]["Key"].startswith("taskhop/payloads/results/job/j/")
    without_bucket = DynamoStore(name, session=server_session, result_limit=1024)
    with pytest.raises(
        StoreError, match=r"pass payloads=S3Payloads\(bucket\) to DynamoStore"
    ) as caught:
        without_bucket.complete(
            JobRecord(id="k", task="t", status=JobStatus.SUCCEEDED, attempt=1, result=big)
        )
    assert not caught.value.retryable


def test_dynamodb_throttling_is_retried_then_surfaces_as_store_error(
    server_session: Any,
) -> None:
    """Throttled writes are retried by botocore; past the retries a retryable StoreError."""
    from botocore.config import Config
    from test_sqs import throttle

    name = f"t-{uuid.uuid4().hex[:12]}"
    store = DynamoStore(name, session=server_session)
    store.create_table()
    lease = time.time() + 60
    failed = throttle(store.client, 2)
    expired = time.time() - 1  # so that the next begin may start (a live lease holds it off)
    assert store.begin("c", task="t", attempt=1, lease_until=expired).state == "started"
    assert len(failed) == 2
    server_errors = throttle(store.client, 2, status=500)  # a 5xx is retried the same way
    assert store.begin("c", task="t", attempt=2, lease_until=lease).state == "started"
    assert len(server_errors) == 2
    impatient = DynamoStore(
        name, session=server_session, config=Config(retries={"mode": "standard", "max_attempts": 2})
    )
    throttle(impatient.client, 5)
    message = r"begin job c in table t-\w+: ThrottlingException"
    with pytest.raises(StoreError, match=message) as caught:
        impatient.begin("c", task="t", attempt=3, lease_until=lease)
    assert caught.value.retryable
    record = store.get("c")
    assert record is not None
    assert record.attempt == 2  # the throttled call changed nothing


def test_delays_past_what_the_queue_holds_are_deferred_not_run_early(stack: Stack) -> None:
    """A job received before its not_before is put back (no attempt used) and runs on time."""
    ran_at: list[float] = []
    import time

    def note(data: Greet, ctx: JobContext) -> Greeting:
        ran_at.append(time.time())
        return Greeting("late")

    bound = stack.app.implement(greet, note)
    # Bypass SQS DelaySeconds, as a FIFO queue or a delay over 900 s would.
    envelope = bound.envelope({"name": "a"}, delay=1.2)
    stack.sqs.send_message(QueueUrl=stack.url, MessageBody=envelope.encode().decode())
    due = envelope.not_before.timestamp() if envelope.not_before else 0
    stack.settle()
    assert stack.outcomes[0] == "deferred"
    assert stack.outcomes[-1] == "succeeded"
    assert ran_at[0] >= due
    record = bound.handle(envelope.id).record()
    assert record is not None
    assert record.attempt == 1  # re-sent as a new message: the early receive used no attempt


def test_inputs_too_large_for_sqs_go_through_s3(server_session: Any) -> None:
    """Over the message size, the input goes to S3; the worker reads it and deletes it."""
    from taskhop.backends.s3 import S3Payloads

    name = f"t-{uuid.uuid4().hex[:12]}"
    sqs = server_session.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    server_session.client("s3").create_bucket(Bucket=name)
    payloads = S3Payloads(name, session=server_session)
    store = DynamoStore(name, session=server_session)
    store.create_table()
    queue = SqsQueue(url, session=server_session, payloads=payloads, max_message_bytes=4096)
    app = create_app(queue=queue, store=store, payloads=payloads)
    bound = app.implement(greet, lambda d, c: Greeting(f"{len(d['name'])} chars"))
    big, small = bound.dispatch_many([{"name": "x" * 10_000}, {"name": "y"}])
    [first, second] = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0
    )["Messages"]
    assert '"input_ref":"s3://' in first["Body"] + second["Body"]
    AwsHarness(app, url, sqs).drain()
    assert big.result(10) == Greeting("10000 chars")
    assert small.result(10) == Greeting("1 chars")
    assert server_session.client("s3").list_objects_v2(Bucket=name).get("KeyCount") == 0
    unconfigured = SqsQueue(url, session=server_session, max_message_bytes=4096)
    from taskhop.static_contracts import TransportError

    with pytest.raises(TransportError, match="pass payloads=S3Payloads"):
        unconfigured.send(bound.envelope({"name": "x" * 10_000}))
    app.close()


def test_a_failed_result_offload_is_a_retryable_store_error(server_session: Any) -> None:
    """The payload store refusing a result surfaces as ``StoreError`` keeping ``retryable``."""
    from taskhop.sdk import JobRecord
    from taskhop.sdk.memory import MemoryPayloads
    from taskhop.static_contracts import TransportError

    class Refusing(MemoryPayloads):
        def put(self, job_id: str, body: bytes) -> str:
            raise TransportError("bucket throttled", retryable=True)

    name = f"t-{uuid.uuid4().hex[:12]}"
    store = DynamoStore(name, session=server_session, payloads=Refusing(), result_limit=16)
    store.create_table()
    record = JobRecord(id="j", task="t", status=JobStatus.SUCCEEDED, attempt=1, result="x" * 64)
    with pytest.raises(StoreError, match="offload result: bucket throttled") as caught:
        store.complete(record)
    assert caught.value.retryable
    assert store.get("j") is None  # nothing recorded: the job stays to be retried


def test_results_offload_through_any_payload_store(server_session: Any) -> None:
    """The in-memory payload store works for results as it does for inputs."""
    from taskhop.sdk import JobRecord
    from taskhop.sdk.memory import MemoryPayloads

    name = f"t-{uuid.uuid4().hex[:12]}"
    payloads = MemoryPayloads()
    store = DynamoStore(name, session=server_session, payloads=payloads, result_limit=16)
    store.create_table()
    big = {"blob": "z" * 64}
    assert store.complete(
        JobRecord(id="j", task="t", status=JobStatus.SUCCEEDED, attempt=1, result=big)
    )
    record = store.get("j")
    assert record is not None
    assert record.result == big
    assert len(payloads) == 1
