"""The ``taskhop`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Any

from ._app import AppLoadError, load_app
from ._context import JobContext
from ._converter import unstructure
from ._errors import ErrorInfo, UnknownTaskError, ValidationError
from ._logging import configure_logging
from ._registered import MigrationError

__all__ = ["configure_logging", "load_app", "main"]


def _refuse_constant(literal: str) -> object:
    raise ValueError(f"{literal} is not JSON (the protocol allows finite numbers only)")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value - value != 0.0:  # nan and +-inf: 1e400 overflows to inf
        raise ValueError(f"{literal[:24]} is beyond a double's range: not a JSON number")
    return value


_INPUT_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


APP_OPTION: dict[str, Any] = {
    "default": None,
    "help": "module:attribute of the App (default: $TASKHOP_APP)",
}
"""``--app`` for every command that loads an app: optional here, required when it runs.

Read at run time by ``load_app``, so ``--help`` says the same whatever the environment holds.
"""

EXIT_CODES = """exit codes:
  0  done (the handler's output is printed)
  1  the handler raised (or timed out); jobs status: no record of the job
  2  usage or bad input: no --app and no $TASKHOP_APP, a malformed --app, --input not JSON,
     an unknown task, an input that cannot be migrated or is invalid
  3  the app did not load: its module raised while importing (a missing environment
     variable, say), or it has no such attribute, or that is not an App"""
"""The exit-code table, shown in ``taskhop run --help``."""


def _tasks(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    rows = [
        {**bound.contract.to_dict(), "implemented": bound.implemented}
        for bound in sorted(app, key=lambda b: b.name)
    ]
    print(json.dumps(rows, indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    """Run one handler on JSON input, as the worker runs a job: migrated, validated, timed."""
    app = load_app(args.app)
    try:
        raw = _INPUT_DECODER.decode(args.input)
    except ValueError as exc:
        return _report(args, 2, {"type": "InvalidJSON", "message": f"--input is not JSON: {exc}"})
    entry = app.implementation(args.name)
    if entry is None:
        error = UnknownTaskError(args.name, app.implemented_names())
        return _report(args, 2, {"type": "UnknownTaskError", "message": str(error)})
    envelope = app.envelope(args.name, raw)
    version = envelope.version if args.input_version is None else args.input_version
    try:
        data = entry.validate(envelope.input, version)
    except MigrationError as exc:
        return _report(args, 2, exc.info.to_dict())
    except ValidationError as exc:
        return _report(args, 2, ErrorInfo("ValidationError", exc.summary, exc.errors).to_dict())
    ctx = JobContext(
        job_id=envelope.id,
        task=envelope.task,
        max_attempts=entry.policy.attempts,
        deadline=None if entry.timeout is None else time.monotonic() + entry.timeout,
        envelope=envelope,
    )
    try:
        if entry.implementation.is_async:
            value = asyncio.run(entry.acall(data, ctx, entry.timeout))
        else:
            value = entry.call(data, ctx, entry.timeout)
        result = unstructure(app.converter, value, entry.contract.output, path="output")
    except Exception as exc:
        return _report(args, 1, {"type": type(exc).__name__, "message": str(exc)})
    if args.json:
        print(json.dumps({"ok": True, "result": result}))
    else:
        print(json.dumps(result, indent=2))
    return 0


def _report(args: argparse.Namespace, code: int, error: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps({"ok": False, "error": error}))
    else:
        print(f"{error['type']}: {error['message']}", file=sys.stderr)
        for field in error.get("fields", []):
            print(f"  {field['path']}: {field['message']}", file=sys.stderr)
    return code


def _contracts_export(args: argparse.Namespace) -> int:
    """Print every contract with JSON Schemas for its input and output."""
    from ._schema import json_schema

    app = load_app(args.app)
    rows = [
        {
            "name": bound.name,
            "version": bound.contract.version,
            "input": json_schema(bound.contract.input, title=f"{bound.name} input"),
            "output": json_schema(bound.contract.output, title=f"{bound.name} output"),
        }
        for bound in sorted(app, key=lambda b: b.name)
    ]
    print(json.dumps(rows, indent=2))
    return 0


def _job_status(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    if app.store is None:
        raise SystemExit(f"--app {args.app}: the app has no job store to read")
    record = app.store.get(args.job_id)
    if record is None:
        print(f"no record of job {args.job_id}: queued, or unknown", file=sys.stderr)
        return 1
    print(json.dumps(record.to_dict(), indent=2))
    return 0


def _job_retry(args: argparse.Namespace) -> int:
    """``taskhop jobs retry ID``: ``App.retry``, answered as one JSON object."""
    from ._errors import TaskhopError

    app = load_app(args.app)
    try:
        envelope = app.retry_envelope(args.job_id)
    except TaskhopError as exc:
        answer = {"job_id": args.job_id, "retried": False, "why": str(exc)}
        print(json.dumps(answer | ({"dry_run": True} if args.dry_run else {})))
        return 1
    if args.dry_run:
        print(
            json.dumps(
                {
                    "job_id": args.job_id,
                    "task": envelope.task,
                    "retried": False,
                    "dry_run": True,
                    "would": "send the job's envelope again (attempt 1, a new restart token)",
                }
            )
        )
        return 0
    app.transport.send(envelope)
    print(json.dumps({"job_id": args.job_id, "retried": True, "restart": envelope.restart}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taskhop`` console script."""
    parser = argparse.ArgumentParser(
        prog="taskhop", description="Typed tasks for serverless Python."
    )
    with contextlib.suppress(PackageNotFoundError):  # running from a bare source tree
        parser.add_argument("--version", action="version", version=version("taskhop"))
    commands = parser.add_subparsers(dest="command", required=True)
    tasks = commands.add_parser("tasks", help="list an app's tasks and their contracts as JSON")
    tasks.add_argument("--app", **APP_OPTION)
    tasks.set_defaults(run=_tasks)
    run = commands.add_parser(
        "run",
        help="run a task's handler here on JSON input, validated as the worker would",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("name", help="the task name")
    run.add_argument("--input", required=True, help="the input as JSON")
    run.add_argument(
        "--input-version",
        type=int,
        default=None,
        metavar="N",
        help="the contract version the input is for; older inputs are migrated"
        " (default: the contract's)",
    )
    run.add_argument("--app", **APP_OPTION)
    run.add_argument("--json", action="store_true", help="answer as one JSON object (for CI)")
    run.set_defaults(run=_run)
    contracts = commands.add_parser("contracts", help="contracts for other languages")
    contract_commands = contracts.add_subparsers(dest="contracts_command", required=True)
    export = contract_commands.add_parser(
        "export", help="print JSON Schema for every contract's input and output"
    )
    export.add_argument("--app", **APP_OPTION)
    export.set_defaults(run=_contracts_export)
    jobs = commands.add_parser("jobs", help="read job records from the app's store")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    status = job_commands.add_parser("status", help="print a job's record as JSON")
    status.add_argument("job_id")
    status.add_argument("--app", **APP_OPTION)
    status.set_defaults(run=_job_status)
    retry = job_commands.add_parser(
        "retry", help="run a failed or rejected job again, by id (same job, a new run)"
    )
    retry.add_argument("job_id")
    retry.add_argument("--app", **APP_OPTION)
    retry.add_argument("--dry-run", action="store_true", help="say what would happen, send nothing")
    retry.set_defaults(run=_job_retry)
    for plugin in entry_points(group="taskhop.cli"):  # e.g. `worker`, from lambda_worker
        plugin.load()(commands)
    args = parser.parse_args(argv)
    configure_logging()
    sys.path.insert(0, "")
    try:
        return int(args.run(args))
    except AppLoadError as exc:
        return _app_failed(args, exc)


def _app_failed(args: argparse.Namespace, exc: AppLoadError) -> int:
    """Answer an app that did not load: JSON under ``--json``, else the user's traceback."""
    if getattr(args, "json", False):
        error = {"type": exc.error_type, "message": exc.message, "app": exc.spec}
        print(json.dumps({"ok": False, "error": error}))
        return exc.exit_code
    cause = exc.__cause__
    if cause is not None:
        shown = traceback.TracebackException.from_exception(cause)
        shown.stack = traceback.StackSummary.from_list(
            [frame for frame in shown.stack if not _import_machinery(frame.filename)]
        )
        print("".join(shown.format()), end="", file=sys.stderr)
    print(f"taskhop: {exc.message}", file=sys.stderr)
    return exc.exit_code


def _import_machinery(filename: str) -> bool:
    """Whether a frame is import machinery (importlib, ``load_app``), not the user's code."""
    return (
        filename.startswith("<frozen importlib")
        or filename == importlib.__file__
        or filename.endswith(os.path.join("taskhop", "sdk", "_app.py"))
    )
