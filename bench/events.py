"""Events over SNS: requests and dollars per million events, taskhop beside the glue it replaces.

On a moto server on 127.0.0.1 (``batch_latency.moto_server``, the dev stack's speed-ups), each
contender gets a fresh topic with three subscriber queues, raw delivery, each subscription
filtered on the event's name: ``bill`` and ``audit`` take ``order.placed``, ``ship`` takes
only ``order.shipped``. ``EVENTS`` ``order.placed`` events are emitted, then each queue is
drained, one after the other, by a Lambda-style consumer (``LocalEventSourceMapping``: batches
of ten, ReceiveMessage and DeleteMessageBatch as Lambda's poller makes them).

- taskhop: ``app.emit_many`` through ``SnsCarrier`` (PublishBatch, ten events a request); the
  queues named by ``subscriber_queue_name`` and subscribed with ``subscribe_queue``; each
  queue drained by the shipped handler (``make_handler``) over a ``DynamoStore``.
- the peer, what a Powertools user writes by hand: ``sns.publish`` once per event with a
  message attribute for the filters, and per subscriber a ``BatchProcessor`` whose record
  handler json-decodes the body and calls the function: no validation, no job state (no
  DynamoDB), so no dedupe of a redelivery, no attempts kept, no per-subscriber idempotency.

Rounds are interleaved (the contenders alternate who goes first), each with new topics, queues
and tables, after one small warm-up round each. Every request is counted by botocore's
``before-call`` hook (``bench.cost.counting``: receives that found nothing are left out, as an
idle queue's polling does not grow with events), split by phase: the publish, then each
subscriber's drain. Request counts are the last round's; times are medians over rounds.

Prices are ``bench.cost.PRICES`` and ``bench.cost.price`` (SQS, DynamoDB, Lambda at 512 MB
arm64), plus SNS (``PRICES["sns_publish"]``). Two assumptions,
both from the AWS pricing pages: SNS bills each 64 KiB chunk of a Publish or PublishBatch
request's payload as one request (batching is what cuts SNS's bill by up to 10x); SNS's
delivery to an SQS queue is free on SNS's side and billed by SQS as one request to the
queue. Lambda's duration is each invocation's measured wall time on moto, rounded up to the
millisecond as Lambda bills it; moto's latency is not AWS's (a DynamoDB round trip on AWS is
a few ms more), so taskhop's Lambda share is a floor.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import attrs
from taskhop.sdk import Event, JobContext, define_event

from bench.batch_latency import moto_server
from bench.cost import PRICES, counting, price

__all__ = ["measure", "run"]

EVENTS = 1_000
ROUNDS = 5
WARM_UP = 10  # events in each contender's discarded first round
REGION = "us-east-1"
SNS_PUBLISH = PRICES["sns_publish"]
SNS_CHUNK_BYTES = 64 * 1024
SQS_DELIVERY = "sqs.SnsDelivery"  # a message SNS put on a queue: one SQS request to it
CONTENDERS = ("taskhop", "peer")


@attrs.frozen
class Placed:
    order_id: str
    total: int = attrs.field(validator=attrs.validators.ge(0))


@attrs.frozen
class Shipped:
    order_id: str
    carrier: str


placed = define_event("order.placed", payload=Placed, key="order_id")
shipped = define_event("order.shipped", payload=Shipped, key="order_id")
# Subscriber -> the events its filter takes: two take order.placed, one filters it out.
SUBSCRIBERS = {"bill": "order.placed", "audit": "order.placed", "ship": "order.shipped"}
FILTERED_OUT = "ship"


def bill(event: Event[Placed], ctx: JobContext) -> None:
    """A subscriber with nothing to do: the bench prices the path, not the work."""


def audit(event: Event[Placed], ctx: JobContext) -> None:
    """The second subscriber taking ``order.placed``."""


def ship(event: Event[Shipped], ctx: JobContext) -> None:
    """The subscriber whose filter keeps ``order.placed`` off its queue."""


@dataclass
class Drained:
    """One subscriber's queue run to empty: its requests, messages and Lambda time."""

    calls: Counter[str]
    messages: int
    invocations: int
    billed_ms: int  # each invocation's wall time, rounded up to the ms as Lambda bills it
    wall_s: float


@dataclass
class Round:
    """One contender's run of ``events`` events: the publish, then every subscriber."""

    events: int
    publish: Counter[str]
    sns_chunks: int  # SNS billed requests: 64 KiB chunks of each request's payload
    emit_s: float
    subscribers: dict[str, Drained]


class Clients:
    """One session's SNS, SQS and DynamoDB clients, every request counted from the start."""

    def __init__(self, endpoint: str) -> None:
        import boto3

        session = boto3.Session(
            aws_access_key_id="bench", aws_secret_access_key="bench", region_name=REGION
        )
        # Hooks first: a client copies its session's hooks when it is made.
        self.calls = counting(session)
        self.chunks = [0]
        session.events.register("before-parameter-build.sns", self._sized)
        self.sns: Any = session.client("sns", endpoint_url=endpoint)
        self.sqs: Any = session.client("sqs", endpoint_url=endpoint)
        self.dynamodb: Any = session.client("dynamodb", endpoint_url=endpoint)

    def _sized(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        """Count the 64 KiB chunks SNS bills for a publish: messages and their attributes."""
        entries = params.get("PublishBatchRequestEntries", [params])
        if model.name not in ("Publish", "PublishBatch"):
            return
        size = sum(len(e["Message"].encode()) + _attributes_size(e) for e in entries)
        self.chunks[0] += max(1, math.ceil(size / SNS_CHUNK_BYTES))

    def reset(self) -> None:
        self.calls.clear()
        self.chunks[0] = 0

    def close(self) -> None:
        for client in (self.sns, self.sqs, self.dynamodb):
            client.close()


def _attributes_size(entry: Mapping[str, Any]) -> int:
    attributes: Mapping[str, Mapping[str, str]] = entry.get("MessageAttributes", {})
    return sum(
        len(name) + len(value["DataType"]) + len(value.get("StringValue", ""))
        for name, value in attributes.items()
    )


def queue(clients: Clients, name: str) -> tuple[str, str]:
    """A new queue's URL and ARN."""
    url: str = clients.sqs.create_queue(QueueName=name)["QueueUrl"]
    attributes = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, attributes["Attributes"]["QueueArn"]


def drain(clients: Clients, url: str, handler: Callable[[dict[str, Any], Any], Any]) -> Drained:
    """Feed the queue's messages to ``handler`` in batches of ten until a receive finds none."""
    from taskhop.lambda_worker import LocalEventSourceMapping

    billed: list[int] = []
    messages = [0]
    failures: list[Any] = []

    def timed(event: dict[str, Any], context: Any) -> Any:
        started = time.perf_counter()
        answer = handler(event, context)
        billed.append(math.ceil((time.perf_counter() - started) * 1000))
        messages[0] += len(event["Records"])
        failures.extend((answer or {}).get("batchItemFailures", []))
        return answer

    mapping = LocalEventSourceMapping(timed, url, clients.sqs, wait_time=0)
    clients.reset()  # the mapping's queue lookup is set-up, not a cost per event
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the worker's job and metric lines
        while mapping.poll_once():
            pass
    wall = time.perf_counter() - started
    if failures:
        raise AssertionError(f"{len(failures)} records failed: the bench prices successes only")
    return Drained(Counter(clients.calls), messages[0], mapping.invocations, sum(billed), wall)


def taskhop_round(clients: Clients, events: int) -> Round:
    """``emit_many`` through ``SnsCarrier``; each queue drained by the shipped handler."""
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.backends.sns import SnsCarrier, subscribe_queue
    from taskhop.lambda_worker import make_handler
    from taskhop.lambda_worker._events import PREFIX_VARIABLE
    from taskhop.sdk import create_app
    from taskhop.sdk.memory import MemoryQueue
    from taskhop.static_contracts import subscriber_queue_name

    name = f"events-{uuid.uuid4().hex[:8]}"
    topic: str = clients.sns.create_topic(Name=name)["TopicArn"]
    store = DynamoStore(name, client=clients.dynamodb)
    store.create_table()
    app = create_app(queue=MemoryQueue(), store=store, events=SnsCarrier(topic, client=clients.sns))
    app.event(placed)
    app.event(shipped)
    app.on(placed)(bill)
    app.on(placed)(audit)
    app.on(shipped)(ship)
    # New queues each round (moto's slow down as they fill), so a prefix of the round's: the
    # handler finds the subscriber from the queue's name, with the prefix infra sets.
    prefix = f"{name}-"
    queues: dict[str, str] = {}
    for subscription in app.events.subscriptions.values():
        url, arn = queue(clients, subscriber_queue_name(subscription.task, prefix))
        subscribe_queue(topic, arn, subscription.events, client=clients.sns)
        queues[subscription.task] = url
    before = os.environ.get(PREFIX_VARIABLE)
    os.environ[PREFIX_VARIABLE] = prefix
    handler = make_handler(app, sqs_client=clients.sqs)
    payloads = [Placed(f"o{i}", i) for i in range(events)]
    try:
        clients.reset()
        started = time.perf_counter()
        app.emit_many(placed, payloads)
        emit_s = time.perf_counter() - started
        publish, chunks = Counter(clients.calls), clients.chunks[0]
        drained = {task: drain(clients, url, handler) for task, url in queues.items()}
    finally:
        if before is None:
            os.environ.pop(PREFIX_VARIABLE, None)
        else:
            os.environ[PREFIX_VARIABLE] = before
        app.close()
    return Round(events, publish, chunks, emit_s, drained)


def peer_round(clients: Clients, events: int) -> Round:
    """``sns.publish`` per event; per subscriber, a ``BatchProcessor`` calling the function."""
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )

    name = f"peer-{uuid.uuid4().hex[:8]}"
    topic: str = clients.sns.create_topic(Name=name)["TopicArn"]
    functions: dict[str, Callable[[dict[str, Any]], None]] = {
        "bill": lambda payload: None,
        "audit": lambda payload: None,
        "ship": lambda payload: None,
    }
    handlers: dict[str, Callable[[dict[str, Any], Any], Any]] = {}
    queues: dict[str, str] = {}
    for task, event_name in SUBSCRIBERS.items():
        url, arn = queue(clients, f"{name}-{task}")
        clients.sns.subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=arn,
            Attributes={
                "RawMessageDelivery": "true",
                "FilterPolicy": json.dumps({"event": [event_name]}),
            },
        )  # fmt: skip
        queues[task] = url
        processor = BatchProcessor(event_type=EventType.SQS)

        def record_handler(record: Any, function: Any = functions[task]) -> None:
            function(json.loads(record.body))

        def lambda_handler(
            event: dict[str, Any], context: Any, handle: Any = record_handler, p: Any = processor
        ) -> Any:
            return process_partial_response(event, handle, p, context)

        handlers[task] = lambda_handler
    bodies = [json.dumps({"order_id": f"o{i}", "total": i}) for i in range(events)]
    attribute = {"event": {"DataType": "String", "StringValue": "order.placed"}}
    clients.reset()
    started = time.perf_counter()
    for body in bodies:
        clients.sns.publish(TopicArn=topic, Message=body, MessageAttributes=attribute)
    emit_s = time.perf_counter() - started
    publish, chunks = Counter(clients.calls), clients.chunks[0]
    drained = {task: drain(clients, queues[task], handlers[task]) for task in SUBSCRIBERS}
    return Round(events, publish, chunks, emit_s, drained)


ROUNDS_OF: dict[str, Callable[[Clients, int], Round]] = {
    "taskhop": taskhop_round,
    "peer": peer_round,
}


def priced(
    calls: Counter[str], sns_chunks: int, drained: list[Drained], events: int
) -> dict[str, float]:
    """Requests per event by service, and dollars per million events with their split."""
    total = Counter(calls)
    for one in drained:
        total += one.calls
        total[SQS_DELIVERY] += one.messages
    sns = Counter({op: n for op, n in total.items() if op.startswith("sns.")})
    rest = total - sns
    invocations = sum(one.invocations for one in drained)
    billed_ms = sum(one.billed_ms for one in drained)
    jobs = sum(one.messages for one in drained)
    figures = price(rest, invocations, events, lambda_ms_per_job=billed_ms / events)
    sqs_usd = figures["sqs_requests"] * PRICES["sqs_request"] * 1e6
    dynamodb_usd = (
        figures["dynamodb_writes"] * PRICES["dynamodb_write"]
        + figures["dynamodb_reads"] * PRICES["dynamodb_read"]
    ) * 1e6
    lambda_usd = figures["usd_per_million"] - sqs_usd - dynamodb_usd
    sns_usd = sns_chunks / events * SNS_PUBLISH * 1e6
    client = sum(total.values()) - total[SQS_DELIVERY]
    billed = client - sum(sns.values()) + sns_chunks + total[SQS_DELIVERY]  # SNS by chunk
    return {
        "client_requests_per_event": client / events,
        "billed_requests_per_event": billed / events,
        **{f"{op}_per_event": n / events for op, n in sorted(total.items()) if n},
        "dynamodb_writes_per_event": figures["dynamodb_writes"],
        "lambda_invocations_per_event": figures["lambda_invocations"],
        "lambda_ms_per_job": billed_ms / jobs if jobs else 0.0,
        "usd_sns": sns_usd,
        "usd_sqs": sqs_usd,
        "usd_dynamodb": dynamodb_usd,
        "usd_lambda": lambda_usd,
        "usd_per_million": sns_usd + figures["usd_per_million"],
    }


def contender_figures(who: str, rounds: list[Round]) -> dict[str, float]:
    """The last round's counts and prices, the median times, each subscriber's share."""
    last = rounds[-1]
    events = last.events
    out: dict[str, float] = {}
    whole = priced(last.publish, last.sns_chunks, list(last.subscribers.values()), events)
    out |= {f"{who}_{k}": v for k, v in whole.items()}
    for task, drained in last.subscribers.items():
        out[f"{who}_messages_{task}"] = drained.messages
    taking = [d for task, d in last.subscribers.items() if task != FILTERED_OUT]
    shares = [priced(Counter(), 0, [d], events)["usd_per_million"] for d in taking]
    out[f"{who}_per_subscriber_usd_per_million"] = statistics.mean(shares)
    out[f"{who}_publish_usd_per_million"] = whole["usd_sns"]
    filtered = last.subscribers[FILTERED_OUT]
    alone = priced(Counter(), 0, [filtered], events)
    out[f"{who}_filtered_out_requests_per_event"] = alone["client_requests_per_event"]
    out[f"{who}_filtered_out_usd_per_million"] = alone["usd_per_million"]
    out[f"{who}_emit_ms_median"] = statistics.median(r.emit_s for r in rounds) * 1000
    out[f"{who}_drain_ms_per_event_median"] = (
        statistics.median(sum(d.wall_s for d in r.subscribers.values()) / r.events for r in rounds)
        * 1000
    )
    return out


def measure(events: int = EVENTS, rounds: int = ROUNDS) -> dict[str, float]:
    """Interleaved rounds of both contenders on one moto server; their figures and ratios."""
    with moto_server() as (endpoint, fast):
        clients = {who: Clients(endpoint) for who in CONTENDERS}
        try:
            for who in CONTENDERS:  # first requests of each operation load its model
                ROUNDS_OF[who](clients[who], WARM_UP)
            runs: dict[str, list[Round]] = {who: [] for who in CONTENDERS}
            for n in range(rounds):
                for who in CONTENDERS[:: 1 if n % 2 == 0 else -1]:
                    runs[who].append(ROUNDS_OF[who](clients[who], events))
        finally:
            for made in clients.values():
                made.close()
    out: dict[str, float] = {
        "events": events,
        "rounds": rounds,
        "subscribers": len(SUBSCRIBERS),
        "subscribers_taking": len(SUBSCRIBERS) - 1,
        "moto_speedups": int(fast),
    }
    for who in CONTENDERS:
        out |= contender_figures(who, runs[who])
    for figure in ("billed_requests_per_event", "usd_per_million", "emit_ms_median"):
        out[f"{figure}_taskhop_over_peer"] = out[f"taskhop_{figure}"] / out[f"peer_{figure}"]
    return out


def run() -> dict[str, float]:
    """``make bench``'s section (``python -m bench events``)."""
    return measure()
