"""The cost benchmark counts real requests: its counts are the ones this checks exactly."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import AWS_ENV

from bench._latency_proxy import CONNECTIONS, UPSTREAM
from bench.batch_latency import Measured
from bench.cost import CASES, PRICES, head_to_head, price, run_case

JOBS = 20  # two batches of ten
SEND, READ = "sqs.SendMessage", "dynamodb.GetItem"


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("with_results", {SEND: 20, "dynamodb.UpdateItem": 40, READ: 20}),
        ("with_idempotency_key", {SEND: 20, "dynamodb.UpdateItem": 80, READ: 20}),
        ("without_store", {SEND: 20}),
        # jobs 0 and 10 ask for a retry: a visibility change each (on the queue URL the worker
        # looks up once per process), then a second attempt (begin and complete again),
        # received in a batch of its own
        (
            "with_one_retry_in_ten",
            {
                SEND: 20,
                "dynamodb.UpdateItem": 44,
                READ: 20,
                "sqs.ChangeMessageVisibility": 2,
                "sqs.GetQueueUrl": 1,
            },
        ),
    ],
)
def test_requests_per_case_are_counted_as_they_happen(
    moto_server: str, case: str, expected: dict[str, int]
) -> None:
    calls, invocations = run_case(moto_server, CASES[case], jobs=JOBS)
    queue_side = Counter({"sqs.ReceiveMessage": invocations, "sqs.DeleteMessageBatch": invocations})
    assert calls == Counter(expected) + queue_side
    assert invocations == (3 if case == "with_one_retry_in_ten" else 2)


def test_a_request_without_a_price_is_refused() -> None:
    unpriced = r"no price for \['dynamodb.BatchGetItem', 's3.PutObject'\]"
    with pytest.raises(ValueError, match=unpriced):
        price(
            Counter({"dynamodb.BatchGetItem": 1, "s3.PutObject": 1}),
            invocations=1,
            jobs=1,
            lambda_ms_per_job=5.0,
        )


def test_dollars_follow_the_counts_and_the_stated_prices() -> None:
    calls = Counter({"sqs.SendMessage": 10, "sqs.ReceiveMessage": 1, "sqs.DeleteMessageBatch": 1})
    calls += Counter({"dynamodb.UpdateItem": 20, "dynamodb.GetItem": 10})
    figures = price(calls, invocations=1, jobs=10, lambda_ms_per_job=5.0)
    assert figures["sqs_requests"] == pytest.approx(1.2)
    assert figures["dynamodb_writes"] == 2
    assert figures["dynamodb_reads"] == 1
    lambda_seconds = 0.005 * 0.5 * PRICES["lambda_arm_gb_second"]
    expected = (
        1.2 * PRICES["sqs_request"]
        + 2 * PRICES["dynamodb_write"]
        + PRICES["dynamodb_read"]
        + 0.1 * PRICES["lambda_request"]
        + lambda_seconds
    )
    assert figures["usd_per_million"] == pytest.approx(expected * 1e6)


def test_lambda_duration_and_requests_come_from_the_measured_batches() -> None:
    """Each contender pays its own median batch wall time and its own requests per batch."""
    updates, puts = "dynamodb.UpdateItem", "dynamodb.PutItem"
    measured = Measured(delay=0.005, jobs=10, moto_speedups=True, proxy={})
    measured.walls = {"taskhop": [0.1, 0.3, 0.2], "powertools": [0.4, 0.4, 0.5]}
    measured.counts = {
        "taskhop": [Counter({updates: 20, CONNECTIONS: 1, UPSTREAM + updates: 9.0})] * 3,
        "powertools": [Counter({puts: 10, updates: 10})] * 3,
    }
    figures = head_to_head(measured)
    assert figures["taskhop_lambda_ms_per_job"] == 20.0  # the median batch, 200 ms, over 10
    assert figures["powertools_lambda_ms_per_job"] == 40.0
    # both: a send per job, then a receive and a delete per batch, one invocation per batch
    queue = Counter({"sqs.SendMessage": 10, "sqs.ReceiveMessage": 1, "sqs.DeleteMessageBatch": 1})
    ours = price(queue + Counter({updates: 20}), 1, 10, lambda_ms_per_job=20.0)
    theirs = price(queue + Counter({puts: 10, updates: 10}), 1, 10, lambda_ms_per_job=40.0)
    assert figures["taskhop_usd_per_million"] == round(ours["usd_per_million"], 2)
    assert figures["powertools_usd_per_million"] == round(theirs["usd_per_million"], 2)
    ratio = ours["usd_per_million"] / theirs["usd_per_million"]
    assert figures["taskhop_over_powertools_usd"] == pytest.approx(ratio, abs=1e-3)
