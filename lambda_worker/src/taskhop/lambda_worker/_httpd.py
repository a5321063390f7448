"""A Function URL on this machine: a small HTTP server feeding requests to a handler.

``serve_function_url(handler)`` turns each request into a Function URL event (payload v2),
calls the Lambda handler, and writes its response back. For local development and tests on
127.0.0.1; on AWS the Function URL does this.

The standard library's ``ThreadingHTTPServer`` (one thread per connection), used with care:

- bodies are read by ``Content-Length`` or, for ``Transfer-Encoding: chunked``, chunk by
  chunk (HTTP/1.1, RFC 9112 section 7.1), and bounded by Lambda's 6 MB request payload quota;
- every read on a connection has a timeout: a slow or short body is answered 408 and the
  connection closed, so its thread ends instead of waiting forever;
- the listen backlog is 128 connections, not ``socketserver``'s 5, so a burst of clients is
  queued by the kernel instead of refused;
- connections are kept alive (HTTP/1.1), and a handler that raises is answered 500.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
from collections.abc import Callable, Generator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from ._local import LocalContext

__all__ = ["serve_function_url"]

MAX_REQUEST_BYTES = 6 * 1024 * 1024
"""Lambda's invocation payload quota for synchronous (Function URL) requests: 6 MB."""

LISTEN_BACKLOG = 128
"""Connections the kernel queues before ``accept`` (``socketserver``'s default is 5, which
drops connections when many clients connect at once)."""

_MAX_CHUNK_LINE = 1024  # a chunk-size line (hex digits and extensions) or a trailer field
_MAX_TRAILERS = 64
_HEX = frozenset(b"0123456789abcdefABCDEF")
_JSON = {"content-type": "application/json"}


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message}}).encode()


class _BadBody(Exception):
    """A request body that cannot be read; ``status`` is the answer (400, 408 or 413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Server(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a listen backlog sized for bursts of clients."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that went away or stalled; print anything else."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


@contextmanager
def serve_function_url(
    handler: Callable[[dict[str, Any], Any], Any],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    read_timeout: float = 10.0,
) -> Generator[str]:
    """Serve ``handler`` over HTTP until the block ends; yields the base URL.

    Args:
        handler: a Lambda handler taking a Function URL event (``make_handler(app, ...)``).
        host: the address to listen on (keep it local).
        port: the port; 0 picks a free one.
        read_timeout: seconds any one read on a connection may wait (a request line, a
            header, a piece of body) before the connection is answered 408 and closed.

    """

    class Adapter(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = read_timeout  # StreamRequestHandler sets it on the socket: every read

        def _serve(self) -> None:
            try:
                body = self._body()
            except _BadBody as exc:
                self.close_connection = True
                self._write(exc.status, _error(str(exc)), _JSON)
                return
            url = urlsplit(self.path)
            event = {
                "version": "2.0",
                "rawPath": url.path,
                "rawQueryString": url.query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "requestContext": {"http": {"method": self.command, "path": url.path}},
                "body": base64.b64encode(body).decode(),
                "isBase64Encoded": True,
            }
            try:
                answer: dict[str, Any] = handler(event, LocalContext())
                payload = answer.get("body") or ""
                data = (
                    base64.b64decode(payload)
                    if answer.get("isBase64Encoded")
                    else str(payload).encode()
                )
                status = int(answer.get("statusCode", 200))
                headers: dict[str, Any] = answer.get("headers") or {}
            except Exception as exc:  # a Function URL answers 502 for a failed function
                self._write(502, _error(f"the handler raised {type(exc).__name__}"), _JSON)
                return
            self._write(status, data, headers)

        def _write(self, status: int, data: bytes, headers: dict[str, Any]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, str(value))
            self.send_header("content-length", str(len(data)))
            if self.close_connection:
                self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            """The request body, by length or chunked; ``_BadBody`` when it cannot be read."""
            try:
                if "chunked" in self.headers.get("transfer-encoding", "").lower():
                    return self._chunked()
                text = self.headers.get("content-length") or "0"
                if not (text.isascii() and text.isdecimal()) or len(text) > 12:
                    raise _BadBody(400, f"Content-Length {text[:20]!r} is not a byte count")
                length = int(text)
                if length > MAX_REQUEST_BYTES:
                    raise _BadBody(413, f"body over {MAX_REQUEST_BYTES} bytes")
                return self._exactly(length)
            except TimeoutError:
                raise _BadBody(
                    408, f"the request body did not arrive within {read_timeout:g}s"
                ) from None

        def _exactly(self, length: int) -> bytes:
            data = self.rfile.read(length)
            if len(data) < length:  # the client closed the connection mid-body
                raise _BadBody(400, f"body ended after {len(data)} of {length} bytes")
            return data

        def _chunked(self) -> bytes:
            parts: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(_MAX_CHUNK_LINE + 1)
                if not line.endswith(b"\n"):
                    raise _BadBody(400, "chunk size line is missing or too long")
                size_text = line.split(b";", 1)[0].strip()  # chunk extensions are ignored
                if not size_text or not _HEX.issuperset(size_text):
                    raise _BadBody(400, "chunk size is not hexadecimal")
                size = int(size_text, 16)
                if size == 0:
                    break
                total += size
                if total > MAX_REQUEST_BYTES:
                    raise _BadBody(413, f"body over {MAX_REQUEST_BYTES} bytes")
                parts.append(self._exactly(size))
                if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                    raise _BadBody(400, "chunk data is not followed by CRLF")
            for _ in range(_MAX_TRAILERS + 1):  # trailer fields, then the empty line
                line = self.rfile.readline(_MAX_CHUNK_LINE + 1)
                if line in (b"\r\n", b"\n", b""):
                    return b"".join(parts)
            raise _BadBody(400, f"more than {_MAX_TRAILERS} trailer fields")

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the per-request stderr lines."""

    server = _Server((host, port), Adapter)
    # A short poll interval: shutdown() waits for the loop to look, 0.5 s by default.
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="function-url", daemon=True
    )
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
