"""A 100-member chord on the local stack: wall time, AWS requests per step, dollars.

moto runs in its own process (``batch_latency.moto_server``, with the dev stack's speed-ups);
the shipped Lambda runtime polls the queue through ``LocalEventSourceMapping`` (four
invocations at once, batches of ten), and a producer dispatches
``chord([member.s(i) for i in range(100)], total.s())`` and waits for the result. Every
boto3 request is counted by a botocore ``before-call`` hook, the producer's apart, and every
conditional write of the workflow document that lost its race is counted too.

Caveat: the four local invocations share one process, so the engine's per-process turns
(``WorkflowEngine._apply``) leave no race to lose; on Lambda, instances are processes, and
each lost race costs one more read and write of the document.

Celery's chord on its DynamoDB result backend is not measured: it needs a Celery worker
consuming SQS through kombu against the moto server, which this bench does not run yet
(the SQS producer peer in ``bench.celery_peer`` sends only). Its cost is stated from its code
instead in ``docs/workflows.md``: one ``UpdateItem`` counter increment per member, with no
record of which member counted (a redelivered member counts twice).
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections import Counter
from typing import Any

from bench.batch_latency import moto_server
from bench.cost import PRICES

__all__ = ["measure", "run"]

MEMBERS = 100
ROUNDS = 3


def measure(members: int = MEMBERS, rounds: int = ROUNDS) -> dict[str, Any]:
    """Run ``rounds`` chords of ``members``: the median wall time, the last round's requests."""
    import boto3
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.backends.sqs import SqsQueue
    from taskhop.lambda_worker import LocalEventSourceMapping, make_handler
    from taskhop.sdk import JobContext, chord, create_app, static_contract

    member_task = static_contract("member", input=int, output=int)
    total_task = static_contract("total", input=list[int], output=int)
    with moto_server() as (url, fast):
        session = boto3.Session(
            aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
        )
        calls: Counter[str] = Counter()

        def count(event_name: str, **_: Any) -> None:
            calls[event_name.split(".", 1)[1]] += 1

        def client(service: str, *, counted: bool) -> Any:
            made = session.client(service, endpoint_url=url)  # type: ignore[call-overload]
            if counted:  # the worker's: the producer's dispatch and polling are not counted
                made.meta.events.register("before-call", count)
            return made

        sqs, dynamodb = client("sqs", counted=True), client("dynamodb", counted=True)
        producer_sqs, producer_dynamodb = (
            client("sqs", counted=False),
            client("dynamodb", counted=False),
        )
        walls: list[float] = []
        lost = 0
        for _ in range(rounds):
            name = f"chord-{uuid.uuid4().hex[:8]}"
            queue_url = producer_sqs.create_queue(QueueName=name)["QueueUrl"]
            DynamoStore(name, client=producer_dynamodb).create_table()
            store = DynamoStore(name, client=dynamodb)
            lost_here = [0]
            save = store.save_workflow

            def counted_save(
                doc: dict[str, Any], rev: int, save: Any = save, lost_here: list[int] = lost_here
            ) -> bool:
                won: bool = save(doc, rev)
                lost_here[0] += not won
                return won

            store.save_workflow = counted_save  # type: ignore[method-assign]
            worker = create_app(queue=SqsQueue(queue_url, client=sqs), store=store)

            @worker.implement(member_task)
            def member(x: int, ctx: JobContext) -> int:
                return x

            @worker.implement(total_task)
            def total(xs: list[int], ctx: JobContext) -> int:
                return sum(xs)

            producer = create_app(
                queue=SqsQueue(queue_url, client=producer_sqs),
                store=DynamoStore(name, client=producer_dynamodb),
            )
            mapping = LocalEventSourceMapping(
                make_handler(worker, sqs_client=sqs), queue_url, sqs, wait_time=0, concurrency=4
            )
            stop = threading.Event()

            def poll(mapping: Any = mapping, stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    mapping.poll_once()

            calls.clear()
            started = time.monotonic()
            parts, callback = producer.register(member_task), producer.register(total_task)
            handle = chord([parts.s(i) for i in range(members)], callback.s()).dispatch()
            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            assert handle.result(300) == members * (members - 1) // 2
            walls.append(time.monotonic() - started)
            stop.set()
            poller.join(30)
            lost = lost_here[0]
            worker.close()
            producer.close()
        requests = Counter(calls)
    steps = members + 1
    batches = requests["sqs.DeleteMessageBatch"]  # one per batch the runtime settled
    empty = requests.pop("sqs.ReceiveMessage", 0) - batches  # polls of an idle local queue
    writes = requests["dynamodb.UpdateItem"] + requests["dynamodb.PutItem"]
    # BatchGetItem bills per item read: the callback's input is every member's record.
    reads = requests["dynamodb.GetItem"] + members
    sqs_requests = requests["sqs.SendMessageBatch"] + requests["sqs.SendMessage"] + 2 * batches
    dollars = (
        writes * PRICES["dynamodb_write"]
        + reads * PRICES["dynamodb_read"]
        + sqs_requests * PRICES["sqs_request"]  # sends, a receive and a delete per batch
        + batches * PRICES["lambda_request"]
    )
    per_step = (
        writes + requests["dynamodb.GetItem"] + requests["dynamodb.BatchGetItem"] + sqs_requests
    ) / steps
    return {
        "members": members,
        "moto_speedups": int(fast),
        "wall_s_median": round(statistics.median(walls), 3),
        "worker_requests_per_step": round(per_step, 2),
        "dynamodb_writes_per_step": round(writes / steps, 2),
        "dynamodb_reads_per_step": round(requests["dynamodb.GetItem"] / steps, 2),
        "document_writes_lost": lost,
        "batches": batches,
        "empty_receives_not_priced": max(0, empty),
        "usd_per_million_chords": round(dollars * 1e6, 1),
        "usd_per_million_steps": round(dollars * 1e6 / steps, 3),
    }


def run() -> dict[str, Any]:
    """``make bench``'s section."""
    return measure()
