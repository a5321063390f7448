"""A Function URL on this machine: a small HTTP server feeding requests to a handler.

``serve_function_url(handler)`` turns each request into a Function URL event (payload v2),
calls the Lambda handler, and writes its response back. For local development and tests on
127.0.0.1; on AWS the Function URL does this.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Generator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from ._local import LocalContext

__all__ = ["serve_function_url"]


@contextmanager
def serve_function_url(
    handler: Callable[[dict[str, Any], Any], Any], *, host: str = "127.0.0.1", port: int = 0
) -> Generator[str]:
    """Serve ``handler`` over HTTP until the block ends; yields the base URL."""

    class Adapter(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
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
            answer: dict[str, Any] = handler(event, LocalContext())
            payload = answer.get("body") or ""
            data = (
                base64.b64decode(payload)
                if answer.get("isBase64Encoded")
                else str(payload).encode()
            )
            self.send_response(int(answer.get("statusCode", 200)))
            headers: dict[str, Any] = answer.get("headers") or {}
            for name, value in headers.items():
                self.send_header(name, str(value))
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the per-request stderr lines."""

    server = ThreadingHTTPServer((host, port), Adapter)
    thread = threading.Thread(target=server.serve_forever, name="function-url", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
