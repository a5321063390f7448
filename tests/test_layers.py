"""The layers of DESIGN.md, enforced twice: by what each distribution declares, and by imports.

Each of the five folders is one distribution under the ``taskhop`` namespace. These tests read
every module's imports (AST) and each ``pyproject.toml``, and check that

- a module imports only the layers and third-party packages its distribution declares (for a
  backend module: the base requirements plus its own extra);
- every declared requirement is imported somewhere (nothing is declared "just in case");
- nothing points up (static_contracts < sdk < lambda_worker; backends beside the sdk);
- ``taskhop`` stays a PEP 420 namespace (no ``taskhop/__init__.py`` in any layer);
- in a fresh interpreter, each public module loads only what it needs.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("static_contracts", "sdk", "backends", "lambda_worker", "infra")
HEAVY = {"boto3", "botocore", "httpx", "moto"}

# Import name -> the distribution that provides it.
PROVIDER = {
    "attr": "attrs",
    "attrs": "attrs",
    "cattrs": "cattrs",
    "boto3": "boto3",
    "botocore": "boto3",
    "httpx": "httpx",
    "moto": "moto",
    "aws_cdk": "aws-cdk-lib",
    "constructs": "constructs",
    "pytest": "pytest",
    **{f"taskhop.{layer}": f"taskhop-{layer.replace('_', '-')}" for layer in LAYERS},
}

# Provided by the program that loads the module: the pytest plugin runs inside pytest.
HOSTED = {"sdk/testing/_plugin.py": {"pytest"}}

# Which extra of a layer a module may draw on, beside the base requirements.
MODULE_EXTRA = {
    "backends/sqs.py": "sqs",
    "backends/_aws.py": "sqs",  # boto3 helpers shared by the sqs, s3 and dynamodb modules
    "backends/s3.py": "s3",
    "backends/sns.py": "sns",
    "backends/sqs_http.py": "http",  # only when the caller passes its own httpx.Client
    "backends/dynamodb.py": "dynamodb",
    "backends/http.py": "http",
    "backends/_retry_after.py": "http",
    "backends/api.py": "api",
    "lambda_worker/_dev.py": "dev",
    "lambda_worker/_moto_speedups.py": "dev",  # patches the dev stack's moto server
    "infra/cdk.py": "cdk",
}


def requirement_name(requirement: str) -> str:
    """``"taskhop-backends[sqs]==1"`` -> ``"taskhop-backends"``."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return match.group(0).lower()


def declared(layer: str) -> tuple[set[str], dict[str, set[str]]]:
    """(base requirement names, {extra: names}) from a layer's pyproject.toml."""
    project = tomllib.loads((ROOT / layer / "pyproject.toml").read_text())["project"]
    base = {requirement_name(r) for r in project.get("dependencies", [])}
    extras = {
        extra: {requirement_name(r) for r in reqs} - {project["name"]}
        for extra, reqs in project.get("optional-dependencies", {}).items()
    }
    return base, extras


def sources(layer: str) -> list[Path]:
    return sorted((ROOT / layer / "src" / "taskhop" / layer).rglob("*.py"))


def key(layer: str, path: Path) -> str:
    return f"{layer}/{path.relative_to(ROOT / layer / 'src' / 'taskhop' / layer)}"


def runtime_imports(path: Path) -> set[str]:
    """Absolute module names a file imports at run time (``if TYPE_CHECKING:`` left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(child) for child in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def distributions_imported(path: Path) -> set[str]:
    """The distributions (per ``PROVIDER``) whose modules a file imports at run time."""
    found: set[str] = set()
    for module in runtime_imports(path):
        parts = module.split(".")
        name = ".".join(parts[:2]) if parts[0] == "taskhop" else parts[0]
        if name in PROVIDER:
            found.add(PROVIDER[name])
        else:
            assert parts[0] in sys.stdlib_module_names, f"{path}: {module} has no known provider"
    return found


ALL_SOURCES = [(layer, path) for layer in LAYERS for path in sources(layer)]


@pytest.mark.parametrize(("layer", "path"), ALL_SOURCES, ids=lambda v: getattr(v, "name", v))
def test_a_module_imports_only_what_its_distribution_declares(layer: str, path: Path) -> None:
    """Every run-time import is a declared requirement of the module's distribution or extra."""
    base, extras = declared(layer)
    own = f"taskhop-{layer.replace('_', '-')}"
    allowed = base | extras.get(MODULE_EXTRA.get(key(layer, path), ""), set()) | {own}
    allowed |= HOSTED.get(key(layer, path), set())
    assert distributions_imported(path) <= allowed, key(layer, path)


@pytest.mark.parametrize("layer", LAYERS)
def test_every_declared_requirement_is_imported(layer: str) -> None:
    """Nothing is declared that no module imports (extras that only group others aside)."""
    base, extras = declared(layer)
    used = set().union(*(distributions_imported(p) for p in sources(layer)))
    used |= {f"taskhop-{layer.replace('_', '-')}"}
    assert base <= used, f"{layer} declares unused {sorted(base - used)}"
    for extra, names in extras.items():
        taskhop_only = {n for n in names if n.startswith("taskhop-")}
        assert names - taskhop_only <= used, f"{layer}[{extra}] declares {sorted(names - used)}"


def test_the_layers_point_only_down() -> None:
    """static_contracts needs nothing; nothing but lambda_worker needs the sdk's runtime."""
    base = {layer: declared(layer)[0] for layer in LAYERS}
    assert base["static_contracts"] == set()
    assert base["sdk"] == {"taskhop-static-contracts", "attrs", "cattrs"}
    assert base["backends"] == {"taskhop-static-contracts"}
    assert base["infra"] == {"taskhop-static-contracts"}
    assert base["lambda_worker"] >= {"taskhop-sdk", "taskhop-infra"}
    for layer in ("static_contracts", "sdk", "backends", "infra"):
        for path in sources(layer):
            assert "taskhop-lambda-worker" not in distributions_imported(path), path


def test_backends_do_not_import_each_other() -> None:
    """Each backend imports no other backend (private ``_x`` helpers are shared)."""
    for path in sources("backends"):
        for module in runtime_imports(path):
            parts = module.split(".")
            if parts[:2] == ["taskhop", "backends"] and len(parts) > 2:
                assert parts[2].startswith("_"), f"{path.name} imports {module}"


def test_taskhop_is_a_namespace_package() -> None:
    """No layer ships ``taskhop/__init__.py`` (PEP 420), and each ships ``py.typed``."""
    for layer in LAYERS:
        assert not (ROOT / layer / "src" / "taskhop" / "__init__.py").exists()
        assert (ROOT / layer / "src" / "taskhop" / layer / "py.typed").exists()
    import taskhop

    assert not hasattr(taskhop, "__file__") or taskhop.__file__ is None


def test_siblings_are_pinned_to_one_version() -> None:
    """All layers and the meta-distribution share one version and pin each other ``==`` it."""
    versions = {}
    for folder in (*LAYERS, "."):
        project: dict[str, Any]
        project = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]
        versions[project["name"]] = project["version"]
        requirements = list(project.get("dependencies", []))
        for reqs in project.get("optional-dependencies", {}).values():
            requirements += reqs
        for requirement in requirements:
            if (
                requirement.startswith("taskhop-")
                and requirement_name(requirement) != project["name"]
            ):
                assert requirement.endswith(f"=={project['version']}"), (folder, requirement)
    assert len(set(versions.values())) == 1, versions


# -- what loads, in a fresh interpreter --------------------------------------------------------


def loaded_after(code: str) -> set[str]:
    """Every module name imported by ``code`` in a fresh interpreter."""
    script = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def tops(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_importing_sdk_loads_no_backend_and_no_aws_or_http_client() -> None:
    """``import taskhop.sdk`` pays for attrs and cattrs only: no boto3, httpx or backend."""
    loaded = loaded_after("import taskhop.sdk")
    assert not tops(loaded) & HEAVY
    assert "asyncio" not in loaded  # loaded on first async use: Lambda init does not pay for it
    assert not {m for m in loaded if m.startswith(("taskhop.backends", "taskhop.lambda_worker"))}
    assert "taskhop.sdk.memory" not in loaded


def test_the_embedded_default_loads_only_the_memory_backend() -> None:
    """``create_app()`` reaches ``taskhop.sdk.memory`` lazily and nothing heavier."""
    loaded = loaded_after("import taskhop.sdk; taskhop.sdk.create_app().close()")
    assert "taskhop.sdk.memory" in loaded
    assert not tops(loaded) & HEAVY


def test_a_lambda_worker_init_loads_only_what_it_runs() -> None:
    """The handler module's imports leave out asyncio, httpx and the local poller."""
    loaded = loaded_after(
        "import taskhop.lambda_worker, taskhop.backends.sqs, taskhop.backends.dynamodb"
    )
    assert not tops(loaded) & {"asyncio", "httpx", "moto"}
    assert "taskhop.lambda_worker._local" not in loaded
    assert "taskhop.infra" not in loaded


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("taskhop.backends.sqs", {"httpx", "attrs", "cattrs", "taskhop.sdk"}),
        ("taskhop.backends.dynamodb", {"httpx"}),
        ("taskhop.sdk.memory", {"boto3", "botocore", "httpx"}),
        ("taskhop.backends.http", {"boto3", "botocore", "attr", "attrs", "cattrs", "taskhop.sdk"}),
        (
            "taskhop.backends.sqs_http",
            {"boto3", "botocore", "attr", "attrs", "cattrs", "taskhop.sdk", "httpx"},
        ),
        ("taskhop.backends.api", {"boto3", "botocore"}),
        ("taskhop.infra", {"aws_cdk", "constructs", "taskhop.sdk", "attrs", "cattrs"}),
    ],
)
def test_each_module_loads_only_what_it_needs(module: str, forbidden: set[str]) -> None:
    """The SQS transports are producer-side: no sdk, attrs or cattrs; none loads httpx."""
    loaded = loaded_after(f"import {module}")
    assert not (tops(loaded) | loaded) & forbidden
