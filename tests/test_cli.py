"""The ``taskhop`` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from taskhop.sdk._app import AppLoadError
from taskhop.sdk._cli import load_app, main


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module on sys.path defining an app with one implemented and one registered task."""
    (tmp_path / "cli_app.py").write_text(
        textwrap.dedent(
            """
            import asyncio
            import time
            from typing import TypedDict
            from taskhop.sdk import ImplementOptions, create_app, static_contract

            class In(TypedDict):
                n: int

            app = create_app()
            double = app.implement(
                static_contract("double", input=In, output=int), lambda d, c: d["n"] * 2
            )
            app.register(static_contract("remote", input=In, output=int))

            def boom(data, ctx):
                raise RuntimeError("kaboom")

            app.implement(static_contract("boom", input=In, output=int), boom)

            def slow(data, ctx):
                time.sleep(5)
                return 0

            app.implement(static_contract("slow", input=In, output=int, timeout=0.2), slow)

            async def aslow(data, ctx):
                await asyncio.sleep(5)
                return 0

            app.implement(static_contract("aslow", input=In, output=int, timeout=0.2), aslow)
            app.implement(
                static_contract("v3", input=In, output=int, version=3),
                lambda d, c: d["n"] + 1,
                ImplementOptions(migrate=[lambda d: {"n": d["old"]}]),
            )
            not_an_app = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "cli_app"
    module = sys.modules.pop("cli_app", None)
    if module is not None:
        module.app.close()


def test_tasks_lists_contracts_as_json(app_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``taskhop tasks --app module:app`` prints each contract and whether it is implemented."""
    assert main(["tasks", "--app", f"{app_module}:app"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["implemented"]) for r in rows] == [
        ("aslow", True),
        ("boom", True),
        ("double", True),
        ("remote", False),
        ("slow", True),
        ("v3", True),
    ]
    assert rows[2]["input"] == "cli_app:In"


@pytest.mark.parametrize(
    ("spec", "message", "code"),
    [
        ("nocolon", "expected 'module:attribute'", 2),
        ("no_such_module_xyz:app", "No module named", 3),
        ("cli_app:missing", "has no attribute 'missing'", 3),
        ("cli_app:not_an_app", "expected an App, got int", 3),
    ],
)
def test_bad_app_specs_exit_with_a_message(
    app_module: str, spec: str, message: str, code: int
) -> None:
    """A wrong --app value exits with a message naming the problem, and its exit code."""
    with pytest.raises(SystemExit, match=message) as raised:
        load_app(spec)
    assert isinstance(raised.value, AppLoadError)
    assert raised.value.exit_code == code


@pytest.fixture
def broken_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An app module that reads a missing environment variable while it is imported."""
    (tmp_path / "broken_app.py").write_text(
        textwrap.dedent(
            """
            import os
            from taskhop.sdk import create_app

            DATABASE_URL = os.environ["DATABASE_URL"]
            app = create_app()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    yield "broken_app"
    sys.modules.pop("broken_app", None)


def test_run_json_answers_an_app_that_fails_to_import(
    broken_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run --json``: one JSON error naming the module and its exception, exit 3 (not 1)."""
    spec = f"{broken_module}:app"
    assert main(["run", "double", "--input", "{}", "--app", spec, "--json"]) == 3
    answer = json.loads(capsys.readouterr().out)
    assert answer == {
        "ok": False,
        "error": {
            "type": "AppImportError",
            "message": f"--app {spec}: importing broken_app raised KeyError: 'DATABASE_URL'",
            "app": spec,
        },
    }


@pytest.mark.parametrize(
    "command",
    [
        ["run", "double", "--input", "{}"],
        ["tasks"],
        ["contracts", "export"],
        ["jobs", "status", "some-id"],
        ["worker", "--local", "--queue-url", "http://127.0.0.1:9/q"],
        ["infra", "render", "--format", "sam"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_every_command_answers_an_app_that_fails_to_import(
    broken_module: str, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """Each command that loads an app exits 3: the user's traceback, then one short line."""
    assert main([*command, "--app", f"{broken_module}:app"]) == 3
    err = capsys.readouterr().err
    assert 'DATABASE_URL = os.environ["DATABASE_URL"]' in err  # the user's own line
    assert "importlib" not in err  # and not the import machinery's
    assert err.endswith(
        f"taskhop: --app {broken_module}:app: importing broken_app raised KeyError:"
        " 'DATABASE_URL'\n"
    )


def test_the_console_script_exits_3_with_json_for_an_app_that_fails_to_import(
    broken_module: str, tmp_path: Path
) -> None:
    """The installed ``taskhop``, not just ``main``: JSON on stdout, no traceback, exit 3."""
    exe = Path(sys.executable).with_name("taskhop")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TASKHOP_APP")}
    env["TASKHOP_APP"] = f"{broken_module}:app"  # the default --app, read when run
    done = subprocess.run(
        [str(exe), "run", "double", "--input", "{}", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert json.loads(done.stdout)["error"]["type"] == "AppImportError"
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [["run"], ["tasks"], ["worker"], ["dev"]])
def test_app_is_optional_in_help_and_says_its_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """``--help`` shows ``[--app APP]`` with its ``$TASKHOP_APP`` default, set or not."""
    monkeypatch.delenv("TASKHOP_APP", raising=False)
    with pytest.raises(SystemExit) as raised:
        main([*command, "--help"])
    assert raised.value.code == 0
    out = capsys.readouterr().out
    assert "[--app APP]" in out
    assert "(default: $TASKHOP_APP)" in " ".join(out.split())


def test_run_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """``taskhop run --help`` ends with the exit-code table."""
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    table = capsys.readouterr().out.split("exit codes:", 1)[1]
    assert [line.split()[0] for line in table.splitlines() if line[:3].strip()] == [
        "0",
        "1",
        "2",
        "3",
    ]


def test_app_is_read_from_the_environment_when_the_command_runs(
    app_module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``$TASKHOP_APP`` set after import is used; neither it nor --app is a usage error, 2."""
    monkeypatch.delenv("TASKHOP_APP", raising=False)
    assert main(["run", "double", "--input", '{"n": 1}', "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == {
        "type": "UsageError",
        "message": "--app is required: pass --app module:attribute or set $TASKHOP_APP",
        "app": None,
    }
    for command in (
        ["tasks"],
        ["dev"],
        ["worker", "--local", "--queue-url", "http://127.0.0.1:9/q"],
    ):
        assert main(command) == 2
        assert "--app is required" in capsys.readouterr().err
    monkeypatch.delenv("TASKHOP_QUEUE_URL", raising=False)
    assert main(["worker", "--local", "--app", f"{app_module}:app"]) == 2
    assert "--queue-url (or $TASKHOP_QUEUE_URL) is required" in capsys.readouterr().err
    monkeypatch.setenv("TASKHOP_APP", f"{app_module}:app")
    assert main(["run", "double", "--input", '{"n": 1}', "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, "result": 2}


def test_console_script_is_installed() -> None:
    """The ``taskhop`` entry point runs and reports its version."""
    exe = Path(sys.executable).with_name("taskhop")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0.1.0.dev0"


def test_run_executes_a_handler_on_json_input(
    app_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``taskhop run NAME --input JSON`` validates, runs and prints the output."""
    assert main(["run", "double", "--input", '{"n": 21}', "--app", f"{app_module}:app"]) == 0
    assert json.loads(capsys.readouterr().out) == 42
    assert (
        main(["run", "double", "--input", '{"n": 2}', "--app", f"{app_module}:app", "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out) == {"ok": True, "result": 4}


@pytest.mark.parametrize(
    ("name", "data", "code", "expected"),
    [
        ("double", '{"n": "x"}', 2, "input.n: expected integer, got string"),
        ("double", "{not json", 2, "--input is not JSON"),
        ("tripple", '{"n": 1}', 2, "unknown task 'tripple'"),
        ("boom", '{"n": 1}', 1, "RuntimeError: kaboom"),
    ],
)
def test_run_reports_bad_input_with_exit_codes(
    app_module: str,
    capsys: pytest.CaptureFixture[str],
    name: str,
    data: str,
    code: int,
    expected: str,
) -> None:
    """Invalid input and unknown tasks exit 2 with field paths; handler errors exit 1."""
    assert main(["run", name, "--input", data, "--app", f"{app_module}:app"]) == code
    assert expected in capsys.readouterr().err
    assert main(["run", name, "--input", data, "--app", f"{app_module}:app", "--json"]) == code
    answer = json.loads(capsys.readouterr().out)
    assert answer["ok"] is False
    assert expected.split(": ")[-1] in json.dumps(answer["error"])


def test_run_migrates_inputs_built_for_an_older_version(
    app_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--input-version N`` migrates the input as the worker would; no migration exits 2."""
    app = f"{app_module}:app"
    assert main(["run", "v3", "--input", '{"n": 1}', "--app", app]) == 0
    assert json.loads(capsys.readouterr().out) == 2
    assert main(["run", "v3", "--input", '{"old": 4}', "--input-version", "2", "--app", app]) == 0
    assert json.loads(capsys.readouterr().out) == 5
    assert main(["run", "v3", "--input", "{}", "--input-version", "1", "--app", app]) == 2
    assert "MigrationError: no migration from version 1" in capsys.readouterr().err
    assert main(["run", "v3", "--input", "{}", "--input-version", "4", "--app", app]) == 2
    assert "VersionTooNew" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["slow", "aslow"])
def test_run_stops_a_handler_at_its_timeout(
    app_module: str, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """A handler past its contract's timeout is stopped with HandlerTimeout, exit 1."""
    started = time.monotonic()
    assert main(["run", name, "--input", '{"n": 1}', "--app", f"{app_module}:app"]) == 1
    assert time.monotonic() - started < 3
    assert "HandlerTimeout: handler ran past its 0.2s timeout" in capsys.readouterr().err


def test_jobs_status_prints_the_record(app_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``taskhop jobs status ID`` prints the stored record; an unknown id exits 1."""
    import importlib

    module = importlib.import_module(app_module)
    handle = module.double.dispatch({"n": 5})
    assert handle.result(5) == 10
    assert main(["jobs", "status", handle.id, "--app", f"{app_module}:app"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["status"], record["result"]) == ("succeeded", 10)
    assert main(["jobs", "status", "nope", "--app", f"{app_module}:app"]) == 1


def test_dlq_list_and_redrive(mocked_aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    """``taskhop dlq list`` shows why letters died; ``redrive`` moves them back by task."""
    import boto3
    from taskhop.static_contracts import Envelope

    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="q")["QueueUrl"]
    dlq = sqs.create_queue(QueueName="q-dlq")["QueueUrl"]
    reason = {"taskhop-reason": {"DataType": "String", "StringValue": "retries_exhausted"}}
    for task in ("a", "a", "b"):
        body = Envelope(task=task, input={}).encode().decode()
        sqs.send_message(QueueUrl=dlq, MessageBody=body, MessageAttributes=reason)
    sqs.send_message(QueueUrl=dlq, MessageBody="garbage")
    assert main(["dlq", "list", "--dlq-url", dlq]) == 0
    letters = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(str(x["task"]) for x in letters) == ["None", "a", "a", "b"]
    assert {x["reason"] for x in letters} == {"retries_exhausted", "not a taskhop job"}
    assert (
        main(["dlq", "redrive", "--dlq-url", dlq, "--queue-url", queue, "--task", "a", "--dry-run"])
        == 0
    )
    *lines, totals = capsys.readouterr().out.splitlines()
    assert json.loads(totals) == {"would_redrive": 2, "rerun": 2, "other_task": 1, "not_a_job": 1}
    assert sorted(json.loads(line)["decision"] for line in lines) == [
        "not_a_job", "other_task", "rerun", "rerun",
    ]  # fmt: skip
    assert main(["dlq", "redrive", "--dlq-url", dlq, "--queue-url", queue, "--task", "a"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "redriven": 2, "rerun": 2, "other_task": 1, "not_a_job": 1,
    }  # fmt: skip
    moved = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert sorted(json.loads(m["Body"])["task"] for m in moved) == ["a", "a"]
