"""The events bench runs and its counts add up (30 events, one round; no timing asserted)."""

from __future__ import annotations

import pytest

from bench.cost import PRICES
from bench.events import SNS_PUBLISH, measure

EVENTS = 30  # three PublishBatch requests, three batches of ten on each taking queue


@pytest.fixture(scope="module")
def figures() -> dict[str, float]:
    return measure(events=EVENTS, rounds=1)


def test_the_filters_deliver_each_event_to_the_two_queues_that_take_it(
    figures: dict[str, float],
) -> None:
    """bill and audit get every event, ship none; so does the peer, through the same filters."""
    for who in ("taskhop", "peer"):
        assert figures[f"{who}_messages_bill"] == EVENTS
        assert figures[f"{who}_messages_audit"] == EVENTS
        assert figures[f"{who}_messages_ship"] == 0
        assert figures[f"{who}_sqs.SnsDelivery_per_event"] == 2
        assert figures[f"{who}_filtered_out_requests_per_event"] == 0
        assert figures[f"{who}_filtered_out_usd_per_million"] == 0


def test_taskhop_batches_publishes_and_keeps_two_writes_per_subscriber_job(
    figures: dict[str, float],
) -> None:
    """A PublishBatch per ten events; begin and complete per job; a receive and delete a batch."""
    assert figures["taskhop_sns.PublishBatch_per_event"] == pytest.approx(0.1)
    assert figures["taskhop_dynamodb_writes_per_event"] == 4
    assert figures["taskhop_sqs.ReceiveMessage_per_event"] == pytest.approx(0.2)
    assert figures["taskhop_sqs.DeleteMessageBatch_per_event"] == pytest.approx(0.2)
    assert figures["taskhop_lambda_invocations_per_event"] == pytest.approx(0.2)
    assert figures["taskhop_client_requests_per_event"] == pytest.approx(4.5)


def test_the_peer_publishes_once_per_event_and_keeps_no_state(figures: dict[str, float]) -> None:
    """One Publish per event, no DynamoDB request at all."""
    assert figures["peer_sns.Publish_per_event"] == 1
    assert figures["peer_dynamodb_writes_per_event"] == 0
    assert not any(k.startswith("peer_dynamodb.") for k in figures)
    assert figures["peer_client_requests_per_event"] == pytest.approx(1.4)


def test_dollars_are_the_counts_at_the_stated_prices(figures: dict[str, float]) -> None:
    """SNS per 64 KiB chunk (one per batch here), SQS and DynamoDB per request, Lambda > 0."""
    assert figures["taskhop_usd_sns"] == pytest.approx(0.1 * SNS_PUBLISH * 1e6)
    assert figures["peer_usd_sns"] == pytest.approx(SNS_PUBLISH * 1e6)
    assert figures["taskhop_usd_sqs"] == pytest.approx(2.4 * PRICES["sqs_request"] * 1e6)
    assert figures["taskhop_usd_dynamodb"] == pytest.approx(4 * PRICES["dynamodb_write"] * 1e6)
    for who in ("taskhop", "peer"):
        parts = sum(figures[f"{who}_usd_{part}"] for part in ("sns", "sqs", "dynamodb", "lambda"))
        assert figures[f"{who}_usd_per_million"] == pytest.approx(parts)
        assert figures[f"{who}_usd_lambda"] > 0.2 * PRICES["lambda_request"] * 1e6
        # the publish is shared; each subscriber that takes the event adds its own share
        assert figures[f"{who}_usd_per_million"] == pytest.approx(
            figures[f"{who}_publish_usd_per_million"]
            + 2 * figures[f"{who}_per_subscriber_usd_per_million"]
        )
    assert figures["usd_per_million_taskhop_over_peer"] > 1  # the job state is what costs
