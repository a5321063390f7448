"""``taskhop dev``: a whole worker stack on this machine, with no AWS account.

Starts a moto server on 127.0.0.1 (or uses ``AWS_ENDPOINT_URL`` when it is set), creates the
queue, its DLQ (redrive after 20 receives, the templates' backstop) and the job table,
exports where they are, imports the app, and runs the local event source mapping until
SIGTERM/SIGINT.

The app module reads its resources from the environment this sets::

    TASKHOP_QUEUE_URL, TASKHOP_DLQ_URL, TASKHOP_TABLE, AWS_ENDPOINT_URL
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from taskhop.infra import DEFAULT_RECEIVES

__all__ = ["DevStack", "dev_stack"]

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "taskhop-dev",
    "AWS_SECRET_ACCESS_KEY": "taskhop-dev",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class DevStack:
    """Where the dev stack's resources are."""

    endpoint: str
    queue_url: str
    dlq_url: str
    table: str


@contextmanager
def dev_stack(
    name: str = "taskhop-dev", *, max_receive_count: int = DEFAULT_RECEIVES
) -> Generator[DevStack]:
    """Start (or reuse) an endpoint, create the resources, export them; stop what we started."""
    import boto3

    server = None
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        from moto.server import ThreadedMotoServer

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        endpoint = f"http://127.0.0.1:{port}"
        for key, value in FAKE_CREDENTIALS.items():
            os.environ.setdefault(key, value)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        factory: Any = boto3
        sqs = factory.client("sqs")
        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}
        queue_url = sqs.create_queue(
            QueueName=name,
            Attributes={"RedrivePolicy": json.dumps(redrive), "VisibilityTimeout": "30"},
        )["QueueUrl"]
        from taskhop.backends.dynamodb import DynamoStore

        DynamoStore(name).create_table()
        stack = DevStack(endpoint=endpoint, queue_url=queue_url, dlq_url=dlq_url, table=name)
        os.environ.update(TASKHOP_QUEUE_URL=queue_url, TASKHOP_DLQ_URL=dlq_url, TASKHOP_TABLE=name)
        yield stack
    finally:
        if server is not None:
            server.stop()


def run_dev(app_spec: str, *, idle_exit: float | None = None) -> int:
    """Bring the stack up, print where it is (one JSON line on stdout), run the worker."""
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from taskhop.sdk import load_app

    from ._handler import make_handler
    from ._local import LocalEventSourceMapping

    with dev_stack() as stack:
        print(json.dumps({"taskhop_dev": asdict(stack)}), flush=True)
        print(
            f"taskhop dev: AWS on {stack.endpoint}, queue {stack.queue_url}, table {stack.table}",
            file=sys.stderr,
            flush=True,
        )
        import boto3

        factory: Any = boto3
        sqs = factory.client("sqs")
        app = load_app(app_spec)
        handler = make_handler(app, dlq_url=stack.dlq_url, sqs_client=sqs)
        esm = LocalEventSourceMapping(handler, stack.queue_url, sqs, wait_time=1)
        esm.run(idle_exit=idle_exit)
        app.close()
        print(f"taskhop dev: stopped after {esm.invocations} batches", file=sys.stderr, flush=True)
    return 0
