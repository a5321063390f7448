"""What the AWS backends share: client construction and the one place botocore errors map.

Private to ``backends``: ``sqs`` and ``dynamodb`` import it, nothing else does. Retries of
throttling and 5xx answers are botocore's own ("standard" mode, with its token bucket and
capped exponential backoff with jitter); this module only decides how many, and turns what is
left after them into taskhop errors (``raise ... from exc``), retryable or not by the one code
list in ``_sqs_entries`` (standard library, so the boto3-free transport shares it).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from ._sqs_entries import RETRYABLE_CODES, is_retryable

__all__ = ["RETRYABLE_CODES", "aws_errors", "error_code", "make_client"]

DEFAULT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 8})
"""Eight tries with botocore's standard backoff: about 20 s of throttling before giving up."""


def make_client(
    service: str,
    *,
    client: Any | None,
    session: boto3.Session | None,
    config: Config | None,
) -> Any:
    """The caller's client, or one from their session, or one from the environment.

    Region and endpoint come from the standard AWS environment (``AWS_REGION``,
    ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>``) when the caller gives neither.
    """
    if client is not None:
        return client
    merged = DEFAULT_CONFIG.merge(config) if config is not None else DEFAULT_CONFIG
    # boto3's default session when none is given: it is made once per process, and every
    # client made from it shares its loaded service data (a new Session per client costs
    # tens of milliseconds of cold start each).
    factory: Any = session or boto3  # typed per service literal; ours is a str
    return factory.client(service, config=merged)


def error_code(exc: ClientError) -> str:
    """The service's error code (``ConditionalCheckFailedException``, ...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def aws_errors(make: Callable[..., Exception], what: str, **fields: Any) -> Generator[None]:
    """Translate botocore errors raised inside the block into ``make`` (a taskhop error).

    ``ConditionalCheckFailedException`` is not translated: callers treat it as an answer.
    """
    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        if code == "ConditionalCheckFailedException":
            raise
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        retryable = is_retryable(code, int(status or 0))  # one list, shared with sqs_http
        message = exc.response.get("Error", {}).get("Message", str(exc))
        raise make(f"{what}: {code}: {message}", retryable=retryable, **fields) from exc
    except (NoCredentialsError, PartialCredentialsError, NoRegionError) as exc:
        raise make(
            f"{what}: {exc} (set up AWS credentials and region)", retryable=False, **fields
        ) from exc
    except BotoCoreError as exc:  # connection errors and timeouts: worth another try later
        raise make(f"{what}: {exc}", retryable=True, **fields) from exc
