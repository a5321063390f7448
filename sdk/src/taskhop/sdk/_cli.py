"""The ``taskhop`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import TYPE_CHECKING, Any

from ._app import AppLoadError, load_app
from ._context import JobContext
from ._converter import unstructure
from ._errors import ErrorInfo, UnknownTaskError, ValidationError
from ._logging import configure_logging
from ._registered import MigrationError

if TYPE_CHECKING:
    from .workflows import StepView, WorkflowEngine

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
    """Print every contract with JSON Schemas for its input and output, then every event."""
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
    subscriptions = app.events.subscriptions
    rows += [
        {
            "event": event.name,
            "kind": event.to_dict()["kind"],
            "key": event.key,
            "payload": json_schema(event.payload, title=f"{event.name} payload"),
            "subscribers": sorted(s.task for s in subscriptions.values() if s.takes(event.name)),
        }
        for event in sorted(app.events.registered.values(), key=lambda e: e.name)
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


def _utc_time(text: str) -> datetime:
    """An ISO 8601 time; one without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _events_republish(args: argparse.Namespace) -> int:
    """``taskhop events republish``: ``App.republish_outbox``, answered as one JSON object."""
    from ._errors import TaskhopError

    app = load_app(args.app)
    try:
        ids = app.republish_outbox(since=args.since)
    except TaskhopError as exc:
        raise SystemExit(f"--app {args.app}: {exc}") from None
    print(json.dumps({"republished": len(ids), "event_ids": ids}))
    return 0


def _workflows_of(args: argparse.Namespace) -> WorkflowEngine:
    """The loaded app's workflow engine; exits as ``jobs status`` does if its store keeps none."""
    from ._errors import TaskhopError
    from .workflows import engine_of

    engine = engine_of(load_app(args.app))
    try:
        engine.store  # noqa: B018  # raises if the app's store keeps no workflows
    except TaskhopError as exc:
        raise SystemExit(f"--app {args.app}: {exc}") from None
    return engine


def _workflow_status(args: argparse.Namespace) -> int:
    """``taskhop workflows status ID``: the workflow's status and its steps, as a tree or JSON."""
    from .workflows import WorkflowHandle

    handle: WorkflowHandle[Any] = WorkflowHandle(_workflows_of(args).app, args.workflow_id)
    doc = handle.document()
    if doc is None:
        print(f"no workflow {args.workflow_id}: never dispatched, or expired", file=sys.stderr)
        return 1
    steps = handle.steps()
    if args.json:
        fields = ("id", "status", "error", "created_at", "updated_at", "deadline")
        answer = {key: doc.get(key) for key in fields}
        print(json.dumps(answer | {"steps": [dataclasses.asdict(s) for s in steps]}, indent=2))
        return 0
    print(f"workflow {doc['id']}: {doc['status']}")
    error = doc.get("error")
    if error:
        print(f"  error: {error.get('type', 'Error')}: {error.get('message', '')}")
    print(
        f"  created {_when(doc.get('created_at'))}, updated {_when(doc.get('updated_at'))},"
        f" deadline {_when(doc.get('deadline'))}"
    )
    print(f"  step jobs: {doc['id']}.<node>")
    kinds = {node_id: node.get("kind", "task") for node_id, node in doc["nodes"].items()}
    for line in _step_tree(steps, kinds):
        print(line)
    return 0


def _step_tree(steps: Sequence[StepView], kinds: dict[str, str]) -> list[str]:
    """One line per step, indented by dependency depth: node, task, node state, job status.

    ``after:`` lists what a step waits for when the indentation alone does not say it (it
    waits for several steps, or for one that is not the line it hangs under). Only states
    and error types are shown, never an input or a result.
    """
    depth: dict[str, int] = {}
    for step in steps:  # declaration order: a step comes after the steps it waits for
        depth[step.node] = 1 + max((depth.get(dep, 0) for dep in step.after), default=-1)
    rows: list[tuple[str, str, str, str, str]] = []
    under: dict[int, str] = {}  # depth -> the last step shown there: what a line hangs under
    for step in steps:
        level = depth[step.node]
        parent = under.get(level - 1)
        under = {d: node for d, node in under.items() if d < level} | {level: step.node}
        kind = kinds.get(step.node, "task")
        notes: list[str] = []
        if list(step.after) != ([parent] if parent else []):
            notes.append(f"after: {', '.join(step.after)}")
        if step.error:
            notes.append(f"error: {step.error.get('type', 'Error')}")
        rows.append(
            (
                "  " * level + step.node,  # a graph's step name, or a chain's n0, n1, ...
                step.task if kind == "task" else f"{step.task} ({kind})",
                step.state,
                step.job_status or "-",
                "  ".join(notes),
            )
        )
    header = ("STEP", "TASK", "STATE", "JOB", "")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines: list[str] = []
    for row in [header, *rows]:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        lines.append(f"{line}  {row[4]}" if row[4] else line.rstrip())
    return lines


def _when(stamp: float | None) -> str:
    """A document's Unix time as RFC 3339 UTC (``none`` when absent)."""
    if stamp is None:
        return "none"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _workflow_cancel(args: argparse.Namespace) -> int:
    """``taskhop workflows cancel ID``: ``WorkflowHandle.cancel``, answered as one JSON object."""
    from .workflows import WorkflowHandle

    handle: WorkflowHandle[Any] = WorkflowHandle(_workflows_of(args).app, args.workflow_id)
    if handle.cancel(args.reason):
        print(json.dumps({"id": args.workflow_id, "cancelled": True}))
        return 0
    status = handle.status()
    why = "no such workflow" if status == "unknown" else f"it is already {status}"
    print(json.dumps({"id": args.workflow_id, "cancelled": False, "why": why}))
    return 1


def _workflow_sweep(args: argparse.Namespace) -> int:
    """``taskhop workflows sweep``: one pass of the sweeper (for a cron or EventBridge rule)."""
    report = _workflows_of(args).sweep(limit=args.limit)
    print(json.dumps(dataclasses.asdict(report)))
    return 0


def _at_least_one(literal: str) -> int:
    value = int(literal)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


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
    events = commands.add_parser("events", help="the app's events")
    event_commands = events.add_subparsers(dest="events_command", required=True)
    republish = event_commands.add_parser(
        "republish",
        help="publish again the events the outbox holds (what the stream relay gave up on)",
    )
    republish.add_argument("--app", **APP_OPTION)
    republish.add_argument(
        "--since",
        type=_utc_time,
        default=None,
        metavar="TIME",
        help="only events emitted at TIME or later (ISO 8601, e.g. 2026-12-03T08:00:00Z)",
    )
    republish.set_defaults(run=_events_republish)
    workflows = commands.add_parser(
        "workflows", help="read, cancel and repair workflows in the app's store"
    )
    workflow_commands = workflows.add_subparsers(dest="workflows_command", required=True)
    wf_status = workflow_commands.add_parser(
        "status", help="print a workflow's status and its steps (a tree, or JSON)"
    )
    wf_status.add_argument("workflow_id")
    wf_status.add_argument("--app", **APP_OPTION)
    wf_status.add_argument("--json", action="store_true", help="answer as one JSON object")
    wf_status.set_defaults(run=_workflow_status)
    wf_cancel = workflow_commands.add_parser(
        "cancel", help="cancel a running workflow: no later step starts"
    )
    wf_cancel.add_argument("workflow_id")
    wf_cancel.add_argument("--app", **APP_OPTION)
    wf_cancel.add_argument(
        "--reason",
        default="cancelled from the command line",
        metavar="TEXT",
        help="why, recorded as the workflow's error message",
    )
    wf_cancel.set_defaults(run=_workflow_cancel)
    sweep = workflow_commands.add_parser(
        "sweep",
        help="repair or end the workflows that are due, once (run it on a schedule)",
    )
    sweep.add_argument("--app", **APP_OPTION)
    sweep.add_argument(
        "--limit",
        type=_at_least_one,
        default=100,
        metavar="N",
        help="look at N due workflows at most (default: 100)",
    )
    sweep.set_defaults(run=_workflow_sweep)
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
