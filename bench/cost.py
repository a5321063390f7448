"""Cost per million jobs, from the request counts the tests measure and AWS list prices.

Request counts per job are the ones ``tests/test_aws_integration.py`` asserts with botocore
hooks (SDK calls), plus what Lambda's event source mapping does for us (one ReceiveMessage
and one DeleteMessageBatch per batch). Prices: us-east-1 list prices as published on the
AWS pricing pages in 2025, without free tiers; change them here when they move.
"""

from __future__ import annotations

PRICES = {
    "sqs_request": 0.40 / 1e6,  # standard queue, per request (each 64 KB chunk)
    "dynamodb_write": 0.625 / 1e6,  # on-demand, per write request unit (1 KB)
    "dynamodb_read": 0.125 / 1e6,  # on-demand, per strongly consistent read unit (4 KB)
    "lambda_request": 0.20 / 1e6,
    "lambda_arm_gb_second": 0.0000133334,
}


def per_million(
    *,
    writes: float,
    reads: float,
    batch: int = 10,
    memory_gb: float = 0.5,
    ms_per_job: float = 5.0,
    retries: float = 0.0,
) -> dict[str, float]:
    """Dollars per million successful jobs."""
    sqs = (
        1 + (1 + 1) / batch + retries * 1
    )  # send; receive + delete per batch; a visibility change per retry
    sqs += retries * 2 / batch  # the retried message is received and deleted again
    writes_total = writes * (1 + retries)
    lambda_requests = (1 + retries) / batch
    seconds = (1 + retries) * ms_per_job / 1000
    cost = (
        sqs * PRICES["sqs_request"]
        + writes_total * PRICES["dynamodb_write"]
        + reads * PRICES["dynamodb_read"]
        + lambda_requests * PRICES["lambda_request"]
        + seconds * memory_gb * PRICES["lambda_arm_gb_second"]
    )
    return {
        "usd_per_million_jobs": round(cost * 1e6, 2),
        "sqs_requests_per_job": round(sqs, 2),
        "dynamodb_writes_per_job": writes_total,
    }


def run() -> dict[str, float]:
    cases = {
        "with_results": per_million(writes=2, reads=1),
        "with_idempotency_key": per_million(writes=4, reads=1),
        "without_store": per_million(writes=0, reads=0),
        "with_one_retry_in_ten": per_million(writes=2, reads=1, retries=0.1),
    }
    return {f"{name}_usd_per_million": case["usd_per_million_jobs"] for name, case in cases.items()}
