"""AWS Signature Version 4 with the standard library, for boto3-free transports.

The recipe is AWS's (docs.aws.amazon.com, "Create a signed AWS API request"); the tests check
every signature against botocore's own signer. Only what a JSON-protocol POST needs: no
query strings, no chunked payloads.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

__all__ = ["Credentials", "sign_request"]


@dataclass(frozen=True)
class Credentials:
    """An access key, its secret and, for temporary credentials, the session token."""

    access_key: str
    secret_key: str
    token: str | None = None

    @classmethod
    def from_env(cls) -> Credentials:
        """``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``."""
        access, secret = (
            os.environ.get("AWS_ACCESS_KEY_ID"),
            os.environ.get("AWS_SECRET_ACCESS_KEY"),
        )
        if not access or not secret:
            raise LookupError(
                "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                " (and AWS_SESSION_TOKEN for temporary ones)"
            )
        return cls(access, secret, os.environ.get("AWS_SESSION_TOKEN") or None)


def sign_request(
    *,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    service: str,
    region: str,
    credentials: Credentials,
    now: datetime | None = None,
) -> dict[str, str]:
    """Return ``headers`` plus ``host``, ``x-amz-date``, the token and ``authorization``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    amz_date, day = moment.strftime("%Y%m%dT%H%M%SZ"), moment.strftime("%Y%m%d")
    parts = urlsplit(url)
    signed = {k.lower(): v.strip() for k, v in headers.items()}
    signed["host"] = parts.netloc
    signed["x-amz-date"] = amz_date
    if credentials.token:
        signed["x-amz-security-token"] = credentials.token
    names = sorted(signed)
    canonical = "\n".join(
        [
            method.upper(),
            parts.path or "/",
            "",  # no query string
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{credentials.secret_key}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    signed["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return signed
