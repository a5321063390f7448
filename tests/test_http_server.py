"""The local Function URL server (``serve_function_url``): chunked bodies, read timeouts, load."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
from conftest import EmailSent, send_email
from taskhop.lambda_worker import HttpEndpoint, make_handler
from taskhop.lambda_worker._httpd import serve_function_url
from taskhop.sdk import JobStatus, create_app
from taskhop.sdk.memory import MemoryQueue, MemoryStore
from taskhop.static_contracts import Envelope, signed_headers
from test_http import SECRET


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A handler that answers with the body it was given, and its length."""
    body = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"]
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"length": len(body), "body": body.decode("utf-8", "replace")}),
    }


def raw_exchange(url: str, request: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``request`` as is on a fresh connection; return everything until the server closes."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        return received


def settles(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Whether ``check`` becomes true within ``timeout`` seconds (a thread ending, say)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_chunked_body_reaches_the_handler_whole() -> None:
    """httpx streams a generator as Transfer-Encoding: chunked; the endpoint gets every byte."""
    app = create_app(queue=MemoryQueue(), store=MemoryStore())
    app.implement(send_email, lambda data, ctx: EmailSent("m"))
    handler = make_handler(app, http=HttpEndpoint(app, secrets=[SECRET]))
    envelope = Envelope(task="send-email", input={"to": "a" * 5000, "subject": "s"})
    body = envelope.encode()

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    with serve_function_url(handler) as url:
        response = httpx.post(f"{url}/jobs", content=pieces(), headers=signed_headers(SECRET, body))
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert (response.status_code, response.json()["job_id"]) == (202, envelope.id)
    assert app.store is not None
    record = app.store.get(envelope.id)
    assert record is not None
    assert record.status is JobStatus.QUEUED
    app.close()


def test_chunk_extensions_and_trailers_are_read_past() -> None:
    """Chunk extensions are ignored and trailer fields skipped, as HTTP/1.1 requires."""
    request = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
    )
    with serve_function_url(echo) as url:
        raw = raw_exchange(url, request)
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(payload) == {"length": 11, "body": "hello world"}


def test_malformed_bodies_answer_400_or_413() -> None:
    """A bad chunk size or Content-Length is a 400; a body over Lambda's 6 MB quota a 413."""
    requests = {
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n": b"400",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \xc2\xb9\r\n\r\n": b"400",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999999\r\n\r\n": b"413",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFF\r\n": b"413",
    }
    with serve_function_url(echo) as url:
        for request, status in requests.items():
            assert raw_exchange(url, request).split(b" ", 2)[1] == status


def test_a_slow_or_short_body_gets_408_and_frees_its_connection() -> None:
    """A body that stops short of its Content-Length is answered 408 once the read times out."""
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
    with serve_function_url(echo, read_timeout=0.3) as url:
        before = threading.active_count()
        raw = raw_exchange(url, request)  # returns only when the server closes the connection
        assert raw.startswith(b"HTTP/1.1 408")
        assert b"connection: close" in raw.lower()
        assert settles(lambda: threading.active_count() <= before)  # its thread has ended
        assert httpx.get(f"{url}/health").status_code == 200  # the server serves on


def test_a_handler_that_raises_answers_502() -> None:
    """As a Function URL does when the function fails: a response, not a dropped connection."""

    def broken(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    with serve_function_url(broken) as url:
        response = httpx.get(f"{url}/x")
    assert response.status_code == 502
    assert "RuntimeError" in response.json()["error"]["message"]


def test_two_thousand_requests_from_eight_clients_are_all_answered() -> None:
    """8 threads x 250 signed jobs, each on a new connection: 2,000 answers, 2,000 jobs queued."""
    queue, store = MemoryQueue(), MemoryStore()
    app = create_app(queue=queue, store=store)
    app.implement(send_email, lambda data, ctx: EmailSent("m"))
    handler = make_handler(app, http=HttpEndpoint(app, secrets=[SECRET]))
    statuses: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(url: str) -> None:
        with httpx.Client(timeout=30) as http:
            for _ in range(250):
                body = Envelope(task="send-email", input={"to": "a", "subject": "s"}).encode()
                headers = {**signed_headers(SECRET, body), "connection": "close"}
                try:
                    status = http.post(f"{url}/jobs", content=body, headers=headers).status_code
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(exc)
                    continue
                with lock:
                    statuses.append(status)

    with serve_function_url(handler) as url:
        threads = [threading.Thread(target=client, args=(url,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert errors == []
    assert statuses == [202] * 2000
    assert queue.pending == 2000
    assert len(store.records()) == 2000
    app.close()
