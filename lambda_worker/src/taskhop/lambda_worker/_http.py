"""The HTTP endpoint: signed envelopes in over API Gateway or a Function URL.

Serves API Gateway REST (payload v1), HTTP API (v2) and Function URL events, base64 bodies
included. For each POST, in this order and never another: size check, signature check
(constant time, before anything is parsed), envelope decode, task lookup, input validation,
then enqueue (``mode="enqueue"``: put the job on the app's queue, answer 202) or run
(``mode="run"``: run the handler within the invocation's time, answer with the outcome).

Replays and retries are one thing here. A producer re-signs every retry, and within one
second a re-signed retry has the very signature of the first try, so a signature is not what
identifies a request: the signed envelope's **job id** is. A request for a job the endpoint
accepted before (found in the app's job store, which every instance shares, or in this
instance's memory of the ids it sent lately) is answered as that job, ``{"job_id", "status",
"duplicate": true}``, and nothing is sent or run again.

Answers: 401 missing, malformed, wrong or expired signature; 413 too large; 400 invalid envelope
(``error.field``) or input (``error.fields``, field paths); 404 unknown task; 405 other
methods; 202 / 200 on success; 200 for a duplicate; 503 with ``Retry-After`` when the queue or
the store cannot take the job now; 500 (JSON) for anything unforeseen, never an exception out
of the endpoint. A ``GET .../health`` route. Bodies, secrets and idempotency keys are never
logged.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import threading
import time
import traceback
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Literal

from taskhop.sdk import (
    App,
    Envelope,
    EnvelopeError,
    ErrorInfo,
    JobRecord,
    JobStatus,
    JobStore,
    MigrationError,
    NoStore,
    OutcomeKind,
    Reason,
    StoreError,
    ValidationError,
)
from taskhop.static_contracts import SignatureError, TransportError, Verifier, format_timestamp
from taskhop.static_contracts.limits import SQS_MAX_MESSAGE_BYTES

from ._logs import emit_job

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["HttpEndpoint"]

_log = logging.getLogger("taskhop.http")

RETRY_AFTER = 1
"""Seconds a producer waits before retrying a job the queue or the store could not take now
(SQS throttling and DynamoDB's adaptive capacity recover within seconds)."""


class HttpEndpoint:
    """An HTTP endpoint for ``app``; pass it to ``make_handler(app, http=...)``.

    A request for a job the endpoint has accepted before (the same signed request replayed,
    or the producer's re-signed retry) is answered as that job: 200 with ``{"job_id",
    "status", "duplicate": true}`` and its result once it succeeded; nothing is enqueued or
    run again. The job store (``app.store``, shared by every instance) says which jobs were
    accepted. This instance also remembers the ids it sent lately (``remember`` of them, for
    twice the skew window): the only line without a store, and a backstop for a job sent
    whose record was not written (a store write that failed after the send).

    Without a job store a replay can be recognised only by the instance that accepted it.
    ``mode="run"`` therefore refuses to build without one (it would run a replayed job's
    handler again); ``mode="enqueue"`` builds, and a replay reaching another instance is
    enqueued again, to be deduplicated by job id only by workers that have a store.

    In run mode a job whose ``not_before`` is in the future is put on the app's transport
    (which must be a queue, not this endpoint) and answered 202 ``"deferred"``; if the
    transport refuses it, 503 with ``Retry-After`` set to the wait, so the producer sends it
    again when it is due.

    Args:
        app: the app whose tasks the endpoint accepts.
        secrets: the signing secrets accepted now (the current one and, while rotating, the
            next).
        mode: ``"enqueue"`` (validate, put on the queue, 202) or ``"run"`` (run it now).
        max_body: bytes accepted per request, as sent and as re-encoded for the queue.
        max_skew: seconds a signature's timestamp may differ from this clock.
        remember: how many accepted job ids this instance keeps in memory.

    Raises:
        ValueError: an unknown ``mode``, or ``mode="run"`` for an app without a job store.

    """

    def __init__(
        self,
        app: App,
        *,
        secrets: Sequence[str | bytes],
        mode: Literal["enqueue", "run"] = "enqueue",
        max_body: int = SQS_MAX_MESSAGE_BYTES,
        max_skew: float = 300,
        remember: int = 10_000,
    ) -> None:
        if mode not in ("enqueue", "run"):
            raise ValueError(f"mode: 'enqueue' or 'run', got {mode!r}")
        store = app.store
        self._store: JobStore | None = (
            None if store is None or isinstance(store, NoStore) else store
        )
        if mode == "run" and self._store is None:
            raise ValueError(
                "HttpEndpoint(mode='run') needs a job store: without one a replayed or retried"
                " request cannot be told from a new job and would run the handler again."
                " Build the app with create_app(queue=..., store=...), or use mode='enqueue'"
            )
        self.app = app
        self.mode = mode
        self.max_body = max_body
        self.verifier = Verifier(secrets, max_skew=max_skew)
        self._accepted = _Recent(limit=remember, horizon=2 * max_skew)

    def __call__(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        """Answer one HTTP event with an API Gateway / Function URL response; never raise."""
        try:
            return self._answer(event, context)
        except Exception as exc:  # the last line: a response, whatever failed
            # The type and the frames only: an exception's message may quote the body.
            _log.error(
                "unhandled %s while answering an HTTP request (message and body not logged)\n%s",
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            return _json(
                500,
                _error(
                    "InternalError",
                    "the endpoint failed before answering; the job may not have been accepted:"
                    " send it again (a job it did accept is answered as a duplicate)",
                ),
            )

    def _answer(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            method, path, headers, body = _request(event)
        except (binascii.Error, ValueError):
            return _json(400, _error("BadRequest", "the request body is not valid base64"))
        if method == "GET" and path.rstrip("/").endswith("/health"):
            return _json(200, {"status": "ok", "mode": self.mode})
        if method != "POST":
            return _json(405, _error("MethodNotAllowed", f"{method} is not served; POST a job"))
        if len(body) > self.max_body:
            return _json(413, _error("TooLarge", f"body over {self.max_body} bytes"))
        try:
            self.verifier.authenticate(headers, body)
        except SignatureError as exc:
            _log.warning("refused request: %s", exc.reason)
            return _json(401, _error("SignatureError", str(exc), reason=exc.reason))
        try:
            envelope = Envelope.decode(body)
            encoded = _encode(envelope)
        except EnvelopeError as exc:
            return _json(400, _envelope_error(exc))
        bound = self.app.tasks.get(envelope.task)
        if bound is None:
            known = ", ".join(sorted(self.app.tasks))
            return _json(
                404, _error("UnknownTaskError", f"unknown task {envelope.task!r} (known: {known})")
            )
        problem = self._invalid(envelope)
        if problem is not None:
            return _json(400, {"error": problem.to_dict()})
        try:
            if self.mode == "enqueue":
                return self._enqueue(envelope, encoded, body)
            return self._run(envelope, encoded, body, context)
        except StoreError as exc:
            _log.warning(
                "job store unavailable for job %s (retryable=%s): %s",
                envelope.id,
                exc.retryable,
                type(exc).__name__,
            )
            return _json(
                503,
                _error("StoreError", "the job store cannot be reached now; retry"),
                {"retry-after": str(RETRY_AFTER)},
            )

    def _invalid(self, envelope: Envelope) -> ErrorInfo | None:
        """Why the task's validator refuses the input now, or None to accept the job.

        The validator is the worker's own (migrations included), so what is refused here is
        what the worker would reject. A job no worker here can judge (a newer version, or an
        older one for a task this app only registers) is accepted: a worker decides. An
        offloaded input (``input_ref``) is the worker's to load and check.
        """
        if envelope.input_ref is not None:
            return None
        try:
            self.app.get(envelope.task).validator.validate(envelope.input, envelope.version)
        except MigrationError as exc:
            return None if exc.retryable else exc.info
        except ValidationError as exc:
            return ErrorInfo("ValidationError", exc.summary, exc.errors)
        return None

    # -- enqueue mode ---------------------------------------------------------------------------

    def _enqueue(self, envelope: Envelope, encoded: bytes, body: bytes) -> dict[str, Any]:
        """Send the job once per job id: a job accepted before is answered, not sent again."""
        duplicate = self._duplicate(envelope)
        if duplicate is not None:
            return duplicate
        refused = self._send(envelope, encoded, body, retry_after=RETRY_AFTER)
        if refused is not None:
            return refused
        return _json(202, {"job_id": envelope.id, "status": JobStatus.QUEUED.value})

    def _duplicate(self, envelope: Envelope) -> dict[str, Any] | None:
        """The answer for a job accepted before (the store first, then this instance)."""
        record = None if self._store is None else self._store.get(envelope.id)
        if record is not None:
            return _json(200, _recorded(record))
        if envelope.id in self._accepted:  # sent, but its record is not (yet) in a store
            return _json(
                200, {"job_id": envelope.id, "status": JobStatus.QUEUED.value, "duplicate": True}
            )
        return None

    def _send(
        self, envelope: Envelope, encoded: bytes, body: bytes, *, retry_after: int
    ) -> dict[str, Any] | None:
        """Put the job on the app's transport and record it accepted; the refusal, or None.

        Send, then record: a send that fails leaves no record (the producer's retry sends
        it), and two racing requests for one job id send it twice at worst, which workers
        deduplicate by job id.
        """
        # The transport re-encodes the envelope (a Transport takes envelopes, not bytes), and
        # re-encoding can grow a body (1e5 becomes 100000.0): past the endpoint's limit (the
        # SQS message limit by default, 1 MiB) it is refused here, never by a crash in send.
        if len(encoded) > self.max_body:
            return _json(
                413,
                _error(
                    "TooLarge",
                    f"the envelope re-encodes to {len(encoded)} bytes (sent as {len(body)}),"
                    f" over the {self.max_body}-byte limit; write numbers as the encoder"
                    " does (100000.0, not 1e5) or offload the input (input_ref)",
                ),
            )
        try:
            self.app.transport.send(envelope)
        except TransportError as exc:
            _log.warning(
                "could not enqueue job %s (retryable=%s): %s",
                envelope.id,
                exc.retryable,
                str(exc)[:300],
            )
            error = _error("TransportError", "the queue did not take the job; send it again later")
            error["error"]["retryable"] = True
            if envelope.delay_seconds() > 0:
                error["job_id"], error["status"] = envelope.id, OutcomeKind.DEFERRED.value
            return _json(503, error, {"retry-after": str(retry_after)})
        self._accepted.add(envelope.id)
        if self._store is not None:
            try:
                self._store.accept(
                    envelope.id, task=envelope.task, idempotency_key=envelope.idempotency_key
                )
            except StoreError as exc:  # sent: the worker records it when it runs
                _log.warning(
                    "job %s enqueued, but not recorded as accepted (%s)",
                    envelope.id,
                    type(exc).__name__,
                )
        return None

    # -- run mode -------------------------------------------------------------------------------

    def _run(self, envelope: Envelope, encoded: bytes, body: bytes, context: Any) -> dict[str, Any]:
        if envelope.delay_seconds() > 0:
            return self._defer(envelope, encoded, body)
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        deadline = None if remaining is None else time.monotonic() + remaining() / 1000 - 3
        # The worker's begin() deduplicates by job id in the store: a finished job is
        # skipped, a running one is busy; neither runs the handler again.
        outcome = self.app.worker().process(envelope, deadline=deadline)
        emit_job(outcome, source="http")
        kind = outcome.kind
        if kind is OutcomeKind.DEFERRED:  # not_before passed our check but not the worker's
            return self._defer(envelope, encoded, body)
        if kind is OutcomeKind.SKIPPED and outcome.reason == Reason.SUSPENDED:
            # ctx.invoke: recorded waiting for a child, resumed by a message; poll for it
            return _json(202, {"job_id": envelope.id, "status": JobStatus.WAITING.value})
        if kind is OutcomeKind.SKIPPED:
            record = None if self._store is None else self._store.get(envelope.id)
            if record is not None and record.status.is_final:
                return _json(200, _recorded(record))
            state = JobStatus.RUNNING if record is None else record.status
            return _json(
                503,
                {"job_id": envelope.id, "status": state.value, "duplicate": True},
                {"retry-after": str(RETRY_AFTER)},
            )
        answer: dict[str, Any] = {"job_id": envelope.id, "status": kind.value}
        if kind is OutcomeKind.SUCCEEDED:
            answer["result"] = outcome.result
            return _json(200, answer)
        if outcome.error is not None:
            answer["error"] = outcome.error.to_dict()
        if outcome.reason:
            answer["reason"] = outcome.reason
        code = {OutcomeKind.REJECTED: 400, OutcomeKind.RETRY: 503}.get(kind, 422)
        headers: dict[str, str] = {}
        if kind is OutcomeKind.RETRY:
            after = RETRY_AFTER if outcome.retry_after is None else outcome.retry_after
            headers["retry-after"] = str(max(1, math.ceil(after)))
        return _json(code, answer, headers)

    def _defer(self, envelope: Envelope, encoded: bytes, body: bytes) -> dict[str, Any]:
        """A job not due yet: on the queue for later (202 "deferred"), never dropped."""
        duplicate = self._duplicate(envelope)
        if duplicate is not None:
            return duplicate
        wait = max(1, math.ceil(envelope.delay_seconds()))
        refused = self._send(envelope, encoded, body, retry_after=wait)
        if refused is not None:
            return refused
        answer: dict[str, Any] = {"job_id": envelope.id, "status": OutcomeKind.DEFERRED.value}
        if envelope.not_before is not None:
            answer["not_before"] = format_timestamp(envelope.not_before)
        return _json(202, answer)


class _Recent:
    """Job ids this instance accepted lately: bounded in number and in age, thread-safe."""

    def __init__(self, *, limit: int, horizon: float) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._limit = limit
        self._horizon = horizon
        self._lock = threading.Lock()

    def add(self, job_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._seen[job_id] = now
            self._seen.move_to_end(job_id)
            while self._seen and (
                len(self._seen) > self._limit
                or next(iter(self._seen.values())) < now - self._horizon
            ):
                self._seen.popitem(last=False)

    def __contains__(self, job_id: object) -> bool:
        with self._lock:
            seen = self._seen.get(job_id) if isinstance(job_id, str) else None
        return seen is not None and seen >= time.monotonic() - self._horizon


def _recorded(record: JobRecord) -> dict[str, Any]:
    """The answer for a job the store has a record of: its state (and result, once final)."""
    answer: dict[str, Any] = {
        "job_id": record.id,
        "status": record.status.value,
        "duplicate": True,
    }
    if record.status is JobStatus.SUCCEEDED:
        answer["result"] = record.result
    if record.status.is_final and record.error is not None:
        answer["error"] = record.error.to_dict()
    return answer


def _encode(envelope: Envelope) -> bytes:
    """The envelope as the transport will write it; ``EnvelopeError`` for what JSON cannot carry.

    NaN and the infinities (``NaN``, ``Infinity``, ``1e400``) are not JSON (docs/protocol.md):
    a decoder that let them through must not crash the send. The error names the first path.
    """
    try:
        return envelope.encode()
    except ValueError:
        for name in ("input", "continuation"):
            path = _non_finite(getattr(envelope, name), name)
            if path is not None:
                break
        else:
            path = next(
                (
                    found
                    for key, value in (envelope.extensions or {}).items()
                    if (found := _non_finite(value, key)) is not None
                ),
                "input",
            )
        raise EnvelopeError(
            f"envelope field '{path}' is not a JSON number (NaN and infinities are not JSON)",
            reason=Reason.INVALID_FIELD,
            field=path,
        ) from None
    except RecursionError:
        raise EnvelopeError(
            "body is JSON nested too deeply to encode again", reason=Reason.NOT_JSON
        ) from None


def _non_finite(value: object, path: str) -> str | None:
    """The path of the first NaN or infinity in ``value``, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        mapping: dict[str, Any] = value  # pyright: ignore[reportUnknownVariableType]
        for key, item in mapping.items():
            found = _non_finite(item, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list):
        items: list[Any] = value  # pyright: ignore[reportUnknownVariableType]
        for index, item in enumerate(items):
            found = _non_finite(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _envelope_error(exc: EnvelopeError) -> dict[str, Any]:
    """A 400 body for a decode error: ``reason``, ``field`` and, as for inputs, ``fields``."""
    error = _error("EnvelopeError", str(exc), reason=exc.reason)
    if exc.field is not None:
        error["error"]["field"] = exc.field
        error["error"]["fields"] = [{"path": exc.field, "message": str(exc)}]
    return error


def _request(event: dict[str, Any]) -> tuple[str, str, dict[str, str], bytes]:
    """Method, path, lower-cased headers and raw body of a v1 or v2 proxy event.

    Raises:
        binascii.Error: a body marked base64 that is not.

    """
    context: dict[str, Any] = event.get("requestContext") or {}
    http: dict[str, Any] = context.get("http") or {}
    method = str(event.get("httpMethod") or http.get("method") or "").upper()
    path = str(event.get("rawPath") or event.get("path") or "/")
    given: dict[str, Any] = event.get("headers") or {}
    headers = {str(k).lower(): str(v) for k, v in given.items()}
    raw = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(raw)
    else:
        body = str(raw).encode("utf-8", "surrogatepass")
    return method, path, headers, body


def _error(kind: str, message: str, **extra: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, **extra}}


def _json(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json", **(headers or {})},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }
