"""``static_contracts`` runs on the standard library alone (DESIGN.md's dependency rule).

A producer that ships only this package must not pull a third-party import, directly or
through another package: one test imports and uses it in a fresh interpreter and lists every
non-stdlib module that appeared; another reads every source file's imports.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "static_contracts" / "src" / "taskhop" / "static_contracts"

# Runs in a fresh interpreter. Modules present before the first import of static_contracts
# come from interpreter start-up (site, and .pth hooks such as setuptools' _distutils_hack),
# not from the package, so they are left out.
SCRIPT = """
import sys
startup = set(sys.modules)

import json
from dataclasses import dataclass
from typing import TypedDict

import taskhop.static_contracts
from taskhop.static_contracts import Envelope, Producer, static_contract


class Greet(TypedDict):
    name: str


@dataclass
class Greeted:
    text: str


class ListTransport:
    def __init__(self):
        self.bodies = []

    def send(self, envelope):
        self.bodies.append(envelope.encode())

    def send_many(self, envelopes):
        for envelope in envelopes:
            self.send(envelope)

    def close(self):
        pass


transport = ListTransport()
greet = Producer(transport).register(static_contract("greet", input=Greet, output=Greeted))
job_id = greet.dispatch({"name": "Ada"}, delay="5s", trace={"traceparent": "t"})
greet.dispatch_many([{"name": "Grace"}])
assert Envelope.decode(transport.bodies[0]).id == job_id
Envelope(task="greet", input={"name": "Lin"}).encode()

foreign = sorted(
    {
        name.split(".")[0]
        for name in set(sys.modules) - startup
        if name.split(".")[0] not in sys.stdlib_module_names
        and not name.startswith("taskhop.static_contracts")
    }
    - {"taskhop", "__main__"}
)
print(json.dumps(foreign))
"""


def test_static_contracts_loads_no_third_party_module_in_a_fresh_interpreter() -> None:
    """Importing static_contracts, declaring a contract and sending a job load stdlib only."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    foreign = json.loads(done.stdout.strip().splitlines()[-1])
    assert foreign == [], f"static_contracts pulled in non-stdlib modules: {foreign}"


def test_static_contracts_leaves_heavy_stdlib_modules_unloaded() -> None:
    """A producer's cold start: uuid (and the platform module it imports) is ~5 ms."""
    code = (
        "import sys, taskhop.static_contracts;"
        " print(sorted({'uuid', 'platform'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "[]"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every non-relative import in a file, nested ones too."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_static_contracts_sources_import_only_stdlib_or_relative_modules(path: Path) -> None:
    """Every import in static_contracts names a stdlib module or is relative to the package."""
    bad = [
        f"{path.relative_to(ROOT)}:{line}: import {module}"
        for line, module in imported_modules(path)
        if module.split(".")[0] not in sys.stdlib_module_names
    ]
    assert not bad, "static_contracts must import only the standard library:\n" + "\n".join(bad)


def test_the_source_scan_sees_the_whole_package() -> None:
    """The AST scan covers every module, so a new file cannot slip past it."""
    assert {p.name for p in SOURCES} >= {"__init__.py", "_envelope.py", "_json.py", "_ids.py"}
    assert any(module == "json" for _, module in imported_modules(PACKAGE / "_envelope.py"))
