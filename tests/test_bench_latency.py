"""The latency proxy behind the batch bench: it delays each request, counts it, keeps alive."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import AWS_ENV

from bench._latency_proxy import AT_MOTO, CONNECTIONS, IN_FLIGHT, UPSTREAM, Proxy, latency_proxy

DELAY = 0.05  # far above a local round trip, so "at least the delay" is the only check


@pytest.fixture(scope="module", params=[True, False], ids=["floor", "additive"])
def proxy(moto_server: str, request: pytest.FixtureRequest) -> Iterator[Proxy]:
    """A proxy in each mode: moto's time inside the delay (the bench's), or on top of it."""
    with latency_proxy(moto_server, DELAY, floor=request.param) as running:
        yield running


def client(url: str, service: str) -> Any:
    import boto3

    factory: Any = boto3  # typed per service literal; ours is a str
    return factory.client(
        service,
        endpoint_url=url,
        region_name=AWS_ENV["AWS_REGION"],
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def test_each_request_takes_at_least_the_delay_and_is_counted(proxy: Proxy) -> None:
    """Every request is answered no sooner than the delay, and counted by operation."""
    sqs = client(proxy.url, "sqs")
    url = sqs.create_queue(QueueName="latency")["QueueUrl"]
    proxy.take()
    for _ in range(3):
        started = time.perf_counter()
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        assert time.perf_counter() - started >= DELAY
    counts = proxy.take()
    assert counts["sqs.GetQueueAttributes"] == 3
    assert counts[UPSTREAM + "sqs.GetQueueAttributes"] > 0  # moto's own milliseconds
    # one request at a time: moto's span is its time, within the time requests were in flight
    assert 0 < counts[AT_MOTO] <= counts[UPSTREAM + "sqs.GetQueueAttributes"]
    assert counts[IN_FLIGHT] >= 3 * DELAY * 1000
    assert proxy.take()["sqs.GetQueueAttributes"] == 0  # a take starts the counts again


def test_a_client_keeps_its_connection_across_requests(proxy: Proxy) -> None:
    """One client making requests one after another opens one connection to the proxy."""
    dynamodb = client(proxy.url, "dynamodb")
    proxy.take()
    for _ in range(3):
        dynamodb.list_tables()
    counts = proxy.take()
    assert counts["dynamodb.ListTables"] == 3
    assert counts[CONNECTIONS] == 1
