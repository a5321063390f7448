"""Events' calls failing on a real moto server, through the shipped runtime, in both modes.

A job emits one event (``ctx.emit``) and publishes one domain event; SNS fans them out to two
subscriber queues. Without the outbox the job publishes before its end is written; with
``outbox=True`` its end's ``TransactWriteItems`` writes them and the job table's stream
(``LocalStreamPoller``, the mapping's rules) publishes them. Each SNS ``PublishBatch`` and each
completion transaction fails, loses its answer, or crashes the process right after it
(``faults.inject_call``: botocore's own hooks). Then everything runs on until it is quiet.

Invariants: the job succeeded and no attempt of it ran twice; each subscriber ran once per
event it takes; nothing was dead-lettered.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import Any

import attrs
import pytest
from faults import Crash, InjectedFault, inject_call
from taskhop.backends.dynamodb import DynamoStore
from taskhop.backends.sns import SnsCarrier, subscribe_queue
from taskhop.backends.sqs import SqsQueue
from taskhop.lambda_worker import LocalEventSourceMapping, LocalStreamPoller, make_handler
from taskhop.sdk import Event, JobContext, JobStatus, create_app, define_event
from taskhop.static_contracts import subscriber_queue_name
from taskhop.static_contracts.limits import LAMBDA_SAFETY_MARGIN


@attrs.frozen
class Placed:
    order_id: str


placed = define_event("order.placed", payload=Placed, key="order_id")
shipped = define_event("order.shipped", payload=Placed, key="order_id")

OUTBOX_FILTER = {
    "Filters": [
        {
            "Pattern": json.dumps(
                {
                    "eventName": ["INSERT", "MODIFY"],
                    "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "outbox#"}]}}},
                }
            )
        }
    ]
}

FAULTS = [("sns", "PublishBatch"), ("dynamodb", "TransactWriteItems")]
CASES = [("publish", None), ("outbox", None)] + [
    (mode, (service, operation, kind))
    for mode in ("publish", "outbox")
    for service, operation in FAULTS
    if not (mode == "publish" and operation == "TransactWriteItems")  # made only with outbox
    for kind in ("fail", "lost", "crash")
]


def _id(case: tuple[str, tuple[str, str, str] | None]) -> str:
    mode, fault = case
    return mode if fault is None else f"{mode}-{fault[1]}-{fault[2]}"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_events_survive_a_fault_at_each_publish_and_completion(
    case: tuple[str, tuple[str, str, str] | None],
    server_session: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import taskhop.sdk._worker as worker_module

    mode, fault = case
    monkeypatch.setattr(worker_module, "DEFAULT_LEASE", 1.0)
    monkeypatch.setattr(worker_module, "LEASE_MARGIN", 0.5)
    name = f"fe-{uuid.uuid4().hex[:10]}"
    prefix = f"{name}-ev-"
    monkeypatch.setenv("TASKHOP_EVENT_QUEUE_PREFIX", prefix)
    sqs, sns = server_session.client("sqs"), server_session.client("sns")
    dynamodb = server_session.client("dynamodb")
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
    redrive = json.dumps(
        {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"], "maxReceiveCount": 20}
    )
    attributes = {"VisibilityTimeout": "2", "RedrivePolicy": redrive}
    main = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    topic = sns.create_topic(Name=name)["TopicArn"]
    store = DynamoStore(name, client=dynamodb)
    store.create_table(stream=True)
    app = create_app(
        queue=SqsQueue(main, client=sqs),
        store=store,
        events=SnsCarrier(topic, client=sns),
        outbox=mode == "outbox",
    )
    app.event(placed)
    app.event(shipped)
    runs: Counter[str] = Counter()

    @app.on(placed)
    def bill(event: Event[Placed], ctx: JobContext) -> None:
        runs[f"bill:{event.name}"] += 1

    @app.on("order.*")
    def audit(event: Event[Placed], ctx: JobContext) -> None:
        runs[f"audit:{event.name}"] += 1

    @app.task("ship", retry={"attempts": 5, "delay": 0, "jitter": False})
    def ship(order_id: str, ctx: JobContext) -> Placed:
        runs[f"ship:{ctx.attempt}"] += 1
        ctx.emit(placed, Placed(order_id))
        return Placed(order_id)

    app.publishes(ship, shipped)
    handler = make_handler(app, sqs_client=sqs, dlq_url=dlq)
    timeout = LAMBDA_SAFETY_MARGIN + 1.5
    mappings = [LocalEventSourceMapping(handler, main, sqs, wait_time=0, function_timeout=timeout)]
    for sub in app.events.subscriptions.values():
        url = sqs.create_queue(
            QueueName=subscriber_queue_name(sub.task, prefix), Attributes=attributes
        )["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
        subscribe_queue(topic, arn["QueueArn"], sub.events, client=sns)
        mappings.append(
            LocalEventSourceMapping(handler, url, sqs, wait_time=0, function_timeout=timeout)
        )
    stream_arn = dynamodb.describe_table(TableName=name)["Table"]["LatestStreamArn"]
    relay = LocalStreamPoller(
        handler,
        stream_arn,
        server_session.client("dynamodbstreams"),
        criteria=OUTBOX_FILTER,
        max_retries=10,
    )
    reached = [1]
    if fault is not None:
        service, operation, kind = fault
        reached = inject_call(sns if service == "sns" else dynamodb, service, operation, 1, kind)
    job = app.get("ship").dispatch("o1")
    expected = {"bill:order.placed": 1, "audit:order.placed": 1, "audit:order.shipped": 1}
    deadline = time.monotonic() + 60
    quiet = 0
    while quiet < 3:  # three rounds with nothing to do, once the job and subscribers ran
        assert time.monotonic() < deadline, f"{case}: not quiet after 60 s: {runs}"
        got = 0
        for poll in [m.poll_once for m in mappings] + [relay.poll_once]:
            try:
                got += poll()
            except (Crash, InjectedFault):
                got += 1  # the invocation died, or the poller's own call: it comes back
        ended = (r := store.get(job.id)) is not None and r.status.is_final
        done = ended and all(runs[k] >= 1 for k in expected)
        quiet = quiet + 1 if got == 0 and done else 0
        if got == 0:
            time.sleep(0.3)
    app.close()
    where = f"moto {case}"
    record = store.get(job.id)
    assert record is not None, where
    assert record.status is JobStatus.SUCCEEDED, where
    assert all(n == 1 for k, n in runs.items() if k.startswith("ship:")), f"{where}: {runs}"
    assert {k: n for k, n in runs.items() if not k.startswith("ship:")} == expected, where
    assert not sqs.receive_message(QueueUrl=dlq).get("Messages"), f"{where}: dead-lettered"
    assert reached[0] >= 1, f"{where}: the fault point was never reached"
    if mode == "outbox":
        assert relay.invocations >= 1, f"{where}: the outbox was never relayed"
