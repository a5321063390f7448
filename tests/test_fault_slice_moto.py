"""A slice of the fault matrix on a real moto server, through the shipped event source mapping.

The same plans as ``test_fault_matrix``, but every call is a real HTTP request to moto (SQS and
DynamoDB, via ``DynamoStore`` and the Lambda runtime) and the poller is the shipped
``LocalEventSourceMapping``. Faults are injected with botocore's own event hooks: a
``before-call`` handler that raises is a call that failed; an ``after-call`` handler that
raises is a call that landed but whose answer was lost; one that raises ``Crash`` is the
process dying right after it. Real time passes here, so leases, visibility timeouts and
backoffs are shortened; the slice is chosen to cover each kind of call once.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from faults import Crash, Done, InjectedFault, Work, inject_call, work_task
from taskhop.backends.dynamodb import DynamoStore
from taskhop.backends.sqs import SqsQueue
from taskhop.lambda_worker import LocalEventSourceMapping, make_handler
from taskhop.sdk import ImplementOptions, JobContext, JobStatus, create_app
from taskhop.static_contracts.limits import LAMBDA_SAFETY_MARGIN

work = work_task("work-moto", delay=1)
PLANS = {
    "ok": JobStatus.SUCCEEDED,
    "flaky": JobStatus.SUCCEEDED,
    "doomed": JobStatus.FAILED,
    "keyed-a": JobStatus.SUCCEEDED,
    "keyed-b": JobStatus.SUCCEEDED,
    "invalid": JobStatus.REJECTED,
}

SLICE = [
    None,
    ("dynamodb", "UpdateItem", 1, "fail"),  # begin of the first job
    ("dynamodb", "UpdateItem", 3, "lost"),
    ("dynamodb", "UpdateItem", 5, "crash"),
    ("dynamodb", "UpdateItem", 8, "lost"),
    ("sqs", "SendMessage", 1, "fail"),  # the first DLQ send
    ("sqs", "SendMessage", 1, "crash"),
    ("sqs", "ChangeMessageVisibility", 1, "lost"),
    ("sqs", "DeleteMessageBatch", 1, "crash"),  # the poller's delete after the batch
]


@pytest.mark.parametrize(
    "fault", SLICE, ids=lambda f: "none" if f is None else "-".join(map(str, f[1:]))
)
def test_fault_slice_on_moto(
    fault: tuple[str, str, int, str] | None, server_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each fault once, then the system runs on: nothing lost, nothing run twice."""
    import taskhop.sdk._worker as worker_module

    monkeypatch.setattr(worker_module, "DEFAULT_LEASE", 1.0)
    monkeypatch.setattr(worker_module, "LEASE_MARGIN", 0.5)
    name = f"t-{uuid.uuid4().hex[:12]}"
    sqs = server_session.client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
    redrive = {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"], "maxReceiveCount": 20}
    queue_url = sqs.create_queue(
        QueueName=name,
        Attributes={"VisibilityTimeout": "2", "RedrivePolicy": json.dumps(redrive)},
    )["QueueUrl"]
    dynamodb = server_session.client("dynamodb")
    store = DynamoStore(name, client=dynamodb)
    store.create_table()
    app = create_app(queue=SqsQueue(queue_url, session=server_session), store=store)
    runs: list[tuple[str, int, str]] = []

    def handler(data: Work, ctx: JobContext) -> Done:
        runs.append((ctx.job_id, ctx.attempt, data["plan"]))
        first = sum(1 for r in runs if r[0] == ctx.job_id) == 1
        if data["plan"] == "doomed" or (data["plan"] == "flaky" and first):
            raise RuntimeError("this run fails")
        return Done(n=data["n"])

    # keyed-a and keyed-b share key K with different inputs: the key alone decides here
    # (the refusal of a mismatch is tests/test_idempotency_fingerprint.py's).
    app.implement(work, handler, ImplementOptions(idempotency="key"))
    jobs: dict[str, str] = {}
    for n, plan in enumerate(PLANS):
        data: dict[str, Any] = {"plan": plan} if plan == "invalid" else {"plan": plan, "n": n}
        key = "K" if plan.startswith("keyed") else None
        envelope = app.envelope(work.name, data, idempotency_key=key)
        jobs[plan] = envelope.id
        sqs.send_message(QueueUrl=queue_url, MessageBody=envelope.encode().decode())
    if fault is not None:
        service, operation, occurrence, kind = fault
        inject_call(
            dynamodb if service == "dynamodb" else sqs, service, operation, occurrence, kind
        )
    mapping = LocalEventSourceMapping(
        make_handler(app, sqs_client=sqs, dlq_url=dlq_url),
        queue_url,
        sqs,
        wait_time=0,
        function_timeout=LAMBDA_SAFETY_MARGIN + 1.5,  # each job's lease: 1.5 s + the margin
    )
    deadline = time.monotonic() + 60
    while not all((r := store.get(j)) is not None and r.status.is_final for j in jobs.values()):
        assert time.monotonic() < deadline, f"{fault}: jobs not final after 60 s"
        try:
            if not mapping.poll_once():
                time.sleep(0.2)
        except (Crash, InjectedFault):
            pass  # the invocation died, or the poller's own call failed: messages come back
    time.sleep(2.5)  # a crash after a DLQ send leaves the record to come back once more
    while mapping.poll_once():
        pass
    app.close()

    where = f"moto {fault}"
    assert max(Counter((j, a) for j, a, _ in runs).values()) == 1, f"{where}: {runs}"
    assert sum(1 for r in runs if r[2].startswith("keyed")) == 1, where
    for plan, expected in PLANS.items():
        record = store.get(jobs[plan])
        assert record is not None, where
        assert record.status is expected, f"{where}: {plan} ended {record.status}"
    dead = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10).get("Messages", [])
    dead_ids = Counter(json.loads(m["Body"])["id"] for m in dead)
    assert set(dead_ids) == {jobs["doomed"]}, where
    if fault != ("sqs", "SendMessage", 1, "crash"):  # the one place a standard DLQ may get two
        assert sum(dead_ids.values()) == 1, f"{where}: {dead_ids}"
    left = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    assert left == [], where
