"""Job-scoped logs: ``ctx.log`` and your own loggers, under each host, with their job fields.

``ctx.log.info`` printed nothing under ``make_handler`` on Lambda (the ``taskhop`` logger had
only a ``NullHandler`` and the runtime's root logger is at WARNING), and a handler's own
``logging.getLogger(__name__)`` lines did not say which job wrote them. The hosts are real
processes: the command line, the local worker against a moto queue, and the Lambda entrypoint
under a stand-in for the Python runtime's logging set-up (``LAMBDA_RUNTIME`` below does what
awslambdaric's ``bootstrap._setup_logging`` does: one handler on the root logger, its text or
JSON formatter, the root level from ``AWS_LAMBDA_LOG_LEVEL``).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import timeit
import uuid
from pathlib import Path
from typing import Any, TypedDict

import pytest
from taskhop.sdk import (
    Envelope,
    JobContext,
    JobLogFilter,
    create_app,
    current_job,
    define_task,
    job_fields,
)
from taskhop.sdk._logging import bind_job, unbind_job

LOG_ENV = {
    "TASKHOP_LOG_LEVEL",
    "TASKHOP_LOG_FORMAT",
    "AWS_LAMBDA_LOG_LEVEL",
    "AWS_LAMBDA_LOG_FORMAT",
    "AWS_LAMBDA_FUNCTION_NAME",
}

APP = """
import logging
from typing import TypedDict
from taskhop.sdk import JobContext, create_app, define_task

class Order(TypedDict):
    n: int

app = create_app()
charge = define_task("charge", input=Order, output=Order)
billing = logging.getLogger("orders.billing")  # the user's own module logger

def run_charge(data: Order, ctx: JobContext) -> Order:
    ctx.log.debug("a debug line")
    ctx.log.info("charging", extra={"order": data["n"]})
    ctx.log.warning("a warning line")
    billing.warning("billing line")
    return data

app.implement(charge, run_charge)
"""

LAMBDA_RUNTIME = '''
import json, logging, os, sys

class LambdaLoggerFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = "req-1"
        return True

class LambdaLoggerHandler(logging.StreamHandler):
    pass

class LambdaLoggerHandlerWithFrameType(logging.StreamHandler):
    pass

STANDARD = set(vars(logging.makeLogRecord({}))) | {"aws_request_id", "message", "taskName"}

class RuntimeJson(logging.Formatter):
    """What the runtime's JsonFormatter writes: its keys, then each extra attribute as a key."""
    def format(self, record):
        line = {"timestamp": "t", "level": record.levelname, "message": record.getMessage(),
                "logger": record.name, "requestId": getattr(record, "aws_request_id", None)}
        line.update((k, v) for k, v in vars(record).items() if k not in STANDARD and k not in line)
        return json.dumps({k: v for k, v in line.items() if v is not None})

fmt = os.environ.get("AWS_LAMBDA_LOG_FORMAT", "").upper()
level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
level = "DEBUG" if level == "TRACE" else level
kind = LambdaLoggerHandlerWithFrameType if fmt == "JSON" or level else LambdaLoggerHandler
handler = kind(sys.stdout)
handler.setFormatter(RuntimeJson() if fmt == "JSON" else
                     logging.Formatter("[%(levelname)s]\\t%(aws_request_id)s\\t%(message)s"))
if level in logging.getLevelNamesMapping():
    logging.getLogger().setLevel(level)
handler.addFilter(LambdaLoggerFilter())
logging.getLogger().addHandler(handler)
'''

INVOKE = """
from taskhop.lambda_worker import make_handler
from taskhop.sdk import Envelope
from log_app import app
handler = make_handler(app)
parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
job = Envelope(task="charge", input={"n": 7}, id="job-1", trace={"traceparent": parent})
handler(job.to_dict())
"""


def lines_of(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` that is a JSON object, decoded."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def by_message(text: str, message: str) -> list[dict[str, Any]]:
    """The JSON lines whose ``message`` is ``message``."""
    return [line for line in lines_of(text) if line.get("message") == message]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A folder with the app module ``log_app``."""
    (tmp_path / "log_app.py").write_text(textwrap.dedent(APP))
    return tmp_path


def run(code: str, app_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (or, with ``args``, the taskhop command) with ``env`` and the app importable."""
    environ = {k: v for k, v in os.environ.items() if k not in LOG_ENV}
    command = [str(Path(sys.executable).with_name("taskhop")), *args] if args else None
    return subprocess.run(
        command or [sys.executable, "-c", textwrap.dedent(code)],
        env={**environ, "PYTHONPATH": str(app_dir), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=app_dir,
    )


def on_lambda(app_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Invoke ``make_handler(app)`` once under the stand-in runtime's logging, with ``env``."""
    return run(LAMBDA_RUNTIME + INVOKE, app_dir, AWS_LAMBDA_FUNCTION_NAME="orders", **env)


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


# -- taskhop run -----------------------------------------------------------------------------


def test_taskhop_run_shows_ctx_log_as_json_lines_with_the_job_fields(app_dir: Path) -> None:
    """``taskhop run``: stdout is the result only; stderr has the job's lines with its fields."""
    done = run(
        "", app_dir, "run", "charge", "--input", '{"n": 7}', "--app", "log_app:app", "--json"
    )
    assert json.loads(done.stdout) == {"ok": True, "result": {"n": 7}}
    [line] = by_message(done.stderr, "charging")
    assert line["level"] == "INFO"
    assert line["logger"] == "taskhop.job"
    assert line["task"] == "charge"
    assert line["attempt"] == 1
    assert line["order"] == 7  # the call's extra= is kept
    assert line["job_id"]
    assert "a debug line" not in done.stderr


def test_your_own_loggers_carry_the_job_fields_under_your_handler(app_dir: Path) -> None:
    """An app that configures logging itself gets the job fields on its module loggers' lines."""
    (app_dir / "own_app.py").write_text(
        "import logging\n"
        'logging.basicConfig(format="USER %(name)s %(message)s job=%(job_id)s a=%(attempt)s")\n'
        "from log_app import app\n"
    )
    done = run("", app_dir, "run", "charge", "--input", '{"n": 7}', "--app", "own_app:app")
    assert "Logging error" not in done.stderr  # %(job_id)s is on every record of the job
    billing = [line for line in done.stderr.splitlines() if "billing line" in line]
    assert len(billing) == 1
    assert billing[0].startswith("USER orders.billing billing line job=")
    assert billing[0].endswith(" a=1")
    assert "job=None" not in billing[0]
    assert done.stderr.count("a warning line") == 1  # the user's handler only


# -- Lambda ----------------------------------------------------------------------------------


def test_on_lambda_text_format_ctx_log_info_is_a_json_line_on_stdout(app_dir: Path) -> None:
    """The default text format: ``ctx.log.info`` shows (INFO), once, as taskhop's JSON line."""
    done = on_lambda(app_dir)
    [line] = by_message(done.stdout, "charging")
    assert line["job_id"] == "job-1"
    assert line["task"] == "charge"
    assert line["attempt"] == 1
    assert line["trace_id"] == TRACE_ID
    assert "charging" not in done.stdout.replace(json.dumps(line, separators=(",", ":")), "")
    assert "[INFO]" not in done.stdout  # not written a second time by the runtime's handler
    assert "a debug line" not in done.stdout
    assert "[WARNING]\treq-1\tbilling line" in done.stdout  # your loggers: the runtime's


def test_on_lambda_json_format_the_runtime_writes_the_fields_as_keys(app_dir: Path) -> None:
    """``AWS_LAMBDA_LOG_FORMAT=JSON``: one line per record, the message plain, fields as keys."""
    done = on_lambda(app_dir, AWS_LAMBDA_LOG_FORMAT="JSON", AWS_LAMBDA_LOG_LEVEL="INFO")
    [line] = by_message(done.stdout, "charging")
    assert line["requestId"] == "req-1"  # the runtime's formatter wrote it
    assert {k: line[k] for k in ("job_id", "task", "attempt", "trace_id", "order")} == {
        "job_id": "job-1",
        "task": "charge",
        "attempt": 1,
        "trace_id": TRACE_ID,
        "order": 7,
    }
    assert "timestamp" in line
    [billing] = by_message(done.stdout, "billing line")  # your module's logger: the same keys
    assert billing["logger"] == "orders.billing"
    assert billing["job_id"] == "job-1"
    assert billing["trace_id"] == TRACE_ID
    assert done.stdout.count("charging") == 1


def test_on_lambda_json_format_without_a_level_ctx_log_info_shows(app_dir: Path) -> None:
    """JSON format with no ApplicationLogLevel: the root stays at WARNING, ``ctx.log`` at INFO."""
    done = on_lambda(app_dir, AWS_LAMBDA_LOG_FORMAT="JSON")
    assert len(by_message(done.stdout, "charging")) == 1


@pytest.mark.parametrize(
    ("env", "shown", "hidden"),
    [
        ({"AWS_LAMBDA_LOG_LEVEL": "WARN"}, ["a warning line"], ["charging"]),
        ({"AWS_LAMBDA_LOG_LEVEL": "TRACE"}, ["a debug line", "charging"], []),
        # both set: the stricter wins, either way round
        ({"AWS_LAMBDA_LOG_LEVEL": "DEBUG", "TASKHOP_LOG_LEVEL": "ERROR"}, [], ["a warning line"]),
        (
            {"AWS_LAMBDA_LOG_LEVEL": "INFO", "TASKHOP_LOG_LEVEL": "DEBUG"},
            ["charging"],
            ["a debug line"],
        ),
    ],
)
def test_on_lambda_the_level_comes_from_the_application_log_level(
    app_dir: Path, env: dict[str, str], shown: list[str], hidden: list[str]
) -> None:
    """``AWS_LAMBDA_LOG_LEVEL`` (TRACE, ..., WARN, FATAL) sets the job lines' level."""
    done = on_lambda(app_dir, AWS_LAMBDA_LOG_FORMAT="JSON", **env)
    messages = [line.get("message") for line in lines_of(done.stdout)]
    for text in shown:
        assert text in messages
    for text in hidden:
        assert text not in messages


def test_make_handler_off_lambda_configures_nothing(app_dir: Path) -> None:
    """Without ``AWS_LAMBDA_FUNCTION_NAME`` (your tests, a script) logging is left as it was."""
    done = run(INVOKE, app_dir)
    assert "charging" not in done.stdout + done.stderr
    assert "a warning line" not in done.stderr  # the NullHandler, as before
    assert "billing line" in done.stderr  # logging's last resort for your own loggers


def test_make_handler_twice_writes_each_line_once(app_dir: Path) -> None:
    """Configuring again (a second ``make_handler``) adds no second handler."""
    done = on_lambda(app_dir, TASKHOP_LOG_LEVEL="INFO")
    again = run(
        LAMBDA_RUNTIME
        + INVOKE.replace(
            "handler = make_handler(app)", "make_handler(app)\nhandler = make_handler(app)"
        ),
        app_dir,
        AWS_LAMBDA_FUNCTION_NAME="orders",
    )
    assert len(by_message(done.stdout, "charging")) == 1
    assert len(by_message(again.stdout, "charging")) == 1


# -- Powertools and structlog ----------------------------------------------------------------

POWERTOOLS = '''
import json, logging, sys
from taskhop.sdk import JobLogFilter

class PowertoolsJson(logging.Formatter):
    """Like Powertools' LambdaPowertoolsFormatter: its keys, and each record extra."""
    def format(self, record):
        std = set(vars(logging.makeLogRecord({}))) | {"message", "taskName", "aws_request_id"}
        line = {"level": record.levelname, "message": record.getMessage(), "service": "orders"}
        line.update((k, v) for k, v in vars(record).items() if k not in std)
        return json.dumps(line)

class SuppressFilter(logging.Filter):  # Powertools keeps its records off the root handlers
    def __init__(self, name):
        self.logger = name
    def filter(self, record):
        return self.logger not in record.name

# Logger(service="orders"): a handler on the "orders" logger, propagate off.
pt = logging.getLogger("orders")
pt_handler = logging.StreamHandler(sys.stdout)
pt_handler.setFormatter(PowertoolsJson())
pt.addHandler(pt_handler)
pt.setLevel("INFO")
pt.propagate = False
for h in logging.root.handlers:
    h.addFilter(SuppressFilter("orders"))
pt_handler.addFilter(JobLogFilter())  # the README's line: logger.registered_handler.addFilter
'''


def test_powertools_logger_keeps_its_lines_and_gets_the_job_fields(app_dir: Path) -> None:
    """Powertools' own handler and ``propagate=False``: each line once, taskhop's and its own."""
    done = on_lambda_with(app_dir, POWERTOOLS)
    [billing] = by_message(done.stdout, "billing line")
    assert billing["service"] == "orders"  # Powertools' formatter wrote it
    assert billing["job_id"] == "job-1"
    assert billing["trace_id"] == TRACE_ID
    [charging] = by_message(done.stdout, "charging")  # taskhop's own line, once
    assert "service" not in charging
    assert done.stdout.count("billing line") == 1
    assert done.stdout.count("charging") == 1


ROOT_JSON = """
import json, logging, sys

class UserJson(logging.Formatter):
    def format(self, record):
        keep = ("job_id", "task", "attempt", "order")
        return "USER " + json.dumps({"msg": record.getMessage(), "logger": record.name,
                                     **{k: getattr(record, k) for k in keep if hasattr(record, k)}})

# Powertools on the root logger, or structlog's stdlib set-up (a ProcessorFormatter on a root
# handler): a root handler that is not Lambda's.
mine = logging.StreamHandler(sys.stdout)
mine.setFormatter(UserJson())
logging.getLogger().addHandler(mine)
logging.getLogger().setLevel("INFO")
"""


def test_a_root_handler_of_yours_gets_every_line_once(app_dir: Path) -> None:
    """With your handler beside Lambda's on the root logger, taskhop adds none of its own."""
    done = on_lambda_with(app_dir, ROOT_JSON)
    mine = [json.loads(line[5:]) for line in done.stdout.splitlines() if line.startswith("USER ")]
    charging = [line for line in mine if line["msg"] == "charging"]
    assert charging == [
        {"msg": "charging", "logger": "taskhop.job", "job_id": "job-1", "task": "charge",
         "attempt": 1, "order": 7}
    ]  # fmt: skip
    billing = [line for line in mine if line["msg"] == "billing line"]
    assert billing[0]["job_id"] == "job-1"
    assert by_message(done.stdout, "charging") == []  # no taskhop JSON line beside it


STRUCTLOG = """
import json, sys
from taskhop.sdk import JobContext, job_fields
from log_app import Order, app, charge, run_charge

def add_job_fields(logger, method_name, event_dict):  # a structlog processor
    return {**job_fields(), **event_dict}

class PrintLogger:  # structlog's default: processors, then print; stdlib logging untouched
    processors = [add_job_fields]
    def info(self, event, **kw):
        event_dict = {"event": event, **kw}
        for processor in self.processors:
            event_dict = processor(self, "info", event_dict)
        print(json.dumps(event_dict), file=sys.stdout)

log = PrintLogger()

def with_structlog(data: Order, ctx: JobContext) -> Order:
    log.info("structlog line", n=data["n"])
    return run_charge(data, ctx)
"""


def test_structlog_lines_get_the_job_fields_from_a_processor(app_dir: Path) -> None:
    """structlog prints its own lines: ``job_fields()`` in a processor names the job."""
    (app_dir / "sl_app.py").write_text(
        textwrap.dedent(STRUCTLOG) + "from taskhop.sdk import create_app\n"
        "app = create_app()\n"
        "app.implement(charge, with_structlog)\n"
    )
    code = LAMBDA_RUNTIME + INVOKE.replace("from log_app import app", "from sl_app import app")
    done = run(code, app_dir, AWS_LAMBDA_FUNCTION_NAME="orders")
    [line] = [line for line in lines_of(done.stdout) if line.get("event") == "structlog line"]
    assert line == {"job_id": "job-1", "task": "charge", "attempt": 1, "trace_id": TRACE_ID,
                    "event": "structlog line", "n": 7}  # fmt: skip
    assert len(by_message(done.stdout, "charging")) == 1


def on_lambda_with(app_dir: Path, setup: str) -> subprocess.CompletedProcess[str]:
    """``on_lambda`` with ``setup`` run after the runtime's logging and before ``make_handler``."""
    return run(LAMBDA_RUNTIME + setup + INVOKE, app_dir, AWS_LAMBDA_FUNCTION_NAME="orders")


# -- the local worker ------------------------------------------------------------------------


def test_taskhop_worker_local_shows_ctx_log_lines(
    app_dir: Path, server_session: Any, moto_server: str
) -> None:
    """``taskhop worker --local``: the job's ``ctx.log.info`` is on stderr with its fields."""
    from taskhop.backends.sqs import SqsQueue

    sqs = server_session.client("sqs")
    url = sqs.create_queue(QueueName=f"joblogs-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    SqsQueue(url, client=sqs).send(Envelope(task="charge", input={"n": 7}, id="job-local"))
    done = run(
        "",
        app_dir,
        "worker", "--local", "--app", "log_app:app", "--queue-url", url,
        "--wait-time", "1", "--idle-exit", "2",
        AWS_ENDPOINT_URL=moto_server,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )  # fmt: skip
    [line] = by_message(done.stderr, "charging")
    assert (line["job_id"], line["task"], line["attempt"], line["order"]) == (
        "job-local", "charge", 1, 7
    )  # fmt: skip
    [event] = [line for line in lines_of(done.stdout) if line.get("event") == "job"]
    assert event["outcome"] == "succeeded"


# -- the job scope, in this process ----------------------------------------------------------


class Order(TypedDict):
    n: int


class Capture(logging.Handler):
    """Keeps the records it is given, after its filters ran."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(JobLogFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def capture() -> Any:
    """A capturing handler on the ``orders`` logger, for the duration of a test."""
    handler = Capture()
    logger = logging.getLogger("orders.test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def fields(record: logging.LogRecord) -> tuple[Any, ...]:
    """The job fields a record carries."""
    return tuple(getattr(record, name, None) for name in ("job_id", "task", "attempt"))


def test_sync_and_async_handlers_and_copied_threads_keep_the_job(capture: Capture) -> None:
    """The scope holds in a sync handler, across an ``await``, and in a thread given the context."""
    log = logging.getLogger("orders.test")
    app = create_app()
    sync_task = define_task("sync-job", input=Order, output=Order)
    async_task = define_task("async-job", input=Order, output=Order)

    @app.implement(sync_task)
    def sync_handler(data: Order, ctx: JobContext) -> Order:
        log.info("sync")
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(log.info, "thread"))
        thread.start()
        thread.join()
        return data

    @app.implement(async_task)
    async def async_handler(data: Order, ctx: JobContext) -> Order:
        await asyncio.sleep(0)
        log.info("async")
        assert current_job() is ctx
        return data

    worker = app.worker()
    try:
        worker.process(Envelope(task="sync-job", input={"n": 1}, id="j-sync"))
        worker.process(Envelope(task="async-job", input={"n": 2}, id="j-async"))
    finally:
        worker.close()
    log.info("outside")
    got = {r.getMessage(): fields(r) for r in capture.records}
    assert got == {
        "sync": ("j-sync", "sync-job", 1),
        "thread": ("j-sync", "sync-job", 1),
        "async": ("j-async", "async-job", 1),
        "outside": (None, None, None),
    }
    assert current_job() is None
    assert job_fields() == {}


def test_a_handler_with_a_timeout_keeps_the_job(capture: Capture) -> None:
    """A timed handler (run under the timer, or in a thread off the main thread) keeps it."""
    from taskhop.sdk import ImplementOptions

    log = logging.getLogger("orders.test")
    app = create_app()
    task = define_task("timed", input=Order, output=Order)

    @app.implement(task, options=ImplementOptions(timeout=5))
    def handler(data: Order, ctx: JobContext) -> Order:
        log.info("timed %d", data["n"])
        return data

    worker = app.worker()
    worker.process(Envelope(task="timed", input={"n": 1}, id="j-main"))
    other = threading.Thread(
        target=worker.process, args=(Envelope(task="timed", input={"n": 2}, id="j-thread"),)
    )
    other.start()
    other.join()
    got = {r.getMessage(): fields(r)[0] for r in capture.records}
    assert got == {"timed 1": "j-main", "timed 2": "j-thread"}


def test_your_extra_wins_and_never_raises(capture: Capture) -> None:
    """``extra={"task": ...}`` inside a job is kept as given (a record factory would raise)."""
    log = logging.getLogger("orders.test")
    ctx = JobContext(job_id="j-1", task="charge", attempt=2)
    token = bind_job(ctx)
    try:
        log.info("mine", extra={"task": "my own", "order": 3})
        ctx.log.info("via ctx", extra={"attempt": "mine"})
    finally:
        unbind_job(token)
    [record] = capture.records
    assert fields(record) == ("j-1", "my own", 2)
    assert getattr(record, "order") == 3  # noqa: B009 - an extra attribute


def test_ctx_log_keeps_the_extra_of_each_call() -> None:
    """``ctx.log.info(..., extra=...)`` has the call's fields and the job's.

    Python 3.11's ``LoggerAdapter`` drops the call's ``extra`` for its own.
    """
    handler = Capture()
    job = logging.getLogger("taskhop.job")
    job.addHandler(handler)
    try:
        ctx = JobContext(job_id="j-1", task="charge", attempt=3)
        ctx.log.warning("hello", extra={"order": 9})
    finally:
        job.removeHandler(handler)
    [record] = handler.records
    assert fields(record) == ("j-1", "charge", 3)
    assert getattr(record, "order") == 9  # noqa: B009 - an extra attribute


def test_the_job_scope_costs_well_under_a_microsecond() -> None:
    """``bind_job`` + ``unbind_job`` per message, measured (the per-message budget is a few µs)."""
    ctx = JobContext(job_id="j-1", task="charge")

    def scope() -> None:
        unbind_job(bind_job(ctx))

    best = min(timeit.repeat(scope, number=20_000, repeat=5)) / 20_000
    assert best < 2e-6, f"{best * 1e9:.0f} ns per job scope"
