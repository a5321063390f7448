"""Lambda worker init time: what importing the handler module costs, against peers.

Each contender runs in a fresh interpreter, as a Lambda init does: import the handler module
and build what it needs at module level (two boto3 clients, SQS and DynamoDB). Medians of
interleaved rounds; the figure that matters is the difference to boto3-with-two-clients.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

BOTO3 = """
import boto3
sqs = boto3.client("sqs"); ddb = boto3.client("dynamodb")
"""
TASKHOP = """
from typing import TypedDict
from backends.dynamodb import DynamoStore
from backends.sqs import SqsQueue
from lambda_worker import make_handler
from sdk import create_app, static_contract
class In(TypedDict):
    n: int
app = create_app(queue=SqsQueue("https://sqs.us-east-1.amazonaws.com/1/q"), store=DynamoStore("t"))
app.implement(static_contract("double", input=In, output=int), lambda d, c: d["n"] * 2)
handler = make_handler(app, sqs_client=app.transport.client)
"""
POWERTOOLS = """
import boto3
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.parser import BaseModel
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
class In(BaseModel):
    n: int
processor = BatchProcessor(event_type=EventType.SQS, model=SqsRecordModel)
sqs = boto3.client("sqs"); ddb = boto3.client("dynamodb")
"""


def precompile() -> None:
    """Write .pyc files for taskhop's packages, as installing the wheel would.

    boto3 and Powertools come from site-packages, where pip compiled them at install time; an
    editable install of taskhop has no .pyc (and PYTHONDONTWRITEBYTECODE may keep it so),
    which would charge taskhop ~25 ms of compilation the others do not pay. On Lambda, ship
    compiled files too (``python -m compileall`` in the build): /var/task is read-only.
    """
    import compileall
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for package in ("static_contracts", "sdk", "backends", "lambda_worker"):
        compileall.compile_dir(root / package, quiet=1)


def cold_starts(rounds: int = 11) -> dict[str, float]:
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }
    scripts = {
        "bare_python": "pass",
        "boto3_two_clients": BOTO3,
        "taskhop_worker": TASKHOP,
        "powertools_batch_parser": POWERTOOLS,
    }
    precompile()
    samples: dict[str, list[float]] = {k: [] for k in scripts}
    for _ in range(rounds):
        for name, code in scripts.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env)
            samples[name].append((time.perf_counter() - started) * 1000)
    out = {f"{k}_ms": statistics.median(v) for k, v in samples.items()}
    out["taskhop_over_boto3_ms"] = out["taskhop_worker_ms"] - out["boto3_two_clients_ms"]
    boto3_ms = out["boto3_two_clients_ms"]
    out["powertools_over_boto3_ms"] = out["powertools_batch_parser_ms"] - boto3_ms
    out["taskhop_over_powertools"] = out["taskhop_worker_ms"] / out["powertools_batch_parser_ms"]
    return out
