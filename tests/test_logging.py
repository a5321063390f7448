"""What taskhop logs, and that the command line shows it.

A library configures no logging (``taskhop.sdk`` adds a ``NullHandler``), so ``taskhop worker
--local`` printed none of its own warnings: an SQS outage looked like an idle queue. The
command line now gives the ``taskhop`` logger a stderr handler unless logging is already set
up (``configure_logging``, in ``sdk/_logging.py``). Its lines are JSON, or ``LEVEL logger:
message [fields]`` on a terminal or with ``TASKHOP_LOG_FORMAT=text``. These tests run real
processes: pytest's own log capture would hide the difference. The job-scoped lines are in
``test_job_logs.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(ROOT.glob("*/src/taskhop/**/*.py"))
LOG_ENV = {
    "TASKHOP_LOG_LEVEL",
    "TASKHOP_LOG_FORMAT",
    "AWS_LAMBDA_LOG_LEVEL",
    "AWS_LAMBDA_LOG_FORMAT",
    "AWS_LAMBDA_FUNCTION_NAME",
}
"""Variables that change where and how taskhop logs: the tests set them, never inherit them."""


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` that is a JSON object, decoded."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with ``env`` added; its stdout and stderr."""
    environ = {k: v for k, v in os.environ.items() if k not in LOG_ENV}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


WARN_FROM_LOCAL = """
    import logging
    from taskhop.sdk import configure_logging
    {setup}
    configure_logging()
    {after}
    log = logging.getLogger("taskhop.local")
    log.warning("polling failed; trying again (%d in a row)", 1, extra={{"job_id": "j-1"}})
    log.info("an info line")
    log.debug("a debug line")
"""


def test_a_warning_from_taskhop_local_reaches_stderr() -> None:
    """With no logging set up, the handler prints the line as JSON, with its job fields."""
    done = run_python(WARN_FROM_LOCAL.format(setup="", after=""))
    lines = json_lines(done.stderr)
    assert [line["message"] for line in lines] == [
        "polling failed; trying again (1 in a row)",
        "an info line",  # INFO by default
    ]
    assert lines[0]["level"] == "WARNING"
    assert lines[0]["logger"] == "taskhop.local"
    assert lines[0]["job_id"] == "j-1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", lines[0]["timestamp"])
    assert "a debug line" not in done.stderr


def test_taskhop_log_format_text_gives_the_human_line() -> None:
    """``TASKHOP_LOG_FORMAT=text`` (the default on a terminal): the fields follow the message."""
    done = run_python(WARN_FROM_LOCAL.format(setup="", after=""), TASKHOP_LOG_FORMAT="text")
    assert re.search(
        r"WARNING taskhop\.local: polling failed; trying again \(1 in a row\) \[job_id=j-1\]",
        done.stderr,
    )
    assert json_lines(done.stderr) == []


def test_the_cli_imports_configure_logging_from_the_logging_module() -> None:
    """``taskhop.sdk._cli`` keeps the name, as an import of the one implementation."""
    import taskhop.sdk
    from taskhop.sdk import _cli

    assert _cli.configure_logging is taskhop.sdk.configure_logging


def test_without_the_cli_a_library_user_sees_nothing_from_taskhop() -> None:
    """Importing taskhop configures nothing: the line goes nowhere (the NullHandler)."""
    done = run_python(
        """
        import logging
        import taskhop.sdk
        logging.getLogger("taskhop.local").warning("polling failed")
        """
    )
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("level", "shown", "hidden"),
    [("ERROR", [], ["polling failed", "an info line"]), ("debug", ["a debug line"], [])],
)
def test_taskhop_log_level_sets_the_level(level: str, shown: list[str], hidden: list[str]) -> None:
    """``TASKHOP_LOG_LEVEL`` (a name, any case, or a number) decides what is shown."""
    done = run_python(WARN_FROM_LOCAL.format(setup="", after=""), TASKHOP_LOG_LEVEL=level)
    for text in shown:
        assert text in done.stderr
    for text in hidden:
        assert text not in done.stderr


def test_a_bad_taskhop_log_level_is_refused_by_name() -> None:
    """A typo in the level stops the command with a message naming the variable."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from taskhop.sdk import configure_logging\nconfigure_logging()",
        ],
        env={**os.environ, "TASKHOP_LOG_LEVEL": "LOUD"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "$TASKHOP_LOG_LEVEL='LOUD' is not a log level" in done.stderr


def test_a_bad_taskhop_log_format_is_refused_by_name() -> None:
    """``TASKHOP_LOG_FORMAT`` takes json or text; anything else stops with the variable named."""
    done = subprocess.run(
        [sys.executable, "-c", "from taskhop.sdk import configure_logging\nconfigure_logging()"],
        env={**os.environ, "TASKHOP_LOG_FORMAT": "yaml"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "$TASKHOP_LOG_FORMAT='yaml' is not a log format (json, text)" in done.stderr


def test_logging_the_user_set_up_is_left_alone() -> None:
    """With a root handler already there, taskhop adds none: each line is written once."""
    done = run_python(
        WARN_FROM_LOCAL.format(
            setup='logging.basicConfig(format="USER %(name)s %(message)s")', after=""
        )
    )
    assert done.stderr.count("polling failed") == 1
    assert "USER taskhop.local polling failed" in done.stderr
    assert "an info line" not in done.stderr  # the user's WARNING level, not ours


def test_an_app_that_configures_logging_after_the_cli_gets_each_line_once() -> None:
    """``--app`` modules may call basicConfig after the CLI's handler is in: it steps aside."""
    done = run_python(
        WARN_FROM_LOCAL.format(
            setup="", after='logging.basicConfig(format="USER %(name)s %(message)s")'
        )
    )
    assert done.stderr.count("polling failed") == 1
    assert "USER taskhop.local polling failed" in done.stderr


def test_taskhop_worker_local_shows_that_polling_failed(
    server_session: Any, moto_server: str, tmp_path: Path
) -> None:
    """The worker's "polling failed" (the queue deleted under it) is on its stderr."""
    sqs = server_session.client("sqs")
    url = sqs.create_queue(QueueName=f"logs-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    (tmp_path / "log_app.py").write_text("from taskhop.sdk import create_app\napp = create_app()\n")
    env = {
        **{k: v for k, v in os.environ.items() if k not in LOG_ENV},
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PYTHONPATH": str(tmp_path),
    }
    exe = Path(sys.executable).with_name("taskhop")
    command = [str(exe), "worker", "--local", "--app", "log_app:app", "--queue-url", url]
    proc = subprocess.Popen(
        [*command, "--wait-time", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        lines.append(proc.stderr.readline())
        assert "polling" in lines[0]
        sqs.delete_queue(QueueUrl=url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "polling failed" in line or not line:
                break
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    failed = [line for line in json_lines("".join(lines)) if "polling failed" in line["message"]]
    assert failed, "".join(lines)
    assert failed[0]["level"] == "ERROR"
    assert failed[0]["logger"] == "taskhop.local"
    assert failed[0]["message"] == "polling failed; trying again (1 in a row)"
    assert failed[0]["stackTrace"][0].startswith("Traceback")


# -- the job lines on stdout -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["retry", "failed"])
def test_a_job_line_has_a_handler_errors_type_not_its_message(kind: str) -> None:
    """A handler's exception text may quote its input: the line keeps the type only."""
    import io
    import json

    from taskhop.lambda_worker._logs import emit_job
    from taskhop.sdk import Envelope, ErrorInfo, Outcome, OutcomeKind

    envelope = Envelope(task="send-email", input={"to": "ann@example.com"})
    error = ErrorInfo("KeyError", "'ann@example.com'", retryable=kind == "retry")
    out = io.StringIO()
    emit_job(Outcome(OutcomeKind(kind), envelope, 1, error=error), source="sqs", out=out)
    line = json.loads(out.getvalue())
    assert line["error_type"] == "KeyError"
    assert "error" not in line
    assert "ann@example.com" not in out.getvalue()


def test_a_job_line_keeps_the_message_taskhop_wrote() -> None:
    """A rejection's summary is taskhop's text: the line has it, and the paths, not the values."""
    import io
    import json

    from taskhop.lambda_worker._logs import emit_job
    from taskhop.sdk import Envelope, ErrorInfo, FieldError, Outcome, OutcomeKind, Reason

    error = ErrorInfo(
        "ValidationError",
        "invalid input for task 'send-email'",
        (FieldError("input.to", "'ann@example.com' is not an address"),),
    )
    outcome = Outcome(
        OutcomeKind.REJECTED,
        Envelope(task="send-email", input={}),
        1,
        error=error,
        reason=Reason.INVALID_INPUT,
    )
    out = io.StringIO()
    emit_job(outcome, source="sqs", out=out)
    line = json.loads(out.getvalue())
    assert line["error"] == "invalid input for task 'send-email'"
    assert line["fields"] == ["input.to"]
    assert "ann@example.com" not in out.getvalue()


TRACEBACK = """
    import logging
    from taskhop.sdk import configure_logging
    configure_logging()
    try:
        raise RuntimeError("store down")
    except RuntimeError:
        logging.getLogger("taskhop.lambda").exception(
            "record %s could not be processed", "m-1", extra={"message_id": "m-1"}
        )
"""


def test_the_text_format_puts_job_fields_before_a_traceback() -> None:
    """``[message_id=...]`` ends the message line; the traceback follows it."""
    done = run_python(TRACEBACK, TASKHOP_LOG_FORMAT="text")
    first, second = done.stderr.splitlines()[:2]
    assert first.endswith("record m-1 could not be processed [message_id=m-1]")
    assert second.startswith("Traceback")


def test_the_json_format_keeps_an_exception_in_one_line() -> None:
    """An exception is ``errorType``, ``errorMessage`` and ``stackTrace``, as Lambda keys them."""
    done = run_python(TRACEBACK)
    [line] = json_lines(done.stderr)
    assert len(done.stderr.splitlines()) == 1
    assert line["message"] == "record m-1 could not be processed"
    assert line["message_id"] == "m-1"
    assert line["errorType"] == "RuntimeError"
    assert line["errorMessage"] == "store down"
    assert line["stackTrace"][0] == "Traceback (most recent call last):"


# -- what the README says is logged -----------------------------------------------------------


LOGGER = re.compile(r"""logging\.getLogger\(\s*["'](taskhop[\w.]*)["']\s*\)""")


def test_the_readme_names_every_taskhop_logger() -> None:
    """Each ``logging.getLogger("taskhop...")`` in the sources is in "What taskhop logs"."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n## What taskhop logs\n" in readme
    section = readme.split("\n## What taskhop logs\n", 1)[1].split("\n## ", 1)[0]
    names = {name for path in SOURCES for name in LOGGER.findall(path.read_text("utf-8"))}
    assert names >= {"taskhop", "taskhop.worker", "taskhop.local"}
    missing = sorted(name for name in names if f"`{name}`" not in section)
    assert not missing, f"loggers the README does not list: {missing}"
