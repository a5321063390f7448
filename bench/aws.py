"""SQS producer benchmarks against a moto server on 127.0.0.1: taskhop vs raw boto3.

Same server, same run, interleaved rounds; figures are medians and ratios (this machine is
shared and noisy). Throughput compares ``send_message`` with ``dispatch`` and
``send_message_batch`` with ``dispatch_many``; cold start compares a fresh interpreter that
imports, builds a client and sends one message.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from bench._fresh import median_ms

ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class Greet(TypedDict):
    name: str


@dataclass
class Greeting:
    text: str


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server in its own process (no GIL shared with the client being measured)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def per_second(fn: Callable[[], int], rounds: int) -> list[float]:
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        count = fn()
        rates.append(count / (time.perf_counter() - started))
    return rates


def throughput(endpoint: str, n: int = 200, rounds: int = 5) -> dict[str, float]:
    import boto3

    from backends.sqs import SqsQueue
    from sdk import create_app, static_contract

    os.environ.update(ENV)
    client = boto3.client("sqs", endpoint_url=endpoint)
    contract = static_contract("greet", input=Greet, output=Greeting)
    queues = iter(range(10_000))

    def fresh_queue() -> str:
        # A new queue per measurement: moto slows down as a queue fills, which would
        # otherwise penalize whichever side runs later.
        return str(client.create_queue(QueueName=f"bench-{next(queues)}")["QueueUrl"])

    def raw_single() -> int:
        url, body = fresh_queue(), "{}"
        for _ in range(n):
            client.send_message(QueueUrl=url, MessageBody=body)
        return n

    def ours_single() -> int:
        bound = create_app(queue=SqsQueue(fresh_queue(), client=client)).register(contract)
        for _ in range(n):
            bound.dispatch({"name": "ada"})
        return n

    def raw_batch() -> int:
        url = fresh_queue()
        for _ in range(n // 10):
            entries: Any = [{"Id": str(i), "MessageBody": "{}"} for i in range(10)]
            client.send_message_batch(QueueUrl=url, Entries=entries)
        return n

    def ours_batch() -> int:
        bound = create_app(queue=SqsQueue(fresh_queue(), client=client)).register(contract)
        bound.dispatch_many([{"name": "ada"}] * n)
        return n

    figures: dict[str, list[float]] = {
        k: [] for k in ("raw_send", "dispatch", "raw_batch", "dispatch_many")
    }
    for _ in range(rounds):  # interleaved, so drift in the machine's load hits both sides
        figures["raw_send"] += per_second(raw_single, 1)
        figures["dispatch"] += per_second(ours_single, 1)
        figures["raw_batch"] += per_second(raw_batch, 1)
        figures["dispatch_many"] += per_second(ours_batch, 1)
    out = {f"{k}_per_s": statistics.median(v) for k, v in figures.items()}
    out["dispatch_over_raw_send"] = out["dispatch_per_s"] / out["raw_send_per_s"]
    out["dispatch_many_over_raw_batch"] = out["dispatch_many_per_s"] / out["raw_batch_per_s"]
    return out


RAW = """
import boto3
c = boto3.client("sqs", endpoint_url="{endpoint}")
c.send_message(QueueUrl="{url}", MessageBody="{{}}")
"""
STATIC = """
from typing import TypedDict
from backends.sqs import SqsQueue
from static_contracts import Producer, static_contract
class Greet(TypedDict):
    name: str
task = Producer(SqsQueue("{url}")).register(static_contract("greet", input=Greet, output=dict))
task.dispatch({{"name": "ada"}})
"""
SDK = """
from typing import TypedDict
from backends.sqs import SqsQueue
from sdk import create_app, static_contract
class Greet(TypedDict):
    name: str
app = create_app(queue=SqsQueue("{url}"))
app.register(static_contract("greet", input=Greet, output=dict)).dispatch({{"name": "ada"}})
"""


def cold_start(endpoint: str, rounds: int = 15) -> dict[str, float]:
    import boto3

    os.environ.update(ENV)
    url = boto3.client("sqs", endpoint_url=endpoint).create_queue(QueueName="cold")["QueueUrl"]
    env = {**os.environ, **ENV, "AWS_ENDPOINT_URL": endpoint}
    scripts = {
        "raw_boto3": RAW.format(endpoint=endpoint, url=url),
        "static_producer": STATIC.format(url=url),
        "sdk_app": SDK.format(url=url),
    }
    out = median_ms(scripts, rounds=rounds, env=env)
    out["static_producer_over_raw"] = out["static_producer_ms"] / out["raw_boto3_ms"]
    out["sdk_app_over_raw"] = out["sdk_app_ms"] / out["raw_boto3_ms"]
    return out


def run() -> dict[str, dict[str, float]]:
    with moto_server() as endpoint:
        return {"sqs_throughput": throughput(endpoint), "sqs_cold_start": cold_start(endpoint)}
