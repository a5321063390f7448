"""The error tree drawn in ``taskhop.sdk._errors`` is the real one, complete and in place."""

from __future__ import annotations

import importlib
import re

import pytest
from taskhop.static_contracts import TaskhopError

PACKAGES = ["static_contracts", "sdk", "backends", "lambda_worker", "infra"]
PUBLIC_MODULES = [
    "taskhop.static_contracts",
    "taskhop.sdk",
    "taskhop.backends.sqs",
    "taskhop.backends.sqs_http",
    "taskhop.backends.dynamodb",
    "taskhop.backends.s3",
    "taskhop.backends.http",
    "taskhop.backends.api",
    "taskhop.lambda_worker",
    "taskhop.infra",
]
# One drawn line: the tree prefix, the class, its package, then what it is.
LINE = re.compile(r"^(?P<prefix>[│├└─ ]*)(?P<name>[A-Z]\w+)\s+(?P<package>[a-z_]+)\s")


def drawn_tree() -> list[tuple[int, str, str]]:
    """(depth, class name, package) for each line of the drawing, in order."""
    doc = importlib.import_module("taskhop.sdk._errors").__doc__ or ""
    block = doc.split("::", 1)[1].split("\n\n")[1]
    rows = []
    for line in block.splitlines():
        match = LINE.match(line.removeprefix("    "))
        assert match, f"not a tree line: {line!r}"
        rows.append((len(match["prefix"]) // 4, match["name"], match["package"]))
    return rows


def every_error() -> dict[str, type[BaseException]]:
    """Every public ``TaskhopError`` subclass defined by any taskhop package."""
    for name in PUBLIC_MODULES:
        importlib.import_module(name)
    found: dict[str, type[BaseException]] = {}
    pending: list[type[BaseException]] = [TaskhopError]
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith("taskhop.") and not cls.__name__.startswith("_"):
            found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def test_the_tree_names_every_error_once() -> None:
    """Every public TaskhopError subclass in any package appears in the drawing, once."""
    names = [name for _, name, _ in drawn_tree()]
    assert sorted(names) == sorted(every_error())


@pytest.mark.parametrize("row", drawn_tree(), ids=lambda row: row[1])
def test_each_error_sits_under_its_drawn_parent_in_its_drawn_package(
    row: tuple[int, str, str],
) -> None:
    """A drawn class's module is in the package the drawing names; its parent is the one above."""
    rows = drawn_tree()
    depth, name, package = row
    assert package in PACKAGES
    errors = every_error()
    cls = errors[name]
    assert cls.__module__.startswith(f"taskhop.{package}"), cls.__module__
    index = rows.index(row)
    parents = [r for r in rows[:index] if r[0] == depth - 1]
    if depth == 0:
        assert cls is TaskhopError
    else:
        assert parents, name
        assert errors[parents[-1][1]] in cls.__bases__, (name, parents[-1][1])
