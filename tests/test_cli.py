"""The ``taskhop`` command line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sdk._cli import load_app, main


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module on sys.path defining an app with one implemented and one registered task."""
    (tmp_path / "cli_app.py").write_text(
        textwrap.dedent(
            """
            from typing import TypedDict
            from sdk import create_app, static_contract

            class In(TypedDict):
                n: int

            app = create_app()
            double = app.implement(
                static_contract("double", input=In, output=int), lambda d, c: d["n"] * 2
            )
            app.register(static_contract("remote", input=In, output=int))
            not_an_app = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "cli_app"


def test_tasks_lists_contracts_as_json(app_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``taskhop tasks --app module:app`` prints each contract and whether it is implemented."""
    assert main(["tasks", "--app", f"{app_module}:app"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["implemented"]) for r in rows] == [("double", True), ("remote", False)]
    assert rows[0]["input"] == "cli_app:In"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nocolon", "expected 'module:attribute'"),
        ("no_such_module_xyz:app", "No module named"),
        ("cli_app:missing", "has no attribute"),
        ("cli_app:not_an_app", "expected an App, got int"),
    ],
)
def test_bad_app_specs_exit_with_a_message(app_module: str, spec: str, message: str) -> None:
    """A wrong --app value exits with a message naming the problem."""
    with pytest.raises(SystemExit, match=message):
        load_app(spec)


def test_console_script_is_installed() -> None:
    """The ``taskhop`` entry point runs and reports its version."""
    exe = Path(sys.executable).with_name("taskhop")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0.1.0.dev0"
