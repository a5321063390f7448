"""Lambda worker init time: what importing the handler module costs, against peers.

Each contender runs in a fresh interpreter, as a Lambda init does: import the handler module
and build what it needs at module level (two boto3 clients, SQS and DynamoDB). Medians of
interleaved rounds; the figure that matters is the difference to boto3-with-two-clients,
and how often it holds: ``taskhop_runs_within_50_ms`` counts the rounds whose taskhop init
came within 50 ms of that round's boto3 init. ``{name}_modules`` is how many modules each
init left in ``sys.modules``.
"""

from __future__ import annotations

import os
import statistics

from bench._fresh import samples_ms

BOTO3 = """
import boto3
sqs = boto3.client("sqs"); ddb = boto3.client("dynamodb")
"""
TASKHOP = """
from typing import TypedDict
from taskhop.backends.dynamodb import DynamoStore
from taskhop.backends.sqs import SqsQueue
from taskhop.lambda_worker import make_handler
from taskhop.sdk import create_app, static_contract
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
    samples, modules = samples_ms(scripts, rounds=rounds, env=env)
    out = {f"{name}_ms": statistics.median(values) for name, values in samples.items()}
    out |= {f"{name}_modules": float(count) for name, count in modules.items()}
    pairs = zip(samples["taskhop_worker"], samples["boto3_two_clients"], strict=True)
    out["taskhop_runs_within_50_ms"] = float(sum(t - b <= 50 for t, b in pairs))
    out["runs"] = float(rounds)
    out["taskhop_over_boto3_ms"] = out["taskhop_worker_ms"] - out["boto3_two_clients_ms"]
    boto3_ms = out["boto3_two_clients_ms"]
    out["powertools_over_boto3_ms"] = out["powertools_batch_parser_ms"] - boto3_ms
    out["taskhop_over_powertools"] = out["taskhop_worker_ms"] / out["powertools_batch_parser_ms"]
    return out
