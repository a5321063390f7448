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

``celery()`` runs Celery's chord the same way: its SQS broker and DynamoDB result backend
(the counter-increment chord, ``implements_incr``) on a moto server of its own, a Celery
worker with 4 threads. The rounds run one contender after the other, not interleaved
(each needs its own worker and server), so the ratio is for one quiet machine only. Celery's
requests are counted at botocore's ``_make_api_call`` and include kombu's long polls.
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


def celery(members: int = MEMBERS, rounds: int = ROUNDS) -> dict[str, Any]:
    """Celery's chord: SQS broker and DynamoDB result backend on a moto server of its own.

    A Celery worker with a pool of 4 threads in this process (as taskhop gets 4 local
    invocations). Every AWS request is counted at botocore's ``_make_api_call``, by
    operation: kombu's polling and the backend's reads and writes alike.
    """
    import importlib
    import os

    import boto3
    import botocore.client

    celery_module: Any = importlib.import_module("celery")  # no type information shipped
    testing: Any = importlib.import_module("celery.contrib.testing.worker")
    celery_app, celery_chord, start_worker = (
        celery_module.Celery, celery_module.chord, testing.start_worker,
    )  # fmt: skip

    for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
        os.environ.setdefault(name, value)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    calls: Counter[str] = Counter()
    client_class: Any = botocore.client.BaseClient  # _make_api_call is not in its stubs
    real = client_class._make_api_call

    def counted(self: Any, operation: str, params: Any) -> Any:
        calls[f"{self.meta.service_model.service_name}.{operation}"] += 1
        return real(self, operation, params)

    with moto_server() as (url, _):
        host = url.removeprefix("http://")
        port = host.rsplit(":", 1)[1]
        sqs = boto3.client("sqs", endpoint_url=url, region_name="us-east-1")
        queue_url = sqs.create_queue(QueueName="celery")["QueueUrl"]
        app = celery_app(
            broker=f"sqs://bench:bench@{host}",
            # localhost: Celery's DynamoDB backend takes a local endpoint only by that name
            backend=f"dynamodb://bench:bench@localhost:{port}/chords?read=50&write=50",
        )
        app.conf.broker_transport_options = {
            "region": "us-east-1",
            "is_secure": False,
            "predefined_queues": {"celery": {"url": queue_url}},
            "wait_time_seconds": 1,
        }

        def member_fn(x: int) -> int:
            return x

        def total_fn(xs: list[int]) -> int:
            return sum(xs)

        member = app.task(name="member")(member_fn)
        total = app.task(name="total")(total_fn)
        walls: list[float] = []
        client_class._make_api_call = counted
        try:
            with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False):
                for _ in range(rounds + 1):  # the first round warms the worker up: dropped
                    calls.clear()
                    started = time.monotonic()
                    result = celery_chord([member.s(i) for i in range(members)])(total.s())
                    assert result.get(timeout=300) == members * (members - 1) // 2
                    walls.append(time.monotonic() - started)
        finally:
            client_class._make_api_call = real
    steps = members + 1
    return {
        "celery_wall_s_median": round(statistics.median(walls[1:]), 3),
        "celery_requests_per_step": round(sum(calls.values()) / steps, 2),
        "celery_dynamodb_requests_per_step": round(
            sum(n for op, n in calls.items() if op.startswith("dynamodb.")) / steps, 2
        ),
    }


def run() -> dict[str, Any]:
    """``make bench``'s section: taskhop, then Celery, then the wall-time ratio."""
    ours = measure()
    theirs = celery()
    ratio = ours["wall_s_median"] / theirs["celery_wall_s_median"]
    return {**ours, **theirs, "wall_ratio_taskhop_over_celery": round(ratio, 2)}
