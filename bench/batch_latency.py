"""A batch's wall time with realistic latency: what Lambda bills for one SQS event.

A moto server on 127.0.0.1, behind a proxy that gives each AWS request a latency of ``DELAY``
(5 ms by default, about an in-region DynamoDB round trip; ``bench._latency_proxy``): a request
is answered ``DELAY`` after it was sent, or when moto answers if that is later, so the figure
is the batch's I/O as it would be on AWS, whoever sends the requests. Each contender processes
one Lambda SQS event of ``JOBS`` fresh jobs (taskhop envelopes) with a trivial handler and
keeps each job's result:

- taskhop: ``make_handler(app)`` over ``DynamoStore`` (its table made by ``create_table``, as
  the tests make it), its SQS client (for settling) pointed at the proxy too;
- Powertools: ``BatchProcessor`` + parser (a pydantic model of the envelope) and
  ``idempotent_function`` keyed by the job id on ``DynamoDBPersistenceLayer`` (its table as
  Powertools documents it: partition key ``id``, TTL on ``expiration``), local cache off.

Every client is plain boto3 (default config) at the proxy's URL, so both pay the same per
request and reuse connections alike. Rounds are interleaved, each with new job ids; figures
are medians of the wall time per batch, the requests per batch (counted at the proxy, by
operation), and ratios. The proxy's own cost is measured first: a GetItem straight to moto,
through the proxy with no delay, and with the delay.

moto is the floor under every figure: it is pure Python in one process, so overlapped
requests queue there, and its time per request depends on the request (taskhop's job writes,
one long update expression each, cost it more than Powertools' PutItem), which AWS's would
not. ``<name>_at_moto_ms`` is how long moto had at least one of the batch's requests: where
it is most of the batch's wall time, the batch waits on moto, not on the latency; and
``<name>_outside_requests_ms`` is the batch's time with no request in flight (its own CPU).
moto runs with the dev stack's speed-ups where they exist (``moto_speedups``: 1), for every
contender.

``CONTENDERS`` names each way of running the batch; a new option is one line there (for
example ``"taskhop_io_threads": partial(taskhop, io_threads=8)``: keywords that are not
taskhop's own go to ``make_handler``). ``PAIRS`` names the ratios.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypedDict

DELAY = 0.005
JOBS = 10
ROUNDS = 15
REGION = "us-east-1"
SLEEP = 0.02  # the "handler does some I/O of its own" variants


class Greet(TypedDict):
    name: str
    times: int


class Greeting(TypedDict):
    text: str


# moto in a process of its own, with the dev stack's speed-ups where they exist: they take
# moto's own (pure Python) work per request down, which is no contender's cost on AWS. It runs
# the working tree's taskhop (no PYTHONPATH), so a run against an older checkout of taskhop
# gets the same moto. It prints whether the speed-ups are in.
MOTO = """
import sys
try:
    from taskhop.lambda_worker._moto_speedups import apply
except ImportError:
    apply = None
print(int(bool(apply and apply())), flush=True)
from moto.server import main
main(["-H", "127.0.0.1", "-p", sys.argv[1]])
"""


@contextlib.contextmanager
def moto_server() -> Iterator[tuple[str, bool]]:
    """A moto server on 127.0.0.1 at a free port: its URL, and whether it has the speed-ups."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(
        [sys.executable, "-c", MOTO, str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        fast = proc.stdout.readline().strip() == "1"
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto did not start (exit code {proc.poll()})") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", fast
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass(frozen=True)
class Stack:
    """The proxied AWS every contender talks to, and a queue its records come from."""

    url: str
    moto: str
    queue_url: str = ""
    queue_arn: str = ""

    def client(self, service: str) -> Any:
        """A plain boto3 client at the proxy: every contender's requests pay the delay."""
        import boto3

        factory: Any = boto3  # typed per service literal; ours is a str
        return factory.client(service, endpoint_url=self.url, region_name=REGION)

    def setup_client(self, service: str) -> Any:
        """A client straight to moto, for set-up that is no contender's cost."""
        import boto3

        factory: Any = boto3
        return factory.client(service, endpoint_url=self.moto, region_name=REGION)


Batch = Callable[[dict[str, Any]], dict[str, Any]]
"""One contender, ready to run: an SQS event in, its partial batch response out."""


def taskhop(
    stack: Stack, *, is_async: bool = False, sleep: float = 0.0, **handler_options: Any
) -> Batch:
    """taskhop's Lambda handler over DynamoStore; ``handler_options`` go to ``make_handler``."""
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.backends.sqs import SqsQueue
    from taskhop.lambda_worker import LocalContext, make_handler
    from taskhop.sdk import JobContext, create_app, static_contract

    table = f"bench-taskhop-{uuid.uuid4().hex[:8]}"
    DynamoStore(table, client=stack.setup_client("dynamodb")).create_table()
    sqs = stack.client("sqs")
    app = create_app(
        queue=SqsQueue(stack.queue_url, client=sqs),
        store=DynamoStore(table, client=stack.client("dynamodb")),
    )
    contract = static_contract("greet", input=Greet, output=Greeting)

    def greet(data: Greet, ctx: JobContext) -> Greeting:
        if sleep:
            time.sleep(sleep)
        return {"text": data["name"] * data["times"]}

    async def agreet(data: Greet, ctx: JobContext) -> Greeting:
        if sleep:
            await asyncio.sleep(sleep)
        return {"text": data["name"] * data["times"]}

    app.implement(contract, agreet if is_async else greet)
    handler = make_handler(app, sqs_client=sqs, **handler_options)
    return lambda event: handler(event, LocalContext(timeout=900))


def powertools(stack: Stack, *, sleep: float = 0.0) -> Batch:
    """Powertools BatchProcessor + parser + idempotent_function on DynamoDB."""

    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )
    from taskhop.lambda_worker import LocalContext

    from bench.worker_cpu import envelope_models

    Record, _ = envelope_models()

    table = f"bench-powertools-{uuid.uuid4().hex[:8]}"
    setup = stack.setup_client("dynamodb")
    setup.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    setup.get_waiter("table_exists").wait(TableName=table)
    setup.update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"},
    )
    layer = DynamoDBPersistenceLayer(table_name=table, boto3_client=stack.client("dynamodb"))
    config = IdempotencyConfig(event_key_jmespath="body.id", use_local_cache=False)
    processor = BatchProcessor(event_type=EventType.SQS, model=Record)

    def handle(record: Record) -> dict[str, str]:
        if sleep:
            time.sleep(sleep)
        return {"text": record.body.input.name * record.body.input.times}

    idempotent = idempotent_function(
        data_keyword_argument="record", config=config, persistence_store=layer
    )
    greet: Callable[..., dict[str, str]] = idempotent(handle)

    def run(event: dict[str, Any]) -> dict[str, Any]:
        context: Any = LocalContext(timeout=900)  # what Powertools reads of a LambdaContext
        config.register_lambda_context(context)  # in-progress records expire with the call
        answer = process_partial_response(
            event=event, record_handler=greet, processor=processor, context=context
        )
        return dict(answer)

    return run


CONTENDERS: dict[str, Callable[[Stack], Batch]] = {
    "taskhop": taskhop,
    "powertools": powertools,
    "taskhop_async": partial(taskhop, is_async=True),
    "taskhop_sleep20": partial(taskhop, sleep=SLEEP),
    "taskhop_async_sleep20": partial(taskhop, is_async=True, sleep=SLEEP),
    "taskhop_threads_sleep20": partial(taskhop, sleep=SLEEP, handler_threads=10),
    "taskhop_in_order": partial(taskhop, concurrency=1),  # the batch one job after another
    "powertools_sleep20": partial(powertools, sleep=SLEEP),
}
# Powertools' idempotency has no async form (idempotent_function wraps sync functions): its
# sync handler is what async taskhop handlers are compared with.
PAIRS = {
    "taskhop_over_powertools": ("taskhop", "powertools"),
    "taskhop_async_over_powertools": ("taskhop_async", "powertools"),
    "taskhop_sleep20_over_powertools_sleep20": ("taskhop_sleep20", "powertools_sleep20"),
    "taskhop_async_sleep20_over_powertools_sleep20": (
        "taskhop_async_sleep20",
        "powertools_sleep20",
    ),
    "taskhop_threads_sleep20_over_powertools_sleep20": (
        "taskhop_threads_sleep20",
        "powertools_sleep20",
    ),
    "taskhop_in_order_over_powertools": ("taskhop_in_order", "powertools"),
}


def event(stack: Stack, jobs: int) -> dict[str, Any]:
    """One Lambda SQS event of ``jobs`` fresh jobs, from the stack's queue."""
    from taskhop.static_contracts import Envelope

    from bench.worker_cpu import sqs_event

    bodies = [
        Envelope(task="greet", input={"name": "a", "times": 2}).encode().decode()
        for _ in range(jobs)
    ]
    built = sqs_event(bodies)
    for record in built["Records"]:
        record["eventSourceARN"] = stack.queue_arn
    return built


def timed(batch: Batch, stack: Stack, jobs: int) -> float:
    """Seconds to process one fresh batch (building the event is not timed)."""
    records = event(stack, jobs)
    with contextlib.redirect_stdout(io.StringIO()):  # taskhop's job and metric lines
        started = time.perf_counter()
        answer = batch(records)
        elapsed = time.perf_counter() - started
    assert answer == {"batchItemFailures": []}, answer
    return elapsed


def round_trips(clients: Mapping[str, Any], table: str, rounds: int) -> dict[str, float]:
    """Median GetItem milliseconds through each client, interleaved."""
    samples: dict[str, list[float]] = {name: [] for name in clients}
    key = {"pk": {"S": "probe"}}
    for client in clients.values():
        client.get_item(TableName=table, Key=key)  # connect first: reuse is what is measured
    for _ in range(rounds):
        for name, client in clients.items():
            started = time.perf_counter()
            client.get_item(TableName=table, Key=key)
            samples[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


@dataclass
class Measured:
    """Every sample of one run: wall seconds and proxy counts per batch, per contender."""

    delay: float
    jobs: int
    moto_speedups: bool
    proxy: dict[str, float]
    walls: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, list[Counter[str]]] = field(default_factory=dict)

    def wall_ms(self, name: str) -> float:
        """The median wall time of one batch."""
        return statistics.median(self.walls[name]) * 1000

    def requests(self, name: str) -> Counter[str]:
        """The AWS requests of one batch by operation (the median of each over the rounds)."""
        from bench._latency_proxy import requests

        ops = {op for counts in self.counts[name] for op in requests(counts)}
        return Counter({op: statistics.median(c[op] for c in self.counts[name]) for op in ops})

    def span_ms(self, name: str, span: str) -> float:
        """A proxy span of one batch (``IN_FLIGHT``, ``AT_MOTO``): the median over the rounds."""
        return statistics.median(counts[span] for counts in self.counts[name])

    def connections(self, name: str) -> float:
        """New connections per batch: 0 once a contender's clients reuse theirs."""
        from bench._latency_proxy import CONNECTIONS

        return statistics.median(counts[CONNECTIONS] for counts in self.counts[name])


def measure(
    rounds: int = ROUNDS,
    *,
    delay: float = DELAY,
    jobs: int = JOBS,
    contenders: Mapping[str, Callable[[Stack], Batch]] = CONTENDERS,
) -> Measured:
    """Start moto and two proxies (with and without the delay), then run interleaved rounds."""
    from taskhop.backends.dynamodb import DynamoStore

    from bench._latency_proxy import latency_proxy
    from bench.aws import ENV

    os.environ.update(ENV)
    with (
        moto_server() as (moto, fast),
        latency_proxy(moto, delay) as proxy,
        latency_proxy(moto, 0.0) as bare,
    ):
        sqs = Stack(proxy.url, moto).setup_client("sqs")
        url = sqs.create_queue(QueueName=f"bench-batch-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        stack = Stack(proxy.url, moto, url, arn["Attributes"]["QueueArn"])

        probe = f"bench-probe-{uuid.uuid4().hex[:8]}"
        DynamoStore(probe, client=stack.setup_client("dynamodb")).create_table()
        clients = {
            "getitem_moto_ms": stack.setup_client("dynamodb"),
            "getitem_proxy_no_delay_ms": Stack(bare.url, moto).client("dynamodb"),
            "getitem_proxy_ms": stack.client("dynamodb"),
        }
        measured = Measured(delay, jobs, fast, round_trips(clients, probe, rounds=100))

        batches = {name: build(stack) for name, build in contenders.items()}
        for batch in batches.values():  # warm: imports, clients, connections
            timed(batch, stack, jobs)
        proxy.take()
        for _ in range(rounds):  # interleaved, so drift in the machine's load hits every side
            for name, batch in batches.items():
                measured.walls.setdefault(name, []).append(timed(batch, stack, jobs))
                measured.counts.setdefault(name, []).append(proxy.take())
    return measured


def figures(measured: Measured) -> dict[str, float]:
    """The figures of a run: medians per batch, requests per batch, ratios."""
    from bench._latency_proxy import AT_MOTO, IN_FLIGHT

    out: dict[str, float] = {"delay_ms": measured.delay * 1000, "jobs_per_batch": measured.jobs}
    out["moto_speedups"] = int(measured.moto_speedups)
    out |= measured.proxy
    out["proxy_overhead_ms"] = out["getitem_proxy_no_delay_ms"] - out["getitem_moto_ms"]
    for name in measured.walls:
        out[f"{name}_ms"] = measured.wall_ms(name)
        requests = measured.requests(name)
        out[f"{name}_requests"] = sum(requests.values())
        out |= {f"{name}_{op}": n for op, n in sorted(requests.items())}
        out[f"{name}_new_connections"] = measured.connections(name)
        wall = out[f"{name}_ms"]
        # the batch's wall time outside any request (its CPU, its sleeps), and moto's part
        out[f"{name}_outside_requests_ms"] = wall - measured.span_ms(name, IN_FLIGHT)
        out[f"{name}_at_moto_ms"] = measured.span_ms(name, AT_MOTO)
    for ratio, (ours, theirs) in PAIRS.items():
        if ours in measured.walls and theirs in measured.walls:
            out[ratio] = measured.wall_ms(ours) / measured.wall_ms(theirs)
    return out


def run() -> dict[str, float]:
    return figures(measure())


if __name__ == "__main__":
    started = time.perf_counter()
    print(json.dumps({k: round(v, 3) for k, v in run().items()}, indent=2))
    print(f"took {time.perf_counter() - started:.1f} s")
