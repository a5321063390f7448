"""The ``taskhop`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Any, TextIO

from ._app import load_app
from ._context import JobContext
from ._converter import unstructure
from ._errors import ErrorInfo, UnknownTaskError, ValidationError
from ._registered import MigrationError

__all__ = ["configure_logging", "load_app", "main"]

LOG_LEVEL_ENV = "TASKHOP_LOG_LEVEL"
"""Environment variable naming the ``taskhop`` loggers' level for the command line."""
_LOG_FIELDS = ("job_id", "task", "attempt", "reason", "message_id", "key_digest")
"""The ``extra`` fields taskhop's log records carry, shown after the message when present."""


class _Formatter(logging.Formatter):
    """``LEVEL logger: message`` plus the job fields a record carries (``job_id=...``)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [
            f"{name}={value}"
            for name in _LOG_FIELDS
            if (value := record.__dict__.get(name)) is not None
        ]
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # a traceback goes after the fields
        return f"{head} [{' '.join(fields)}]{newline}{rest}"


class _StderrUnlessConfigured(logging.StreamHandler[TextIO]):
    """Writes to stderr until the application configures logging itself.

    An app module may call ``logging.basicConfig()`` when ``--app`` loads it, after this
    handler is in place: from then on its handlers get taskhop's records (they propagate),
    and this one steps aside so no line is written twice.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def configure_logging(environ: Mapping[str, str] | None = None) -> None:
    """Show taskhop's own log lines on stderr when the command line runs.

    A library configures no logging, so without this an operator running
    ``taskhop worker --local`` would never see "polling failed" or a store outage. Nothing is
    added when logging is already set up (the root logger or ``taskhop`` has a handler).
    The level is ``$TASKHOP_LOG_LEVEL`` if set, else INFO: taskhop writes INFO only for
    unusual jobs (rejected, stale attempts), and a handler's own ``ctx.log.info`` lines are
    what someone running a worker or ``taskhop run`` on their machine wants to see.

    Raises:
        SystemExit: ``$TASKHOP_LOG_LEVEL`` is not a level name or number.

    """
    env = os.environ if environ is None else environ
    logger = logging.getLogger("taskhop")
    wanted = env.get(LOG_LEVEL_ENV, "").strip()
    if wanted:
        logger.setLevel(_level(wanted))
    configured = logging.getLogger().handlers or [
        h for h in logger.handlers if not isinstance(h, logging.NullHandler)
    ]
    if configured:
        return
    handler = _StderrUnlessConfigured(sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    if not wanted and logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def _level(text: str) -> int:
    if text.isdecimal() and text.isascii():
        return int(text)
    level = logging.getLevelNamesMapping().get(text.upper())
    if level is None:
        names = ", ".join(sorted(logging.getLevelNamesMapping(), key=logging.getLevelName))
        raise SystemExit(f"taskhop: ${LOG_LEVEL_ENV}={text!r} is not a log level ({names})")
    return level


def _refuse_constant(literal: str) -> object:
    raise ValueError(f"{literal} is not JSON (the protocol allows finite numbers only)")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value - value != 0.0:  # nan and +-inf: 1e400 overflows to inf
        raise ValueError(f"{literal[:24]} is beyond a double's range: not a JSON number")
    return value


_INPUT_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


APP_OPTION: dict[str, Any] = (
    {"default": os.environ["TASKHOP_APP"]} if os.environ.get("TASKHOP_APP") else {"required": True}
) | {"help": "module:attribute of the App (default: $TASKHOP_APP)"}


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
        "run", help="run a task's handler here on JSON input, validated as the worker would"
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
    for plugin in entry_points(group="taskhop.cli"):  # e.g. `worker`, from lambda_worker
        plugin.load()(commands)
    args = parser.parse_args(argv)
    configure_logging()
    sys.path.insert(0, "")
    return int(args.run(args))
