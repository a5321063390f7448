"""``taskhop workflows status | cancel | sweep``: workflows read, cancelled and repaired by id.

Driven through the CLI's entry point (``main``) against an embedded memory app, importable
as ``workflows_cli_app:app``: the status tree and its JSON, the not-found exit code, a
running workflow cancelled from the command line, one sweep's report.
"""

from __future__ import annotations

import json
import sys
import textwrap
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from taskhop.sdk import JobContext, PermanentError, chain, create_app
from taskhop.sdk._cli import main
from taskhop.sdk.memory import MemoryQueue
from taskhop.sdk.workflows import WorkflowHandle

APP = "workflows_cli_app:app"


class Cli:
    """An embedded app with a few tasks, one of which blocks until the test releases it."""

    def __init__(self) -> None:
        self.app = create_app()
        self.started = threading.Event()
        self.release = threading.Event()

        @self.app.task(name="add")
        def add(numbers: list[int], ctx: JobContext) -> int:
            return sum(numbers)

        @self.app.task(name="double")
        def double(n: int, ctx: JobContext) -> int:
            return n * 2

        @self.app.task(name="boom")
        def boom(n: int, ctx: JobContext) -> int:
            raise PermanentError("card declined")

        @self.app.task(name="block")
        def block(n: int, ctx: JobContext) -> int:
            self.started.set()
            assert self.release.wait(20), "the test never released the step"
            ctx.raise_if_cancelled()
            return n

        self.add, self.double, self.boom, self.block = add, double, boom, block

    def run(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
        code = main(["workflows", *args, "--app", APP])
        return code, capsys.readouterr().out

    def json(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
        code, out = self.run(capsys, *args)
        return code, json.loads(out)

    def blocked(self, **dispatch: Any) -> WorkflowHandle[int]:
        """A chain whose first step runs (and blocks) until ``release`` is set."""
        handle = chain(self.block.s(1), self.double.s()).dispatch(**dispatch)
        assert self.started.wait(10), "the blocking step never started"
        return handle


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    made = Cli()
    module = types.ModuleType("workflows_cli_app")
    setattr(module, "app", made.app)  # noqa: B010  # a module made at run time
    monkeypatch.setitem(sys.modules, "workflows_cli_app", module)
    yield made
    made.release.set()
    made.app.close()


def wait_for(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def step_lines(out: str) -> list[list[str]]:
    """The tree's step lines (after the ``STEP`` header), split into words."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("STEP"))
    return [line.split() for line in lines[start + 1 :]]


def test_status_prints_a_finished_chain_as_a_tree(
    cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    """The workflow's id and status on top, then one indented line per step; no values."""
    handle = chain(cli.add.s([1000, 2345]), cli.double.s()).dispatch()
    assert handle.result(10) == 6690
    code, out = cli.run(capsys, "status", handle.id)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"workflow {handle.id}: succeeded"
    assert "error" not in out
    assert f"step jobs: {handle.id}.<node>" in out
    assert lines[-2:] == [
        "n0    add     succeeded  succeeded",
        "  n1  double  succeeded  succeeded",
    ]
    for value in ("1000", "2345", "3345", "6690"):  # inputs and results stay in the records
        assert value not in out


def test_status_json_gives_the_document_fields_and_every_step(
    cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--json``: the document's top fields and the ``StepView`` fields of each step."""
    handle = chain(cli.add.s([1, 2]), cli.double.s()).dispatch(timeout=60)
    assert handle.result(10) == 6
    code, answer = cli.json(capsys, "status", handle.id, "--json")
    assert code == 0
    doc = handle.document()
    assert doc is not None
    assert set(answer) == {
        "id", "status", "error", "created_at", "updated_at", "deadline", "steps",
    }  # fmt: skip
    assert (answer["id"], answer["status"], answer["error"]) == (handle.id, "succeeded", None)
    assert answer["deadline"] == doc["deadline"] == pytest.approx(doc["created_at"] + 60)
    assert answer["steps"] == [
        {
            "node": "n0", "name": None, "task": "add", "job_id": f"{handle.id}.n0",
            "state": "succeeded", "job_status": "succeeded", "after": [], "error": None,
        },
        {
            "node": "n1", "name": None, "task": "double", "job_id": f"{handle.id}.n1",
            "state": "succeeded", "job_status": "succeeded", "after": ["n0"], "error": None,
        },
    ]  # fmt: skip


def test_status_shows_why_a_workflow_failed(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    """A failed step: the workflow's error message on top, the step's error type on its line."""
    handle = chain(cli.add.s([1]), cli.boom.s(), cli.double.s()).dispatch()
    wait_for(lambda: handle.status() == "failed", "the workflow to fail")
    code, out = cli.run(capsys, "status", handle.id)
    assert code == 0
    assert out.splitlines()[:2] == [
        f"workflow {handle.id}: failed",
        "  error: StepFailed: step 'n1' (boom) failed: PermanentError: card declined",
    ]
    assert step_lines(out) == [
        ["n0", "add", "succeeded", "succeeded"],
        ["n1", "boom", "failed", "failed", "error:", "PermanentError"],
        ["n2", "double", "cancelled", "-"],
    ]
    code, answer = cli.json(capsys, "status", handle.id, "--json")
    assert (code, answer["status"]) == (0, "failed")
    assert answer["error"]["type"] == "StepFailed"
    assert (answer["error"]["node"], answer["error"]["job"]) == ("n1", f"{handle.id}.n1")
    assert answer["error"]["cause"] == {"type": "PermanentError", "message": "card declined"}
    assert [s["state"] for s in answer["steps"]] == ["succeeded", "failed", "cancelled"]


def test_status_of_an_unknown_workflow_exits_1(
    cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    """No document: exit 1 (as ``jobs status`` for no record), a message on stderr only."""
    for extra in ([], ["--json"]):
        assert main(["workflows", "status", "nope", "--app", APP, *extra]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert "no workflow nope" in captured.err


def test_status_draws_a_graph_with_after_where_indentation_does_not_say_it(
    cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    """A chord: members side by side at depth 0, the callback under them, naming its waits."""
    from taskhop.sdk import chord

    handle = chord([cli.add.s([1]), cli.add.s([2])], cli.add.s()).dispatch()
    assert handle.result(10) == 3
    code, out = cli.run(capsys, "status", handle.id)
    assert code == 0
    assert step_lines(out) == [
        ["n0", "add", "succeeded", "succeeded"],
        ["n1", "add", "succeeded", "succeeded"],
        ["n2", "add", "succeeded", "succeeded", "after:", "n0,", "n1"],
    ]
    assert "  n2" in out.splitlines()[-1]  # indented one level: it waits for depth-0 steps


def test_cancel_stops_a_running_workflow(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    """Cancelled while a step runs: no later step starts; the running one ends cancelled."""
    handle = cli.blocked()
    code, answer = cli.json(capsys, "cancel", handle.id, "--reason", "ops: wrong input")
    assert (code, answer) == (0, {"id": handle.id, "cancelled": True})
    code, status = cli.json(capsys, "status", handle.id, "--json")
    assert (code, status["status"]) == (0, "cancelled")
    assert status["error"] == {"type": "WorkflowCancelled", "message": "ops: wrong input"}
    assert [(s["state"], s["job_status"]) for s in status["steps"]] == [
        ("dispatched", "running"),
        ("cancelled", None),
    ]
    cli.release.set()  # the step sees ctx.cancelled and stops
    wait_for(lambda: handle.steps()[0].state == "cancelled", "the running step to stop")
    code, out = cli.run(capsys, "status", handle.id)
    assert out.splitlines()[:2] == [
        f"workflow {handle.id}: cancelled",
        "  error: WorkflowCancelled: ops: wrong input",
    ]
    assert [line[:4] for line in step_lines(out)] == [
        ["n0", "block", "cancelled", "cancelled"],
        ["n1", "double", "cancelled", "-"],
    ]


def test_cancel_refuses_an_ended_or_unknown_workflow(
    cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ended workflow and an unknown id exit 1 with ``cancelled: false`` and why."""
    handle = chain(cli.add.s([1]), cli.double.s()).dispatch()
    assert handle.result(10) == 2
    code, answer = cli.json(capsys, "cancel", handle.id)
    assert (code, answer) == (
        1,
        {"id": handle.id, "cancelled": False, "why": "it is already succeeded"},
    )
    code, answer = cli.json(capsys, "cancel", "nope")
    assert (code, answer) == (1, {"id": "nope", "cancelled": False, "why": "no such workflow"})
    assert handle.status() == "succeeded"


def test_sweep_prints_its_report_and_expires_a_workflow_past_its_deadline(
    cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    """One pass: nothing due is an empty report; a workflow past its timeout is cancelled."""
    code, answer = cli.json(capsys, "sweep")
    assert (code, answer) == (0, {"looked_at": 0, "expired": [], "advanced": [], "resent": {}})
    handle = cli.blocked(timeout=0.2)
    time.sleep(0.3)
    code, answer = cli.json(capsys, "sweep", "--limit", "5")
    assert (code, answer) == (
        0,
        {"looked_at": 1, "expired": [handle.id], "advanced": [], "resent": {}},
    )
    code, status = cli.json(capsys, "status", handle.id, "--json")
    assert (status["status"], status["error"]["type"]) == ("cancelled", "WorkflowTimeout")


def test_sweep_limit_must_be_positive(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    """``--limit 0`` is a usage error (argparse's exit 2)."""
    with pytest.raises(SystemExit) as raised:
        main(["workflows", "sweep", "--limit", "0", "--app", APP])
    assert raised.value.code == 2
    assert "must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["status", "w1"], ["cancel", "w1"], ["sweep"]])
def test_an_app_without_a_workflow_store_is_refused(
    monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """A queue-only app keeps no workflows: each command stops naming the app and why."""
    app = create_app(queue=MemoryQueue())
    module = types.ModuleType("workflows_cli_app")
    setattr(module, "app", app)  # noqa: B010  # a module made at run time
    monkeypatch.setitem(sys.modules, "workflows_cli_app", module)
    with pytest.raises(SystemExit, match=f"--app {APP}: workflows need a store"):
        main(["workflows", *command, "--app", APP])


@pytest.mark.parametrize(
    "command", [["status", "w1"], ["status", "w1", "--json"], ["cancel", "w1"], ["sweep"]]
)
def test_every_workflows_command_answers_an_app_that_fails_to_import(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    """An app module that raises on import exits 3, as every other app command does."""
    (tmp_path / "broken_wf_app.py").write_text(
        textwrap.dedent(
            """
            import os
            DATABASE_URL = os.environ["DATABASE_URL"]
            """
        )
    )
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delitem(sys.modules, "broken_wf_app", raising=False)
    assert main(["workflows", *command, "--app", "broken_wf_app:app"]) == 3
    captured = capsys.readouterr()
    if "--json" in command:
        assert json.loads(captured.out)["error"]["type"] == "AppImportError"
    else:
        assert captured.err.endswith(
            "taskhop: --app broken_wf_app:app: importing broken_wf_app raised KeyError:"
            " 'DATABASE_URL'\n"
        )
    sys.modules.pop("broken_wf_app", None)
