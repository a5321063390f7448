"""Celery as a peer producer: ``send_task`` through kombu's SQS transport to the moto server.

Celery is what most Python teams would reach for instead of taskhop, so the SQS benches in
``bench.aws`` run it beside taskhop on the same server, in the same interleaved rounds. The
broker URL carries the moto server's host and port, and ``is_secure`` False makes kombu
build its boto3 client with an http endpoint. Celery's message is its protocol 2 body, JSON
then base64 (kombu's SQS default): 1,276 bytes for ``{"name": "ada"}``, against 165 for
taskhop's envelope.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

__all__ = ["COLD_START", "send_task_runner"]

# A fresh interpreter's path to one sent task, as a Lambda producer's cold start would take.
# ``predefined_queues`` gives the queue's URL, as taskhop's producer is given one: without it
# kombu lists the account's queues when its channel opens.
COLD_START = """
from celery import Celery
app = Celery(broker="sqs://bench:bench@{host}")
app.conf.broker_transport_options = {{
    "region": "us-east-1", "is_secure": False,
    "predefined_queues": {{"celery": {{"url": "{url}"}}}},
}}
app.send_task("greet", kwargs={{"name": "ada"}})
"""


def send_task_runner(endpoint: str, n: int) -> Callable[[], int]:
    """A measurement: ``n`` ``send_task`` calls to a new queue, from one warm Celery app.

    Like taskhop's side, which reuses one boto3 client: the app's connection is opened and
    warmed by one send before any round. Without ``predefined_queues`` kombu makes each new
    queue itself on its first send (ListQueues, then CreateQueue) and shares one client;
    predefined queues would each get a client of their own, made on first use.
    """
    from celery import Celery

    app = Celery(broker=f"sqs://bench:bench@{endpoint.removeprefix('http://')}")
    app.conf.broker_transport_options = {"region": "us-east-1", "is_secure": False}
    app.send_task("greet", kwargs={"name": "warm-up"}, queue="celery-warm-up")
    queues = (f"celery-bench-{i}" for i in itertools.count())

    def run() -> int:
        queue = next(queues)
        for _ in range(n):
            app.send_task("greet", kwargs={"name": "ada"}, queue=queue)
        return n

    return run
