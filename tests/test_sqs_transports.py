"""Both SQS transports, one suite: ``SqsQueue`` (boto3) and ``SqsHttpQueue`` (stdlib) on moto.

Every test taking ``rig`` runs once per transport against the session's moto server: the two
share ``_sqs_entries`` and must behave the same. The pure tests of ``_sqs_entries`` (entries,
batches, retry decisions) follow at the end; transport-only checks (botocore's retries, SigV4
signing, the boto3-free import) stay in ``test_sqs.py`` and ``test_sqs_http.py``.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from taskhop.backends._sqs_entries import (
    RETRYABLE_CODES,
    SqsEntries,
    backoff,
    entry_retryable,
    is_retryable,
)
from taskhop.backends.sqs import SqsQueue
from taskhop.backends.sqs_http import SqsHttpQueue
from taskhop.sdk.memory import MemoryPayloads
from taskhop.static_contracts import Envelope, TransportError, dumps
from taskhop.static_contracts.limits import (
    SQS_MAX_BATCH_ENTRIES,
    SQS_MAX_DELAY,
    SQS_MAX_MESSAGE_BYTES,
)

TRANSPORTS = ["boto3", "stdlib"]


def envelope(n: int = 0, **fields: Any) -> Envelope:
    return Envelope(task="greet", input={"n": n}, **fields)


@dataclass
class Rig:
    """Makes one transport's queues on moto and watches the requests they send."""

    kind: str
    session: Any
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list[tuple[str, dict[str, Any]]])

    @property
    def sqs(self) -> Any:
        return self.session.client("sqs")

    def create(self, fifo: bool = False) -> str:
        name = f"t-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
        attributes = {"FifoQueue": "true"} if fifo else {}
        return str(self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])

    def queue(self, url: str, **options: Any) -> SqsQueue | SqsHttpQueue:
        """The transport under test, retrying fast, recording every API call it makes."""
        queue: SqsQueue | SqsHttpQueue
        if self.kind == "boto3":
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": 2})
            queue = SqsQueue(url, session=self.session, config=config, **options)

            def record(params: dict[str, Any], model: Any, **_: Any) -> None:
                self.sent.append((model.name, dict(params)))

            queue.client.meta.events.register("provide-client-params.sqs.*", record)
        else:
            queue = SqsHttpQueue(url, retries=1, **options)
            real = queue._call

            def call(action: str, payload: dict[str, Any], ids: tuple[str, ...]) -> Any:
                self.sent.append((action, dict(payload)))
                return real(action, payload, ids)

            queue._call = call  # type: ignore[method-assign]
        queue.entries.sleep = lambda _: None  # entry retries without the wait
        return queue

    def calls(self) -> Counter[str]:
        """API calls made so far, by action (one per call, whatever the HTTP retries)."""
        return Counter(action for action, _ in self.sent)

    def fail_requests(
        self,
        queue: SqsQueue | SqsHttpQueue,
        action: str,
        status: int,
        code: str,
        *,
        skip: int = 0,
        times: int = 1_000,
    ) -> list[int]:
        """Answer ``times`` HTTP attempts of ``action``, after the first ``skip``, with an error."""
        seen: list[int] = []
        failed: list[int] = []
        body = json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": "injected"})
        if isinstance(queue, SqsQueue):
            from botocore.awsrequest import AWSResponse

            class Raw:
                def stream(self, **_: Any) -> Iterator[bytes]:
                    yield body.encode()

            def answer(request: Any, **_: Any) -> AWSResponse | None:
                target = request.headers.get("X-Amz-Target", b"")
                target = target.decode() if isinstance(target, bytes) else target
                if target != f"AmazonSQS.{action}":
                    return None
                seen.append(1)
                if len(seen) <= skip or len(failed) >= times:
                    return None
                failed.append(1)
                headers = {"x-amzn-query-error": f"{code};Sender",
                           "content-type": "application/x-amz-json-1.0"}  # fmt: skip
                return AWSResponse(request.url, status, headers, Raw())

            queue.client.meta.events.register_first("before-send", answer)
        else:
            real = queue._post

            def post(data: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
                if headers.get("x-amz-target") != f"AmazonSQS.{action}":
                    return real(data, headers)
                seen.append(1)
                if len(seen) <= skip or len(failed) >= times:
                    return real(data, headers)
                failed.append(1)
                return status, "Injected", body.encode()

            queue._post = post  # type: ignore[method-assign]
        return failed


@pytest.fixture(params=TRANSPORTS)
def rig(
    request: pytest.FixtureRequest, server_session: Any, monkeypatch: pytest.MonkeyPatch
) -> Rig:
    """One transport on the moto server (the stdlib one reads its keys from the environment)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("_X_AMZN_TRACE_ID", raising=False)
    return Rig(str(request.param), server_session)


def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
    ).get("Messages", []):
        messages += batch
    return messages


def received_ids(rig: Rig, url: str) -> list[str]:
    return sorted(Envelope.decode(m["Body"]).id for m in receive_all(rig.sqs, url))


def batch_entries(rig: Rig) -> list[list[dict[str, Any]]]:
    return [params["Entries"] for action, params in rig.sent if action == "SendMessageBatch"]


# -- sending -----------------------------------------------------------------------------------


def test_send_puts_the_encoded_envelope_on_the_queue(rig: Rig) -> None:
    """One envelope, one SendMessage, body equal to the wire bytes."""
    url = rig.create()
    sent = envelope()
    rig.queue(url).send(sent)
    assert rig.calls() == Counter({"SendMessage": 1})
    [message] = receive_all(rig.sqs, url)
    assert message["Body"] == sent.encode().decode()
    assert Envelope.decode(message["Body"]) == sent


def test_send_many_batches_by_ten(rig: Rig) -> None:
    """25 envelopes take 3 SendMessageBatch requests (10, 10, 5) and all arrive."""
    url = rig.create()
    sent = [envelope(n) for n in range(25)]
    rig.queue(url).send_many(sent)
    assert rig.calls() == Counter({"SendMessageBatch": 3})
    assert [len(b) for b in batch_entries(rig)] == [SQS_MAX_BATCH_ENTRIES] * 2 + [5]
    assert received_ids(rig, url) == sorted(e.id for e in sent)


def test_send_many_keeps_each_request_under_one_mib(rig: Rig) -> None:
    """Ten 150 KB envelopes (1.5 MB) go in two requests, each under SQS's 1 MiB total."""
    url = rig.create()
    sent = [Envelope(task="greet", input={"blob": "x" * 150_000}) for _ in range(10)]
    rig.queue(url).send_many(sent)
    sizes = [sum(len(e["MessageBody"].encode()) for e in b) for b in batch_entries(rig)]
    assert len(sizes) == 2
    assert all(size <= SQS_MAX_MESSAGE_BYTES for size in sizes)
    assert received_ids(rig, url) == sorted(e.id for e in sent)


def test_send_many_splits_batches_by_a_lowered_message_size(rig: Rig) -> None:
    """A batch never exceeds the queue's (lowered) message-size limit in total."""
    url = rig.create()
    big = [Envelope(task="greet", input={"blob": "x" * 20_000}) for _ in range(6)]
    rig.queue(url, max_message_bytes=64 * 1024).send_many(big)
    assert rig.calls()["SendMessageBatch"] == 2  # three 20 KB bodies fit in 64 KiB, four do not
    assert len(receive_all(rig.sqs, url)) == 6


def test_an_envelope_over_the_limit_is_refused_by_job_id(rig: Rig) -> None:
    """A message SQS would refuse is refused here first, naming the job, with no request."""
    url = rig.create()
    queue = rig.queue(url, max_message_bytes=1024)
    too_big = Envelope(task="greet", input={"blob": "x" * 2000})
    with pytest.raises(TransportError, match="over the queue's 1024-byte message limit") as caught:
        queue.send(too_big)
    assert caught.value.job_ids == (too_big.id,)
    assert not caught.value.retryable
    assert type(queue).__name__ in str(caught.value)  # the advice names the class to configure
    after = envelope()
    with pytest.raises(TransportError, match="2 of 2 envelopes") as many:
        queue.send_many([too_big, after])
    assert many.value.job_ids == (too_big.id, after.id)
    assert not many.value.retryable
    assert rig.calls() == Counter()


def test_delays_use_delay_seconds_up_to_900(rig: Rig) -> None:
    """Short delays map to DelaySeconds; long ones are capped at SQS's 900 s, not_before kept."""
    url = rig.create()
    queue = rig.queue(url)
    long = envelope(2).with_delay(3600)
    queue.send(envelope(1).with_delay(30))
    queue.send(long)
    queue.send_many([envelope(3).with_delay(901), envelope(4)])
    singles = [params for action, params in rig.sent if action == "SendMessage"]
    assert [p["DelaySeconds"] for p in singles] == [30, SQS_MAX_DELAY]
    assert Envelope.decode(singles[1]["MessageBody"]).not_before == long.not_before
    [batch] = batch_entries(rig)
    assert [e.get("DelaySeconds") for e in batch] == [SQS_MAX_DELAY, None]
    attributes = rig.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "3"


def test_fifo_queues_get_group_and_deterministic_deduplication(rig: Rig) -> None:
    """FIFO: group from headers or task name; dedup id from the idempotency key or job id."""
    url = rig.create(fifo=True)
    queue = rig.queue(url)
    keyed = envelope(1, idempotency_key="order-7")
    grouped = envelope(2, headers={"group": "customer-42"})
    duplicate = envelope(3, idempotency_key="order-7")
    queue.send_many([keyed, grouped, duplicate.with_delay(60)])
    messages = receive_all(rig.sqs, url)
    assert [json.loads(m["Body"])["input"]["n"] for m in messages] == [1, 2]  # 3 deduplicated
    assert {m["Attributes"]["MessageGroupId"] for m in messages} == {"greet", "customer-42"}
    [batch] = batch_entries(rig)
    assert "DelaySeconds" not in batch[2]  # FIFO queues take no per-message delay
    assert batch[0]["MessageDeduplicationId"] == batch[2]["MessageDeduplicationId"]
    assert batch[1]["MessageDeduplicationId"] != batch[0]["MessageDeduplicationId"]
    again = envelope(4, id=grouped.id)  # no key: the job id deduplicates a resend
    queue.send(again)
    assert receive_all(rig.sqs, url) == []


def test_fifo_group_can_be_fixed_or_come_from_a_function(rig: Rig) -> None:
    """``message_group`` may name one group or compute it from the envelope."""
    url = rig.create(fifo=True)
    rig.queue(url, message_group=lambda e: f"n-{e.input['n']}").send(envelope(5))  # type: ignore[index, call-overload]
    rig.queue(url, message_group="fixed").send(envelope(6, headers={"group": "ignored"}))
    groups = [m["Attributes"]["MessageGroupId"] for m in receive_all(rig.sqs, url)]
    assert sorted(groups) == ["fixed", "n-5"]


def test_xray_trace_header_is_propagated(rig: Rig) -> None:
    """The envelope's X-Ray header becomes the AWSTraceHeader system attribute."""
    url = rig.create()
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    rig.queue(url).send(envelope(trace={"xray": header}))
    [message] = receive_all(rig.sqs, url)
    assert message["Attributes"]["AWSTraceHeader"] == header


def test_lambda_trace_header_is_propagated_unless_the_envelope_has_one(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside Lambda (``_X_AMZN_TRACE_ID``) batches carry the invocation's trace header."""
    url = rig.create()
    ambient = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    own = "Root=1-5759e988-000000000000000000000001;Parent=53995c3f42cd8ad9;Sampled=0"
    monkeypatch.setenv("_X_AMZN_TRACE_ID", ambient)
    rig.queue(url).send_many([envelope(1), envelope(2, trace={"xray": own})])
    [batch] = batch_entries(rig)  # moto keeps system attributes of SendMessage only
    headers = [e["MessageSystemAttributes"]["AWSTraceHeader"]["StringValue"] for e in batch]
    assert headers == [ambient, own]
    assert len(receive_all(rig.sqs, url)) == 2


def test_large_inputs_are_offloaded_and_come_back(rig: Rig) -> None:
    """An input over the message limit goes to the payload store; the message carries its ref."""
    url = rig.create()
    payloads = MemoryPayloads()
    queue = rig.queue(url, payloads=payloads, max_message_bytes=4096)
    big = Envelope(task="greet", input={"blob": "x" * 10_000})
    small = envelope(1)
    queue.send(big)
    queue.send_many([Envelope(task="greet", input={"blob": "y" * 10_000}), small])
    messages = [Envelope.decode(m["Body"]) for m in receive_all(rig.sqs, url)]
    by_id = {m.id: m for m in messages}
    assert by_id[big.id].input is None
    assert by_id[big.id].input_ref == f"memory://{big.id}"
    assert json.loads(payloads.get(f"memory://{big.id}")) == big.input
    assert by_id[small.id] == small  # small inputs stay inline
    assert len(payloads) == 2
    restored = [json.loads(payloads.get(m.input_ref)) for m in messages if m.input_ref]
    assert sorted(r["blob"][0] for r in restored) == ["x", "y"]


# -- failures ----------------------------------------------------------------------------------


def failing_batches(queue: SqsQueue | SqsHttpQueue, plan: list[dict[str, bool]]) -> None:
    """Make SendMessageBatch report entries failed: each dict maps entry index -> SenderFault.

    The other entries really go to moto, through the transport's own request call.
    """
    real = queue._send_batch

    def fake(entries: list[dict[str, Any]], ids: tuple[str, ...]) -> Mapping[str, Any]:
        failures = plan.pop(0) if plan else {}
        keep = [e for i, e in enumerate(entries) if str(i) not in failures]
        answer = dict(real(keep, ids)) if keep else {"Successful": []}
        answer["Failed"] = [
            {"Id": entries[int(i)]["Id"], "SenderFault": fault, "Code": "Boom", "Message": "x"}
            for i, fault in failures.items()
        ]
        return answer

    queue._send_batch = fake  # type: ignore[method-assign]


def test_failed_batch_entries_are_sent_again(rig: Rig) -> None:
    """Entries SQS fails on its side are retried until accepted; nothing is lost."""
    url = rig.create()
    queue = rig.queue(url)
    failing_batches(queue, [{"1": False, "2": False}, {"0": False}])
    sent = [envelope(n) for n in range(3)]
    queue.send_many(sent)
    assert received_ids(rig, url) == sorted(e.id for e in sent)
    assert [len(b) for b in batch_entries(rig)] == [1, 1, 1]  # 1 of 3, then 1 of 2, then 1


def test_entries_that_keep_failing_are_raised_with_their_job_ids(rig: Rig) -> None:
    """Sender faults and exhausted retries raise TransportError listing every job not sent."""
    url = rig.create()
    queue = rig.queue(url, batch_retries=1)
    failing_batches(queue, [{"0": True, "1": False}, {"0": False}, {"0": False}])
    sent = [envelope(n) for n in range(3)]
    with pytest.raises(TransportError, match="2 of 3 envelopes were not accepted") as caught:
        queue.send_many(sent)
    assert sorted(caught.value.job_ids) == sorted([sent[0].id, sent[1].id])
    assert "Boom: x" in str(caught.value)
    assert caught.value.retryable  # job 1 failed on SQS's side: trying later may work
    assert received_ids(rig, url) == [sent[2].id]


def test_only_sender_faults_make_the_error_not_retryable(rig: Rig) -> None:
    """When every failed entry was the sender's fault, the error says retrying cannot help."""
    url = rig.create()
    queue = rig.queue(url)
    failing_batches(queue, [{"1": True}])
    sent = [envelope(n) for n in range(2)]
    with pytest.raises(TransportError, match="1 of 2") as caught:
        queue.send_many(sent)
    assert caught.value.job_ids == (sent[1].id,)
    assert not caught.value.retryable
    assert len(batch_entries(rig)) == 1  # not sent again


def test_a_throttled_entry_is_retried_even_when_flagged_as_the_senders_fault(rig: Rig) -> None:
    """A throttling code on a failed entry is retried whatever ``SenderFault`` says."""
    url = rig.create()
    queue = rig.queue(url)
    real = queue._send_batch
    plan = [1]

    def throttled_once(entries: list[dict[str, Any]], ids: tuple[str, ...]) -> Mapping[str, Any]:
        if plan and plan.pop():
            failed = {"Id": entries[0]["Id"], "SenderFault": True, "Code": "KmsThrottled"}
            return {"Successful": [], "Failed": [failed]}
        return real(entries, ids)

    queue._send_batch = throttled_once  # type: ignore[method-assign]
    sent = envelope()
    queue.send_many([sent])
    assert received_ids(rig, url) == [sent.id]


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [(400, "InvalidParameterValue", False), (400, "ThrottlingException", True)],
)
def test_a_failed_request_reports_every_job_not_sent(
    rig: Rig, status: int, code: str, retryable: bool
) -> None:
    """When a whole batch request fails, its jobs and every later batch's are listed."""
    url = rig.create()
    queue = rig.queue(url)
    rig.fail_requests(queue, "SendMessageBatch", status, code, skip=1)
    sent = [envelope(n) for n in range(25)]
    with pytest.raises(TransportError, match="15 of 25 envelopes were not accepted") as caught:
        queue.send_many(sent)
    assert caught.value.job_ids == tuple(e.id for e in sent[10:])
    assert code in str(caught.value)
    assert caught.value.retryable is retryable
    assert rig.calls()["SendMessageBatch"] == 2  # stopped at the failed request
    assert received_ids(rig, url) == sorted(e.id for e in sent[:10])


def test_a_request_failing_mid_retry_reports_only_what_was_not_accepted(rig: Rig) -> None:
    """Entries accepted before a retry request failed are not reported as lost."""
    url = rig.create()
    queue = rig.queue(url)
    failing_batches(queue, [{"2": False}])
    rig.fail_requests(queue, "SendMessageBatch", 503, "ServiceUnavailable", skip=1)
    sent = [envelope(n) for n in range(3)]
    with pytest.raises(TransportError, match="1 of 3") as caught:
        queue.send_many(sent)
    assert caught.value.job_ids == (sent[2].id,)
    assert caught.value.retryable
    assert received_ids(rig, url) == sorted(e.id for e in sent[:2])


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (400, "ThrottlingException", True),
        (400, "KmsThrottled", True),
        (503, "SomethingNew", True),
        (400, "InvalidMessageContents", False),
        (403, "AccessDenied", False),
    ],
)
def test_the_retryable_decision_is_the_same_for_both(
    rig: Rig, status: int, code: str, retryable: bool
) -> None:
    """Throttling codes and 5xx are retryable, the sender's mistakes are not, on both."""
    url = rig.create()
    queue = rig.queue(url)
    failed = rig.fail_requests(queue, "SendMessage", status, code)
    sent = envelope()
    with pytest.raises(TransportError, match=code) as caught:
        queue.send(sent)
    assert caught.value.retryable is retryable
    assert caught.value.job_ids == (sent.id,)
    assert failed
    if not retryable:
        assert len(failed) == 1  # a sender's mistake is not sent again


def test_a_throttled_request_is_sent_again_and_arrives_once(rig: Rig) -> None:
    """A request answered with throttling is retried by the transport; the job arrives once."""
    url = rig.create()
    queue = rig.queue(url)
    failed = rig.fail_requests(queue, "SendMessage", 400, "ThrottlingException", times=1)
    sent = envelope()
    queue.send(sent)
    assert len(failed) == 1
    assert rig.calls()["SendMessage"] == 1  # one call, two HTTP attempts
    assert received_ids(rig, url) == [sent.id]


def test_a_missing_queue_is_one_clear_error_naming_it(rig: Rig) -> None:
    """Sending to a queue that does not exist names the URL and is not retryable."""
    url = rig.create().rsplit("/", 1)[0] + "/nope"
    pattern = {
        "boto3": r"send to .*/nope: .*NonExistentQueue",
        "stdlib": r"SendMessage to .*/nope: .*QueueDoesNotExist",
    }[rig.kind]
    sent = envelope()
    with pytest.raises(TransportError, match=pattern) as caught:
        rig.queue(url).send(sent)
    assert not caught.value.retryable
    assert caught.value.job_ids == (sent.id,)


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_bad_urls_are_refused_at_construction(kind: str) -> None:
    """A queue name instead of a URL is caught before any request."""
    make = SqsQueue if kind == "boto3" else SqsHttpQueue
    with pytest.raises(ValueError, match="expected an SQS queue URL"):
        make("jobs")


# -- _sqs_entries, alone -----------------------------------------------------------------------


def entries(url: str = "https://sqs.us-east-1.amazonaws.com/1/q", **options: Any) -> SqsEntries:
    settings: dict[str, Any] = {
        "message_group": None,
        "max_message_bytes": SQS_MAX_MESSAGE_BYTES,
        "batch_retries": 3,
        "payloads": None,
        "transport": "Test",
    }
    return SqsEntries(url, **{**settings, **options})


def test_an_entry_is_the_sendmessage_parameters() -> None:
    """Body and nothing else for a plain envelope on a standard queue."""
    sent = envelope()
    entry = entries().entry(sent, None)
    assert entry.fields == {"MessageBody": sent.encode().decode()}
    assert entry.size == len(sent.encode())
    assert entry.envelope is sent


def test_delay_is_rounded_up_and_capped() -> None:
    """0.2 s becomes 1 s (never early); an hour becomes SQS_MAX_DELAY."""
    builder = entries()
    assert builder.entry(envelope().with_delay(0.2), None).fields["DelaySeconds"] == 1
    assert builder.entry(envelope().with_delay(3600), None).fields["DelaySeconds"] == SQS_MAX_DELAY


def test_fifo_ids_are_digests_of_the_key_or_job_id() -> None:
    """The dedup id is a 64-character hex digest: valid for SQS whatever the key holds."""
    builder = entries("https://sqs.us-east-1.amazonaws.com/1/q.fifo")
    keyed = builder.entry(envelope(idempotency_key="ünï code/with spaces " * 10), None).fields
    plain = builder.entry(envelope(), None).fields
    for fields in (keyed, plain):
        assert len(fields["MessageDeduplicationId"]) == 64
        assert int(fields["MessageDeduplicationId"], 16) >= 0
        assert fields["MessageGroupId"] == "greet"


def test_the_trace_header_counts_against_the_size() -> None:
    """The ambient trace header is used and counted when the envelope has none."""
    sent = envelope()
    entry = entries().entry(sent, "Root=1-abc")
    assert entry.fields["MessageSystemAttributes"]["AWSTraceHeader"]["StringValue"] == "Root=1-abc"
    assert entry.size == len(sent.encode()) + len("Root=1-abc")


def test_batches_split_by_count_and_by_size() -> None:
    """Eleven small envelopes: 10 + 1; five 300 KB ones: 3 + 2 (1 MiB in total at most)."""
    small = [[e.envelope for e in b] for b in entries().batches([envelope(n) for n in range(11)])]
    assert [len(b) for b in small] == [10, 1]
    big = [Envelope(task="t", input="x" * 300_000) for _ in range(5)]
    split = list(entries().batches(big))
    assert [len(b) for b in split] == [3, 2]
    assert all(sum(e.size for e in b) <= SQS_MAX_MESSAGE_BYTES for b in split)


def test_a_message_of_exactly_the_limit_is_sent_inline() -> None:
    """The limit is inclusive: a body of max_message_bytes is not offloaded."""
    base = Envelope(task="t", input="", id="fixed")
    pad = 2048 - len(base.encode())
    exact = base.replace(input="x" * pad)
    assert len(exact.encode()) == 2048
    builder = entries(max_message_bytes=2048, payloads=MemoryPayloads())
    assert builder.entry(exact, None).fields["MessageBody"] == exact.encode().decode()


def test_offload_puts_the_input_and_sends_a_ref() -> None:
    """The payload store gets the input as JSON; the entry's body has input_ref instead."""
    payloads = MemoryPayloads()
    big = Envelope(task="t", input={"blob": "x" * 5000})
    entry = entries(max_message_bytes=1024, payloads=payloads).entry(big, None)
    slim = Envelope.decode(entry.fields["MessageBody"])
    assert slim == big.replace(input=None, input_ref=f"memory://{big.id}")
    assert payloads.get(f"memory://{big.id}") == dumps(big.input)


def test_offload_refuses_what_cannot_shrink() -> None:
    """An envelope already offloaded, or too large without its input, is refused by job id."""
    builder = entries(max_message_bytes=1024, payloads=MemoryPayloads())
    huge_headers = Envelope(task="t", input={"a": 1}, headers={"h": "x" * 2000})
    with pytest.raises(TransportError, match="even without its input") as caught:
        builder.entry(huge_headers, None)
    assert caught.value.job_ids == (huge_headers.id,)
    assert not caught.value.retryable
    twice = Envelope(
        task="t", input=None, input_ref="memory://" + "r" * 900, headers={"h": "x" * 200}
    )
    with pytest.raises(TransportError, match="over the queue's 1024-byte"):
        builder.entry(twice, None)


def test_max_message_bytes_must_be_within_sqs_limit() -> None:
    """A limit above SQS's 1 MiB (or below 1) would let requests fail at SQS: refused."""
    with pytest.raises(ValueError, match="max_message_bytes"):
        entries(max_message_bytes=SQS_MAX_MESSAGE_BYTES + 1)
    with pytest.raises(ValueError, match="max_message_bytes"):
        entries(max_message_bytes=0)


class FakeSqs:
    """A SendMessageBatch that fails entries by plan and records what it was sent."""

    def __init__(self, plan: list[dict[str, tuple[str, bool]]]) -> None:
        self.plan = plan
        self.requests: list[list[str]] = []
        self.accepted: list[str] = []

    def __call__(self, batch: list[dict[str, Any]], ids: tuple[str, ...]) -> Mapping[str, Any]:
        self.requests.append(list(ids))
        failures = self.plan.pop(0) if self.plan else {}
        failed = []
        for entry, job_id in zip(batch, ids, strict=True):
            if entry["Id"] in failures:
                code, fault = failures[entry["Id"]]
                failed.append({"Id": entry["Id"], "Code": code, "SenderFault": fault})
            else:
                self.accepted.append(job_id)
        return {"Failed": failed}


def test_retries_back_off_and_give_up_after_batch_retries() -> None:
    """Each retry waits a little longer; after ``batch_retries`` the job is reported."""
    waits: list[float] = []
    builder = entries(batch_retries=3, sleep=waits.append)
    fake = FakeSqs([{"0": ("InternalError", False)}] * 4)
    sent = envelope()
    with pytest.raises(TransportError, match="1 of 1") as caught:
        builder.send_many([sent], fake)
    assert len(fake.requests) == 4  # the first try and three retries
    assert len(waits) == 3  # no wait after the last try
    assert [0.025 <= w <= 0.05 * 2**i for i, w in enumerate(waits)] == [True] * 3
    assert caught.value.retryable
    assert caught.value.job_ids == (sent.id,)


def test_retries_keep_entry_ids_and_send_only_what_failed() -> None:
    """A retry resends just the failed entries, under the ids SQS reported them by."""
    ids_seen: list[list[str]] = []
    fake = FakeSqs([{"1": ("ServiceUnavailable", False), "3": ("Throttling", True)}])

    def send(batch: list[dict[str, Any]], ids: tuple[str, ...]) -> Mapping[str, Any]:
        ids_seen.append([e["Id"] for e in batch])
        return fake(batch, ids)

    sent = [envelope(n) for n in range(4)]
    entries(sleep=lambda _: None).send_many(sent, send)
    assert ids_seen == [["0", "1", "2", "3"], ["1", "3"]]
    assert sorted(fake.accepted) == sorted(e.id for e in sent)


def test_a_failure_while_building_a_batch_reports_it_and_the_rest() -> None:
    """An oversize envelope stops the sending: it and everything after it are reported."""
    fake = FakeSqs([])
    sent = [envelope(n) for n in range(12)]
    sent[11] = Envelope(task="t", input="x" * 3000)
    with pytest.raises(TransportError, match="2 of 12") as caught:
        entries(max_message_bytes=2048).send_many(sent, fake)  # 10 small ones fit in 2 KiB
    assert caught.value.job_ids == (sent[10].id, sent[11].id)
    assert not caught.value.retryable
    assert fake.accepted == [e.id for e in sent[:10]]


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ThrottlingException", 400, True),
        ("RequestThrottled", 403, True),
        ("KmsThrottled", 400, True),
        ("InternalError", 500, True),
        ("", 502, True),
        ("Unknown", 503, True),
        ("InvalidParameterValue", 400, False),
        ("AWS.SimpleQueueService.NonExistentQueue", 400, False),
        ("", 0, False),
    ],
)
def test_is_retryable(code: str, status: int, expected: bool) -> None:
    """Throttling and service codes, and any 5xx, are worth another request; nothing else."""
    assert is_retryable(code, status) is expected


def test_entry_retryable_follows_sender_fault_unless_the_code_says_throttled() -> None:
    """SQS's own failures are retried; sender faults only when the code is a retryable one."""
    assert entry_retryable("InternalError", sender_fault=False)
    assert entry_retryable("Boom", sender_fault=False)
    assert not entry_retryable("InvalidParameterValue", sender_fault=True)
    assert all(entry_retryable(code, sender_fault=True) for code in RETRYABLE_CODES)


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    """Waits lie in [base/2, base] for base = 50 ms * 2**attempt, capped."""
    for attempt in range(10):
        base = min(2.0, 0.05 * 2**attempt)
        for _ in range(20):
            assert base / 2 <= backoff(attempt) <= base
    assert backoff(50, cap=0.1) <= 0.1
