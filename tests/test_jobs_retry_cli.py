"""``taskhop jobs retry ID``: a failed job run again by id, from the command line.

On the memory store and on DynamoDB (moto), with SQS (moto) as the app's transport: the
command prints one JSON object, ``--dry-run`` sends nothing, and refusals exit 1 saying why.
"""

from __future__ import annotations

import json
import sys
import types
import uuid
from typing import Any, TypedDict

import pytest
from taskhop.backends.sqs import SqsQueue
from taskhop.sdk import JobContext, JobStatus, create_app
from taskhop.sdk._cli import main
from taskhop.sdk.memory import MemoryStore
from taskhop.static_contracts import Envelope, static_contract


class Work(TypedDict):
    n: int


class Done(TypedDict):
    n: int


flaky = static_contract("retry_cli.flaky", input=Work, output=Done, retry={"attempts": 2})


class Cli:
    """An app module on SQS (moto) and a store, importable as ``retry_cli_app:app``."""

    def __init__(self, store_kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
        import boto3

        self.sqs: Any = boto3.client("sqs")  # pyright: ignore[reportUnknownMemberType]
        name = f"jr-{uuid.uuid4().hex[:10]}"
        self.queue = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        if store_kind == "dynamodb":
            from taskhop.backends.dynamodb import DynamoStore

            client: Any = boto3.client("dynamodb")  # pyright: ignore[reportUnknownMemberType]
            store: Any = DynamoStore(name, client=client)
            store.create_table()
        else:
            store = MemoryStore()
        self.store = store
        self.app = create_app(queue=SqsQueue(self.queue, client=self.sqs), store=store)
        self.failing = True
        self.runs: list[int] = []

        def handler(data: Work, ctx: JobContext) -> Done:
            self.runs.append(ctx.attempt)
            if self.failing:
                raise RuntimeError("down")
            return Done(n=data["n"])

        self.app.implement(flaky, handler)
        module = types.ModuleType("retry_cli_app")
        setattr(module, "app", self.app)  # noqa: B010  # a module made at run time
        monkeypatch.setitem(sys.modules, "retry_cli_app", module)

    def failed_job(self) -> str:
        envelope = self.app.envelope(flaky.name, {"n": 3})
        worker = self.app.worker()
        for _ in range(2):
            worker.process(envelope)
        record = self.store.get(envelope.id)
        assert record is not None
        assert record.status is JobStatus.FAILED
        return envelope.id

    def sent(self) -> list[Envelope]:
        answer = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10)
        return [Envelope.decode(m.get("Body", "")) for m in answer.get("Messages", [])]

    def retry(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
        code = main(["jobs", "retry", *args, "--app", "retry_cli_app:app"])
        return code, json.loads(capsys.readouterr().out)


@pytest.fixture(params=["memory", "dynamodb"])
def cli(request: pytest.FixtureRequest, mocked_aws: None, monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(request.param, monkeypatch)


def test_jobs_retry_sends_the_job_again_and_it_runs(
    cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    """The job's own envelope goes back as attempt 1 with the printed token; it runs once."""
    job = cli.failed_job()
    cli.failing = False
    code, answer = cli.retry(capsys, job)
    assert code == 0
    assert (answer["job_id"], answer["retried"]) == (job, True)
    (envelope,) = cli.sent()
    assert (envelope.id, envelope.attempt, envelope.restart) == (job, 1, answer["restart"])
    outcome = cli.app.worker().process(envelope)
    assert outcome.kind.value == "succeeded"
    assert cli.runs == [1, 2, 1]
    record = cli.store.get(job)
    assert record is not None
    assert [e.token for e in record.restarts] == [answer["restart"]]


def test_jobs_retry_dry_run_sends_nothing(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    """``--dry-run`` says what would happen and leaves the queue and the record alone."""
    job = cli.failed_job()
    before = cli.store.get(job)
    code, answer = cli.retry(capsys, job, "--dry-run")
    assert code == 0
    assert (answer["job_id"], answer["retried"], answer["dry_run"]) == (job, False, True)
    assert answer["task"] == flaky.name
    assert cli.sent() == []
    assert cli.store.get(job) == before


def test_jobs_retry_refuses_and_says_why(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown id and a succeeded job exit 1 with the reason; nothing is sent."""
    code, answer = cli.retry(capsys, "nope")
    assert (code, answer["retried"]) == (1, False)
    assert "no record" in answer["why"]
    job = cli.failed_job()
    cli.failing = False
    cli.app.retry(job)
    (envelope,) = cli.sent()
    cli.app.worker().process(envelope)
    code, answer = cli.retry(capsys, job)
    assert (code, answer["retried"]) == (1, False)
    assert "it is succeeded" in answer["why"]
    assert cli.sent() == []


def test_a_retried_job_that_fails_again_dead_letters_once(
    cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    """A retry that still fails uses its budget again and ends with one dead letter."""
    job = cli.failed_job()
    cli.retry(capsys, job)
    (envelope,) = cli.sent()
    worker = cli.app.worker()
    outcomes = [worker.process(envelope) for _ in range(2)]
    assert [(o.kind.value, o.dead_letter) for o in outcomes] == [("retry", False), ("failed", True)]
    assert cli.runs == [1, 2, 1, 2]
    again = worker.process(envelope)  # a later copy: dead-lettered again, not run
    assert (again.kind.value, cli.runs) == ("failed", [1, 2, 1, 2])
