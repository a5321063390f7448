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
request unit and each strongly consistent read one read unit. Lambda's duration is an
assumption, not a measurement (moto's latency is not AWS's): 5 ms per job on 512 MB arm64.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, TypedDict

JOBS = 50
REGION = "us-east-1"
PRICES = {
    "sqs_request": 0.40 / 1e6,  # standard queue, per request (each 64 KB chunk)
    "dynamodb_write": 0.625 / 1e6,  # on-demand, per write request unit (1 KB)
    "dynamodb_read": 0.125 / 1e6,  # on-demand, per strongly consistent read unit (4 KB)
    "lambda_request": 0.20 / 1e6,
    "lambda_arm_gb_second": 0.0000133334,
}
LAMBDA_MS_PER_JOB = 5.0
LAMBDA_MEMORY_GB = 0.5
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


def price(calls: Counter[str], invocations: int, jobs: int) -> dict[str, float]:
    """Requests per job by kind, and dollars per million successful jobs."""
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
    gb_seconds = LAMBDA_MS_PER_JOB / 1000 * LAMBDA_MEMORY_GB
    dollars = (
        per_job["sqs_requests"] * PRICES["sqs_request"]
        + per_job["dynamodb_writes"] * PRICES["dynamodb_write"]
        + per_job["dynamodb_reads"] * PRICES["dynamodb_read"]
        + per_job["lambda_invocations"] * PRICES["lambda_request"]
        + gb_seconds * PRICES["lambda_arm_gb_second"]
    )
    return {**per_job, "usd_per_million": dollars * 1e6}


def run() -> dict[str, float]:
    from bench.aws import ENV, moto_server  # bench.aws imports the Celery peer

    os.environ.update(ENV)
    out: dict[str, float] = {}
    with moto_server() as endpoint:
        for name, case in CASES.items():
            calls, invocations = run_case(endpoint, case)
            for key, value in price(calls, invocations, JOBS).items():
                out[f"{name}_{key}"] = round(value, 2 if key == "usd_per_million" else 3)
    return out
