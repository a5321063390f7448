"""Layers above the sdk use only its public door: no ``taskhop.sdk._private`` import.

``lambda_worker`` and ``backends`` ship as their own distributions; reaching into the sdk's
private modules would tie them to one sdk build's internals (STYLE.md, "one public door").
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["lambda_worker", "backends"]


def private_sdk_imports(source: str) -> list[str]:
    """Every import in ``source`` that names a private sdk module or a private sdk name."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if _private(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _private(node.module):
                found.append(node.module)
            elif node.module == "taskhop.sdk":
                found += [f"taskhop.sdk.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def _private(module: str) -> bool:
    parts = module.split(".")
    return parts[:2] == ["taskhop", "sdk"] and any(p.startswith("_") for p in parts[2:])


def test_the_scan_finds_every_kind_of_private_import() -> None:
    """``import``, ``from ... import`` and a private name from the public module all count."""
    source = (
        "import taskhop.sdk._cli\n"
        "from taskhop.sdk._converter import structure\n"
        "from taskhop.sdk.testing._plugin import x\n"
        "from taskhop.sdk import _worker, App\n"
        "from taskhop.sdk import load_app\n"
        "from taskhop.sdk.memory import MemoryQueue\n"
        "def f():\n    from taskhop.sdk._app import App\n"
    )
    assert private_sdk_imports(source) == [
        "taskhop.sdk._cli",
        "taskhop.sdk._converter",
        "taskhop.sdk.testing._plugin",
        "taskhop.sdk._worker",
        "taskhop.sdk._app",
    ]


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_above_the_sdk_import_only_public_names(layer: str) -> None:
    """No module of the layer imports a private sdk module, even lazily inside a function."""
    sources = sorted((ROOT / layer / "src").rglob("*.py"))
    assert sources, layer
    offenders = {
        str(path.relative_to(ROOT)): names
        for path in sources
        if (names := private_sdk_imports(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}
