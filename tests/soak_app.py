"""The soak's worker app, run by ``taskhop worker --local --app soak_app:app`` processes.

Faults come from two places: the job's own plan (``soak_contracts.Work``) and throttling
injected into a share (``SOAK_THROTTLE``) of every AWS request this process makes, the
event source mapping's included. Every handler run appends a line to ``$SOAK_DIR/runs.log``.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import boto3
from soak_contracts import Charge, Charged, Work, charge, work
from soak_faults import append, inject_throttling
from taskhop.backends.dynamodb import DynamoStore
from taskhop.backends.sqs import SqsQueue
from taskhop.sdk import JobContext, PermanentError, create_app

SOAK_DIR = Path(os.environ["SOAK_DIR"])

boto3.setup_default_session()
inject_throttling(
    boto3.DEFAULT_SESSION,
    float(os.environ.get("SOAK_THROTTLE", "0")),
    random.Random(os.getpid()),
    SOAK_DIR,
)
effects: Any = boto3.client("dynamodb")
EFFECTS_TABLE = os.environ["SOAK_EFFECTS_TABLE"]

app = create_app(
    queue=SqsQueue(os.environ["TASKHOP_QUEUE_URL"]),
    store=DynamoStore(os.environ["TASKHOP_TABLE"]),
)


@app.implement(work)
def do_work(data: Work, ctx: JobContext) -> int:
    append(SOAK_DIR, "runs.log", f"{ctx.job_id} {ctx.attempt}")
    if data["trip"] and ctx.attempt == 1:
        (SOAK_DIR / f"tripped-{os.getpid()}").write_text(ctx.job_id)
        time.sleep(600)  # the driver SIGKILLs this process mid-batch
    if data["permanent"]:
        raise PermanentError("this one can never work")
    if ctx.attempt < data["fail_until"]:
        raise ConnectionError(f"flaky dependency (attempt {ctx.attempt})")
    return data["n"]


@app.implement(charge)
def do_charge(data: Charge, ctx: JobContext) -> Charged:
    """The idempotent task: its side effect is a plain counter, so a second run would show."""
    append(SOAK_DIR, "runs.log", f"{ctx.job_id} {ctx.attempt}")
    key = ctx.envelope.idempotency_key if ctx.envelope else None
    effects.update_item(
        TableName=EFFECTS_TABLE,
        Key={"key": {"S": key or ctx.job_id}},
        UpdateExpression="ADD applied :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )
    return {"account": data["account"], "cents": data["cents"]}
