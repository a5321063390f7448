"""The Lambda entrypoint with realistic events, on the memory store and on DynamoDB.

Queues are moto's (in process). Records are built from real ReceiveMessage answers, shaped
exactly as Lambda's event source mapping shapes them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from conftest import FAST_RETRY, EmailSent, SendEmail, send_email
from taskhop.lambda_worker import (
    LocalContext,
    LocalEventSourceMapping,
    UnrecognisedEvent,
    make_handler,
)
from taskhop.lambda_worker._logs import emit_job
from taskhop.sdk import (
    App,
    Envelope,
    EnvelopeError,
    ErrorInfo,
    FieldError,
    JobContext,
    JobStatus,
    Outcome,
    OutcomeKind,
    PermanentError,
    create_app,
    static_contract,
)
from taskhop.sdk.memory import MemoryQueue, MemoryStore


@dataclass
class Rig:
    """A worker app, its handler, and the queues its events come from."""

    app: App
    sqs: Any
    url: str
    dlq: str
    esm: LocalEventSourceMapping

    def handler(self, **options: Any) -> Any:
        return make_handler(self.app, sqs_client=self.sqs, **options)

    def event(self, *bodies: bytes | str, **send: Any) -> dict[str, Any]:
        """Send bodies, receive them, and wrap them as one Lambda SQS event."""
        for body in bodies:
            self.sqs.send_message(
                QueueUrl=self.url,
                MessageBody=body if isinstance(body, str) else body.decode(),
                **send,
            )
        messages: list[dict[str, Any]] = []
        while len(messages) < len(bodies):
            got = self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])  # fmt: skip
            assert got, "the queue ran dry"
            messages += got
        return {"Records": [self.esm._record(m) for m in messages]}

    def dead_letters(self) -> list[dict[str, Any]]:
        answer = self.sqs.receive_message(
            QueueUrl=self.dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        return list(answer.get("Messages", []))


@pytest.fixture(params=["memory", "dynamodb"])
def rig(request: pytest.FixtureRequest, mocked_aws: None) -> Iterator[Rig]:
    """A worker whose job store is the parameter, fed from a moto queue."""
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
    dlq = sqs.create_queue(QueueName="jobs-dlq")["QueueUrl"]
    if request.param == "memory":
        store: Any = MemoryStore()
    else:
        from taskhop.backends.dynamodb import DynamoStore

        store = DynamoStore("jobs")
        store.create_table()
    app = create_app(queue=MemoryQueue(), store=store)
    esm = LocalEventSourceMapping(lambda e, c: None, url, sqs)
    yield Rig(app, sqs, url, dlq, esm)
    app.close()


def job(data: dict[str, Any], **fields: Any) -> bytes:
    return Envelope(task="send-email", input=data, **fields).encode()


def ok(data: SendEmail, ctx: JobContext) -> EmailSent:
    return EmailSent(f"m-{data['to']}")


def failures(answer: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in answer["batchItemFailures"]]


def test_a_batch_of_good_jobs_reports_no_failures(rig: Rig) -> None:
    """Every record succeeds: an empty batchItemFailures, every result recorded."""
    rig.app.implement(send_email, ok)
    bodies = [job({"to": str(n), "subject": "s"}) for n in range(5)]
    answer = rig.handler()(rig.event(*bodies), LocalContext())
    assert answer == {"batchItemFailures": []}
    assert rig.app.store is not None
    for body in bodies:
        record = rig.app.store.get(Envelope.decode(body).id)
        assert record is not None
        assert record.status is JobStatus.SUCCEEDED


def test_one_bad_record_never_fails_the_others(rig: Rig) -> None:
    """Invalid input is rejected (and deleted), poison goes to the DLQ, a retry alone fails."""

    def flaky(data: SendEmail, ctx: JobContext) -> EmailSent:
        if data["to"] == "flaky":
            raise ConnectionError("smtp down")
        return EmailSent("ok")

    rig.app.implement(send_email, flaky)
    good = job({"to": "a", "subject": "s"})
    invalid = job({"to": 5, "subject": "s"})
    retry = job({"to": "flaky", "subject": "s"})
    event = rig.event(good, invalid, b"not json at all", b'{"Message": "from SNS"}', retry)
    by_body = {r["body"]: r["messageId"] for r in event["Records"]}
    answer = rig.handler(dlq_url=rig.dlq)(event, LocalContext())
    assert failures(answer) == [by_body[retry.decode()]]
    letters = rig.dead_letters()
    reasons = sorted(m["MessageAttributes"]["taskhop-reason"]["StringValue"] for m in letters)
    assert reasons == ["not_envelope", "not_json"]
    assert rig.app.store is not None
    rejected = rig.app.store.get(Envelope.decode(invalid).id)
    assert rejected is not None
    assert rejected.status is JobStatus.REJECTED


def test_a_retry_changes_the_visibility_to_the_backoff(rig: Rig) -> None:
    """The retried record is hidden for the policy's delay, not the queue's default."""

    def down(data: SendEmail, ctx: JobContext) -> EmailSent:
        raise ConnectionError("down")

    slow_retry = static_contract("send-email", input=SendEmail, output=EmailSent,
                                 retry={"attempts": 3, "delay": 120, "jitter": False})  # fmt: skip
    rig.app.implement(slow_retry, down)
    calls: list[dict[str, Any]] = []
    rig.sqs.meta.events.register(
        "provide-client-params.sqs.ChangeMessageVisibility",
        lambda params, **_: calls.append(params),
    )
    answer = rig.handler()(rig.event(job({"to": "a", "subject": "s"})), LocalContext())
    assert len(failures(answer)) == 1
    assert [c["VisibilityTimeout"] for c in calls] == [120]


def test_exhausted_attempts_are_recorded_failed_and_dead_lettered(rig: Rig) -> None:
    """On the last attempt (ApproximateReceiveCount) the job fails for good and goes to the DLQ."""

    def down(data: SendEmail, ctx: JobContext) -> EmailSent:
        raise ConnectionError("down")

    rig.app.implement(send_email, down)
    body = job({"to": "a", "subject": "s"}, attempt=FAST_RETRY["attempts"])
    answer = rig.handler(dlq_url=rig.dlq)(rig.event(body), LocalContext())
    assert failures(answer) == []
    [letter] = rig.dead_letters()
    assert letter["MessageAttributes"]["taskhop-reason"]["StringValue"] == "retries_exhausted"
    assert rig.app.store is not None
    record = rig.app.store.get(Envelope.decode(body).id)
    assert record is not None
    assert record.status is JobStatus.FAILED


def test_a_dead_letter_whose_queue_url_lookup_fails_is_still_sent_once(rig: Rig) -> None:
    """After the DLQ send, the early delete needs the source queue's URL. Failing to find it
    must not fail the record: it would come back and be dead-lettered a second time."""

    def down(data: SendEmail, ctx: JobContext) -> EmailSent:
        raise ConnectionError("down")

    rig.app.implement(send_email, down)
    body = job({"to": "a", "subject": "s"}, attempt=FAST_RETRY["attempts"])
    event = rig.event(body)

    def no_url(**_: Any) -> None:
        raise ConnectionError("injected: GetQueueUrl failed")

    rig.sqs.meta.events.register("before-call.sqs.GetQueueUrl", no_url)
    answer = rig.handler(dlq_url=rig.dlq)(event, LocalContext())
    rig.sqs.meta.events.unregister("before-call.sqs.GetQueueUrl", no_url)
    assert failures(answer) == []  # Lambda deletes it after the answer
    assert len(rig.dead_letters()) == 1


def test_without_a_dlq_url_dead_letters_are_left_to_redrive(rig: Rig) -> None:
    """Poison is reported failed so the queue's redrive policy moves it: nothing is lost."""
    rig.app.implement(send_email, ok)
    event = rig.event(b"\x00garbage")
    assert failures(rig.handler()(event, LocalContext())) == [event["Records"][0]["messageId"]]


def test_permanent_errors_are_recorded_and_not_retried(rig: Rig) -> None:
    """A PermanentError is deleted from the queue and recorded failed."""

    def refuse(data: SendEmail, ctx: JobContext) -> EmailSent:
        raise PermanentError("no such mailbox")

    rig.app.implement(send_email, refuse)
    answer = rig.handler()(rig.event(job({"to": "a", "subject": "s"})), LocalContext())
    assert failures(answer) == []


def test_fifo_groups_stop_at_their_first_failure(mocked_aws: None) -> None:
    """After a failure in a group the rest of that group fails unprocessed; other groups go on."""
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="jobs.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    ran: list[str] = []

    def handler(data: SendEmail, ctx: JobContext) -> EmailSent:
        ran.append(data["to"])
        if data["to"] == "a1":
            raise ConnectionError("down")
        return EmailSent("ok")

    app = create_app(queue=MemoryQueue(), store=MemoryStore())
    app.implement(send_email, handler)
    for n, (group, to) in enumerate([("A", "a1"), ("B", "b1"), ("A", "a2"), ("B", "b2")]):
        sqs.send_message(QueueUrl=url, MessageBody=job({"to": to, "subject": "s"}).decode(),
                         MessageGroupId=group, MessageDeduplicationId=str(n))  # fmt: skip
    esm = LocalEventSourceMapping(lambda e, c: None, url, sqs)
    messages = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
    )["Messages"]
    event = {"Records": [esm._record(m) for m in messages]}
    answer = make_handler(app, sqs_client=sqs)(event, LocalContext())
    to_of = {r["messageId"]: json.loads(r["body"])["input"]["to"] for r in event["Records"]}
    assert sorted(to_of[i] for i in failures(answer)) == ["a1", "a2"]
    assert sorted(ran) == ["a1", "b1", "b2"]  # a2 was never run: it waits behind a1
    app.close()


def test_records_past_the_deadline_are_returned_unprocessed(rig: Rig) -> None:
    """When the invocation is about to time out, the remaining records come back later."""
    rig.app.implement(send_email, ok)
    event = rig.event(job({"to": "a", "subject": "s"}), job({"to": "b", "subject": "s"}))
    answer = rig.handler(safety_margin=5)(event, LocalContext(timeout=1))
    assert len(failures(answer)) == 2


def test_a_store_outage_fails_only_that_record(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception outside the handler leaves the record on the queue and goes on."""
    from taskhop.sdk import StoreError

    rig.app.implement(send_email, ok)
    assert rig.app.store is not None
    real_begin = rig.app.store.begin
    seen: list[str] = []

    def flaky_begin(job_id: str, **kwargs: Any) -> Any:
        if not seen:
            seen.append(job_id)
            raise StoreError("throttled past retries")
        return real_begin(job_id, **kwargs)

    monkeypatch.setattr(rig.app.store, "begin", flaky_begin)
    event = rig.event(job({"to": "a", "subject": "s"}), job({"to": "b", "subject": "s"}))
    answer = rig.handler()(event, LocalContext())
    assert len(failures(answer)) == 1


def test_jobs_not_yet_due_are_re_sent_without_using_an_attempt(rig: Rig) -> None:
    """A record received before its not_before is re-sent delayed and deleted."""
    rig.app.implement(send_email, ok)
    early = Envelope(task="send-email", input={"to": "a", "subject": "s"}).with_delay(120)
    event = rig.event(early.encode())
    sent: list[dict[str, Any]] = []
    rig.sqs.meta.events.register(
        "provide-client-params.sqs.SendMessage", lambda params, **_: sent.append(params)
    )
    answer = rig.handler()(event, LocalContext())
    assert failures(answer) == []
    assert len(sent) == 1
    assert 110 <= sent[0]["DelaySeconds"] <= 120


def test_direct_invocation_returns_the_result(rig: Rig) -> None:
    """``{"task", "input"}`` or a whole envelope runs the job and answers with its outcome."""
    rig.app.implement(send_email, ok)
    handler = rig.handler()
    answer = handler({"task": "send-email", "input": {"to": "a", "subject": "s"}}, LocalContext())
    assert (answer["status"], answer["result"]) == ("succeeded", {"message_id": "m-a"})
    envelope = Envelope(task="send-email", input={"to": "b", "subject": "s"})
    assert handler(envelope.to_dict(), LocalContext())["job_id"] == envelope.id
    invalid = handler({"task": "send-email", "input": {"to": 1}}, LocalContext())
    assert invalid["status"] == "rejected"
    assert [f["path"] for f in invalid["error"]["fields"]] == ["input.to", "input.subject"]


def test_a_direct_invocation_is_built_at_the_contract_version(rig: Rig) -> None:
    """``{"task", "input"}`` of a version 2 contract runs, like a schedule: nothing to migrate."""
    v2 = send_email.replace(version=2)
    rig.app.implement(v2, ok)
    handler = rig.handler()
    answer = handler({"task": "send-email", "input": {"to": "a", "subject": "s"}}, LocalContext())
    assert (answer["status"], answer["result"]) == ("succeeded", {"message_id": "m-a"})
    rig.app.schedule("rate(5 minutes)", v2, {"to": "cron", "subject": "s"})
    assert handler({"taskhop_schedule": "send-email"}, LocalContext())["status"] == "succeeded"


def test_unrecognised_events_are_taskhop_errors() -> None:
    """``UnrecognisedEvent`` sits under ``TaskhopError`` and stays a ``ValueError``."""
    from taskhop.sdk import TaskhopError

    assert issubclass(UnrecognisedEvent, TaskhopError)
    assert issubclass(UnrecognisedEvent, ValueError)


def test_scheduled_events_run_the_declared_schedule(rig: Rig) -> None:
    """An EventBridge scheduled event runs the schedule its rule names."""
    rig.app.implement(send_email, ok)
    rig.app.schedule("rate(5 minutes)", send_email, {"to": "cron", "subject": "s"}, name="digest")
    event = {
        "version": "0", "id": "e1", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": "2026-11-22T08:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/digest"], "detail": {},
    }  # fmt: skip
    answer = rig.handler()(event, LocalContext())
    assert answer["result"] == {"message_id": "m-cron"}
    with pytest.raises(UnrecognisedEvent, match="no schedule named 'other'"):
        rig.handler()({**event, "resources": ["arn:aws:events:::rule/other"]}, LocalContext())


def test_a_failing_scheduled_job_raises_so_lambda_retries_it(rig: Rig) -> None:
    """EventBridge invokes asynchronously; an exception is what makes Lambda retry."""

    def down(data: SendEmail, ctx: JobContext) -> EmailSent:
        raise ConnectionError("down")

    rig.app.implement(send_email, down)
    rig.app.schedule("cron(0 12 * * ? *)", send_email, {"to": "x", "subject": "s"})
    with pytest.raises(Exception, match="will be retried"):
        rig.handler()({"taskhop_schedule": "send-email"}, LocalContext())


def test_schedules_are_checked_when_declared(rig: Rig) -> None:
    """A bad expression or an invalid input is refused by app.schedule itself."""
    from taskhop.sdk import ContractError, ValidationError, define_task

    with pytest.raises(ContractError, match="not an EventBridge expression"):
        rig.app.schedule("every 5 minutes", send_email, {"to": "x", "subject": "s"})
    from conftest import Resize, Resized

    strict = define_task("strict", input=Resize, output=Resized)
    with pytest.raises(ValidationError):
        rig.app.schedule("rate(1 hour)", strict, {"url": "ftp://x", "width": 0})  # type: ignore[arg-type]


def test_http_events_use_the_seam_or_answer_501(rig: Rig) -> None:
    """HTTP events go to ``http=``; without it the worker answers 501."""
    event = {"version": "2.0", "rawPath": "/jobs", "requestContext": {"http": {"method": "POST"}}}
    assert rig.handler()(event, LocalContext())["statusCode"] == 501
    answer = rig.handler(http=lambda e, c: {"statusCode": 202})(event, LocalContext())
    assert answer == {"statusCode": 202}


@pytest.mark.parametrize("event", [{"detail-type": "Object Created"}, [1, 2], "text", {}])
def test_unrecognised_events_are_a_clear_error(rig: Rig, event: Any) -> None:
    """An event of no kind the worker serves raises UnrecognisedEvent naming its keys."""
    with pytest.raises(UnrecognisedEvent, match="not an event this worker serves"):
        rig.handler()(event, LocalContext())


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda r: r.pop("messageId"), r"Records\[1\]\.messageId: missing or not a string"),
        (lambda r: r.update(body=None), r"Records\[1\]\.body: missing or not a string"),
        (lambda r: r.update(attributes=[]), r"Records\[1\]\.attributes: not an object"),
        (
            lambda r: r["attributes"].update(ApproximateReceiveCount="two"),
            r"Records\[1\]\.attributes\.ApproximateReceiveCount: not a count",
        ),
    ],
)
def test_a_malformed_sqs_event_is_refused_whole_naming_the_field(
    rig: Rig, change: Callable[[dict[str, Any]], object], path: str
) -> None:
    """Not what Lambda sends: one clear error with the field's path, and nothing processed."""
    runs: list[str] = []
    rig.app.implement(send_email, lambda data, ctx: runs.append(ctx.job_id) or ok(data, ctx))
    valid = {"to": "a@example.com", "subject": "s"}
    event = rig.event(job(valid), job(valid))
    change(event["Records"][1])
    with pytest.raises(UnrecognisedEvent, match=path):
        rig.handler()(event, LocalContext())
    assert runs == []


def test_logs_are_json_lines_with_metrics_and_no_payloads(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    """One JSON line per job (ids, outcome, duration), an EMF line per task, never the body."""
    rig.app.implement(send_email, ok)
    rig.handler()(rig.event(job({"to": "secret@example.com", "subject": "s"})), LocalContext())
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [entry] = [line for line in lines if line.get("event") == "job"]
    assert entry["outcome"] == "succeeded"
    assert entry["task"] == "send-email"
    assert entry["attempt"] == 1
    assert isinstance(entry["duration_ms"], float)
    [metrics] = [line for line in lines if "_aws" in line]
    assert metrics["jobs_succeeded"] == 1
    assert metrics["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "taskhop"
    assert "secret@example.com" not in json.dumps(lines)


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(
            OutcomeKind.SUCCEEDED,
            Envelope(task='odd "task"\\ é \u2028', input=None, id="id\n\t\x00"),
            2,
            duration_ms=1.25,
        ),
        Outcome(
            OutcomeKind.REJECTED,
            Envelope(task="t", input=None),
            1,
            error=ErrorInfo(
                "ValidationError", 'bad "x"\n' * 100, (FieldError("input.a[0]", "wrong"),)
            ),
            reason="invalid_input",
            retry_after=0.0004,
        ),
        Outcome(OutcomeKind.POISON, error=ErrorInfo("EnvelopeError", "not JSON"), reason="x"),
    ],
)
def test_job_line_is_the_json_the_fields_say(outcome: Outcome) -> None:
    """The hand-formatted job line parses, and escapes whatever a task name or error holds."""
    out = io.StringIO()
    emit_job(outcome, source="sqs", message_id='m"1', out=out)
    text = out.getvalue()
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert text.isascii()
    expected: dict[str, Any] = {
        "level": "ERROR" if outcome.kind in ("failed", "poison") else "INFO",
        "event": "job",
        "source": "sqs",
        "outcome": outcome.kind.value,
        "job_id": outcome.job_id,
        "task": None if outcome.envelope is None else outcome.envelope.task,
        "attempt": outcome.attempt or None,
        "duration_ms": outcome.duration_ms,
        "message_id": 'm"1',
    }
    if outcome.reason:
        expected["reason"] = outcome.reason
    if outcome.error is not None:
        expected["error_type"] = outcome.error.type
        expected["error"] = outcome.error.message[:500]
        if outcome.error.fields:
            expected["fields"] = [f.path for f in outcome.error.fields]
    if outcome.retry_after is not None:
        expected["retry_after_s"] = round(outcome.retry_after, 3)
    assert json.loads(text) == expected


def test_a_direct_invocation_with_a_bad_envelope_field_is_refused_naming_it(rig: Rig) -> None:
    """A task that is not a name, or a key that is not a string: EnvelopeError with the field."""
    handler = rig.handler()
    with pytest.raises(EnvelopeError) as caught:
        handler({"task": "", "input": {}}, LocalContext())
    assert caught.value.field == "task"
    with pytest.raises(EnvelopeError) as caught:
        handler({"task": "send-email", "input": {}, "idempotency_key": 7}, LocalContext())
    assert caught.value.field == "idempotency_key"
