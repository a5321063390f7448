"""SQS producer benchmarks against a moto server on 127.0.0.1: taskhop vs raw boto3 and Celery.

Same server, same run, interleaved rounds; figures are medians and ratios (this machine is
shared and noisy). Throughput compares ``send_message`` with ``dispatch`` and
``send_message_batch`` with ``dispatch_many``, and both with Celery's ``send_task``; cold
start compares a fresh interpreter that imports, builds a client and sends one message.

moto (5.2) computes every queue attribute on each SendMessage, so sends slow down as a queue
fills: each measurement sends ``messages_per_queue`` messages to a queue of its own, which
starts empty (depth 0 to ``messages_per_queue``, the same for every contender).
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

from bench import celery_peer
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


def measure(fn: Callable[[], int]) -> tuple[float, float]:
    """Messages per second, and this process's CPU microseconds per message (the client's
    own cost: the moto server runs in another process)."""
    started, cpu = time.perf_counter(), time.process_time()
    count = fn()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return count / elapsed, cpu / count * 1e6


def throughput(endpoint: str, n: int = 200, rounds: int = 9) -> dict[str, float]:
    import boto3
    from taskhop.backends.sqs import SqsQueue
    from taskhop.sdk import create_app, static_contract

    os.environ.update(ENV)
    client = boto3.client("sqs", endpoint_url=endpoint)
    contract = static_contract("greet", input=Greet, output=Greeting)
    queues = iter(range(10_000))

    def fresh_queue() -> str:
        # A new queue per measurement: moto slows down as a queue fills, which would
        # otherwise penalize whichever side runs later.
        return str(client.create_queue(QueueName=f"bench-{next(queues)}")["QueueUrl"])

    # Each contender prepares its queue (and app) untimed, then returns the timed send loop.
    def raw_single() -> Callable[[], int]:
        url, body = fresh_queue(), "{}"

        def run() -> int:
            for _ in range(n):
                client.send_message(QueueUrl=url, MessageBody=body)
            return n

        return run

    def ours_single() -> Callable[[], int]:
        bound = create_app(queue=SqsQueue(fresh_queue(), client=client)).register(contract)

        def run() -> int:
            for _ in range(n):
                bound.dispatch({"name": "ada"})
            return n

        return run

    def raw_batch() -> Callable[[], int]:
        url = fresh_queue()

        def run() -> int:
            for _ in range(n // 10):
                entries: Any = [{"Id": str(i), "MessageBody": "{}"} for i in range(10)]
                client.send_message_batch(QueueUrl=url, Entries=entries)
            return n

        return run

    def ours_batch() -> Callable[[], int]:
        bound = create_app(queue=SqsQueue(fresh_queue(), client=client)).register(contract)

        def run() -> int:
            bound.dispatch_many([{"name": "ada"}] * n)
            return n

        return run

    # Celery declares each new queue on its first send (ListQueues, CreateQueue): 2 requests
    # of its ~202 fall inside the timed loop, which kombu gives no untimed way to do first.
    celery_run = celery_peer.send_task_runner(endpoint, n)
    contenders: dict[str, Callable[[], Callable[[], int]]] = {
        "raw_send": raw_single,
        "dispatch": ours_single,
        "raw_batch": raw_batch,
        "dispatch_many": ours_batch,
        "celery_send_task": lambda: celery_run,
    }
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    cpu: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):  # interleaved, so drift in the machine's load hits every side
        for name, prepare in contenders.items():
            rate, cpu_us = measure(prepare())
            rates[name].append(rate)
            cpu[name].append(cpu_us)
    out: dict[str, float] = {"messages_per_queue": n}
    out |= {f"{k}_per_s": statistics.median(v) for k, v in rates.items()}
    out |= {f"{k}_client_cpu_us": statistics.median(v) for k, v in cpu.items()}
    out["dispatch_over_raw_send"] = out["dispatch_per_s"] / out["raw_send_per_s"]
    out["dispatch_many_over_raw_batch"] = out["dispatch_many_per_s"] / out["raw_batch_per_s"]
    celery = out["celery_send_task_per_s"]
    out["dispatch_over_celery_send_task"] = out["dispatch_per_s"] / celery
    out["dispatch_many_over_celery_send_task"] = out["dispatch_many_per_s"] / celery
    # The server's cost aside (moto's is most of the wall time here), how much more CPU Celery's
    # producer spends per message: the throughput ratio a CPU-bound client would see.
    celery_cpu = out["celery_send_task_client_cpu_us"]
    out["celery_send_task_cpu_over_dispatch"] = celery_cpu / out["dispatch_client_cpu_us"]
    out["celery_send_task_cpu_over_dispatch_many"] = celery_cpu / out["dispatch_many_client_cpu_us"]
    return out


RAW = """
import boto3
c = boto3.client("sqs", endpoint_url="{endpoint}")
c.send_message(QueueUrl="{url}", MessageBody="{{}}")
"""
STATIC = """
from typing import TypedDict
from taskhop.backends.sqs import SqsQueue
from taskhop.static_contracts import Producer, static_contract
class Greet(TypedDict):
    name: str
task = Producer(SqsQueue("{url}")).register(static_contract("greet", input=Greet, output=dict))
task.dispatch({{"name": "ada"}})
"""
SDK = """
from typing import TypedDict
from taskhop.backends.sqs import SqsQueue
from taskhop.sdk import create_app, static_contract
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
        "celery_send_task": celery_peer.COLD_START.format(
            host=endpoint.removeprefix("http://"), url=url
        ),
    }
    out = median_ms(scripts, rounds=rounds, env=env)
    out["static_producer_over_raw"] = out["static_producer_ms"] / out["raw_boto3_ms"]
    out["sdk_app_over_raw"] = out["sdk_app_ms"] / out["raw_boto3_ms"]
    celery = out["celery_send_task_ms"]
    out["static_producer_over_celery"] = out["static_producer_ms"] / celery
    out["sdk_app_over_celery"] = out["sdk_app_ms"] / celery
    return out


def run() -> dict[str, dict[str, float]]:
    with moto_server() as endpoint:
        return {"sqs_throughput": throughput(endpoint), "sqs_cold_start": cold_start(endpoint)}
