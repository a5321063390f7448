"""The local event source mapping and ``taskhop worker --local``, over the moto server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import EmailSent, SendEmail
from taskhop.backends.dynamodb import DynamoStore
from taskhop.backends.sqs import SqsQueue
from taskhop.lambda_worker import LocalEventSourceMapping, make_handler
from taskhop.sdk import (
    Envelope,
    JobContext,
    JobStatus,
    TaskRejected,
    create_app,
    gather,
    static_contract,
)
from taskhop.static_contracts.limits import SQS_MAX_DELAY

contract = static_contract(
    "mail", input=SendEmail, output=EmailSent, retry={"attempts": 2, "delay": 0, "jitter": False}
)


def queues(session: Any, *, max_receive: int = 5, visibility: int = 0) -> tuple[str, str, str]:
    """A queue with a redrive policy to its DLQ, as the infra templates create them."""
    sqs = session.client("sqs")
    name = f"t-{uuid.uuid4().hex[:12]}"
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive})
    url = sqs.create_queue(
        QueueName=name,
        Attributes={"RedrivePolicy": policy, "VisibilityTimeout": str(visibility)},
    )["QueueUrl"]
    return name, url, dlq


def test_jobs_run_end_to_end_through_the_local_event_source_mapping(server_session: Any) -> None:
    """Good, invalid, flaky and poison messages each end where they should; nothing is lost."""
    name, url, dlq = queues(server_session, visibility=30)
    sqs = server_session.client("sqs")
    store = DynamoStore(name, session=server_session)
    store.create_table()
    app = create_app(queue=SqsQueue(url, session=server_session), store=store)
    seen: dict[str, int] = {}

    def handler(data: SendEmail, ctx: JobContext) -> EmailSent:
        seen[data["to"]] = seen.get(data["to"], 0) + 1
        if data["to"] == "flaky" and ctx.attempt == 1:
            raise ConnectionError("blip")
        return EmailSent(f"sent to {data['to']}")

    bound = app.implement(contract, handler)
    good = bound.dispatch_many([{"to": f"user{n}", "subject": "hi"} for n in range(20)])
    flaky = bound.dispatch({"to": "flaky", "subject": "hi"})
    invalid = bound.dispatch({"to": 7, "subject": "hi"})  # type: ignore[typeddict-item]
    sqs.send_message(QueueUrl=url, MessageBody="definitely not json")
    handler = make_handler(app, sqs_client=sqs, dlq_url=dlq)
    esm = LocalEventSourceMapping(
        handler, url, sqs, batch_size=10, wait_time=0, batching_window=0.05
    )
    esm.run(install_signals=False, idle_exit=6)
    assert gather([*good, flaky], timeout=5)[-1] == EmailSent("sent to flaky")
    assert seen["flaky"] == 2
    with pytest.raises(TaskRejected):
        invalid.result(5)
    record = flaky.record()
    assert record is not None
    assert record.status is JobStatus.SUCCEEDED
    assert record.attempt == 2  # ApproximateReceiveCount, as on Lambda
    dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    assert [m["Body"] for m in dead] == ["definitely not json"]
    outcomes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert outcomes["ApproximateNumberOfMessages"] == "0"
    assert outcomes["ApproximateNumberOfMessagesNotVisible"] == "0"
    app.close()


def test_poison_without_a_dlq_url_goes_to_the_queues_own_dlq(server_session: Any) -> None:
    """Without dlq_url the runtime finds the DLQ in the queue's redrive policy, and says why."""
    _, url, dlq = queues(server_session, max_receive=2, visibility=1)
    sqs = server_session.client("sqs")
    app = create_app(queue=SqsQueue(url, session=server_session))
    sqs.send_message(QueueUrl=url, MessageBody='{"taskhop": 9}')
    esm = LocalEventSourceMapping(make_handler(app, sqs_client=sqs), url, sqs, wait_time=1)
    esm.run(install_signals=False, idle_exit=2)
    dead = sqs.receive_message(
        QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", [])
    assert [m["Body"] for m in dead] == ['{"taskhop": 9}']
    assert dead[0]["MessageAttributes"]["taskhop-reason"]["StringValue"] == "unsupported_version"
    assert esm.invocations == 1  # sent at once, not after maxReceiveCount receives
    app.close()


@pytest.mark.parametrize(
    ("fifo", "wait", "delays_sent", "visibilities_set"),
    [(False, 3600, [SQS_MAX_DELAY], []), (True, 120, [], [120])],
    ids=["standard-over-900s", "fifo"],
)
def test_jobs_received_early_are_held_back_as_the_settle_rules_say(
    server_session: Any,
    fifo: bool,
    wait: int,
    delays_sent: list[int],
    visibilities_set: list[int],
) -> None:
    """Through the mapping: re-sent for 900 s at most and deleted, or on FIFO kept and hidden."""
    sqs = server_session.client("sqs")
    name = f"t-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
    attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "true"} if fifo else {}
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    app = create_app(queue=SqsQueue(url, session=server_session))
    app.implement(contract, lambda d, c: EmailSent("too soon"))
    early = Envelope(task="mail", input={"to": "a", "subject": "s"}).with_delay(wait)
    group = {"MessageGroupId": "g"} if fifo else {}
    sqs.send_message(QueueUrl=url, MessageBody=early.encode().decode(), **group)
    calls: dict[str, list[dict[str, Any]]] = {"SendMessage": [], "ChangeMessageVisibility": []}
    for operation, seen in calls.items():
        sqs.meta.events.register(
            f"provide-client-params.sqs.{operation}",
            lambda params, seen=seen, **_: seen.append(params),
        )
    esm = LocalEventSourceMapping(make_handler(app, sqs_client=sqs), url, sqs, wait_time=0)
    assert esm.poll_once() == 1
    assert [c["DelaySeconds"] for c in calls["SendMessage"]] == delays_sent
    assert [c["VisibilityTimeout"] for c in calls["ChangeMessageVisibility"]] == visibilities_set
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessagesNotVisible"] == ("1" if fifo else "0")
    assert counts["ApproximateNumberOfMessagesDelayed"] == ("0" if fifo else "1")
    app.close()


class FirstReceiveFails:
    """An SQS client whose first ReceiveMessage fails as if SQS were unreachable."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.receives = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def receive_message(self, **kwargs: Any) -> Any:
        self.receives += 1
        if self.receives == 1:
            raise ConnectionError("SQS unreachable")
        return self.client.receive_message(**kwargs)


def test_a_failed_poll_is_logged_and_retried_not_fatal(
    server_session: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An SQS error past botocore's retries must not stop the local worker."""
    url, _, _ = queues(server_session)
    sqs = server_session.client("sqs")
    sqs.send_message(QueueUrl=url, MessageBody="{}")
    seen: list[int] = []

    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(len(event["Records"]))
        return {"batchItemFailures": []}

    esm = LocalEventSourceMapping(lambda_handler, url, FirstReceiveFails(sqs), wait_time=0)
    esm.run(install_signals=False, idle_exit=0.2)
    assert seen == [1]
    assert "polling failed" in caplog.text


def test_the_local_mapping_respects_batch_size(server_session: Any) -> None:
    """Invocations never carry more records than the batch size."""
    _, url, _ = queues(server_session)
    sqs = server_session.client("sqs")
    sizes: list[int] = []

    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        sizes.append(len(event["Records"]))
        assert context.get_remaining_time_in_millis() > 0
        assert event["Records"][0]["eventSource"] == "aws:sqs"
        return {"batchItemFailures": []}

    for n in range(7):
        sqs.send_message(QueueUrl=url, MessageBody=str(n))
    esm = LocalEventSourceMapping(lambda_handler, url, sqs, batch_size=3, wait_time=0)
    esm.run(install_signals=False, idle_exit=0.5)
    assert sum(sizes) == 7
    assert max(sizes) <= 3
    with pytest.raises(ValueError, match="batch_size"):
        LocalEventSourceMapping(lambda_handler, url, sqs, batch_size=11)


def test_taskhop_worker_local_stops_cleanly_on_sigterm(
    server_session: Any, moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI worker runs a job, then SIGTERM finishes the batch and exits 0."""
    name, url, _ = queues(server_session)
    (tmp_path / "worker_app.py").write_text(
        textwrap.dedent(
            f"""
            from typing import TypedDict
            from taskhop.backends.dynamodb import DynamoStore
            from taskhop.backends.sqs import SqsQueue
            from taskhop.sdk import create_app, static_contract

            class In(TypedDict):
                n: int

            store = DynamoStore("{name}")
            store.create_table()
            app = create_app(queue=SqsQueue("{url}"), store=store)
            double = app.implement(
                static_contract("double", input=In, output=int), lambda d, c: d["n"] * 2
            )
            """
        )
    )
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PYTHONPATH": str(tmp_path),
    }
    exe = Path(sys.executable).with_name("taskhop")
    proc = subprocess.Popen(
        [
            str(exe),
            "worker",
            "--local",
            "--app",
            "worker_app:app",
            "--queue-url",
            url,
            "--wait-time",
            "1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert "polling" in proc.stderr.readline()
        for key in (
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
        ):
            monkeypatch.setenv(key, env[key])
        monkeypatch.syspath_prepend(str(tmp_path))
        import worker_app  # type: ignore[import-not-found]

        handle = worker_app.double.dispatch({"n": 21})
        assert handle.result(timeout=20) == 42
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped after" in err
    assert '"outcome":"succeeded"' in out


def test_an_exhausted_job_without_a_dlq_url_reaches_the_queues_dlq_once(
    server_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15 #1: with no dlq_url, attempts run out and the job is dead-lettered, not dropped.

    The guardrail's maxReceiveCount (5, above the 3 attempts) used to let the job be recorded
    failed and its next receive be acknowledged as already final: gone, input and all.
    """
    monkeypatch.delenv("TASKHOP_DLQ_URL", raising=False)
    name, url, dlq = queues(server_session, max_receive=5, visibility=1)
    sqs = server_session.client("sqs")
    store = DynamoStore(name, session=server_session)
    store.create_table()
    app = create_app(queue=SqsQueue(url, session=server_session), store=store)
    runs: list[int] = []
    retry = {"attempts": 3, "delay": 0, "jitter": False}
    down = static_contract("down", input=SendEmail, output=EmailSent, retry=retry)

    def handler(data: SendEmail, ctx: JobContext) -> EmailSent:
        runs.append(ctx.attempt)
        raise ConnectionError("smtp down")

    app.implement(down, handler)
    handle = app.get("down").dispatch({"to": "a@example.com", "subject": "s"})
    esm = LocalEventSourceMapping(make_handler(app, sqs_client=sqs), url, sqs, wait_time=1)
    esm.run(install_signals=False, idle_exit=3)
    assert runs == [1, 2, 3]
    dead = sqs.receive_message(
        QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", [])
    assert [json.loads(m["Body"])["id"] for m in dead] == [handle.id]
    assert dead[0]["MessageAttributes"]["taskhop-reason"]["StringValue"] == "retries_exhausted"
    record = store.get(handle.id)
    assert record is not None
    assert (record.status, record.dead_letter) == (JobStatus.FAILED, "retries_exhausted")
    app.close()


class Invocations:
    """A raw Lambda handler that records what each concurrent invocation held, and when."""

    def __init__(self, hold: float = 0.05) -> None:
        self.hold = hold
        self.lock = threading.Lock()
        self.running: dict[str, int] = {}  # message id -> invocations holding it now
        self.overlaps: list[str] = []  # a message held by two invocations at once
        self.groups_running: dict[str, int] = {}
        self.group_overlaps: list[str] = []  # a FIFO group in two invocations at once
        self.order: list[tuple[str, str]] = []  # (group, body), as each record was run
        self.at_once = 0
        self.most_at_once = 0

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event["Records"]
        groups = {r["attributes"].get("MessageGroupId", "") for r in records}
        with self.lock:
            self.at_once += 1
            self.most_at_once = max(self.most_at_once, self.at_once)
            for record in records:
                n = self.running[record["messageId"]] = self.running.get(record["messageId"], 0)
                if n:
                    self.overlaps.append(record["messageId"])
                self.running[record["messageId"]] = n + 1
            for group in groups - {""}:
                if self.groups_running.get(group):
                    self.group_overlaps.append(group)
                self.groups_running[group] = self.groups_running.get(group, 0) + 1
            self.order += [(r["attributes"].get("MessageGroupId", ""), r["body"]) for r in records]
        time.sleep(self.hold)  # long enough for the other pollers to take batches meanwhile
        with self.lock:
            self.at_once -= 1
            for record in records:
                self.running[record["messageId"]] -= 1
            for group in groups - {""}:
                self.groups_running[group] -= 1
        return {"batchItemFailures": []}


def test_concurrent_local_invocations_never_share_a_message(server_session: Any) -> None:
    """Four pollers at once: each message is run once, never by two invocations together."""
    _, url, _ = queues(server_session, visibility=30)
    sqs = server_session.client("sqs")
    for start in range(0, 200, 10):
        entries: Any = [{"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(10)]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    handler = Invocations()
    esm = LocalEventSourceMapping(handler, url, sqs, batch_size=5, wait_time=0, concurrency=4)
    esm.run(install_signals=False, idle_exit=1)
    assert sorted(body for _, body in handler.order) == sorted(f"m{n}" for n in range(200))
    assert handler.overlaps == []
    assert handler.most_at_once > 1  # the invocations did overlap
    assert esm.invocations >= 40
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == "0"
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_concurrent_local_invocations_keep_each_fifo_group_in_order(server_session: Any) -> None:
    """Four pollers on a FIFO queue: a group is in one invocation at a time, in send order."""
    sqs = server_session.client("sqs")
    name = f"t-{uuid.uuid4().hex[:12]}.fifo"
    attributes = {"FifoQueue": "true", "VisibilityTimeout": "30"}
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    groups = [f"g{n}" for n in range(6)]
    for i in range(20):
        entries: Any = [
            {"Id": g, "MessageBody": f"{g}-{i:02d}", "MessageGroupId": g,
             "MessageDeduplicationId": f"{g}-{i}"}
            for g in groups
        ]  # fmt: skip
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    handler = Invocations(hold=0.02)
    esm = LocalEventSourceMapping(handler, url, sqs, batch_size=3, wait_time=1, concurrency=4)
    esm.run(install_signals=False, idle_exit=1.5)
    for group in groups:
        run = [body for g, body in handler.order if g == group]
        assert run == [f"{group}-{i:02d}" for i in range(20)]
    assert handler.group_overlaps == []
    assert handler.overlaps == []
    assert handler.most_at_once > 1


def test_concurrency_is_at_least_one(server_session: Any) -> None:
    """A mapping with no pollers is refused at once."""
    _, url, _ = queues(server_session)
    sqs = server_session.client("sqs")
    with pytest.raises(ValueError, match="concurrency"):
        LocalEventSourceMapping(lambda e, c: None, url, sqs, concurrency=0)


def test_sigterm_stops_every_poller_after_its_batch(server_session: Any) -> None:
    """``stop()`` (what SIGTERM calls) ends each concurrent poller; the batches in flight finish."""
    _, url, _ = queues(server_session, visibility=30)
    sqs = server_session.client("sqs")
    for n in range(40):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{n}")
    handler = Invocations(hold=0.2)
    esm = LocalEventSourceMapping(handler, url, sqs, batch_size=2, wait_time=1, concurrency=3)
    threading.Timer(0.5, esm.stop).start()
    started = time.monotonic()
    esm.run(install_signals=False)
    assert time.monotonic() - started < 5
    assert 0 < len(handler.order) < 40
    assert handler.at_once == 0  # no invocation left running
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert int(counts["ApproximateNumberOfMessages"]) == 40 - len(handler.order)
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "0"  # every batch run was deleted
