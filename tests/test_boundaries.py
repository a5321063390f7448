"""Package boundaries from DESIGN.md, enforced: who may import whom, and what loads when."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {"boto3", "botocore", "httpx", "moto"}


def loaded_after(code: str) -> set[str]:
    """Top-level module names imported by ``code`` in a fresh interpreter."""
    names = "sorted({m.split('.')[0] for m in sys.modules})"
    script = f"{code}\nimport sys, json\nprint(json.dumps({names}))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(module, at top level?) for every import in a file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, id(node) in top))
        elif isinstance(node, ast.ImportFrom) and node.level == 1:  # a sibling module
            package = path.parent.name
            found.append((f"{package}.{node.module or ''}".rstrip("."), id(node) in top))
    return found


def test_importing_sdk_loads_no_backend_and_no_aws_or_http_client() -> None:
    """``import sdk`` pays for attrs and cattrs only: no boto3, httpx or backend."""
    loaded = loaded_after("import sdk")
    assert not loaded & HEAVY
    assert "asyncio" not in loaded  # loaded on first async use: Lambda init does not pay for it
    assert "backends" not in loaded
    assert "lambda_worker" not in loaded


def test_the_embedded_default_loads_only_the_memory_backend() -> None:
    """``create_app()`` reaches taskhop.sdk.memory lazily and nothing heavier."""
    loaded = loaded_after("import sdk; taskhop.sdk.create_app().close()")
    assert "backends" in loaded
    assert not loaded & HEAVY


@pytest.mark.parametrize("path", sorted((ROOT / "sdk").rglob("*.py")), ids=lambda p: p.name)
def test_sdk_reaches_backends_only_lazily_from_create_app_and_testing(path: Path) -> None:
    """No sdk module imports a backend at import time (DESIGN.md's one upward reference)."""
    for module, top_level in imports_of(path):
        if module.split(".")[0] == "backends":
            assert not top_level, f"{path.name} imports {module} at module level"
            assert path.name in {"_app.py", "__init__.py"}, f"{path} reaches {module}"


@pytest.mark.parametrize(
    "path",
    [p for pkg in ("static_contracts", "sdk", "backends") for p in (ROOT / pkg).rglob("*.py")],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_nothing_imports_lambda_worker_or_infra(path: Path) -> None:
    """The runtime and the deployment code are leaves: no package depends on them."""
    for module, _ in imports_of(path):
        assert module.split(".")[0] not in {"lambda_worker", "infra"}, f"{path} imports {module}"


def test_backends_do_not_import_each_other() -> None:
    """Each backend imports no other backend (private ``taskhop.backends._x`` helpers are shared)."""
    backends = {p.stem for p in (ROOT / "backends").glob("*.py") if p.stem != "__init__"}
    assert {"memory", "sqs", "dynamodb", "s3"} <= backends
    for name in backends:
        for module, _ in imports_of(ROOT / "backends" / f"{name}.py"):
            parts = module.split(".")
            if parts[0] == "backends" and len(parts) > 1:
                assert parts[1] in {name, *{b for b in backends if b.startswith("_")}}, (
                    f"backends.{name} imports {module}"
                )


def test_a_lambda_worker_init_loads_only_what_it_runs() -> None:
    """The handler module's imports leave out asyncio, httpx and the local poller."""
    loaded = loaded_after("import lambda_worker, taskhop.backends.sqs, taskhop.backends.dynamodb")
    assert not loaded & {"asyncio", "httpx", "moto"}
    modules = loaded_after_full("import lambda_worker")
    assert "taskhop.lambda_worker._local" not in modules


def loaded_after_full(code: str) -> set[str]:
    """Every module name imported by ``code`` in a fresh interpreter."""
    script = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("taskhop.backends.sqs", {"httpx", "attrs", "cattrs", "sdk"}),
        ("taskhop.backends.dynamodb", {"httpx"}),
        ("taskhop.sdk.memory", {"boto3", "botocore", "httpx"}),
        ("taskhop.backends.http", {"boto3", "botocore", "attr", "attrs", "cattrs", "sdk"}),
        ("taskhop.backends.sqs_http", {"boto3", "botocore", "attr", "attrs", "cattrs", "sdk", "httpx"}),
        ("taskhop.backends.api", {"boto3", "botocore"}),
    ],
)
def test_each_backend_loads_only_what_it_needs(module: str, forbidden: set[str]) -> None:
    """The SQS transport is producer-side: no sdk, attrs or cattrs; none loads httpx."""
    loaded = loaded_after(f"import {module}")
    assert not loaded & forbidden
    assert not {m for m in loaded if m == "backends"} - {"backends"}
