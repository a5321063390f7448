"""A local HTTP proxy that gives each AWS request a fixed latency, in front of moto.

In front of a moto server it stands in for the network between a Lambda function and its
region's endpoints: every client pays the same delay per request, whoever made the client
(a botocore hook would only slow the clients it is attached to). It runs in a process of its
own, so its work never competes for the measured process's GIL.

HTTP/1.1 keep-alive towards clients: a client connection stays open for as long as the client
keeps it, as AWS's endpoints do, so connection reuse (or the lack of it) costs what it would
against AWS. Upstream, each client connection has its own connection to moto, which moto's
server closes after every answer. Requests are counted by operation, ``service.Operation``
(the ``X-Amz-Target`` header of JSON protocols, else the query protocol's ``Action``; the
service from the signature's credential scope), with the connections clients opened.

Control paths under ``/__latency_proxy__/`` (no AWS request uses them): ``take`` answers the
counts as JSON and starts them again from zero.

Why a floor by default: moto's time per request is its own (pure Python), not AWS's, and it
varies with the request: an UpdateItem with a long expression costs stock moto 3x a plain
PutItem. AWS answers both in about the same few milliseconds, so a request here takes the
delay, or moto's time when that is longer (reported per operation: see ``UPSTREAM``).

Run as ``python -m bench._latency_proxy UPSTREAM DELAY_MS floor|add``: it prints its URL on
its first line of output, then serves until terminated.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "AT_MOTO", "CONNECTIONS", "IN_FLIGHT", "UPSTREAM", "Proxy", "latency_proxy", "requests",
]  # fmt: skip

CONTROL = "/__latency_proxy__/"
CONNECTIONS = "connections"
"""The key under which ``take`` reports the client connections opened since the last take."""
# Hop-by-hop headers (RFC 9110 section 7.6.1) belong to one connection, not the message.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
    "upgrade",
}  # fmt: skip
UPSTREAM = "upstream_ms "
"""Prefix of the keys under which ``take`` reports the milliseconds moto took, by operation
(summed: requests that overlap each count their own time, waiting in moto included)."""
IN_FLIGHT = "in_flight_ms"
"""How long at least one request was in flight (from its arrival to its answer): the rest of
a batch's wall time the client spent outside requests (its CPU, its handler's sleeps)."""
AT_MOTO = "at_moto_ms"
"""How long at least one request was at moto: a batch whose wall time is mostly this is bound
by moto's own speed, not by the delay."""
SCOPE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")


def operation(method: str, path: str, headers: Any, body: bytes) -> str:
    """``service.Operation`` for an AWS request, from its headers, query or form body."""
    scope = SCOPE.search(headers.get("Authorization", ""))
    service = scope.group(1) if scope else "unknown"
    target = headers.get("X-Amz-Target")
    if target:  # JSON protocols: "DynamoDB_20120810.GetItem", "AmazonSQS.SendMessage"
        return f"{service}.{target.rsplit('.', 1)[-1]}"
    query = parse_qs(urlsplit(path).query) or parse_qs(body.decode("latin-1"))
    action = query.get("Action")
    return f"{service}.{action[0]}" if action else f"{service}.{method} {urlsplit(path).path}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, delay: float, floor: bool) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.delay = delay
        self.floor = floor
        self.lock = threading.Lock()
        self.counts: defaultdict[str, float] = defaultdict(int)
        self.inside: Counter[str] = Counter()  # requests inside each span now
        self.since: dict[str, float] = {}  # when each span last went from none to some

    def count(self, key: str, n: float = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def take(self) -> dict[str, float]:
        with self.lock:
            taken, self.counts = self.counts, defaultdict(int)
        return taken

    @contextmanager
    def span(self, key: str) -> Iterator[None]:
        """Add to ``key`` the milliseconds during which at least one request was inside."""
        with self.lock:
            if not self.inside[key]:
                self.since[key] = time.perf_counter()
            self.inside[key] += 1
        try:
            yield
        finally:
            with self.lock:
                self.inside[key] -= 1
                if not self.inside[key]:
                    self.counts[key] += (time.perf_counter() - self.since[key]) * 1000


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.counted = False  # counted at its first AWS request: control calls are not clients
        self.upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        super().finish()
        if self.upstream is not None:
            self.upstream.close()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one line per request would cost more than the requests."""

    def do_POST(self) -> None:
        self.forward()

    do_GET = do_PUT = do_DELETE = do_HEAD = do_POST

    def forward(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            self.send_error(501, "chunked request bodies are not supported")  # botocore sends none
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith(CONTROL):
            self.control()
            return
        if not self.counted:
            self.server.count(CONNECTIONS)
            self.counted = True
        # The span ends before the answer is written: once the client has it, it may ask for
        # the counts (``take``), and this request's time must be in them by then.
        with self.server.span(IN_FLIGHT):
            answer = self.relay(body)
        self.answer(*answer)

    def relay(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Count the request, hold it for the delay, forward it; return the answer."""
        name = operation(self.command, self.path, self.headers, body)
        self.server.count(name)
        if not self.server.floor:
            time.sleep(self.server.delay)
        started = time.perf_counter()
        with self.server.span(AT_MOTO):
            response = self.exchange(body)
            data = response.read()
        took = time.perf_counter() - started
        self.server.count(UPSTREAM + name, took * 1000)
        if self.server.floor and took < self.server.delay:
            time.sleep(self.server.delay - took)
        headers = [
            (name, value)
            for name, value in response.getheaders()
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length"
        ]
        if response.will_close and self.upstream is not None:
            # moto's server (werkzeug's) closes every connection after one answer; the
            # client's connection stays open, as AWS's would, and the next request upstream
            # opens a new one (a local TCP connect, part of moto's own service time).
            self.upstream.close()
            self.upstream = None
        return response.status, response.reason, headers, data

    def exchange(self, body: bytes) -> http.client.HTTPResponse:
        """Send the request upstream on this connection's own upstream connection."""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if self.upstream is None:
            self.upstream = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        self.upstream.request(self.command, self.path, body=body, headers=headers)
        return self.upstream.getresponse()

    def control(self) -> None:
        if self.path != CONTROL + "take":
            self.send_error(404)
            return
        data = json.dumps(self.server.take()).encode()
        self.answer(200, "OK", [("Content-Type", "application/json")], data)

    def answer(self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes) -> None:
        """Write the whole answer in one send: headers and body sent apart would meet the
        client's delayed ACK under Nagle's algorithm, a 40 ms stall per request on Linux."""
        lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
        lines.append(f"Content-Length: {len(data)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + (b"" if self.command == "HEAD" else data))


def requests(counts: Counter[str]) -> Counter[str]:
    """The AWS requests in a ``take``, by operation, without the proxy's other figures."""
    spans = (CONNECTIONS, IN_FLIGHT, AT_MOTO)
    return Counter({k: n for k, n in counts.items() if k not in spans and UPSTREAM not in k})


@dataclass
class Proxy:
    """A running proxy: its URL, and the counts it keeps."""

    url: str
    delay: float

    def take(self) -> Counter[str]:
        """The requests by operation since the last take (connections under ``connections``)."""
        host, port = urlsplit(self.url).hostname, urlsplit(self.url).port
        conn = http.client.HTTPConnection(host or "127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", CONTROL + "take")
            return Counter(json.loads(conn.getresponse().read()))
        finally:
            conn.close()


@contextmanager
def latency_proxy(upstream: str, delay: float, *, floor: bool = True) -> Iterator[Proxy]:
    """A proxy process in front of ``upstream``: each request takes ``delay`` seconds.

    With ``floor`` (the default), moto's own time counts towards the delay: a request is
    answered ``delay`` after it arrived, or when moto answers if that is later. Without it,
    the proxy sleeps ``delay`` and then forwards, so moto's time comes on top.
    """
    mode = "floor" if floor else "add"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._latency_proxy", upstream, str(delay * 1000), mode],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url:
            raise RuntimeError(f"the latency proxy did not start (exit code {proc.poll()})")
        yield Proxy(url, delay)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def main(argv: list[str]) -> None:
    upstream, delay_ms, mode = argv
    server = _Server(upstream, float(delay_ms) / 1000, floor=mode == "floor")
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
