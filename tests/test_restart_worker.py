"""The worker's side of a restart: a restarted job's handler and retry policy count its run.

The store keeps attempt numbers monotonic across restarts (``JobRecord.restart_base``); the
handler, ``is_last_attempt``, the backoff and the "attempts exhausted" end all count the
current run from 1, so a restarted job has the task's whole budget again.
"""

from __future__ import annotations

import time
from typing import Any, TypedDict

import pytest
from taskhop.sdk import JobContext, JobStatus, OutcomeKind, Reason, TaskhopError, create_app
from taskhop.sdk.memory import MemoryQueue, MemoryStore
from taskhop.static_contracts import static_contract


class Work(TypedDict):
    n: int


class Done(TypedDict):
    n: int


retried = static_contract(
    "restart.work",
    input=Work,
    output=Done,
    retry={"attempts": 3, "backoff": "exponential", "delay": 1, "jitter": False},
)


def world(store: Any) -> tuple[Any, list[tuple[int, int, bool]]]:
    """An app whose handler always fails and records (attempt, max_attempts, is_last)."""
    app = create_app(queue=MemoryQueue(), store=store)
    seen: list[tuple[int, int, bool]] = []

    def handler(data: Work, ctx: JobContext) -> Done:
        seen.append((ctx.attempt, ctx.max_attempts, ctx.is_last_attempt))
        raise ConnectionError("the card service is down")

    app.implement(retried, handler)
    return app, seen


def test_a_restarted_run_counts_its_attempts_and_backoff_from_one() -> None:
    """ctx.attempt, max_attempts, is_last_attempt and the retry delay restart with the run;
    the outcome's attempt is the store's (monotonic), and its last failure dead-letters."""
    store = MemoryStore()
    app, seen = world(store)
    worker = app.worker()
    envelope = app.envelope(retried.name, {"n": 1})
    first = [worker.process(envelope) for _ in range(3)]
    assert [o.kind for o in first] == [OutcomeKind.RETRY, OutcomeKind.RETRY, OutcomeKind.FAILED]
    assert [o.retry_after for o in first[:2]] == [1, 2]
    restarted = envelope.replace(restart="r1")
    run = [worker.process(restarted) for _ in range(3)]
    assert [o.attempt for o in run] == [4, 5, 6]
    assert [o.retry_after for o in run[:2]] == [1, 2]  # not 8 and 16: the backoff restarted
    assert (run[2].kind, run[2].dead_letter, run[2].reason) == (
        OutcomeKind.FAILED, True, Reason.RETRIES_EXHAUSTED,
    )  # fmt: skip
    assert seen == [(1, 3, False), (2, 3, False), (3, 3, True)] * 2
    record = store.get(envelope.id)
    assert record is not None
    assert (record.status, record.attempt, record.restart_base) == (JobStatus.FAILED, 6, 3)
    assert record.envelope is not None
    assert '"restart":"r1"' in record.envelope.replace(" ", "")


def test_a_stalled_attempt_of_a_restarted_run_is_exhausted_in_the_runs_numbers() -> None:
    """An attempt past the run's budget (the last began and never reported) ends the job
    without running; its error counts the run's attempts, not the job's."""
    store = MemoryStore()
    app, seen = world(store)
    worker = app.worker()
    envelope = app.envelope(retried.name, {"n": 1})
    for _ in range(3):
        worker.process(envelope)
    restarted = envelope.replace(restart="r1")
    worker.process(restarted)
    worker.process(restarted)
    # The run's third attempt begins and its worker dies: its lease ran out, no outcome.
    dead = store.begin(
        envelope.id, task=retried.name, attempt=1, lease_until=time.time() - 1, restart="r1"
    )
    assert (dead.state, dead.record.attempt) == ("started", 6)
    outcome = worker.process(restarted)
    assert (outcome.kind, outcome.dead_letter) == (OutcomeKind.FAILED, True)
    assert len(seen) == 5  # nothing ran
    record = store.get(envelope.id)
    assert record is not None
    assert record.error is not None
    assert record.error.type == "AttemptsExhausted"
    assert "attempt 4 is past the task's 3" in record.error.message


@pytest.mark.parametrize("attempt", [1, 2])
def test_a_worker_without_a_store_ignores_the_token(attempt: int) -> None:
    """Without state the message's own attempt is the count: a redrive's attempt 1 is a
    fresh budget; the token changes nothing."""
    app, seen = world(None)
    envelope = app.envelope(retried.name, {"n": 1}).replace(attempt=attempt, restart="r1")
    outcome = app.worker().process(envelope)
    assert (outcome.kind, outcome.attempt) == (OutcomeKind.RETRY, attempt)
    assert seen == [(attempt, 3, False)]


def failed_on_dynamodb(payloads: Any) -> tuple[Any, Any, str]:
    """A job that failed for good on a DynamoStore whose item limit its envelope is over."""
    from taskhop.backends.dynamodb import DynamoStore

    store = DynamoStore("taskhop-jobs", payloads=payloads, result_limit=64)
    store.create_table()
    app, _ = world(store)
    envelope = app.envelope(retried.name, {"n": 10**40})
    assert len(envelope.encode()) > 64
    for _ in range(3):
        app.worker().process(envelope)
    return app, store, envelope.id


def test_an_envelope_too_large_for_dynamodb_is_offloaded_and_retried(mocked_aws: None) -> None:
    """With payloads the failed end's envelope goes there, and ``retry`` sends it again."""
    from taskhop.sdk.memory import MemoryPayloads

    app, store, job = failed_on_dynamodb(MemoryPayloads())
    record = store.get(job)
    assert record is not None
    assert (record.envelope, record.envelope_note) == (None, None)
    assert record.envelope_ref is not None
    sent = app.retry_envelope(job)
    assert (sent.id, sent.attempt, sent.input) == (job, 1, {"n": 10**40})
    assert sent.restart is not None


def test_an_envelope_too_large_without_payloads_is_refused_with_the_note(
    mocked_aws: None,
) -> None:
    """Without payloads nothing is kept, the record says why, and ``retry`` says exactly that."""
    app, store, job = failed_on_dynamodb(None)
    record = store.get(job)
    assert record is not None
    assert record.envelope is None
    assert "has no payloads=" in str(record.envelope_note)
    with pytest.raises(TaskhopError, match="no payloads= to offload it to"):
        app.retry(job)
