"""Fault injection and fault logs shared by the soak's worker app and its producer.

Throttling is answered before a request leaves (botocore's ``before-send``), so botocore sees a
real throttling error and applies its own retries. The logs are small O_APPEND writes, whole
lines even across processes and across a SIGKILL, which is how the driver counts what happened.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders

THROTTLE_CODES = {
    "sqs": "ThrottlingException",
    "dynamodb": "ProvisionedThroughputExceededException",
}


def append(directory: Path, name: str, line: str) -> None:
    """One whole line onto a shared log (one write to an O_APPEND file)."""
    fd = os.open(directory / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def inject_throttling(
    session: Any, probability: float, rng: random.Random, directory: Path
) -> None:
    """Answer a share of ``session``'s AWS requests with the service's throttling error."""

    class Body:
        def __init__(self, payload: bytes) -> None:
            self.payload = payload

        def stream(self, **_: Any) -> Iterator[bytes]:
            yield self.payload

    def maybe_throttle(request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        if rng.random() >= probability:
            return None
        service, operation = event_name.split(".")[1:3]
        code = THROTTLE_CODES.get(service, "ThrottlingException")
        append(directory, "throttles.log", f"{os.getpid()} {service} {operation}")
        payload = json.dumps({"__type": code, "message": "Rate exceeded (injected)"}).encode()
        headers = HTTPHeaders()
        headers["x-amzn-query-error"] = f"{code};Sender"
        headers["content-type"] = "application/x-amz-json-1.0"
        return AWSResponse(request.url, 400, headers, Body(payload))

    session.events.register_first("before-send", maybe_throttle)
