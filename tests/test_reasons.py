"""``Reason`` is the one vocabulary of reasons: the sources, the errors and the docs agree.

A reason is written on the wire (the ``taskhop-reason`` SQS attribute, an HTTP error body) and
read by people matching dead letters, so a new spelling that slips in through a string literal
is a silent protocol change. These tests scan every package's sources for the literals that can
become a reason and hold them, and the table in ``docs/protocol.md``, to the enum.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import taskhop.sdk
from taskhop.static_contracts import (
    Envelope,
    EnvelopeError,
    Reason,
    SignatureError,
    Verifier,
    signed_headers,
)

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(ROOT.glob("*/src/taskhop/**/*.py"))

# Human-readable fallbacks that ``taskhop dlq`` shows for a dead letter without a
# ``taskhop-reason`` attribute; they are not reasons taskhop writes, and wait for the
# lambda_worker owner to decide whether they become ``Reason`` members. Each must still be
# found where it is listed (see ``test_every_allowed_literal_is_still_there``).
NOT_YET_REASONS = {
    "redriven by the queue": "lambda_worker/src/taskhop/lambda_worker/_dlq.py",
    "not a taskhop job": "lambda_worker/src/taskhop/lambda_worker/_dlq.py",
}


def literal_values(node: ast.expr) -> Iterator[str]:
    """The string literals ``node`` can evaluate to: itself, or a branch of ``x if c else y`` /
    ``a or b``, or an element of a tuple, list or set (the right side of ``in``).

    A literal passed to a call inside the expression (``d.get("key")``) is not a value of it.
    """
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from literal_values(node.body)
        yield from literal_values(node.orelse)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            yield from literal_values(value)
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        for element in node.elts:
            yield from literal_values(element)


def names_reason(node: ast.expr) -> bool:
    """``reason`` or ``<anything>.reason``."""
    return (isinstance(node, ast.Name) and node.id == "reason") or (
        isinstance(node, ast.Attribute) and node.attr == "reason"
    )


def reason_literals(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, literal) for each string literal that becomes or is compared with a reason.

    Four shapes: ``f(reason="x")``, ``reason = "x"`` (also ``self.reason = ...``),
    ``{"reason": "x"}`` and ``x.reason == "x"`` (any comparison, either side).
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "reason":
            values = list(literal_values(node.value))
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            given = node.value
            if given is None or not any(names_reason(t) for t in targets):
                continue
            values = list(literal_values(given))
        elif isinstance(node, ast.Dict):
            values = [
                v
                for key, value in zip(node.keys, node.values, strict=True)
                if isinstance(key, ast.Constant) and key.value == "reason"
                for v in literal_values(value)
            ]
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if not any(names_reason(side) for side in sides):
                continue
            values = [v for side in sides for v in literal_values(side)]
        else:
            continue
        for value in values:
            yield getattr(node, "lineno", 0), value


def all_reason_literals() -> list[tuple[str, int, str]]:
    """(file, line, literal) across every package's sources."""
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(ROOT).as_posix()
        found += [(rel, line, value) for line, value in reason_literals(tree)]
    return found


def test_the_scan_reads_every_package() -> None:
    """The scan covers the five packages' sources (a moved tree must not empty it)."""
    packages = {path.relative_to(ROOT).parts[0] for path in SOURCES}
    assert packages == {"static_contracts", "sdk", "backends", "lambda_worker", "infra"}


def test_the_scan_finds_each_shape_of_reason_literal() -> None:
    """Keyword, assignment, dict entry and comparison literals are all found; call args not."""
    source = (
        'f(reason="a")\n'
        'reason = x.reason if x else "b"\n'
        'self.reason = "c"\n'
        'd = {"reason": y or "d", "other": "no"}\n'
        'if e.reason == "e" or "f" != reason or g.reason in ("g", "h"): pass\n'
        'reason = d.get("not-a-reason")\n'
    )
    found = [value for _, value in reason_literals(ast.parse(source))]
    assert sorted(found) == ["a", "b", "c", "d", "e", "f", "g", "h"]


def test_every_reason_literal_in_the_sources_is_a_reason_member() -> None:
    """No package passes, assigns or compares a reason string that ``Reason`` does not list."""
    members = {reason.value for reason in Reason}
    strays = [
        f"{path}:{line}: {value!r}"
        for path, line, value in all_reason_literals()
        if value not in members and NOT_YET_REASONS.get(value) != path
    ]
    assert not strays, "reason literals that are not Reason members:\n" + "\n".join(strays)


def test_every_allowed_literal_is_still_there() -> None:
    """The allowance for literals that are not reasons shrinks as they are replaced."""
    found = {(path, value) for path, _, value in all_reason_literals()}
    for value, path in NOT_YET_REASONS.items():
        assert (path, value) in found, f"{value!r} is gone from {path}: drop it from the list"


# -- the documented table -------------------------------------------------------------------


ROW = re.compile(r"^\| `(?P<value>[^`]+)` \| `Reason\.(?P<name>\w+)` \|(?P<rest>.*)\|$")


def documented_reasons() -> list[tuple[str, str, str]]:
    """(value, member name, meaning) for each row of the table under ``## Reasons``."""
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    assert "\n## Reasons\n" in text, "docs/protocol.md has no '## Reasons' section"
    section = text.split("\n## Reasons\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            rows.append((match["value"], match["name"], match["rest"].strip()))
    return rows


def test_the_protocol_table_lists_exactly_the_reasons() -> None:
    """docs/protocol.md has one row per Reason member, value and name as in the enum."""
    rows = documented_reasons()
    assert [(value, name) for value, name, _ in rows] == [(r.value, r.name) for r in Reason]
    assert all(meaning.strip(" |") for _, _, meaning in rows)


# -- the members are what the errors carry --------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff", Reason.NOT_JSON),
        (b"[]", Reason.NOT_OBJECT),
        (b"{}", Reason.NOT_ENVELOPE),
        (b'{"taskhop": 2}', Reason.UNSUPPORTED_VERSION),
        (b'{"taskhop": 1}', Reason.INVALID_FIELD),
    ],
)
def test_envelope_errors_carry_reason_members(body: bytes, reason: Reason) -> None:
    """A decode failure's ``reason`` is the ``Reason`` member itself, not a bare string."""
    with pytest.raises(EnvelopeError) as caught:
        Envelope.decode(body)
    assert caught.value.reason is reason


def test_signature_errors_carry_reason_members() -> None:
    """A refused signature's ``reason`` is a ``Reason`` member that equals its wire value."""
    verifier = Verifier(["s"])
    with pytest.raises(SignatureError) as caught:
        verifier.verify(signed_headers("wrong", b"{}"), b"{}")
    assert caught.value.reason is Reason.SIGNATURE_INVALID
    assert caught.value.reason == "invalid"


def test_the_sdk_exports_the_same_enum() -> None:
    """``taskhop.sdk.Reason`` is ``taskhop.static_contracts.Reason``."""
    assert taskhop.sdk.Reason is Reason
