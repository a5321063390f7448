"""Redrive and retry run a job again: ``taskhop dlq redrive`` and ``App.retry``.

A failed job's dead letter, redriven, restarts the job on its own record (same id, a fresh
attempt budget, the earlier end kept in ``restarts``); a letter is deleted only once its job
is queued to run; a restart sent twice runs once. Each test runs on the memory store and on
DynamoDB (moto), through the shipped Lambda runtime polling SQS (moto).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from faults import Done, Work, work_task
from taskhop.backends.dynamodb import DynamoStore
from taskhop.backends.sqs import SqsQueue
from taskhop.lambda_worker import LocalEventSourceMapping, make_handler
from taskhop.lambda_worker._dlq import redrive, restart_token
from taskhop.sdk import App, JobContext, JobStatus, Reason, TaskhopError, create_app
from taskhop.sdk.memory import MemoryStore

work = work_task("redriven", delay=0)


class World:
    """An app on SQS (moto) with a DLQ, a store, the Lambda runtime and a switchable handler."""

    def __init__(self, store_kind: str) -> None:
        import boto3

        factory: Any = boto3  # boto3's stubs overload client() per service: keep it plain
        self.sqs: Any = factory.client("sqs")
        name = f"r-{uuid.uuid4().hex[:10]}"
        self.dlq = self.sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        self.queue = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        if store_kind == "dynamodb":
            store: Any = DynamoStore(name, client=factory.client("dynamodb"))
            store.create_table()
        else:
            store = MemoryStore()
        self.store = store
        self.app: App = create_app(queue=SqsQueue(self.queue, client=self.sqs), store=store)
        self.failing = True
        self.runs: list[tuple[str, int]] = []
        self.outcomes: list[Any] = []

        def handler(data: Work, ctx: JobContext) -> Done:
            self.runs.append((ctx.job_id, ctx.attempt))
            if self.failing:
                raise RuntimeError("the card service is down")
            return Done(n=data["n"])

        self.app.implement(work, handler)
        self.mapping = LocalEventSourceMapping(
            make_handler(self.app, sqs_client=self.sqs, dlq_url=self.dlq),
            self.queue,
            self.sqs,
            wait_time=0,
        )

    def dispatch(self) -> str:
        envelope = self.app.envelope(work.name, {"plan": "charge", "n": 7})
        self.sqs.send_message(QueueUrl=self.queue, MessageBody=envelope.encode().decode())
        return envelope.id

    def drain(self, seconds: float = 20.0) -> None:
        """Poll until the queue has nothing left to deliver."""
        deadline = time.monotonic() + seconds
        idle = 0
        while idle < 3:
            assert time.monotonic() < deadline, "the queue did not drain"
            if self.mapping.poll_once():
                idle = 0
            else:
                idle += 1
                time.sleep(0.05)

    def letters(self) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.dlq,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )

    def queued(self) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"])

    def failed_into_dlq(self) -> str:
        job = self.dispatch()
        self.drain()
        record = self.store.get(job)
        assert record is not None
        assert record.status is JobStatus.FAILED
        assert self.letters() == 1
        return job


@pytest.fixture(params=["memory", "dynamodb"])
def world(request: pytest.FixtureRequest, mocked_aws: None) -> Iterator[World]:
    """A world per store kind, on in-process moto."""
    world = World(request.param)
    yield world
    world.app.close()  # the worker's event loop: a batch's overlapped steps run on it


def test_redrive_runs_the_job_again_and_keeps_its_history(world: World) -> None:
    """The issue's scenario: a job fails into the DLQ, redrive runs it again, it succeeds."""
    job = world.failed_into_dlq()
    assert [a for _, a in world.runs] == [1, 2, 3]  # the task's 3 attempts
    world.failing = False
    counts = redrive(world.sqs, world.dlq, world.queue, store=world.store)
    assert counts == {"rerun": 1}
    assert world.letters() == 0
    world.drain()
    record = world.store.get(job)
    assert record is not None
    assert record.status is JobStatus.SUCCEEDED
    assert record.result == {"n": 7}
    assert world.runs[3:] == [(job, 1)]  # the handler counts this run's attempts from 1
    assert (record.attempt, record.restart_base) == (4, 3)  # the store's stay monotonic
    [ended] = record.restarts
    assert (ended.status, ended.attempt, ended.error_type) == (JobStatus.FAILED, 3, "RuntimeError")
    assert record.dead_letter is None
    assert record.envelope is None


def test_a_restart_that_fails_again_dead_letters_once_with_a_fresh_budget(world: World) -> None:
    """A redriven job that still fails uses its whole budget again, then one dead letter."""
    job = world.failed_into_dlq()
    redrive(world.sqs, world.dlq, world.queue, store=world.store)
    world.drain()
    assert [a for _, a in world.runs] == [1, 2, 3, 1, 2, 3]
    record = world.store.get(job)
    assert record is not None
    assert record.status is JobStatus.FAILED
    assert record.dead_letter == Reason.RETRIES_EXHAUSTED
    assert world.letters() == 1


def test_a_redrive_whose_delete_failed_runs_the_job_once(world: World) -> None:
    """The letter stays after its copy was sent; redriving it again never runs it twice."""
    job = world.failed_into_dlq()
    world.failing = False
    real_delete = world.sqs.delete_message

    def broken_delete(**kw: Any) -> Any:
        raise RuntimeError("delete lost")

    world.sqs.delete_message = broken_delete
    with pytest.raises(RuntimeError, match="delete lost"):
        redrive(world.sqs, world.dlq, world.queue, store=world.store)
    world.sqs.delete_message = real_delete
    assert world.letters() == 1
    assert world.queued() == 1
    # Redriven again before any worker ran: a second copy with the same token.
    assert redrive(world.sqs, world.dlq, world.queue, store=world.store) == {"rerun": 1}
    assert world.letters() == 0
    assert world.queued() == 2
    world.drain()
    assert world.runs[3:] == [(job, 1)]
    record = world.store.get(job)
    assert record is not None
    assert record.status is JobStatus.SUCCEEDED
    assert len(record.restarts) == 1


def test_a_letter_redriven_after_its_restart_began_is_only_deleted(world: World) -> None:
    """A crash between send and delete: the next redrive sees the restart and sends nothing."""
    job = world.failed_into_dlq()
    world.failing = False
    real_delete = world.sqs.delete_message

    def crash(**kw: Any) -> Any:
        raise RuntimeError("the process died here")

    world.sqs.delete_message = crash
    with pytest.raises(RuntimeError):
        redrive(world.sqs, world.dlq, world.queue, store=world.store)
    world.sqs.delete_message = real_delete
    world.drain()  # the restart ran
    assert redrive(world.sqs, world.dlq, world.queue, store=world.store) == {"already_redriven": 1}
    assert world.letters() == 0
    assert world.queued() == 0
    assert world.runs[3:] == [(job, 1)]


def test_a_redrive_whose_send_failed_deletes_nothing(world: World) -> None:
    """No letter is deleted unless its job was queued to run."""
    job = world.failed_into_dlq()

    def broken_send(**kw: Any) -> Any:
        raise RuntimeError("send failed")

    world.sqs.send_message = broken_send
    with pytest.raises(RuntimeError, match="send failed"):
        redrive(world.sqs, world.dlq, world.queue, store=world.store)
    assert world.letters() == 1
    assert world.queued() == 0
    record = world.store.get(job)
    assert record is not None
    assert record.status is JobStatus.FAILED


def test_dry_run_reports_each_letter_and_changes_nothing(world: World) -> None:
    """``dry_run`` decides every letter, reports it and leaves queues and records alone."""
    job = world.failed_into_dlq()
    world.sqs.send_message(QueueUrl=world.dlq, MessageBody="not a job")
    before = world.store.get(job)
    seen: list[dict[str, Any]] = []
    counts = redrive(
        world.sqs, world.dlq, world.queue, store=world.store, dry_run=True, report=seen.append
    )
    assert counts == {"rerun": 1, "not_a_job": 1}
    assert sorted((s["job_id"] or "", s["decision"]) for s in seen) == [
        ("", "not_a_job"),
        (job, "rerun"),
    ]
    assert all(s["why"] for s in seen)
    assert world.letters() == 2
    assert world.queued() == 0
    assert world.store.get(job) == before


def test_a_succeeded_job_is_left_in_the_dlq(world: World) -> None:
    """A letter whose job succeeded since is never sent nor deleted."""
    job = world.failed_into_dlq()
    world.failing = False
    world.app.retry(job)
    world.drain()
    assert redrive(world.sqs, world.dlq, world.queue, store=world.store) == {"already_succeeded": 1}
    assert world.letters() == 1
    assert world.queued() == 0


def test_retry_by_id_runs_a_failed_job_again(world: World) -> None:
    """``App.retry`` restarts a failed job from the envelope its end kept."""
    job = world.failed_into_dlq()
    record = world.store.get(job)
    assert record is not None
    assert record.envelope is not None
    world.failing = False
    handle = world.app.retry(job)
    assert handle.id == job
    world.drain()
    assert handle.result(timeout=5) == {"n": 7}
    assert world.runs[3:] == [(job, 1)]


def test_retry_refuses_with_the_reason(world: World) -> None:
    """A job with no record, or one that succeeded, is not retried; the error says why."""
    with pytest.raises(TaskhopError, match="no record"):
        world.app.retry("nope")
    job = world.failed_into_dlq()
    world.failing = False
    world.app.retry(job)
    world.drain()
    with pytest.raises(TaskhopError, match="it is succeeded"):
        world.app.retry(job)
    stateless = create_app(queue=SqsQueue(world.queue, client=world.sqs))
    with pytest.raises(TaskhopError, match="no job store"):
        stateless.retry(job)


def test_a_stale_restart_is_skipped_not_dead_lettered(mocked_aws: None) -> None:
    """A copy of a restart that already began is acknowledged without running."""
    store = MemoryStore()
    app = create_app(queue=SqsQueue("https://sqs.us-east-1.amazonaws.com/1/q"), store=store)
    runs: list[int] = []

    def handler(data: Work, ctx: JobContext) -> Done:
        runs.append(ctx.attempt)
        raise RuntimeError("down")

    app.implement(work, handler)
    envelope = app.envelope(work.name, {"plan": "x", "n": 1})
    worker = app.worker()
    for _ in range(3):
        worker.process(envelope)
    first = envelope.replace(restart=restart_token("m-1"))
    assert worker.process(first).attempt == 4
    assert runs == [1, 2, 3, 1]
    second = envelope.replace(restart=restart_token("m-2"))
    assert worker.process(second).attempt == 5
    assert runs == [1, 2, 3, 1, 1]
    again = worker.process(first)  # the first restart's token is no longer current: stale
    assert (again.kind.value, again.reason, again.dead_letter) == (
        "skipped",
        Reason.STALE_RESTART,
        False,
    )
    assert runs == [1, 2, 3, 1, 1]


def test_jobs_retry_command(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``taskhop jobs retry ID`` answers JSON: dry-run sends nothing, a retry runs the job."""
    import importlib
    import json
    import textwrap

    from taskhop.sdk._cli import main

    (tmp_path / "retry_app.py").write_text(
        textwrap.dedent(
            """
            from typing import TypedDict
            from taskhop.sdk import PermanentError, create_app, static_contract

            class In(TypedDict):
                n: int

            app = create_app()
            state = {"failing": True, "runs": 0}

            def charge(data: In, ctx: object) -> int:
                state["runs"] += 1
                if state["failing"]:
                    raise PermanentError("card declined")
                return data["n"]

            task = app.implement(static_contract("charge", input=In, output=int), charge)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # pyright: ignore[reportUnknownMemberType]
    module = importlib.import_module("retry_app")
    handle = module.task.dispatch({"n": 3})
    ended = module.app.store.wait(handle.id, 5)
    assert ended is not None
    assert ended.status is JobStatus.FAILED
    spec = "retry_app:app"
    assert main(["jobs", "retry", handle.id, "--app", spec, "--dry-run"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert (dry["retried"], dry["dry_run"], dry["task"]) == (False, True, "charge")
    assert module.state["runs"] == 1
    module.state["failing"] = False
    assert main(["jobs", "retry", handle.id, "--app", spec]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["retried"] is True
    assert answer["job_id"] == handle.id
    assert answer["restart"]
    # Until a worker begins the restart, the record still shows the earlier end.
    deadline = time.monotonic() + 5
    while (handle.record() or ended).restart != answer["restart"]:
        assert time.monotonic() < deadline, "the restart never began"
        time.sleep(0.02)
    assert handle.result(timeout=5) == 3
    assert module.state["runs"] == 2
    assert main(["jobs", "retry", handle.id, "--app", spec]) == 1
    refused = json.loads(capsys.readouterr().out)
    assert refused["retried"] is False
    assert "it is succeeded" in refused["why"]
    module.app.close()


def test_the_restart_token_is_an_optional_envelope_field() -> None:
    """``restart`` round-trips on the wire and a bad one is refused with its field named."""
    from taskhop.static_contracts import Envelope, EnvelopeError

    envelope = Envelope(task="t", input={}, restart="abc")
    assert Envelope.decode(envelope.encode()).restart == "abc"
    assert "restart" not in Envelope(task="t", input={}).to_dict()
    body = envelope.to_dict() | {"restart": ""}
    with pytest.raises(EnvelopeError, match="'restart'") as caught:
        Envelope.from_dict(body)
    assert caught.value.field == "restart"
    with pytest.raises(EnvelopeError, match="'restart'"):
        Envelope(task="t", input={}, restart="x" * 129)
