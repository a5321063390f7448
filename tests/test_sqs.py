"""The SQS transport on moto: messages, batches, FIFO, delays, tracing, failures."""

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


def test_send_puts_the_encoded_envelope_on_the_queue(sqs: Any, queue_url: str) -> None:
    """One envelope, one SendMessage, body equal to the wire bytes."""
    queue = SqsQueue(queue_url, client=sqs)
    seen = calls(sqs)
    sent = envelope()
    queue.send(sent)
    assert seen == Counter({"SendMessage": 1})
    [message] = receive_all(sqs, queue_url)
    assert Envelope.decode(message["Body"]) == sent


def test_send_many_batches_by_ten(sqs: Any, queue_url: str) -> None:
    """25 envelopes take 3 SendMessageBatch requests and all arrive."""
    queue = SqsQueue(queue_url, client=sqs)
    seen = calls(sqs)
    sent = [envelope(n) for n in range(25)]
    queue.send_many(sent)
    assert seen == Counter({"SendMessageBatch": 3})
    ids = sorted(Envelope.decode(m["Body"]).id for m in receive_all(sqs, queue_url))
    assert ids == sorted(e.id for e in sent)


def test_send_many_splits_batches_by_size(sqs: Any, queue_url: str) -> None:
    """A batch never exceeds the queue's message-size limit in total."""
    queue = SqsQueue(queue_url, client=sqs, max_message_bytes=64 * 1024)
    seen = calls(sqs)
    big = [Envelope(task="greet", input={"blob": "x" * 20_000}) for _ in range(6)]
    queue.send_many(big)
    assert seen["SendMessageBatch"] == 2  # three 20 KB bodies fit in 64 KiB, four do not
    assert len(receive_all(sqs, queue_url)) == 6


def test_an_envelope_over_the_limit_is_refused_by_job_id(sqs: Any, queue_url: str) -> None:
    """A message SQS would refuse is refused here first, naming the job."""
    queue = SqsQueue(queue_url, client=sqs, max_message_bytes=1024)
    too_big = Envelope(task="greet", input={"blob": "x" * 2000})
    with pytest.raises(TransportError, match="over the queue's 1024-byte message limit") as caught:
        queue.send(too_big)
    assert caught.value.job_ids == (too_big.id,)
    assert not caught.value.retryable


def test_delays_use_delay_seconds_up_to_900(sqs: Any, queue_url: str) -> None:
    """Short delays map to DelaySeconds; long ones are capped at SQS's 900 s maximum."""
    queue = SqsQueue(queue_url, client=sqs)
    entries: list[dict[str, Any]] = []
    sqs.meta.events.register(
        "provide-client-params.sqs.SendMessage", lambda params, **_: entries.append(params)
    )
    queue.send(envelope().with_delay(30))
    queue.send(envelope().with_delay(3600))
    assert [e["DelaySeconds"] for e in entries] == [30, 900]


def test_fifo_queues_get_group_and_deterministic_deduplication(sqs: Any) -> None:
    """FIFO: group from headers or task name; dedup id from the idempotency key or job id."""
    url = sqs.create_queue(QueueName="jobs.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    queue = SqsQueue(url, client=sqs)
    keyed = envelope(1, idempotency_key="order-7")
    grouped = envelope(2, headers={"group": "customer-42"})
    duplicate = envelope(3, idempotency_key="order-7")
    queue.send_many([keyed, grouped, duplicate.with_delay(60)])
    messages = receive_all(sqs, url)
    assert [json.loads(m["Body"])["input"]["n"] for m in messages] == [1, 2]  # 3 deduplicated
    groups = {m["Attributes"]["MessageGroupId"] for m in messages}
    assert groups == {"greet", "customer-42"}


def test_fifo_group_can_come_from_a_function(sqs: Any) -> None:
    """``message_group`` may compute the group from the envelope."""
    url = sqs.create_queue(QueueName="g.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    SqsQueue(url, client=sqs, message_group=lambda e: f"n-{e.input['n']}").send(envelope(5))  # type: ignore[index, call-overload]
    [message] = receive_all(sqs, url)
    assert message["Attributes"]["MessageGroupId"] == "n-5"


def test_xray_trace_header_is_propagated(sqs: Any, queue_url: str) -> None:
    """The envelope's X-Ray header becomes the AWSTraceHeader system attribute."""
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    SqsQueue(queue_url, client=sqs).send(envelope(trace={"xray": header}))
    [message] = receive_all(sqs, queue_url)
    assert message["Attributes"]["AWSTraceHeader"] == header


def test_lambda_trace_header_is_propagated_unless_the_envelope_has_one(
    sqs: Any, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside Lambda (``_X_AMZN_TRACE_ID``) batches carry the invocation's trace header."""
    ambient = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    own = "Root=1-5759e988-000000000000000000000001;Parent=53995c3f42cd8ad9;Sampled=0"
    monkeypatch.setenv("_X_AMZN_TRACE_ID", ambient)
    sent: list[dict[str, Any]] = []  # moto keeps system attributes of SendMessage only
    sqs.meta.events.register(
        "provide-client-params.sqs.SendMessageBatch",
        lambda params, **_: sent.extend(params["Entries"]),
    )
    SqsQueue(queue_url, client=sqs).send_many([envelope(1), envelope(2, trace={"xray": own})])
    headers = [e["MessageSystemAttributes"]["AWSTraceHeader"]["StringValue"] for e in sent]
    assert headers == [ambient, own]
    assert len(receive_all(sqs, queue_url)) == 2


def failing_batches(sqs: Any, plan: list[dict[str, bool]]) -> None:
    """Make SendMessageBatch report entries failed: each dict maps entry index -> SenderFault."""
    real = sqs.send_message_batch

    def fake(**kwargs: Any) -> Any:
        failures = plan.pop(0) if plan else {}
        keep = [e for i, e in enumerate(kwargs["Entries"]) if str(i) not in failures]
        answer = real(**{**kwargs, "Entries": keep}) if keep else {"Successful": []}
        answer["Failed"] = [
            {"Id": kwargs["Entries"][int(i)]["Id"], "SenderFault": fault, "Code": "Boom"}
            for i, fault in failures.items()
        ]
        return answer

    sqs.send_message_batch = fake


def test_failed_batch_entries_are_sent_again(sqs: Any, queue_url: str) -> None:
    """Entries SQS fails on its side are retried until accepted; nothing is lost."""
    failing_batches(sqs, [{"1": False, "2": False}, {"0": False}])
    sent = [envelope(n) for n in range(3)]
    SqsQueue(queue_url, client=sqs).send_many(sent)
    ids = sorted(Envelope.decode(m["Body"]).id for m in receive_all(sqs, queue_url))
    assert ids == sorted(e.id for e in sent)


def test_entries_that_keep_failing_are_raised_with_their_job_ids(sqs: Any, queue_url: str) -> None:
    """Sender faults and exhausted retries raise TransportError listing every job not sent."""
    failing_batches(sqs, [{"0": True, "1": False}, {"0": False}, {"0": False}])
    sent = [envelope(n) for n in range(3)]
    with pytest.raises(TransportError, match="2 of 3 envelopes were not accepted") as caught:
        SqsQueue(queue_url, client=sqs, batch_retries=1).send_many(sent)
    assert sorted(caught.value.job_ids) == sorted([sent[0].id, sent[1].id])
    assert [Envelope.decode(m["Body"]).id for m in receive_all(sqs, queue_url)] == [sent[2].id]


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


def test_a_missing_queue_is_one_clear_error_naming_it(sqs: Any) -> None:
    """Sending to a queue that does not exist names the URL and is not retryable."""
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/nope"
    with pytest.raises(TransportError, match=r"send to .*/nope: .*NonExistentQueue") as caught:
        SqsQueue(url, client=sqs).send(envelope())
    assert not caught.value.retryable


def test_bad_urls_are_refused_at_construction() -> None:
    """A queue name instead of a URL is caught before any request."""
    with pytest.raises(ValueError, match="expected an SQS queue URL"):
        SqsQueue("jobs")


def test_a_failed_request_reports_every_job_not_sent(sqs: Any, queue_url: str) -> None:
    """When a whole batch request fails, its jobs and every later batch's are listed."""
    from botocore.exceptions import ClientError

    real = sqs.send_message_batch
    calls: list[int] = []

    def second_fails(**kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "SendMessageBatch"
            )
        return real(**kwargs)

    sqs.send_message_batch = second_fails
    sent = [envelope(n) for n in range(25)]
    with pytest.raises(TransportError, match="15 of 25 envelopes were not accepted") as caught:
        SqsQueue(queue_url, client=sqs).send_many(sent)
    assert caught.value.job_ids == tuple(e.id for e in sent[10:])
    assert caught.value.retryable
    assert len(calls) == 2  # stopped at the failed request
