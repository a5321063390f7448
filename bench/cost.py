"""Cost per million jobs: AWS requests counted while real jobs run, priced at list prices.

Each case runs ``JOBS`` jobs through the whole path against a moto server on 127.0.0.1: the
producer dispatches with ``SqsQueue`` (one ``dispatch`` per job), ``LocalEventSourceMapping``
receives batches of 10 and invokes the Lambda handler (``make_handler``), and, where results
are kept, the producer reads each job's result. botocore's ``before-call`` event counts every
request, split by who makes it: the SDK (producer, worker, result reads) and the event source
mapping (ReceiveMessage and DeleteMessageBatch, which AWS bills to the queue's owner too;
receives that found nothing are left out: an idle queue's polling does not scale with jobs).

Prices: us-east-1 list prices as published on the AWS pricing pages in 2025, without free
tiers; change them here when they move. Items are under 1 KB, so each write is one write
request unit and each strongly consistent read one read unit.

Lambda's duration is measured, not assumed: a batch's wall time with 5 ms per AWS request
(``bench.batch_latency``), divided by its jobs, billed at 512 MB on arm64. moto's own latency
is not AWS's, so the requests above are counted on moto without delay and the duration is
taken from the latency bench. That bench also gives the head-to-head: one batch of jobs with
results kept, taskhop vs Powertools (BatchProcessor + idempotency on DynamoDB), each priced
from its own requests per batch (counted at the latency proxy), the queue's requests (the
same for both) and its own measured duration.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from bench.batch_latency import Measured

JOBS = 50
REGION = "us-east-1"
# https://aws.amazon.com/sqs/pricing/ (standard queue), https://aws.amazon.com/dynamodb/pricing/
# on-demand/ (after the November 2024 price cut: $0.625 per million write units), and
# https://aws.amazon.com/lambda/pricing/ (arm64; x86 is $0.0000166667 per GB-second).
PRICES = {
    "sqs_request": 0.40 / 1e6,  # standard queue, per request (each 64 KB chunk)
    "dynamodb_write": 0.625 / 1e6,  # on-demand, per write request unit (1 KB)
    "dynamodb_read": 0.125 / 1e6,  # on-demand, per strongly consistent read unit (4 KB)
    "lambda_request": 0.20 / 1e6,
    "lambda_arm_gb_second": 0.0000133334,
    # https://aws.amazon.com/sns/pricing/ (standard topic): per request, each 64 KiB chunk
    # of a Publish or PublishBatch request one request
    "sns_publish": 0.50 / 1e6,
}
LAMBDA_MEMORY_GB = 0.5
# What the queue bills per batch of jobs besides the worker's own calls, as the cases count it:
# the producer's SendMessage per job, then the event source mapping's ReceiveMessage and
# DeleteMessageBatch per batch.
QUEUE_PER_BATCH = ("sqs.ReceiveMessage", "sqs.DeleteMessageBatch")
# The batch_latency contenders priced head to head (add an option's name to price it too).
PRICED = ("taskhop", "powertools")
# One request unit each: items here are under 1 KB (writes) and 4 KB (strong reads).
DYNAMODB_WRITES = {"dynamodb.UpdateItem", "dynamodb.PutItem", "dynamodb.DeleteItem"}
DYNAMODB_READS = {"dynamodb.GetItem"}
DYNAMODB_PRICED = DYNAMODB_WRITES | DYNAMODB_READS


class Work(TypedDict):
    n: int


@dataclass(frozen=True)
class Case:
    """One way of running jobs: with or without a store, a key, retries."""

    store: bool = True
    idempotency_key: bool = False
    retry_one_in: int | None = None  # every n-th job asks to be retried once
    read_results: bool = True


CASES = {
    "with_results": Case(),
    "with_idempotency_key": Case(idempotency_key=True),
    "without_store": Case(store=False, read_results=False),
    "with_one_retry_in_ten": Case(retry_one_in=10),
}


def counting(session: Any) -> Counter[str]:
    """Count the requests clients of ``session`` make, as ``service.Operation``.

    Receives that found nothing are not counted: see the module's docstring.
    """
    calls: Counter[str] = Counter()

    def before(model: Any, **_: Any) -> None:
        calls[f"{model.service_model.service_name}.{model.name}"] += 1

    def after_receive(parsed: dict[str, Any], **_: Any) -> None:
        if not parsed.get("Messages"):
            calls["sqs.ReceiveMessage"] -= 1

    session.events.register("before-call", before)
    session.events.register("after-call.sqs.ReceiveMessage", after_receive)
    return calls


def run_case(endpoint: str, case: Case, jobs: int = JOBS) -> tuple[Counter[str], int]:
    """Run ``jobs`` jobs; return the requests counted and the Lambda invocations."""
    import boto3
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.backends.sqs import SqsQueue
    from taskhop.lambda_worker import LocalEventSourceMapping, make_handler
    from taskhop.sdk import JobContext, Retry, create_app, static_contract

    def session() -> Any:
        return boto3.Session(region_name=REGION)

    name = f"cost-{uuid.uuid4().hex[:10]}"
    sdk_session, esm_session = session(), session()
    # Counting starts before any client exists: a client copies its session's hooks when made.
    sdk_calls, esm_calls = counting(sdk_session), counting(esm_session)
    url = sdk_session.client("sqs", endpoint_url=endpoint).create_queue(QueueName=name)["QueueUrl"]
    store = None
    if case.store:
        store = DynamoStore(name, client=sdk_session.client("dynamodb", endpoint_url=endpoint))
        store.create_table()
    sdk_sqs = sdk_session.client("sqs", endpoint_url=endpoint)
    app = create_app(queue=SqsQueue(url, client=sdk_sqs), store=store)
    contract = static_contract("work", input=Work, output=int, retry={"attempts": 3, "delay": 0})

    def work(data: Work, ctx: JobContext) -> int:
        if case.retry_one_in and data["n"] % case.retry_one_in == 0 and ctx.attempt == 1:
            raise Retry(after=0)
        return data["n"]

    bound = app.implement(contract, work)
    esm_sqs = esm_session.client("sqs", endpoint_url=endpoint)
    esm = LocalEventSourceMapping(
        make_handler(app, sqs_client=sdk_sqs), url, esm_sqs, batch_size=10, wait_time=0
    )
    sdk_calls.clear()  # the queue and table set-up is not a job's cost
    esm_calls.clear()
    handles = [
        bound.dispatch({"n": n}, idempotency_key=f"k-{n}" if case.idempotency_key else None)
        for n in range(jobs)
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # the worker's job and metric lines
        while esm.poll_once():
            pass
    if case.read_results:
        assert [h.result(timeout=10) for h in handles] == list(range(jobs))
    app.close()
    return sdk_calls + esm_calls, esm.invocations


def price(
    calls: Counter[str], invocations: float, jobs: int, *, lambda_ms_per_job: float
) -> dict[str, float]:
    """Requests per job by kind, and dollars per million successful jobs.

    ``lambda_ms_per_job`` is the billed duration per job: a batch's wall time over its jobs.
    """
    unpriced = {op for op in calls if op.split(".")[0] not in ("sqs", "dynamodb")}
    unpriced |= {op for op in calls if op.startswith("dynamodb.")} - DYNAMODB_PRICED
    if unpriced:  # a new kind of request: give it a price before trusting the total
        raise ValueError(f"no price for {sorted(unpriced)}")
    sqs = sum(n for op, n in calls.items() if op.startswith("sqs."))
    writes = sum(n for op, n in calls.items() if op in DYNAMODB_WRITES)
    reads = sum(n for op, n in calls.items() if op in DYNAMODB_READS)
    per_job = {
        "sqs_requests": sqs / jobs,
        "dynamodb_writes": writes / jobs,
        "dynamodb_reads": reads / jobs,
        "lambda_invocations": invocations / jobs,
    }
    gb_seconds = lambda_ms_per_job / 1000 * LAMBDA_MEMORY_GB
    dollars = (
        per_job["sqs_requests"] * PRICES["sqs_request"]
        + per_job["dynamodb_writes"] * PRICES["dynamodb_write"]
        + per_job["dynamodb_reads"] * PRICES["dynamodb_read"]
        + per_job["lambda_invocations"] * PRICES["lambda_request"]
        + gb_seconds * PRICES["lambda_arm_gb_second"]
    )
    return {**per_job, "usd_per_million": dollars * 1e6}


def batch_calls(measured: Measured, name: str) -> Counter[str]:
    """One batch's requests: the contender's own (counted at the proxy) and the queue's."""
    queue = Counter({"sqs.SendMessage": measured.jobs}) + Counter(dict.fromkeys(QUEUE_PER_BATCH, 1))
    return measured.requests(name) + queue


def head_to_head(measured: Measured) -> dict[str, float]:
    """Dollars per million jobs for each ``PRICED`` contender, from its measured batches."""
    out: dict[str, float] = {}
    dollars: dict[str, float] = {}
    for name in PRICED:
        ms_per_job = measured.wall_ms(name) / measured.jobs
        calls = batch_calls(measured, name)
        figures = price(calls, 1, measured.jobs, lambda_ms_per_job=ms_per_job)
        dollars[name] = figures["usd_per_million"]
        out[f"{name}_lambda_ms_per_job"] = round(ms_per_job, 3)
        out[f"{name}_usd_per_million"] = round(dollars[name], 2)
    out["taskhop_over_powertools_usd"] = round(dollars["taskhop"] / dollars["powertools"], 3)
    return out


def run(measured: Measured) -> dict[str, float]:
    """Price every case with taskhop's measured duration, then the head-to-head."""
    from bench.aws import ENV, moto_server  # bench.aws imports the Celery peer

    os.environ.update(ENV)
    # One measured duration for every case: a batch with results kept. An upper bound for
    # the case without a store, a lower one for those with more store calls per job.
    ms_per_job = measured.wall_ms("taskhop") / measured.jobs
    out: dict[str, float] = {}
    with moto_server() as endpoint:
        for name, case in CASES.items():
            calls, invocations = run_case(endpoint, case)
            figures = price(calls, invocations, JOBS, lambda_ms_per_job=ms_per_job)
            for key, value in figures.items():
                out[f"{name}_{key}"] = round(value, 2 if key == "usd_per_million" else 3)
    return out | head_to_head(measured)
