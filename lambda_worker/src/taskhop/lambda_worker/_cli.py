"""``taskhop worker --local``: the Lambda handler, fed by the local event source mapping.

Registered with the ``taskhop`` command through the ``taskhop.cli`` entry point group, so the
sdk never imports this package.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]

APP_HELP = "module:attribute of the App (default: $TASKHOP_APP)"
"""Optional in argparse, required when the command runs (``load_app`` says so)."""


def register(commands: Any) -> None:
    """Add the ``worker`` subcommand to the ``taskhop`` parser."""
    worker = commands.add_parser(
        "worker",
        help="run an app's worker locally, polling SQS as Lambda's event source mapping does",
    )
    worker.add_argument("--app", default=None, help=APP_HELP)
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
    dev.add_argument("--app", default=None, help=APP_HELP)
    dev.add_argument(
        "--idle-exit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this long with nothing to do",
    )
    dev.add_argument(
        "--port",
        type=int,
        default=None,
        metavar="N",
        help="the local AWS's port on 127.0.0.1 (default: $TASKHOP_DEV_PORT, else 5055;"
        " 0: any free port)",
    )
    dev.add_argument(
        "--state",
        type=Path,
        default=None,
        metavar="FILE",
        help="where queues and table are saved on stop and restored on start"
        " (default: .taskhop/dev/state.json)",
    )
    dev.add_argument("--fresh", action="store_true", help="start empty, ignoring the saved state")
    dev.add_argument(
        "--print-env",
        action="store_true",
        help='print the export lines a producer needs and exit: eval "$(taskhop dev --print-env)"',
    )
    dev.set_defaults(run=run_dev_command)
    register_dlq(commands)
    infra = commands.add_parser("infra", help="deployment parameters that follow from an app")
    infra_commands = infra.add_subparsers(dest="infra_command", required=True)
    render = infra_commands.add_parser(
        "render", help="print the SAM template, or an app's SAM parameters or CDK context"
    )
    render.add_argument(
        "--app",
        help="module:attribute of the App (for sam and cdk-json, default $TASKHOP_APP; with"
        " template, the template with the app's events and triggers merged in)",
    )
    render.add_argument(
        "--format",
        choices=["sam", "cdk-json", "template"],
        default="sam",
        help="sam: parameter overrides; cdk-json: CDK context; template: the SAM template",
    )
    render.set_defaults(run=infra_render)


def infra_render(args: argparse.Namespace) -> int:
    """``taskhop infra render``: see ``taskhop.lambda_worker._infra``."""
    from taskhop.infra import GuardrailError, sam_template
    from taskhop.sdk import load_app

    from ._infra import merged_template_text, render

    if args.format == "template" and not args.app:  # only --app: $TASKHOP_APP is for the others
        sys.stdout.write(sam_template())
        return 0
    app_ref = args.app or os.environ.get("TASKHOP_APP")
    if not app_ref:
        raise SystemExit(
            "taskhop infra render: --app (or $TASKHOP_APP) is required for " + args.format
        )
    try:
        rendered = render(load_app(app_ref))
    except GuardrailError as exc:
        raise SystemExit(f"guardrail: {exc}") from None
    for note in rendered.get("notes", ()):  # deploy notes (SNS filter propagation, ...)
        print(f"note: {note}", file=sys.stderr)
    if args.format == "template":
        sys.stdout.write(merged_template_text(sam_template(), rendered))
    elif args.format == "sam":
        overrides = " ".join(f"{k}={v}" for k, v in rendered["parameters"].items())
        print(json.dumps({**rendered, "parameter_overrides": overrides}, indent=2))
    else:
        print(json.dumps({"context": {"taskhop": rendered}}, indent=2))
    return 0


def register_dlq(commands: Any) -> None:
    """Add ``dlq list`` and ``dlq redrive``."""
    dlq = commands.add_parser("dlq", help="look at and redrive a dead-letter queue")
    actions = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = actions.add_parser("list", help="show dead letters (job, task, why)")
    listing.add_argument("--dlq-url", default=os.environ.get("TASKHOP_DLQ_URL"))
    listing.add_argument("--max", type=int, default=100, help="show at most this many")
    listing.set_defaults(run=dlq_list)
    redrive = actions.add_parser("redrive", help="send dead letters back to the queue")
    redrive.add_argument("--dlq-url", default=os.environ.get("TASKHOP_DLQ_URL"))
    redrive.add_argument("--queue-url", default=os.environ.get("TASKHOP_QUEUE_URL"))
    redrive.add_argument("--task", help="only jobs of this task")
    redrive.add_argument(
        "--app",
        default=os.environ.get("TASKHOP_APP"),
        help="module:attribute of the App whose job store decides each letter (default:"
        " $TASKHOP_APP; without one, letters go back as attempt 1 of a stateless worker)",
    )
    redrive.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would happen to each letter and the totals; change nothing",
    )
    redrive.set_defaults(run=dlq_redrive)


def dlq_list(args: argparse.Namespace) -> int:
    """Print the dead letters without taking them off the queue."""
    from ._dlq import peek

    for letter in peek(_sqs(), _required(args.dlq_url, "--dlq-url"), limit=args.max):
        print(json.dumps(letter))
    return 0


def dlq_redrive(args: argparse.Namespace) -> int:
    """Send dead letters (of one task, if given) back to run again; see ``_dlq.redrive``.

    Each letter's decision is a JSON line (on stdout for ``--dry-run``, else on stderr as
    progress); the last stdout line is the totals: ``redriven`` (or ``would_redrive``) and
    the count of each decision.
    """
    from taskhop.sdk import load_app

    from ._dlq import redrive

    store = None if not args.app else load_app(args.app).store
    out = sys.stdout if args.dry_run else sys.stderr

    def report(letter: dict[str, Any]) -> None:
        print(json.dumps(letter), file=out, flush=True)

    counts = redrive(
        _sqs(),
        _required(args.dlq_url, "--dlq-url"),
        _required(args.queue_url, "--queue-url"),
        task=args.task,
        dry_run=args.dry_run,
        store=store,
        report=report,
    )
    queued = counts.get("rerun", 0)
    totals: dict[str, Any] = {"would_redrive" if args.dry_run else "redriven": queued}
    print(json.dumps(totals | dict(sorted(counts.items()))))
    return 0


def _sqs() -> Any:
    import boto3

    factory: Any = boto3
    return factory.client("sqs")


def _required(value: str | None, option: str) -> str:
    if not value:
        raise SystemExit(f"{option} is required (or set its environment variable)")
    return value


def run_dev_command(args: argparse.Namespace) -> int:
    """``taskhop dev``: see ``taskhop.lambda_worker._dev``."""
    from ._dev import STATE_FILE, dev_env, planned_stack, run_dev

    if args.print_env:
        stack = planned_stack(port=args.port)
        if stack.endpoint.endswith(":0"):
            print(
                "taskhop dev: --print-env needs the port the stack listens on, not 0 (any free"
                " port): pass --port N or set $TASKHOP_DEV_PORT as the stack was started",
                file=sys.stderr,
            )
            return 2
        other = os.environ.get("AWS_ENDPOINT_URL", "").rstrip("/")
        if other and other != stack.endpoint:  # dev_stack would use that endpoint instead
            print(
                f"taskhop dev: --print-env knows only the stack it starts, not $AWS_ENDPOINT_URL"
                f"={other}: use the export lines `taskhop dev` printed when it started",
                file=sys.stderr,
            )
            return 2
        sys.stdout.write(dev_env(stack, args.app or os.environ.get("TASKHOP_APP")))
        return 0
    return run_dev(
        args.app,
        idle_exit=args.idle_exit,
        port=args.port,
        fresh=args.fresh,
        state_file=args.state or STATE_FILE,
    )


def run_worker(args: argparse.Namespace) -> int:
    """Poll until SIGTERM/SIGINT (the batch in flight finishes first)."""
    import boto3
    from taskhop.sdk import load_app

    from ._handler import make_handler
    from ._local import LocalEventSourceMapping

    if not args.queue_url:  # a usage error (2), as a missing --app is
        print("taskhop worker: --queue-url (or $TASKHOP_QUEUE_URL) is required", file=sys.stderr)
        return 2
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
    app_ref = args.app or os.environ.get("TASKHOP_APP")
    print(f"taskhop worker: polling {args.queue_url} for {app_ref}", file=sys.stderr, flush=True)
    esm.run(idle_exit=args.idle_exit)
    print(f"taskhop worker: stopped after {esm.invocations} batches", file=sys.stderr, flush=True)
    app.close()
    return 0
