"""Job-scoped logs: every line written while a handler runs names its job.

While a handler runs, the job is held in a context variable (``bind_job``, set around the
handler by ``Registered.call`` / ``acall``): ``async def`` handlers keep it across awaits, and
a thread started with ``contextvars.copy_context()`` (as the timeout thread is) keeps it too.
``JobLogFilter`` copies the job's fields onto each record a handler passes (``job_id``,
``task``, ``attempt``, ``trace_id``), so the lines of your own ``logging.getLogger(__name__)``
carry them as well as ``ctx.log``'s.

A filter rather than a record factory: a factory runs before ``makeRecord`` merges ``extra``,
and ``makeRecord`` raises ``KeyError`` for an ``extra`` key the record already has, so a
handler's ``log.info(..., extra={"task": ...})`` would raise inside the job. A filter runs
after the merge and only fills what is missing (the caller's ``extra`` wins), the way the
Lambda runtime's own handler filter adds ``aws_request_id``. ``configure_logging`` puts it on
taskhop's handler and on the root logger's handlers (Lambda's, or the ones you configured),
including handlers added later, looked at when each job starts.

``configure_logging`` decides where lines go, from what is already configured:

- the root logger has handlers other than Lambda's (you, Powertools, structlog's
  ``ProcessorFormatter``): taskhop adds no handler; its records propagate to yours.
- Lambda with ``AWS_LAMBDA_LOG_FORMAT=JSON``: the runtime's JSON formatter writes every record,
  ``extra`` attributes as keys; taskhop adds no handler, so nothing is encoded twice.
- Lambda's text format (the default): taskhop's lines are its own JSON lines on stdout, beside
  its job event lines, and do not propagate (Lambda's text handler would write them again).
- nothing configured (the command line, a script): a stderr handler on ``taskhop`` that steps
  aside once the root logger gets a handler (an ``--app`` module's ``basicConfig``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Literal, TextIO

if TYPE_CHECKING:
    from ._context import JobContext

__all__ = [
    "JobLogFilter",
    "bind_job",
    "configure_logging",
    "current_job",
    "incoming_trace",
    "job_fields",
    "trace_id",
    "unbind_job",
]

LOG_LEVEL_ENV = "TASKHOP_LOG_LEVEL"
"""taskhop's loggers' level (a name, any case, or a number)."""
LOG_FORMAT_ENV = "TASKHOP_LOG_FORMAT"
"""``json`` or ``text`` for taskhop's own handler (default: text on a terminal, else JSON)."""
LAMBDA_LOG_LEVEL_ENV = "AWS_LAMBDA_LOG_LEVEL"
"""Lambda's advanced logging controls: the function's ApplicationLogLevel (JSON format only)."""
LAMBDA_LOG_FORMAT_ENV = "AWS_LAMBDA_LOG_FORMAT"
"""Lambda's log format, ``Text`` (the default) or ``JSON``."""
JOB_LOGGER = "taskhop.job"

JOB_KEYS = ("job_id", "task", "attempt", "trace_id")
"""The fields of a job's lines, in the order taskhop's JSON lines put them."""
_TEXT_KEYS = (*JOB_KEYS, "reason", "message_id", "key_digest")
"""The ``extra`` fields the text format shows after the message when a record has them."""

# Lambda's ApplicationLogLevel names: TRACE, DEBUG, INFO, WARN, ERROR, FATAL. The Python
# runtime maps TRACE to DEBUG and sets the root logger to the result.
_LAMBDA_LEVELS = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
    "CRITICAL": logging.CRITICAL,
}

_job: ContextVar[JobContext | None] = ContextVar("taskhop_job", default=None)
_incoming: ContextVar[Mapping[str, str] | None] = ContextVar("taskhop_incoming", default=None)

_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_XRAY_ROOT = re.compile(r"1-[0-9a-f]{8}-[0-9a-f]{24}")


# -- the job scope ---------------------------------------------------------------------------


def bind_job(ctx: JobContext) -> Token[JobContext | None]:
    """Make ``ctx`` the running job of this context; give the token to ``unbind_job``."""
    if _adopted is not None and logging.root.handlers != _adopted:
        _adopt_root_handlers()  # a handler configured since: it gets the job fields too
    return _job.set(ctx)


def unbind_job(token: Token[JobContext | None]) -> None:
    """End the job scope ``bind_job`` began."""
    _job.reset(token)


def current_job() -> JobContext | None:
    """The ``JobContext`` of the handler running in this context, or None outside one.

    For code a handler calls without passing ``ctx`` along: a middleware's ``before_dispatch``
    continuing the job's trace into the jobs it dispatches, a log processor.
    """
    return _job.get()


def job_fields() -> dict[str, Any]:
    """The running job's log fields (``job_id``, ``task``, ``attempt``, ``trace_id``), or ``{}``.

    For loggers that never make a ``logging`` record: a structlog processor, or Powertools'
    ``logger.append_keys(**job_fields())``.
    """
    ctx = _job.get()
    return {} if ctx is None else dict(ctx.log_fields)


class incoming_trace:  # lower case: used like contextlib.suppress
    """The trace context a host received beside the message, for jobs that carry none.

    ``with incoming_trace({"xray": header}): worker.process(body)``. The Lambda host passes an
    SQS record's ``AWSTraceHeader``: SQS sets it when the producer's SendMessage had the
    ``AWSTraceHeader`` system attribute (taskhop's SQS transports add it from the envelope or a
    traced Lambda's ``_X_AMZN_TRACE_ID``). ``JobContext.trace`` prefers the envelope's own.
    """

    __slots__ = ("_token", "_trace")

    def __init__(self, trace: Mapping[str, str] | None) -> None:
        self._trace = trace or None

    def __enter__(self) -> None:
        # A class, not @contextmanager: this is per message, and a generator costs ~1 µs.
        self._token = _incoming.set(self._trace)

    def __exit__(self, *exc: object) -> None:
        _incoming.reset(self._token)


def incoming() -> Mapping[str, str] | None:
    """The trace ``incoming_trace`` holds in this context, if any."""
    return _incoming.get()


def trace_id(trace: Mapping[str, str]) -> str | None:
    """The trace id of a trace map: W3C ``traceparent``'s, else the X-Ray header's ``Root``.

    Only well-formed ids count: the map comes from the producer, and a log line must not carry
    whatever text it holds.
    """
    parent = trace.get("traceparent")
    if parent and (match := _TRACEPARENT.fullmatch(parent.strip())):
        return match.group(1)
    for part in trace.get("xray", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "Root" and _XRAY_ROOT.fullmatch(value):
            return value
    return None


class JobLogFilter(logging.Filter):
    """Adds the running job's fields to each record a handler writes; drops nothing.

    ``configure_logging`` adds it to taskhop's handler and the root logger's; add it to a
    handler or logger of your own (a Powertools ``Logger`` is a logger) for the same fields.
    A field the record already has (your ``extra``) is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _job.get()
        if ctx is not None:
            fields = record.__dict__
            for name, value in ctx.log_fields.items():
                fields.setdefault(name, value)
        return True


_FILTER = JobLogFilter()
_adopted: list[logging.Handler] | None = None
"""The root handlers last given ``_FILTER``; None until ``configure_logging`` runs."""


def _adopt_root_handlers() -> None:
    global _adopted
    handlers = list(logging.root.handlers)
    for handler in handlers:
        if not any(isinstance(f, JobLogFilter) for f in handler.filters):
            handler.addFilter(_FILTER)
    _adopted = handlers


# -- formats ---------------------------------------------------------------------------------


_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",  # 3.12+
}
"""What every record has: the rest of a record's attributes are ``extra`` fields."""
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str, ensure_ascii=False)


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record, keyed as Lambda's JSON log format keys them.

    ``timestamp`` (UTC, milliseconds), ``level``, ``logger``, ``message``, the job fields, the
    record's other ``extra`` fields, and for an exception ``errorType``, ``errorMessage`` and
    ``stackTrace``. Values that are not JSON are written as their ``str``.
    """

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "timestamp": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for name in JOB_KEYS:
            if (value := fields.get(name)) is not None:
                line[name] = value
        for name, value in fields.items():
            if name not in _RECORD_ATTRIBUTES and name not in line and value is not None:
                line[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            kind, error, _ = record.exc_info
            line["errorType"] = kind.__name__
            line["errorMessage"] = str(error)
            line["stackTrace"] = self.formatException(record.exc_info).splitlines()
        if record.stack_info:
            line["stackInfo"] = record.stack_info
        return _ENCODER.encode(line)


class TextLineFormatter(logging.Formatter):
    """``time LEVEL logger: message`` plus the job fields a record carries (``job_id=...``)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [
            f"{name}={value}"
            for name in _TEXT_KEYS
            if (value := record.__dict__.get(name)) is not None
        ]
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # a traceback goes after the fields
        return f"{head} [{' '.join(fields)}]{newline}{rest}"


class _TaskhopHandler(logging.StreamHandler[TextIO]):
    """taskhop's own handler; ``yields`` makes it step aside once the root logger has one.

    An app module may call ``logging.basicConfig()`` when ``--app`` loads it, after this
    handler is in place: from then on its handlers get taskhop's records (they propagate),
    and this one stays quiet so no line is written twice.
    """

    def __init__(self, stream: TextIO, *, yields: bool) -> None:
        super().__init__(stream)
        self.yields = yields

    def emit(self, record: logging.LogRecord) -> None:
        if not (self.yields and logging.root.handlers):
            super().emit(record)


# -- configuration ---------------------------------------------------------------------------


def configure_logging(
    environ: Mapping[str, str] | None = None, *, stream: TextIO | None = None
) -> None:
    """Make taskhop's lines, and each job's, show wherever the process runs; safe to repeat.

    A library configures no logging, so without this ``ctx.log.info`` in a handler and
    taskhop's own warnings ("polling failed", a store outage) are printed nowhere. The command
    line, the local worker and ``make_handler`` on Lambda call it; call it yourself in a
    script that runs a worker. It never touches the root logger's handlers or level and never
    calls ``basicConfig`` (see the module docstring for where lines go).

    Levels: the ``taskhop`` loggers go by ``$TASKHOP_LOG_LEVEL`` and Lambda's
    ``$AWS_LAMBDA_LOG_LEVEL``; with both, the stricter wins (in JSON format Lambda drops lines
    below its level anyway, and ``TASKHOP_LOG_LEVEL`` can still quiet taskhop). With neither,
    ``taskhop.job`` (``ctx.log``) is INFO, and so is ``taskhop`` unless logging is yours (a
    root handler other than Lambda's: then taskhop's own lines follow your root level).

    Args:
        environ: the environment to read (default: ``os.environ``).
        stream: where taskhop's own handler writes (default: stderr; Lambda's text format:
            stdout, beside the job event lines).

    Raises:
        SystemExit: ``$TASKHOP_LOG_LEVEL`` or ``$TASKHOP_LOG_FORMAT`` is not a value it takes.

    """
    global _handler
    env = os.environ if environ is None else environ
    level = _level(env)
    fmt = _format(env)
    logger = logging.getLogger("taskhop")
    lambda_handlers = [h for h in logging.root.handlers if _is_lambdas(h)]
    others = [h for h in logging.root.handlers if not _is_lambdas(h)]
    own = [h for h in logger.handlers if not isinstance(h, logging.NullHandler)]
    managed = _handler is not None or not (others or own)  # else logging is yours
    if _handler is None and managed:
        lambda_json = env.get(LAMBDA_LOG_FORMAT_ENV, "").strip().upper() == "JSON"
        if not (lambda_handlers and lambda_json):
            on_lambda = bool(lambda_handlers)
            out = stream or (sys.stdout if on_lambda else sys.stderr)
            _handler = _TaskhopHandler(out, yields=not on_lambda)
            chosen = fmt or ("text" if _isatty(out) else "json")
            _handler.setFormatter(JsonLineFormatter() if chosen == "json" else TextLineFormatter())
            _handler.addFilter(_FILTER)
            logger.addHandler(_handler)
            if on_lambda:
                logger.propagate = False  # Lambda's text handler would write each line again
    if level is not None:
        logger.setLevel(level)
        logging.getLogger(JOB_LOGGER).setLevel(level)
    else:
        if managed and logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        job = logging.getLogger(JOB_LOGGER)
        if job.level == logging.NOTSET:
            job.setLevel(logging.INFO)
    _adopt_root_handlers()


_handler: _TaskhopHandler | None = None


def _is_lambdas(handler: logging.Handler) -> bool:
    """Whether ``handler`` is the one the Lambda Python runtime puts on the root logger."""
    # awslambdaric's bootstrap: LambdaLoggerHandler, or LambdaLoggerHandlerWithFrameType when
    # the format is JSON or a level is set.
    return type(handler).__name__.startswith("LambdaLoggerHandler")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or stand-in stream
        return False


def _level(env: Mapping[str, str]) -> int | None:
    """The stricter of ``$TASKHOP_LOG_LEVEL`` and ``$AWS_LAMBDA_LOG_LEVEL``, None without both."""
    levels: list[int] = []
    wanted = env.get(LOG_LEVEL_ENV, "").strip()
    if wanted:
        levels.append(_parse_level(wanted))
    lambdas = _LAMBDA_LEVELS.get(env.get(LAMBDA_LOG_LEVEL_ENV, "").strip().upper())
    if lambdas is not None:  # the runtime ignores a value it does not know: so does taskhop
        levels.append(lambdas)
    return max(levels) if levels else None


def _parse_level(text: str) -> int:
    if text.isdecimal() and text.isascii():
        return int(text)
    level = logging.getLevelNamesMapping().get(text.upper())
    if level is None:
        names = ", ".join(sorted(logging.getLevelNamesMapping(), key=logging.getLevelName))
        raise SystemExit(f"taskhop: ${LOG_LEVEL_ENV}={text!r} is not a log level ({names})")
    return level


def _format(env: Mapping[str, str]) -> Literal["json", "text"] | None:
    text = env.get(LOG_FORMAT_ENV, "").strip().lower()
    if not text:
        return None
    if text == "json":
        return "json"
    if text == "text":
        return "text"
    raise SystemExit(f"taskhop: ${LOG_FORMAT_ENV}={text!r} is not a log format (json, text)")
