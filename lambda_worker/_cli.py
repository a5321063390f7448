"""``taskhop worker --local``: the Lambda handler, fed by the local event source mapping.

Registered with the ``taskhop`` command through the ``taskhop.cli`` entry point group, so the
sdk never imports this package.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add the ``worker`` subcommand to the ``taskhop`` parser."""
    worker = commands.add_parser(
        "worker",
        help="run an app's worker locally, polling SQS as Lambda's event source mapping does",
    )
    worker.add_argument("--app", required=True, help="module:attribute of the App")
    worker.add_argument(
        "--local",
        action="store_true",
        required=True,
        help="poll SQS from this machine (the only mode; on AWS, Lambda polls)",
    )
    worker.add_argument(
        "--queue-url",
        default=os.environ.get("TASKHOP_QUEUE_URL"),
        help="the queue to poll (default: $TASKHOP_QUEUE_URL)",
    )
    worker.add_argument(
        "--dlq-url",
        default=os.environ.get("TASKHOP_DLQ_URL"),
        help="send dead letters here explicitly (default: $TASKHOP_DLQ_URL)",
    )
    worker.add_argument("--batch-size", type=int, default=10)
    worker.add_argument("--batching-window", type=float, default=0.0, metavar="SECONDS")
    worker.add_argument(
        "--wait-time",
        type=int,
        default=20,
        metavar="SECONDS",
        help="long-poll time per receive (20 at most)",
    )
    worker.add_argument("--function-timeout", type=float, default=30.0, metavar="SECONDS")
    worker.add_argument(
        "--idle-exit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this long with nothing to do",
    )
    worker.set_defaults(run=run_worker)

    dev = commands.add_parser(
        "dev", help="start a local AWS (moto) with the queue, DLQ and table, and run the worker"
    )
    dev.add_argument("--app", required=True, help="module:attribute of the App")
    dev.add_argument(
        "--idle-exit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this long with nothing to do",
    )
    dev.set_defaults(run=run_dev_command)


def run_dev_command(args: argparse.Namespace) -> int:
    """``taskhop dev``: see ``lambda_worker._dev``."""
    from ._dev import run_dev

    return run_dev(args.app, idle_exit=args.idle_exit)


def run_worker(args: argparse.Namespace) -> int:
    """Poll until SIGTERM/SIGINT (the batch in flight finishes first)."""
    import boto3

    from sdk._cli import load_app

    from ._handler import make_handler
    from ._local import LocalEventSourceMapping

    if not args.queue_url:
        raise SystemExit("--queue-url (or TASKHOP_QUEUE_URL) is required")
    app = load_app(args.app)
    factory: Any = boto3
    sqs = factory.client("sqs")
    handler = make_handler(app, dlq_url=args.dlq_url, sqs_client=sqs)
    esm = LocalEventSourceMapping(
        handler,
        args.queue_url,
        sqs,
        batch_size=args.batch_size,
        batching_window=args.batching_window,
        wait_time=args.wait_time,
        function_timeout=args.function_timeout,
    )
    print(f"taskhop worker: polling {args.queue_url} for {args.app}", file=sys.stderr, flush=True)
    esm.run(idle_exit=args.idle_exit)
    print(f"taskhop worker: stopped after {esm.invocations} batches", file=sys.stderr, flush=True)
    app.close()
    return 0
