"""Edge producers: cold start to first dispatch, side by side in one run.

(a) static contract + ``HttpTransport`` to a loopback endpoint, against bare ``import httpx``
    plus one request to the same endpoint; goal <= 1.1x.
(b) static contract + ``SqsHttpQueue`` (no boto3) to the moto server, against (c) raw boto3
    ``send_message``; goal (b) <= 0.45x (c).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench._fresh import median_ms
from bench.aws import ENV, moto_server

SERVER = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b'{"job_id": "x"}'
        self.send_response(202)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
"""

BARE_HTTPX = """
import httpx
httpx.post("{url}", content=b'{{"taskhop":1}}')
"""
STATIC_HTTP = """
from typing import TypedDict
from taskhop.backends.http import HttpTransport
from taskhop.static_contracts import Producer, static_contract
class Greet(TypedDict):
    name: str
producer = Producer(HttpTransport("{url}", secret="s"))
task = producer.register(static_contract("greet", input=Greet, output=dict))
task.dispatch({{"name": "ada"}})
"""
STATIC_SQS_HTTP = """
from typing import TypedDict
from taskhop.backends.sqs_http import SqsHttpQueue
from taskhop.static_contracts import Producer, static_contract
class Greet(TypedDict):
    name: str
producer = Producer(SqsHttpQueue("{queue}"))
task = producer.register(static_contract("greet", input=Greet, output=dict))
task.dispatch({{"name": "ada"}})
"""
RAW_BOTO3 = """
import boto3
boto3.client("sqs", endpoint_url="{endpoint}").send_message(QueueUrl="{queue}", MessageBody="{{}}")
"""


@contextmanager
def loopback_endpoint() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SERVER.replace("PORT", str(port))])
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/jobs"
    finally:
        proc.terminate()
        proc.wait(10)


def run(rounds: int = 15) -> dict[str, float]:
    import boto3

    os.environ.update(ENV)
    with loopback_endpoint() as url, moto_server() as endpoint:
        queue = boto3.client("sqs", endpoint_url=endpoint).create_queue(QueueName="edge")[
            "QueueUrl"
        ]
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint}
        scripts = {
            "bare_httpx": BARE_HTTPX.format(url=url),
            "static_http": STATIC_HTTP.format(url=url),
            "static_sqs_http": STATIC_SQS_HTTP.format(queue=queue),
            "raw_boto3": RAW_BOTO3.format(endpoint=endpoint, queue=queue),
        }
        out = median_ms(scripts, rounds=rounds, env=env)
    out["static_http_over_bare_httpx"] = out["static_http_ms"] / out["bare_httpx_ms"]
    out["static_sqs_http_over_raw_boto3"] = out["static_sqs_http_ms"] / out["raw_boto3_ms"]
    return out
