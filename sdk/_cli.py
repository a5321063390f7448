"""The ``taskhop`` command line."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, entry_points, version

from ._app import App

__all__ = ["load_app", "main"]


def load_app(spec: str) -> App:
    """Import ``module:attribute`` and return the ``App`` it names."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"--app: expected 'module:attribute', got {spec!r}")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"--app {spec}: {exc}") from None
    if not isinstance(obj, App):
        raise SystemExit(f"--app {spec}: expected an App, got {type(obj).__name__}")
    return obj


def _tasks(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    rows = [
        {**bound.contract.to_dict(), "implemented": bound.implemented}
        for bound in sorted(app, key=lambda b: b.name)
    ]
    print(json.dumps(rows, indent=2))
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
    tasks.add_argument("--app", required=True, help="module:attribute of the App")
    tasks.set_defaults(run=_tasks)
    for plugin in entry_points(group="taskhop.cli"):  # e.g. `worker`, from lambda_worker
        plugin.load()(commands)
    args = parser.parse_args(argv)
    sys.path.insert(0, "")
    return int(args.run(args))
