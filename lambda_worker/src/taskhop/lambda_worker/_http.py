"""The HTTP endpoint: signed envelopes in over API Gateway or a Function URL.

Serves API Gateway REST (payload v1), HTTP API (v2) and Function URL events, base64 bodies
included. For each POST, in this order and never another: size check, signature check
(constant time, before anything is parsed), envelope decode, task lookup, input validation,
then enqueue (``mode="enqueue"``: put the job on the app's queue, answer 202) or run
(``mode="run"``: run the handler within the invocation's time, answer with the outcome).

Answers: 401 bad, missing, expired or replayed signature; 413 too large; 400 invalid envelope
or input (with field paths); 404 unknown task; 405 other methods; 202 / 200 on success; a
``GET .../health`` route. Bodies and secrets are never logged.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, Literal

from taskhop.sdk import (
    App,
    Envelope,
    EnvelopeError,
    ErrorInfo,
    MigrationError,
    OutcomeKind,
    ValidationError,
)
from taskhop.static_contracts import SignatureError, Verifier
from taskhop.static_contracts.limits import SQS_MAX_MESSAGE_BYTES

from ._logs import emit_job

__all__ = ["HttpEndpoint"]

_log = logging.getLogger("taskhop.http")


class HttpEndpoint:
    """An HTTP endpoint for ``app``; pass it to ``make_handler(app, http=...)``.

    Args:
        app: the app whose tasks the endpoint accepts.
        secrets: the signing secrets accepted now (the current one and, while rotating, the
            next).
        mode: ``"enqueue"`` (validate, put on the queue, 202) or ``"run"`` (run it now).
        max_body: bytes accepted per request.
        max_skew: seconds a signature's timestamp may differ from this clock.

    """

    def __init__(
        self,
        app: App,
        *,
        secrets: Sequence[str | bytes],
        mode: Literal["enqueue", "run"] = "enqueue",
        max_body: int = SQS_MAX_MESSAGE_BYTES,
        max_skew: float = 300,
    ) -> None:
        if mode not in ("enqueue", "run"):
            raise ValueError(f"mode: 'enqueue' or 'run', got {mode!r}")
        self.app = app
        self.mode = mode
        self.max_body = max_body
        self.verifier = Verifier(secrets, max_skew=max_skew)

    def __call__(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        """Answer one HTTP event with an API Gateway / Function URL response."""
        method, path, headers, body = _request(event)
        if method == "GET" and path.rstrip("/").endswith("/health"):
            return _json(200, {"status": "ok", "mode": self.mode})
        if method != "POST":
            return _json(405, _error("MethodNotAllowed", f"{method} is not served; POST a job"))
        if len(body) > self.max_body:
            return _json(413, _error("TooLarge", f"body over {self.max_body} bytes"))
        try:
            self.verifier.verify(headers, body)
        except SignatureError as exc:
            _log.warning("refused request: %s", exc.reason)
            return _json(401, _error("SignatureError", str(exc), reason=exc.reason))
        try:
            envelope = Envelope.decode(body)
        except EnvelopeError as exc:
            return _json(400, _error("EnvelopeError", str(exc), reason=exc.reason))
        bound = self.app.tasks.get(envelope.task)
        if bound is None:
            known = ", ".join(sorted(self.app.tasks))
            return _json(
                404, _error("UnknownTaskError", f"unknown task {envelope.task!r} (known: {known})")
            )
        problem = self._invalid(envelope)
        if problem is not None:
            return _json(400, {"error": problem.to_dict()})
        if self.mode == "enqueue":
            self.app.transport.send(envelope)
            return _json(202, {"job_id": envelope.id})
        return self._run(envelope, context)

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

    def _run(self, envelope: Envelope, context: Any) -> dict[str, Any]:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        deadline = None if remaining is None else time.monotonic() + remaining() / 1000 - 3
        outcome = self.app.worker().process(envelope, deadline=deadline)
        emit_job(outcome, source="http")
        body: dict[str, Any] = {"job_id": envelope.id, "status": outcome.kind.value}
        if outcome.kind in (OutcomeKind.SUCCEEDED, OutcomeKind.SKIPPED) and outcome.error is None:
            body["result"] = outcome.result
            return _json(200, body)
        if outcome.error is not None:
            body["error"] = outcome.error.to_dict()
        status = {OutcomeKind.REJECTED: 400, OutcomeKind.RETRY: 503}.get(outcome.kind, 422)
        headers: dict[str, str] = {}
        if outcome.kind is OutcomeKind.RETRY and outcome.retry_after is not None:
            headers["retry-after"] = str(max(1, round(outcome.retry_after)))
        return _json(status, body, headers)


def _request(event: dict[str, Any]) -> tuple[str, str, dict[str, str], bytes]:
    """Method, path, lower-cased headers and raw body of a v1 or v2 proxy event."""
    context: dict[str, Any] = event.get("requestContext") or {}
    http: dict[str, Any] = context.get("http") or {}
    method = str(event.get("httpMethod") or http.get("method") or "").upper()
    path = str(event.get("rawPath") or event.get("path") or "/")
    given: dict[str, Any] = event.get("headers") or {}
    headers = {str(k).lower(): str(v) for k, v in given.items()}
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else str(raw).encode()
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
